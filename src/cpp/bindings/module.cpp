// The extension module pyxbraid._core: registers each concept and maps core
// exceptions to the Python types of pyxbraid.errors.
#include <pybind11/pybind11.h>

#include "bindings/comm.hpp"
#include "bindings/python_app.hpp"
#include "core/communication.hpp"
#include "core/errors.hpp"

namespace py = pybind11;

namespace pxb::bind {
void register_vocabulary(py::module_& m);
void register_solver(py::module_& m);
void register_apps(py::module_& m);
void register_bench_hooks(py::module_& m);

namespace {
/// Set the Python error to pyxbraid.errors.<type_name>(*args).
void set_error(const char* type_name, py::tuple args) {
    try {
        py::object cls = py::module_::import("pyxbraid.errors").attr(type_name);
        py::object inst = cls(*args);
        PyErr_SetObject(cls.ptr(), inst.ptr());
    } catch (py::error_already_set& err) {
        err.restore();  // the import itself failed: report that
    }
}
}  // namespace
}  // namespace pxb::bind

PYBIND11_MODULE(_core, m) {
    using namespace pxb::bind;
    m.doc() = "pyxbraid's compiled engine (private: use the pyxbraid package).";
    init_mpi4py();
    init_numpy();
    register_vocabulary(m);
    register_solver(m);
    register_apps(m);
    register_bench_hooks(m);
    m.def("_pending_failed_communicators", &pxb::progress_and_count_failed_communicators,
          "Failed solvers' communicators still being drained on this rank (after progressing them).");
    // One table: core exception -> pyxbraid.errors type (the message kept).
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const pxb::RemoteRankError& e) {
            set_error("RemoteRankError", py::make_tuple(e.what(), e.rank));
        } catch (const pxb::CallbackError& e) {
            set_error("CallbackError", py::make_tuple(e.what()));
        } catch (const pxb::DivergenceError& e) {
            set_error("DivergenceError", py::make_tuple(e.what()));
        } catch (const pxb::SolverStateError& e) {
            set_error("SolverStateError", py::make_tuple(e.what()));
        } catch (const pxb::MPIError& e) {
            set_error("MPIError", py::make_tuple(e.what()));
        } catch (const pxb::StorageSizeError& e) {
            PyErr_SetString(PyExc_MemoryError, e.what());
        }
    });
}
