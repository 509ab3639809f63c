// The state arena and the vector primitives every algorithm file goes through.
// When the tape records (adjoint iterations), each primitive also appends its
// action to the tape, so the reverse sweep replays exactly what was done.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <sstream>

#include "core/engine.hpp"
#include "core/errors.hpp"

namespace pxb {

namespace {
/// a * b, or nullopt-like failure when it does not fit a size_t.
bool multiply(std::size_t a, std::size_t b, std::size_t& out) noexcept { return !__builtin_mul_overflow(a, b, &out); }

/// Memory this process can still get: Linux's MemAvailable (free memory plus
/// what the kernel can reclaim) plus free swap, else the physical memory.
/// Asking for more gets the process killed by the kernel, not an exception.
std::size_t available_memory_bytes() noexcept {
    std::size_t available = 0, swap = 0;
    if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
        char key[64];
        unsigned long long kib = 0;
        while (std::fscanf(f, "%63s %llu kB\n", key, &kib) == 2) {
            if (std::strcmp(key, "MemAvailable:") == 0) available = static_cast<std::size_t>(kib) * 1024;
            if (std::strcmp(key, "SwapFree:") == 0) swap = static_cast<std::size_t>(kib) * 1024;
        }
        std::fclose(f);
    }
    if (available > 0) return available + swap;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) : 0;
}
}  // namespace

void Engine::check_storage_size(std::size_t vectors) const {
    // Checked before anything is allocated: a size that wraps around (or that no
    // machine has) must be an error naming the problem, not a crash.
    std::size_t doubles = 0, bytes = 0;
    const bool fits = multiply(vectors, n_, doubles) && multiply(doubles, sizeof(double), bytes);
    const std::size_t available = available_memory_bytes();
    if (fits && (available == 0 || bytes <= available)) return;
    std::ostringstream msg;
    msg << "the solver needs " << vectors << " state vectors of " << n_ << " float64 values on rank " << comm_.rank()
        << " (ntime=" << ntime_ << ", " << nlevels() << " level(s)"
        << (opt_.adjoint ? ", with the adjoint's mirror" : "") << "): ";
    if (!fits)
        msg << "the size overflows 64-bit arithmetic";
    else
        msg << double(bytes) / double(1ULL << 30) << " GiB, more than the "
            << double(available) / double(1ULL << 30) << " GiB of memory available on this machine";
    msg << "; use fewer time points per rank (more ranks), storage=-1, or a smaller state";
    throw StorageSizeError(msg.str());
}

void Engine::allocate_arena() {
    // Sizes in vectors of n_ doubles (small integers), multiplied by n_ only
    // after the check.
    std::size_t vectors = 4;  // work, work2, work3, va send buffer
    for (std::size_t l = 0; l < levels_.size(); ++l) {
        const Level& g = levels_[l];
        const std::size_t nu = static_cast<std::size_t>(g.stores_all ? g.npoints() : g.ncpoints);
        vectors += (nu + 1) + 1;  // ua (+ghost), ghost send buffer
        if (l > 0) vectors += 2 * (static_cast<std::size_t>(g.npoints()) + 1);
    }
    const std::size_t arena_vectors = vectors;
    const bool adjoint = opt_.adjoint && !opt_.objective_only;
    const std::size_t level0_stored =
        static_cast<std::size_t>(levels_[0].stores_all ? levels_[0].npoints() : levels_[0].ncpoints);
    std::size_t needed = arena_vectors + static_cast<std::size_t>(levels_[0].npoints());  // + the solution copy
    if (adjoint) needed += arena_vectors + 2 + level0_stored;                             // bar, scratch, ubar
    check_storage_size(needed);
    const std::size_t total = arena_vectors * n_;
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
    if (adjoint) {
        bar_.assign(total, 0.0);
        scratch_.assign(2 * n_, 0.0);
        ubar_.assign(level0_stored * n_, 0.0);
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
    op.saved_ustop = op.ustop_is_u ? op.saved : tape_.save(ustop, n_);
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
