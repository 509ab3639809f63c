/// \file tape.hpp
/// \brief The record of one primal iteration, replayed in reverse by the
///        adjoint (XBraid's action tape). Vectors are named by their offset in
///        the engine's state arena, so each has a bar at the same offset in the
///        bar arena; values the reverse sweep needs (step inputs, objective
///        arguments) are saved in one growing store that is reused every
///        iteration: memory grows with local time points and levels, not with
///        the number of iterations.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/status.hpp"

namespace pxb {

struct TapeOp {
    enum class Kind : std::uint8_t { copy, axpy, step, recv, send, objective };
    Kind kind = Kind::copy;
    bool ustop_is_u = false;   ///< step: ustop aliased the stepped vector
    std::size_t y = 0;         ///< destination / stepped vector / received slot / sent buffer / objective state
    std::size_t x = 0;         ///< copy and axpy source; step: ustop
    double a = 0.0, b = 0.0;   ///< axpy: y <- a x + b y
    std::size_t saved = 0;     ///< value store offset: step (u, then ustop), objective (u)
    int peer = -1, tag = 0;    ///< recv / send
    Status st;                 ///< step / objective: the status of the primal call
};

class Tape {
public:
    bool recording = false;

    void clear() noexcept {
        ops_.clear();
        used_ = 0;
    }
    void push(const TapeOp& op) { ops_.push_back(op); }
    /// Save n doubles; returns their offset in the store.
    std::size_t save(const double* v, std::size_t n) {
        if (used_ + n > values_.size()) values_.resize(std::max(values_.size() * 2, used_ + n));
        std::memcpy(values_.data() + used_, v, n * sizeof(double));
        const std::size_t at = used_;
        used_ += n;
        return at;
    }
    const double* value(std::size_t offset) const noexcept { return values_.data() + offset; }
    const std::vector<TapeOp>& ops() const noexcept { return ops_; }
    std::size_t bytes() const noexcept { return values_.capacity() * sizeof(double) + ops_.capacity() * sizeof(TapeOp); }

private:
    std::vector<TapeOp> ops_;
    std::vector<double> values_;
    std::size_t used_ = 0;
};

}  // namespace pxb
