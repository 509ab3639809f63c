/// \file linear_ode.hpp
/// \brief u' = lam * u (lam scalar or diagonal), XBraid's ex-01 problem.
#pragma once

#include <vector>

#include "core/app.hpp"

namespace pxb {

/// Backward Euler (ex-01: u <- (u + fstop) / (1 - lam dt)) or forward Euler
/// (u <- (1 + lam dt) u + fstop). Initial value and guess as in ex-01.
class LinearODE : public TypedApp<double> {
public:
    enum class Scheme { backward_euler, forward_euler };

    LinearODE(std::vector<double> lam, double u0, double guess, Scheme scheme, bool use_residual)
        : lam_(std::move(lam)),
          u0_(u0),
          guess_(guess),
          scheme_(scheme),
          use_residual_(use_residual),
          gradient_(lam_.size(), 0.0) {}

    /// ex-01-adjoint's objective f(u_i) = |u_i|^2 / ntime with the design lam;
    /// with a target, J = F(I) = (I - target)^2 / 2 + regularization/2 |lam|^2
    /// (ex-01-optimization).
    void set_objective(bool mean_square, bool tracking, double target, double regularization) {
        mean_square_ = mean_square;
        tracking_ = tracking;
        target_ = target;
        regularization_ = regularization;
    }
    const std::vector<double>& gradient() const { return gradient_; }
    const std::vector<double>& lam() const { return lam_; }
    void set_lam(std::vector<double> lam) { lam_ = std::move(lam); }

    std::size_t size() const override { return lam_.size(); }
    std::string name() const override { return "LinearODE"; }
    std::uint64_t fingerprint() const override;
    void on_setup(double tstart, double) override { tstart_ = tstart; }
    void init(double t, double* u) override;
    void step(double* u, const double* ustop, const double* fstop, const Status& st) override;
    bool has_residual() const override { return use_residual_; }
    void residual(const double* ustop, double* r, const Status& st) override;

    /// Delta correction: the step is linear, its Jacobian is the step's own
    /// factor (1/(1 - lam dt) or 1 + lam dt per component).
    bool has_jacobian() const override { return true; }
    void jacobian_apply(const double* u, double* basis, int rank, const Status& st) override;

    bool has_adjoint() const override { return mean_square_; }
    bool step_adjoint_uses_ustop() const override { return false; }
    double objective(const double* u, const Status& st) override;
    void objective_adjoint(const double* u, double* u_bar, double f_bar, const Status& st) override;
    void step_adjoint(const double* u, const double* ustop, double* u_bar, double* ustop_bar,
                      const Status& st) override;
    void reset_gradient() override;
    bool has_postprocess() const override { return tracking_; }
    double postprocess(double sum) override;
    double postprocess_adjoint(double sum) override;

private:
    std::vector<double> lam_;
    double u0_, guess_;
    Scheme scheme_;
    bool use_residual_;
    double tstart_ = 0.0;
    std::vector<double> gradient_;
    bool mean_square_ = false, tracking_ = false;
    double target_ = 0.0, regularization_ = 0.0;
};

}  // namespace pxb
