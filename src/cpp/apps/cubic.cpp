#include "apps/cubic.hpp"

#include "core/fingerprint.hpp"

#include <cmath>
#include <stdexcept>

namespace pxb {

std::uint64_t Cubic::fingerprint() const {
    return Fingerprint().add(static_cast<long long>(size_)).add(p_).add(u0_).add(guess_).add(target_).value();
}

void Cubic::init(double t, double* u) {
    for (std::size_t k = 0; k < size_; ++k) u[k] = (t == tstart_) ? u0_ : guess_;
}

double Cubic::solve(double u, double v0, double dt) {
    const double rhs = u + dt * p_;
    double v = v0;
    for (int it = 0; it < 100; ++it) {
        const double g = v + dt * v * v * v - rhs;
        const double dv = g / (1.0 + 3.0 * dt * v * v);
        v -= dv;
        ++newton_iterations_;
        if (std::fabs(dv) <= 1e-15 * (1.0 + std::fabs(v))) return v;
    }
    throw std::runtime_error("Newton's method did not converge (dt = " + std::to_string(dt) + ")");
}

void Cubic::step(double* u, const double* ustop, const double* fstop, const Status& st) {
    const double dt = st.tstop - st.tstart;
    for (std::size_t k = 0; k < size_; ++k) {
        const double start = fstop ? u[k] + fstop[k] : u[k];
        u[k] = solve(start, ustop[k], dt);
    }
}

double Cubic::objective(const double* u, const Status& st) {
    double f = 0.0;
    for (std::size_t k = 0; k < size_; ++k) f += (u[k] - target_) * (u[k] - target_) / st.ntime;
    return f;
}

void Cubic::objective_adjoint(const double* u, double* u_bar, double f_bar, const Status& st) {
    for (std::size_t k = 0; k < size_; ++k) u_bar[k] = 2.0 * (u[k] - target_) / st.ntime * f_bar;
}

void Cubic::step_adjoint(const double* u, const double* ustop, double* u_bar, double*, const Status& st) {
    // Implicit function theorem on v + dt v^3 = u + dt p: dv/du = 1/(1 + 3 dt v^2),
    // dv/dp = dt/(1 + 3 dt v^2). Newton converges, so v does not depend on ustop.
    const double dt = st.tstop - st.tstart;
    for (std::size_t k = 0; k < size_; ++k) {
        const double v = solve(u[k], ustop[k], dt);
        const double jac = 1.0 / (1.0 + 3.0 * dt * v * v);
        gradient_ += dt * jac * u_bar[k];
        u_bar[k] = jac * u_bar[k];
    }
}

}  // namespace pxb
