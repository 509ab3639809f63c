#include "core/tape.hpp"

#include <stdexcept>

namespace pxb {

namespace {
template <class T>
T read(const std::uint8_t*& p) noexcept {
    T value;
    std::memcpy(&value, p, sizeof(T));
    p += sizeof(T);
    return value;
}

// Layouts (each record ends with its kind byte):
//   copy, axpy_add/sub/neg:  y u32, x u32
//   axpy:                    y u32, x u32, a f64, b f64
//   recv / send:             y u32, peer i32, tag i32
//   step:                    y u32, x u32, saved u32, saved ustop u32, status
//   step_aliased:            y u32, x u32, saved u32, status
//   step_fused:              y u32, x u32, saved u32, [saved ustop u32], status, [post x u32], [store u32], parts u8
//   objective:               y u32, saved u32, point
//   group_begin / group_end: nothing but the kind
//   coarsen / refine:        y u32, x u32, status
// status: level u8, phase u8, done u8, residual norm code u8, tindex i32
// point (level 0, phase objective): done u8, residual norm code u8, tindex i32
constexpr std::size_t kStatus = 4 + sizeof(std::int32_t);
constexpr std::size_t kPoint = 2 + sizeof(std::int32_t);

// The parts of a fused step (its byte before the kind).
// In the primal's order: pre, the step, post, then store or accumulate.
constexpr std::uint8_t kUstop = 1;       // its ustop was saved (a `step`, not a `step_aliased`)
constexpr std::uint8_t kPostAdd = 2;     // then y <- x + y (the FAS correction)
constexpr std::uint8_t kPostSub = 4;     // then y <- x - y (a residual)
constexpr std::uint8_t kStore = 8;       // then z <- y (storing the stepped value)
constexpr std::uint8_t kPre = 16;        // before it y <- x (the value it steps from)
constexpr std::uint8_t kAccumulate = 32;  // then z <- y + z (a coarse right-hand side)
constexpr std::uint8_t kPost = kPostAdd | kPostSub;
constexpr std::uint8_t kLast = kStore | kAccumulate;  // one of them, in one slot
}  // namespace

std::size_t Tape::record_size(TapeOp::Kind kind) noexcept {
    switch (kind) {
        case TapeOp::Kind::copy:
        case TapeOp::Kind::axpy_add:
        case TapeOp::Kind::axpy_sub:
        case TapeOp::Kind::axpy_neg: return 8 + 1;
        case TapeOp::Kind::axpy: return 8 + 16 + 1;
        case TapeOp::Kind::recv:
        case TapeOp::Kind::send: return 12 + 1;
        case TapeOp::Kind::step: return 16 + kStatus + 1;
        case TapeOp::Kind::step_aliased: return 12 + kStatus + 1;
        case TapeOp::Kind::objective: return 8 + kPoint + 1;
        case TapeOp::Kind::group_begin:
        case TapeOp::Kind::group_end: return 1;
        case TapeOp::Kind::coarsen:
        case TapeOp::Kind::refine: return 8 + kStatus + 1;
        case TapeOp::Kind::step_fused: break;  // fused_size()
    }
    return 1;
}

std::size_t Tape::fused_size(std::uint8_t parts) noexcept {
    return 12 + kStatus + 2 + ((parts & kUstop) ? 4 : 0) + ((parts & kPre) ? 4 : 0) + ((parts & kPost) ? 4 : 0) +
           ((parts & kLast) ? 4 : 0);
}

void Tape::next_block() {
    if (!blocks_.empty()) blocks_[current_].used = static_cast<std::size_t>(pos_ - blocks_[current_].bytes.get());
    if (!blocks_.empty() && current_ + 1 < blocks_.size()) {  // a block of an earlier iteration
        ++current_;
        pos_ = blocks_[current_].bytes.get();
        limit_ = pos_ + blocks_[current_].size;
        return;
    }
    // Each new block an eighth of the stream so far: few blocks, and at most
    // an eighth of the stream unused. Not zeroed: only written bytes are read.
    const std::size_t size = std::max<std::size_t>(4096, stream_bytes_ / 8);
    Block b;
    b.bytes.reset(new std::uint8_t[size]);
    b.size = size;
    blocks_.push_back(std::move(b));
    stream_bytes_ += size;
    current_ = blocks_.size() - 1;
    pos_ = blocks_[current_].bytes.get();
    limit_ = pos_ + size;
}

void Tape::trim() {
    if (blocks_.empty()) return;
    for (std::size_t b = current_ + 1; b < blocks_.size(); ++b) stream_bytes_ -= blocks_[b].size;
    blocks_.resize(current_ + 1);
}

bool Tape::fuse(std::uint8_t part, std::uint32_t stepped, std::uint32_t x) {
    // Only right after the step record, for the vector it stepped, each part
    // once and the correction before the store (the order the reverse undoes).
    if (last_step_ != records_ || stepped != last_y_) return false;
    if ((last_parts_ & kLast) != 0 || ((part & kPost) != 0 && (last_parts_ & kPost) != 0)) return false;
    Writer w{pos_ - (fused_ ? 2 : 1)};  // over its kind (and parts): rewritten below
    w.put(x);
    last_parts_ = static_cast<std::uint8_t>(last_parts_ | part);
    w.put(last_parts_);
    w.put(static_cast<std::uint8_t>(TapeOp::Kind::step_fused));
    end_record(w);
    fused_ = true;
    return true;
}

void Tape::copy(std::uint32_t y, std::uint32_t x) {
    if (fuse(kStore, x, y)) return;
    put(TapeOp::Kind::copy, y, x);
    last_copy_ = records_;  // a step of y next takes it in (Tape::step)
    last_copy_y_ = y;
    last_copy_x_ = x;
}

void Tape::put(TapeOp::Kind kind, std::uint32_t y, std::uint32_t x) {
    Writer w = begin_record();
    w.put(y);
    w.put(x);
    w.put(static_cast<std::uint8_t>(kind));
    end_record(w);
}

void Tape::put_message(TapeOp::Kind kind, std::uint32_t y, int peer, int tag) {
    Writer w = begin_record();
    w.put(y);
    w.put(static_cast<std::int32_t>(peer));
    w.put(static_cast<std::int32_t>(tag));
    w.put(static_cast<std::uint8_t>(kind));
    end_record(w);
}

void Tape::axpy(std::uint32_t y, std::uint32_t x, double a, double b) {
    // The engine's axpys: y = x + y (corrections, FAS right-hand sides),
    // r = f - r (FAS residual), e = u - e (interpolation error), r = -r.
    if (a == 1.0 && b == 1.0 && x != y) {
        if (!fuse(kPostAdd, y, x) && !fuse(kAccumulate, x, y)) put(TapeOp::Kind::axpy_add, y, x);
        return;
    }
    if (a == 1.0 && b == -1.0 && x != y) {
        if (!fuse(kPostSub, y, x)) put(TapeOp::Kind::axpy_sub, y, x);
        return;
    }
    if (a == 1.0 && b == 1.0) return put(TapeOp::Kind::axpy_add, y, x);
    if (a == 1.0 && b == -1.0) return put(TapeOp::Kind::axpy_sub, y, x);
    if (a == 0.0 && b == -1.0 && x == y) return put(TapeOp::Kind::axpy_neg, y, x);
    Writer w = begin_record();
    w.put(y);
    w.put(x);
    w.put(a);
    w.put(b);
    w.put(static_cast<std::uint8_t>(TapeOp::Kind::axpy));
    end_record(w);
}

std::uint8_t Tape::norm_code(double residual_norm) {
    // The residual norm changes a few times per iteration: a code into norms_.
    if (norms_.empty() || norms_.back() != residual_norm) {
        if (norms_.size() == 256)
            throw std::logic_error("pyxbraid internal error: too many residual norms on the tape");
        norms_.push_back(residual_norm);
    }
    return static_cast<std::uint8_t>(norms_.size() - 1);
}

void Tape::put_status(Writer& w, const Status& st, std::uint8_t norm) noexcept {
    const std::uint8_t small[4] = {static_cast<std::uint8_t>(st.level), static_cast<std::uint8_t>(st.phase),
                                   static_cast<std::uint8_t>(st.done), norm};
    w.put(small);
    w.put(static_cast<std::int32_t>(st.tindex));
}

void Tape::step(std::uint32_t y, std::uint32_t x, CVec u, CVec ustop, const Status& st) {
    const std::uint8_t code = norm_code(st.residual_norm);  // may throw: before the record begins
    // A grouped step's reverse is part of one batched call: it stays a plain record.
    const bool pre = !grouping_ && last_copy_ == records_ && last_copy_y_ == y;
    if (pre) pos_ -= record_size(TapeOp::Kind::copy);  // the copy into y, just written: taken in
    last_parts_ = static_cast<std::uint8_t>((ustop ? kUstop : 0) | (pre ? kPre : 0));
    Writer w = begin_record();
    w.put(y);
    w.put(x);
    w.put(values_.save(u));
    if (ustop != nullptr) w.put(values_.save(ustop));
    put_status(w, st, code);
    if (pre) {
        w.put(last_copy_x_);
        w.put(last_parts_);
        w.put(static_cast<std::uint8_t>(TapeOp::Kind::step_fused));
    } else {
        w.put(static_cast<std::uint8_t>(ustop ? TapeOp::Kind::step : TapeOp::Kind::step_aliased));
    }
    end_record(w);
    last_step_ = grouping_ ? kNoRecord : records_;
    last_y_ = y;
    fused_ = pre;
}

void Tape::space(bool coarsen, std::uint32_t y, std::uint32_t x, const Status& st) {
    const std::uint8_t code = norm_code(st.residual_norm);
    Writer w = begin_record();
    w.put(y);
    w.put(x);
    put_status(w, st, code);
    w.put(static_cast<std::uint8_t>(coarsen ? TapeOp::Kind::coarsen : TapeOp::Kind::refine));
    end_record(w);
}

void Tape::objective(std::uint32_t y, CVec u, const Status& st) {
    const std::uint8_t code = norm_code(st.residual_norm);
    Writer w = begin_record();
    w.put(y);
    w.put(values_.save(u));
    const std::uint8_t small[2] = {static_cast<std::uint8_t>(st.done), code};
    w.put(small);
    w.put(static_cast<std::int32_t>(st.tindex));
    w.put(static_cast<std::uint8_t>(TapeOp::Kind::objective));
    end_record(w);
}

namespace {
void read_status(const std::uint8_t*& p, TapeOp& op, const std::vector<double>& norms) noexcept {
    op.level = p[0];
    op.phase = p[1];
    op.done = p[2] != 0;
    op.residual_norm = norms[p[3]];
    p += 4;
    op.tindex = read<std::int32_t>(p);
}
}  // namespace

void Tape::decode_coded_axpy(const std::uint8_t*& p, TapeOp& op) const noexcept {
    op.x = read<std::uint32_t>(p);
    op.a = op.kind == TapeOp::Kind::axpy_neg ? 0.0 : 1.0;
    op.b = op.kind == TapeOp::Kind::axpy_add ? 1.0 : -1.0;
    op.kind = TapeOp::Kind::axpy;
}

void Tape::decode_step(const std::uint8_t*& p, TapeOp& op) const noexcept {
    op.x = read<std::uint32_t>(p);
    op.saved = values_.at(read<std::uint32_t>(p));
    op.saved_ustop = op.kind == TapeOp::Kind::step ? values_.at(read<std::uint32_t>(p)) : op.saved;
    read_status(p, op, norms_);
}

void Tape::decode_fused(const std::uint8_t*& p, std::uint8_t parts, TapeOp& op) const noexcept {
    op.kind = (parts & kUstop) != 0 ? TapeOp::Kind::step : TapeOp::Kind::step_aliased;
    decode_step(p, op);
    if ((parts & kPre) != 0) op.pre_x = read<std::uint32_t>(p);
    if ((parts & kPost) != 0) {
        op.post_x = read<std::uint32_t>(p);
        op.post_b = (parts & kPostAdd) != 0 ? 1.0 : -1.0;
    }
    if ((parts & kStore) != 0) op.store = read<std::uint32_t>(p);
    if ((parts & kAccumulate) != 0) op.accumulate = read<std::uint32_t>(p);
}

TapeOp Tape::decode(TapeOp::Kind kind, const std::uint8_t* p, const std::uint8_t* end) const noexcept {
    TapeOp op;
    op.kind = kind;
    if (kind == TapeOp::Kind::group_begin || kind == TapeOp::Kind::group_end) return op;
    op.y = read<std::uint32_t>(p);
    switch (kind) {
        case TapeOp::Kind::copy: op.x = read<std::uint32_t>(p); break;
        case TapeOp::Kind::axpy_add:
        case TapeOp::Kind::axpy_sub:
        case TapeOp::Kind::axpy_neg: decode_coded_axpy(p, op); break;
        case TapeOp::Kind::axpy:
            op.x = read<std::uint32_t>(p);
            op.a = read<double>(p);
            op.b = read<double>(p);
            break;
        case TapeOp::Kind::recv:
        case TapeOp::Kind::send:
            op.peer = read<std::int32_t>(p);
            op.tag = read<std::int32_t>(p);
            break;
        case TapeOp::Kind::step:
        case TapeOp::Kind::step_aliased: decode_step(p, op); break;
        case TapeOp::Kind::step_fused: decode_fused(p, end[-2], op); break;
        case TapeOp::Kind::coarsen:
        case TapeOp::Kind::refine:
            op.x = read<std::uint32_t>(p);
            read_status(p, op, norms_);
            break;
        case TapeOp::Kind::objective:
            op.saved = values_.at(read<std::uint32_t>(p));
            op.phase = static_cast<std::uint8_t>(Phase::objective);
            op.done = p[0] != 0;
            op.residual_norm = norms_[p[1]];
            p += 2;
            op.tindex = read<std::int32_t>(p);
            break;
        default: break;  // group_begin, group_end: nothing but the kind
    }
    return op;
}

}  // namespace pxb
