// F-relaxation, FAS residual, residual norm and injection to the next level
// (XBraid's restrict.c).
#include <algorithm>
#include <cstring>

#include "core/engine.hpp"
#include "core/norms.hpp"

namespace pxb {

void Engine::restrict_cpoint(int level, int ci, Vec r, TemporalNorm& rnorm) {
    // r holds u(ci - 1): the FAS residual r = f - A(u) at C-point ci
    // (f = 0 on level 0 and where skip left no fa), injected with u.
    Level& g = levels_[level];
    if (level > 0 && g.fa_valid && delta_used(level)) {
        delta_fas_residual(level, ci, g.ua.at(g.u_slot(ci)), r);
        finish_restrict_cpoint(level, ci, r, rnorm, true);
        return;
    }
    user_or_default_residual(level, ci, g.ua.at(g.u_slot(ci)), r, Phase::f_restrict);
    finish_restrict_cpoint(level, ci, r, rnorm);
}

void Engine::finish_restrict_cpoint(int level, int ci, Vec r, TemporalNorm& rnorm, bool fas_done) {
    Level& g = levels_[level];
    Level& c = levels_[level + 1];
    CVec u = g.ua.at(g.u_slot(ci));
    if (fas_done) {
        // delta_fas_residual formed f - A(u) already
    } else if (level == 0 || !g.fa_valid) {
        arena_.axpy(0.0, r, -1.0, r);
    } else {
        arena_.axpy(1.0, g.fa.at(ci - g.ilower), -1.0, r);
    }
    // Richardson measures level 0's residual on level 1, after scaling (richardson_coarse_point).
    if (level == 0 && !opt_.richardson) rnorm.add(gate_.norm(r, &status_));
    const int cidx = ci / g.cfactor - c.ilower;
    status_.phase = Phase::f_restrict;
    to_coarse(level, ci, u, c.va.at(cidx));
    to_coarse(level, ci, r, c.fa.at(cidx));
}

void Engine::restrict_fine_sweep(int level, TemporalNorm& rnorm) {
    // The F-sweep of each interval, then the FAS residual at its C-point
    // (its norm into rnorm on level 0).
    const bool objective = level == 0 && sweep_.active();
    SweepSpec spec;
    spec.kind = SweepKind::restrict;
    spec.phase = Phase::f_restrict;
    spec.rnorm = &rnorm;
    spec.objective = objective;
    comm_init_fc(level);
    if (batched(level)) batched_intervals(level, spec);
    for (int k = batched(level) ? 0 : levels_[level].ncpoints; k >= 0; --k)
        restrict_interval(level, k, rnorm, objective);
    comm_wait(level);
}

void Engine::restrict_interval(int level, int k, TemporalNorm& rnorm, bool objective) {
    Level& g = levels_[level];
    Level& c = levels_[level + 1];
    Vec r = work_.u;
    int flo, fhi, ci;
    g.interval(k, flo, fhi, ci);
    if (flo <= fhi)
        fetch(level, flo - 1, r);
    else if (ci > initiali())
        fetch(level, ci - 1, r);
    for (int fi = flo; fi <= fhi; ++fi) {
        take_step(level, fi, r, Phase::f_restrict);
        store(level, fi, r);
        if (objective) evaluate_objective(fi, r);
    }
    if (objective && ci > -1) evaluate_objective(ci, g.ua.at(g.u_slot(ci)));
    if (ci > initiali())
        restrict_cpoint(level, ci, r, rnorm);
    else if (ci == 0) {
        status_.phase = Phase::f_restrict;
        to_coarse(level, 0, g.ua.at(g.u_slot(0)), c.va.at(0 - c.ilower));
    }
}

void Engine::coarse_right_hand_side(int clevel, TemporalNorm& rnorm) {
    // Coarse level: u = va, then fa += A_c(va) (needs the left neighbour's last va).
    Level& c = levels_[clevel];
    // Level 1 below a Richardson level 0: scaled, measured, estimated point by point.
    const bool richardson = clevel == 1 && (opt_.richardson || opt_.error_estimation);
    c.va_valid = true;
    c.fa_valid = true;
    init_coarse_from_va(clevel);
    if (c.ilower <= c.iupper) {
        const int left = owner(clevel, c.ilower - 1);
        va_.source = left;
        if (left >= 0) arena_.receive(c.va.at(-1), left, kVaTag + clevel, va_.recv, gate_.size_at(clevel));
        const int right = owner(clevel, c.iupper + 1);
        if (right >= 0)
            arena_.send(c.va.at(c.iupper - c.ilower), va_.send_buf, right, kVaTag + clevel, va_.send,
                        gate_.size_at(clevel));
    }
    Vec cu = work_.other;
    int last = c.iupper;  // points last..ilower one by one
    if (batch_.capacity > 0 && !gate_.has_residual() && !richardson) {
        // Grouped, all but ilower (it waits for the left neighbour's va): the same numbers.
        batched_coarse_residuals(clevel, std::max(c.ilower + 1, 1), c.iupper);
        last = c.ilower;
    }
    for (int i = last; i >= c.ilower; --i) {
        if (i <= initiali()) continue;
        const int ii = i - c.ilower;
        if (ii == 0) {
            comm_.wait(va_.recv);
            arena_.received(c.va.at(-1), va_.source, kVaTag + clevel);
        }
        const bool correct = delta_computed(clevel - 1);
        if (correct) arena_.copy(work_.action, c.va.at(ii - 1));
        arena_.copy(cu, c.va.at(ii - 1));
        user_or_default_residual(clevel, i, c.va.at(ii), cu, Phase::residual);
        if (correct)
            delta_coarse_rhs(clevel, ii, cu);
        else if (richardson)
            richardson_coarse_point(ii, cu, c.fa.at(ii), rnorm);
        else
            arena_.axpy(1.0, cu, 1.0, c.fa.at(ii));
    }
    comm_.wait(va_.recv);
    comm_.wait(va_.send);
}

void Engine::f_restrict(int level) {
    TemporalNorm rnorm(opt_.tnorm);
    restrict_fine_sweep(level, rnorm);
    coarse_right_hand_side(level + 1, rnorm);
    if (level != 0) return;
    const double value = opt_.residual_computation ? rnorm.reduce(comm_) : -1.0;
    if (opt_.error_estimation) finalize_error_estimates();
    // residual_computation off: no reduction, "not available" (-1) as XBraid.
    current_rnorm_ = value;
    record_norm(rnorms_, iter_, value);
    // XBraid's reference ||r_0||: iteration 0, or 1 when iteration 0 was
    // skipped; set once per solver (kept across warm restarts).
    if ((iter_ == 0 || (iter_ == 1 && opt_.skip && !opt_.seq_soln)) && rnorm0_ == -1.0) rnorm0_ = value;
}

}  // namespace pxb
