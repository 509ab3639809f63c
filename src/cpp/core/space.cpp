// Spatial coarsening and refinement: how a state moves between levels whose
// states differ in size (XBraid's space.c). Without the app's coarsen and
// refine a state moves as a copy, exactly as before.
//
// Every level's states live in slots of the finest level's size: a coarse
// state uses the first size_at(level) elements of its slot. Copies, sums and
// the tape work on whole slots (the elements past a level's size only ever
// meet the same elements of other slots, so they never reach a state), while
// callbacks, norms, checks and the primal messages use each level's own size.
#include "core/engine.hpp"

namespace pxb {

void Engine::fill_space_status(int level, int f_index) {
    // XBraid's CoarsenRefStatus: the fine level and the time of the point.
    const Level& g = levels_[level];
    status_.tstart = status_.tstop = g.t(f_index);
    status_.tindex = f_index;
    status_.level = level;
    status_.nlevels = nlevels();
    status_.iter = iter_;
    status_.done = done_;
    status_.residual_norm = current_rnorm_;
    status_.ntime = ntime_;
}

void Engine::to_coarse(int level, int f_index, CVec fine, Vec coarse) {
    if (!gate_.has_spatial_coarsening()) {
        arena_.copy(coarse, fine);
        return;
    }
    fill_space_status(level, f_index);
    gate_.coarsen(fine, coarse, status_);
    arena_.record_space(true, coarse, fine, status_);
}

CVec Engine::to_fine(int level, int f_index, CVec e) {
    if (!gate_.has_spatial_coarsening()) return e;
    fill_space_status(level, f_index);
    gate_.refine(e, work_.refined, status_);
    arena_.record_space(false, work_.refined, e, status_);
    return work_.refined;
}

}  // namespace pxb
