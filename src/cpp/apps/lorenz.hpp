/// \file lorenz.hpp
/// \brief The Lorenz system by forward Euler, XBraid's ex-07: the native app
///        for delta correction, with the exact Jacobian of its step.
#pragma once

#include <array>
#include <map>

#include "core/app.hpp"

namespace pxb {

/// x' = sigma (y - x), y' = x (rho - z) - y, z' = x y - beta z, advanced by
/// forward Euler u <- u + h f(u); every point starts at u0 (ex-07's
/// initial condition and guess). The basis vectors (delta correction) are
/// propagated by the step's Jacobian F = I + h Df(u), u the input state.
class Lorenz : public TypedApp<double> {
public:
    /// The access record of one point: the state and, per basis vector j,
    /// [exp_j, psi_j (3 values)] (ex-07's ex-07-lv.out line).
    struct Record {
        std::array<double, 3> state{};
        int rank = 0;
        std::array<double, 12> values{};  ///< 4 per basis vector (rank <= 3)
    };

    Lorenz(double sigma, double rho, double beta, std::array<double, 3> u0, bool record)
        : sigma_(sigma), rho_(rho), beta_(beta), u0_(u0), record_(record) {}

    std::size_t size() const override { return 3; }
    std::string name() const override { return "Lorenz"; }
    std::uint64_t fingerprint() const override;
    void init(double t, double* u) override;
    void step(double* u, const double* ustop, const double* fstop, const Status& st) override;
    bool has_jacobian() const override { return true; }
    void jacobian_apply(const double* u, double* basis, int rank, const Status& st) override;
    bool has_access() const override { return record_; }
    void access(const double* u, const Status& st) override;

    /// What access saw last at each point of this rank (record=true).
    const std::map<int, Record>& records() const { return records_; }

private:
    /// F = I + h Df(u), in ex-07's order (h * J + I, entry by entry).
    std::array<std::array<double, 3>, 3> step_matrix(const double* u, double h) const;

    double sigma_, rho_, beta_;
    std::array<double, 3> u0_;
    bool record_;
    std::map<int, Record> records_;
};

}  // namespace pxb
