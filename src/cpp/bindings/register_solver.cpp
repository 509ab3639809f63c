// Bindings of the engine: options, status, results, the solver. Conversion only.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <utility>
#include <vector>

#include "bindings/comm.hpp"
#include "bindings/python_app.hpp"
#include "core/engine.hpp"

namespace py = pybind11;

namespace pxb::bind {

namespace {
bool is_python_app(Engine& e) {
    return dynamic_cast<PyApp*>(&e.app()) != nullptr;
}

/// numpy's type of the engine's states.
py::dtype state_dtype(const Engine& e) {
    return e.dtype() == DType::float32 ? py::dtype::of<float>() : py::dtype::of<double>();
}

/// The Python app of an engine object whose references only this engine owns
/// (the references the garbage collector may visit through it), else null.
PyApp* sole_python_app(PyObject* self) {
    if (!py::detail::is_holder_constructed(self)) return nullptr;
    auto& e = py::handle(self).cast<Engine&>();
    auto* app = dynamic_cast<PyApp*>(&e.app());
    return app != nullptr && e.owns_app_alone() ? app : nullptr;
}

/// The state at fine index i and its shell (apps with shells; collective).
std::pair<py::array, py::array> state_and_shell(Engine& e, int i) {
    std::vector<std::byte> buf(e.vector_bytes());
    if (is_python_app(e)) {
        e.state_at(i, buf.data());
    } else {
        py::gil_scoped_release nogil;
        e.state_at(i, buf.data());
    }
    py::array state(state_dtype(e), std::vector<py::ssize_t>{static_cast<py::ssize_t>(e.vector_size())});
    std::memcpy(state.mutable_data(), buf.data(), e.vector_size() * element_size(e.dtype()));
    py::array_t<double> shell(static_cast<py::ssize_t>(e.shell_size()));
    std::memcpy(shell.mutable_data(), buf.data() + shell_offset(e.vector_size(), e.dtype()),
                e.shell_size() * sizeof(double));
    return {state, shell};
}

/// This rank's fine states after the final sweep (collective).
const Bytes& solution_of(Engine& e) {
    if (is_python_app(e)) return e.local_states();
    py::gil_scoped_release nogil;
    return e.local_states();
}

std::shared_ptr<Engine> make_engine(std::shared_ptr<App> app, py::handle comm, double tstart, double tstop, int ntime,
                                    std::vector<double> times, const Options& options) {
    MPI_Comm c = comm_from_python(comm);
    auto engine = std::make_shared<Engine>(std::move(app), c, tstart, tstop, ntime, std::move(times), options);
    // Ctrl-C (or any Python signal handler that raises) interrupts a solve,
    // also a native one that never runs Python: the engine asks regularly.
    engine->set_interrupt_check([] {
        py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    });
    return engine;
}
}  // namespace

void register_solver(py::module_& m) {
    register_status_type(m);

    py::class_<SolveSummary>(m, "SolveSummary")
        .def_readonly("iterations", &SolveSummary::iterations)
        .def_readonly("residual_norms", &SolveSummary::residual_norms)
        .def_readonly("adjoint_residual_norms", &SolveSummary::adjoint_residual_norms)
        .def_readonly("full_residual_norms", &SolveSummary::full_residual_norms)
        .def_readonly("final_full_residual_norm", &SolveSummary::final_full_residual_norm)
        .def_readonly("objective", &SolveSummary::objective)
        .def_readonly("converged", &SolveSummary::converged)
        .def_readonly("nlevels", &SolveSummary::nlevels)
        .def_readonly("wall_time", &SolveSummary::wall_time)
        .def_readonly("virtual_wall_time", &SolveSummary::virtual_wall_time)
        .def_readonly("calls", &SolveSummary::calls)
        .def_readonly("step_calls_all_ranks", &SolveSummary::step_calls_all_ranks)
        .def_readonly("cycle_iterations", &SolveSummary::cycle_iterations)
        .def_readonly("cycle_residual_norms", &SolveSummary::cycle_residual_norms)
        .def_readonly("cycle_refined", &SolveSummary::cycle_refined)
        .def_readonly("nrefine", &SolveSummary::nrefine);

    py::class_<App, std::shared_ptr<App>>(m, "App", "Base of apps the engine can run.")
        .def_property_readonly("size", &App::size);

    py::class_<PyApp, App, std::shared_ptr<PyApp>>(m, "PythonApp")
        .def(py::init([](py::object app, std::vector<Py_ssize_t> shape, const std::string& dtype, py::object init,
                         py::object step, py::object residual, py::object norm, py::object access) {
                 return std::make_shared<PyApp>(std::move(app), std::move(shape), dtype, std::move(init),
                                                std::move(step), std::move(residual), std::move(norm),
                                                std::move(access));
             }),
             py::arg("app"), py::arg("shape"), py::arg("dtype"), py::arg("init"), py::arg("step"), py::arg("residual"),
             py::arg("spatial_norm"), py::arg("access"))
        .def("set_adjoint", &PyApp::set_adjoint, py::arg("objective"), py::arg("objective_adjoint"),
             py::arg("step_adjoint"), py::arg("reset_gradient"), py::arg("postprocess"), py::arg("postprocess_adjoint"),
             py::arg("init_adjoint") = py::none())
        .def("set_step_batch", &PyApp::set_step_batch, py::arg("step_batch"),
             py::arg("step_adjoint_batch") = py::none())
        .def("set_sync", &PyApp::set_sync, py::arg("sync"))
        .def("set_basis", &PyApp::set_basis, py::arg("init_basis"), py::arg("inner_product"))
        .def("set_shell", &PyApp::set_shell, py::arg("shell_shape"), py::arg("init_shell"), py::arg("state_type"))
        .def("set_spatial", &PyApp::set_spatial, py::arg("shape_at"), py::arg("coarsen"), py::arg("refine"),
             py::arg("coarsen_adjoint") = py::none(), py::arg("refine_adjoint") = py::none());

    // The engine takes part in garbage collection: through a Python app it
    // refers to Python objects (the app, its bound methods) that may refer
    // back to it (app.solver = solver), a cycle Python can collect only when
    // it sees the engine's references (tp_traverse) and can break them (tp_clear).
    py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine", py::custom_type_setup([](PyHeapTypeObject* heap_type) {
                                                    auto* type = &heap_type->ht_type;
                                                    type->tp_flags |= Py_TPFLAGS_HAVE_GC;
                                                    type->tp_traverse = [](PyObject* self, visitproc visit,
                                                                           void* arg) -> int {
                                                        Py_VISIT(Py_TYPE(self));
                                                        if (PyApp* app = sole_python_app(self))
                                                            return app->traverse(visit, arg);
                                                        return 0;
                                                    };
                                                    type->tp_clear = [](PyObject* self) -> int {
                                                        if (PyApp* app = sole_python_app(self)) app->clear_references();
                                                        return 0;
                                                    };
                                                }))
        .def(py::init(&make_engine), py::arg("app"), py::arg("comm"), py::arg("tstart"), py::arg("tstop"),
             py::arg("ntime"), py::arg("times"), py::arg("options"))
        .def("_set_view_owner",
             [](Engine& e) {
                 // Kept views hold the engine's memory, not the engine.
                 auto* keep = new std::shared_ptr<const void>(e.memory_owner());
                 py::capsule owner(keep, "pyxbraid.engine_memory",
                                   [](void* p) { delete static_cast<std::shared_ptr<const void>*>(p); });
                 if (auto* app = dynamic_cast<PyApp*>(&e.app())) app->set_memory_owner(std::move(owner));
             })
        .def("solve",
             [](Engine& e) {
                 if (is_python_app(e)) return e.solve();
                 py::gil_scoped_release nogil;
                 return e.solve();
             })
        .def("set_progress",
             [](Engine& e, py::object fn) {
                 if (fn.is_none()) {
                     e.on_iteration = nullptr;
                     return;
                 }
                 e.on_iteration = [fn](const IterationInfo& info) {
                     py::gil_scoped_acquire gil;
                     fn(info.iter, info.residual_norm, info.full_residual_norm, info.wall_time);
                 };
             })
        .def("reset", &Engine::reset, py::call_guard<py::gil_scoped_release>())
        .def("refresh_initial_condition", &Engine::refresh_initial_condition)
        .def("state_at",
             [](Engine& e, int i) {
                 if (e.shell_size() > 0) return state_and_shell(e, i).first;  // the state only
                 py::array out(state_dtype(e), std::vector<py::ssize_t>{static_cast<py::ssize_t>(e.vector_size())});
                 void* p = out.mutable_data();
                 if (is_python_app(e)) {
                     e.state_at(i, p);
                 } else {
                     py::gil_scoped_release nogil;
                     e.state_at(i, p);
                 }
                 return out;
             })
        .def("state_and_shell_at",
             [](Engine& e, int i) {
                 auto [state, shell] = state_and_shell(e, i);
                 return py::make_tuple(state, shell);
             })
        .def("local_states",
             [](Engine& e) {
                 const Bytes& sol = solution_of(e);
                 const auto n = static_cast<py::ssize_t>(e.vector_size());
                 const auto rows = static_cast<py::ssize_t>(e.iupper() - e.ilower() + 1);
                 py::array out(state_dtype(e), std::vector<py::ssize_t>{rows, n});
                 const std::size_t row_bytes = e.vector_size() * element_size(e.dtype());
                 for (py::ssize_t r = 0; r < rows; ++r)  // the states without their shells
                     std::memcpy(static_cast<std::byte*>(out.mutable_data()) + std::size_t(r) * row_bytes,
                                 sol.data() + std::size_t(r) * e.vector_bytes(), row_bytes);
                 return out;
             })
        .def("local_shells",
             [](Engine& e) {
                 const Bytes& sol = solution_of(e);
                 const auto m = static_cast<py::ssize_t>(e.shell_size());
                 const auto rows = static_cast<py::ssize_t>(e.iupper() - e.ilower() + 1);
                 py::array_t<double> out(std::vector<py::ssize_t>{rows, m});
                 const std::size_t offset = shell_offset(e.vector_size(), e.dtype());
                 for (py::ssize_t r = 0; r < rows; ++r)
                     std::memcpy(out.mutable_data(r, 0), sol.data() + std::size_t(r) * e.vector_bytes() + offset,
                                 std::size_t(m) * sizeof(double));
                 return out;
             })
        .def("local_error_estimates",
             [](const Engine& e) {
                 const std::vector<double>& est = e.error_estimates();
                 return py::array_t<double>(static_cast<py::ssize_t>(est.size()), est.data());
             })
        .def_property_readonly("dtype", [](const Engine& e) { return dtype_name(e.dtype()); })
        .def("iterate",
             [](const Engine& e) {
                 const Engine::Iterate it = e.iterate();
                 const auto k = static_cast<py::ssize_t>(it.indices.size());
                 const auto n = static_cast<py::ssize_t>(e.vector_size());
                 py::array states(state_dtype(e), std::vector<py::ssize_t>{k, n});
                 std::memcpy(states.mutable_data(), it.states.data(), static_cast<std::size_t>(states.nbytes()));
                 py::object adjoint = py::none();
                 if (it.adjoint.size() > 0) {
                     py::array a(state_dtype(e), std::vector<py::ssize_t>{k, n});
                     std::memcpy(a.mutable_data(), it.adjoint.data(), static_cast<std::size_t>(a.nbytes()));
                     adjoint = a;
                 }
                 return py::make_tuple(py::array_t<int>(k, it.indices.data()), states, adjoint, it.rnorm0,
                                       it.rnorm0_adjoint);
             })
        .def(
            "set_iterate",
            [](Engine& e, std::vector<int> indices, py::array states, py::object adjoint, double rnorm0,
               double rnorm0_adjoint) {
                const auto need = static_cast<py::ssize_t>(indices.size() * e.vector_size());
                auto check = [&](const py::array& a, const char* what) {
                    if (!a.dtype().is(state_dtype(e)) || a.size() != need || !(a.flags() & py::array::c_style))
                        throw py::value_error(std::string(what) + " must be a C-contiguous array of " +
                                              std::to_string(need) + " values of the states' type");
                };
                check(states, "states");
                CVec adj = nullptr;
                py::array adjoint_array;
                if (!adjoint.is_none()) {
                    adjoint_array = adjoint.cast<py::array>();
                    check(adjoint_array, "adjoint");
                    adj = static_cast<CVec>(adjoint_array.data());
                }
                e.set_iterate(indices, static_cast<CVec>(states.data()), adj, rnorm0, rnorm0_adjoint);
            },
            py::arg("indices"), py::arg("states"), py::arg("adjoint"), py::arg("rnorm0"), py::arg("rnorm0_adjoint"))
        .def_property_readonly("ilower", &Engine::ilower)
        .def_property_readonly("iupper", &Engine::iupper)
        .def_property_readonly("nlevels", &Engine::nlevels)
        .def_property_readonly("ntime", &Engine::ntime)
        .def_property_readonly("nrefine", &Engine::nrefine)
        .def_property_readonly("rank", &Engine::rank)
        .def_property_readonly("nranks", &Engine::nranks)
        .def_property_readonly("level_sizes", &Engine::level_sizes)
        .def_property_readonly("storage_bytes", &Engine::storage_bytes)
        .def_property_readonly("adjoint_bytes", &Engine::adjoint_bytes)
        .def_property_readonly("times", [](const Engine& e) {
            return py::array_t<double>(static_cast<py::ssize_t>(e.times().size()), e.times().data());
        });
}

}  // namespace pxb::bind
