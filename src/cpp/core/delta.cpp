// Low-rank Delta correction with Lyapunov vectors (XBraid's delta.c and the
// Delta branches of its step.c, residual.c, restrict.c and interp.c).
//
// Every engine vector carries delta_rank basis vectors after its state (see
// RecordedArena): copies, messages and the engine's axpy include them, as
// XBraid's BaseClone, BufPack and BaseSum include a vector's basis. The
// operations here touch the state or the basis alone where XBraid calls the
// user's sum on the user vector or _braid_BaseSumBasis.
//
// On a coarse level the FAS right-hand side at point i holds, besides tau,
// the Delta of the interval: its basis part is (Phi_f^m - Phi_c) psi, the
// fine propagator minus the coarse one applied to the basis psi at the
// previous point, so a coarse step adds Delta(u) = sum_j <psi_j, u> (Delta psi)_j.
#include <cmath>
#include <stdexcept>
#include <string>

#include "core/engine.hpp"

namespace pxb {

namespace {
/// The values of a state (n elements of `d`): y <- a x + b y.
void state_axpy(DType d, std::size_t n, double a, CVec x, double b, Vec y) noexcept {
    ops::axpy(d, n, a, x, b, y);
}
}  // namespace

void Engine::check_delta(AdjointMode mode) const {
    if (!delta()) {
        if (opt_.lyapunov || opt_.lyapunov_relax)
            throw std::invalid_argument(std::string(opt_.lyapunov ? "lyapunov" : "lyapunov_relax") +
                                        "=True needs delta_rank >= 1 (the Lyapunov vectors are the basis)");
        return;
    }
    const std::string what = "delta_rank=" + std::to_string(opt_.delta_rank);
    if (!app_->has_init_basis())
        throw std::invalid_argument(app_->name() + " " + app_->delta_requirement() + "; " + what + " needs it");
    if (opt_.delta_rank > static_cast<int>(n_))
        throw std::invalid_argument(what + " exceeds the state size " + std::to_string(n_) +
                                    " (the basis vectors must be linearly independent)");
    if (app_->dtype() != DType::float64) throw std::invalid_argument(what + " needs float64 states");
    if (const char* refused = refused_with_delta(mode))
        throw std::invalid_argument(what + " cannot be combined with " + std::string(refused) +
                                    " (not supported with delta correction)");
    // Not checked against XBraid's runs yet: refused rather than unverified.
    if (const char* unverified = unverified_with_delta())
        throw std::invalid_argument(what + " cannot be combined with " + std::string(unverified) +
                                    " yet (delta correction with it is not checked against XBraid)");
}

const char* Engine::refused_with_delta(AdjointMode mode) const {
    if (mode == AdjointMode::gradient) return "adjoint=True";
    if (mode != AdjointMode::none) return "objective_only=True";
    if (app_->shell_size() > 0) return "shells (shell_shape)";
    if (app_->has_step_batch()) return "step_batch";
    if (opt_.periodic) return "periodic=True";
    if (gate_.has_residual()) return "a user residual";
    if (opt_.full_residual_norm) return "full_residual_norm=True";
    if (opt_.seq_soln) return "seq_soln=True";
    return nullptr;
}

const char* Engine::unverified_with_delta() const {
    if (gate_.has_spatial_coarsening()) return "spatial coarsening (the app's coarsen and refine)";
    if (opt_.richardson) return "richardson=True";
    if (opt_.error_estimation) return "error_estimation=True";
    if (opt_.refine) return "refine=True (temporal refinement)";
    return nullptr;
}

void Engine::allocate_delta() {
    if (!delta()) return;
    work_.delta = arena_.take(1);
    work_.action = arena_.take(1);
    coords_.assign(arena_.basis_rank(), 0.0);
    if (lyapunov_exponents())
        lyap_exps_.assign(static_cast<std::size_t>(levels_[0].ncpoints + 1) * arena_.basis_rank(), 0.0);
}

void Engine::init_basis(double t, Vec u) {
    const std::size_t r = arena_.basis_rank();
    for (std::size_t j = 0; j < r; ++j) {
        Vec v = arena_.basis_of(u, j);
        ops::scale(arena_.dtype(), n_, 0.0, v);
        gate_.init_basis(t, static_cast<int>(j), v, status_);
    }
    gram_schmidt(u, nullptr, "init_basis must give linearly independent vectors");
}

void Engine::gram_schmidt(Vec v, double* exps, const char* cause) {
    // Modified Gram-Schmidt in XBraid's order and arithmetic (its user sum is y = a x + b y).
    const std::size_t r = arena_.basis_rank();
    const DType d = arena_.dtype();
    for (std::size_t i = 0; i < r; ++i) {
        Vec bi = arena_.basis_of(v, i);
        for (std::size_t j = 0; j < i; ++j) {
            CVec bj = arena_.basis_of(static_cast<CVec>(v), j);
            const double prod = gate_.inner_product(bi, bj);
            state_axpy(d, n_, -prod, bj, 1.0, bi);
        }
        const double prod = gate_.inner_product(bi, bi);
        if (prod == 0.0)
            throw std::runtime_error("delta correction: basis vector " + std::to_string(i) +
                                     " has norm 0 in the Gram-Schmidt orthonormalization; " + cause);
        state_axpy(d, n_, 0.0, bi, 1 / std::sqrt(prod), bi);
        if (exps != nullptr) exps[i] = std::log(std::fabs(prod)) / 2;
    }
}

void Engine::lr_delta_dot(Vec x, CVec delta_owner, CVec basis_owner) {
    const std::size_t r = arena_.basis_rank();
    const DType d = arena_.dtype();
    for (std::size_t i = 0; i < r; ++i) coords_[i] = gate_.inner_product(arena_.basis_of(basis_owner, i), x);
    state_axpy(d, n_, coords_[0], arena_.basis_of(delta_owner, 0), 0.0, x);
    for (std::size_t i = 1; i < r; ++i) state_axpy(d, n_, coords_[i], arena_.basis_of(delta_owner, i), 1.0, x);
}

void Engine::lr_delta_dot_mat(Vec psi_owner, CVec delta_owner, CVec basis_owner) {
    for (std::size_t i = 0; i < arena_.basis_rank(); ++i)
        lr_delta_dot(arena_.basis_of(psi_owner, i), delta_owner, basis_owner);
}

bool Engine::propagates_basis(int level, Phase phase) const noexcept {
    // XBraid's prop_lyap: always in FRestrict; with Lyapunov estimation on the
    // coarsest level and in FInterp; with relax_lyap in FCRelax and FInterp
    // below the coarsest level; never below the defer level.
    const bool coarsest = level == nlevels() - 1;
    const bool estimate = opt_.lyapunov && (coarsest || phase == Phase::f_interp);
    const bool relax = relax_lyap_ && !coarsest && (phase == Phase::fc_relax || phase == Phase::f_interp);
    return (phase == Phase::f_restrict || estimate || relax) && level >= opt_.defer_delta_level;
}

void Engine::delta_step(int level, int index, Vec u, Phase phase) {
    fill_status(level, index, phase);
    Level& g = levels_[level];
    CVec ustop = ustop_for(level, index, u);
    const std::size_t r = arena_.basis_rank();
    const DType d = arena_.dtype();
    const bool prop = propagates_basis(level, phase);
    if (!prop) {
        // The basis is not propagated: it takes the target point's (XBraid
        // keeps the Lyapunov vectors at ustop, or va in FInterp).
        CVec src = phase == Phase::f_interp ? g.va.at(index - g.ilower) : ustop;
        state_axpy(d, r * n_, 1.0, arena_.basis_of(src, 0), 0.0, arena_.basis_of(u, 0));
    }
    const bool tau = level > 0 && g.fa_valid;
    const bool correct = tau && delta_used(level);
    CVec fa = tau ? g.fa.at(index - g.ilower) : nullptr;
    CVec va_prev = tau ? g.va.at(index - 1 - g.ilower) : nullptr;
    if (correct) {
        // Delta of the state (and of the basis when it is propagated) at the step's input.
        arena_.copy(work_.delta, u);
        lr_delta_dot(work_.delta, fa, va_prev);
        if (prop) lr_delta_dot_mat(work_.delta, fa, va_prev);
    }
    status_.basis = prop ? arena_.basis_of(u, 0) : nullptr;
    status_.basis_rank = prop ? static_cast<int>(r) : 0;
    gate_.step_with_basis(u, ustop, status_);
    delta_step_finish(level, index, u, phase, prop, correct);
}

void Engine::delta_step_finish(int level, int index, Vec u, Phase phase, bool prop, bool correct) {
    Level& g = levels_[level];
    const std::size_t r = arena_.basis_rank();
    const DType d = arena_.dtype();
    if (level > 0 && g.fa_valid) {
        state_axpy(d, n_, 1.0, g.fa.at(index - g.ilower), 1.0, u);
        if (correct) {
            state_axpy(d, n_, 1.0, work_.delta, 1.0, u);
            if (prop) state_axpy(d, r * n_, 1.0, arena_.basis_of(work_.delta, 0), 1.0, arena_.basis_of(u, 0));
        }
    }
    // Orthonormalize at C-points, in FInterp and on the coarsest level; the
    // final FC sweep of level 0 keeps the local exponents of its C-points.
    if (!prop || !(g.is_cpoint(index) || phase == Phase::f_interp || level == nlevels() - 1)) return;
    double* exps = nullptr;
    if (done_ && level == 0 && phase == Phase::fc_relax && lyapunov_exponents()) {
        const auto ic = static_cast<std::size_t>((index - g.clower) / g.cfactor);
        if ((ic + 1) * r <= lyap_exps_.size()) exps = lyap_exps_.data() + ic * r;
    }
    gram_schmidt(u, exps,
                 "a step's Jacobian made the basis vectors linearly dependent (a singular step at this step size)");
}

void Engine::delta_residual(int level, int index, CVec ustop, Vec r, Phase phase) {
    fill_status(level, index, phase);
    CVec rstop = ustop_for(level, index, r);
    status_.basis = arena_.basis_of(r, 0);
    status_.basis_rank = static_cast<int>(arena_.basis_rank());
    gate_.step_with_basis(r, rstop, status_);
    const DType d = arena_.dtype();
    state_axpy(d, n_, 1.0, ustop, -1.0, r);
    state_axpy(d, arena_.basis_rank() * n_, 0.0, arena_.basis_of(r, 0), -1.0, arena_.basis_of(r, 0));
}

void Engine::delta_fas_residual(int level, int ci, CVec ustop, Vec r) {
    Level& g = levels_[level];
    const int ii = ci - g.ilower;
    CVec fa = g.fa.at(ii);
    CVec va_prev = g.va.at(ii - 1);
    arena_.copy(work_.delta, r);
    lr_delta_dot(work_.delta, fa, va_prev);
    lr_delta_dot_mat(work_.delta, fa, va_prev);
    user_or_default_residual(level, ci, ustop, r, Phase::f_restrict);
    const DType d = arena_.dtype();
    state_axpy(d, n_, 1.0, fa, 1.0, work_.delta);
    state_axpy(d, n_, 1.0, work_.delta, -1.0, r);
    const std::size_t rn = arena_.basis_rank() * n_;
    state_axpy(d, rn, 1.0, arena_.basis_of(work_.delta, 0), -1.0, arena_.basis_of(r, 0));
}

void Engine::delta_coarse_rhs(int clevel, int ii, Vec cu) {
    // fa = R(r) + A_c(va) - Delta(va[i-1]): tau on the state, the basis part
    // becomes (Phi_f^m - Phi_c) psi, then the low-rank Delta of the previous value.
    Level& c = levels_[clevel];
    Vec fa = c.fa.at(ii);
    const DType d = arena_.dtype();
    state_axpy(d, n_, 1.0, cu, 1.0, fa);
    const std::size_t rn = arena_.basis_rank() * n_;
    state_axpy(d, rn, 1.0, arena_.basis_of(static_cast<CVec>(cu), 0), 1.0, arena_.basis_of(fa, 0));
    lr_delta_dot(work_.action, fa, c.va.at(ii - 1));
    state_axpy(d, n_, -1.0, work_.action, 1.0, fa);
}

const double* Engine::lyapunov_exponents_at(int index) const noexcept {
    // XBraid's AccessStatusGetLocalLyapExponents: level-0 C-points only (every
    // point with one level); index 0's are never computed (zeros).
    if (!lyapunov_exponents()) return nullptr;
    const Level& g = levels_[0];
    if (!g.is_cpoint(index) && nlevels() > 1) return nullptr;
    if (index < g.clower) return nullptr;
    const auto r = arena_.basis_rank();
    const auto ic = static_cast<std::size_t>((index - g.clower) / g.cfactor);
    return (ic + 1) * r <= lyap_exps_.size() ? lyap_exps_.data() + ic * r : nullptr;
}

}  // namespace pxb
