/// \file storage.hpp
/// \brief The memory user callbacks see: the state arena, its adjoint mirror
///        (bars), scratch vectors and the values the tape saves. Addresses are
///        fixed for the engine's lifetime (the saved values live in chunks that
///        never move), and the whole block is reference-counted, so a view that
///        a callback kept (a numpy array in the bindings) can keep the memory
///        alive without keeping the engine -- or the app -- alive.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "core/vector_ops.hpp"

namespace pxb {

/// Saved vectors of the tape, all of one size (a state): appended during an
/// iteration, read back last first by its reverse sweep (the tape's records
/// name no saved value: the reverse sweep meets them in the reverse order of
/// their saving), reused after clear(). Each new chunk holds half as many
/// vectors as all before it (memory within 1.5 times the peak use) and is
/// never reallocated: a pointer into it stays valid until the Storage is
/// destroyed.
class SavedValues {
public:
    /// The size of every saved vector (set before the first save).
    void set_item_bytes(std::size_t bytes) { item_ = (bytes + sizeof(double) - 1) / sizeof(double); }
    /// Copy one vector after the ones saved before.
    void save(CVec v) {
        // Saves are sequential: a cursor into the chunk being filled.
        if (count_ == write_end_) next_write_chunk();
        if (item_ == 1)
            std::memcpy(write_, v, sizeof(double));  // a scalar state: no call to memcpy
        else
            std::memcpy(write_, v, item_ * sizeof(double));
        write_ += item_;
        ++count_;
    }
    /// Start reading back from the last value saved.
    void rewind() noexcept {
        read_index_ = count_;
        if (count_ == 0) return;
        // The chunk holding the last value (chunks fill one after the other, each to its end).
        read_chunk_ =
            static_cast<std::size_t>(std::upper_bound(begins_.begin(), begins_.end(), count_ - 1) - begins_.begin()) -
            1;
        read_begin_ = begins_[read_chunk_];
        read_ = chunks_[read_chunk_].get() + static_cast<std::size_t>(count_ - read_begin_) * item_;
    }
    /// The value saved before the one taken last (after rewind(): the last saved).
    CVec take_last() noexcept {
        if (read_index_ == read_begin_) {  // the chunk before, read from its end
            --read_chunk_;
            read_begin_ = begins_[read_chunk_];
            read_ = chunks_[read_chunk_].get() + static_cast<std::size_t>(read_index_ - read_begin_) * item_;
        }
        --read_index_;
        read_ -= item_;
        return reinterpret_cast<CVec>(read_);
    }
    /// Values not read back since rewind() (0 after a whole reverse sweep).
    std::uint32_t unread() const noexcept { return read_index_; }
    /// Forget the values (keep the chunks for the next iteration).
    void clear() noexcept {
        count_ = 0;
        write_end_ = 0;  // the next save finds chunk 0
    }
    std::size_t bytes() const noexcept { return static_cast<std::size_t>(end_) * item_ * sizeof(double); }

private:
    static constexpr std::size_t kFirstChunkDoubles = 1024;
    // Out of line: met once per chunk, it keeps save() small enough to inline
    // into the recording of every step and objective term.
    [[gnu::noinline]] void next_write_chunk() {
        // count_ is the first index of the next chunk (or of a new one).
        std::size_t c = 0;
        while (c < begins_.size() && begins_[c] != count_) ++c;
        if (c == begins_.size()) {
            grow();
            c = chunks_.size() - 1;
        }
        write_ = chunks_[c].get();
        write_end_ = c + 1 < begins_.size() ? begins_[c + 1] : end_;
    }
    void grow() {
        const std::size_t first = item_ >= kFirstChunkDoubles ? 1 : kFirstChunkDoubles / item_;
        const std::size_t items = end_ == 0 ? first : std::max<std::size_t>(first, end_ / 2);
        // Not zeroed: a value is read only after it was saved.
        chunks_.push_back(std::unique_ptr<double[]>(new double[items * item_]));
        begins_.push_back(end_);
        end_ += static_cast<std::uint32_t>(items);
    }
    std::vector<std::unique_ptr<double[]>> chunks_;
    std::vector<std::uint32_t> begins_;  ///< first index of each chunk
    std::size_t item_ = 1;               ///< doubles per saved vector
    std::uint32_t count_ = 0;
    std::uint32_t end_ = 0;  ///< indices the chunks hold
    // the chunk being written: its next slot and the index it ends at
    double* write_ = nullptr;
    std::uint32_t write_end_ = 0;
    // reading back: the next value to read is the one before read_index_, in
    // chunk read_chunk_ (first index read_begin_), just before read_
    std::uint32_t read_index_ = 0, read_begin_ = 0;
    std::size_t read_chunk_ = 0;
    const double* read_ = nullptr;
};

/// Bytes in 8-byte units (storage aligned for float64 and float32 alike).
class Bytes {
public:
    void assign(std::size_t bytes) { data_.assign((bytes + sizeof(double) - 1) / sizeof(double), 0.0); }
    void grow(std::size_t bytes) {
        if (size() < bytes) data_.resize((bytes + sizeof(double) - 1) / sizeof(double), 0.0);
    }
    void zero() noexcept { std::fill(data_.begin(), data_.end(), 0.0); }
    Vec data() noexcept { return reinterpret_cast<Vec>(data_.data()); }
    CVec data() const noexcept { return reinterpret_cast<CVec>(data_.data()); }
    std::size_t size() const noexcept { return data_.size() * sizeof(double); }
    std::size_t capacity() const noexcept { return data_.capacity() * sizeof(double); }

private:
    std::vector<double> data_;
};

/// Everything a callback may receive a pointer into (besides the app's own memory).
struct Storage {
    Bytes arena;          ///< every state vector of the engine (see Engine::allocate_storage)
    Bytes bar;            ///< the adjoint's mirror of `arena`
    Bytes scratch;        ///< two vectors for callback outputs in the reverse sweep
    SavedValues saved;    ///< the tape's saved step inputs and objective arguments
    Bytes reverse_sends;  ///< buffers of the reverse sweep's messages (alive while sends are)
    Bytes batch_times;    ///< tstart and tstop of the rows of a step_batch call
    Bytes batch_adjoint;  ///< rows of a step_adjoint_batch call: u, ustop, u_bar, ustop_bar
};

}  // namespace pxb
