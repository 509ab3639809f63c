// Benchmark hooks: compiled into development builds only (-DPYXBRAID_BENCH_HOOKS,
// set by scripts/dev-install.sh), never into wheels or plain installs.
#include <pybind11/pybind11.h>

#include <chrono>
#include <memory>
#include <vector>

#include "bindings/python_app.hpp"
#include "core/app.hpp"

namespace py = pybind11;

namespace pxb::bind {

void register_bench_hooks([[maybe_unused]] py::module_& m) {
#ifdef PYXBRAID_BENCH_HOOKS
    // For benchmarks: the cost of `nsteps` bare step calls of an app (no engine
    // around them), to separate the engine's overhead from the app's own work.
    m.def(
        "_time_raw_steps",
        [](std::shared_ptr<App> app, long long nsteps, double dt) {
            // float64 apps only (the native apps and float64 Python apps).
            if (app->dtype() != DType::float64) throw py::value_error("_time_raw_steps times float64 apps only");
            std::vector<double> u(app->size(), 1.0);
            Status st;
            st.tstart = 0.0;
            st.tstop = dt;
            st.phase = Phase::fc_relax;
            app->on_setup(0.0, dt);
            const bool python = dynamic_cast<PyApp*>(app.get()) != nullptr;
            std::unique_ptr<py::gil_scoped_release> nogil;
            if (!python) nogil = std::make_unique<py::gil_scoped_release>();
            const auto t0 = std::chrono::steady_clock::now();
            for (long long k = 0; k < nsteps; ++k) {
                app->step_any(reinterpret_cast<Vec>(u.data()), reinterpret_cast<CVec>(u.data()), nullptr, st);
                if (u[0] < 1e-200) u.assign(u.size(), 1.0);  // keep values normal
            }
            return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        },
        py::arg("app"), py::arg("nsteps"), py::arg("dt"));
#endif
}

}  // namespace pxb::bind
