#include "apps/lorenz.hpp"

#include "core/fingerprint.hpp"

namespace pxb {

std::uint64_t Lorenz::fingerprint() const {
    return Fingerprint().add(sigma_).add(rho_).add(beta_).add(u0_[0]).add(u0_[1]).add(u0_[2]).value();
}

void Lorenz::init(double, double* u) {
    // ex-07: the initial condition is also the guess at every other point.
    for (std::size_t k = 0; k < 3; ++k) u[k] = u0_[k];
}

void Lorenz::step(double* u, const double*, const double*, const Status& st) {
    // No user residual, so no fstop: the engine adds the FAS term itself.
    const double h = st.tstop - st.tstart;
    const double x = u[0], y = u[1], z = u[2];
    // u + h f(u) with ex-07's operation order (its user sum: h * f + u).
    u[0] = h * (sigma_ * (y - x)) + x;
    u[1] = h * (x * (rho_ - z) - y) + y;
    u[2] = h * (x * y - beta_ * z) + z;
}

std::array<std::array<double, 3>, 3> Lorenz::step_matrix(const double* u, double h) const {
    const double x = u[0], y = u[1], z = u[2];
    const double jac[3][3] = {{-sigma_, sigma_, 0.0}, {rho_ - z, -1.0, -x}, {y, x, -beta_}};
    std::array<std::array<double, 3>, 3> f{};
    for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t j = 0; j < 3; ++j) f[i][j] = h * jac[i][j] + (i == j ? 1.0 : 0.0);
    return f;
}

void Lorenz::jacobian_apply(const double* u, double* basis, int rank, const Status& st) {
    const auto f = step_matrix(u, st.tstop - st.tstart);
    for (int b = 0; b < rank; ++b) {
        double* psi = basis + 3 * static_cast<std::size_t>(b);
        const double p[3] = {psi[0], psi[1], psi[2]};
        for (std::size_t i = 0; i < 3; ++i) {
            // Summed from 0.0 in j order, as ex-07's MatVec.
            double acc = 0.0;
            for (std::size_t j = 0; j < 3; ++j) acc += f[i][j] * p[j];
            psi[i] = acc;
        }
    }
}

void Lorenz::access(const double* u, const Status& st) {
    Record& rec = records_[st.tindex];
    for (std::size_t k = 0; k < 3; ++k) rec.state[k] = u[k];
    rec.rank = st.basis_rank;
    const auto* basis = reinterpret_cast<const double*>(st.basis);
    for (int j = 0; j < st.basis_rank && j < 3; ++j) {
        double* out = rec.values.data() + 4 * j;
        out[0] = st.lyapunov_exponents != nullptr ? st.lyapunov_exponents[j] : 0.0;
        for (std::size_t k = 0; k < 3; ++k) out[1 + k] = basis[3 * static_cast<std::size_t>(j) + k];
    }
}

}  // namespace pxb
