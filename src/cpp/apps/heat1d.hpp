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

    /// `spatial_coarsening`: ex-02's -sc (nspace - 1 must be a power of 2):
    /// every coarser level halves the intervals in space down to 2.
    Heat1D(int nspace, Guess guess, bool use_residual, bool spatial_coarsening = false);
    void on_setup(double tstart, double) override { tstart_ = tstart; }

    std::size_t size() const override { return static_cast<std::size_t>(nspace_); }
    std::size_t size_at(int level) override { return static_cast<std::size_t>(points_at(level)); }
    bool has_spatial_coarsening() const override { return spatial_coarsening_; }
    void coarsen(const double* fine, double* coarse, const Status& st) override;
    void refine(const double* coarse, double* fine, const Status& st) override;
    /// Points of the spatial grid on `level` (nspace without spatial coarsening).
    int points_at(int level) const;
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
    /// ex-02's test: the level whose states coarsen/refine (else they are copied).
    bool coarsens(int fine_level) const;
    /// ex-02's dx of a grid of n points (the spatial grid of a state of that size).
    static double spacing(int n) { return (3.14159265358979323846 - 0.0) / (n - 1.0); }
    int nspace_;
    bool spatial_coarsening_;
    double tstart_ = 0.0;
    double dx_;
    Guess guess_;
    bool use_residual_;
    unsigned long rand_state_ = 1;         ///< XBraid's per-process braid_Rand state
    std::vector<double> thomas_, matvec_;  ///< work arrays of step and residual
};

}  // namespace pxb
