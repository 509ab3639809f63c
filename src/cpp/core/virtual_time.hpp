/// \file virtual_time.hpp
/// \brief A virtual clock per rank that predicts the wall time of a run on
///        dedicated cores from a run on fewer (oversubscribed) cores.
///
/// The model (docs/guide/virtual-time.md has the whole story):
/// - Between communication events a rank's clock advances by its own compute
///   time: the CPU time of its thread (time spent descheduled, or sleeping in
///   a wait, does not count), or a fixed cost per step call (a deterministic
///   compute model, for tests and what-if studies).
/// - Time spent inside the communication wrappers (posting, polling, backing
///   off) is not compute: the network model stands for it.
/// - Every message carries its sender's clock; completing a receive sets
///   the receiver's clock to max(own, sent + latency + bytes / bandwidth).
///   Sends never block the sender (buffered).
/// - A reduction over P ranks ends, on every rank, at the latest clock plus
///   ceil(log2 P) message times (recursive doubling); a broadcast reaches
///   the other ranks ceil(log2 P) message times after the root sent it
///   (binomial tree), or when they got there, whichever is later.
#pragma once

#include <cstddef>
#include <functional>

namespace pxb {

/// The network of the predicted machine.
struct NetworkModel {
    double latency = 0.0;    ///< seconds per message (software and wire, end to end)
    double bandwidth = 1.0;  ///< bytes per second (> 0)

    /// Seconds for one message of `bytes`.
    double message(std::size_t bytes) const noexcept { return latency + static_cast<double>(bytes) / bandwidth; }
    /// Seconds a collective over `ranks` ranks adds: ceil(log2 ranks) messages of `bytes`.
    double collective(std::size_t bytes, int ranks) const noexcept;
};

/// ceil(log2 ranks): the rounds of recursive doubling or of a binomial tree (0 for one rank).
int tree_depth(int ranks) noexcept;

/// CPU time of the calling thread in seconds (CLOCK_THREAD_CPUTIME_ID).
double thread_cpu_seconds() noexcept;

/// One rank's virtual clock. Off (and free) until enable().
class VirtualClock {
public:
    /// Seconds of compute done so far on this rank (monotone).
    using ComputeSource = std::function<double()>;

    /// Switch the clock on for good (in: the network, where compute time comes from).
    void enable(NetworkModel net, ComputeSource source);
    bool enabled() const noexcept { return enabled_; }
    const NetworkModel& network() const noexcept { return net_; }

    /// Start from 0 now (the start of a solve).
    void restart();
    /// The clock now, with the compute since the last communication event counted.
    double now();
    /// The clock as the last communication event left it (after a reduction:
    /// the same on every rank, whatever each did since).
    double value() const noexcept { return now_; }

    /// Entering / leaving communication (nested calls allowed): the CPU time
    /// spent in between is not compute.
    void pause();
    void resume();

    /// A message of `bytes` sent at `sent` (the sender's clock) was received.
    void received(double sent, std::size_t bytes) noexcept;
    /// A reduction over `ranks` ranks of `bytes` per rank whose latest clock was `latest`.
    void reduced(double latest, std::size_t bytes, int ranks) noexcept;
    /// A broadcast of `bytes` over `ranks` ranks that left the root at `sent` reached this rank.
    void broadcast_received(double sent, std::size_t bytes, int ranks) noexcept;

private:
    void accrue();

    bool enabled_ = false;
    NetworkModel net_;
    ComputeSource source_;
    double now_ = 0.0;
    double mark_ = 0.0;  ///< compute seconds at the last resume (or restart)
    int paused_ = 0;     ///< nesting depth of communication
};

/// Pauses a clock for the lifetime of the scope when it is enabled (a branch otherwise).
class CommunicationScope {
public:
    explicit CommunicationScope(VirtualClock& clock) : clock_(clock.enabled() ? &clock : nullptr) {
        if (clock_) clock_->pause();
    }
    ~CommunicationScope() {
        if (clock_) clock_->resume();
    }
    CommunicationScope(const CommunicationScope&) = delete;
    CommunicationScope& operator=(const CommunicationScope&) = delete;

private:
    VirtualClock* clock_;
};

}  // namespace pxb
