// Shell vectors (XBraid's braid_SetShell, uvector.c and hierarchy.c): with
// shells, every point of a level keeps its shell -- per-point metadata such as
// the time values of a multistep method -- also where storage keeps no state.
// A stored vector carries its shell after the state (RecordedArena); the
// points without a stored state keep theirs in Level::sa. Shells are copied
// with their vectors (copies, messages, the solution), never summed or normed.
#include <cstring>

#include "core/engine.hpp"

namespace pxb {

double* Engine::shell_slot(int level, int index) noexcept {
    // Where the point's shell lives: in its stored vector, else in sa.
    Level& g = levels_[level];
    if (!shells() || index < g.ilower || index > g.iupper) return nullptr;
    const int slot = g.u_slot(index);
    if (slot >= 0) return reinterpret_cast<double*>(arena_.shell_of(g.ua.at(slot)));
    return g.sa.data() + static_cast<std::size_t>(index - g.ilower) * arena_.shell_size();
}

void Engine::keep_shell(int level, int index, CVec v) {
    // XBraid's USetVector at a shell point: the stepped vector's shell is
    // kept. (A stored point gets its whole vector from store().)
    Level& g = levels_[level];
    if (!shells() || index < g.ilower || index > g.iupper || g.u_slot(index) >= 0) return;
    std::memcpy(shell_slot(level, index), arena_.shell_of(v), arena_.shell_size() * sizeof(double));
    g.sa_set[static_cast<std::size_t>(index - g.ilower)] = 1;
}

void Engine::shells_from_va(int level) {
    // XBraid's InitGuess on a coarse level: a shell clone of va where no state is stored.
    Level& g = levels_[level];
    for (int i = g.ilower; i <= g.iupper; ++i) keep_shell(level, i, g.va.at(i - g.ilower));
}

CVec Engine::with_point_shell(int level, int index, CVec usual) {
    // Called where the target point has no stored state. XBraid hands the
    // step the point's shell itself (no state); here ustop's state is the
    // guess used without shells (the vector being stepped on level 0, va on
    // coarse levels), so an app that ignores shells computes the same.
    const double* shell = shell_slot(level, index);
    if (shell == nullptr || !levels_[level].sa_set[static_cast<std::size_t>(index - levels_[level].ilower)])
        return usual;  // no shell yet (seq_soln's sweep, a cleaned level): XBraid's NULL ustop
    std::memcpy(work_.ustop, usual, shell_offset(n_, arena_.dtype()));
    std::memcpy(arena_.shell_of(work_.ustop), shell, arena_.shell_size() * sizeof(double));
    return work_.ustop;
}

void Engine::init_level0_with_shells() {
    // In increasing index order, as XBraid calls Init (C-points) and SInit
    // (the others; with storage >= 0 into the stored vector, whose state
    // stays unset until a sweep computes it).
    Level& g = levels_[0];
    for (int i = g.ilower; i <= g.iupper; ++i) {
        status_.tstart = status_.tstop = g.t(i);
        status_.tindex = i;
        const int slot = g.u_slot(i);
        if (g.is_cpoint(i)) {
            gate_.init(g.t(i), g.ua.at(slot), status_);
            g.ua_set[static_cast<std::size_t>(slot)] = 1;
            continue;
        }
        Vec target = slot >= 0 ? g.ua.at(slot) : work_.ustop;
        gate_.init_shell(g.t(i), target, status_);
        if (slot < 0) std::memcpy(shell_slot(0, i), arena_.shell_of(target), arena_.shell_size() * sizeof(double));
        g.sa_set[static_cast<std::size_t>(i - g.ilower)] = 1;
    }
}

}  // namespace pxb
