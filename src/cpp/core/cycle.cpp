// The MGRIT driver: V- and F-cycles, skip, the convergence test and the final
// sweep (XBraid's drive.c: _braid_DriveInitCycle, _braid_DriveUpdateCycle,
// _braid_DriveEndCycle, _braid_DriveCheckConvergence and braid_Drive).
#include <cmath>
#include <sstream>
#include <string>

#include "core/engine.hpp"
#include "core/errors.hpp"

namespace pxb {

void Engine::ensure_usable() const {
    if (state_ == State::broken || comm_.failed())
        throw SolverStateError(
            "this solver stopped after an error in an earlier solve() and cannot be reused; "
            "create a new Solver");
}

void Engine::fail_collectively(const char* what_failed, const std::exception* e) {
    state_ = State::broken;
    // Callback failures were announced by the gate and remote failures need no
    // echo; notify_failure is a no-op then. Anything else (the progress hook,
    // an interrupt, an internal error) must still stop the other ranks.
    if (!comm_.failed())
        comm_.notify_failure("rank " + std::to_string(comm_.rank()) + ": " + what_failed + " raised " +
                             (e ? e->what() : "an exception"));
    // This solver's communicators are done: drain and free them (the storage
    // stays alive for the sends still in flight).
    comm_.abandon(arena_.owner());
}

SolveSummary Engine::solve() {
    ensure_usable();
    comm_.begin_operation();
    SolveSummary summary;
    const double t0 = MPI_Wtime();
    solve_start_ = t0;
    gate_.reset_counts();
    comm_.clock().restart();
    try {
        done_ = false;
        iter_ = 0;
        current_rnorm_ = -1.0;
        current_full_rnorm_ = -1.0;
        if (state_ != State::warm) {
            reset_error_estimates();  // a new problem: none yet
            if (opt_.seq_soln)
                sequential_guess();
            else
                init_guess_level0();
            sync(Phase::after_init);
        }
        solution_valid_ = false;
        // Histories grow with the iterations done, not with max_iter.
        rnorms_.clear();
        full_rnorms_.clear();
        sweep_.begin_solve();
        drive(summary);
        // One last reduction doubles as the "every rank finished" agreement: a
        // rank that failed late never joins it, and its failure notice makes
        // the waiting ranks raise.
        double steps = static_cast<double>(gate_.counts().step);
        comm_.allreduce(&steps, 1, MPI_SUM);
        summary.step_calls_all_ranks = static_cast<long long>(steps);
        // That reduction's clock: the latest rank's, the same on every rank.
        if (comm_.clock().enabled()) summary.virtual_wall_time = comm_.clock().value();
    } catch (const DivergenceError&) {
        // Every rank sees the same reduced norm and raises together: no notice,
        // and every message of the iteration was received.
        state_ = State::broken;
        throw;
    } catch (const std::exception& e) {
        fail_collectively("solve()", &e);
        throw;
    } catch (...) {
        fail_collectively("solve()", nullptr);
        throw;
    }
    state_ = State::warm;
    summary.wall_time = MPI_Wtime() - t0;
    summary.calls = gate_.counts();
    summary.nlevels = nlevels();
    return summary;
}

void Engine::sync(Phase phase) {
    if (!gate_.has_sync()) return;
    Status st;
    st.tstart = st.tstop = levels_[0].npoints() > 0 ? levels_[0].t(levels_[0].ilower) : times_.front();
    st.tindex = levels_[0].ilower;
    st.level = 0;
    st.nlevels = nlevels();
    st.iter = iter_;
    st.done = false;  // XBraid: sync runs inside the loop, before the convergence test
    st.phase = phase;
    st.residual_norm = current_rnorm_;
    st.ntime = ntime_;
    st.nrefine = refine_.nrefine;
    st.error_estimates = rich_.estimate.data();  // XBraid's SyncStatusGetAllErrorEst
    st.n_error_estimates = static_cast<int>(rich_.estimate.size());
    gate_.sync(st);
}

double Engine::stopping_norm(int iter, double& reference) const {
    // XBraid's _braid_DriveCheckConvergence: the full norm when it is computed.
    if (opt_.full_residual_norm) {
        reference = full_rnorm0_;
        const auto i = static_cast<std::size_t>(iter);
        return i < full_rnorms_.size() ? full_rnorms_[i] : -1.0;
    }
    reference = rnorm0_;
    return rnorm_at(iter);
}

double Engine::rnorm_at(int iter) const {
    const auto i = static_cast<std::size_t>(iter);
    return i < rnorms_.size() ? rnorms_[i] : -1.0;
}

void Engine::record_norm(std::vector<double>& history, int iter, double value) {
    const auto i = static_cast<std::size_t>(iter);
    if (history.size() <= i) history.resize(i + 1, -1.0);  // -1: not available
    history[i] = value;
}

void Engine::check_divergence(int iter, double rnorm) const {
    if (rnorm != -1.0 && !std::isfinite(rnorm)) {
        std::ostringstream msg;
        msg << "MGRIT diverged: residual norm is " << rnorm << " at iteration " << iter
            << " (check the step function and the time step on coarse levels: coarse steps are "
            << "cfactor^level times larger)";
        throw DivergenceError(msg.str());
    }
    if (sweep_.diverged()) {
        std::ostringstream msg;
        msg << "the adjoint iteration diverged: adjoint residual norm is " << sweep_.residual() << " at iteration "
            << iter;
        throw DivergenceError(msg.str());
    }
}

bool Engine::check_convergence(int iter) {
    // XBraid's _braid_DriveCheckConvergence.
    double reference = -1.0;
    const double rnorm = stopping_norm(iter, reference);
    const double tol = opt_.has_abs_tol ? opt_.abs_tol : opt_.rel_tol * reference;
    // DEVIATION (documented): an exactly zero residual is converged even when
    // the tolerance is 0 (a relative tolerance with ||r_0|| = 0, or abs_tol=0):
    // XBraid's strict "<" would iterate to max_iter on an exact solution. Not
    // so for relax_only_cg on one level, whose 0 is a placeholder (as XBraid's).
    const bool met = rnorm != -1.0 && (rnorm < tol || (rnorm == 0.0 && nlevels() > 1));
    check_divergence(iter, rnorm);
    check_divergence(iter, rnorm_at(iter));
    // With the adjoint, keep iterating until it has converged too (XBraid_Adjoint).
    const bool converged = met && (!sweep_.gradient() || sweep_.converged());
    done_ = converged || iter == opt_.max_iter - 1;
    return converged;
}

Engine::Cycle Engine::init_cycle() {
    // XBraid's _braid_DriveInitCycle.
    Cycle c;
    const int nl = nlevels();
    c.fmglevel = (opt_.fmg && opt_.nfmg != 0) ? nl - 1 : 0;
    // DEVIATION (documented): skip applies to the first solve only, so a
    // warm restart continues from the current iterate.
    const bool skip_now = opt_.skip && !opt_.seq_soln && !sweep_.active() && state_ == State::fresh;
    if (skip_now) {
        c.level = nl - 1;
        copy_fine_to_coarse();
    }
    return c;
}

void Engine::update_cycle(Cycle& c) const {
    // XBraid's _braid_DriveUpdateCycle: down until the coarsest level, then
    // up; F-cycles go down again from intermediate levels.
    const int nl = nlevels();
    if (c.down && c.level == nl - 1) c.down = false;
    if (c.down) return;
    if (c.level > 0) {
        if (c.level < c.fmglevel) {
            if (++c.fmg_vcyc == opt_.nfmg_vcyc) {
                c.fmg_vcyc = 0;
                --c.fmglevel;
            }
            c.down = true;
        }
    } else if (!c.try_refine || nl == 1) {
        c.try_refine = true;  // the top: this iteration ends here
    } else {
        if (opt_.fmg && opt_.nfmg != iter_) c.fmglevel = nl - 1;
        c.try_refine = false;
        c.down = true;
    }
}

bool Engine::cycle_move(Cycle& c) {
    // One move of the cycle; true at the top, where the iteration ends.
    update_cycle(c);
    if (c.down) {
        fc_relax(c.level, opt_.nrelax_at(c.level));
        f_restrict(c.level);
        if (c.level == 0 && opt_.full_residual_norm) record_full_residual_norm();
        ++c.level;
        return false;
    }
    if (c.level > 0) {
        // The coarsest level is relaxed (relax_only_cg, periodic: XBraid), with nrelax[max_levels - 1].
        if (c.level == nlevels() - 1 && (opt_.relax_only_cg || opt_.periodic))
            fc_relax(c.level, opt_.nrelax_at(opt_.max_levels - 1));
        f_interp(c.level);
        --c.level;
        return false;
    }
    return true;
}

void Engine::end_of_iteration(bool& converged, SolveSummary& summary) {
    // XBraid's _braid_DriveEndCycle: output, the refinement, the adjoint's
    // reverse cycle, the convergence test, the progress hook.
    sync(Phase::top_cycle);
    if (opt_.access_level >= 2) final_sweep(false, false);  // output only: not recorded
    summary.cycle_iterations.push_back(iter_);
    summary.cycle_residual_norms.push_back(rnorm_at(iter_));
    // XBraid: a cycle that refines tests no convergence and does not count as an iteration.
    const bool refined = refine_grid();
    summary.cycle_refined.push_back(refined ? 1 : 0);
    if (refined) {
        report_progress();  // XBraid prints the refining cycle's r_k too
        return;
    }
    if (sweep_.active()) sweep_.top_of_cycle(replay_context(), iter_, initial_status());
    converged = check_convergence(iter_);
    report_progress();
    if (sweep_.active()) sweep_.next_iteration(done_);
    ++iter_;
}

void Engine::report_progress() {
    if (!on_iteration) return;
    IterationInfo info;
    info.iter = iter_;
    info.residual_norm = rnorm_at(iter_);
    double reference = -1.0;
    if (opt_.full_residual_norm) info.full_residual_norm = stopping_norm(iter_, reference);
    info.wall_time = MPI_Wtime() - solve_start_;
    on_iteration(info);
}

void Engine::drive(SolveSummary& summary) {
    // DEVIATION (documented): one level, for any reason, means sequential
    // marching exactly like max_levels = 1 -- unless the level is relaxed.
    const bool sequential = nlevels() == 1 && !opt_.relax_only_cg;
    bool converged = sequential;
    if (!sequential) {
        Cycle c = init_cycle();
        while (!done_) {
            {
                // The primal cycle of the iteration, recorded for the adjoint.
                RecordedArena::Recording recording(arena_, sweep_.gradient());
                if (nlevels() == 1) {
                    // relax_only_cg with a single level: each iteration is one FC relaxation.
                    fc_relax(0, opt_.nrelax_at(0));
                    record_norm(rnorms_, iter_, 0.0);
                    current_rnorm_ = 0.0;
                    if (iter_ == 0 && rnorm0_ == -1.0) rnorm0_ = 0.0;
                }
                while (!cycle_move(c)) {
                }
            }
            end_of_iteration(converged, summary);
        }
    }
    finish(summary, sequential, converged);
}

void Engine::finish(SolveSummary& summary, bool sequential, bool converged) {
    done_ = true;
    // XBraid measures the full residual of the final iterate after the loop.
    if (opt_.full_residual_norm) summary.final_full_residual_norm = full_residual_norm();
    {
        // The final sweep is recorded only for sequential marching, where its
        // reverse is the exact discrete adjoint; after iterations it is output
        // only (DEVIATION: XBraid records a final FC sweep and replays it next solve).
        RecordedArena::Recording recording(arena_, sequential && sweep_.gradient());
        // XBraid ends with the FC sweep when it computes Lyapunov exponents too.
        if (opt_.final_fc_relax || lyapunov_exponents()) {
            final_sweep(true, true);
            solution_valid_ = true;
        } else if (sequential || opt_.access_level >= 1) {
            final_sweep(true, false);
            solution_valid_ = true;
        }
    }
    if (sequential && sweep_.active()) sweep_.after_sequential(replay_context(), initial_status());
    rnorms_.resize(static_cast<std::size_t>(iter_), -1.0);
    if (opt_.full_residual_norm) full_rnorms_.resize(static_cast<std::size_t>(iter_), -1.0);
    summary.full_residual_norms = full_rnorms_;
    sweep_.history().resize(static_cast<std::size_t>(iter_), -1.0);
    summary.iterations = iter_;
    summary.objective = sweep_.objective();
    summary.adjoint_residual_norms = sweep_.history();
    summary.converged = converged;
    summary.residual_norms = rnorms_;
    summary.nrefine = refine_.nrefine;
}

}  // namespace pxb
