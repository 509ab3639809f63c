/// \file communication.hpp
/// \brief Point-to-point messages and reductions between time ranks, with
///        failure propagation: every wait also watches for a failure notice, so
///        an error on one rank makes every other rank raise instead of hang.
#pragma once

#include <mpi.h>

#include <string>

namespace pxb {

/// The solver's private duplicates of the user's communicator.
class Communicator {
public:
    /// Duplicates `user` (collective over `user`).
    explicit Communicator(MPI_Comm user);
    ~Communicator();
    Communicator(const Communicator&) = delete;
    Communicator& operator=(const Communicator&) = delete;

    int rank() const noexcept { return rank_; }
    int size() const noexcept { return size_; }
    MPI_Comm data() const noexcept { return data_; }

    void isend(const double* buf, std::size_t n, int dest, int tag, MPI_Request& req);
    void irecv(double* buf, std::size_t n, int source, int tag, MPI_Request& req);
    /// Waits for `req` (MPI_REQUEST_NULL returns at once) while watching for failures.
    void wait(MPI_Request& req);
    /// Allreduce of `n` doubles in place (op: MPI_SUM, MPI_MAX, ...), failure-aware.
    void allreduce(double* values, int n, MPI_Op op);
    /// Broadcast of `n` doubles from `root`, failure-aware.
    void bcast(double* values, std::size_t n, int root);

    /// Tell every other rank that this rank failed (`where` says what happened).
    /// Never blocks. Marks this communicator as failed.
    void notify_failure(const std::string& where) noexcept;
    bool failed() const noexcept { return failed_; }

private:
    [[noreturn]] void raise_remote(const MPI_Status& st);
    void poll_failures();

    MPI_Comm data_ = MPI_COMM_NULL;
    MPI_Comm fail_ = MPI_COMM_NULL;
    int rank_ = 0;
    int size_ = 1;
    bool failed_ = false;
};

}  // namespace pxb
