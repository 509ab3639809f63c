// Grouped steps (apps with step_batch): within one sweep the steps of
// different intervals are independent, so the engine advances the intervals
// 1..ncpoints of a rank together, one F-point position at a time, then their
// C-points. Each row does exactly what the one-by-one sweep does to its
// interval, so the numbers are the same; what the one-by-one order makes
// observable (the residual norm's and the objective's summation order, the
// order of access calls) is kept: norms are added right to left as before,
// objective terms and access calls are deferred to the end of each chunk.
// Interval 0 starts from the left neighbour's value and stays one by one,
// last, as in the one-by-one sweep (its message has the longest to arrive).
#include <algorithm>
#include <limits>

#include "core/engine.hpp"

namespace pxb {

namespace {
// About 8 MiB of float64 states per batch array unless batch_size says otherwise.
constexpr std::size_t kAutoBatchElements = std::size_t{1} << 20;
}  // namespace

std::size_t Engine::batch_capacity() const {
    if (!app_->has_step_batch()) return 0;
    std::size_t rows = 0;
    for (const Level& g : levels_) rows = std::max(rows, static_cast<std::size_t>(std::max(g.ncpoints, 0)));
    const std::size_t limit = opt_.batch_size > 0
                                  ? static_cast<std::size_t>(opt_.batch_size)
                                  : std::max<std::size_t>(1, kAutoBatchElements / std::max<std::size_t>(n_, 1));
    return std::min(rows, limit);
}

void Engine::batched_intervals(int level, const SweepSpec& s) {
    // Chunks right to left, as the one-by-one sweep goes: each interval reads
    // the OLD value of the C-point to its left, written only by a later chunk.
    const int capacity = static_cast<int>(batch_.capacity);
    for (int hi = levels_[level].ncpoints; hi >= 1;) {
        const int lo = std::max(1, hi - capacity + 1);
        batch_chunk(level, s, lo, hi);
        hi = lo - 1;
    }
}

void Engine::batch_chunk(int level, const SweepSpec& s, int lo, int hi) {
    Level& g = levels_[level];
    const int cf = g.cfactor;
    const int c_left = g.clower + (lo - 1) * cf;  // the C-point left of interval lo (owned)
    for (int k = lo; k <= hi; ++k) fetch(level, c_left + (k - lo) * cf, batch_row(batch_.u, k - lo));
    // Interval ncpoints (after the last owned C-point) may end early: it has
    // iupper - cupper F-points and no C-point; the others are complete.
    const bool last_partial = hi == g.ncpoints;
    const int last_fpoints = g.iupper - g.cupper;
    for (int p = 0; p < cf - 1; ++p) {
        const int rows = hi - lo + 1 - (last_partial && p >= last_fpoints ? 1 : 0);
        if (rows == 0) break;
        batch_step(level, s.phase, c_left + 1 + p, cf, rows, true);
        for (int r = 0; r < rows; ++r) batch_after_fpoint(level, s, c_left + 1 + p + r * cf, batch_row(batch_.u, r));
    }
    const int crows = std::min(hi, g.ncpoints - 1) - lo + 1;  // intervals with a C-point
    if (crows > 0) batch_cpoints(level, s, lo, crows);
    batch_deferred(level, s, lo, hi);
}

void Engine::batch_step(int level, Phase phase, int first, int stride, int rows, bool fas) {
    if (rows == 1) {  // nothing to group: the app's own step
        if (fas) {
            take_step(level, first, batch_.u, phase);
        } else {
            fill_status(level, first, phase);
            CVec ustop = ustop_for(level, first, batch_.u);
            arena_.record_step(batch_.u, ustop, status_);
            gate_.step(batch_.u, ustop, nullptr, status_);
        }
        return;
    }
    Level& g = levels_[level];
    const bool aliased = batch_prepare(level, phase, first, stride, rows);
    const bool with_fa = fas && level > 0 && g.fa_valid;
    CVec fstop = nullptr;
    if (with_fa && gate_.has_residual()) {
        for (int r = 0; r < rows; ++r) arena_.copy(batch_row(batch_.fstop, r), g.fa.at(first + r * stride - g.ilower));
        fstop = batch_.fstop;
    }
    // What the rows share; their times are the arrays (NaN here, so a step_batch
    // that reads status.tstart by mistake gets NaN, not the first row's time).
    fill_status(level, first, phase);
    status_.tstart = status_.tstop = std::numeric_limits<double>::quiet_NaN();
    status_.tindex = -1;
    auto* tstart = reinterpret_cast<double*>(arena_.storage().batch_times.data());
    gate_.step_batch(batch_.u, aliased ? batch_.u : batch_.ustop, fstop,
                     StepRows{static_cast<std::size_t>(rows), tstart, tstart + batch_.capacity}, status_);
    if (with_fa && !gate_.has_residual())
        for (int r = 0; r < rows; ++r)
            arena_.axpy(1.0, g.fa.at(first + r * stride - g.ilower), 1.0, batch_row(batch_.u, r));
}

bool Engine::batch_prepare(int level, Phase phase, int first, int stride, int rows) {
    // The rows' times, their ustop (gathered unless every row is its own
    // ustop: level 0 with nothing stored there), and the tape records.
    const Level& g = levels_[level];
    auto* tstart = reinterpret_cast<double*>(arena_.storage().batch_times.data());
    double* tstop = tstart + batch_.capacity;
    bool aliased = true;
    for (int r = 0; r < rows; ++r) {
        const int index = first + r * stride;
        tstart[r] = g.t(index - 1);
        tstop[r] = step_tstop(g, index);
        aliased = aliased && ustop_for(level, index, batch_row(batch_.u, r)) == batch_row(batch_.u, r);
    }
    if (!aliased)
        for (int r = 0; r < rows; ++r)
            arena_.copy(batch_row(batch_.ustop, r), ustop_for(level, first + r * stride, batch_row(batch_.u, r)));
    // On the tape: the rows' steps as one group (their adjoints may be one call too).
    arena_.record_group(true);
    for (int r = 0; r < rows; ++r) {
        fill_status(level, first + r * stride, phase);
        arena_.record_step(batch_row(batch_.u, r), aliased ? batch_row(batch_.u, r) : batch_row(batch_.ustop, r),
                           status_);
    }
    arena_.record_group(false);
    return aliased;
}

void Engine::batch_after_fpoint(int level, const SweepSpec& s, int index, Vec u) {
    store(level, index, u);
    switch (s.kind) {
        case SweepKind::relax:
            if (done_ && level == 0) keep_solution(index, u);  // access: deferred
            break;
        case SweepKind::restrict:
            if (s.objective && sweep_.in_window(levels_[0].t(index)))
                batch_.objective_terms[static_cast<std::size_t>(index - levels_[0].ilower)] =
                    sweep_.objective_value(u, point_status(index, Phase::objective, done_));
            break;
        case SweepKind::interp: correct_fine_fpoint(level, index, u); break;
        case SweepKind::final: keep_solution(index, u); break;
    }
}

void Engine::batch_cpoints(int level, const SweepSpec& s, int lo, int rows) {
    // The C-point of interval lo + r is row r's next step (relax), the point
    // whose FAS residual it gives (restrict), or a plain correction (interp).
    Level& g = levels_[level];
    const int c_first = g.clower + lo * g.cfactor;
    switch (s.kind) {
        case SweepKind::relax: batch_relax_cpoints(level, s, c_first, rows); break;
        case SweepKind::restrict: batch_restrict_cpoints(level, s, c_first, rows); break;
        case SweepKind::interp:
            for (int r = 0; r < rows; ++r) correct_fine_cpoint(level, c_first + r * g.cfactor);
            break;
        case SweepKind::final: break;  // C-points: the deferred access of the stored value
    }
}

void Engine::batch_relax_cpoints(int level, const SweepSpec& s, int c_first, int rows) {
    Level& g = levels_[level];
    const int cf = g.cfactor;
    if (s.weighted)
        for (int r = 0; r < rows; ++r) arena_.copy(batch_row(batch_.old, r), g.ua.at(g.u_slot(c_first + r * cf)));
    batch_step(level, s.phase, c_first, cf, rows, true);
    for (int r = rows - 1; r >= 0; --r) {
        Vec u = batch_row(batch_.u, r);
        if (s.weighted) arena_.axpy(1.0 - s.cwt, batch_row(batch_.old, r), s.cwt, u);
        store(level, c_first + r * cf, u);
        if (done_ && level == 0) keep_solution(c_first + r * cf, u);
    }
}

void Engine::batch_restrict_cpoints(int level, const SweepSpec& s, int c_first, int rows) {
    // The objective at the C-points (summed later), then r = A(u)_ci for every
    // row, then the residuals in the one-by-one order (right to left).
    Level& g = levels_[level];
    const int cf = g.cfactor;
    if (s.objective)
        for (int r = 0; r < rows; ++r) {
            const int ci = c_first + r * cf;
            if (sweep_.in_window(levels_[0].t(ci)))
                batch_.objective_terms[static_cast<std::size_t>(ci - levels_[0].ilower)] =
                    sweep_.objective_value(g.ua.at(g.u_slot(ci)), point_status(ci, Phase::objective, done_));
        }
    if (gate_.has_residual()) {  // the user's residual: one call per point
        for (int r = rows - 1; r >= 0; --r) restrict_cpoint(level, c_first + r * cf, batch_row(batch_.u, r), *s.rnorm);
        return;
    }
    batch_step(level, s.phase, c_first, cf, rows, false);  // Phi(u(ci - 1)) with ustop = u(ci)
    for (int r = rows - 1; r >= 0; --r) {
        const int ci = c_first + r * cf;
        Vec u = batch_row(batch_.u, r);
        arena_.axpy(1.0, g.ua.at(g.u_slot(ci)), -1.0, u);  // A(u)_ci = u(ci) - Phi(u(ci - 1))
        fill_status(level, ci, s.phase);
        finish_restrict_cpoint(level, ci, u, *s.rnorm);
    }
}

void Engine::batched_coarse_residuals(int clevel, int lo, int hi) {
    // fa(i) += A_c(va)_i = va(i) - Phi(va(i - 1)) for i = lo..hi: independent steps
    // (the stride-1 rows of one level), in chunks right to left.
    Level& c = levels_[clevel];
    const int capacity = static_cast<int>(batch_.capacity);
    while (hi >= lo) {
        const int first = std::max(lo, hi - capacity + 1);
        const int rows = hi - first + 1;
        for (int r = 0; r < rows; ++r) arena_.copy(batch_row(batch_.u, r), c.va.at(first + r - 1 - c.ilower));
        batch_step(clevel, Phase::residual, first, 1, rows, false);
        for (int r = rows - 1; r >= 0; --r) {
            const int ii = first + r - c.ilower;
            Vec cu = batch_row(batch_.u, r);
            arena_.axpy(1.0, c.va.at(ii), -1.0, cu);
            arena_.axpy(1.0, cu, 1.0, c.fa.at(ii));
        }
        hi = first - 1;
    }
}

void Engine::batch_deferred(int level, const SweepSpec& s, int lo, int hi) {
    // What the one-by-one sweep does in its order: intervals right to left,
    // each interval's points left to right (the C-point last).
    if (level != 0) return;
    const bool access = (s.kind == SweepKind::relax && done_) || s.kind == SweepKind::final;
    const bool objective = s.kind == SweepKind::restrict && s.objective;
    if (!access && !objective) return;
    const Level& g = levels_[0];
    const int cf = g.cfactor;
    for (int k = hi; k >= lo; --k) {
        const int first = g.clower + (k - 1) * cf + 1;
        const int last = std::min(g.clower + k * cf, g.iupper);
        for (int i = first; i <= last; ++i) {
            if (objective && sweep_.in_window(g.t(i)))
                sweep_.add_objective(batch_.objective_terms[static_cast<std::size_t>(i - g.ilower)]);
            if (access) {
                if (s.kind == SweepKind::final && g.is_cpoint(i)) keep_solution(i, g.ua.at(g.u_slot(i)));
                user_access(i, s.kind == SweepKind::final ? s.done : true);
            }
        }
    }
}

}  // namespace pxb
