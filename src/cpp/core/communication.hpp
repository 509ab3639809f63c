/// \file communication.hpp
/// \brief Point-to-point messages and reductions between time ranks, with
///        failure propagation: every wait also watches for a failure notice, so
///        an error on one rank makes every other rank raise instead of hang.
///
/// The failure protocol (docs/architecture.md has the whole story):
/// - A rank whose operation fails sends a notice (tagged with the operation's
///   epoch) to every other rank and stops using the communicators.
/// - Waiting ranks poll for notices; a notice of the current (or an earlier)
///   operation raises RemoteRankError, a notice of a later operation -- the
///   sender is ahead -- is kept until this rank gets there, so a failure is
///   reported by the operation in which it happened.
/// - Waits back off from spinning to sleeping (little CPU while another rank is
///   slow, a failure still noticed within about a millisecond) and call an
///   interrupt hook regularly (Ctrl-C during a long wait).
/// - A failed communicator is drained and freed once every rank has stopped
///   using it (see failure_cleanup.cpp): failures do not leak MPI contexts.
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/vector_ops.hpp"
#include "core/virtual_time.hpp"

namespace pxb {

struct FailedCommunicator;

/// The solver's private duplicates of the user's communicator.
class Communicator {
public:
    /// Duplicates `user` (collective over `user`). Throws MPIError when MPI
    /// cannot duplicate it: the solver never runs on another communicator.
    explicit Communicator(MPI_Comm user);
    ~Communicator();
    Communicator(const Communicator&) = delete;
    Communicator& operator=(const Communicator&) = delete;

    int rank() const noexcept { return rank_; }
    int size() const noexcept { return size_; }
    MPI_Comm data() const noexcept { return data_; }

    /// Start the next collective operation (solve, state query, ...); its
    /// number tags this rank's failure notices.
    void begin_operation() noexcept { ++epoch_; }

    /// Switch the virtual clock on (collective in effect: every rank must, and
    /// before any message, since clocked messages carry the sender's clock).
    /// From then on every message and collective moves the clocks
    /// (virtual_time.hpp has the model).
    void enable_virtual_time(NetworkModel net, VirtualClock::ComputeSource source) {
        clock_.enable(net, std::move(source));
    }
    /// This rank's virtual clock (off unless enable_virtual_time was called).
    VirtualClock& clock() noexcept { return clock_; }

    /// Send / receive `n` elements of `dtype` (states: float64 or float32).
    void isend(const void* buf, std::size_t n, DType dtype, int dest, int tag, MPI_Request& req);
    void irecv(void* buf, std::size_t n, DType dtype, int source, int tag, MPI_Request& req);
    /// Waits for `req` (MPI_REQUEST_NULL returns at once) while watching for failures.
    void wait(MPI_Request& req);
    /// Allreduce of `n` doubles in place (op: MPI_SUM, MPI_MAX or MPI_MIN), failure-aware.
    void allreduce(double* values, int n, MPI_Op op);
    /// Broadcast of `n` doubles from `root`, failure-aware.
    void bcast(double* values, std::size_t n, int root);
    /// Broadcast of `bytes` bytes from `root` (a state of any element type), failure-aware.
    void bcast_bytes(void* data, std::size_t bytes, int root);
    /// Every rank says whether its part of an operation succeeded, and why not
    /// (collective, no failure notices involved). Returns true when all did;
    /// false on a rank that failed itself (it raises its own error); every
    /// other rank raises RemoteRankError with the lowest failed rank's `why`.
    bool agree(bool ok, const std::string& why);

    /// Tell every other rank that this rank failed (`where` says what happened).
    /// Never blocks. Marks this communicator as failed.
    void notify_failure(const std::string& where) noexcept;
    bool failed() const noexcept { return failed_; }

    /// Stop using the communicators after a failure: cancel this rank's pending
    /// receives and start the collective drain that frees them once every rank
    /// has stopped (non-blocking; `keepalive` owns the buffers of pending
    /// sends). Idempotent.
    void abandon(std::shared_ptr<const void> keepalive);

    /// Called regularly during long waits and by the callback gate: may throw
    /// to interrupt the operation (the bindings check for Ctrl-C here).
    std::function<void()> check_interrupt;
    /// Call check_interrupt if it has not run for a while (cheap otherwise).
    void maybe_check_interrupt() {
        if (!check_interrupt) return;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_interrupt_check_ < std::chrono::milliseconds(50)) return;
        last_interrupt_check_ = now;
        check_interrupt();
    }

private:
    /// The sender's clock travelling with a message (virtual time): one
    /// double beside the payload, alive until the request completes (or,
    /// after a failure, until the drain).
    struct ClockSlot {
        double clock = 0.0;
        std::size_t bytes = 0;  ///< the payload's
        bool in_use = false;
    };
    struct ActiveRequest {
        MPI_Request handle;
        int peer;
        bool receive;
        ClockSlot* clock = nullptr;  ///< the message's clock (virtual time), else null
    };
    [[noreturn]] void raise_remote(int source, std::int64_t epoch, const std::string& text);
    void poll_failures();
    void receive_notice(const MPI_Status& probed);
    void completed(MPI_Request handle) noexcept;
    /// A free clock slot for a message of `bytes` (virtual time).
    ClockSlot* take_clock_slot(std::size_t bytes);
    /// The payload plus a clock slot as one MPI datatype (absolute addresses: use MPI_BOTTOM).
    static MPI_Datatype clocked_message(const void* buf, std::size_t n, DType dtype, const ClockSlot* slot);
    void raw_allreduce(double* values, int n, MPI_Op op);
    /// Spin, then yield, then sleep with growing pauses; returns the pause taken.
    void back_off(unsigned& round, std::chrono::steady_clock::time_point start);
    void collective_wait();
    /// A message count must fit MPI's int.
    void check_count(std::size_t n) const;

    MPI_Comm data_ = MPI_COMM_NULL;
    MPI_Comm fail_ = MPI_COMM_NULL;
    int rank_ = 0;
    int size_ = 1;
    bool failed_ = false;
    bool abandoned_ = false;
    std::int64_t epoch_ = 0;
    std::chrono::steady_clock::time_point last_interrupt_check_{};

    // Bookkeeping for the drain after a failure (failure_cleanup.cpp).
    std::vector<ActiveRequest> active_;        ///< pending point-to-point requests
    std::vector<long long> sent_data_;         ///< messages sent to each rank on data_
    std::vector<long long> posted_data_;       ///< receives posted for each rank on data_ (not cancelled)
    std::vector<long long> sent_notices_;      ///< failure notices sent to each rank
    std::vector<long long> received_notices_;  ///< failure notices received from each rank
    long long collectives_ = 0;                ///< collectives started on data_
    MPI_Request coll_req_ = MPI_REQUEST_NULL;  ///< the pending collective, if any
    std::vector<double> coll_buf_;             ///< its buffer (owned here: it may outlive the caller's frame)
    int coll_kind_ = 0, coll_count_ = 0, coll_op_ = 0, coll_root_ = 0;  ///< its signature
    std::vector<std::unique_ptr<std::string>> notice_texts_;            ///< buffers of sent notices
    std::vector<MPI_Request> notice_reqs_;
    struct Deferred {
        int source;
        std::int64_t epoch;
        std::string text;
    };
    std::vector<Deferred> deferred_;  ///< notices from operations this rank has not reached

    VirtualClock clock_;
    std::vector<std::unique_ptr<ClockSlot>> clock_slots_;  ///< every slot made (in use or free)

    friend struct FailedCommunicator;
};

/// Progress the drains of failed communicators (non-blocking; called when
/// communicators are created and destroyed).
void progress_failed_communicators() noexcept;
/// Progress the drains, then count the failed communicators not yet freed (for tests).
int progress_and_count_failed_communicators() noexcept;

}  // namespace pxb
