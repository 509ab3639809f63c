// The full residual norm (XBraid's _braid_ComputeFullRNorm in norm.c, with
// braid_SetFullRNormRes): the app's residual at EVERY fine point, not only at
// the C-points the restriction measures. F-points: r_i = A(Phi(u_{i-1}), u_{i-1})
// (zero for an exact step, round-off or the solver's tolerance otherwise);
// C-points: r_i = A(u_i, u_{i-1}). The stored states are not changed.
#include "core/engine.hpp"
#include "core/norms.hpp"

namespace pxb {

double Engine::full_residual_norm() {
    TemporalNorm norm(opt_.tnorm);
    comm_init_fc(0);
    for (int k = levels_[0].ncpoints; k >= 0; --k) full_residual_interval(k, norm);
    comm_wait(0);
    return norm.reduce(comm_);
}

void Engine::full_residual_interval(int k, TemporalNorm& norm) {
    Level& g = levels_[0];
    Vec u = work_.u;
    Vec r = work_.other;
    int flo, fhi, ci;
    g.interval(k, flo, fhi, ci);
    if (flo <= fhi)
        fetch(0, flo - 1, u);
    else if (ci > initiali())
        fetch(0, ci - 1, u);
    for (int fi = flo; fi <= fhi; ++fi) {
        arena_.copy(r, u);  // u(fi - 1)
        take_step(0, fi, u, Phase::full_residual);
        send_pending(0, fi, u);  // the right neighbour's ghost (nothing is stored)
        fill_status(0, fi, Phase::full_residual);
        gate_.full_residual(u, r, status_);  // A(Phi(u(fi - 1)), u(fi - 1))
        norm.add(gate_.norm(r, &status_));
    }
    if (ci > initiali()) {
        fill_status(0, ci, Phase::full_residual);
        gate_.full_residual(g.ua.at(g.u_slot(ci)), u, status_);  // A(u(ci), u(ci - 1))
        norm.add(gate_.norm(u, &status_));
    }
}

void Engine::record_full_residual_norm() {
    const double value = full_residual_norm();
    current_full_rnorm_ = value;
    record_norm(full_rnorms_, iter_, value);
    // The reference of a relative tolerance, as for ||r_0|| (XBraid's full_rnorm0).
    if ((iter_ == 0 || (iter_ == 1 && opt_.skip && !opt_.seq_soln)) && full_rnorm0_ == -1.0) full_rnorm0_ = value;
}

}  // namespace pxb
