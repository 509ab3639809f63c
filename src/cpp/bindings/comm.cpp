#include "bindings/comm.hpp"

#include <mpi4py/mpi4py.h>

#include <string>

namespace py = pybind11;

namespace pxb::bind {

void init_mpi4py() {
    if (import_mpi4py() < 0) throw py::error_already_set();
}

MPI_Comm comm_from_python(py::handle obj) {
    if (!PyObject_TypeCheck(obj.ptr(), &PyMPIComm_Type)) {
        const std::string got = py::str(py::type::handle_of(obj).attr("__qualname__"));
        throw py::type_error("comm must be an mpi4py.MPI.Comm (e.g. MPI.COMM_WORLD), got " + got);
    }
    MPI_Comm* c = PyMPIComm_Get(obj.ptr());
    if (c == nullptr) throw py::error_already_set();
    if (*c == MPI_COMM_NULL) throw py::value_error("comm is MPI.COMM_NULL");
    return *c;
}

}  // namespace pxb::bind
