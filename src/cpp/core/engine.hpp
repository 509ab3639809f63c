/// \file engine.hpp
/// \brief The MGRIT solver of one communicator (XBraid's braid_Core). The
///        algorithm is split by concern, as in XBraid: setup.cpp (building,
///        validation, cross-rank consistency), hierarchy.cpp (levels, times,
///        distribution, initial guesses), step.cpp (one step and its
///        ustop/fstop rules, residuals), relaxation.cpp (FCRelax),
///        restriction.cpp (FRestrict + residual norm), interpolation.cpp
///        (FInterp), access.cpp (final sweep, state queries), shell.cpp (shell
///        vectors: points that keep only a shell), full_residual.cpp
///        (the full residual norm), richardson.cpp (Richardson extrapolation
///        and error estimates), cycle.cpp (the V/F-cycle driver, the
///        convergence test and sync), adjoint.cpp
///        (XBraid_Adjoint's reverse sweep), recorded_arena.cpp (the state
///        arena and its recorded vector operations).
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>
#include <vector>

#include "core/adjoint.hpp"
#include "core/app.hpp"
#include "core/callbacks.hpp"
#include "core/communication.hpp"
#include "core/grid.hpp"
#include "core/norms.hpp"
#include "core/options.hpp"
#include "core/recorded_arena.hpp"

namespace pxb {

/// Per-iteration information handed to the progress hook.
struct IterationInfo {
    int iter = 0;
    double residual_norm = -1.0;       ///< -1 when not available
    double full_residual_norm = -1.0;  ///< full_residual_norm: -1 when not available
    double wall_time = 0.0;            ///< seconds since solve() started
};

/// What one solve() reports.
struct SolveSummary {
    int iterations = 0;
    std::vector<double> residual_norms;          ///< per iteration, -1 where not available
    std::vector<double> adjoint_residual_norms;  ///< per iteration (adjoint solves)
    std::vector<double> full_residual_norms;     ///< per iteration (full_residual_norm), -1 where not available
    double final_full_residual_norm = -1.0;      ///< full_residual_norm: of the returned solution
    double objective = 0.0;                      ///< J of the last iteration (adjoint / objective_only)
    bool converged = false;
    int nlevels = 1;
    double wall_time = 0.0;
    /// Predicted wall time on one dedicated core per rank (virtual_time; max
    /// over ranks, the same on every rank), -1 when virtual_time is off.
    double virtual_wall_time = -1.0;
    CallCounts calls;  ///< this rank
    long long step_calls_all_ranks = 0;
    /// One entry per cycle, refining cycles included (XBraid prints their r_k
    /// and then the same k again): the iteration and its residual norm (-1: not available).
    std::vector<int> cycle_iterations;
    std::vector<double> cycle_residual_norms;
    std::vector<int> cycle_refined;  ///< 1 where the cycle refined the grid
    int nrefine = 0;                 ///< refine: refinements done (in all solves)
};

class Engine {
public:
    /// `times` empty: uniform grid tstart + i/ntime (tstop - tstart); else ntime+1 values.
    /// Collective over `comm`: every rank builds the solver or every rank raises.
    Engine(std::shared_ptr<App> app, MPI_Comm comm, double tstart, double tstop, int ntime, std::vector<double> times,
           Options options);

    /// Run MGRIT (collective). A second call continues from the current iterate.
    SolveSummary solve();

    /// Fine-grid state at global index i, copied into `out` on every rank (collective).
    void state_at(int i, void* out);
    /// This rank's fine-grid states [ilower..iupper] after the final sweep
    /// (collective: runs the sweep on demand when it has not happened).
    const Bytes& local_states();

    /// Forget the iterate (no communication): the next solve() starts from
    /// init() again, with fresh tolerance references -- a new problem of the
    /// same size, e.g. the next mini-batch.
    void reset();
    /// Re-evaluate init(tstart) before the next solve and keep the rest of the
    /// iterate: a warm restart after the design changed the initial condition.
    void refresh_initial_condition();

    /// What a warm restart continues from, on this rank: the states (and the
    /// adjoint iterate) at the fine level's stored points, and the tolerance
    /// references. Saved by checkpoints, so a restarted run continues exactly.
    struct Iterate {
        std::vector<int> indices;  ///< global fine indices of the stored points
        Bytes states;              ///< their states, in that order
        Bytes adjoint;             ///< their adjoint iterate (gradient mode), else empty
        double rnorm0 = -1.0, rnorm0_adjoint = -1.0;
    };
    /// This rank's iterate (after a solve; no communication).
    Iterate iterate() const;
    /// Continue from an iterate: `indices` (any order, other ranks' allowed)
    /// must include every stored fine point of this rank; `adjoint` may be
    /// null (no adjoint iterate). No communication.
    void set_iterate(const std::vector<int>& indices, CVec states, CVec adjoint, double rnorm0, double rnorm0_adjoint);

    int ilower() const { return levels_.empty() ? 0 : levels_[0].ilower; }
    int iupper() const { return levels_.empty() ? -1 : levels_[0].iupper; }
    int nlevels() const { return static_cast<int>(levels_.size()); }
    int ntime() const { return ntime_; }
    /// refine: temporal refinements done so far.
    int nrefine() const { return refine_.nrefine; }
    int rank() const { return comm_.rank(); }
    int nranks() const { return comm_.size(); }
    /// Global number of points on each level.
    std::vector<int> level_sizes() const;
    const Options& options() const { return opt_; }
    std::size_t vector_size() const { return n_; }
    /// float64 values of each state's shell (0: the app has no shells).
    std::size_t shell_size() const { return arena_.shell_size(); }
    /// Bytes of one vector as state_at() and local_states() give it (state, then shell at shell_offset()).
    std::size_t vector_bytes() const { return arena_.state_bytes(); }
    DType dtype() const { return arena_.dtype(); }
    App& app() { return *app_; }
    const std::vector<double>& times() const { return times_; }
    /// error_estimation: this rank's Richardson estimates at its level-0
    /// points ilower..iupper (-1 where none is available yet); else empty.
    const std::vector<double>& error_estimates() const { return rich_.estimate; }
    /// Bytes of state storage held by this rank (all levels).
    std::size_t storage_bytes() const;
    /// Bytes held by the adjoint (bar arena, tape, adjoint iterate).
    std::size_t adjoint_bytes() const { return sweep_.bytes(); }

    /// Called on every rank after each iteration's convergence test.
    std::function<void(const IterationInfo&)> on_iteration;
    /// A check run about every 50 ms during solves and waits (e.g. for Ctrl-C);
    /// whatever it throws stops this rank, and the others raise RemoteRankError.
    void set_interrupt_check(std::function<void()> check) { comm_.check_interrupt = std::move(check); }
    /// Shared ownership of the memory callbacks receive pointers into: a
    /// binding that lets a user keep such a pointer (a numpy view) holds this
    /// instead of the engine.
    std::shared_ptr<const void> memory_owner() const noexcept { return arena_.owner(); }
    /// True when nothing but this engine refers to the app (the bindings'
    /// garbage-collection support visits the app's references only then).
    bool owns_app_alone() const noexcept { return app_.use_count() == 1; }

private:
    /// Where the solver is in its life.
    enum class State {
        fresh,   ///< built, no iterate: the first solve may skip
        warm,    ///< holds an iterate (solve() continues from it)
        cold,    ///< reset(): no iterate, but solved before (no skip)
        broken,  ///< an operation failed on some rank: unusable
    };
    /// The cycle of XBraid's _braid_DriveUpdateCycle: where it is and where it goes.
    struct Cycle {
        int level = 0;
        bool down = true;
        bool try_refine = false;
        int fmglevel = 0;
        int fmg_vcyc = 0;
    };
    /// Per-level messages of the current sweep (XBraid's recv/send handles).
    struct PendingComm {
        MPI_Request recv = MPI_REQUEST_NULL;
        MPI_Request send = MPI_REQUEST_NULL;
        int recv_index = -2;  ///< index whose value arrives in the ghost slot
        int recv_source = -1;
        int send_index = -2;     ///< index to send once it is computed
        Vec send_buf = nullptr;  ///< in the arena
    };
    /// The restricted value sent to the right neighbour on a coarse level.
    struct VaExchange {
        MPI_Request recv = MPI_REQUEST_NULL, send = MPI_REQUEST_NULL;
        int source = -1;
        Vec send_buf = nullptr;
    };
    /// Work vectors in the arena.
    struct Work {
        Vec u = nullptr;        ///< the vector being stepped
        Vec other = nullptr;    ///< a second one (old C value, coarse residual)
        Vec sweep = nullptr;    ///< the final sweep's
        Vec ustop = nullptr;    ///< shells: the ustop of a step to a point that holds only a shell
        Vec refined = nullptr;  ///< a coarse correction refined in space (spatial coarsening)
        Vec delta = nullptr;    ///< delta correction: the Delta term of a step (XBraid's clone of u)
        Vec action = nullptr;   ///< delta correction: Delta applied to the previous coarse value
    };
    /// Grouped steps (apps with step_batch): rows of arena vectors, one per
    /// interval of a sweep, and what is deferred to keep the one-by-one order.
    struct Batch {
        Vec u = nullptr;                      ///< the rows being stepped
        Vec ustop = nullptr;                  ///< their ustop, gathered (unless every row is its own ustop)
        Vec fstop = nullptr;                  ///< their FAS right-hand sides, gathered (user-residual apps)
        Vec old = nullptr;                    ///< old C values (weighted C-relaxation)
        std::size_t capacity = 0;             ///< rows (0: no grouping)
        std::vector<double> objective_terms;  ///< f(u) per point of a chunk, summed in sweep order
    };
    /// Which sweep a group of intervals belongs to.
    enum class SweepKind { relax, restrict, interp, final };
    /// What a sweep over intervals needs besides its level.
    struct SweepSpec {
        SweepKind kind = SweepKind::relax;
        Phase phase = Phase::fc_relax;
        bool weighted = false;  ///< relax: weighted C-relaxation with weight cwt
        double cwt = 1.0;
        TemporalNorm* rnorm = nullptr;  ///< restrict: the residual norm being accumulated
        bool objective = false;         ///< restrict: evaluate the objective
        bool done = false;              ///< final: the access flag
    };
    static constexpr int kGhostTag = 100;  // + level
    static constexpr int kVaTag = 200;     // + level
    static constexpr int kRichardsonTag = 300;
    static constexpr int kEstimateTag = 301;
    /// The values _braid_FinalizeErrorEstimates sends to and receives from neighbours.
    struct EstimateExchange {
        MPI_Request recv = MPI_REQUEST_NULL, send_left = MPI_REQUEST_NULL, send_right = MPI_REQUEST_NULL;
        double received = 0.0, to_left = 0.0, to_right = 0.0;
    };
    /// Richardson extrapolation / error estimation (richardson.cpp).
    struct Richardson {
        std::vector<double> dtk;  ///< per owned level-0 C-point: sum of its fine steps^local_order (0 at index 0)
        std::vector<double> cpoint_estimate;  ///< per owned level-0 C-point: the last restriction's estimate / dtk
        std::vector<double> estimate;         ///< per owned level-0 point (error_estimation), -1: not available
        MPI_Request recv = MPI_REQUEST_NULL, send = MPI_REQUEST_NULL;
        int recv_source = -1;
        Vec left = nullptr;      ///< the C-point value left of clower (the left neighbour's)
        Vec send_buf = nullptr;  ///< this rank's last C-point value, sent to the right
        Vec coarse = nullptr;    ///< the coarse step's value
        EstimateExchange exchange;
    };
    /// Adaptive temporal refinement (refinement.cpp; XBraid's FRefine).
    struct Refinement {
        std::vector<int> rfactors;             ///< per owned level-0 point i: the factor of interval (i-1, i]
        std::vector<std::vector<double>> dts;  ///< per owned point: the given step sizes (empty: uniform)
        RefineRequest request;                 ///< what the step being made asks
        int nrefine = 0;                       ///< refinements done
        bool active = false;                   ///< false once max_refinements or tpoints_cutoff stopped it
    };

    // setup.cpp
    void setup(double tstart, double tstop, std::vector<double> times);
    void validate_problem() const;
    /// What the options need from the app, and the combinations that are refused.
    void check_features(AdjointMode mode) const;
    /// Shells (XBraid's braid_SetShell) exclude the adjoint (as in XBraid), grouped steps and
    /// spatial coarsening.
    void check_shells(AdjointMode mode) const;
    /// The combinations spatial coarsening (the app's coarsen/refine) does not support yet.
    void check_spatial_features(AdjointMode mode) const;
    /// The combinations richardson / error_estimation refuse.
    void check_richardson(AdjointMode mode) const;
    void make_time_grid(double tstart, double tstop, std::vector<double> times);
    void check_objective_window() const;
    void check_consistent_across_ranks(double tstart, double tstop, const std::vector<double>& times);
    /// Switch the communicator's virtual clock on (virtual_time; after every rank agreed on the options).
    void start_virtual_time();

    // hierarchy.cpp
    void build_hierarchy();
    void allocate_storage();
    /// Vectors of the work space and the levels (ua, va, fa, ghosts, send buffers).
    std::size_t level_vectors() const;
    /// The batch rows in the arena (after the levels' vectors), their times, and the batched adjoint's rows.
    void take_work_vectors();
    void allocate_batch(bool fstop, bool adjoint);
    void init_guess_level0();
    void sequential_guess();
    void copy_fine_to_coarse();
    void init_coarse_from_va(int level);
    /// The state sizes of the levels (the app's shape_at), checked and agreed on by the ranks.
    void probe_level_sizes();
    /// A fine-level state moved to the next coarser level: the app's coarsen,
    /// else a copy. `level`/`f_index`: the fine level and index (XBraid's _braid_Coarsen).
    void to_coarse(int level, int f_index, CVec fine, Vec coarse);
    /// A coarse correction moved to fine level `level` at `f_index`: the app's
    /// refine into a work vector, else `e` itself (XBraid's _braid_Refine).
    CVec to_fine(int level, int f_index, CVec e);
    /// The status of a coarsen/refine call about fine index `f_index` of `level`.
    void fill_space_status(int level, int f_index);
    int owner(int level, int index) const;
    /// periodic: index -1 of a level is its last point, last + 1 is 0 (else the index itself).
    int wrap(int level, int index) const noexcept;
    /// The time a step to `index` of `level` ends at (tstop for periodic's step to index 0).
    double step_tstop(const Level& g, int index) const noexcept { return index == 0 ? times_.back() : g.t(index); }

    // shell.cpp: apps with shells (XBraid's braid_SetShell)
    bool shells() const noexcept { return arena_.shell_size() > 0; }
    /// The shell slot of `index` on `level` when the point keeps a shell only, else nullptr.
    double* shell_slot(int level, int index) noexcept;
    /// Keep the shell of `v` where `index` holds a shell only (store()).
    void keep_shell(int level, int index, CVec v);
    /// The shells of the points that hold a shell only, from va (coarse initial guess).
    void shells_from_va(int level);
    /// XBraid's ustop when the target holds only a shell: the usual guess's
    /// state with the point's shell (in work_.ustop), else `usual` itself.
    CVec with_point_shell(int level, int index, CVec usual);
    /// This rank's level-0 shells and states (ilower..iupper) as XBraid
    /// initialises them: init at C-points, init_shell at the others.
    void init_level0_with_shells();

    // delta.cpp: low-rank Delta correction with Lyapunov vectors (XBraid's delta.c
    // and the Delta branches of step.c, residual.c, restrict.c and interp.c)
    bool delta() const noexcept { return opt_.delta_rank > 0; }
    /// XBraid's _braid_DoDeltaCorrect: basis vectors are handled on this level now.
    bool delta_computed(int level) const noexcept {
        return delta() && iter_ >= opt_.defer_delta_iter && level >= opt_.defer_delta_level;
    }
    /// XBraid's _braid_UseDeltaCorrect: the coarse steps of this level are Delta-corrected now.
    bool delta_used(int level) const noexcept {
        return delta() && iter_ >= opt_.defer_delta_iter && level > opt_.defer_delta_level;
    }
    /// Local Lyapunov exponents are computed in the final FC sweep (ex-07: lyapunov or lyapunov_relax).
    bool lyapunov_exponents() const noexcept { return delta() && (opt_.lyapunov || opt_.lyapunov_relax); }
    /// What delta correction needs from the app and the features it excludes.
    void check_delta(AdjointMode mode) const;
    /// The feature delta correction cannot be combined with (nullptr: none).
    const char* refused_with_delta(AdjointMode mode) const;
    /// The feature whose combination with delta correction is not checked against XBraid yet (nullptr: none).
    const char* unverified_with_delta() const;
    /// Work vectors, projections and exponents of delta correction (after the levels' layout).
    void allocate_delta();
    /// delta_step's end: tau and Delta corrections, then Gram-Schmidt where XBraid does it.
    void delta_step_finish(int level, int index, Vec u, Phase phase, bool prop, bool correct);
    /// XBraid's BaseInitBasis: init_basis for every basis vector of `u` at t, orthonormalized.
    void init_basis(double t, Vec u);
    /// _braid_Step when delta_computed(level).
    void delta_step(int level, int index, Vec u, Phase phase);
    /// Whether a step propagates the basis vectors (XBraid's prop_lyap).
    bool propagates_basis(int level, Phase phase) const noexcept;
    /// _braid_Residual's Delta branch: r = ustop - Phi(r) with the basis propagated and negated.
    void delta_residual(int level, int index, CVec ustop, Vec r, Phase phase);
    /// _braid_FASResidual with Delta correction (r holds u(ci-1); ustop = u(ci)).
    void delta_fas_residual(int level, int ci, CVec ustop, Vec r);
    /// The coarse right-hand side at point ii of `clevel` with the low-rank Delta (restrict.c).
    void delta_coarse_rhs(int clevel, int ii, Vec cu);
    /// _braid_LRDeltaDot: the n values at `x` <- sum_i <basis_i, x> delta_i.
    void lr_delta_dot(Vec x, CVec delta_owner, CVec basis_owner);
    /// _braid_LRDeltaDotMat: lr_delta_dot on every basis vector of `psi_owner`.
    void lr_delta_dot_mat(Vec psi_owner, CVec delta_owner, CVec basis_owner);
    /// _braid_GramSchmidt on the basis of `v`; `exps` (or nullptr) gets log of the norms.
    /// `cause`: what a basis vector of norm 0 means here (the error's message).
    void gram_schmidt(Vec v, double* exps, const char* cause);
    /// The local exponents of a level-0 point for access (nullptr: none provided).
    const double* lyapunov_exponents_at(int index) const noexcept;

    // step.cpp
    CVec ustop_for(int level, int index, CVec u);
    void take_step(int level, int index, Vec u, Phase phase);
    void user_or_default_residual(int level, int index, CVec ustop, Vec r, Phase phase);
    void fill_status(int level, int index, Phase phase);
    /// Status of a call about the level-0 state at `index` (access, objective).
    Status point_status(int index, Phase phase, bool done) const;
    /// point_status() into `st`: sets the same fields every time.
    void fill_point_status(int index, Phase phase, bool done, Status& st) const;
    /// The status of the adjoint of init(tstart) (the rank owning index 0).
    Status initial_status() const;
    /// What the reverse sweep rebuilds the statuses of recorded calls from (now).
    ReplayContext replay_context() const;
    void evaluate_objective(int index, CVec u);

    // relaxation.cpp: sweeps and the neighbour exchange they need
    void comm_init_fc(int level);  ///< XBraid's UCommInit
    void comm_init_f(int level);   ///< XBraid's UCommInitF
    void comm_wait(int level);     ///< XBraid's UCommWait
    /// Copy the value at index (owned stored point or received ghost) into dst.
    void fetch(int level, int index, Vec dst);
    /// Store value of index (when stored) and send it if it is the pending send.
    void store(int level, int index, CVec v);
    /// Send the value of index if it is the pending send (no store).
    void send_pending(int level, int index, CVec v);
    void fc_relax(int level, int nrelax);
    void relax_interval(int level, int k, bool weighted, double cwt, bool extrapolate);

    // batched_sweep.cpp: the intervals of a sweep stepped together (step_batch)
    /// Rows of grouped steps this engine allocates (0: the app steps one by one).
    std::size_t batch_capacity() const;
    /// Whether the intervals 1..ncpoints of `level` are stepped in groups.
    bool batched(int level) const noexcept { return batch_.capacity > 0 && levels_[level].ncpoints >= 1; }
    /// Intervals ncpoints..1 of a sweep in chunks of batch rows (interval 0, which
    /// waits for the left neighbour, stays with the one-by-one sweep).
    void batched_intervals(int level, const SweepSpec& s);
    void batch_chunk(int level, const SweepSpec& s, int lo, int hi);
    /// One group: row r steps index first + r * stride (from the index before it).
    /// `fas`: with the FAS right-hand side (take_step); else a plain step (the default residual).
    void batch_step(int level, Phase phase, int first, int stride, int rows, bool fas);
    /// The rows' times, gathered ustop and tape records; true when every row is its own ustop.
    bool batch_prepare(int level, Phase phase, int first, int stride, int rows);
    /// The coarse right-hand side's residuals at points lo..hi of `clevel`, grouped.
    void batched_coarse_residuals(int clevel, int lo, int hi);
    void batch_after_fpoint(int level, const SweepSpec& s, int index, Vec u);
    void batch_cpoints(int level, const SweepSpec& s, int lo, int rows);
    void batch_relax_cpoints(int level, const SweepSpec& s, int c_first, int rows);
    void batch_restrict_cpoints(int level, const SweepSpec& s, int c_first, int rows);
    void batch_deferred(int level, const SweepSpec& s, int lo, int hi);
    Vec batch_row(Vec rows, int r) const noexcept { return rows + static_cast<std::size_t>(r) * arena_.vector_bytes(); }

    // restriction.cpp
    void f_restrict(int level);
    void restrict_fine_sweep(int level, TemporalNorm& rnorm);
    void restrict_interval(int level, int k, TemporalNorm& rnorm, bool objective);
    void restrict_cpoint(int level, int ci, Vec r, TemporalNorm& rnorm);
    /// After r = A(u)_ci: the FAS residual, its norm, the injection.
    void finish_restrict_cpoint(int level, int ci, Vec r, TemporalNorm& rnorm, bool fas_done = false);
    /// rnorm: level 0's residual norm, accumulated here with richardson.
    void coarse_right_hand_side(int clevel, TemporalNorm& rnorm);

    // richardson.cpp
    /// dtk per owned C-point and the estimates (after build_hierarchy).
    void setup_richardson();
    /// Estimates back to "not available" (a new problem).
    void reset_error_estimates();
    /// Whether the relaxation of `level` extrapolates its C-points now.
    bool extrapolates(int level) const;
    /// The estimate a status reports for the level-`level` point `index` (-1: none).
    double error_estimate_at(int level, int index) const;
    void richardson_comm_init();
    void richardson_comm_wait();
    /// After the C-relaxation stored u at ci: the extrapolated value (stored, returned).
    CVec extrapolate_cpoint(int ci, CVec u);
    /// Level 1's right-hand side at local point ii with Richardson's scaling, norm and estimate.
    void richardson_coarse_point(int ii, Vec cu, Vec fa, TemporalNorm& rnorm);
    /// Spread the C-point estimates to every fine point (after the level-0 restriction).
    void finalize_error_estimates();
    /// The neighbours' values finalize_error_estimates needs or gives.
    void post_estimate_exchange(int last_cpoint);
    /// The value from the neighbour (waits for it once).
    double received_estimate();
    /// Owned C-point j's estimate times its dtk (what every point of its interval gets).
    double cpoint_value(std::size_t j) const { return rich_.cpoint_estimate[j] * rich_.dtk[j]; }

    // refinement.cpp
    /// Factors 1 for this rank's level-0 intervals (after build_hierarchy).
    void setup_refinement();
    /// Before a step: status_.refine and whether what the step asks counts.
    void open_refine_request(int level, Phase phase);
    /// After a step to `index`: keep the factor it asked for.
    void take_refine_request(int index);
    /// At the top of a cycle: refine the fine grid when a step asked for it (true: refined).
    bool refine_grid();
    /// Every interval's factor and given step sizes, on every rank (index: the interval's right point).
    void gather_refine_factors(std::vector<int>& rf, std::vector<std::vector<double>>& dts);
    /// Rank `root`'s part of them, broadcast.
    void gather_refine_part(int root, std::vector<int>& rf, std::vector<std::vector<double>>& dts);
    /// The refined grid's times; new_of_old[i]: the new index of old point i.
    std::vector<double> refined_times(const std::vector<int>& rf, const std::vector<std::vector<double>>& dts,
                                      std::vector<int>& new_of_old) const;
    /// Every rank's level-0 states (after a final sweep), on every rank.
    void gather_level0(Bytes& all);
    /// The new level 0's stored values, stepped from the old points.
    void init_refined_level0(const Bytes& old_states, const std::vector<int>& new_of_old);
    /// refine=True: the combinations refused.
    void check_refinement(AdjointMode mode) const;

    // full_residual.cpp
    /// XBraid's _braid_ComputeFullRNorm: the app's residual at every fine point (a reduction).
    double full_residual_norm();
    void full_residual_interval(int k, TemporalNorm& norm);
    /// After level 0's restriction: the full norm of this iteration.
    void record_full_residual_norm();

    // sync (cycle.cpp): the app's sync callback, on every rank.
    void sync(Phase phase);

    // interpolation.cpp / access.cpp
    void f_interp(int level);
    void interp_interval(int level, int k);
    /// The coarse error at C-point ci added to the fine C-point ci * cfactor.
    void correct_fine_cpoint(int level, int ci);
    /// The coarse error at F-point fi (its new value in u) added to the fine point fi * cfactor.
    void correct_fine_fpoint(int level, int fi, CVec u);
    /// phase: access (the solve's final sweep) or state_query (on demand).
    void final_sweep(bool done, bool fc, Phase phase = Phase::access);
    /// This rank's fine states, from the final sweep (run now if it was not).
    const Bytes& solution();
    void final_interval(int k, bool done, Phase phase, bool objective);
    void emit_access(int level, int index, CVec u, bool done);
    /// The first half of emit_access: keep the state in the solution copy.
    void keep_solution(int index, CVec u);
    /// The second half: the user's access to the kept state.
    void user_access(int index, bool done, CVec engine_vector = nullptr);

    // cycle.cpp
    void drive(SolveSummary& summary);
    Cycle init_cycle();
    void update_cycle(Cycle& c) const;
    bool cycle_move(Cycle& c);
    void end_of_iteration(bool& converged, SolveSummary& summary);
    /// The progress hook of the cycle that just ended (a refining cycle's too).
    void report_progress();
    void finish(SolveSummary& summary, bool sequential, bool converged);
    bool check_convergence(int iter);
    void check_divergence(int iter, double rnorm) const;
    double rnorm_at(int iter) const;
    /// The norm the convergence test uses at iter (full or C-point) and its reference.
    double stopping_norm(int iter, double& reference) const;
    /// The first point with a C-point residual: 0, or -1 when periodic (index 0 follows N-1).
    int initiali() const noexcept { return opt_.periodic ? -1 : 0; }
    /// history[iter] = value, growing the history as iterations happen.
    static void record_norm(std::vector<double>& history, int iter, double value);
    void ensure_usable() const;
    /// Stop the other ranks (once) after `e` escaped on this rank, and mark the solver broken.
    void fail_collectively(const char* what_failed, const std::exception* e);

    std::shared_ptr<App> app_;
    Communicator comm_;
    CallbackGate gate_;
    Options opt_;
    std::size_t n_;
    int ntime_;
    int gupper0_ = 0;      ///< last fine index: ntime, or ntime - 1 when periodic (XBraid's gupper)
    RecordedArena arena_;  ///< every state vector; the tape of the adjoint
    AdjointSweep sweep_;
    std::vector<double> times_;  ///< all ntime+1 fine times (global)
    std::vector<Level> levels_;
    Status status_;
    Status objective_status_;  ///< the status of the objective term being evaluated
    std::vector<PendingComm> pending_;
    VaExchange va_;
    Work work_;
    Batch batch_;
    Richardson rich_;
    Refinement refine_;
    Bytes solution_;  ///< fine states ilower..iupper after the final sweep
    bool solution_valid_ = false;
    State state_ = State::fresh;

    // iteration state
    std::vector<double> rnorms_;       ///< this solve's history (index = iteration)
    double rnorm0_ = -1.0;             ///< reference for rel_tol, kept across solves
    std::vector<double> full_rnorms_;  ///< this solve's full residual norms (full_residual_norm)
    double full_rnorm0_ = -1.0;        ///< reference of the full norm for rel_tol
    double current_full_rnorm_ = -1.0;
    double current_rnorm_ = -1.0;
    int iter_ = 0;
    double solve_start_ = 0.0;
    bool done_ = false;
    // delta correction
    bool relax_lyap_ = false;        ///< XBraid's relax_lyap as the current sweep uses it
    std::vector<double> lyap_exps_;  ///< local exponents at this rank's level-0 C-points (delta_rank each)
    std::vector<double> coords_;     ///< projections of one vector on a basis (delta_rank)
};

}  // namespace pxb
