// F-relaxation on a coarse level and correction of the next finer level's
// C-points (XBraid's interp.c). On the coarsest level this F-relaxation is the
// sequential coarse solve.
#include <cstring>

#include "core/engine.hpp"

namespace pxb {

void Engine::f_interp(int level) {
    SweepSpec spec;
    spec.kind = SweepKind::interp;
    spec.phase = Phase::f_interp;
    comm_init_f(level);
    if (batched(level)) batched_intervals(level, spec);
    for (int k = batched(level) ? 0 : levels_[level].ncpoints; k >= 0; --k) interp_interval(level, k);
    comm_wait(level);
    levels_[level].clean();
}

void Engine::interp_interval(int level, int k) {
    Level& g = levels_[level];
    Vec u = work_.u;
    int flo, fhi, ci;
    g.interval(k, flo, fhi, ci);
    if (flo <= fhi) fetch(level, flo - 1, u);
    for (int fi = flo; fi <= fhi; ++fi) {
        take_step(level, fi, u, Phase::f_interp);
        store(level, fi, u);
        correct_fine_fpoint(level, fi, u);
    }
    if (ci > initiali()) correct_fine_cpoint(level, ci);
}

void Engine::correct_fine_fpoint(int level, int fi, CVec u) {
    // e = u - va (in va, as XBraid), then fine C-point += e. With delta
    // correction va stays: the next point's Delta needs its basis.
    Level& g = levels_[level];
    Level& f = levels_[level - 1];
    Vec e = g.va.at(fi - g.ilower);
    if (delta()) {
        arena_.copy(work_.delta, e);
        e = work_.delta;
    }
    arena_.axpy(1.0, u, -1.0, e);
    status_.phase = Phase::f_interp;
    const int f_index = fi * f.cfactor;
    arena_.axpy(1.0, to_fine(level - 1, f_index, e), 1.0, f.ua.at(f.u_slot(f_index)));
}

void Engine::correct_fine_cpoint(int level, int ci) {
    Level& g = levels_[level];
    Level& f = levels_[level - 1];
    Vec e = g.va.at(ci - g.ilower);
    arena_.axpy(1.0, g.ua.at(g.u_slot(ci)), -1.0, e);
    status_.phase = Phase::f_interp;
    const int f_index = ci * f.cfactor;
    arena_.axpy(1.0, to_fine(level - 1, f_index, e), 1.0, f.ua.at(f.u_slot(f_index)));
}

}  // namespace pxb
