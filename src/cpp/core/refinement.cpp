// Adaptive temporal refinement (XBraid's refine.c: _braid_FRefine). Level-0
// steps ask for a factor per interval (status.set_rfactor); at the top of a
// cycle the factors build a new fine grid, the iterate is carried over and the
// hierarchy is rebuilt on the new grid.
//
// The numbers are XBraid's: the new times (t_{i-1} + (j/r) dt, or the given
// step sizes), the old points' values (C-points after the cycle, F-points
// relaxed from them), the new points' values (stepped on the new grid from
// the old point to their left, up to the last C-point before the next old
// point, across rank boundaries as in XBraid) and the block distribution of
// the new points. DEVIATION (documented): XBraid sends each old value to the
// rank that owns it on the new grid; here every rank gathers the old level-0
// states and the factors (one broadcast per rank), which gives the same
// values with simpler communication but O(ntime) memory per rank during the
// refinement.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/distribution.hpp"
#include "core/engine.hpp"

namespace pxb {

namespace {
int next_cpoint(int i, int cf) {
    return ((i + cf - 1) / cf) * cf;
}
int prior_cpoint(int i, int cf) {
    return (i / cf) * cf;
}
}  // namespace

void Engine::setup_refinement() {
    if (!opt_.refine) return;
    // Every interval keeps factor 1 until a step asks otherwise (XBraid's InitHierarchy).
    const auto np = static_cast<std::size_t>(levels_[0].npoints());
    refine_.rfactors.assign(np, 1);
    refine_.dts.assign(np, {});
}

void Engine::open_refine_request(int level, Phase phase) {
    if (!opt_.refine) {
        status_.refine = nullptr;
        return;
    }
    RefineRequest& req = refine_.request;
    // The factors come from the cycle's level-0 relaxation and restriction;
    // XBraid restores them around its access sweep and discards what the
    // refinement's own steps ask.
    req.active =
        refine_.active && level == 0 && phase != Phase::access && phase != Phase::refine && phase != Phase::state_query;
    req.rfactor = 0;
    req.dts.clear();
    status_.refine = &req;
}

void Engine::take_refine_request(int index) {
    const RefineRequest& req = refine_.request;
    if (!opt_.refine || !req.active || req.rfactor <= 0) return;
    const Level& g = levels_[0];
    if (index < g.ilower || index > g.iupper) return;
    const auto k = static_cast<std::size_t>(index - g.ilower);
    refine_.rfactors[k] = req.rfactor;
    refine_.dts[k] = req.dts;  // empty: uniform
}

bool Engine::refine_grid() {
    if (!opt_.refine || !refine_.active) return false;
    // XBraid stops refining for good once either limit is reached.
    if (!(refine_.nrefine < opt_.max_refinements && gupper0_ < opt_.tpoints_cutoff)) {
        refine_.active = false;
        return false;
    }
    double total = 0.0;
    for (int r : refine_.rfactors) total += r;
    comm_.allreduce(&total, 1, MPI_SUM);
    if (static_cast<int>(total) - 1 == gupper0_) return false;  // every factor 1

    std::vector<int> rf;
    std::vector<std::vector<double>> dts;
    gather_refine_factors(rf, dts);
    std::vector<int> new_of_old;
    std::vector<double> new_times = refined_times(rf, dts, new_of_old);

    // The old level-0 values: C-points as the cycle left them, F-points relaxed from them.
    const int saved_access = opt_.access_level;
    opt_.access_level = 0;
    final_sweep(false, false, Phase::refine);
    opt_.access_level = saved_access;
    Bytes old_states;
    gather_level0(old_states);

    // The new grid and hierarchy (XBraid: gupper, nrefine, incr_max_levels, InitHierarchy).
    times_ = std::move(new_times);
    ntime_ = static_cast<int>(times_.size()) - 1;
    gupper0_ = ntime_;
    ++refine_.nrefine;
    if (opt_.incr_max_levels) ++opt_.max_levels;
    build_hierarchy();
    probe_level_sizes();
    setup_richardson();
    setup_refinement();
    solution_valid_ = false;
    sync(Phase::after_refine);
    init_refined_level0(old_states, new_of_old);
    return true;
}

void Engine::gather_refine_factors(std::vector<int>& rf, std::vector<std::vector<double>>& dts) {
    // Every rank's factors and step sizes, on every rank (one rank's part at a time).
    rf.assign(static_cast<std::size_t>(gupper0_) + 1, 1);
    dts.assign(rf.size(), {});
    for (int r = 0; r < comm_.size(); ++r) gather_refine_part(r, rf, dts);
}

void Engine::gather_refine_part(int root, std::vector<int>& rf, std::vector<std::vector<double>>& dts) {
    // Rank `root`'s points: per point its factor (negative: sizes given), then
    // the sizes of its flagged points, in order.
    int lo = 0, hi = 0;
    block_interval(gupper0_ + 1, comm_.size(), root, lo, hi);
    if (hi < lo) return;
    const Level& g = levels_[0];
    const bool mine = root == comm_.rank();
    std::vector<double> head(static_cast<std::size_t>(hi - lo + 1));
    if (mine) {
        for (int i = lo; i <= hi; ++i) {
            const auto k = static_cast<std::size_t>(i - g.ilower);
            head[static_cast<std::size_t>(i - lo)] =
                refine_.dts[k].empty() ? refine_.rfactors[k] : -refine_.rfactors[k];
        }
    }
    comm_.bcast(head.data(), head.size(), root);
    std::size_t nsizes = 0;
    for (double h : head)
        if (h < 0) nsizes += static_cast<std::size_t>(-h) - 1;
    std::vector<double> sizes(nsizes);
    if (mine) {
        std::size_t at = 0;
        for (int i = lo; i <= hi; ++i)
            for (double d : refine_.dts[static_cast<std::size_t>(i - g.ilower)]) sizes[at++] = d;
    }
    if (nsizes > 0) comm_.bcast(sizes.data(), sizes.size(), root);
    auto next = sizes.begin();
    for (int i = lo; i <= hi; ++i) {
        const double h = head[static_cast<std::size_t>(i - lo)];
        rf[static_cast<std::size_t>(i)] = static_cast<int>(h < 0 ? -h : h);
        if (h >= 0) continue;
        const auto count = static_cast<std::ptrdiff_t>(-h - 1);
        dts[static_cast<std::size_t>(i)].assign(next, next + count);
        next += count;
    }
}

std::vector<double> Engine::refined_times(const std::vector<int>& rf, const std::vector<std::vector<double>>& dts,
                                          std::vector<int>& new_of_old) const {
    // XBraid's r_ta: interval (i-1, i] in rf[i] parts, uniformly t_{i-1} + (j/r) dt
    // or by the given sizes (added to the previous new time).
    std::vector<double> t;
    t.reserve(times_.size());
    new_of_old.assign(times_.size(), 0);
    t.push_back(times_[0]);
    for (std::size_t i = 1; i < times_.size(); ++i) {
        const int r = rf[i];
        const double dt = times_[i] - times_[i - 1];
        for (int j = 1; j < r; ++j) {
            if (!dts[i].empty())
                t.push_back(t.back() + dts[i][static_cast<std::size_t>(j - 1)]);
            else
                t.push_back(times_[i - 1] + (static_cast<double>(j) / r) * dt);
        }
        t.push_back(times_[i]);
        new_of_old[i] = static_cast<int>(t.size()) - 1;
    }
    return t;
}

void Engine::gather_level0(Bytes& all) {
    // Every rank's level-0 states (the final sweep's copy), on every rank.
    const std::size_t bytes = arena_.vector_bytes();
    all.assign(static_cast<std::size_t>(gupper0_ + 1) * bytes);
    const Level& g = levels_[0];
    if (g.npoints() > 0)
        std::memcpy(all.data() + static_cast<std::size_t>(g.ilower) * bytes, solution_.data(),
                    static_cast<std::size_t>(g.npoints()) * bytes);
    for (int r = 0; r < comm_.size(); ++r) {
        int lo = 0, hi = 0;
        block_interval(gupper0_ + 1, comm_.size(), r, lo, hi);
        if (hi >= lo)
            comm_.bcast_bytes(all.data() + static_cast<std::size_t>(lo) * bytes,
                              static_cast<std::size_t>(hi - lo + 1) * bytes, r);
    }
}

void Engine::init_refined_level0(const Bytes& old_states, const std::vector<int>& new_of_old) {
    // XBraid's FRefine step 5: from each old point, step right on the new grid
    // up to the last C-point before the next old point; a rank whose first
    // C-point lies before its first old point continues its left neighbour's
    // stepping (received at ilower - 1).
    Level& g = levels_[0];
    PendingComm& pc = pending_[0];
    pc.recv_index = pc.send_index = -2;
    if (g.npoints() == 0) return;
    const int cf = g.cfactor;
    const std::size_t bytes = arena_.vector_bytes();
    std::vector<int> old_of_new(static_cast<std::size_t>(gupper0_) + 2, -1);
    for (std::size_t i = 0; i < new_of_old.size(); ++i) old_of_new[static_cast<std::size_t>(new_of_old[i])] = int(i);
    old_of_new.back() = static_cast<int>(new_of_old.size());  // gupper + 1: past the end
    auto first_old_from = [&](int i) {
        while (old_of_new[static_cast<std::size_t>(i)] < 0) ++i;
        return i;
    };
    const int f_first = first_old_from(g.ilower);
    const int f_next = first_old_from(g.iupper + 1);
    const bool recv_msg = f_first > next_cpoint(g.ilower, cf);
    const bool send_msg = f_next > next_cpoint(g.iupper + 1, cf);
    if (recv_msg) {
        const int left = owner(0, g.ilower - 1);
        arena_.receive(g.ua.at(-1), left, kGhostTag, pc.recv, gate_.size_at(0));
        pc.recv_index = g.ilower - 1;
        pc.recv_source = left;
    }
    if (send_msg) pc.send_index = g.iupper;
    Vec u = work_.u;
    int next = f_next;
    for (int s = g.iupper; s >= g.ilower - 1;) {
        int fi = s;
        while (fi >= g.ilower && old_of_new[static_cast<std::size_t>(fi)] < 0) --fi;
        if (fi >= g.ilower) {
            const auto old = static_cast<std::size_t>(old_of_new[static_cast<std::size_t>(fi)]);
            arena_.copy(u, old_states.data() + old * bytes);
        } else if (recv_msg) {
            fi = g.ilower - 1;
            fetch(0, fi, u);
        } else {
            break;
        }
        int j = fi;
        const int hi = std::min(prior_cpoint(next - 1, cf), g.iupper);
        for (; j < hi; ++j) {
            store(0, j, u);
            take_step(0, j + 1, u, Phase::refine);
        }
        store(0, j, u);
        next = fi;
        s = fi - 1;
    }
    comm_wait(0);
}

}  // namespace pxb
