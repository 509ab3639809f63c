// One time step and one residual on any level, with XBraid's rules for the
// ustop guess and the FAS right-hand side (XBraid's step.c and residual.c).
#include "core/engine.hpp"

namespace pxb {

void Engine::fill_status(int level, int index, Phase phase) {
    const Level& g = levels_[level];
    status_.tstart = g.t(index - 1);
    status_.tstop = step_tstop(g, index);  // periodic: the step to index 0 ends at tstop
    status_.tindex = index - 1;
    status_.level = level;
    status_.nlevels = nlevels();
    status_.iter = iter_;
    status_.done = done_;
    status_.phase = phase;
    status_.residual_norm = current_rnorm_;
    status_.ntime = ntime_;
    status_.error_estimate = error_estimate_at(level, index);  // of the point stepped to
    status_.nrefine = refine_.nrefine;
    open_refine_request(level, phase);
}

CVec Engine::ustop_for(int level, int index, CVec u) {
    // XBraid's _braid_GetUInit: the stored value at the target point when there
    // is one; otherwise the vector being stepped (fine level) or the restricted
    // value va (coarse levels) -- with the point's shell when the app has shells.
    const Level& g = levels_[level];
    const int slot = g.u_slot(index);
    if (slot >= 0 && g.ua_set[static_cast<std::size_t>(slot)]) return g.ua.at(slot);
    CVec usual = level == 0 ? u : g.va.at(index - g.ilower);
    return shells() ? with_point_shell(level, index, usual) : usual;
}

void Engine::take_step(int level, int index, Vec u, Phase phase) {
    if (delta_computed(level)) {
        delta_step(level, index, u, phase);
        return;
    }
    fill_status(level, index, phase);
    CVec ustop = ustop_for(level, index, u);
    Level& g = levels_[level];
    arena_.record_step(u, ustop, status_);
    if (level == 0 || !g.fa_valid) {
        gate_.step(u, ustop, nullptr, status_);
        if (level == 0) take_refine_request(index);
        return;
    }
    CVec fa = g.fa.at(index - g.ilower);
    if (gate_.has_residual()) {
        gate_.step(u, ustop, fa, status_);
    } else {
        gate_.step(u, ustop, nullptr, status_);
        arena_.axpy(1.0, fa, 1.0, u);
    }
}

void Engine::user_or_default_residual(int level, int index, CVec ustop, Vec r, Phase phase) {
    // XBraid's _braid_Residual: r holds u(index-1) on entry and A(u)_index on
    // exit: the user's residual, or ustop - Phi(r) (a plain step, no fa).
    // Delta correction propagates r's basis too, except in the coarse
    // right-hand side of the defer level (XBraid's residual.c).
    if (delta_computed(level) && !(phase == Phase::residual && level == opt_.defer_delta_level)) {
        delta_residual(level, index, ustop, r, phase);
        return;
    }
    fill_status(level, index, phase);
    if (gate_.has_residual()) {
        gate_.residual(ustop, r, status_);
        if (level == 0) take_refine_request(index);
        return;
    }
    CVec rstop = ustop_for(level, index, r);
    arena_.record_step(r, rstop, status_);
    gate_.step(r, rstop, nullptr, status_);
    if (level == 0) take_refine_request(index);
    arena_.axpy(1.0, ustop, -1.0, r);
}

Status Engine::point_status(int index, Phase phase, bool done) const {
    Status st;
    fill_point_status(index, phase, done, st);
    return st;
}

void Engine::fill_point_status(int index, Phase phase, bool done, Status& st) const {
    st.tstart = st.tstop = levels_[0].t(index);
    st.tindex = index;
    st.level = 0;
    st.nlevels = nlevels();
    st.iter = iter_;
    st.done = done;
    st.phase = phase;
    st.residual_norm = current_rnorm_;
    st.ntime = ntime_;
    st.error_estimate = opt_.error_estimation ? error_estimate_at(0, index) : -1.0;  // no call per point without
    st.nrefine = refine_.nrefine;
}

ReplayContext Engine::replay_context() const {
    ReplayContext c;
    c.levels = &levels_;
    c.nlevels = nlevels();
    c.iter = iter_;
    c.ntime = ntime_;
    c.nrefine = refine_.nrefine;
    c.estimates = opt_.error_estimation ? rich_.estimate.data() : nullptr;
    return c;
}

Status Engine::initial_status() const {
    // Only the rank owning index 0 has its time (and calls init_adjoint).
    return levels_[0].ilower == 0 ? point_status(0, Phase::objective, done_) : Status{};
}

void Engine::evaluate_objective(int index, CVec u) {
    if (!sweep_.in_window(levels_[0].t(index))) return;                    // closed window, as XBraid
    fill_point_status(index, Phase::objective, done_, objective_status_);  // in place: one per fine point
    sweep_.objective_term(u, objective_status_);
}

}  // namespace pxb
