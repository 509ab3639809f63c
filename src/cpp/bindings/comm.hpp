// mpi4py communicator -> MPI_Comm (the only file that uses mpi4py's C API).
#pragma once
#include <mpi.h>
#include <pybind11/pybind11.h>

namespace pxb::bind {
/// Import mpi4py's C API (call once from the module init).
void init_mpi4py();
/// The MPI_Comm of an mpi4py.MPI.Comm; TypeError for anything else.
MPI_Comm comm_from_python(pybind11::handle obj);
}  // namespace pxb::bind
