// Grid hierarchy, time values, ownership and initial guesses
// (XBraid's hierarchy.c, distribution.c and InitGuess / CopyFineToCoarse).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "core/distribution.hpp"
#include "core/engine.hpp"
#include "core/format.hpp"

namespace pxb {

namespace {
// XBraid's _braid_ProjectInterval with index 0: the first and last multiple of
// `stride` inside [ilower, iupper].
void project(int ilower, int iupper, int stride, int& plower, int& pupper) {
    int il = ilower, iu = iupper;
    il = (il <= 0) ? il / stride : (il + stride - 1) / stride;
    iu = (iu >= 0) ? iu / stride : (iu - (stride - 1)) / stride;
    plower = il * stride;
    pupper = iu * stride;
}
}  // namespace

int Engine::wrap(int level, int index) const noexcept {
    if (!opt_.periodic) return index;
    // DEVIATION (documented): the neighbours of a level's ends are its own
    // other end; XBraid wraps the fine index instead (the same when ntime is
    // divisible by the coarsening, else its ranks disagree on the owners).
    const int points = levels_[level].gupper + 1;
    return ((index % points) + points) % points;
}

int Engine::owner(int level, int index) const {
    index = wrap(level, index);
    if (index < 0) return -1;
    long long fine = index;
    for (int l = level - 1; l >= 0; --l) fine *= levels_[l].cfactor;
    if (fine > gupper0_) return -1;
    return block_owner(gupper0_ + 1, comm_.size(), static_cast<int>(fine));
}

void Engine::build_hierarchy() {
    int ilower = 0, iupper = 0;
    block_interval(gupper0_ + 1, comm_.size(), comm_.rank(), ilower, iupper);

    // XBraid: do sequential time marching if min_coarse is already reached.
    int max_levels = opt_.max_levels;
    if (gupper0_ <= opt_.min_coarse) max_levels = 1;

    levels_.clear();
    levels_.reserve(static_cast<std::size_t>(std::max(1, std::min(max_levels, 64))));
    std::vector<long long> stride;  // fine index = level index * stride
    levels_.emplace_back();
    levels_[0].ilower = ilower;
    levels_[0].iupper = iupper;
    stride.push_back(1);

    int gcupper = gupper0_;
    for (int level = 0;; ++level) {
        Level& g = levels_[level];
        g.level = level;
        const int cf = opt_.cfactor_at(level);
        g.gupper = gcupper;
        int gcl = 0, gcu = 0;
        project(0, gcupper, cf, gcl, gcu);
        gcl /= cf;
        gcu /= cf;
        project(g.ilower, g.iupper, cf, g.clower, g.cupper);
        const int clo = g.clower / cf, chi = g.cupper / cf;
        g.cfactor = cf;
        g.ncpoints = std::max(0, chi - clo + 1);

        if (gcl < gcu && max_levels > level + 1 && (gcu - gcl) >= opt_.min_coarse) {
            Level coarse;
            coarse.ilower = clo;
            coarse.iupper = chi;
            levels_.push_back(coarse);
            stride.push_back(stride[level] * cf);
            gcupper = gcu;
            continue;
        }
        if (!opt_.relax_only_cg) {
            // Coarsest level solved by sequential marching: one C-point (index 0).
            g.ncpoints = (g.ilower == 0) ? 1 : 0;
            g.clower = g.ilower;
            g.cupper = 0;
            g.cfactor = g.gupper + 1;
        }
        break;
    }

    pending_.assign(levels_.size(), PendingComm{});
    for (std::size_t l = 0; l < levels_.size(); ++l) {
        Level& g = levels_[l];
        const int np = g.npoints();
        g.ta.assign(static_cast<std::size_t>(np) + 1, 0.0);
        for (int i = g.ilower; i <= g.iupper; ++i)
            g.ta[static_cast<std::size_t>(i - g.ilower + 1)] = times_[static_cast<std::size_t>(i * stride[l])];
        // Ghost time: the time of ilower-1 on this level (t(ilower) at the start;
        // periodic: the level's last point, where the step to index 0 starts).
        const int before = g.ilower > 0 ? g.ilower - 1 : (opt_.periodic ? g.gupper : -1);
        if (np > 0) g.ta[0] = before >= 0 ? times_[static_cast<std::size_t>(before * stride[l])] : g.ta[1];
        g.stores_all = opt_.storage >= 0 && static_cast<int>(l) >= opt_.storage;
    }
    allocate_storage();
}

std::vector<int> Engine::level_sizes() const {
    std::vector<int> sizes;
    for (const Level& g : levels_) sizes.push_back(g.gupper + 1);
    return sizes;
}

std::size_t Engine::storage_bytes() const {
    return arena_.bytes() + solution_.capacity();
}

std::size_t Engine::level_vectors() const {
    // Work vectors (3; shells: + ustop; spatial coarsening: + refined corrections), va send buffer;
    // Richardson: the left C-point, its send buffer, the coarse step; delta correction: work_.delta,
    // work_.action.
    std::size_t vectors = 4 + (shells() ? 1 : 0) + (gate_.has_spatial_coarsening() ? 1 : 0);
    if (opt_.richardson) vectors += 3;
    if (delta()) vectors += 2;
    for (std::size_t l = 0; l < levels_.size(); ++l) {
        const Level& g = levels_[l];
        const std::size_t nu = static_cast<std::size_t>(g.stores_all ? g.npoints() : g.ncpoints);
        vectors += (nu + 1) + 1;  // ua (+ghost), ghost send buffer
        if (l > 0) vectors += 2 * (static_cast<std::size_t>(g.npoints()) + 1);
    }
    return vectors;
}

void Engine::allocate_storage() {
    // Sizes in vectors of n_ doubles (small integers), multiplied by n_ only
    // after the check.
    std::size_t vectors = level_vectors();
    batch_.capacity = batch_capacity();
    const std::size_t batch_arrays = gate_.has_residual() ? 4 : 3;  // u, ustop, old (+ fstop)
    vectors += batch_arrays * batch_.capacity;
    const Level& fine = levels_[0];
    const std::size_t stored = static_cast<std::size_t>(fine.stores_all ? fine.npoints() : fine.ncpoints);
    std::size_t needed = vectors + static_cast<std::size_t>(fine.npoints());  // + the solution copy
    if (sweep_.gradient()) needed += vectors + 2 + stored;                    // bars, scratch, adjoint iterate
    const bool batch_adjoint = sweep_.gradient() && batch_.capacity > 0 && app_->has_step_adjoint_batch();
    if (batch_adjoint) needed += 4 * batch_.capacity;  // rows of step_adjoint_batch
    // (with delta correction every vector holds its basis too: 1 + delta_rank states)
    check_storage_size(needed, n_ * (1 + arena_.basis_rank()), arena_.dtype(),
                       "on rank " + std::to_string(comm_.rank()) + " (ntime=" + std::to_string(ntime_) + ", " +
                           std::to_string(nlevels()) + " level(s)" + (sweep_.gradient() ? ", with the adjoint" : "") +
                           ")");
    arena_.allocate(vectors, sweep_.gradient());
    take_work_vectors();
    for (std::size_t l = 0; l < levels_.size(); ++l) {
        Level& g = levels_[l];
        const int np = g.npoints();
        const int nu = g.stores_all ? np : g.ncpoints;
        g.ua.bind(arena_.take(VectorArray::vectors(nu)), nu, arena_.vector_bytes());
        g.ua_set.assign(static_cast<std::size_t>(nu), 0);
        if (shells()) {
            g.sa.assign(static_cast<std::size_t>(np) * arena_.shell_size(), 0.0);
            g.sa_set.assign(static_cast<std::size_t>(np), 0);
        }
        pending_[l].send_buf = arena_.take(1);
        if (l > 0) {
            g.va.bind(arena_.take(VectorArray::vectors(np)), np, arena_.vector_bytes());
            g.fa.bind(arena_.take(VectorArray::vectors(np)), np, arena_.vector_bytes());
        }
    }
    if (batch_.capacity > 0) allocate_batch(batch_arrays == 4, batch_adjoint);
    if (sweep_.gradient()) sweep_.allocate(stored);
}

void Engine::take_work_vectors() {
    // The ones level_vectors() counts first: 3, + ustop (shells), + refined (spatial coarsening), + delta
    // correction's two, va's send buffer, + Richardson's three.
    work_.u = arena_.take(1);
    work_.other = arena_.take(1);
    work_.sweep = arena_.take(1);
    if (shells()) work_.ustop = arena_.take(1);
    if (gate_.has_spatial_coarsening()) work_.refined = arena_.take(1);
    allocate_delta();  // delta correction only: work_.delta, work_.action
    va_.send_buf = arena_.take(1);
    if (opt_.richardson) {
        rich_.left = arena_.take(1);
        rich_.send_buf = arena_.take(1);
        rich_.coarse = arena_.take(1);
    }
}

void Engine::allocate_batch(bool fstop, bool adjoint) {
    batch_.u = arena_.take(batch_.capacity);
    batch_.ustop = arena_.take(batch_.capacity);
    batch_.old = arena_.take(batch_.capacity);
    if (fstop) batch_.fstop = arena_.take(batch_.capacity);
    arena_.storage().batch_times.assign(2 * batch_.capacity * sizeof(double));
    batch_.objective_terms.assign(static_cast<std::size_t>(levels_[0].npoints()), 0.0);
    if (adjoint) arena_.storage().batch_adjoint.assign(4 * batch_.capacity * arena_.vector_bytes());
}

void Engine::init_guess_level0() {
    Level& g = levels_[0];
    status_ = Status{};
    status_.nlevels = nlevels();
    status_.phase = Phase::init;
    if (shells()) {
        init_level0_with_shells();
        return;
    }
    for (int i = g.clower; i <= g.cupper; i += g.cfactor) {
        const int slot = g.u_slot(i);
        status_.tstart = status_.tstop = g.t(i);
        status_.tindex = i;
        gate_.init(g.t(i), g.ua.at(slot), status_);
        if (delta()) init_basis(g.t(i), g.ua.at(slot));
        g.ua_set[static_cast<std::size_t>(slot)] = 1;
    }
}

void Engine::sequential_guess() {
    // seq_soln: init at tstart, then level-0 steps, pipelined across ranks.
    Level& g = levels_[0];
    PendingComm& pc = pending_[0];
    Vec u = work_.u;
    int first = g.ilower;
    if (g.ilower == 0) {
        status_ = Status{};
        status_.nlevels = nlevels();
        status_.phase = Phase::init;
        status_.tstart = status_.tstop = g.t(0);
        gate_.init(g.t(0), u, status_);
        pc.send_index = g.iupper;
        store(0, 0, u);
        first = 1;
    } else {
        const int left = owner(0, g.ilower - 1);
        arena_.receive(g.ua.at(-1), left, kGhostTag, pc.recv);
        pc.recv_index = g.ilower - 1;
        pc.recv_source = left;
        pc.send_index = g.iupper;
        fetch(0, g.ilower - 1, u);
    }
    for (int i = first; i <= g.iupper; ++i) {
        take_step(0, i, u, Phase::sequential);
        store(0, i, u);
    }
    comm_wait(0);
}

void Engine::copy_fine_to_coarse() {
    // skip: inject fine C-point values to every level (no FAS right-hand sides).
    for (int l = 1; l < nlevels(); ++l) {
        Level& g = levels_[l];
        Level& f = levels_[l - 1];
        for (int i = g.ilower; i <= g.iupper; ++i) {
            const int fslot = f.u_slot(i * f.cfactor);
            status_.phase = Phase::init;
            to_coarse(l - 1, i * f.cfactor, f.ua.at(fslot), g.va.at(i - g.ilower));
            const int slot = g.u_slot(i);
            if (slot >= 0) {
                arena_.copy(g.ua.at(slot), g.va.at(i - g.ilower));
                g.ua_set[static_cast<std::size_t>(slot)] = 1;
            } else {
                keep_shell(l, i, f.ua.at(fslot));
            }
        }
        g.va_valid = true;
        g.fa_valid = false;
    }
}

void Engine::init_coarse_from_va(int level) {
    Level& g = levels_[level];
    for (int i = g.ilower; i <= g.iupper; ++i) {
        const int slot = g.u_slot(i);
        if (slot < 0) continue;
        arena_.copy(g.ua.at(slot), g.va.at(i - g.ilower));
        g.ua_set[static_cast<std::size_t>(slot)] = 1;
    }
    shells_from_va(level);
}

}  // namespace pxb

namespace pxb {

void Engine::reset() {
    ensure_usable();
    if (state_ == State::warm) state_ = State::cold;
    solution_valid_ = false;
    // Tolerance references belong to the problem that is being forgotten.
    rnorm0_ = -1.0;
    full_rnorm0_ = -1.0;
    sweep_.reset();
}

Engine::Iterate Engine::iterate() const {
    if (state_ != State::warm) throw std::logic_error("there is no iterate before solve() has run");
    const Level& g = levels_[0];
    const std::size_t bytes = arena_.vector_bytes();
    Iterate it;
    for (int i = g.ilower; i <= g.iupper; ++i) {
        const int slot = g.u_slot(i);
        if (slot >= 0 && g.ua_set[static_cast<std::size_t>(slot)]) it.indices.push_back(i);
    }
    it.states.assign(it.indices.size() * bytes);
    if (sweep_.gradient()) it.adjoint.assign(it.indices.size() * bytes);
    auto& sweep = const_cast<AdjointSweep&>(sweep_);  // iterate_at only reads here
    for (std::size_t k = 0; k < it.indices.size(); ++k) {
        const int slot = g.u_slot(it.indices[k]);
        std::memcpy(it.states.data() + k * bytes, g.ua.at(slot), bytes);
        if (sweep_.gradient()) std::memcpy(it.adjoint.data() + k * bytes, sweep.iterate_at(slot), bytes);
    }
    it.rnorm0 = rnorm0_;
    it.rnorm0_adjoint = sweep_.reference();
    return it;
}

void Engine::set_iterate(const std::vector<int>& indices, CVec states, CVec adjoint, double rnorm0,
                         double rnorm0_adjoint) {
    ensure_usable();
    Level& g = levels_[0];
    const std::size_t bytes = arena_.vector_bytes();
    std::vector<int> pos(static_cast<std::size_t>(g.npoints()), -1);
    for (std::size_t k = 0; k < indices.size(); ++k)
        if (indices[k] >= g.ilower && indices[k] <= g.iupper)
            pos[static_cast<std::size_t>(indices[k] - g.ilower)] = int(k);
    // Every stored point of this rank must be given (an iterate of another
    // solver layout -- other cfactor or storage -- is refused, not guessed).
    for (int i = g.ilower; i <= g.iupper; ++i)
        if (g.u_slot(i) >= 0 && pos[static_cast<std::size_t>(i - g.ilower)] < 0)
            throw std::invalid_argument("the iterate has no state for the stored time point " + std::to_string(i) +
                                        " (was it saved from a solver with the same cfactor and storage?)");
    for (int i = g.ilower; i <= g.iupper; ++i) {
        const int slot = g.u_slot(i);
        if (slot < 0) continue;
        const auto k = static_cast<std::size_t>(pos[static_cast<std::size_t>(i - g.ilower)]);
        std::memcpy(g.ua.at(slot), states + k * bytes, bytes);
        g.ua_set[static_cast<std::size_t>(slot)] = 1;
        if (adjoint != nullptr && sweep_.gradient()) std::memcpy(sweep_.iterate_at(slot), adjoint + k * bytes, bytes);
    }
    rnorm0_ = rnorm0;
    sweep_.set_reference(rnorm0_adjoint);
    state_ = State::warm;
    solution_valid_ = false;
}

void Engine::refresh_initial_condition() {
    ensure_usable();
    Level& g = levels_[0];
    if (state_ != State::warm || g.ilower != 0) return;  // without an iterate, solve() calls init anyway
    status_ = Status{};
    status_.nlevels = nlevels();
    status_.phase = Phase::init;
    status_.tstart = status_.tstop = g.t(0);
    try {
        gate_.init(g.t(0), g.ua.at(g.u_slot(0)), status_);
    } catch (...) {
        // The gate told the other ranks; they raise in their next operation.
        state_ = State::broken;
        comm_.abandon(arena_.owner());
        throw;
    }
    solution_valid_ = false;
}

}  // namespace pxb
