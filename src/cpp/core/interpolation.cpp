// F-relaxation on a coarse level and correction of the next finer level's
// C-points (XBraid's interp.c). On the coarsest level this F-relaxation is the
// sequential coarse solve.
#include <cstring>

#include "core/engine.hpp"

namespace pxb {

void Engine::f_interp(int level) {
    Level& g = levels_[level];
    Level& f = levels_[level - 1];
    const int fcf = f.cfactor;
    Vec u = work_.u;

    comm_init_f(level);
    for (int k = g.ncpoints; k >= 0; --k) {
        int flo, fhi, ci;
        g.interval(k, flo, fhi, ci);
        if (flo <= fhi) fetch(level, flo - 1, u);
        for (int fi = flo; fi <= fhi; ++fi) {
            take_step(level, fi, u, Phase::f_interp);
            store(level, fi, u);
            // e = u - va (in va, as XBraid), then fine C-point += e.
            Vec e = g.va.at(fi - g.ilower);
            arena_.axpy(1.0, u, -1.0, e);
            arena_.axpy(1.0, e, 1.0, f.ua.at(f.u_slot(fi * fcf)));
        }
        if (ci > 0) {
            Vec e = g.va.at(ci - g.ilower);
            arena_.axpy(1.0, g.ua.at(g.u_slot(ci)), -1.0, e);
            arena_.axpy(1.0, e, 1.0, f.ua.at(f.u_slot(ci * fcf)));
        }
    }
    comm_wait(level);
    g.clean();
}

}  // namespace pxb
