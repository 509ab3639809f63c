// After a failure, a solver's communicators still have traffic in flight:
// receives this rank posted, messages other ranks sent that nobody will
// receive, failure notices, and possibly a reduction some ranks started and
// the failed rank never will. Freeing them at once would let a later
// communicator (MPI reuses context ids) match those stale messages; never
// freeing them exhausts MPI's context ids (about 1000 failed solvers).
//
// So each rank drains its failed communicators, without ever blocking:
//   1. cancel its pending receives (and wait for the cancellations);
//   2. exchange, with a non-blocking all-to-all on the notice communicator,
//      how many messages it sent to each rank, how many collectives it
//      started, and the signature of a collective left pending;
//   3. join, with a dummy of the same signature, the one collective the
//      failed rank never started (so the others' pending reduction completes);
//   4. receive (and drop) every message sent to it that it did not receive,
//      and wait for its own sends;
//   5. free both communicators.
// Steps run when progress_failed_communicators() is called: at every creation
// and destruction of a communicator. A rank that never stops (stuck in user
// code) leaves the others' drains pending, never hanging them.
#include <algorithm>
#include <array>
#include <memory>
#include <mutex>
#include <vector>

#include "core/communication.hpp"

namespace pxb {

namespace {
constexpr int kFields = 8;  // per peer: sent data, sent notices, collectives, pending?, kind, count, op, root
}

struct FailedCommunicator {
    explicit FailedCommunicator(Communicator& c, std::shared_ptr<const void> keep)
        : data(c.data_),
          fail(c.fail_),
          rank(c.rank_),
          size(c.size_),
          keepalive(std::move(keep)),
          posted_data(std::move(c.posted_data_)),
          received_notices(std::move(c.received_notices_)),
          collectives(c.collectives_),
          coll_req(c.coll_req_),
          coll_buf(std::move(c.coll_buf_)),
          coll_kind(c.coll_kind_),
          coll_count(c.coll_count_),
          coll_op(c.coll_op_),
          coll_root(c.coll_root_),
          notice_texts(std::move(c.notice_texts_)),
          notice_reqs(std::move(c.notice_reqs_)),
          clock_slots(std::move(c.clock_slots_)) {
        const auto n = static_cast<std::size_t>(size);
        out.assign(n * kFields, 0);
        in.assign(n * kFields, 0);
        for (std::size_t p = 0; p < n; ++p) {
            long long* f = out.data() + p * kFields;
            f[0] = c.sent_data_[p];
            f[1] = c.sent_notices_[p];
        }
        for (const Communicator::ActiveRequest& a : c.active_) {
            if (a.receive) {
                MPI_Request h = a.handle;
                MPI_Cancel(&h);
                cancelled.push_back({h, a.peer});
            } else {
                sends.push_back(a.handle);
            }
        }
        c.active_.clear();
        c.data_ = c.fail_ = MPI_COMM_NULL;
    }

    /// One non-blocking step; true when the communicators are freed (or given up).
    bool progress() noexcept {
        if (stage == Stage::cancelling) {
            if (!cancellations_done()) return false;
            if (!start_exchange()) return give_up();
        }
        if (stage == Stage::exchanging) {
            if (!test(exchange)) return false;
            if (!join_missing_collective() || !expect_messages()) return give_up();
        }
        if (stage == Stage::draining) return finish_draining();
        return true;
    }

private:
    struct Cancelled {
        MPI_Request handle;
        int peer;
    };

    static bool test(MPI_Request& r) noexcept {
        if (r == MPI_REQUEST_NULL) return true;
        int done = 0;
        if (MPI_Test(&r, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
        return done != 0;
    }
    static bool test_all(std::vector<MPI_Request>& rs) noexcept {
        bool all = true;
        for (MPI_Request& r : rs) all = test(r) && all;
        return all;
    }

    /// Step 2: what this rank sent and started, to every rank.
    bool start_exchange() noexcept {
        for (std::size_t p = 0; p < static_cast<std::size_t>(size); ++p) {
            long long* f = out.data() + p * kFields;
            f[2] = collectives;
            f[3] = coll_kind != 0;
            f[4] = coll_kind;
            f[5] = coll_count;
            f[6] = coll_op;
            f[7] = coll_root;
        }
        stage = Stage::exchanging;
        return MPI_Ialltoall(out.data(), kFields, MPI_LONG_LONG, in.data(), kFields, MPI_LONG_LONG, fail, &exchange) ==
               MPI_SUCCESS;
    }

    bool expect_messages() noexcept {
        try {
            for (std::size_t p = 0; p < static_cast<std::size_t>(size); ++p) {
                expected_data.push_back(in[p * kFields + 0] - posted_data[p]);
                expected_notices.push_back(in[p * kFields + 1] - received_notices[p]);
            }
        } catch (...) {
            return false;
        }
        stage = Stage::draining;
        return true;
    }

    /// Steps 4 and 5.
    bool finish_draining() noexcept {
        if (!drain(data, expected_data) || !drain(fail, expected_notices)) return false;
        if (!test(coll_req) || !test(dummy_req) || !test_all(sends) || !test_all(notice_reqs) || !test_all(receiving))
            return false;
        MPI_Comm_free(&data);
        MPI_Comm_free(&fail);
        stage = Stage::done;
        return true;
    }

    bool cancellations_done() noexcept {
        for (Cancelled& c : cancelled) {
            if (c.handle == MPI_REQUEST_NULL) continue;
            int done = 0, was_cancelled = 0;
            MPI_Status st;
            if (MPI_Test(&c.handle, &done, &st) != MPI_SUCCESS) return false;
            if (!done) return false;
            MPI_Test_cancelled(&st, &was_cancelled);
            if (was_cancelled) --posted_data[static_cast<std::size_t>(c.peer)];
        }
        return true;
    }

    /// A rank one collective behind the others (it failed before starting it)
    /// starts a dummy of the same signature, so that theirs complete.
    bool join_missing_collective() noexcept {
        long long most = collectives;
        int model = -1;
        for (int p = 0; p < size; ++p) {
            const long long* f = in.data() + static_cast<std::size_t>(p) * kFields;
            if (f[2] > most) most = f[2];
        }
        if (most == collectives) return true;
        if (most > collectives + 1) return false;  // cannot happen in a consistent program
        for (int p = 0; p < size && model < 0; ++p) {
            const long long* f = in.data() + static_cast<std::size_t>(p) * kFields;
            if (f[2] == most && f[3]) model = p;
        }
        if (model < 0) return false;
        const long long* f = in.data() + static_cast<std::size_t>(model) * kFields;
        dummy.assign(static_cast<std::size_t>(f[5]), 0.0);
        const int count = static_cast<int>(f[5]);
        if (f[4] == 1) {
            const MPI_Op op = f[6] == 1 ? MPI_MAX : f[6] == 2 ? MPI_MIN : MPI_SUM;
            return MPI_Iallreduce(MPI_IN_PLACE, dummy.data(), count, MPI_DOUBLE, op, data, &dummy_req) == MPI_SUCCESS;
        }
        return MPI_Ibcast(dummy.data(), count, MPI_DOUBLE, static_cast<int>(f[7]), data, &dummy_req) == MPI_SUCCESS;
    }

    /// Receive (and drop) what each rank sent here that this rank did not receive.
    bool drain(MPI_Comm comm, std::vector<long long>& expected) noexcept {
        bool all = true;
        for (int p = 0; p < size; ++p) {
            long long& left = expected[static_cast<std::size_t>(p)];
            while (left > 0) {
                int flag = 0;
                MPI_Message msg;
                MPI_Status st;
                if (MPI_Improbe(p, MPI_ANY_TAG, comm, &flag, &msg, &st) != MPI_SUCCESS) return false;
                if (!flag) {
                    all = false;
                    break;
                }
                int bytes = 0;
                MPI_Get_count(&st, MPI_BYTE, &bytes);
                buffers.push_back(std::make_unique<char[]>(static_cast<std::size_t>(bytes > 0 ? bytes : 1)));
                receiving.push_back(MPI_REQUEST_NULL);
                if (MPI_Imrecv(buffers.back().get(), bytes, MPI_BYTE, &msg, &receiving.back()) != MPI_SUCCESS)
                    return false;
                --left;
            }
        }
        return all;
    }

    bool give_up() noexcept {
        // An MPI error during the drain: leave the communicators to MPI_Finalize.
        stage = Stage::done;
        return true;
    }

    enum class Stage { cancelling, exchanging, draining, done };
    Stage stage = Stage::cancelling;
    MPI_Comm data, fail;
    int rank, size;
    std::shared_ptr<const void> keepalive;  ///< buffers of pending sends (the engine's storage)
    std::vector<long long> posted_data, received_notices;
    long long collectives;
    MPI_Request coll_req;
    std::vector<double> coll_buf;
    int coll_kind, coll_count, coll_op, coll_root;
    std::vector<std::unique_ptr<std::string>> notice_texts;
    std::vector<MPI_Request> notice_reqs;
    std::vector<std::unique_ptr<Communicator::ClockSlot>> clock_slots;  ///< clocks of pending messages (virtual time)
    std::vector<Cancelled> cancelled;
    std::vector<MPI_Request> sends;
    std::vector<long long> out, in;
    MPI_Request exchange = MPI_REQUEST_NULL;
    std::vector<double> dummy;
    MPI_Request dummy_req = MPI_REQUEST_NULL;
    std::vector<long long> expected_data, expected_notices;
    std::vector<std::unique_ptr<char[]>> buffers;
    std::vector<MPI_Request> receiving;
};

namespace {
std::mutex& registry_mutex() {
    static std::mutex m;
    return m;
}
std::vector<std::unique_ptr<FailedCommunicator>>& registry() {
    // Never destroyed: at exit MPI is finalized and nothing may be freed.
    static auto* r = new std::vector<std::unique_ptr<FailedCommunicator>>();
    return *r;
}
}  // namespace

void Communicator::abandon(std::shared_ptr<const void> keepalive) {
    if (abandoned_) return;
    abandoned_ = true;
    failed_ = true;
    if (size_ == 1) {
        // One rank: nothing can be in flight from anyone else.
        for (ActiveRequest& a : active_) {
            if (a.receive) MPI_Cancel(&a.handle);
            MPI_Wait(&a.handle, MPI_STATUS_IGNORE);
        }
        active_.clear();
        MPI_Comm_free(&data_);
        MPI_Comm_free(&fail_);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(registry_mutex());
        registry().push_back(std::make_unique<FailedCommunicator>(*this, std::move(keepalive)));
    }
    progress_failed_communicators();
}

void progress_failed_communicators() noexcept {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto& r = registry();
    r.erase(
        std::remove_if(r.begin(), r.end(), [](const std::unique_ptr<FailedCommunicator>& f) { return f->progress(); }),
        r.end());
}

int progress_and_count_failed_communicators() noexcept {
    progress_failed_communicators();
    std::lock_guard<std::mutex> lock(registry_mutex());
    return static_cast<int>(registry().size());
}

}  // namespace pxb
