/// \file storage.hpp
/// \brief The memory user callbacks see: the state arena, its adjoint mirror
///        (bars), scratch vectors and the values the tape saves. Addresses are
///        fixed for the engine's lifetime (the saved values live in chunks that
///        never move), and the whole block is reference-counted, so a view that
///        a callback kept (a numpy array in the bindings) can keep the memory
///        alive without keeping the engine -- or the app -- alive.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <vector>

namespace pxb {

/// Saved vectors of the tape: append-only within an iteration, reused after
/// clear(). Chunks are never reallocated, so a pointer returned by save() stays
/// valid (and its memory owned) until the Storage is destroyed.
class SavedValues {
public:
    /// Copy n doubles; returns where they are.
    const double* save(const double* v, std::size_t n) {
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
        std::memcpy(at, v, n * sizeof(double));
        used_ += n;
        return at;
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

/// Everything a callback may receive a pointer into (besides the app's own memory).
struct Storage {
    std::vector<double> arena;          ///< every state vector of the engine (see Engine::allocate_arena)
    std::vector<double> bar;            ///< the adjoint's mirror of `arena`
    std::vector<double> scratch;        ///< two vectors for callback outputs in the reverse sweep
    SavedValues saved;                  ///< the tape's saved step inputs and objective arguments
    std::vector<double> reverse_sends;  ///< buffers of the reverse sweep's messages (alive while sends are)
};

}  // namespace pxb
