/// \file heat1d.hpp
/// \brief u_t = u_xx + g on [0, pi] x [0, 2 pi] with exact solution
///        sin(x) cos(t): XBraid's ex-02, backward Euler in time, second-order
///        differences in space, Dirichlet boundaries from the exact solution.
#pragma once

#include <vector>

#include "core/app.hpp"

namespace pxb {

class Heat1D : public TypedApp<double> {
public:
    enum class Guess { hashed, xbraid, zero };

    Heat1D(int nspace, Guess guess, bool use_residual);
    void on_setup(double tstart, double) override { tstart_ = tstart; }

    std::size_t size() const override { return static_cast<std::size_t>(nspace_); }
    std::string name() const override { return "Heat1D"; }
    std::uint64_t fingerprint() const override;
    void init(double t, double* u) override;
    void step(double* u, const double* ustop, const double* fstop, const Status& st) override;
    bool has_residual() const override { return use_residual_; }
    void residual(const double* ustop, double* r, const Status& st) override;

    /// Exact solution sin(x) cos(t) at the grid points.
    void exact(double t, double* u) const;
    /// sqrt(dx * sum (u - exact)^2), ex-02's discretization error.
    double error(double t, const double* u) const;
    double dx() const { return dx_; }

private:
    double forcing(double t, double x) const;
    int nspace_;
    double tstart_ = 0.0;
    double dx_;
    Guess guess_;
    bool use_residual_;
    unsigned long rand_state_ = 1;         ///< XBraid's per-process braid_Rand state
    std::vector<double> thomas_, matvec_;  ///< work arrays of step and residual
};

}  // namespace pxb
