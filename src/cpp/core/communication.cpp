#include "core/communication.hpp"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/errors.hpp"
#include "core/mpi_check.hpp"

namespace pxb {

namespace {
constexpr int kFailureTag = 7001;

// Waiting: spin this many MPI_Test rounds (~0.1 ms), then yield the core until
// kYieldFor has passed, then sleep with pauses doubling from kFirstPause up to
// kLongestPause. A failure notice is then seen within about kLongestPause, and
// a rank waiting seconds for a slow neighbour uses well under 1% of a core.
constexpr unsigned kSpinRounds = 2048;
constexpr auto kYieldFor = std::chrono::milliseconds(2);
constexpr auto kFirstPause = std::chrono::microseconds(20);
constexpr auto kLongestPause = std::chrono::microseconds(1000);

bool mpi_finalized() {
    int flag = 0;
    MPI_Finalized(&flag);
    return flag != 0;
}

// Collective signatures (exchanged as integers by the drain).
enum : int { kAllreduce = 1, kBcast = 2 };
int op_code(MPI_Op op) {
    if (op == MPI_SUM) return 0;
    if (op == MPI_MAX) return 1;
    if (op == MPI_MIN) return 2;
    throw std::invalid_argument("pyxbraid internal error: unsupported reduction");
}
}  // namespace

Communicator::Communicator(MPI_Comm user) {
    progress_failed_communicators();
    check_mpi(MPI_Comm_dup(user, &data_), "MPI_Comm_dup");
    const int rc = MPI_Comm_dup(user, &fail_);
    if (rc != MPI_SUCCESS) {
        MPI_Comm_free(&data_);
        check_mpi(rc, "MPI_Comm_dup");
    }
    // Errors come back as return codes (mpi4py's choice too), each checked.
    check_mpi(MPI_Comm_set_errhandler(data_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_set_errhandler(fail_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check_mpi(MPI_Comm_rank(data_, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(data_, &size_), "MPI_Comm_size");
    const auto n = static_cast<std::size_t>(size_);
    sent_data_.assign(n, 0);
    posted_data_.assign(n, 0);
    sent_notices_.assign(n, 0);
    received_notices_.assign(n, 0);
    last_interrupt_check_ = std::chrono::steady_clock::now();
}

Communicator::~Communicator() {
    if (mpi_finalized()) return;
    if (failed_ && size_ > 1) {
        // Messages may be in flight: the drain frees the communicators once
        // every rank has stopped (failure_cleanup.cpp).
        abandon(nullptr);
    } else if (!abandoned_) {
        MPI_Comm_free(&data_);
        MPI_Comm_free(&fail_);
    }
    progress_failed_communicators();
}

namespace {
MPI_Datatype mpi_type(DType d) {
    return d == DType::float32 ? MPI_FLOAT : MPI_DOUBLE;
}
}  // namespace

void Communicator::isend(const void* buf, std::size_t n, DType dtype, int dest, int tag, MPI_Request& req) {
    check_count(n);
    CommunicationScope scope(clock_);
    ClockSlot* slot = nullptr;
    if (clock_.enabled()) {
        slot = take_clock_slot(n * element_size(dtype));
        slot->clock = clock_.now();  // paused: the clock at the send
        MPI_Datatype message = clocked_message(buf, n, dtype, slot);
        const int rc = MPI_Isend(MPI_BOTTOM, 1, message, dest, tag, data_, &req);
        MPI_Type_free(&message);  // MPI keeps it until the send completes
        if (rc != MPI_SUCCESS) slot->in_use = false;
        check_mpi(rc, "MPI_Isend");
    } else {
        check_mpi(MPI_Isend(buf, static_cast<int>(n), mpi_type(dtype), dest, tag, data_, &req), "MPI_Isend");
    }
    ++sent_data_[static_cast<std::size_t>(dest)];
    active_.push_back({req, dest, false, slot});
}

void Communicator::irecv(void* buf, std::size_t n, DType dtype, int source, int tag, MPI_Request& req) {
    check_count(n);
    CommunicationScope scope(clock_);
    ClockSlot* slot = nullptr;
    if (clock_.enabled()) {
        slot = take_clock_slot(n * element_size(dtype));
        MPI_Datatype message = clocked_message(buf, n, dtype, slot);
        const int rc = MPI_Irecv(MPI_BOTTOM, 1, message, source, tag, data_, &req);
        MPI_Type_free(&message);
        if (rc != MPI_SUCCESS) slot->in_use = false;
        check_mpi(rc, "MPI_Irecv");
    } else {
        check_mpi(MPI_Irecv(buf, static_cast<int>(n), mpi_type(dtype), source, tag, data_, &req), "MPI_Irecv");
    }
    ++posted_data_[static_cast<std::size_t>(source)];
    active_.push_back({req, source, true, slot});
}

Communicator::ClockSlot* Communicator::take_clock_slot(std::size_t bytes) {
    ClockSlot* slot = nullptr;
    for (const auto& s : clock_slots_)
        if (!s->in_use) {
            slot = s.get();
            break;
        }
    if (!slot) {
        clock_slots_.push_back(std::make_unique<ClockSlot>());
        slot = clock_slots_.back().get();
    }
    slot->in_use = true;
    slot->bytes = bytes;
    slot->clock = 0.0;
    return slot;
}

MPI_Datatype Communicator::clocked_message(const void* buf, std::size_t n, DType dtype, const ClockSlot* slot) {
    // One message, two places: the payload where it is (no copy, its bytes
    // unchanged) and the sender's clock in its slot.
    int lengths[2] = {static_cast<int>(n), 1};
    MPI_Aint where[2];
    check_mpi(MPI_Get_address(buf, &where[0]), "MPI_Get_address");
    check_mpi(MPI_Get_address(&slot->clock, &where[1]), "MPI_Get_address");
    MPI_Datatype types[2] = {mpi_type(dtype), MPI_DOUBLE};
    MPI_Datatype message = MPI_DATATYPE_NULL;
    check_mpi(MPI_Type_create_struct(2, lengths, where, types, &message), "MPI_Type_create_struct");
    const int rc = MPI_Type_commit(&message);
    if (rc != MPI_SUCCESS) MPI_Type_free(&message);
    check_mpi(rc, "MPI_Type_commit");
    return message;
}

void Communicator::check_count(std::size_t n) const {
    if (n > static_cast<std::size_t>(std::numeric_limits<int>::max()))
        throw std::length_error("a state of " + std::to_string(n) +
                                " values is too large for one MPI message (at most 2147483647)");
}

void Communicator::completed(MPI_Request handle) noexcept {
    for (std::size_t k = 0; k < active_.size(); ++k)
        if (active_[k].handle == handle) {
            if (ClockSlot* slot = active_[k].clock) {
                if (active_[k].receive) clock_.received(slot->clock, slot->bytes);
                slot->in_use = false;
            }
            active_[k] = active_.back();
            active_.pop_back();
            return;
        }
}

void Communicator::raise_remote(int source, std::int64_t, const std::string& text) {
    failed_ = true;
    throw RemoteRankError(source, text);
}

void Communicator::receive_notice(const MPI_Status& probed) {
    int len = 0;
    check_mpi(MPI_Get_count(&probed, MPI_CHAR, &len), "MPI_Get_count");
    std::string buf(static_cast<std::size_t>(len), '\0');
    check_mpi(MPI_Recv(buf.data(), len, MPI_CHAR, probed.MPI_SOURCE, kFailureTag, fail_, MPI_STATUS_IGNORE),
              "MPI_Recv");
    ++received_notices_[static_cast<std::size_t>(probed.MPI_SOURCE)];
    std::int64_t epoch = 0;
    if (buf.size() >= sizeof epoch) std::memcpy(&epoch, buf.data(), sizeof epoch);
    std::string text = buf.size() >= sizeof epoch ? buf.substr(sizeof epoch) : std::string();
    // A notice of a later operation (the sender is ahead: this rank's current
    // operation completed on the sender) waits until this rank gets there.
    if (epoch > epoch_)
        deferred_.push_back({probed.MPI_SOURCE, epoch, std::move(text)});
    else
        raise_remote(probed.MPI_SOURCE, epoch, text);
}

void Communicator::poll_failures() {
    if (size_ == 1) return;
    for (std::size_t k = 0; k < deferred_.size(); ++k)
        if (deferred_[k].epoch <= epoch_) {
            Deferred d = std::move(deferred_[k]);
            deferred_.erase(deferred_.begin() + static_cast<std::ptrdiff_t>(k));
            raise_remote(d.source, d.epoch, d.text);
        }
    for (;;) {
        int flag = 0;
        MPI_Status st;
        check_mpi(MPI_Iprobe(MPI_ANY_SOURCE, kFailureTag, fail_, &flag, &st), "MPI_Iprobe");
        if (!flag) return;
        receive_notice(st);
    }
}

void Communicator::back_off(unsigned& round, std::chrono::steady_clock::time_point start) {
    ++round;
    if (round < kSpinRounds) {
        if ((round & 63u) == 0) poll_failures();
        return;
    }
    poll_failures();
    maybe_check_interrupt();
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited < kYieldFor) {
        // Oversubscribed runs (more ranks than cores) need the waiting rank to
        // give its core to the one it waits for.
        sched_yield();
        return;
    }
    auto pause = kFirstPause * (1u << std::min(10u, (round - kSpinRounds) / 16));
    if (pause > kLongestPause) pause = kLongestPause;
    std::this_thread::sleep_for(pause);
}

void Communicator::wait(MPI_Request& req) {
    if (req == MPI_REQUEST_NULL) return;
    // Waiting is not compute: its polling and backing off must not move the clock.
    CommunicationScope scope(clock_);
    const MPI_Request handle = req;
    const auto start = std::chrono::steady_clock::now();
    unsigned round = 0;
    for (;;) {
        int done = 0;
        check_mpi(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
        if (done) {
            completed(handle);
            return;
        }
        back_off(round, start);
    }
}

void Communicator::collective_wait() {
    wait(coll_req_);
    coll_kind_ = 0;
}

void Communicator::allreduce(double* values, int n, MPI_Op op) {
    // A clock event on one rank too: clock().value() is then up to date after it.
    CommunicationScope scope(clock_);
    if (size_ == 1) return;
    raw_allreduce(values, n, op);
    if (clock_.enabled()) {
        // The clocks travel in a reduction of their own: the values' reduction
        // stays the very same MPI call, so its rounding cannot depend on
        // virtual time. (Paused: now() is still the clock at entry.)
        double latest = clock_.now();
        raw_allreduce(&latest, 1, MPI_MAX);
        clock_.reduced(latest, static_cast<std::size_t>(n) * sizeof(double), size_);
    }
}

void Communicator::raw_allreduce(double* values, int n, MPI_Op op) {
    // The buffer is the communicator's: a failure elsewhere may leave the
    // reduction pending after the caller's frame is gone.
    coll_buf_.assign(values, values + n);
    coll_kind_ = kAllreduce;
    coll_count_ = n;
    coll_op_ = op_code(op);
    coll_root_ = 0;
    ++collectives_;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, coll_buf_.data(), n, MPI_DOUBLE, op, data_, &coll_req_), "MPI_Iallreduce");
    collective_wait();
    std::copy(coll_buf_.begin(), coll_buf_.end(), values);
}

void Communicator::bcast(double* values, std::size_t n, int root) {
    if (size_ == 1) return;
    check_count(n + 1);
    CommunicationScope scope(clock_);
    const bool clocked = clock_.enabled();
    coll_buf_.assign(values, values + n);
    // The root's clock travels as one more value: a broadcast does no
    // arithmetic, the values arrive unchanged.
    if (clocked) coll_buf_.push_back(rank_ == root ? clock_.now() : 0.0);
    const int count = static_cast<int>(coll_buf_.size());
    coll_kind_ = kBcast;
    coll_count_ = count;
    coll_op_ = 0;
    coll_root_ = root;
    ++collectives_;
    check_mpi(MPI_Ibcast(coll_buf_.data(), count, MPI_DOUBLE, root, data_, &coll_req_), "MPI_Ibcast");
    collective_wait();
    std::copy(coll_buf_.begin(), coll_buf_.begin() + static_cast<std::ptrdiff_t>(n), values);
    if (clocked && rank_ != root) clock_.broadcast_received(coll_buf_[n], n * sizeof(double), size_);
}

void Communicator::bcast_bytes(void* data, std::size_t bytes, int root) {
    if (size_ == 1) return;
    // Through the double-typed broadcast (its buffer is the communicator's):
    // the bytes travel unchanged, whatever their element type.
    std::vector<double> packed((bytes + sizeof(double) - 1) / sizeof(double), 0.0);
    std::memcpy(packed.data(), data, bytes);
    bcast(packed.data(), packed.size(), root);
    std::memcpy(data, packed.data(), bytes);
}

bool Communicator::agree(bool ok, const std::string& why) {
    if (size_ == 1) return ok;
    // All ranks join both collectives, the failed ones too: nothing here can
    // overtake anything (unlike a notice racing a reduction it contributed to).
    double verdict[2] = {ok ? 1.0 : 0.0, ok ? double(size_) : double(rank_)};
    allreduce(verdict, 2, MPI_MIN);
    if (verdict[0] == 1.0) return true;
    const int root = static_cast<int>(verdict[1]);
    double length = rank_ == root ? double(why.size()) : 0.0;
    bcast(&length, 1, root);
    std::vector<double> packed((static_cast<std::size_t>(length) + sizeof(double) - 1) / sizeof(double) + 1, 0.0);
    if (rank_ == root) std::memcpy(packed.data(), why.data(), why.size());
    bcast(packed.data(), packed.size(), root);
    if (!ok) return false;
    failed_ = true;
    throw RemoteRankError(root,
                          std::string(reinterpret_cast<const char*>(packed.data()), static_cast<std::size_t>(length)));
}

void Communicator::notify_failure(const std::string& where) noexcept {
    if (failed_) return;
    failed_ = true;
    if (size_ == 1 || mpi_finalized()) return;
    try {
        auto text = std::make_unique<std::string>(sizeof epoch_, '\0');
        std::memcpy(text->data(), &epoch_, sizeof epoch_);
        text->append(where.substr(0, 2000));
        for (int r = 0; r < size_; ++r) {
            if (r == rank_) continue;
            MPI_Request req = MPI_REQUEST_NULL;
            if (MPI_Isend(text->data(), static_cast<int>(text->size()), MPI_CHAR, r, kFailureTag, fail_, &req) ==
                MPI_SUCCESS) {
                ++sent_notices_[static_cast<std::size_t>(r)];
                notice_reqs_.push_back(req);
            }
        }
        notice_texts_.push_back(std::move(text));  // alive until the sends complete (the drain)
    } catch (...) {
        // Out of memory while failing: the other ranks still stop at the next
        // agreement or at their timeout; nothing more can be done here.
    }
}

}  // namespace pxb
