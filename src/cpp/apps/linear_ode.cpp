#include "apps/linear_ode.hpp"

#include <algorithm>

#include "core/fingerprint.hpp"

namespace pxb {

std::uint64_t LinearODE::fingerprint() const {
    return Fingerprint()
        .add(lam_)
        .add(u0_)
        .add(guess_)
        .add(static_cast<int>(scheme_))
        .add(use_residual_)
        .add(mean_square_)
        .add(tracking_)
        .add(target_)
        .add(regularization_)
        .value();
}

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

void LinearODE::jacobian_apply(const double*, double* basis, int rank, const Status& st) {
    // The step without fstop applied to each basis vector, in step's operation order.
    const double dt = st.tstop - st.tstart;
    const std::size_t n = lam_.size();
    for (int b = 0; b < rank; ++b) {
        double* v = basis + n * static_cast<std::size_t>(b);
        for (std::size_t k = 0; k < n; ++k)
            v[k] =
                scheme_ == Scheme::backward_euler ? (1.0 / (1.0 - lam_[k] * dt)) * v[k] : (1.0 + lam_[k] * dt) * v[k];
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

double LinearODE::objective(const double* u, const Status& st) {
    // ex-01-adjoint: 1/ntime * u * u (same operation order)
    double f = 0.0;
    for (std::size_t k = 0; k < lam_.size(); ++k) f += 1. / st.ntime * u[k] * u[k];
    return f;
}

void LinearODE::objective_adjoint(const double* u, double* u_bar, double f_bar, const Status& st) {
    for (std::size_t k = 0; k < lam_.size(); ++k) u_bar[k] = 2. / st.ntime * u[k] * f_bar;
}

void LinearODE::step_adjoint(const double* u, const double*, double* u_bar, double*, const Status& st) {
    const double dt = st.tstop - st.tstart;
    for (std::size_t k = 0; k < lam_.size(); ++k) {
        const double lam = lam_[k];
        if (scheme_ == Scheme::backward_euler) {
            // ex-01-adjoint's my_Step_diff, same operation order.
            const double one_minus = 1. - dt * lam;
            const double ddu = 1. / (1. - lam * dt) * u_bar[k];
            const double ddesign = (dt * u[k]) / (one_minus * one_minus) * u_bar[k];
            u_bar[k] = ddu;
            gradient_[k] += ddesign;
        } else {
            const double ddesign = dt * u[k] * u_bar[k];
            u_bar[k] = (1.0 + lam * dt) * u_bar[k];
            gradient_[k] += ddesign;
        }
    }
}

void LinearODE::reset_gradient() {
    std::fill(gradient_.begin(), gradient_.end(), 0.0);
}

double LinearODE::postprocess(double sum) {
    // ex-01-optimization: 1/2 (I - target)^2 + gamma/2 |lam|^2, same operation order.
    double reg = 0.0;
    for (double lam : lam_) reg += lam * lam;
    double J = 1. / 2. * ((sum - target_) * (sum - target_));
    J += regularization_ / 2. * reg;
    return J;
}

double LinearODE::postprocess_adjoint(double sum) {
    // ex-01-optimization assigns the design term of the gradient here.
    for (std::size_t k = 0; k < lam_.size(); ++k) gradient_[k] = regularization_ * lam_[k];
    return sum - target_;
}

}  // namespace pxb
