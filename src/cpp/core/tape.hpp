/// \file tape.hpp
/// \brief The record of one primal iteration, replayed in reverse by the
///        adjoint (XBraid's action tape). Vectors are named by their offset in
///        the engine's state arena, so each has a bar at the same offset in the
///        bar arena; values the reverse sweep needs (step inputs, objective
///        arguments) are saved in chunks that are reused every iteration:
///        memory grows with local time points and levels, not with the number
///        of iterations.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/status.hpp"
#include "core/storage.hpp"

namespace pxb {

struct TapeOp {
    enum class Kind : std::uint8_t { copy, axpy, step, recv, send, objective };
    Kind kind = Kind::copy;
    bool ustop_is_u = false;     ///< step: ustop aliased the stepped vector
    std::size_t y = 0;           ///< destination / stepped vector / received slot / sent buffer / objective state
    std::size_t x = 0;           ///< copy and axpy source; step: ustop
    double a = 0.0, b = 0.0;     ///< axpy: y <- a x + b y
    CVec saved = nullptr;        ///< saved input: step (u), objective (u)
    CVec saved_ustop = nullptr;  ///< step: saved ustop (== saved when ustop_is_u)
    int peer = -1, tag = 0;      ///< recv / send
    Status st;                   ///< step / objective: the status of the primal call
};

class Tape {
public:
    bool recording = false;

    /// The tape saves values into `values` (shared storage, see storage.hpp).
    explicit Tape(SavedValues& values) : values_(values) {}

    void clear() noexcept {
        ops_.clear();
        values_.clear();
    }
    void push(const TapeOp& op) { ops_.push_back(op); }
    /// Save `bytes` bytes; the pointer stays valid until the storage is destroyed.
    CVec save(CVec v, std::size_t bytes) { return values_.save(v, bytes); }
    const std::vector<TapeOp>& ops() const noexcept { return ops_; }
    std::size_t bytes() const noexcept { return values_.bytes() + ops_.capacity() * sizeof(TapeOp); }

private:
    std::vector<TapeOp> ops_;
    SavedValues& values_;
};

}  // namespace pxb
