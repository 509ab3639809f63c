/// \file linear_ode.hpp
/// \brief u' = lam * u (lam scalar or diagonal), XBraid's ex-01 problem.
#pragma once

#include <vector>

#include "core/app.hpp"

namespace pxb {

/// Backward Euler (ex-01: u <- (u + fstop) / (1 - lam dt)) or forward Euler
/// (u <- (1 + lam dt) u + fstop). Initial value and guess as in ex-01.
class LinearODE : public App {
public:
    enum class Scheme { backward_euler, forward_euler };

    LinearODE(std::vector<double> lam, double u0, double guess, Scheme scheme, bool use_residual)
        : lam_(std::move(lam)), u0_(u0), guess_(guess), scheme_(scheme), use_residual_(use_residual) {}

    std::size_t size() const override { return lam_.size(); }
    std::string name() const override { return "LinearODE"; }
    void on_setup(double tstart, double) override { tstart_ = tstart; }
    void init(double t, double* u) override;
    void step(double* u, const double* ustop, const double* fstop, const Status& st) override;
    bool has_residual() const override { return use_residual_; }
    void residual(const double* ustop, double* r, const Status& st) override;

private:
    std::vector<double> lam_;
    double u0_, guess_;
    Scheme scheme_;
    bool use_residual_;
    double tstart_ = 0.0;
};

}  // namespace pxb
