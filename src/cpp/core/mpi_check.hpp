/// \file mpi_check.hpp
/// \brief Every MPI return code is checked: an error becomes MPIError naming
///        the call and MPI's own description.
#pragma once

#include <mpi.h>

#include <string>

#include "core/errors.hpp"

namespace pxb {

inline void check_mpi(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING] = {};
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
    throw MPIError(std::string(call) + " failed: " +
                   (len > 0 ? std::string(text, static_cast<std::size_t>(len)) : "error code " + std::to_string(rc)));
}

}  // namespace pxb
