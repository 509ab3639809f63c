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

/// Who rebuilds the full status of a recorded call from what the tape keeps
/// (times, iteration and sizes are the engine's): the engine.
class RecordedStatusSource {
public:
    /// A step, coarsen or refine record's status, into `st`.
    virtual void recorded_status(const TapeOp& op, Status& st) const = 0;
    /// The status of an objective term at level-0 point `tindex`, into `st`.
    virtual void recorded_objective_status(int tindex, bool done, double residual_norm, Status& st) const = 0;

protected:
    ~RecordedStatusSource() = default;
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
    /// The engine rebuilds the full status of a recorded step or objective
    /// (times, iteration, sizes) from what the tape keeps.
    void set_status_source(const RecordedStatusSource& source) noexcept { status_source_ = &source; }
    AdjointMode mode() const noexcept { return set_.mode; }
    bool active() const noexcept { return set_.mode != AdjointMode::none; }
    bool gradient() const noexcept { return set_.mode == AdjointMode::gradient; }
    /// Room for the adjoint iterate at the fine level's stored points.
    void allocate(std::size_t stored_points) { ubar_.assign(stored_points * arena_.vector_bytes()); }

    bool in_window(double t) const noexcept { return t >= set_.tstart_objective && t <= set_.tstop_objective; }
    /// f(u) at a fine point of the window: evaluated, summed, recorded.
    void objective_term(CVec u, const Status& st);
    /// f(u) evaluated and recorded, not summed: the caller adds it with
    /// add_objective() in the order the one-by-one sweep would have.
    double objective_value(CVec u, const Status& st);
    void add_objective(double value) noexcept { local_objective_ += value; }

    /// A solve starts: fresh histories and objective, gradient zeroed.
    void begin_solve();
    /// The top of an iteration: J = F(I), then (gradient mode) the reverse
    /// sweep seeded with the adjoint iterate, the initial condition's adjoint
    /// and the new adjoint iterate with its residual norm.
    void top_of_cycle(const Level& fine, int iter, const Status& initial);
    /// Sequential marching: the recorded sweep reversed once (exact adjoint).
    void after_sequential(const Level& fine, const Status& initial);
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
    void reverse_sweep();
    void reverse_copy(std::uint32_t y, std::uint32_t x);
    void reverse_axpy(std::uint32_t y, std::uint32_t x, double a, double b);
    /// The parts of a fused step record (what followed the step), reversed.
    void reverse_after_step(const TapeOp& op);
    void reverse_step(const TapeOp& op);
    /// The steps of one grouped primal call (collected in group_, last first):
    /// one step_adjoint_batch call when the app has it, else one by one.
    void reverse_group();
    /// The adjoint of the objective term of the level-0 point `tindex` (its
    /// state `saved`, its vector `y`), added to y's bar.
    void reverse_objective(std::uint32_t y, CVec saved, int tindex, bool done, double residual_norm);
    /// The reverse of a coarsen or refine: the app's coarsen_adjoint / refine_adjoint.
    void reverse_space(const TapeOp& op);
    /// The reverse of one record (the reverse sweep's dispatch).
    void reverse_op(const TapeOp& op, std::size_t& next_buffer);
    /// A step record or a bracket of grouped steps (a group is replayed as one call at its start).
    void reverse_step_record(const TapeOp& op);
    void reverse_receive(const TapeOp& op, std::size_t& next_buffer);
    void reverse_send(const TapeOp& op);
    void seed(const Level& fine);
    void initial_adjoint(const Level& fine, const Status& initial);
    double update_iterate(const Level& fine, int iter);

    RecordedArena& arena_;
    Communicator& comm_;
    CallbackGate& gate_;
    Settings set_;
    /// The status of a recorded step, coarsen or refine, valid until the next
    /// one. Filled in place, not returned: a Status is large and there is one per step.
    const Status& status_of(const TapeOp& op) {
        status_source_->recorded_status(op, step_status_);
        return step_status_;
    }

    const RecordedStatusSource* status_source_ = nullptr;
    Status step_status_;       ///< filled for steps, coarsen and refine only (see Engine::recorded_status)
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
