// The MGRIT driver: V- and F-cycles, skip, the convergence test and the final
// sweep (XBraid's drive.c and braid_Drive).
#include <cmath>
#include <sstream>
#include <string>

#include "core/engine.hpp"
#include "core/errors.hpp"

namespace pxb {

void Engine::ensure_usable() const {
    if (broken_ || comm_.failed())
        throw SolverStateError(
            "this solver stopped after an error in an earlier solve() and cannot be reused; "
            "create a new Solver");
}

void Engine::fail_collectively(const char* what_failed, const std::exception* e) {
    broken_ = true;
    // Callback failures were announced by the gate and remote failures need no
    // echo; notify_failure is a no-op then. Anything else (the progress hook,
    // an interrupt, an internal error) must still stop the other ranks.
    if (!comm_.failed())
        comm_.notify_failure("rank " + std::to_string(comm_.rank()) + ": " + what_failed + " raised " +
                             (e ? e->what() : "an exception"));
    // This solver's communicators are done: drain and free them (the storage
    // stays alive for the sends still in flight).
    comm_.abandon(mem_);
}

SolveSummary Engine::solve() {
    ensure_usable();
    comm_.begin_operation();
    SolveSummary summary;
    const double t0 = MPI_Wtime();
    solve_start_ = t0;
    gate_.reset_counts();
    try {
        if (!initialised_) {
            if (opt_.seq_soln)
                sequential_guess();
            else
                init_guess_level0();
            initialised_ = true;
        }
        done_ = false;
        iter_ = 0;
        current_rnorm_ = -1.0;
        solution_valid_ = false;
        // Histories grow with the iterations done, not with max_iter.
        rnorms_.clear();
        adj_norms_.clear();
        local_objective_ = 0.0;
        rnorm_adj_ = -1.0;
        const bool adjoint = opt_.adjoint && !opt_.objective_only;
        if (adjoint) gate_.reset_gradient();
        tape_.clear();
        tape_.recording = adjoint;
        drive(summary);
        tape_.recording = false;
        // One last reduction doubles as the "every rank finished" agreement: a
        // rank that failed late never joins it, and its failure notice makes
        // the waiting ranks raise.
        double steps = static_cast<double>(gate_.counts().step);
        comm_.allreduce(&steps, 1, MPI_SUM);
        summary.step_calls_all_ranks = static_cast<long long>(steps);
    } catch (const DivergenceError&) {
        // Every rank sees the same reduced norm and raises together: no notice.
        tape_.recording = false;
        solved_once_ = true;
        broken_ = true;
        throw;
    } catch (const std::exception& e) {
        tape_.recording = false;
        solved_once_ = true;
        fail_collectively("solve()", &e);
        throw;
    } catch (...) {
        tape_.recording = false;
        solved_once_ = true;
        fail_collectively("solve()", nullptr);
        throw;
    }
    solved_once_ = true;
    summary.wall_time = MPI_Wtime() - t0;
    summary.calls = gate_.counts();
    summary.nlevels = nlevels();
    return summary;
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

bool Engine::check_convergence(int iter) {
    const double rnorm = rnorm_at(iter);
    double tol = opt_.tol;
    if (opt_.rel_tol) tol *= rnorm0_;
    bool stop = false;
    bool converged = false;
    const bool adjoint = opt_.adjoint && !opt_.objective_only;
    double tol_adj = opt_.tol_adjoint;
    if (opt_.rel_tol_adjoint) tol_adj *= rnorm0_adj_;
    // DEVIATION (documented): an exactly zero residual is converged even when
    // the tolerance is 0 (a relative tolerance with ||r_0|| = 0, or abs_tol=0):
    // XBraid's strict "<" would iterate to max_iter on an exact solution. Not
    // so for relax_only_cg on one level, whose 0 is a placeholder (as XBraid's).
    const bool zero_counts = nlevels() > 1;
    const auto met = [zero_counts](double r, double t) { return r < t || (zero_counts && r == 0.0); };
    if (rnorm != -1.0 && met(rnorm, tol)) {
        stop = converged = true;
        // Keep iterating until the adjoint has converged too (XBraid_Adjoint).
        if (adjoint && !met(rnorm_adj_, tol_adj)) stop = converged = false;
    } else if (rnorm != -1.0 && !std::isfinite(rnorm)) {
        std::ostringstream msg;
        msg << "MGRIT diverged: residual norm is " << rnorm << " at iteration " << iter
            << " (check the step function and the time step on coarse levels: coarse steps are "
            << "cfactor^level times larger)";
        throw DivergenceError(msg.str());
    }
    if (adjoint && !std::isfinite(rnorm_adj_)) {
        std::ostringstream msg;
        msg << "the adjoint iteration diverged: adjoint residual norm is " << rnorm_adj_ << " at iteration "
            << iter;
        throw DivergenceError(msg.str());
    }
    if (iter == opt_.max_iter - 1) stop = true;
    done_ = stop;
    return converged;
}

void Engine::drive(SolveSummary& summary) {
    const int nl = nlevels();
    // DEVIATION (documented): one level, for any reason, means sequential
    // marching exactly like max_levels = 1 -- unless the level is relaxed.
    const bool sequential = nl == 1 && !opt_.relax_only_cg;
    bool converged = sequential;
    int level = 0;

    if (!sequential) {
        bool down = true, try_refine = false;
        int fmglevel = (opt_.fmg && opt_.nfmg != 0) ? nl - 1 : 0;
        int fmg_vcyc = 0;
        // DEVIATION (documented): skip applies to the first solve only, so a
        // warm restart continues from the current iterate.
        const bool skip_now = opt_.skip && !opt_.seq_soln && !opt_.adjoint && !opt_.objective_only && !solved_once_;
        if (skip_now) {
            level = nl - 1;
            copy_fine_to_coarse();
        }
        while (!done_) {
            if (nl == 1) {
                // relax_only_cg with a single level: each iteration is one FC relaxation.
                fc_relax(0, opt_.nrelax_at(0));
                record_norm(rnorms_, iter_, 0.0);
                current_rnorm_ = 0.0;
                if (iter_ == 0 && rnorm0_ == -1.0) rnorm0_ = 0.0;
            }
            // Cycle state update (XBraid's _braid_DriveUpdateCycle).
            if (down && level == nl - 1) down = false;
            if (!down) {
                if (level > 0) {
                    if (level < fmglevel) {
                        if (++fmg_vcyc == opt_.nfmg_vcyc) {
                            fmg_vcyc = 0;
                            --fmglevel;
                        }
                        down = true;
                    }
                } else if (!try_refine || nl == 1) {
                    try_refine = true;
                } else {
                    if (opt_.fmg && opt_.nfmg != iter_) fmglevel = nl - 1;
                    try_refine = false;
                    down = true;
                }
            }

            if (down) {
                fc_relax(level, opt_.nrelax_at(level));
                f_restrict(level);
                ++level;
            } else if (level > 0) {
                if (level == nl - 1 && opt_.relax_only_cg)
                    fc_relax(level, opt_.nrelax_at(opt_.max_levels - 1));
                f_interp(level);
                --level;
            } else {
                if (opt_.access_level >= 2) {
                    // Output only: not part of the adjoint's record.
                    const bool rec = tape_.recording;
                    tape_.recording = false;
                    final_sweep(false, false);
                    tape_.recording = rec;
                }
                if (opt_.adjoint || opt_.objective_only) adjoint_top_of_cycle();
                converged = check_convergence(iter_);
                if (on_iteration) {
                    IterationInfo info;
                    info.iter = iter_;
                    info.residual_norm = rnorm_at(iter_);
                    info.wall_time = MPI_Wtime() - solve_start_;
                    on_iteration(info);
                }
                if (opt_.adjoint || opt_.objective_only) {
                    local_objective_ = 0.0;
                    if (!done_ && !opt_.objective_only) gate_.reset_gradient();
                    tape_.clear();
                    tape_.recording = opt_.adjoint && !opt_.objective_only;
                }
                ++iter_;
            }
        }
    }

    done_ = true;
    // The final sweep is recorded only for sequential marching, where its
    // reverse is the exact discrete adjoint; after iterations it is output only
    // (DEVIATION: XBraid records a final FC sweep and replays it next solve).
    tape_.recording = sequential && opt_.adjoint && !opt_.objective_only;
    if (opt_.final_fc_relax) {
        final_sweep(true, true);
        solution_valid_ = true;
    } else if (sequential || opt_.access_level >= 1) {
        final_sweep(true, false);
        solution_valid_ = true;
    }
    tape_.recording = false;
    if (sequential && (opt_.adjoint || opt_.objective_only)) adjoint_after_sequential();
    summary.iterations = iter_;
    summary.objective = objective_;
    adj_norms_.resize(static_cast<std::size_t>(iter_), -1.0);
    rnorms_.resize(static_cast<std::size_t>(iter_), -1.0);
    summary.adjoint_residual_norms = adj_norms_;
    summary.converged = converged;
    summary.residual_norms = rnorms_;
}

}  // namespace pxb
