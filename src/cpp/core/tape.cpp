#include "core/tape.hpp"

#include <stdexcept>

namespace pxb {

using namespace tape_format;

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
    if ((last_parts_ & (kLast | kObjective)) != 0 || ((part & kPost) != 0 && (last_parts_ & kPost) != 0)) return false;
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
    // The sums and differences after a step join its record.
    if (a == 1.0 && (b == 1.0 || b == -1.0)) return sum(y, x, b == 1.0);
    if (a == 0.0 && b == -1.0 && x == y) return put(TapeOp::Kind::axpy_neg, y, x);
    Writer w = begin_record();
    w.put(y);
    w.put(x);
    w.put(a);
    w.put(b);
    w.put(static_cast<std::uint8_t>(TapeOp::Kind::axpy));
    end_record(w);
}

void Tape::sum(std::uint32_t y, std::uint32_t x, bool add) {
    if (x != y && add && (fuse(kPostAdd, y, x) || fuse(kAccumulate, x, y))) return;
    if (x != y && !add && fuse(kPostSub, y, x)) return;
    put(add ? TapeOp::Kind::axpy_add : TapeOp::Kind::axpy_sub, y, x);
}

std::uint8_t Tape::new_norm_code(double residual_norm) {
    if (norms_.size() == 256) throw std::logic_error("pyxbraid internal error: too many residual norms on the tape");
    norms_.push_back(residual_norm);
    last_norm_ = residual_norm;
    last_norm_code_ = static_cast<std::uint8_t>(norms_.size() - 1);
    return last_norm_code_;
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
    values_.save(u);
    if (ustop != nullptr) values_.save(ustop);
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
    last_level_ = st.level;
    last_tindex_ = st.tindex;
    last_done_ = st.done;
    last_code_ = code;
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

void Tape::objective_record(std::uint32_t y, CVec u, const Status& st, std::uint8_t code) {
    Writer w = begin_record();
    w.put(y);
    values_.save(u);
    const std::uint8_t small[2] = {static_cast<std::uint8_t>(st.done), code};
    w.put(small);
    w.put(static_cast<std::int32_t>(st.tindex));
    w.put(static_cast<std::uint8_t>(TapeOp::Kind::objective));
    end_record(w);
}

}  // namespace pxb
