#include "apps/linear_ode.hpp"

namespace pxb {

void LinearODE::init(double t, double* u) {
    const double v = (t == tstart_) ? u0_ : guess_;
    for (std::size_t k = 0; k < lam_.size(); ++k) u[k] = v;
}

void LinearODE::step(double* u, const double*, const double* fstop, const Status& st) {
    const double dt = st.tstop - st.tstart;
    const std::size_t n = lam_.size();
    if (scheme_ == Scheme::backward_euler) {
        // Same operation order as ex-01: (1/(1 - lam dt)) * (u + fstop).
        for (std::size_t k = 0; k < n; ++k) {
            const double v = fstop ? u[k] + fstop[k] : u[k];
            u[k] = (1.0 / (1.0 - lam_[k] * dt)) * v;
        }
    } else {
        for (std::size_t k = 0; k < n; ++k) {
            u[k] = (1.0 + lam_[k] * dt) * u[k];
            if (fstop) u[k] += fstop[k];
        }
    }
}

void LinearODE::residual(const double* ustop, double* r, const Status& st) {
    const double dt = st.tstop - st.tstart;
    const std::size_t n = lam_.size();
    if (scheme_ == Scheme::backward_euler) {
        // A(u_i, u_{i-1}) = (1 - lam dt) u_i - u_{i-1}  (ex-01: (1 + dt) u_i - u_{i-1})
        for (std::size_t k = 0; k < n; ++k) r[k] = (1.0 - lam_[k] * dt) * ustop[k] - r[k];
    } else {
        for (std::size_t k = 0; k < n; ++k) r[k] = ustop[k] - (1.0 + lam_[k] * dt) * r[k];
    }
}

}  // namespace pxb
