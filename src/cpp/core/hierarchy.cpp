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
std::string grid_message(double tstart, double tstop, int ntime) {
    return "tstart=" + shortest(tstart) + ", tstop=" + shortest(tstop) + " and ntime=" + std::to_string(ntime);
}

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

Engine::Engine(std::shared_ptr<App> app, MPI_Comm comm, double tstart, double tstop, int ntime,
               std::vector<double> times, Options options)
    : app_(std::move(app)),
      comm_(comm),
      gate_(*app_, comm_),
      opt_(std::move(options)),
      n_(app_->size()),
      ntime_(ntime) {
    // Building is collective: a rank whose setup fails (a size only it cannot
    // hold, say) tells the others, and every rank raises instead of some
    // waiting in the first solve for a rank that is gone.
    comm_.begin_operation();
    std::exception_ptr error;
    try {
        setup(tstart, tstop, std::move(times));
    } catch (const std::exception& e) {
        error = std::current_exception();
        comm_.notify_failure("rank " + std::to_string(comm_.rank()) + ": building the Solver raised " + e.what());
    }
    if (!comm_.agree(!error)) {
        broken_ = true;
        comm_.abandon(mem_);
        std::rethrow_exception(error);
    }
}

void Engine::setup(double tstart, double tstop, std::vector<double> times) {
    // First, before anything that may throw on some ranks only: every rank
    // must agree on the problem, or collectives below would hang.
    check_consistent_across_ranks(tstart, tstop, times);
    opt_.validate();
    if (ntime_ < 1) throw std::invalid_argument("ntime must be >= 1, got " + std::to_string(ntime_));
    if (n_ == 0) throw std::invalid_argument("the app's state size must be >= 1");
    if (ntime_ + 1 < comm_.size())
        throw std::invalid_argument("ntime + 1 = " + std::to_string(ntime_ + 1) +
                                    " time points cannot be shared by " +
                                    std::to_string(comm_.size()) + " ranks");
    if (times.empty()) {
        if (!std::isfinite(tstart) || !std::isfinite(tstop) || !std::isfinite(tstop - tstart) || !(tstop > tstart))
            throw std::invalid_argument(grid_message(tstart, tstop, ntime_) +
                                        ": tstop - tstart must be finite and > 0");
        times_.resize(static_cast<std::size_t>(ntime_) + 1);
        // Exactly XBraid's formula: never accumulate dt.
        for (int i = 0; i <= ntime_; ++i)
            times_[i] = tstart + ((static_cast<double>(i)) / ntime_) * (tstop - tstart);
        // An interval too short for ntime float64 steps repeats times: every
        // step would have dt = 0 (and MGRIT would iterate on nothing).
        for (int i = 1; i <= ntime_; ++i)
            if (!(times_[i] > times_[i - 1])) {
                throw std::invalid_argument(
                    grid_message(tstart, tstop, ntime_) + " give a time grid that is not strictly increasing (t[" +
                    std::to_string(i) + "] = " + shortest(times_[i]) + " <= t[" + std::to_string(i - 1) +
                    "] = " + shortest(times_[i - 1]) + "): the interval is too short for ntime steps in float64");
            }
    } else {
        if (static_cast<int>(times.size()) != ntime_ + 1)
            throw std::invalid_argument("times must hold ntime + 1 values");
        for (std::size_t i = 0; i < times.size(); ++i)
            if (!std::isfinite(times[i]) || (i > 0 && !(times[i] > times[i - 1])))
                throw std::invalid_argument("times must be finite and strictly increasing (times[" +
                                            std::to_string(i) + "])");
        times_ = std::move(times);
    }
    app_->on_setup(times_.front(), times_.back());
    gate_.probe_capabilities();
    if ((opt_.adjoint || opt_.objective_only) && !app_->has_adjoint())
        throw std::invalid_argument(app_->name() + " defines no objective and adjoint callbacks; adjoint=True "
                                    "and objective_only=True need them");
    if (opt_.adjoint && gate_.has_residual())
        throw std::invalid_argument("adjoint=True cannot be combined with a user residual (as in XBraid)");
    build_hierarchy();
    tstart_obj_ = opt_.has_tstart_objective ? opt_.tstart_objective : times_.front();
    tstop_obj_ = opt_.has_tstop_objective ? opt_.tstop_objective : times_.back();
    if (opt_.adjoint || opt_.objective_only) {
        // An empty window would give J = 0 and a zero gradient without a word.
        const auto first = std::lower_bound(times_.begin(), times_.end(), tstart_obj_);
        if (first == times_.end() || *first > tstop_obj_) {
            throw std::invalid_argument("the objective window [tstart_objective, tstop_objective] = [" +
                                        shortest(tstart_obj_) + ", " + shortest(tstop_obj_) +
                                        "] contains no time point of the grid (" + std::to_string(times_.size()) +
                                        " points in [" + shortest(times_.front()) + ", " +
                                        shortest(times_.back()) + "])");
        }
    }
}

void Engine::check_consistent_across_ranks(double tstart, double tstop, const std::vector<double>& times) {
    // Different problems or options per rank would hang or give wrong numbers;
    // one MIN and one MAX reduction at construction find the first difference.
    if (comm_.size() == 1) return;
    double times_sum = 0.0;
    for (double t : times) times_sum += t;
    const std::string fp = app_->name() + "'s parameters (fingerprint)";
    std::vector<std::pair<std::string, double>> items = {
        {"ntime", double(ntime_)}, {"state size", double(n_)}, {"tstart", times.empty() ? tstart : times.front()},
        {"tstop", times.empty() ? tstop : times.back()}, {"times", times_sum + double(times.size())},
        {"max_levels", double(opt_.max_levels)}, {"min_coarse", double(opt_.min_coarse)},
        {"cfactor", double(opt_.cfactor)}, {"nrelax", double(opt_.nrelax)}, {"cwt", opt_.cwt},
        {"tolerance", opt_.tol}, {"rel_tol", double(opt_.rel_tol)}, {"max_iter", double(opt_.max_iter)},
        {"tnorm", double(opt_.tnorm)}, {"fmg", double(opt_.fmg)}, {"nfmg", double(opt_.nfmg)},
        {"nfmg_vcyc", double(opt_.nfmg_vcyc)}, {"skip", double(opt_.skip)}, {"storage", double(opt_.storage)},
        {"seq_soln", double(opt_.seq_soln)}, {"residual_computation", double(opt_.residual_computation)},
        {"relax_only_cg", double(opt_.relax_only_cg)}, {"final_fc_relax", double(opt_.final_fc_relax)},
        {"access_level", double(opt_.access_level)}, {"user residual", double(app_->has_residual())},
        {"per-level cfactor", double(opt_.cfactor_level.size())}, {"per-level nrelax", double(opt_.nrelax_level.size())},
        {"per-level cwt", double(opt_.cwt_level.size())}, {"adjoint", double(opt_.adjoint)},
        {"objective_only", double(opt_.objective_only)}, {"adjoint tolerance", opt_.tol_adjoint},
        {"rel_tol_adjoint", double(opt_.rel_tol_adjoint)},
        {"tstart_objective", opt_.has_tstart_objective ? opt_.tstart_objective : -1e300},
        {"tstop_objective", opt_.has_tstop_objective ? opt_.tstop_objective : -1e300},
        // The app's parameters (e.g. LinearODE's lam), as two exact 32-bit halves.
        {fp, double(app_->fingerprint() >> 32)},
        {fp, double(app_->fingerprint() & 0xffffffffULL)}};
    // The per-level lists may differ in length: compare this fixed-size prefix first.
    const int fixed = static_cast<int>(items.size());
    for (std::size_t l = 0; l < opt_.cfactor_level.size(); ++l) items.push_back({"per-level cfactor", double(opt_.cfactor_level[l])});
    for (std::size_t l = 0; l < opt_.nrelax_level.size(); ++l) items.push_back({"per-level nrelax", double(opt_.nrelax_level[l])});
    for (std::size_t l = 0; l < opt_.cwt_level.size(); ++l) items.push_back({"per-level cwt", opt_.cwt_level[l]});
    std::vector<double> lo(fixed), hi(fixed);
    for (int k = 0; k < fixed; ++k) lo[k] = hi[k] = items[static_cast<std::size_t>(k)].second;
    comm_.allreduce(lo.data(), fixed, MPI_MIN);
    comm_.allreduce(hi.data(), fixed, MPI_MAX);
    auto report = [&](std::size_t k, double a, double b) {
        std::ostringstream msg;
        msg.precision(17);
        msg << items[k].first << " differs between ranks (from " << a << " to " << b
            << "): every rank must build the Solver with the same problem and options";
        throw std::invalid_argument(msg.str());
    };
    for (int k = 0; k < fixed; ++k)
        if (lo[k] != hi[k]) report(static_cast<std::size_t>(k), lo[k], hi[k]);
    const int extra = static_cast<int>(items.size()) - fixed;
    if (extra > 0) {
        std::vector<double> elo(static_cast<std::size_t>(extra)), ehi(static_cast<std::size_t>(extra));
        for (int k = 0; k < extra; ++k) elo[k] = ehi[k] = items[static_cast<std::size_t>(fixed + k)].second;
        comm_.allreduce(elo.data(), extra, MPI_MIN);
        comm_.allreduce(ehi.data(), extra, MPI_MAX);
        for (int k = 0; k < extra; ++k)
            if (elo[k] != ehi[k]) report(static_cast<std::size_t>(fixed + k), elo[k], ehi[k]);
    }
}

int Engine::owner(int level, int index) const {
    if (index < 0) return -1;
    long long fine = index;
    for (int l = level - 1; l >= 0; --l) fine *= levels_[l].cfactor;
    if (fine > ntime_) return -1;
    return block_owner(ntime_ + 1, comm_.size(), static_cast<int>(fine));
}

void Engine::build_hierarchy() {
    int ilower = 0, iupper = 0;
    block_interval(ntime_ + 1, comm_.size(), comm_.rank(), ilower, iupper);

    // XBraid: do sequential time marching if min_coarse is already reached.
    int max_levels = opt_.max_levels;
    if (ntime_ <= opt_.min_coarse) max_levels = 1;

    levels_.clear();
    levels_.reserve(static_cast<std::size_t>(std::max(1, std::min(max_levels, 64))));
    std::vector<long long> stride;  // fine index = level index * stride
    levels_.emplace_back();
    levels_[0].ilower = ilower;
    levels_[0].iupper = iupper;
    stride.push_back(1);

    int gcupper = ntime_;
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
        // Ghost time: the time of ilower-1 on this level (t(ilower) at the start).
        if (np > 0)
            g.ta[0] = g.ilower > 0 ? times_[static_cast<std::size_t>((g.ilower - 1) * stride[l])] : g.ta[1];
        g.stores_all = opt_.storage >= 0 && static_cast<int>(l) >= opt_.storage;
    }
    allocate_arena();
}

std::vector<int> Engine::level_sizes() const {
    std::vector<int> sizes;
    for (const Level& g : levels_) sizes.push_back(g.gupper + 1);
    return sizes;
}

std::size_t Engine::storage_bytes() const {
    std::size_t b = 0;
    for (const Level& g : levels_) b += g.ua.bytes() + g.va.bytes() + g.fa.bytes();
    return b + 4 * n_ * sizeof(double) + solution_.size() * sizeof(double);
}

void Engine::init_guess_level0() {
    Level& g = levels_[0];
    status_ = Status{};
    status_.nlevels = nlevels();
    status_.phase = Phase::init;
    for (int i = g.clower; i <= g.cupper; i += g.cfactor) {
        const int slot = g.u_slot(i);
        status_.tstart = status_.tstop = g.t(i);
        status_.tindex = i;
        gate_.init(g.t(i), g.ua.at(slot), status_);
        g.ua_set[static_cast<std::size_t>(slot)] = 1;
    }
}

void Engine::sequential_guess() {
    // seq_soln: init at tstart, then level-0 steps, pipelined across ranks.
    Level& g = levels_[0];
    PendingComm& pc = pending_[0];
    double* u = work_;
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
        comm_.irecv(g.ua.at(-1), n_, left, kGhostTag, pc.recv);
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
            vcopy(g.va.at(i - g.ilower), f.ua.at(fslot));
            const int slot = g.u_slot(i);
            if (slot >= 0) {
                vcopy(g.ua.at(slot), f.ua.at(fslot));
                g.ua_set[static_cast<std::size_t>(slot)] = 1;
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
        vcopy(g.ua.at(slot), g.va.at(i - g.ilower));
        g.ua_set[static_cast<std::size_t>(slot)] = 1;
    }
}

}  // namespace pxb

namespace pxb {

void Engine::reset() {
    ensure_usable();
    initialised_ = false;
    solution_valid_ = false;
    // Tolerance references belong to the problem that is being forgotten.
    rnorm0_ = -1.0;
    rnorm0_adj_ = -1.0;
    std::fill(ubar_.begin(), ubar_.end(), 0.0);
}

void Engine::refresh_initial_condition() {
    ensure_usable();
    Level& g = levels_[0];
    if (!initialised_ || g.ilower != 0) return;  // not yet initialised: solve() calls init anyway
    status_ = Status{};
    status_.nlevels = nlevels();
    status_.phase = Phase::init;
    status_.tstart = status_.tstop = g.t(0);
    try {
        gate_.init(g.t(0), g.ua.at(g.u_slot(0)), status_);
    } catch (...) {
        broken_ = true;
        throw;
    }
    solution_valid_ = false;
}

}  // namespace pxb
