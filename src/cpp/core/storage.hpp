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
#include <cstring>
#include <memory>
#include <vector>

#include "core/vector_ops.hpp"

namespace pxb {

/// Saved vectors of the tape: append-only within an iteration, reused after
/// clear(). Chunks are never reallocated, so a pointer returned by save() stays
/// valid (and its memory owned) until the Storage is destroyed. Sizes are in
/// doubles (8-byte units, so every saved vector stays aligned for any element type).
class SavedValues {
public:
    /// Copy `bytes` bytes; returns where they are.
    CVec save(CVec v, std::size_t bytes) {
        const std::size_t n = (bytes + sizeof(double) - 1) / sizeof(double);
        while (current_ < chunks_.size() && used_ + n > chunks_[current_].size) {
            ++current_;
            used_ = 0;
        }
        if (current_ == chunks_.size()) {
            // Each new chunk doubles the capacity: memory stays within twice
            // the peak use, and the number of chunks is logarithmic.
            std::size_t size = capacity_ > kFirstChunk ? capacity_ : kFirstChunk;
            if (size < n) size = n;
            chunks_.push_back(Chunk{std::make_unique<double[]>(size), size});
            capacity_ += size;
            used_ = 0;
        }
        double* at = chunks_[current_].data.get() + used_;
        std::memcpy(at, v, bytes);
        used_ += n;
        return reinterpret_cast<CVec>(at);
    }
    /// Forget the values (keep the chunks for the next iteration).
    void clear() noexcept {
        current_ = 0;
        used_ = 0;
    }
    std::size_t bytes() const noexcept { return capacity_ * sizeof(double); }

private:
    static constexpr std::size_t kFirstChunk = 1024;  // doubles
    struct Chunk {
        std::unique_ptr<double[]> data;
        std::size_t size;
    };
    std::vector<Chunk> chunks_;
    std::size_t current_ = 0;
    std::size_t used_ = 0;
    std::size_t capacity_ = 0;  ///< doubles in all chunks
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
};

}  // namespace pxb
