/// \file engine.hpp
/// \brief The MGRIT solver of one communicator (XBraid's braid_Core). The
///        algorithm is split by concern, as in XBraid:
///        hierarchy.cpp (levels, times, distribution), step.cpp (one step and
///        its ustop/fstop rules, residuals), relaxation.cpp (FCRelax),
///        restriction.cpp (FRestrict + residual norm), interpolation.cpp
///        (FInterp), access.cpp (final sweep, state queries), cycle.cpp (the
///        V/F-cycle driver and convergence test).
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>
#include <vector>

#include "core/app.hpp"
#include "core/callbacks.hpp"
#include "core/communication.hpp"
#include "core/grid.hpp"
#include "core/options.hpp"
#include "core/storage.hpp"
#include "core/tape.hpp"

namespace pxb {

/// Per-iteration information handed to the progress hook.
struct IterationInfo {
    int iter = 0;
    double residual_norm = -1.0;   ///< -1 when not available
    double wall_time = 0.0;        ///< seconds since solve() started
};

/// What one solve() reports.
struct SolveSummary {
    int iterations = 0;
    std::vector<double> residual_norms;  ///< per iteration, -1 where not available
    std::vector<double> adjoint_residual_norms;  ///< per iteration (adjoint solves)
    double objective = 0.0;              ///< J of the last iteration (adjoint / objective_only)
    bool converged = false;
    int nlevels = 1;
    double wall_time = 0.0;
    CallCounts calls;                    ///< this rank
    long long step_calls_all_ranks = 0;
};

class Engine {
public:
    /// `times` empty: uniform grid tstart + i/ntime (tstop - tstart); else ntime+1 values.
    Engine(std::shared_ptr<App> app, MPI_Comm comm, double tstart, double tstop, int ntime,
           std::vector<double> times, Options options);

    /// Run MGRIT (collective). A second call continues from the current iterate.
    SolveSummary solve();

    /// Fine-grid state at global index i, copied into `out` on every rank (collective).
    void state_at(int i, double* out);
    /// This rank's fine-grid states [ilower..iupper] after the final sweep
    /// (collective: runs the sweep on demand when it has not happened).
    const std::vector<double>& local_states();

    int ilower() const { return levels_.empty() ? 0 : levels_[0].ilower; }
    int iupper() const { return levels_.empty() ? -1 : levels_[0].iupper; }
    int nlevels() const { return static_cast<int>(levels_.size()); }
    int ntime() const { return ntime_; }
    int rank() const { return comm_.rank(); }
    int nranks() const { return comm_.size(); }
    double time_of(int i) const { return times_[static_cast<std::size_t>(i)]; }
    /// Global number of points on each level.
    std::vector<int> level_sizes() const;
    const Options& options() const { return opt_; }
    std::size_t vector_size() const { return n_; }
    App& app() { return *app_; }
    const std::vector<double>& times() const { return times_; }
    /// Bytes of state storage held by this rank (all levels).
    std::size_t storage_bytes() const;

    /// Called on rank 0 ... every rank, after each iteration's convergence test.
    std::function<void(const IterationInfo&)> on_iteration;

    /// A check run about every 50 ms during solves and waits (e.g. for Ctrl-C);
    /// whatever it throws stops this rank, and the others raise RemoteRankError.
    void set_interrupt_check(std::function<void()> check) { comm_.check_interrupt = std::move(check); }

    /// Forget the iterate (collective-free): the next solve() starts from
    /// init() again, with fresh tolerance references -- a new problem of the
    /// same size, e.g. the next mini-batch.
    void reset();
    /// Re-evaluate init(tstart) before the next solve and keep the rest of the
    /// iterate: a warm restart after the design changed the initial condition.
    void refresh_initial_condition();

    /// Bytes held by the adjoint (bar arena, tape, adjoint iterate).
    std::size_t adjoint_bytes() const;

    /// Shared ownership of the memory callbacks receive pointers into: a
    /// binding that lets a user keep such a pointer (a numpy view) holds this
    /// instead of the engine.
    std::shared_ptr<const void> memory_owner() const noexcept { return mem_; }
    /// True when nothing but this engine refers to the app (the bindings'
    /// garbage-collection support visits the app's references only then).
    bool owns_app_alone() const noexcept { return app_.use_count() == 1; }

private:
    // hierarchy.cpp
    /// Everything the constructor does on this rank (the constructor adds the agreement).
    void setup(double tstart, double tstop, std::vector<double> times);
    void build_hierarchy();
    void exchange_ghost_times();
    void init_guess_level0();
    void sequential_guess();
    void copy_fine_to_coarse();
    void init_coarse_from_va(int level);
    int owner(int level, int index) const;

    // vectors.cpp: the state arena and the recorded vector primitives
    void allocate_arena();
    /// Throws StorageSizeError when `vectors` state vectors overflow or exceed the machine's memory.
    void check_storage_size(std::size_t vectors) const;
    std::size_t offset_of(const double* p) const noexcept { return static_cast<std::size_t>(p - arena_.data()); }
    void vcopy(double* dst, const double* src);                         ///< dst <- src
    void vaxpy(double a, const double* x, double b, double* y);        ///< y <- a x + b y
    void vsend(const double* v, double* buf, int dest, int tag, MPI_Request& req);
    void vreceived(double* slot, int source, int tag);                  ///< a receive into slot completed
    void evaluate_objective(int index, const double* u);
    void record_step(const double* u, const double* ustop);  ///< before the step: its inputs
    /// Status of a call about the level-0 state at `index` (access, objective).
    Status point_status(int index, Phase phase, bool done) const;

    // adjoint.cpp
    void adjoint_top_of_cycle();       ///< objective, reverse sweep, adjoint update (iterations)
    void adjoint_after_sequential();   ///< max_levels = 1: reverse the recorded sweep once
    double finish_objective();         ///< reduce I, J = F(I), F_bar = dF/dI
    void reverse_sweep();
    void initial_adjoint();            ///< hand the bar of u(tstart) to the app (rank owning index 0)
    double update_adjoint_iterate();

    // step.cpp
    const double* ustop_for(int level, int index, const double* u) const;
    void take_step(int level, int index, double* u, Phase phase);
    void user_or_default_residual(int level, int index, const double* ustop, double* r, Phase phase);
    void fill_status(int level, int index, Phase phase);

    // communication helpers (relaxation.cpp)
    void comm_init_fc(int level);   ///< XBraid's UCommInit
    void comm_init_f(int level);    ///< XBraid's UCommInitF
    void comm_wait(int level);      ///< XBraid's UCommWait
    /// Copy the value at index (owned stored point or received ghost) into dst.
    void fetch(int level, int index, double* dst);
    /// Store value of index (when stored) and send it if it is the pending send.
    void store(int level, int index, const double* v);

    // relaxation.cpp / restriction.cpp / interpolation.cpp / access.cpp
    void fc_relax(int level, int nrelax);
    void f_restrict(int level);
    void f_interp(int level);
    /// phase: access (the solve's final sweep) or state_query (on demand).
    void final_sweep(bool done, bool fc, Phase phase = Phase::access);
    /// This rank's fine states, from the final sweep (run now if it was not).
    const std::vector<double>& solution();
    void emit_access(int level, int index, const double* u, bool done);

    // cycle.cpp
    void drive(SolveSummary& summary);
    bool check_convergence(int iter);
    double rnorm_at(int iter) const;
    /// history[iter] = value, growing the history as iterations happen.
    static void record_norm(std::vector<double>& history, int iter, double value);

    // First member: the memory callbacks see outlives the engine while a kept
    // view refers to it (see storage.hpp).
    std::shared_ptr<Storage> mem_ = std::make_shared<Storage>();
    std::shared_ptr<App> app_;
    Communicator comm_;
    CallbackGate gate_;
    Options opt_;
    std::size_t n_;
    int ntime_;
    std::vector<double> times_;       ///< all ntime+1 fine times (global)
    std::vector<Level> levels_;
    Status status_;

    // per-level pending messages of the current sweep (XBraid's recv/send handles)
    struct PendingComm {
        MPI_Request recv = MPI_REQUEST_NULL;
        MPI_Request send = MPI_REQUEST_NULL;
        int recv_index = -2;           ///< index whose value arrives in the ghost slot
        int recv_source = -1;
        int send_index = -2;           ///< index to send once it is computed
        double* send_buf = nullptr;    ///< in the arena
    };
    static constexpr int kGhostTag = 100;    // + level
    static constexpr int kVaTag = 200;       // + level
    std::vector<PendingComm> pending_;
    MPI_Request va_recv_ = MPI_REQUEST_NULL, va_send_ = MPI_REQUEST_NULL;
    int va_recv_source_ = -1;
    double* va_send_buf_ = nullptr;

    // One arena holds every state vector of the engine (all levels, work
    // vectors, send buffers); the adjoint mirrors it with a bar arena.
    std::vector<double>& arena_ = mem_->arena;
    std::vector<double>& bar_ = mem_->bar;
    double* work_ = nullptr;
    double* work2_ = nullptr;
    double* work3_ = nullptr;

    // adjoint state
    Tape tape_{mem_->saved};
    std::vector<double> ubar_;        ///< adjoint iterate at level-0 stored slots
    std::vector<double>& scratch_ = mem_->scratch;  ///< 2 vectors for callback outputs in the reverse sweep
    std::vector<double>& rev_bufs_ = mem_->reverse_sends;  ///< buffers of reverse-sweep messages
    std::vector<MPI_Request> rev_reqs_;
    std::vector<double> adj_norms_;
    double local_objective_ = 0.0;
    double objective_ = 0.0;
    double f_bar_ = 1.0;
    double rnorm_adj_ = -1.0;
    double rnorm0_adj_ = -1.0;
    double tstart_obj_ = 0.0, tstop_obj_ = 0.0;
    std::vector<double> solution_;    ///< fine states ilower..iupper after the final sweep
    bool solution_valid_ = false;

    // iteration state
    std::vector<double> rnorms_;      ///< this solve's history (index = iteration)
    double rnorm0_ = -1.0;           ///< reference for rel_tol, kept across solves
    double current_rnorm_ = -1.0;
    int iter_ = 0;
    double solve_start_ = 0.0;
    bool done_ = false;
    bool solved_once_ = false;
    bool initialised_ = false;
    bool broken_ = false;             ///< an earlier solve or query failed on some rank

    void ensure_usable() const;
    /// Stop the other ranks (once) after `e` escaped on this rank, and mark the solver broken.
    void fail_collectively(const char* what_failed, const std::exception* e);
    /// Every rank must have built the solver with the same problem and options.
    void check_consistent_across_ranks(double tstart, double tstop, const std::vector<double>& times);
};

}  // namespace pxb
