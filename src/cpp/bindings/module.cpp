// The extension module pyxbraid._core: registers each concept and maps core
// exceptions to the Python types of pyxbraid.errors.
#include <pybind11/pybind11.h>

#include "bindings/comm.hpp"
#include "bindings/python_app.hpp"
#include "core/errors.hpp"

namespace py = pybind11;

namespace pxb::bind {
void register_solver(py::module_& m);
void register_apps(py::module_& m);

namespace {
[[noreturn]] void raise_as(const char* type_name, py::tuple args) {
    py::object cls = py::module_::import("pyxbraid.errors").attr(type_name);
    py::object inst = cls(*args);
    PyErr_SetObject(cls.ptr(), inst.ptr());
    throw py::error_already_set();
}
}  // namespace
}  // namespace pxb::bind

PYBIND11_MODULE(_core, m) {
    using namespace pxb::bind;
    m.doc() = "pyxbraid's compiled engine (private: use the pyxbraid package).";
    init_mpi4py();
    init_numpy();
    register_solver(m);
    register_apps(m);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const pxb::RemoteRankError& e) {
            try {
                raise_as("RemoteRankError", py::make_tuple(e.what(), e.rank));
            } catch (py::error_already_set& err) {
                err.restore();
            }
        } catch (const pxb::CallbackError& e) {
            try {
                raise_as("CallbackError", py::make_tuple(e.what()));
            } catch (py::error_already_set& err) {
                err.restore();
            }
        } catch (const pxb::DivergenceError& e) {
            try {
                raise_as("DivergenceError", py::make_tuple(e.what()));
            } catch (py::error_already_set& err) {
                err.restore();
            }
        } catch (const pxb::SolverStateError& e) {
            try {
                raise_as("SolverStateError", py::make_tuple(e.what()));
            } catch (py::error_already_set& err) {
                err.restore();
            }
        }
    });
}
