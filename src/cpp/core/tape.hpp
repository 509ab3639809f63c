/// \file tape.hpp
/// \brief The record of one primal iteration, replayed in reverse by the
///        adjoint (XBraid's action tape).
///
/// Records are compact, of a few fixed sizes, packed into one byte stream:
/// vectors are named by their index in the engine's state arena (each has its
/// bar at the same index in the bar arena), saved values by their index in the
/// value store, a step's status by what the engine cannot recompute (level,
/// index, phase, done, the residual norm of the moment as a one-byte code),
/// the usual axpy coefficients by the record's kind. Each record ends with its
/// kind, so the stream is walked backwards. Values the reverse sweep needs
/// (step inputs, objective arguments) live in chunks that are reused every
/// iteration: memory grows with local time points and levels, not with the
/// number of iterations.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/status.hpp"
#include "core/storage.hpp"

namespace pxb {

/// One recorded operation, as the reverse sweep sees it.
struct TapeOp {
    enum class Kind : std::uint8_t {
        copy,          ///< y <- x
        axpy,          ///< y <- a x + b y (a, b stored)
        axpy_add,      ///< y <- x + y
        axpy_sub,      ///< y <- x - y
        axpy_neg,      ///< y <- -y (x = y)
        step,          ///< a step whose ustop was another vector (both inputs saved)
        step_aliased,  ///< a step whose ustop was the stepped vector, or whose adjoint ignores ustop
        recv,
        send,
        objective,
        group_begin,  ///< the steps up to group_end were one step_batch call (independent rows)
        group_end,
        coarsen,  ///< y <- C x, the app's coarsen (linear); level: the fine level, tindex: the fine index
        refine,   ///< y <- R x, the app's refine (linear); level and tindex as for coarsen
    };
    Kind kind = Kind::copy;
    std::uint32_t y =
        0;  ///< vector index: destination / stepped vector / received slot / sent buffer / objective state
    std::uint32_t x = 0;         ///< vector index: copy and axpy source; step: ustop
    double a = 0.0, b = 0.0;     ///< axpy: y <- a x + b y
    CVec saved = nullptr;        ///< saved input: step (u), objective (u)
    CVec saved_ustop = nullptr;  ///< step: saved ustop (== saved for step_aliased)
    int peer = -1, tag = 0;      ///< recv / send
    // step and objective: the status of the primal call, without what the
    // engine recomputes (times, iteration, sizes)
    std::uint8_t level = 0;
    std::uint8_t phase = 0;
    bool done = false;
    std::int32_t tindex = 0;
    double residual_norm = -1.0;

    bool ustop_is_u() const noexcept { return kind == Kind::step_aliased; }
};

class Tape {
public:
    /// The tape saves values into `values` (shared storage, see storage.hpp).
    explicit Tape(SavedValues& values) : values_(values) {}

    void clear() noexcept {
        used_ = 0;
        values_.clear();
        norms_.clear();
        receives_ = 0;
    }
    /// Call once the first iteration is recorded: later ones record the same
    /// amount, so the stream keeps just the room it needs.
    void trim() {
        stream_.resize(used_);
        stream_.shrink_to_fit();
    }

    void copy(std::uint32_t y, std::uint32_t x) { put(TapeOp::Kind::copy, y, x); }
    void axpy(std::uint32_t y, std::uint32_t x, double a, double b);
    /// u: the step's input (saved); ustop: nullptr when it was u itself or when
    /// the app's adjoint does not use it (not saved).
    void step(std::uint32_t y, std::uint32_t x, CVec u, CVec ustop, const Status& st);
    void objective(std::uint32_t y, CVec u, const Status& st);
    /// y <- coarsen(x) (or refine(x)): the linear map's adjoint needs no saved value.
    void space(bool coarsen, std::uint32_t y, std::uint32_t x, const Status& st);
    /// Brackets the step records of one grouped call (a kind byte each).
    void group(bool begin) {
        append(static_cast<std::uint8_t>(begin ? TapeOp::Kind::group_begin : TapeOp::Kind::group_end));
    }
    void send(std::uint32_t y, int peer, int tag) { put_message(TapeOp::Kind::send, y, peer, tag); }
    void recv(std::uint32_t y, int peer, int tag) {
        put_message(TapeOp::Kind::recv, y, peer, tag);
        ++receives_;
    }

    /// Call f(op) for every record, the last first.
    template <class F>
    void replay_backward(F&& f) const {
        std::size_t end = used_;
        while (end > 0) {
            const auto kind = static_cast<TapeOp::Kind>(stream_[end - 1]);
            const std::size_t begin = end - record_size(kind);
            f(decode(kind, stream_.data() + begin));
            end = begin;
        }
    }
    /// Receives recorded this iteration (the reverse sweep sends one message per receive).
    std::size_t receives() const noexcept { return receives_; }
    std::size_t bytes() const noexcept { return values_.bytes() + stream_.capacity(); }

private:
    static std::size_t record_size(TapeOp::Kind kind) noexcept;
    TapeOp decode(TapeOp::Kind kind, const std::uint8_t* p) const noexcept;
    void decode_step(const std::uint8_t*& p, TapeOp& op) const noexcept;
    void decode_coded_axpy(const std::uint8_t*& p, TapeOp& op) const noexcept;
    void put(TapeOp::Kind kind, std::uint32_t y, std::uint32_t x);
    void put_message(TapeOp::Kind kind, std::uint32_t y, int peer, int tag);
    void put_status(const Status& st);
    std::uint8_t norm_code(double residual_norm);
    template <class T>
    void append(const T& value) {
        // The stream's bytes up to used_ are records; the rest is room, kept
        // across iterations (clear() only rewinds), so appending is a copy.
        if (used_ + sizeof(T) > stream_.size()) stream_.resize(std::max<std::size_t>(2 * stream_.size(), 4096));
        std::memcpy(stream_.data() + used_, &value, sizeof(T));
        used_ += sizeof(T);
    }

    std::vector<std::uint8_t> stream_;
    std::size_t used_ = 0;  ///< bytes of stream_ holding records
    SavedValues& values_;
    std::vector<double> norms_;  ///< residual norms the recorded statuses had (coded by index)
    std::size_t receives_ = 0;
};

}  // namespace pxb
