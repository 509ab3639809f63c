// The state arena and the vector primitives every algorithm file goes through.
// When the tape records (adjoint iterations), each primitive also appends its
// action to the tape, so the reverse sweep replays exactly what was done.
#include <cstring>

#include "core/engine.hpp"

namespace pxb {

void Engine::allocate_arena() {
    std::size_t total = 4 * n_;  // work, work2, work3, va send buffer
    for (std::size_t l = 0; l < levels_.size(); ++l) {
        const Level& g = levels_[l];
        const int nu = g.stores_all ? g.npoints() : g.ncpoints;
        total += VectorArray::doubles(nu, n_) + n_;  // ua (+ghost), ghost send buffer
        if (l > 0) total += 2 * VectorArray::doubles(g.npoints(), n_);
    }
    arena_.assign(total, 0.0);
    double* next = arena_.data();
    auto take = [&](std::size_t count) {
        double* p = next;
        next += count;
        return p;
    };
    work_ = take(n_);
    work2_ = take(n_);
    work3_ = take(n_);
    va_send_buf_ = take(n_);
    for (std::size_t l = 0; l < levels_.size(); ++l) {
        Level& g = levels_[l];
        const int np = g.npoints();
        const int nu = g.stores_all ? np : g.ncpoints;
        g.ua.bind(take(VectorArray::doubles(nu, n_)), nu, n_);
        g.ua_set.assign(static_cast<std::size_t>(nu), 0);
        pending_[l].send_buf = take(n_);
        if (l > 0) {
            g.va.bind(take(VectorArray::doubles(np, n_)), np, n_);
            g.fa.bind(take(VectorArray::doubles(np, n_)), np, n_);
        }
    }
    if (opt_.adjoint && !opt_.objective_only) {
        bar_.assign(total, 0.0);
        scratch_.assign(2 * n_, 0.0);
        const Level& g = levels_[0];
        ubar_.assign(static_cast<std::size_t>(g.stores_all ? g.npoints() : g.ncpoints) * n_, 0.0);
    }
}

void Engine::vcopy(double* dst, const double* src) {
    if (dst == src) return;
    std::memcpy(dst, src, n_ * sizeof(double));
    if (tape_.recording) {
        TapeOp op;
        op.kind = TapeOp::Kind::copy;
        op.y = offset_of(dst);
        op.x = offset_of(src);
        tape_.push(op);
    }
}

void Engine::vaxpy(double a, const double* x, double b, double* y) {
    for (std::size_t q = 0; q < n_; ++q) y[q] = a * x[q] + b * y[q];
    if (tape_.recording) {
        TapeOp op;
        op.kind = TapeOp::Kind::axpy;
        op.y = offset_of(y);
        op.x = offset_of(x);
        op.a = a;
        op.b = b;
        tape_.push(op);
    }
}

void Engine::vsend(const double* v, double* buf, int dest, int tag, MPI_Request& req) {
    vcopy(buf, v);
    comm_.isend(buf, n_, dest, tag, req);
    if (tape_.recording) {
        TapeOp op;
        op.kind = TapeOp::Kind::send;
        op.y = offset_of(buf);
        op.peer = dest;
        op.tag = tag;
        tape_.push(op);
    }
}

void Engine::vreceived(double* slot, int source, int tag) {
    if (tape_.recording) {
        TapeOp op;
        op.kind = TapeOp::Kind::recv;
        op.y = offset_of(slot);
        op.peer = source;
        op.tag = tag;
        tape_.push(op);
    }
}

void Engine::record_step(const double* u, const double* ustop) {
    // The reverse sweep needs the step's inputs: save u and (when distinct) ustop.
    TapeOp op;
    op.kind = TapeOp::Kind::step;
    op.y = offset_of(u);
    op.x = offset_of(ustop);
    op.ustop_is_u = ustop == u;
    op.saved = tape_.save(u, n_);
    if (!op.ustop_is_u) tape_.save(ustop, n_);
    op.st = status_;
    tape_.push(op);
}

Status Engine::point_status(int index, Phase phase, bool done) const {
    Status st;
    st.tstart = st.tstop = levels_[0].t(index);
    st.tindex = index;
    st.level = 0;
    st.nlevels = nlevels();
    st.iter = iter_;
    st.done = done;
    st.phase = phase;
    st.residual_norm = current_rnorm_;
    st.ntime = ntime_;
    return st;
}

void Engine::evaluate_objective(int index, const double* u) {
    const double t = levels_[0].t(index);
    if (t < tstart_obj_ || t > tstop_obj_) return;  // closed window, as XBraid
    const Status st = point_status(index, Phase::objective, done_);
    local_objective_ += gate_.objective(u, st);
    if (tape_.recording) {
        TapeOp op;
        op.kind = TapeOp::Kind::objective;
        op.y = offset_of(u);
        op.saved = tape_.save(u, n_);
        op.st = st;
        tape_.push(op);
    }
}

std::size_t Engine::adjoint_bytes() const {
    return bar_.capacity() * sizeof(double) + tape_.bytes() + ubar_.capacity() * sizeof(double) +
           rev_bufs_.capacity() * sizeof(double);
}

}  // namespace pxb
