// XBraid_Adjoint: after each primal iteration, the objective is reduced and
// the recorded iteration is replayed in reverse with the current adjoint
// iterate as seed ("primal and adjoint braid cycles"). The bars of the
// iteration's input states form the next adjoint iterate; the user's
// step_adjoint / objective_adjoint accumulate the gradient.
#include "core/adjoint.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/norms.hpp"

namespace pxb {

namespace {
constexpr int kReverseTag = 1000;  // + the primal tag

/// v <- 0 for a vector of `bytes`: a scalar state (once or twice per step of
/// the reverse sweep) without a call into the C library.
void zero_vector(Vec v, std::size_t bytes) noexcept {
    if (bytes == sizeof(double)) {
        const double zero = 0.0;
        std::memcpy(v, &zero, sizeof zero);
    } else {
        std::memset(v, 0, bytes);
    }
}

/// dst <- src for vectors of `bytes` (a scalar state without a call into the C library).
void copy_vector(Vec dst, CVec src, std::size_t bytes) noexcept {
    if (bytes == sizeof(double))
        std::memcpy(dst, src, sizeof(double));
    else
        std::memcpy(dst, src, bytes);
}
}  // namespace

void AdjointSweep::begin_solve() {
    norms_.clear();
    local_objective_ = 0.0;
    rnorm_ = -1.0;
    if (gradient()) gate_.reset_gradient();
    arena_.tape().clear();
}

void AdjointSweep::next_iteration(bool done) {
    local_objective_ = 0.0;
    if (!done && gradient()) gate_.reset_gradient();
    arena_.tape().clear();
}

void AdjointSweep::reset() {
    rnorm0_ = -1.0;
    ubar_.zero();
}

bool AdjointSweep::converged() const noexcept {
    const double tol = set_.relative ? set_.tolerance * rnorm0_ : set_.tolerance;
    // DEVIATION (documented): an exactly zero residual is converged.
    return rnorm_ < tol || rnorm_ == 0.0;
}

bool AdjointSweep::diverged() const noexcept {
    return gradient() && !std::isfinite(rnorm_);
}

double AdjointSweep::finish_objective() {
    double sum = local_objective_;
    comm_.allreduce(&sum, 1, MPI_SUM);
    const bool post = gate_.app().has_postprocess();
    objective_ = post ? gate_.postprocess(sum) : sum;
    if (gradient()) {
        f_bar_ = post ? gate_.postprocess_adjoint(sum) : 1.0;
        // The postprocess derivative may assign the design term of the
        // gradient; it must count once, on rank 0.
        if (comm_.rank() != 0) gate_.reset_gradient();
    }
    return objective_;
}

void AdjointSweep::reverse_copy(std::uint32_t y, std::uint32_t x) {  // y = x
    ops::move_add(arena_.dtype(), arena_.vector_size(), arena_.bar_at(y), arena_.bar_at(x));
}

void AdjointSweep::reverse_axpy(std::uint32_t y, std::uint32_t x, double a, double b) {  // y = a x + b y
    const std::size_t n = arena_.vector_size();
    Vec ybar = arena_.bar_at(y);
    if (x != y) ops::add_scaled(arena_.dtype(), n, a, ybar, arena_.bar_at(x));
    // b = 1 (a sum, the commonest axpy) leaves y_bar as it is: v * 1 is v, bit for bit.
    if (x == y || b != 1.0) ops::scale(arena_.dtype(), n, x == y ? a + b : b, ybar);
}

void AdjointSweep::reverse_after_step(const TapeOp& op) {
    // What the primal did with the stepped vector after the step, undone last first.
    if (op.store != TapeOp::kNone) reverse_copy(op.store, op.y);
    if (op.accumulate != TapeOp::kNone) reverse_axpy(op.accumulate, op.y, 1.0, 1.0);
    if (op.post_x != TapeOp::kNone) reverse_axpy(op.y, op.post_x, 1.0, op.post_b);
}

void AdjointSweep::reverse_step(const TapeOp& op) {
    const std::size_t bytes = arena_.vector_bytes();
    Vec ybar = arena_.bar_at(op.y);
    Vec sbar = arena_.storage().scratch.data();
    zero_vector(sbar, bytes);
    gate_.step_adjoint(op.saved, op.saved_ustop, ybar, sbar, status_of(op));
    // An adjoint that ignores ustop leaves ustop_bar zero: nothing to add.
    if (gate_.adjoint_uses_ustop())
        ops::add(arena_.dtype(), arena_.vector_size(), sbar, op.ustop_is_u() ? ybar : arena_.bar_at(op.x));
}

void AdjointSweep::reverse_group() {
    if (!gate_.has_step_adjoint_batch() || group_.size() < 2) {
        for (const TapeOp& op : group_) reverse_step(op);  // the order of the ungrouped replay
        return;
    }
    std::reverse(group_.begin(), group_.end());  // rows in the order of the primal call
    const std::size_t rows = group_.size(), bytes = arena_.vector_bytes(), n = arena_.vector_size();
    Storage& mem = arena_.storage();
    Vec u = mem.batch_adjoint.data();
    Vec ustop = u + rows * bytes, u_bar = ustop + rows * bytes, ustop_bar = u_bar + rows * bytes;
    auto* tstart = reinterpret_cast<double*>(mem.batch_times.data());
    double* tstop = tstart + rows;
    bool aliased = true;
    for (std::size_t r = 0; r < rows; ++r) {
        const TapeOp& op = group_[r];
        const Status& st = status_of(op);
        tstart[r] = st.tstart;
        tstop[r] = st.tstop;
        aliased = aliased && op.ustop_is_u();
        std::memcpy(u + r * bytes, op.saved, bytes);
        std::memcpy(ustop + r * bytes, op.saved_ustop, bytes);
        std::memcpy(u_bar + r * bytes, arena_.bar_at(op.y), bytes);
    }
    std::memset(ustop_bar, 0, rows * bytes);
    Status shared = status_of(group_[0]);
    shared.tstart = shared.tstop = std::numeric_limits<double>::quiet_NaN();
    shared.tindex = -1;
    gate_.step_adjoint_batch(u, aliased ? u : ustop, u_bar, ustop_bar, StepRows{rows, tstart, tstop}, shared);
    for (std::size_t r = 0; r < rows; ++r) {
        const TapeOp& op = group_[r];
        Vec ybar = arena_.bar_at(op.y);
        std::memcpy(ybar, u_bar + r * bytes, bytes);
        ops::add(arena_.dtype(), n, ustop_bar + r * bytes, op.ustop_is_u() ? ybar : arena_.bar_at(op.x));
    }
}

void AdjointSweep::reverse_space(const TapeOp& op) {  // y = C x (or R x): x_bar += C^T y_bar, y_bar = 0
    const std::size_t bytes = arena_.vector_bytes();
    Vec ybar = arena_.bar_at(op.y);
    Vec tmp = arena_.storage().scratch.data();
    std::memset(tmp, 0, bytes);
    const Status st = status_of(op);
    if (op.kind == TapeOp::Kind::coarsen)
        gate_.coarsen_adjoint(ybar, tmp, st);
    else
        gate_.refine_adjoint(ybar, tmp, st);
    ops::add(arena_.dtype(), arena_.vector_size(), tmp, arena_.bar_at(op.x));
    std::memset(ybar, 0, bytes);
}

void AdjointSweep::reverse_objective(std::uint32_t y, CVec saved, int tindex, bool done, double residual_norm) {
    const std::size_t bytes = arena_.vector_bytes();
    Vec tmp = arena_.storage().scratch.data() + bytes;
    zero_vector(tmp, bytes);
    gate_.objective_adjoint(saved, tmp, f_bar_, objective_status(tindex, done, residual_norm));
    ops::add(arena_.dtype(), arena_.vector_size(), tmp, arena_.bar_at(y));
}

void AdjointSweep::reverse_receive(const TapeOp& op, std::size_t& next_buffer) {
    // The primal value came from op.peer: its bar goes back there.
    const std::size_t bytes = arena_.vector_bytes();
    Vec ybar = arena_.bar_at(op.y);
    Vec buf = arena_.storage().reverse_sends.data() + next_buffer * bytes;
    std::memcpy(buf, ybar, bytes);
    comm_.isend(buf, arena_.vector_size(), arena_.dtype(), op.peer, op.tag + kReverseTag, reverse_reqs_[next_buffer]);
    ++next_buffer;
    std::memset(ybar, 0, bytes);
}

void AdjointSweep::reverse_send(const TapeOp& op) {
    Vec tmp = arena_.storage().scratch.data() + arena_.vector_bytes();
    MPI_Request req = MPI_REQUEST_NULL;
    comm_.irecv(tmp, arena_.vector_size(), arena_.dtype(), op.peer, op.tag + kReverseTag, req);
    comm_.wait(req);
    ops::add(arena_.dtype(), arena_.vector_size(), tmp, arena_.bar_at(op.y));
}

void AdjointSweep::reverse_op(const TapeOp& op, std::size_t& next_buffer) {
    switch (op.kind) {
        case TapeOp::Kind::copy: reverse_copy(op.y, op.x); break;
        case TapeOp::Kind::axpy:  // decode() gives the coded axpys as axpy
        case TapeOp::Kind::axpy_add:
        case TapeOp::Kind::axpy_sub:
        case TapeOp::Kind::axpy_neg: reverse_axpy(op.y, op.x, op.a, op.b); break;
        case TapeOp::Kind::objective: reverse_objective(op.y, op.saved, op.tindex, op.done, op.residual_norm); break;
        case TapeOp::Kind::coarsen:
        case TapeOp::Kind::refine: reverse_space(op); break;
        case TapeOp::Kind::recv: reverse_receive(op, next_buffer); break;
        case TapeOp::Kind::send: reverse_send(op); break;
        default: reverse_step_record(op); break;  // steps and the brackets of grouped steps
    }
}

void AdjointSweep::reverse_step_record(const TapeOp& op) {
    const bool bracket = op.kind == TapeOp::Kind::group_end || op.kind == TapeOp::Kind::group_begin;
    if (!bracket && !in_group_) {  // the commonest record: a step with its parts
        // The objective term the step absorbed (Tape::objective): the point stepped
        // to, with the step's done flag and residual norm.
        if (op.objective_saved != nullptr)
            reverse_objective(op.y, op.objective_saved, op.tindex + 1, op.done, op.residual_norm);
        reverse_after_step(op);
        reverse_step(op);
        if (op.pre_x != TapeOp::kNone) reverse_copy(op.y, op.pre_x);  // the copy the step started from
    } else if (op.kind == TapeOp::Kind::group_end) {  // met first: the group's records follow, last first
        in_group_ = true;
        group_.clear();
    } else if (op.kind == TapeOp::Kind::group_begin) {
        in_group_ = false;
        reverse_group();
    } else {
        group_.push_back(op);  // grouped steps are recorded without parts (Tape::step)
    }
}

void AdjointSweep::begin_replay(const ReplayContext& context) noexcept {
    replay_ = context;
    // What the engine's statuses of one iteration share (fill_status, fill_point_status).
    for (Status* st : {&step_status_, &objective_status_}) {
        st->nlevels = context.nlevels;
        st->iter = context.iter;
        st->ntime = context.ntime;
    }
    objective_status_.level = 0;
    objective_status_.phase = Phase::objective;
    objective_status_.nrefine = context.nrefine;
}

void AdjointSweep::reverse_sweep(const ReplayContext& context) {
    begin_replay(context);
    // Reverse messages: one buffer per received primal message, alive until
    // the end of the sweep (and, after a failure, until the drain).
    const std::size_t nrecv = arena_.tape().receives();
    arena_.storage().reverse_sends.grow(nrecv * arena_.vector_bytes());
    reverse_reqs_.assign(nrecv, MPI_REQUEST_NULL);
    std::size_t next_buffer = 0;
    in_group_ = false;
    arena_.tape().replay_backward([&](const TapeOp& op) { reverse_op(op, next_buffer); });
    for (MPI_Request& r : reverse_reqs_) comm_.wait(r);
}

double AdjointSweep::update_iterate(const Level& g, int iter) {
    // New adjoint iterate = bars of the iteration's input states (stored
    // level-0 points; only C-points in iteration 0, when F-points held no value).
    const std::size_t bytes = arena_.vector_bytes();
    Vec diff = arena_.storage().scratch.data();
    TemporalNorm norm(set_.tnorm);
    g.for_each_stored([&](int i, int slot) {
        if (iter == 0 && !g.is_cpoint(i)) return;
        CVec fresh = arena_.bar_of(g.ua.at(slot));
        Vec kept = ubar_.data() + static_cast<std::size_t>(slot) * bytes;
        if (i > 0) {
            ops::difference(arena_.dtype(), arena_.vector_size(), fresh, kept, diff);
            norm.add(gate_.norm(diff));
        }
        copy_vector(kept, fresh, bytes);
    });
    return norm.reduce(comm_);
}

void AdjointSweep::seed(const Level& g) {
    // The iteration's output states carry the current adjoint iterate. Index 0
    // is never an output of an iteration (init(tstart) stays fixed): leaving
    // it unseeded makes its bar this sweep's d J / d u_0 alone.
    const std::size_t bytes = arena_.vector_bytes();
    arena_.zero_bars();
    g.for_each_stored([&](int i, int slot) {
        if (i >= 1)
            copy_vector(arena_.bar_of(g.ua.at(slot)), ubar_.data() + static_cast<std::size_t>(slot) * bytes, bytes);
    });
}

void AdjointSweep::initial_adjoint(const Level& g, const Status& initial) {
    if (g.ilower != 0) return;
    gate_.init_adjoint(g.t(0), arena_.bar_of(g.ua.at(g.u_slot(0))), initial);
}

void AdjointSweep::top_of_cycle(const ReplayContext& context, int iter, const Status& initial) {
    const Level& fine = (*context.levels)[0];
    finish_objective();
    if (!gradient()) return;
    seed(fine);
    RecordedArena::Recording off(arena_, false);
    reverse_sweep(context);
    initial_adjoint(fine, initial);
    rnorm_ = update_iterate(fine, iter);
    if (iter == 0) arena_.tape().trim();  // later iterations record as much
    if (norms_.size() <= static_cast<std::size_t>(iter)) norms_.resize(static_cast<std::size_t>(iter) + 1, -1.0);
    norms_[static_cast<std::size_t>(iter)] = rnorm_;
    if (iter == 0 && rnorm0_ == -1.0) rnorm0_ = rnorm_ > 0.0 ? rnorm_ : 1.0;
}

void AdjointSweep::after_sequential(const ReplayContext& context, const Status& initial) {
    const Level& fine = (*context.levels)[0];
    // max_levels = 1: the recorded sequential sweep reversed once is the exact
    // discrete adjoint (backpropagation through time).
    finish_objective();
    if (!gradient()) return;
    arena_.zero_bars();
    RecordedArena::Recording off(arena_, false);
    reverse_sweep(context);
    initial_adjoint(fine, initial);
    arena_.tape().clear();
}

}  // namespace pxb
