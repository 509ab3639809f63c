#include "core/communication.hpp"

#include <sched.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/errors.hpp"

namespace pxb {

namespace {
constexpr int kFailureTag = 7001;

bool mpi_finalized() {
    int flag = 0;
    MPI_Finalized(&flag);
    return flag != 0;
}
}  // namespace

Communicator::Communicator(MPI_Comm user) {
    MPI_Comm_dup(user, &data_);
    MPI_Comm_dup(user, &fail_);
    // mpi4py sets MPI_ERRORS_RETURN; the engine checks no return codes, so an
    // MPI error (a bug) aborts the job instead of being ignored.
    MPI_Comm_set_errhandler(data_, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_set_errhandler(fail_, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(data_, &rank_);
    MPI_Comm_size(data_, &size_);
}

Communicator::~Communicator() {
    // After a failure on several ranks, messages may still be in flight on these
    // communicators; freeing them could block, so they are left to MPI_Finalize.
    if ((failed_ && size_ > 1) || mpi_finalized()) return;
    MPI_Comm_free(&data_);
    MPI_Comm_free(&fail_);
}

void Communicator::isend(const double* buf, std::size_t n, int dest, int tag, MPI_Request& req) {
    MPI_Isend(buf, static_cast<int>(n), MPI_DOUBLE, dest, tag, data_, &req);
}

void Communicator::irecv(double* buf, std::size_t n, int source, int tag, MPI_Request& req) {
    MPI_Irecv(buf, static_cast<int>(n), MPI_DOUBLE, source, tag, data_, &req);
}

void Communicator::raise_remote(const MPI_Status& probed) {
    int len = 0;
    MPI_Get_count(&probed, MPI_CHAR, &len);
    std::string text(static_cast<std::size_t>(len), '\0');
    MPI_Recv(text.data(), len, MPI_CHAR, probed.MPI_SOURCE, kFailureTag, fail_, MPI_STATUS_IGNORE);
    failed_ = true;
    throw RemoteRankError(probed.MPI_SOURCE, text);
}

void Communicator::poll_failures() {
    if (size_ == 1) return;
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, kFailureTag, fail_, &flag, &st);
    if (flag) raise_remote(st);
}

void Communicator::wait(MPI_Request& req) {
    if (req == MPI_REQUEST_NULL) return;
    unsigned spins = 0;
    for (;;) {
        int done = 0;
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (done) return;
        ++spins;
        if ((spins & 63u) == 0) {
            poll_failures();
            // Oversubscribed runs (more ranks than cores) need the spinning
            // rank to give its core to the one it is waiting for.
            if (spins > 4096) sched_yield();
        }
    }
}

void Communicator::allreduce(double* values, int n, MPI_Op op) {
    if (size_ == 1) return;
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, op, data_, &req);
    wait(req);
}

void Communicator::bcast(double* values, std::size_t n, int root) {
    if (size_ == 1) return;
    MPI_Request req;
    MPI_Ibcast(values, static_cast<int>(n), MPI_DOUBLE, root, data_, &req);
    wait(req);
}

void Communicator::notify_failure(const std::string& where) noexcept {
    if (failed_) return;
    failed_ = true;
    if (size_ == 1 || mpi_finalized()) return;
    // The buffer must outlive the (freed) send requests: it is intentionally
    // leaked; this happens at most once per failed solver.
    auto* text = new std::string(where.substr(0, 2000));
    for (int r = 0; r < size_; ++r) {
        if (r == rank_) continue;
        MPI_Request req;
        MPI_Isend(text->data(), static_cast<int>(text->size()), MPI_CHAR, r, kFailureTag, fail_, &req);
        MPI_Request_free(&req);
    }
}

}  // namespace pxb
