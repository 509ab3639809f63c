/// \file recorded_arena.hpp
/// \brief The engine's state arena and the vector operations every algorithm
///        file goes through. While recording (adjoint iterations) each
///        operation also appends itself to the tape, so the reverse sweep
///        replays exactly what was done.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstring>
#include <memory>
#include <string>

#include "core/communication.hpp"
#include "core/status.hpp"
#include "core/storage.hpp"
#include "core/tape.hpp"

namespace pxb {

/// Throws StorageSizeError (naming `what`) when `vectors` vectors of `n`
/// elements of `dtype` overflow or exceed the memory available on this machine.
void check_storage_size(std::size_t vectors, std::size_t n, DType dtype, const std::string& what);

class RecordedArena {
public:
    /// `shell_n`: float64 values of each vector's shell (0: no shells).
    /// `basis_rank`: delta_rank basis vectors of n elements stored after the
    /// state (delta correction; float64 states without shells only). They are
    /// part of every copy, message and axpy, as XBraid's BaseClone, BufPack
    /// and BaseSum treat a vector's basis.
    RecordedArena(std::size_t n, DType dtype, std::size_t shell_n, Communicator& comm, std::size_t basis_rank = 0)
        : n_(n),
          dtype_(dtype),
          state_bytes_(pxb::vector_bytes(n, dtype, shell_n)),
          bytes_(state_bytes_ + basis_rank * n * element_size(dtype)),
          arith_n_(n * (1 + basis_rank)),
          basis_rank_(basis_rank),
          shell_n_(shell_n),
          comm_(comm) {
        mem_->saved.set_item_bytes(bytes_);
    }
    /// When the app's step adjoint ignores ustop, steps record only their input.
    void set_save_ustop(bool save) noexcept { save_ustop_ = save; }
    RecordedArena(const RecordedArena&) = delete;
    RecordedArena& operator=(const RecordedArena&) = delete;

    /// Allocate `vectors` state vectors (zeroed), and their bars when
    /// `with_bars`; hand them out in order with take().
    void allocate(std::size_t vectors, bool with_bars);
    /// The next `count` vectors of the arena (layout at construction only).
    Vec take(std::size_t count) noexcept {
        Vec p = next_;
        next_ += count * bytes_;
        return p;
    }
    std::size_t vector_size() const noexcept { return n_; }
    DType dtype() const noexcept { return dtype_; }
    /// Bytes of one vector in the arena (its state, its shell when the app has
    /// shells, its basis with delta correction).
    std::size_t vector_bytes() const noexcept { return bytes_; }
    /// Bytes of the state and shell of a vector (what users see; no basis).
    std::size_t state_bytes() const noexcept { return state_bytes_; }
    /// Basis vectors stored with every vector (delta correction; 0: none).
    std::size_t basis_rank() const noexcept { return basis_rank_; }
    /// Basis vector j of an engine vector (only with delta correction).
    Vec basis_of(Vec v, std::size_t j) const noexcept { return v + state_bytes_ + j * n_ * element_size(dtype_); }
    CVec basis_of(CVec v, std::size_t j) const noexcept { return v + state_bytes_ + j * n_ * element_size(dtype_); }
    /// float64 values of a vector's shell (0: no shells).
    std::size_t shell_size() const noexcept { return shell_n_; }
    /// The shell of an engine vector (only with shells).
    Vec shell_of(Vec v) const noexcept { return v + shell_offset(n_, dtype_); }
    CVec shell_of(CVec v) const noexcept { return v + shell_offset(n_, dtype_); }
    /// The shell of `src` copied into the shell of `dst` (the states are left alone).
    void copy_shell(Vec dst, CVec src) const noexcept {
        std::memcpy(shell_of(dst), shell_of(src), shell_n_ * sizeof(double));
    }

    /// dst <- src (inline, as axpy and record_step: the engine's hot loops call them per step)
    void copy(Vec dst, CVec src) {
        if (dst == src) return;
        if (bytes_ == sizeof(double))
            std::memcpy(dst, src, sizeof(double));  // a scalar state: no call into the C library
        else
            std::memcpy(dst, src, bytes_);
        if (recording_) tape_.copy(index_of(dst), index_of(src));
    }
    /// y <- a x + b y
    void axpy(double a, CVec x, double b, Vec y) {
        ops::axpy(dtype_, arith_n_, a, x, b, y);
        if (recording_) tape_.axpy(index_of(y), index_of(x), a, b);
    }
    /// Copy v into the send buffer buf and send its first `count` elements (a
    /// coarse level's state with spatial coarsening: size_at(level); 0: the whole
    /// vector, its shell included). The reverse sweep receives its bar.
    void send(CVec v, Vec buf, int dest, int tag, MPI_Request& req, std::size_t count = 0);
    /// Post the receive of a state of `count` elements (0: a whole vector) into `slot`.
    void receive(Vec slot, int source, int tag, MPI_Request& req, std::size_t count = 0) {
        comm_.irecv(slot, message_elements(count), dtype_, source, tag, req);
    }
    /// A receive into `slot` completed (the reverse sweep sends its bar back).
    void received(Vec slot, int source, int tag);
    /// Before a step: save its inputs (u and, when distinct, ustop) with its status.
    void record_step(CVec u, CVec ustop, const Status& st) {
        // The reverse sweep needs the step's inputs: u, and ustop when it is
        // another vector and the app's adjoint uses it.
        if (recording_) tape_.step(index_of(u), index_of(ustop), u, ustop == u || !save_ustop_ ? nullptr : ustop, st);
    }
    /// Brackets the steps of one grouped call (their adjoints may be grouped too).
    void record_group(bool begin) {
        if (recording_) tape_.group(begin);
    }
    /// dst <- coarsen(src) (or refine(src)) was computed with status st (the app's linear maps).
    void record_space(bool coarsen, CVec dst, CVec src, const Status& st) {
        if (recording_) tape_.space(coarsen, index_of(dst), index_of(src), st);
    }
    /// An objective term f(u) was evaluated with status st (inline: one per fine point).
    void record_objective(CVec u, const Status& st) {
        if (recording_) tape_.objective(index_of(u), u, st);
    }

    bool recording() const noexcept { return recording_; }
    /// Records while alive (when `on`), then restores the previous state.
    class Recording {
    public:
        Recording(RecordedArena& arena, bool on) noexcept : arena_(arena), saved_(arena.recording_) {
            arena.recording_ = on;
        }
        ~Recording() { arena_.recording_ = saved_; }
        Recording(const Recording&) = delete;
        Recording& operator=(const Recording&) = delete;

    private:
        RecordedArena& arena_;
        bool saved_;
    };

    Tape& tape() noexcept { return tape_; }
    /// The bar of a vector of the arena (same place in the bar arena).
    Vec bar_of(CVec v) noexcept { return mem_->bar.data() + (v - mem_->arena.data()); }
    /// The bar of the vector with index `index` (as the tape names vectors).
    Vec bar_at(std::uint32_t index) noexcept { return mem_->bar.data() + std::size_t{index} * bytes_; }
    void zero_bars() noexcept { mem_->bar.zero(); }
    Storage& storage() noexcept { return *mem_; }
    /// Shared ownership of the memory callbacks see (see storage.hpp).
    std::shared_ptr<const void> owner() const noexcept { return mem_; }
    std::size_t bytes() const noexcept { return mem_->arena.capacity(); }
    std::size_t bar_bytes() const noexcept {
        return mem_->bar.capacity() + tape_.bytes() + mem_->reverse_sends.capacity();
    }

private:
    /// A message carries the whole vector (state and shell), counted in elements of the state's type.
    std::size_t message_elements() const noexcept { return bytes_ / element_size(dtype_); }
    /// Elements of a message of a state of `count` elements: a coarse level's own size with
    /// spatial coarsening, else (0 or the full size) the whole vector, its shell included.
    std::size_t message_elements(std::size_t count) const noexcept {
        return count == 0 || count == n_ ? message_elements() : count;
    }
    /// The index of an arena vector (how the tape names it). A shift when the
    /// vector size is a power of two (a scalar state): a 64-bit division costs
    /// as much as a scalar app's whole step, and each record needs one or two.
    std::uint32_t index_of(CVec p) const noexcept {
        const auto offset = static_cast<std::size_t>(p - mem_->arena.data());
        return static_cast<std::uint32_t>(index_shift_ >= 0 ? offset >> index_shift_ : offset / bytes_);
    }
    static int power_of_two_shift(std::size_t bytes) noexcept {
        if (bytes == 0 || (bytes & (bytes - 1)) != 0) return -1;
        int shift = 0;
        while ((std::size_t{1} << shift) != bytes) ++shift;
        return shift;
    }

    std::shared_ptr<Storage> mem_ = std::make_shared<Storage>();
    std::size_t n_;
    DType dtype_;
    std::size_t state_bytes_;
    std::size_t bytes_;
    int index_shift_ = power_of_two_shift(bytes_);  ///< log2(bytes_), or -1: index_of divides
    std::size_t arith_n_;                           ///< elements an axpy covers: the state and the basis
    std::size_t basis_rank_;
    std::size_t shell_n_;
    Communicator& comm_;
    Tape tape_{mem_->saved};
    bool recording_ = false;
    bool save_ustop_ = true;
    Vec next_ = nullptr;
};

}  // namespace pxb
