/// \file cubic.hpp
/// \brief u' = -u^3 + p: a nonlinear native app with an adjoint. Backward
///        Euler, each step solved by Newton's method started from ustop (the
///        engine's guess of the result); design p (a constant forcing).
#pragma once

#include <vector>

#include "core/app.hpp"

namespace pxb {

class Cubic : public TypedApp<double> {
public:
    Cubic(std::size_t size, double p, double u0, double guess, double target)
        : size_(size), p_(p), u0_(u0), guess_(guess), target_(target) {}

    std::size_t size() const override { return size_; }
    std::string name() const override { return "Cubic"; }
    std::uint64_t fingerprint() const override;
    void on_setup(double tstart, double) override { tstart_ = tstart; }
    void init(double t, double* u) override;
    void step(double* u, const double* ustop, const double* fstop, const Status& st) override;

    bool has_adjoint() const override { return true; }
    /// f(u_i) = |u_i - target|^2 / ntime
    double objective(const double* u, const Status& st) override;
    void objective_adjoint(const double* u, double* u_bar, double f_bar, const Status& st) override;
    void step_adjoint(const double* u, const double* ustop, double* u_bar, double* ustop_bar,
                      const Status& st) override;
    void reset_gradient() override { gradient_ = 0.0; }

    double p() const { return p_; }
    void set_p(double p) { p_ = p; }
    double gradient() const { return gradient_; }
    long long newton_iterations() const { return newton_iterations_; }

private:
    /// Solve v + dt v^3 = u + dt p by Newton's method from v0.
    double solve(double u, double v0, double dt);
    std::size_t size_;
    double p_, u0_, guess_, target_;
    double tstart_ = 0.0;
    double gradient_ = 0.0;
    long long newton_iterations_ = 0;
};

}  // namespace pxb
