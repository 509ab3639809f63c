// Building a solver: the checks of the problem and the options, the fine time
// grid, the agreement of every rank on all of it (XBraid's braid_Init and the
// setters' checks, plus what XBraid leaves unchecked).
#include <algorithm>
#include <cmath>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/engine.hpp"
#include "core/format.hpp"

namespace pxb {

namespace {
std::string grid_message(double tstart, double tstop, int ntime) {
    return "tstart=" + shortest(tstart) + ", tstop=" + shortest(tstop) + " and ntime=" + std::to_string(ntime);
}

AdjointMode adjoint_mode(const Options& o) {
    if (o.objective_only) return AdjointMode::objective_only;
    return o.adjoint ? AdjointMode::gradient : AdjointMode::none;
}
}  // namespace

Engine::Engine(std::shared_ptr<App> app, MPI_Comm comm, double tstart, double tstop, int ntime,
               std::vector<double> times, Options options)
    : app_(std::move(app)),
      comm_(comm),
      gate_(*app_, comm_),
      opt_(std::move(options)),
      n_(app_->size()),
      ntime_(ntime),
      arena_(n_, app_->dtype(), app_->shell_size(), comm_, static_cast<std::size_t>(std::max(opt_.delta_rank, 0))),
      sweep_(arena_, comm_, gate_) {
    // Building is collective: a rank whose setup fails (a size only it cannot
    // hold, say) tells the others, and every rank raises instead of some
    // waiting in the first solve for a rank that is gone.
    comm_.begin_operation();
    std::exception_ptr error;
    std::string why;
    try {
        setup(tstart, tstop, std::move(times));
    } catch (const std::exception& e) {
        error = std::current_exception();
        why = "rank " + std::to_string(comm_.rank()) + ": building the Solver raised " + e.what();
    }
    if (!comm_.agree(!error, why)) {
        state_ = State::broken;
        comm_.abandon(arena_.owner());
        std::rethrow_exception(error);
    }
    start_virtual_time();
}

void Engine::start_virtual_time() {
    // Only now: clocked messages carry one more value, so every rank must
    // switch at the same point, after all agreed that virtual_time is on.
    if (!opt_.virtual_time) return;
    VirtualClock::ComputeSource compute = thread_cpu_seconds;
    if (opt_.has_virtual_step_cost) {
        const double cost = opt_.virtual_step_cost;
        compute = [this, cost] {
            const CallCounts& c = gate_.counts();
            return cost * static_cast<double>(c.step + c.step_adjoint);
        };
    }
    comm_.enable_virtual_time(NetworkModel{opt_.virtual_latency, opt_.virtual_bandwidth}, std::move(compute));
}

void Engine::setup(double tstart, double tstop, std::vector<double> times) {
    // First, before anything that may throw on some ranks only: every rank
    // must agree on the problem, or collectives below would hang.
    check_consistent_across_ranks(tstart, tstop, times);
    opt_.validate();
    validate_problem();
    make_time_grid(tstart, tstop, std::move(times));
    app_->on_setup(times_.front(), times_.back());
    // XBraid's SetFullRNormRes: the residual serves the full norm only, not the residual mode.
    gate_.probe_capabilities(!opt_.full_residual_norm);
    const AdjointMode mode = adjoint_mode(opt_);
    check_features(mode);
    relax_lyap_ = opt_.lyapunov_relax;
    AdjointSweep::Settings s;
    s.mode = mode;
    s.tnorm = opt_.tnorm;
    s.relative = !opt_.has_abs_tol_adjoint;
    s.tolerance = s.relative ? opt_.rel_tol_adjoint : opt_.abs_tol_adjoint;
    s.tstart_objective = opt_.has_tstart_objective ? opt_.tstart_objective : times_.front();
    s.tstop_objective = opt_.has_tstop_objective ? opt_.tstop_objective : times_.back();
    sweep_.configure(s);
    arena_.set_save_ustop(app_->step_adjoint_uses_ustop());
    check_objective_window();
    gupper0_ = opt_.periodic ? ntime_ - 1 : ntime_;
    build_hierarchy();
    probe_level_sizes();
    setup_richardson();
    setup_refinement();
    refine_.active = opt_.refine;
    if (opt_.periodic && nlevels() == 1)
        throw std::invalid_argument(
            "periodic=True needs at least 2 levels (max_levels >= 2 and ntime - 1 = " + std::to_string(ntime_ - 1) +
            " > min_coarse = " + std::to_string(opt_.min_coarse) + "), got " + std::to_string(nlevels()));
    // Delta correction acts on coarse levels only; with one level XBraid's local
    // exponents read past their array (it prints nan), so one level is refused.
    if (delta() && nlevels() == 1)
        throw std::invalid_argument("delta_rank=" + std::to_string(opt_.delta_rank) +
                                    " needs at least 2 levels (max_levels >= 2 and ntime = " + std::to_string(ntime_) +
                                    " > min_coarse = " + std::to_string(opt_.min_coarse) + ")");
}

void Engine::check_features(AdjointMode mode) const {
    // What the app must define for the options, and the combinations XBraid does not support.
    if (opt_.full_residual_norm && !app_->has_residual())
        throw std::invalid_argument(app_->name() + " defines no residual; full_residual_norm=True needs it");
    if (mode != AdjointMode::none && !app_->has_adjoint())
        throw std::invalid_argument(app_->name() +
                                    " defines no objective and adjoint callbacks; adjoint=True "
                                    "and objective_only=True need them");
    if (mode == AdjointMode::gradient && gate_.has_residual())
        throw std::invalid_argument("adjoint=True cannot be combined with a user residual (as in XBraid)");
    if (opt_.periodic && mode != AdjointMode::none)
        throw std::invalid_argument(std::string("periodic=True cannot be combined with ") +
                                    (mode == AdjointMode::gradient ? "adjoint=True" : "objective_only=True"));
    if (opt_.periodic && opt_.seq_soln)
        throw std::invalid_argument("periodic=True cannot be combined with seq_soln=True (as in XBraid)");
    check_spatial_features(mode);
    if (mode == AdjointMode::gradient && opt_.full_residual_norm)
        throw std::invalid_argument("adjoint=True cannot be combined with full_residual_norm=True (as in XBraid)");
    check_shells(mode);
    check_delta(mode);
    check_richardson(mode);
    check_refinement(mode);
}

void Engine::check_shells(AdjointMode mode) const {
    if (app_->shell_size() == 0) return;
    if (mode == AdjointMode::gradient)
        throw std::invalid_argument(
            app_->name() + " has shells (shell_shape); adjoint=True cannot be combined with them (as in XBraid)");
    if (app_->has_step_batch())
        throw std::invalid_argument(app_->name() +
                                    " has shells (shell_shape); step_batch cannot be combined with them");
    if (gate_.has_spatial_coarsening())
        throw std::invalid_argument(app_->name() +
                                    " has shells (shell_shape); spatial coarsening (coarsen and refine) cannot be "
                                    "combined with them yet");
    // Not checked against XBraid's runs yet: refused rather than unverified.
    if (opt_.richardson || opt_.error_estimation)
        throw std::invalid_argument(app_->name() +
                                    " has shells (shell_shape); richardson / error_estimation cannot be combined "
                                    "with them yet");
}

void Engine::check_spatial_features(AdjointMode mode) const {
    if (!gate_.has_spatial_coarsening()) return;
    if (mode == AdjointMode::gradient && !app_->has_spatial_adjoint())
        throw std::invalid_argument(app_->name() +
                                    " defines no coarsen_adjoint and refine_adjoint; adjoint=True with spatial "
                                    "coarsening (coarsen and refine) needs them");
    if (app_->has_step_batch())
        throw std::invalid_argument(
            "step_batch cannot be combined with spatial coarsening (the app's coarsen and refine): "
            "the batch rows have the finest level's shape");
    // Not checked against XBraid's runs (ex-02 -sc -richardson) yet: refused rather than unverified.
    if (opt_.richardson || opt_.error_estimation)
        throw std::invalid_argument(
            "richardson / error_estimation cannot be combined with spatial coarsening (the app's coarsen and "
            "refine) yet");
}

void Engine::probe_level_sizes() {
    // Every rank reaches the reductions below, also one whose shape_at failed
    // (it reports -1): a rank that left early would leave the others waiting.
    std::exception_ptr error;
    try {
        gate_.probe_level_sizes(nlevels());
    } catch (...) {
        error = std::current_exception();
    }
    if (comm_.size() > 1) {
        // A shape_at that differs between ranks would garble the messages.
        const auto levels = static_cast<std::size_t>(nlevels());
        std::vector<double> lo(levels), hi(levels);
        for (std::size_t l = 0; l < levels; ++l) lo[l] = error ? -1.0 : double(gate_.size_at(int(l)));
        hi = lo;
        comm_.allreduce(lo.data(), nlevels(), MPI_MIN);
        comm_.allreduce(hi.data(), nlevels(), MPI_MAX);
        if (error) std::rethrow_exception(error);
        // Another rank's shape_at failed: the constructor's agreement raises RemoteRankError here.
        if (std::any_of(lo.begin(), lo.end(), [](double v) { return v < 0.0; })) return;
        for (std::size_t l = 0; l < levels; ++l) {
            if (lo[l] != hi[l])
                throw std::invalid_argument(app_->name() + ".shape_at(" + std::to_string(l) +
                                            ") differs between ranks: every rank must give each level the same shape");
        }
    }
    if (error) std::rethrow_exception(error);
}

void Engine::check_richardson(AdjointMode mode) const {
    if (!opt_.richardson && !opt_.error_estimation) return;
    const char* name = opt_.richardson ? "richardson=True" : "error_estimation=True";
    // XBraid ignores the Richardson options (or the weights) with weighted relaxation.
    bool weighted = opt_.cwt != 1.0;
    for (double w : opt_.cwt_level) weighted = weighted || w != 1.0;
    if (weighted)
        throw std::invalid_argument(std::string(name) +
                                    " needs cwt = 1 on every level (weighted C-relaxation and Richardson "
                                    "extrapolation are incompatible, as in XBraid)");
    // XBraid accepts it, but its interval 0 then has a coarse step of length 0
    // and the iteration stalls (ex-06 -periodic -richardson: ||r|| stays 4.2e-2).
    if (opt_.periodic) throw std::invalid_argument(std::string(name) + " cannot be combined with periodic=True");
    // XBraid accepts it, but its extrapolation assumes residuals of the form
    // u - Phi(u): with A(u_i, u_{i-1}) of another scaling the iteration stalls
    // (ex-02 -res -richardson: ||r|| = 9.2e-3 after 30 iterations; recorded).
    if (opt_.richardson && gate_.has_residual())
        throw std::invalid_argument(
            "richardson=True cannot be combined with the app's residual (the user-residual mode): XBraid's "
            "iteration then stalls");
    // XBraid accepts it, but stops on the full norm, which does not go to zero:
    // the extrapolated C-points do not solve the fine equations (by design).
    if (opt_.richardson && opt_.full_residual_norm)
        throw std::invalid_argument(
            "richardson=True cannot be combined with full_residual_norm=True (the extrapolated C-points do not "
            "solve the fine equations, so the full residual norm, the stopping test, does not go to zero)");
    if (opt_.richardson && mode == AdjointMode::gradient)
        throw std::invalid_argument(
            "richardson=True cannot be combined with adjoint=True (the reverse of the extrapolation is not "
            "implemented)");
}

void Engine::validate_problem() const {
    if (ntime_ < 1) throw std::invalid_argument("ntime must be >= 1, got " + std::to_string(ntime_));
    if (n_ == 0) throw std::invalid_argument("the app's state size must be >= 1");
    const int points = opt_.periodic ? ntime_ : ntime_ + 1;
    if (points < comm_.size())
        throw std::invalid_argument(std::string(opt_.periodic ? "ntime = " : "ntime + 1 = ") + std::to_string(points) +
                                    " time points cannot be shared by " + std::to_string(comm_.size()) + " ranks");
}

void Engine::make_time_grid(double tstart, double tstop, std::vector<double> times) {
    if (!times.empty()) {
        if (static_cast<int>(times.size()) != ntime_ + 1)
            throw std::invalid_argument("times must hold ntime + 1 values");
        for (std::size_t i = 0; i < times.size(); ++i)
            if (!std::isfinite(times[i]) || (i > 0 && !(times[i] > times[i - 1])))
                throw std::invalid_argument("times must be finite and strictly increasing (times[" + std::to_string(i) +
                                            "])");
        times_ = std::move(times);
        return;
    }
    if (!std::isfinite(tstart) || !std::isfinite(tstop) || !std::isfinite(tstop - tstart) || !(tstop > tstart))
        throw std::invalid_argument(grid_message(tstart, tstop, ntime_) + ": tstop - tstart must be finite and > 0");
    times_.resize(static_cast<std::size_t>(ntime_) + 1);
    // Exactly XBraid's formula: never accumulate dt.
    for (int i = 0; i <= ntime_; ++i) times_[i] = tstart + ((static_cast<double>(i)) / ntime_) * (tstop - tstart);
    // An interval too short for ntime float64 steps repeats times: every step
    // would have dt = 0 (and MGRIT would iterate on nothing).
    for (int i = 1; i <= ntime_; ++i)
        if (!(times_[i] > times_[i - 1]))
            throw std::invalid_argument(
                grid_message(tstart, tstop, ntime_) + " give a time grid that is not strictly increasing (t[" +
                std::to_string(i) + "] = " + shortest(times_[i]) + " <= t[" + std::to_string(i - 1) +
                "] = " + shortest(times_[i - 1]) + "): the interval is too short for ntime steps in float64");
}

void Engine::check_objective_window() const {
    if (!sweep_.active()) return;
    // An empty window would give J = 0 and a zero gradient without a word.
    const auto inside = std::find_if(times_.begin(), times_.end(), [this](double t) { return sweep_.in_window(t); });
    if (inside != times_.end()) return;
    const double lo = opt_.has_tstart_objective ? opt_.tstart_objective : times_.front();
    const double hi = opt_.has_tstop_objective ? opt_.tstop_objective : times_.back();
    throw std::invalid_argument("the objective window [tstart_objective, tstop_objective] = [" + shortest(lo) + ", " +
                                shortest(hi) + "] contains no time point of the grid (" +
                                std::to_string(times_.size()) + " points in [" + shortest(times_.front()) + ", " +
                                shortest(times_.back()) + "])");
}

void Engine::check_consistent_across_ranks(double tstart, double tstop, const std::vector<double>& times) {
    // Different problems or options per rank would hang or give wrong numbers;
    // one MIN and one MAX reduction at construction find the first difference.
    if (comm_.size() == 1) return;
    double times_sum = 0.0;
    for (double t : times) times_sum += t;
    const std::string fp = app_->name() + "'s parameters (fingerprint)";
    std::vector<std::pair<std::string, double>> scalars = {
        {"ntime", double(ntime_)},
        {"state size", double(n_)},
        {"shell size", double(app_->shell_size())},
        {"tstart", times.empty() ? tstart : times.front()},
        {"tstop", times.empty() ? tstop : times.back()},
        {"times", times_sum + double(times.size())},
        {"user residual", double(app_->has_residual())},
        // The app's parameters (e.g. LinearODE's lam), as two exact 32-bit halves.
        {fp, double(app_->fingerprint() >> 32)},
        {fp, double(app_->fingerprint() & 0xffffffffULL)},
    };
    std::vector<std::pair<std::string, double>> levels;
    opt_.describe([&](const char* name, double v) { scalars.emplace_back(name, v); },
                  [&](const char* name, double v) { levels.emplace_back(name, v); });
    // The per-level lists may differ in length (their lengths are among the
    // scalars): compare the scalars first, then the per-level values.
    for (const auto* items : {&scalars, &levels}) {
        const int count = static_cast<int>(items->size());
        std::vector<double> lo(items->size()), hi(items->size());
        for (std::size_t k = 0; k < items->size(); ++k) lo[k] = hi[k] = (*items)[k].second;
        comm_.allreduce(lo.data(), count, MPI_MIN);
        comm_.allreduce(hi.data(), count, MPI_MAX);
        for (std::size_t k = 0; k < items->size(); ++k) {
            if (lo[k] == hi[k]) continue;
            std::ostringstream msg;
            msg.precision(17);
            msg << (*items)[k].first << " differs between ranks (from " << lo[k] << " to " << hi[k]
                << "): every rank must build the Solver with the same problem and options";
            throw std::invalid_argument(msg.str());
        }
    }
}

void Engine::check_refinement(AdjointMode mode) const {
    if (!opt_.refine) return;
    // Checked against XBraid's runs only without these: refused rather than unverified
    // (the adjoint: XBraid has no refinement of its tape either).
    const auto refuse = [](const std::string& what) {
        throw std::invalid_argument("refine=True cannot be combined with " + what + " yet");
    };
    if (mode == AdjointMode::gradient) refuse("adjoint=True");
    if (mode != AdjointMode::none) refuse("objective_only=True");
    if (opt_.periodic) refuse("periodic=True");
    if (opt_.seq_soln) refuse("seq_soln=True");
    if (opt_.richardson) refuse("richardson=True");
    if (opt_.full_residual_norm) refuse("full_residual_norm=True");
    if (opt_.relax_only_cg) refuse("relax_only_cg=True");
    if (app_->shell_size() > 0) refuse("an app with shells (shell_shape)");
    if (gate_.has_spatial_coarsening()) refuse("spatial coarsening (the app's coarsen and refine)");
    if (app_->has_step_batch()) refuse("an app with step_batch");
}

}  // namespace pxb
