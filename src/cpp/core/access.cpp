// The final sweep that produces every fine-grid state and gives the user
// access to it (XBraid's access.c), and state queries on top of it.
#include <cstring>
#include <stdexcept>

#include "core/engine.hpp"
#include "core/errors.hpp"

namespace pxb {

void Engine::emit_access(int level, int index, CVec u, bool done) {
    if (level != 0) return;
    keep_solution(index, u);
    user_access(index, done, u);
}

void Engine::keep_solution(int index, CVec u) {
    // The state (and shell) only: the solution is what users see.
    const std::size_t bytes = arena_.state_bytes();
    std::memcpy(solution_.data() + static_cast<std::size_t>(index - levels_[0].ilower) * bytes, u, bytes);
}

void Engine::user_access(int index, bool done, CVec engine_vector) {
    if (opt_.access_level < 1 || !gate_.has_access()) return;
    const std::size_t bytes = arena_.state_bytes();
    CVec u = solution_.data() + static_cast<std::size_t>(index - levels_[0].ilower) * bytes;
    Status st = point_status(index, Phase::access, done);
    if (delta() && engine_vector != nullptr) {
        // The point's basis (read-only) and, at level-0 C-points, its local Lyapunov exponents.
        st.basis = const_cast<std::byte*>(arena_.basis_of(engine_vector, 0));
        st.basis_rank = static_cast<int>(arena_.basis_rank());
        st.lyapunov_exponents = lyapunov_exponents_at(index);
    }
    gate_.access(u, st);
}

void Engine::final_sweep(bool done, bool fc, Phase phase) {
    Level& g = levels_[0];
    solution_.grow(static_cast<std::size_t>(g.npoints()) * arena_.state_bytes());
    if (fc) {
        // final_fc_relax (or Lyapunov exponents): one FC sweep (nrelax 1, cwt
        // of level 0) with access everywhere; XBraid propagates the Lyapunov
        // vectors in it when it computes exponents and defers no level.
        const bool saved = done_, saved_relax = relax_lyap_;
        done_ = true;
        if (lyapunov_exponents() && opt_.defer_delta_level == 0) relax_lyap_ = true;
        fc_relax(0, 1);
        done_ = saved;
        relax_lyap_ = saved_relax;
        return;
    }
    // Sequential marching (one level) evaluates the objective in this sweep.
    const bool objective = nlevels() == 1 && !opt_.relax_only_cg && sweep_.active();
    SweepSpec spec;
    spec.kind = SweepKind::final;
    spec.phase = phase;
    spec.done = done;
    // Grouped steps only where the objective is not evaluated (sequential marching never groups).
    const bool grouped = batched(0) && !objective;
    comm_init_f(0);
    if (grouped) batched_intervals(0, spec);
    for (int k = grouped ? 0 : g.ncpoints; k >= 0; --k) final_interval(k, done, phase, objective);
    comm_wait(0);
}

void Engine::final_interval(int k, bool done, Phase phase, bool objective) {
    Level& g = levels_[0];
    Vec u = work_.sweep;
    int flo, fhi, ci;
    g.interval(k, flo, fhi, ci);
    if (flo <= fhi) fetch(0, flo - 1, u);
    for (int fi = flo; fi <= fhi; ++fi) {
        take_step(0, fi, u, phase);
        store(0, fi, u);
        emit_access(0, fi, u, done);
        if (objective) evaluate_objective(fi, u);
    }
    if (ci > -1) {
        emit_access(0, ci, g.ua.at(g.u_slot(ci)), done);
        if (objective) evaluate_objective(ci, g.ua.at(g.u_slot(ci)));
    }
}

const Bytes& Engine::local_states() {
    ensure_usable();
    comm_.begin_operation();
    return solution();
}

const Bytes& Engine::solution() {
    if (state_ != State::warm) throw std::logic_error("solve() has not been called yet");
    if (!solution_valid_) {
        // access_level 0 skipped the final sweep: run it now (no user access).
        const int saved = opt_.access_level;
        opt_.access_level = 0;
        try {
            final_sweep(true, false, Phase::state_query);
            // Agreement: a rank whose sweep failed never joins; its notice
            // makes the others raise instead of returning a state.
            double ok = 0.0;
            comm_.allreduce(&ok, 1, MPI_SUM);
        } catch (const std::exception& e) {
            opt_.access_level = saved;
            fail_collectively("a state query", &e);
            throw;
        }
        opt_.access_level = saved;
        solution_valid_ = true;
    }
    return solution_;
}

void Engine::state_at(int i, void* out) {
    if (i < 0 || i > ntime_)
        throw std::out_of_range("index must be in [0, " + std::to_string(ntime_) + "], got " + std::to_string(i));
    if (opt_.periodic && i == ntime_) i = 0;  // index ntime is index 0
    ensure_usable();
    comm_.begin_operation();
    const Bytes& sol = solution();
    const int root = owner(0, i);
    if (root == comm_.rank())
        std::memcpy(out, sol.data() + static_cast<std::size_t>(i - ilower()) * arena_.state_bytes(),
                    arena_.state_bytes());
    try {
        comm_.bcast_bytes(out, arena_.state_bytes(), root);
    } catch (const std::exception& e) {
        fail_collectively("a state query", &e);
        throw;
    }
}

}  // namespace pxb
