// F- and C-relaxation (XBraid's relax.c) and the neighbour exchange of the
// ghost value u[ilower-1] that every sweep needs (XBraid's uvector.c).
#include <cstring>
#include <stdexcept>

#include "core/engine.hpp"

namespace pxb {

void Engine::comm_init_fc(int level) {
    // XBraid's UCommInit: receive u[ilower-1]; send u[iupper] now when it is a
    // C-point (its OLD value: relaxation is Jacobi-like across intervals),
    // otherwise as soon as the sweep has computed it.
    Level& g = levels_[level];
    PendingComm& pc = pending_[level];
    pc.recv_index = pc.send_index = -2;
    if (g.ilower > g.iupper) return;
    const int left = owner(level, g.ilower - 1);
    if (left >= 0) {
        arena_.receive(g.ua.at(-1), left, kGhostTag + level, pc.recv, gate_.size_at(level));
        pc.recv_index = g.ilower - 1;
        pc.recv_source = left;
    }
    if (g.is_cpoint(g.iupper)) {
        const int right = owner(level, g.iupper + 1);
        if (right >= 0)
            arena_.send(g.ua.at(g.u_slot(g.iupper)), pc.send_buf, right, kGhostTag + level, pc.send,
                        gate_.size_at(level));
    } else {
        pc.send_index = g.iupper;
    }
}

void Engine::comm_init_f(int level) {
    // XBraid's UCommInitF (F-relaxation only): exchange only where an F-point
    // interval crosses the rank boundary.
    Level& g = levels_[level];
    PendingComm& pc = pending_[level];
    pc.recv_index = pc.send_index = -2;
    if (g.ilower > g.iupper) return;
    if (!g.is_cpoint(g.ilower)) {
        const int left = owner(level, g.ilower - 1);
        if (left >= 0) {
            arena_.receive(g.ua.at(-1), left, kGhostTag + level, pc.recv, gate_.size_at(level));
            pc.recv_index = g.ilower - 1;
            pc.recv_source = left;
        }
    }
    const bool next_is_f = !g.is_cpoint(wrap(level, g.iupper + 1));
    if (g.is_cpoint(g.iupper) && next_is_f) {
        const int right = owner(level, g.iupper + 1);
        if (right >= 0)
            arena_.send(g.ua.at(g.u_slot(g.iupper)), pc.send_buf, right, kGhostTag + level, pc.send,
                        gate_.size_at(level));
    } else if (next_is_f) {
        pc.send_index = g.iupper;
    }
}

void Engine::comm_wait(int level) {
    PendingComm& pc = pending_[level];
    comm_.wait(pc.recv);
    comm_.wait(pc.send);
    pc.recv_index = pc.send_index = -2;
}

void Engine::fetch(int level, int index, Vec dst) {
    Level& g = levels_[level];
    PendingComm& pc = pending_[level];
    if (index == pc.recv_index) {
        comm_.wait(pc.recv);
        arena_.received(g.ua.at(-1), pc.recv_source, kGhostTag + level);
        pc.recv_index = -2;
        arena_.copy(dst, g.ua.at(-1));
        return;
    }
    const int slot = g.u_slot(index);
    if (slot < 0 || !g.ua_set[static_cast<std::size_t>(slot)])
        throw std::logic_error("pyxbraid internal error: level " + std::to_string(level) + " has no value at index " +
                               std::to_string(index));
    arena_.copy(dst, g.ua.at(slot));
}

void Engine::send_pending(int level, int index, CVec v) {
    PendingComm& pc = pending_[level];
    if (index != pc.send_index) return;
    const int right = owner(level, index + 1);
    if (right >= 0) arena_.send(v, pc.send_buf, right, kGhostTag + level, pc.send, gate_.size_at(level));
    pc.send_index = -2;
}

void Engine::store(int level, int index, CVec v) {
    Level& g = levels_[level];
    send_pending(level, index, v);
    const int slot = g.u_slot(index);
    if (slot >= 0) {
        arena_.copy(g.ua.at(slot), v);
        g.ua_set[static_cast<std::size_t>(slot)] = 1;
    } else {
        keep_shell(level, index, v);  // shells: the point keeps v's shell
    }
}

void Engine::relax_interval(int level, int k, bool weighted, double cwt, bool extrapolate) {
    // Interval k: its F-points from the OLD value left of them, then its
    // C-point (weighted Jacobi with weight cwt when `weighted`; Richardson
    // extrapolated when `extrapolate`).
    Level& g = levels_[level];
    Vec u = work_.u;
    int flo, fhi, ci;
    g.interval(k, flo, fhi, ci);
    if (flo <= fhi)
        fetch(level, flo - 1, u);
    else if (ci > initiali())
        fetch(level, ci - 1, u);
    for (int fi = flo; fi <= fhi; ++fi) {
        take_step(level, fi, u, Phase::fc_relax);
        store(level, fi, u);
        if (done_) emit_access(level, fi, u, true);
    }
    if (ci > initiali()) {  // periodic: index 0 is relaxed too, from the last point
        Vec u_old = work_.other;
        if (weighted) arena_.copy(u_old, g.ua.at(g.u_slot(ci)));
        take_step(level, ci, u, Phase::fc_relax);
        if (weighted) arena_.axpy(1.0 - cwt, u_old, cwt, u);
        store(level, ci, u);
        CVec value = extrapolate ? extrapolate_cpoint(ci, u) : u;
        if (done_) emit_access(level, ci, value, true);
    } else if (level == 0 && ci == 0 && done_) {
        emit_access(0, 0, g.ua.at(g.u_slot(0)), true);
    }
}

void Engine::fc_relax(int level, int nrelax) {
    const double cwt = opt_.cwt_at(level);
    // XBraid applies no weight on the coarsest level unless it is relaxed (relax_only_cg).
    const bool weighted = cwt != 1.0 && (level != nlevels() - 1 || opt_.relax_only_cg);
    SweepSpec spec;
    spec.weighted = weighted;
    spec.cwt = cwt;
    const bool extrapolate = extrapolates(level);
    // Extrapolating C-points are stepped one by one (the grouped sweep has no coarse steps).
    const bool grouped = batched(level) && !extrapolate;
    for (int sweep = 0; sweep < nrelax; ++sweep) {
        comm_init_fc(level);
        if (extrapolate) richardson_comm_init();
        // Right to left: each interval's F-sweep starts from the OLD C value.
        if (grouped) batched_intervals(level, spec);
        for (int k = grouped ? 0 : levels_[level].ncpoints; k >= 0; --k)
            relax_interval(level, k, weighted, cwt, extrapolate);
        comm_wait(level);
        if (extrapolate) richardson_comm_wait();
    }
}

}  // namespace pxb
