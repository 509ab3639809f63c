/// \file recorded_arena.hpp
/// \brief The engine's state arena and the vector operations every algorithm
///        file goes through. While recording (adjoint iterations) each
///        operation also appends itself to the tape, so the reverse sweep
///        replays exactly what was done.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <memory>
#include <string>

#include "core/communication.hpp"
#include "core/status.hpp"
#include "core/storage.hpp"
#include "core/tape.hpp"

namespace pxb {

/// Throws StorageSizeError (naming `what`) when `vectors` vectors of `n`
/// doubles overflow or exceed the memory available on this machine.
void check_storage_size(std::size_t vectors, std::size_t n, const std::string& what);

class RecordedArena {
public:
    RecordedArena(std::size_t n, Communicator& comm) : n_(n), comm_(comm) {}
    RecordedArena(const RecordedArena&) = delete;
    RecordedArena& operator=(const RecordedArena&) = delete;

    /// Allocate `vectors` state vectors (zeroed), and their bars when
    /// `with_bars`; hand them out in order with take().
    void allocate(std::size_t vectors, bool with_bars);
    /// The next `count` doubles of the arena (layout at construction only).
    double* take(std::size_t count) noexcept {
        double* p = next_;
        next_ += count;
        return p;
    }
    std::size_t vector_size() const noexcept { return n_; }

    /// dst <- src
    void copy(double* dst, const double* src);
    /// y <- a x + b y
    void axpy(double a, const double* x, double b, double* y);
    /// Copy v into the send buffer buf and send it (the reverse sweep receives its bar).
    void send(const double* v, double* buf, int dest, int tag, MPI_Request& req);
    /// A receive into `slot` completed (the reverse sweep sends its bar back).
    void received(double* slot, int source, int tag);
    /// Before a step: save its inputs (u and, when distinct, ustop) with its status.
    void record_step(const double* u, const double* ustop, const Status& st);
    /// An objective term f(u) was evaluated with status st.
    void record_objective(const double* u, const Status& st);

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
    /// The bar of a vector of the arena (same offset in the bar arena).
    double* bar_of(const double* v) noexcept { return mem_->bar.data() + offset_of(v); }
    double* bar_at(std::size_t offset) noexcept { return mem_->bar.data() + offset; }
    void zero_bars() noexcept;
    Storage& storage() noexcept { return *mem_; }
    /// Shared ownership of the memory callbacks see (see storage.hpp).
    std::shared_ptr<const void> owner() const noexcept { return mem_; }
    std::size_t bytes() const noexcept { return mem_->arena.capacity() * sizeof(double); }
    std::size_t bar_bytes() const noexcept {
        return mem_->bar.capacity() * sizeof(double) + tape_.bytes() + mem_->reverse_sends.capacity() * sizeof(double);
    }

private:
    std::size_t offset_of(const double* p) const noexcept { return static_cast<std::size_t>(p - mem_->arena.data()); }

    std::shared_ptr<Storage> mem_ = std::make_shared<Storage>();
    std::size_t n_;
    Communicator& comm_;
    Tape tape_{mem_->saved};
    bool recording_ = false;
    double* next_ = nullptr;
};

}  // namespace pxb
