/// \file tape.hpp
/// \brief The record of one primal iteration, replayed in reverse by the
///        adjoint (XBraid's action tape).
///
/// Records are compact, of a few fixed sizes, packed into one byte stream:
/// vectors are named by their index in the engine's state arena (each has its
/// bar at the same index in the bar arena), saved values not at all (the
/// reverse sweep reads them back last first, as it meets the records), a
/// step's status by what the engine cannot recompute (level,
/// index, phase, done, the residual norm of the moment as a one-byte code),
/// the usual axpy coefficients by the record's kind. Each record ends with its
/// kind, so the stream is walked backwards. A step record absorbs what the
/// engine does to the stepped vector right after the step (the FAS correction
/// or residual axpy, the copy that stores it): one record per step call
/// instead of two or three, decoded once in the reverse sweep. The stream
/// lives in blocks that never move (appending never copies what was
/// recorded). Values the reverse sweep needs (step inputs, objective
/// arguments) live in chunks that are reused every iteration: memory grows
/// with local time points and levels, not with the number of iterations.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "core/status.hpp"
#include "core/storage.hpp"
#include "core/tape_format.hpp"

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
        coarsen,     ///< y <- C x, the app's coarsen (linear); level: the fine level, tindex: the fine index
        refine,      ///< y <- R x, the app's refine (linear); level and tindex as for coarsen
        step_fused,  ///< in the stream only: a step with what followed it (decoded as step / step_aliased)
    };
    static constexpr std::uint32_t kNone = 0xffffffffu;  ///< no vector
    // The fields are ordered by their initial value (zeros, then kNone), so
    // that the one TapeOp the reverse sweep decodes per record starts with a
    // few wide stores instead of one per field.
    Kind kind = Kind::copy;
    // step and objective: the status of the primal call, without what the
    // engine recomputes (times, iteration, sizes)
    std::uint8_t level = 0;
    std::uint8_t phase = 0;
    bool done = false;
    std::uint32_t y =
        0;  ///< vector index: destination / stepped vector / received slot / sent buffer / objective state
    std::uint32_t x = 0;  ///< vector index: copy and axpy source; step: ustop
    std::int32_t tindex = 0;
    double a = 0.0, b = 0.0;         ///< axpy: y <- a x + b y
    CVec saved = nullptr;            ///< saved input: step (u), objective (u)
    CVec saved_ustop = nullptr;      ///< step: saved ustop (== saved for step_aliased)
    CVec objective_saved = nullptr;  ///< step: then the objective of y (at tindex + 1), y's value saved
    double post_b = 0.0;             ///< step: see post_x
    int tag = 0;                     ///< recv / send
    // step: what the primal did to y just before and after the step, in this order
    std::uint32_t pre_x = kNone;       ///< y <- pre_x, then the step
    std::uint32_t post_x = kNone;      ///< then y <- post_x + post_b y (post_b = +1 or -1)
    std::uint32_t store = kNone;       ///< then store <- y
    std::uint32_t accumulate = kNone;  ///< or then accumulate <- y + accumulate
    int peer = -1;                     ///< recv / send
    double residual_norm = -1.0;

    bool ustop_is_u() const noexcept { return kind == Kind::step_aliased; }
};

class Tape {
public:
    /// The tape saves values into `values` (shared storage, see storage.hpp).
    explicit Tape(SavedValues& values) : values_(values) {}

    void clear() noexcept {
        for (Block& b : blocks_) b.used = 0;
        current_ = 0;
        last_copy_ = kNoRecord;
        pos_ = blocks_.empty() ? nullptr : blocks_[0].bytes.get();
        limit_ = blocks_.empty() ? nullptr : pos_ + blocks_[0].size;
        last_step_ = kNoRecord;
        values_.clear();
        norms_.clear();
        receives_ = 0;
    }
    /// Call once the first iteration is recorded: later ones record the same
    /// amount, so the stream keeps just the blocks it used.
    void trim();

    void copy(std::uint32_t y, std::uint32_t x);
    void axpy(std::uint32_t y, std::uint32_t x, double a, double b);
    /// u: the step's input (saved); ustop: nullptr when it was u itself or when
    /// the app's adjoint does not use it (not saved).
    void step(std::uint32_t y, std::uint32_t x, CVec u, CVec ustop, const Status& st);
    /// Inline: one per fine point in every iteration of the adjoint.
    void objective(std::uint32_t y, CVec u, const Status& st) {
        const std::uint8_t code = norm_code(st.residual_norm);
        // The objective of the point a level-0 step just computed: a part of that
        // step's record when its status follows from the step's (the reverse
        // sweep rebuilds it), else a record of its own.
        if (last_step_ == records_ && y == last_y_ && (last_parts_ & tape_format::kObjective) == 0 &&
            last_level_ == 0 && st.tindex == last_tindex_ + 1 && st.done == last_done_ && code == last_code_) {
            Writer w{pos_ - (fused_ ? 2 : 1)};  // over its kind (and parts): rewritten below
            values_.save(u);
            last_parts_ = static_cast<std::uint8_t>(last_parts_ | tape_format::kObjective);
            w.put(last_parts_);
            w.put(static_cast<std::uint8_t>(TapeOp::Kind::step_fused));
            end_record(w);
            fused_ = true;
            return;
        }
        objective_record(y, u, st, code);
    }
    /// y <- coarsen(x) (or refine(x)): the linear map's adjoint needs no saved value.
    void space(bool coarsen, std::uint32_t y, std::uint32_t x, const Status& st);
    /// Brackets the step records of one grouped call (a kind byte each).
    void group(bool begin) {
        Writer w = begin_record();
        w.put(static_cast<std::uint8_t>(begin ? TapeOp::Kind::group_begin : TapeOp::Kind::group_end));
        end_record(w);
        grouping_ = begin;
    }
    void send(std::uint32_t y, int peer, int tag) { put_message(TapeOp::Kind::send, y, peer, tag); }
    void recv(std::uint32_t y, int peer, int tag) {
        put_message(TapeOp::Kind::recv, y, peer, tag);
        ++receives_;
    }

    /// Call f(op) for every record, the last first. One TapeOp serves every
    /// record: each fills the fields its kind has (see decode), so the other
    /// fields hold what an earlier record left there.
    template <class F>
    void replay_backward(F&& f) const {
        if (blocks_.empty()) return;
        values_.rewind();  // the records' saved values, read back last first as the records are
        TapeOp op;
        for (std::size_t b = current_ + 1; b-- > 0;) {
            const std::uint8_t* data = blocks_[b].bytes.get();
            std::size_t end = b == current_ ? static_cast<std::size_t>(pos_ - data) : blocks_[b].used;
            while (end > 0) {
                const auto kind = static_cast<TapeOp::Kind>(data[end - 1]);
                const std::size_t size =
                    kind == TapeOp::Kind::step_fused ? tape_format::kFusedSizes.of[data[end - 2]] : record_size(kind);
                const std::size_t begin = end - size;
                decode(kind, data + begin, data + end, op);
                f(static_cast<const TapeOp&>(op));
                end = begin;
            }
        }
    }
    /// Receives recorded this iteration (the reverse sweep sends one message per receive).
    std::size_t receives() const noexcept { return receives_; }
    std::size_t bytes() const noexcept { return values_.bytes() + stream_bytes_; }

private:
    /// A block of the stream: records never straddle two blocks.
    struct Block {
        std::unique_ptr<std::uint8_t[]> bytes;
        std::size_t size = 0;
        std::size_t used = 0;  ///< bytes of records (the current block's: pos_)
    };
    /// Writes one record through a local cursor: the bytes stored cannot alias
    /// a local, so the cursor stays in a register (stores through the member
    /// would reload it after every byte written).
    struct Writer {
        std::uint8_t* p;
        template <class T>
        void put(const T& value) noexcept {
            std::memcpy(p, &value, sizeof(T));
            p += sizeof(T);
        }
    };
    static constexpr std::size_t kNoRecord = ~std::size_t{0};
    /// The longest record (a fused step), so a record begun in a block fits in it.
    static constexpr std::size_t kMaxRecord = 48;

    static std::size_t record_size(TapeOp::Kind kind) noexcept;
    void read_status(const std::uint8_t*& p, TapeOp& op) const noexcept;
    /// The record [p, end) of kind `kind`.
    /// The record [p, end) of kind `kind` into `op`: its kind and the fields
    /// that kind has (a step: every step field, the parts it lacks as kNone /
    /// nullptr); the others are left as they are.
    void decode(TapeOp::Kind kind, const std::uint8_t* p, const std::uint8_t* end, TapeOp& op) const noexcept;
    /// A step's fields; `parts`: its fused parts (a plain step: kUstop or none).
    void decode_step(const std::uint8_t*& p, std::uint8_t parts, TapeOp& op) const noexcept;
    void decode_coded_axpy(const std::uint8_t*& p, TapeOp& op) const noexcept;
    void decode_objective(const std::uint8_t*& p, TapeOp& op) const noexcept;
    /// The records other than groups and fused steps, after y.
    void decode_rest(const std::uint8_t*& p, TapeOp& op) const noexcept;
    void put(TapeOp::Kind kind, std::uint32_t y, std::uint32_t x);
    /// An objective term in a record of its own.
    void objective_record(std::uint32_t y, CVec u, const Status& st, std::uint8_t code);
    /// y <- x + y (`add`) or y <- x - y: a part of the last step's record when it can be.
    void sum(std::uint32_t y, std::uint32_t x, bool add);
    void put_message(TapeOp::Kind kind, std::uint32_t y, int peer, int tag);
    static void put_status(Writer& w, const Status& st, std::uint8_t norm) noexcept {
        const std::uint8_t small[4] = {static_cast<std::uint8_t>(st.level), static_cast<std::uint8_t>(st.phase),
                                       static_cast<std::uint8_t>(st.done), norm};
        w.put(small);
        w.put(static_cast<std::int32_t>(st.tindex));
    }
    /// The residual norm changes a few times per iteration: a code into norms_.
    std::uint8_t norm_code(double residual_norm) {
        if (!norms_.empty() && last_norm_ == residual_norm) return last_norm_code_;
        return new_norm_code(residual_norm);
    }
    std::uint8_t new_norm_code(double residual_norm);
    /// Append to the step record just written what followed it: the correction
    /// stepped <- x +- stepped, the copy x <- stepped or the sum x <- stepped + x
    /// (`part`). False when the last record is not a step of `stepped` that can
    /// take that part (the parts keep the primal's order).
    bool fuse(std::uint8_t part, std::uint32_t stepped, std::uint32_t x);
    /// Room for one record in the current block (a new block when it is full).
    Writer begin_record() {
        if (static_cast<std::size_t>(limit_ - pos_) < kMaxRecord) next_block();
        ++records_;
        return Writer{pos_};
    }
    void end_record(const Writer& w) noexcept { pos_ = w.p; }
    void next_block();

    std::vector<Block> blocks_;
    std::size_t current_ = 0;                          ///< the block being written
    std::uint8_t* pos_ = nullptr;                      ///< where its next record goes
    std::uint8_t* limit_ = nullptr;                    ///< its end
    std::size_t stream_bytes_ = 0;                     ///< bytes of all blocks
    std::size_t records_ = 0;                          ///< records begun (names the last one)
    std::size_t last_step_ = kNoRecord;                ///< records_ when the last record is a step that may absorb more
    std::size_t last_copy_ = kNoRecord;                ///< records_ when the last record is a plain copy
    std::uint32_t last_copy_y_ = 0, last_copy_x_ = 0;  ///< its destination and source
    std::uint32_t last_y_ = 0;                         ///< the vector the last step record stepped
    std::uint8_t last_parts_ = 0;                      ///< its parts so far
    // its status (an objective of the point it computed can join it)
    int last_level_ = 0, last_tindex_ = 0;
    bool last_done_ = false;
    std::uint8_t last_code_ = 0;
    bool fused_ = false;     ///< it is written as step_fused (ends with its parts)
    bool grouping_ = false;  ///< between group(true) and group(false): steps stay plain
    SavedValues& values_;
    std::vector<double> norms_;  ///< residual norms the recorded statuses had (coded by index)
    double last_norm_ = 0.0;     ///< norms_.back() (when not empty) and its code
    std::uint8_t last_norm_code_ = 0;
    std::size_t receives_ = 0;
};

// The reader, inline: the reverse sweep decodes every record.

inline std::size_t Tape::record_size(TapeOp::Kind kind) noexcept {
    // By kind, in the enum's order (a fused step's size comes from its parts: kFusedSizes).
    using tape_format::kPoint;
    using tape_format::kStatus;
    static constexpr std::size_t kSizes[] = {
        8 + 1,            // copy
        8 + 16 + 1,       // axpy
        8 + 1,            // axpy_add
        8 + 1,            // axpy_sub
        8 + 1,            // axpy_neg
        8 + kStatus + 1,  // step
        8 + kStatus + 1,  // step_aliased
        12 + 1,           // recv
        12 + 1,           // send
        4 + kPoint + 1,   // objective
        1,                // group_begin
        1,                // group_end
        8 + kStatus + 1,  // coarsen
        8 + kStatus + 1,  // refine
        1,                // step_fused: kFusedSizes
    };
    static_assert(sizeof(kSizes) / sizeof(kSizes[0]) == static_cast<std::size_t>(TapeOp::Kind::step_fused) + 1,
                  "one size per record kind");
    return kSizes[static_cast<std::size_t>(kind)];
}

inline void Tape::read_status(const std::uint8_t*& p, TapeOp& op) const noexcept {
    op.level = p[0];
    op.phase = p[1];
    op.done = p[2] != 0;
    op.residual_norm = norms_[p[3]];
    p += 4;
    op.tindex = tape_format::read<std::int32_t>(p);
}

inline void Tape::decode_coded_axpy(const std::uint8_t*& p, TapeOp& op) const noexcept {
    op.x = tape_format::read<std::uint32_t>(p);
    op.a = op.kind == TapeOp::Kind::axpy_neg ? 0.0 : 1.0;
    op.b = op.kind == TapeOp::Kind::axpy_add ? 1.0 : -1.0;
    op.kind = TapeOp::Kind::axpy;
}

inline void Tape::decode_step(const std::uint8_t*& p, std::uint8_t parts, TapeOp& op) const noexcept {
    using namespace tape_format;
    op.kind = (parts & kUstop) != 0 ? TapeOp::Kind::step : TapeOp::Kind::step_aliased;
    // Saved in this order: u, then ustop, then the objective's state: read back last first.
    op.objective_saved = (parts & kObjective) != 0 ? values_.take_last() : nullptr;
    const CVec ustop = (parts & kUstop) != 0 ? values_.take_last() : nullptr;
    op.saved = values_.take_last();
    op.saved_ustop = ustop != nullptr ? ustop : op.saved;
    op.x = read<std::uint32_t>(p);
    read_status(p, op);
    op.pre_x = (parts & kPre) != 0 ? read<std::uint32_t>(p) : TapeOp::kNone;
    op.post_x = (parts & kPost) != 0 ? read<std::uint32_t>(p) : TapeOp::kNone;
    op.post_b = (parts & kPostAdd) != 0 ? 1.0 : -1.0;
    op.store = (parts & kStore) != 0 ? read<std::uint32_t>(p) : TapeOp::kNone;
    op.accumulate = (parts & kAccumulate) != 0 ? read<std::uint32_t>(p) : TapeOp::kNone;
}

inline void Tape::decode_objective(const std::uint8_t*& p, TapeOp& op) const noexcept {
    op.saved = values_.take_last();
    op.phase = static_cast<std::uint8_t>(Phase::objective);
    op.done = p[0] != 0;
    op.residual_norm = norms_[p[1]];
    p += 2;
    op.tindex = tape_format::read<std::int32_t>(p);
}

inline void Tape::decode(TapeOp::Kind kind, const std::uint8_t* p, const std::uint8_t* end, TapeOp& op) const noexcept {
    op.kind = kind;
    switch (kind) {
        case TapeOp::Kind::group_begin:
        case TapeOp::Kind::group_end: return;  // nothing but the kind
        case TapeOp::Kind::step_fused:         // the commonest record
            op.y = tape_format::read<std::uint32_t>(p);
            decode_step(p, end[-2], op);
            return;
        default: break;
    }
    op.y = tape_format::read<std::uint32_t>(p);
    decode_rest(p, op);
}

inline void Tape::decode_rest(const std::uint8_t*& p, TapeOp& op) const noexcept {
    switch (op.kind) {
        case TapeOp::Kind::copy: op.x = tape_format::read<std::uint32_t>(p); break;
        case TapeOp::Kind::axpy_add:
        case TapeOp::Kind::axpy_sub:
        case TapeOp::Kind::axpy_neg: decode_coded_axpy(p, op); break;
        case TapeOp::Kind::axpy:
            op.x = tape_format::read<std::uint32_t>(p);
            op.a = tape_format::read<double>(p);
            op.b = tape_format::read<double>(p);
            break;
        case TapeOp::Kind::recv:
        case TapeOp::Kind::send:
            op.peer = tape_format::read<std::int32_t>(p);
            op.tag = tape_format::read<std::int32_t>(p);
            break;
        case TapeOp::Kind::step: decode_step(p, tape_format::kUstop, op); break;
        case TapeOp::Kind::step_aliased: decode_step(p, 0, op); break;
        case TapeOp::Kind::coarsen:
        case TapeOp::Kind::refine:
            op.x = tape_format::read<std::uint32_t>(p);
            read_status(p, op);
            break;
        case TapeOp::Kind::objective: decode_objective(p, op); break;
        default: break;  // handled by decode()
    }
}

}  // namespace pxb
