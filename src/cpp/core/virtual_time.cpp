#include "core/virtual_time.hpp"

#include <time.h>

#include <algorithm>
#include <utility>

namespace pxb {

int tree_depth(int ranks) noexcept {
    int depth = 0;
    for (long long reach = 1; reach < ranks; reach *= 2) ++depth;
    return depth;
}

double NetworkModel::collective(std::size_t bytes, int ranks) const noexcept {
    return tree_depth(ranks) * message(bytes);
}

double thread_cpu_seconds() noexcept {
    // Thread CPU time, not wall time: on an oversubscribed machine a rank is
    // descheduled while others run, and that time must not count as compute.
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

void VirtualClock::enable(NetworkModel net, ComputeSource source) {
    net_ = net;
    source_ = std::move(source);
    enabled_ = true;
    restart();
}

void VirtualClock::restart() {
    if (!enabled_) return;
    now_ = 0.0;
    paused_ = 0;
    mark_ = source_();
}

void VirtualClock::accrue() {
    const double compute = source_();
    now_ += std::max(0.0, compute - mark_);
    mark_ = compute;
}

double VirtualClock::now() {
    if (enabled_ && paused_ == 0) accrue();
    return now_;
}

void VirtualClock::pause() {
    if (paused_++ == 0) accrue();
}

void VirtualClock::resume() {
    // What was spent inside communication (posting, polling, backing off) is
    // not compute: the network model stands for it.
    if (--paused_ == 0) mark_ = source_();
}

void VirtualClock::received(double sent, std::size_t bytes) noexcept {
    now_ = std::max(now_, sent + net_.message(bytes));
}

void VirtualClock::reduced(double latest, std::size_t bytes, int ranks) noexcept {
    now_ = std::max(now_, latest) + net_.collective(bytes, ranks);
}

void VirtualClock::broadcast_received(double sent, std::size_t bytes, int ranks) noexcept {
    now_ = std::max(now_, sent + net_.collective(bytes, ranks));
}

}  // namespace pxb
