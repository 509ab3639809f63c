/// \file norms.hpp
/// \brief XBraid's temporal norm (tnorm): how the spatial norms of the C-point
///        residuals (or adjoint updates) of all ranks combine into one number.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cmath>

#include "core/communication.hpp"

namespace pxb {

class TemporalNorm {
public:
    /// tnorm: 1 = sum, 2 = root of the sum of squares, 3 = maximum.
    explicit TemporalNorm(int tnorm) : tnorm_(tnorm) {}

    /// Add one point's spatial norm (in XBraid's accumulation order).
    void add(double spatial) noexcept {
        if (tnorm_ == 1)
            sum_ += spatial;
        else if (tnorm_ == 3)
            max_ = std::max(max_, spatial);
        else
            sum_ += spatial * spatial;
    }

    /// Combine over all ranks (one reduction, collective).
    double reduce(Communicator& comm) const {
        double value = tnorm_ == 3 ? max_ : sum_;
        comm.allreduce(&value, 1, tnorm_ == 3 ? MPI_MAX : MPI_SUM);
        return tnorm_ == 2 ? std::sqrt(value) : value;
    }

private:
    int tnorm_;
    double sum_ = 0.0;
    double max_ = 0.0;
};

}  // namespace pxb
