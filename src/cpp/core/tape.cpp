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
//   objective:               y u32, saved u32, point
//   group_begin / group_end: nothing but the kind
//   coarsen / refine:        y u32, x u32, status
// status: level u8, phase u8, done u8, residual norm code u8, tindex i32
// point (level 0, phase objective): done u8, residual norm code u8, tindex i32
constexpr std::size_t kStatus = 4 + sizeof(std::int32_t);
constexpr std::size_t kPoint = 2 + sizeof(std::int32_t);
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
    }
    return 1;
}

void Tape::put(TapeOp::Kind kind, std::uint32_t y, std::uint32_t x) {
    append(y);
    append(x);
    append(static_cast<std::uint8_t>(kind));
}

void Tape::put_message(TapeOp::Kind kind, std::uint32_t y, int peer, int tag) {
    append(y);
    append(static_cast<std::int32_t>(peer));
    append(static_cast<std::int32_t>(tag));
    append(static_cast<std::uint8_t>(kind));
}

void Tape::axpy(std::uint32_t y, std::uint32_t x, double a, double b) {
    // The engine's axpys: y = x + y (corrections, FAS right-hand sides),
    // r = f - r (FAS residual), e = u - e (interpolation error), r = -r.
    if (a == 1.0 && b == 1.0) return put(TapeOp::Kind::axpy_add, y, x);
    if (a == 1.0 && b == -1.0) return put(TapeOp::Kind::axpy_sub, y, x);
    if (a == 0.0 && b == -1.0 && x == y) return put(TapeOp::Kind::axpy_neg, y, x);
    append(y);
    append(x);
    append(a);
    append(b);
    append(static_cast<std::uint8_t>(TapeOp::Kind::axpy));
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

void Tape::put_status(const Status& st) {
    const std::uint8_t small[4] = {static_cast<std::uint8_t>(st.level), static_cast<std::uint8_t>(st.phase),
                                   static_cast<std::uint8_t>(st.done), norm_code(st.residual_norm)};
    append(small);
    append(static_cast<std::int32_t>(st.tindex));
}

void Tape::step(std::uint32_t y, std::uint32_t x, CVec u, CVec ustop, const Status& st) {
    append(y);
    append(x);
    append(values_.save(u));
    if (ustop != nullptr) append(values_.save(ustop));
    put_status(st);
    append(static_cast<std::uint8_t>(ustop ? TapeOp::Kind::step : TapeOp::Kind::step_aliased));
}

void Tape::space(bool coarsen, std::uint32_t y, std::uint32_t x, const Status& st) {
    append(y);
    append(x);
    put_status(st);
    append(static_cast<std::uint8_t>(coarsen ? TapeOp::Kind::coarsen : TapeOp::Kind::refine));
}

void Tape::objective(std::uint32_t y, CVec u, const Status& st) {
    append(y);
    append(values_.save(u));
    const std::uint8_t small[2] = {static_cast<std::uint8_t>(st.done), norm_code(st.residual_norm)};
    append(small);
    append(static_cast<std::int32_t>(st.tindex));
    append(static_cast<std::uint8_t>(TapeOp::Kind::objective));
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

TapeOp Tape::decode(TapeOp::Kind kind, const std::uint8_t* p) const noexcept {
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
