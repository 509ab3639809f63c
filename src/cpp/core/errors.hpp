/// \file errors.hpp
/// \brief Exceptions the core raises; the bindings map each to a Python type.
#pragma once

#include <stdexcept>
#include <string>

namespace pxb {

/// A callback returned something unusable (non-finite state, negative norm, ...).
struct CallbackError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Another rank failed; this rank stops instead of waiting forever.
struct RemoteRankError : std::runtime_error {
    RemoteRankError(int rank_, const std::string& what_) : std::runtime_error(what_), rank(rank_) {}
    int rank;
};

/// The residual norm became NaN or infinite (all ranks see it together).
struct DivergenceError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// The storage a solver needs cannot exist (its size overflows, or no machine
/// of this size has it); raised before anything is allocated.
struct StorageSizeError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// An MPI call returned an error (the message names the call and MPI's error string).
struct MPIError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// The solver was used after an earlier failure left it in an undefined state.
struct SolverStateError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace pxb
