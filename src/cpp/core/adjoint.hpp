/// \file adjoint.hpp
/// \brief XBraid_Adjoint: the objective of each primal iteration and the
///        reverse replay of its tape ("primal and adjoint braid cycles"). The
///        bars of the iteration's input states form the next adjoint iterate;
///        the user's step_adjoint / objective_adjoint accumulate the gradient.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/callbacks.hpp"
#include "core/communication.hpp"
#include "core/grid.hpp"
#include "core/recorded_arena.hpp"
#include "core/status.hpp"

namespace pxb {

/// What a solve computes besides the primal solution.
enum class AdjointMode {
    none,            ///< MGRIT only
    objective_only,  ///< J, no adjoint (line searches, finite differences)
    gradient,        ///< J and the adjoint sweep that gives its gradient
};

/// What the reverse sweep rebuilds the statuses of recorded calls from: the
/// engine's levels (their times) and what every call of one sweep shares.
/// The engine passes it to each sweep (top_of_cycle, after_sequential).
struct ReplayContext {
    const std::vector<Level>* levels = nullptr;
    int nlevels = 1, iter = 0, ntime = 0, nrefine = 0;
    /// error_estimation: this rank's level-0 estimates (index ilower first); nullptr: none.
    const double* estimates = nullptr;
};

class AdjointSweep {
public:
    struct Settings {
        AdjointMode mode = AdjointMode::none;
        int tnorm = 2;
        double tolerance = 1e-6;
        bool relative = true;
        double tstart_objective = 0.0, tstop_objective = 0.0;  ///< the closed objective window
    };

    AdjointSweep(RecordedArena& arena, Communicator& comm, CallbackGate& gate)
        : arena_(arena), comm_(comm), gate_(gate) {}

    void configure(const Settings& s) { set_ = s; }
    AdjointMode mode() const noexcept { return set_.mode; }
    bool active() const noexcept { return set_.mode != AdjointMode::none; }
    bool gradient() const noexcept { return set_.mode == AdjointMode::gradient; }
    /// Room for the adjoint iterate at the fine level's stored points.
    void allocate(std::size_t stored_points) { ubar_.assign(stored_points * arena_.vector_bytes()); }

    bool in_window(double t) const noexcept { return t >= set_.tstart_objective && t <= set_.tstop_objective; }
    /// f(u) at a fine point of the window: evaluated, summed, recorded.
    void objective_term(CVec u, const Status& st) { add_objective(objective_value(u, st)); }
    /// f(u) evaluated and recorded, not summed: the caller adds it with
    /// add_objective() in the order the one-by-one sweep would have. Inline
    /// (as the recording): one call per fine point and iteration.
    double objective_value(CVec u, const Status& st) {
        const double value = gate_.objective(u, st);
        arena_.record_objective(u, st);
        return value;
    }
    void add_objective(double value) noexcept { local_objective_ += value; }

    /// A solve starts: fresh histories and objective, gradient zeroed.
    void begin_solve();
    /// The top of an iteration: J = F(I), then (gradient mode) the reverse
    /// sweep seeded with the adjoint iterate, the initial condition's adjoint
    /// and the new adjoint iterate with its residual norm.
    void top_of_cycle(const ReplayContext& context, int iter, const Status& initial);
    /// Sequential marching: the recorded sweep reversed once (exact adjoint).
    void after_sequential(const ReplayContext& context, const Status& initial);
    /// After the convergence test of an iteration that is not the last.
    void next_iteration(bool done);
    /// Forget the adjoint iterate and its tolerance reference (a new problem).
    void reset();
    /// The adjoint iterate at the fine level's stored slot `slot`.
    Vec iterate_at(int slot) noexcept { return ubar_.data() + static_cast<std::size_t>(slot) * arena_.vector_bytes(); }
    double reference() const noexcept { return rnorm0_; }
    void set_reference(double rnorm0) noexcept { rnorm0_ = rnorm0; }

    double objective() const noexcept { return objective_; }
    double residual() const noexcept { return rnorm_; }
    /// The adjoint residual met its tolerance (an exactly zero residual counts).
    bool converged() const noexcept;
    bool diverged() const noexcept;
    /// ||r_adj|| per iteration of this solve (-1: not available).
    std::vector<double>& history() noexcept { return norms_; }
    std::size_t bytes() const noexcept { return arena_.bar_bytes() + ubar_.capacity(); }

private:
    double finish_objective();
    /// Replay the tape in reverse; the statuses from `context`.
    void reverse_sweep(const ReplayContext& context);
    // The reverse of one record, below, is inlined into the sweep's loop
    // (always_inline): each is a few dozen instructions, as many as a call
    // through the reused TapeOp would add (measured in benchmarks/README.md).
    [[gnu::always_inline]] inline void reverse_copy(std::uint32_t y, std::uint32_t x);
    [[gnu::always_inline]] inline void reverse_axpy(std::uint32_t y, std::uint32_t x, double a, double b);
    /// The parts of a fused step record (what followed the step), reversed.
    [[gnu::always_inline]] inline void reverse_after_step(const TapeOp& op);
    [[gnu::always_inline]] inline void reverse_step(const TapeOp& op);
    /// The steps of one grouped primal call (collected in group_, last first):
    /// one step_adjoint_batch call when the app has it, else one by one.
    void reverse_group();
    /// The adjoint of the objective term of the level-0 point `tindex` (its
    /// state `saved`, its vector `y`), added to y's bar.
    [[gnu::always_inline]] inline void reverse_objective(std::uint32_t y, CVec saved, int tindex, bool done,
                                                         double residual_norm);
    /// The reverse of a coarsen or refine: the app's coarsen_adjoint / refine_adjoint.
    void reverse_space(const TapeOp& op);
    /// The reverse of one record (the reverse sweep's dispatch).
    [[gnu::always_inline]] inline void reverse_op(const TapeOp& op, std::size_t& next_buffer);
    /// A step record or a bracket of grouped steps (a group is replayed as one call at its start).
    [[gnu::always_inline]] inline void reverse_step_record(const TapeOp& op);
    void reverse_receive(const TapeOp& op, std::size_t& next_buffer);
    void reverse_send(const TapeOp& op);
    void seed(const Level& fine);
    void initial_adjoint(const Level& fine, const Status& initial);
    double update_iterate(const Level& fine, int iter);

    RecordedArena& arena_;
    Communicator& comm_;
    CallbackGate& gate_;
    Settings set_;
    /// The status of a recorded step, coarsen or refine (what fill_status gave
    /// the primal call), valid until the next one. Filled in place, inline: a
    /// Status is large, there is one per step, and only these fields change
    /// within a sweep (begin_replay set the rest).
    const Status& status_of(const TapeOp& op) noexcept {
        const Level& g = (*replay_.levels)[op.level];
        Status& st = step_status_;
        st.tstart = g.t(op.tindex);
        // coarsen / refine: the point's time (fill_space_status)
        const bool space = op.kind == TapeOp::Kind::coarsen || op.kind == TapeOp::Kind::refine;
        st.tstop = space ? st.tstart : g.t(op.tindex + 1);
        st.tindex = op.tindex;
        st.level = op.level;
        st.done = op.done;
        st.phase = static_cast<Phase>(op.phase);
        st.residual_norm = op.residual_norm;
        return st;
    }
    /// The status of the objective term at level-0 point `tindex` (what
    /// Engine::fill_point_status gave it), valid until the next one.
    const Status& objective_status(int tindex, bool done, double residual_norm) noexcept {
        const Level& g = (*replay_.levels)[0];
        Status& st = objective_status_;
        st.tstart = st.tstop = g.t(tindex);
        st.tindex = tindex;
        st.done = done;
        st.residual_norm = residual_norm;
        st.error_estimate =
            replay_.estimates && tindex >= g.ilower && tindex <= g.iupper ? replay_.estimates[tindex - g.ilower] : -1.0;
        return st;
    }
    /// Keep `context` for the sweep and set the fields its statuses share.
    void begin_replay(const ReplayContext& context) noexcept;

    ReplayContext replay_;
    Status step_status_;       ///< filled for steps, coarsen and refine only
    Status objective_status_;  ///< filled for objectives
    Bytes ubar_;               ///< adjoint iterate at the fine level's stored slots
    std::vector<MPI_Request> reverse_reqs_;
    std::vector<TapeOp> group_;  ///< the step records of the group being replayed
    bool in_group_ = false;
    std::vector<double> norms_;
    double local_objective_ = 0.0;
    double objective_ = 0.0;
    double f_bar_ = 1.0;
    double rnorm_ = -1.0;
    double rnorm0_ = -1.0;  ///< reference of the relative tolerance (first iteration)
};

}  // namespace pxb
