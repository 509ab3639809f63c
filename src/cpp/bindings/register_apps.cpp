// Bindings of the native apps (C++ Apps run with no Python in the loop).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <initializer_list>
#include <string>
#include <utility>

#include "apps/cubic.hpp"
#include "apps/heat1d.hpp"
#include "apps/linear_ode.hpp"
#include "apps/lorenz.hpp"
#include "apps/resnet.hpp"
#include "core/distribution.hpp"

namespace py = pybind11;

namespace pxb::bind {

namespace {
/// The enum value named `text`; anything else is a ValueError listing the choices.
template <class E>
E choose(const char* what, const std::string& text, std::initializer_list<std::pair<const char*, E>> choices) {
    std::string known;
    for (const auto& [name, value] : choices) {
        if (text == name) return value;
        known += (known.empty() ? "'" : ", '") + std::string(name) + "'";
    }
    throw py::value_error(std::string(what) + " must be one of " + known + ", got '" + text + "'");
}

/// The native ResNet's engine app for one state type (ResNetBatch: float64,
/// ResNetBatch32: float32); inputs, labels and logits are float64 for both.
template <class Real>
void bind_resnet_batch(py::module_& m, const char* name) {
    using Batch = ResNetBatchOf<Real>;
    py::class_<Batch, App, std::shared_ptr<Batch>>(m, name)
        .def(py::init<std::shared_ptr<ResNetParameters>, int>(), py::arg("parameters"), py::arg("batch"))
        .def(
            "set_batch",
            [](Batch& app, py::array_t<double, py::array::c_style | py::array::forcecast> x, py::object labels) {
                const std::size_t nin = static_cast<std::size_t>(x.ndim() == 2 ? x.shape(1) : 0);
                if (x.ndim() != 2 || x.shape(0) != app.batch() || nin == 0)
                    throw py::value_error("set_batch: x has the wrong shape");
                if (labels.is_none()) {
                    app.set_batch(x.data(), nullptr, false);
                    return;
                }
                auto y = labels.cast<py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>>();
                if (y.ndim() != 1 || y.shape(0) != app.batch())
                    throw py::value_error("set_batch: labels have the wrong shape");
                app.set_batch(x.data(), y.data(), true);
            },
            py::arg("x"), py::arg("labels"))
        .def_property_readonly("correct", &Batch::correct)
        .def_property_readonly("loss", &Batch::loss)
        .def_property_readonly("logits", [](const Batch& app) {
            py::array_t<double> out(static_cast<py::ssize_t>(app.logits().size()));
            std::copy(app.logits().begin(), app.logits().end(), out.mutable_data());
            return out;
        });
}
}  // namespace

void register_apps(py::module_& m) {
    py::class_<LinearODE, App, std::shared_ptr<LinearODE>>(m, "LinearODE")
        .def(py::init([](std::vector<double> lam, double u0, double guess, const std::string& scheme, bool residual) {
                 const auto s = choose<LinearODE::Scheme>("scheme", scheme,
                                                          {{"backward_euler", LinearODE::Scheme::backward_euler},
                                                           {"forward_euler", LinearODE::Scheme::forward_euler}});
                 return std::make_shared<LinearODE>(std::move(lam), u0, guess, s, residual);
             }),
             py::arg("lam"), py::arg("u0"), py::arg("guess"), py::arg("scheme"), py::arg("residual"))
        .def("set_objective", &LinearODE::set_objective, py::arg("mean_square"), py::arg("tracking"), py::arg("target"),
             py::arg("regularization"))
        .def_property("lam", &LinearODE::lam, &LinearODE::set_lam)
        .def_property_readonly("gradient", &LinearODE::gradient)
        .def("reset_gradient", &LinearODE::reset_gradient);

    py::class_<Cubic, App, std::shared_ptr<Cubic>>(m, "Cubic")
        .def(py::init<std::size_t, double, double, double, double>(), py::arg("size"), py::arg("p"), py::arg("u0"),
             py::arg("guess"), py::arg("target"))
        .def_property("p", &Cubic::p, &Cubic::set_p)
        .def_property_readonly("gradient", &Cubic::gradient)
        .def_property_readonly("newton_iterations", &Cubic::newton_iterations);

    py::class_<Lorenz, App, std::shared_ptr<Lorenz>>(m, "Lorenz")
        .def(py::init([](double sigma, double rho, double beta, std::array<double, 3> u0, bool record) {
                 return std::make_shared<Lorenz>(sigma, rho, beta, u0, record);
             }),
             py::arg("sigma"), py::arg("rho"), py::arg("beta"), py::arg("u0"), py::arg("record"))
        .def("records", [](const Lorenz& app) {
            // {index: [exp_j, psi_j (3 values)] per basis vector}, as the Python twin's access records.
            py::dict out;
            for (const auto& [index, rec] : app.records()) {
                py::list values;
                for (int k = 0; k < 4 * rec.rank; ++k) values.append(rec.values[static_cast<std::size_t>(k)]);
                out[py::int_(index)] = values;
            }
            return out;
        });

    py::class_<Heat1D, App, std::shared_ptr<Heat1D>>(m, "Heat1D")
        .def(py::init([](int nspace, const std::string& guess, bool residual, bool spatial_coarsening) {
                 const auto g = choose<Heat1D::Guess>("guess", guess,
                                                      {{"random", Heat1D::Guess::hashed},
                                                       {"xbraid", Heat1D::Guess::xbraid},
                                                       {"zero", Heat1D::Guess::zero}});
                 return std::make_shared<Heat1D>(nspace, g, residual, spatial_coarsening);
             }),
             py::arg("nspace"), py::arg("guess"), py::arg("residual"), py::arg("spatial_coarsening") = false)
        .def("exact",
             [](const Heat1D& h, double t) {
                 py::array_t<double> out(static_cast<py::ssize_t>(h.size()));
                 h.exact(t, out.mutable_data());
                 return out;
             })
        .def("error",
             [](const Heat1D& h, double t, py::array_t<double, py::array::c_style | py::array::forcecast> u) {
                 if (static_cast<std::size_t>(u.size()) != h.size())
                     throw py::value_error("u must have nspace entries");
                 return h.error(t, u.data());
             })
        .def_property_readonly("dx", &Heat1D::dx);

    // Flat parameter and gradient vectors are shared with numpy (no copies):
    // optimisers update them in place between solves.
    auto flat_view = [](std::vector<double>& v, py::handle owner) {
        return py::array_t<double>(static_cast<py::ssize_t>(v.size()), v.data(), owner);
    };
    py::class_<ResNetParameters, std::shared_ptr<ResNetParameters>>(m, "ResNetParameters")
        .def(
            py::init([](int in_features, int width, int depth, int classes, double T, const std::string& activation,
                        bool dense_opening, bool scalar_bias, int layer_lo, int layer_hi, bool has_opening,
                        bool has_classifier) {
                ResNetShape s;
                s.in_features = in_features;
                s.width = width;
                s.depth = depth;
                s.classes = classes;
                s.T = T;
                s.activation = choose<Activation>(
                    "activation", activation,
                    {{"tanh", Activation::tanh}, {"relu", Activation::relu}, {"smooth_relu", Activation::smooth_relu}});
                s.dense_opening = dense_opening;
                s.scalar_bias = scalar_bias;
                return std::make_shared<ResNetParameters>(s, layer_lo, layer_hi, has_opening, has_classifier);
            }),
            py::arg("in_features"), py::arg("width"), py::arg("depth"), py::arg("classes"), py::arg("T"),
            py::arg("activation"), py::arg("dense_opening"), py::arg("scalar_bias"), py::arg("layer_lo"),
            py::arg("layer_hi"), py::arg("has_opening"), py::arg("has_classifier"))
        .def_property_readonly(
            "values", [flat_view](py::object self) { return flat_view(self.cast<ResNetParameters&>().values, self); })
        .def_property_readonly(
            "gradient",
            [flat_view](py::object self) { return flat_view(self.cast<ResNetParameters&>().gradient, self); })
        .def_property_readonly(
            "opening_replica",
            [flat_view](py::object self) { return flat_view(self.cast<ResNetParameters&>().opening_replica, self); })
        .def_property_readonly("layer_size", &ResNetParameters::layer_size)
        .def("layer_offset", &ResNetParameters::layer_offset)
        .def_property_readonly("classifier_offset", &ResNetParameters::classifier_offset);

    bind_resnet_batch<double>(m, "ResNetBatch");
    bind_resnet_batch<float>(m, "ResNetBatch32");

    m.def(
        "block_interval",
        [](int npoints, int nranks, int rank) {
            int lo = 0, hi = -1;
            block_interval(npoints, nranks, rank, lo, hi);
            return py::make_tuple(lo, hi);
        },
        py::arg("npoints"), py::arg("nranks"), py::arg("rank"),
        "The engine's distribution of npoints time points: (ilower, iupper) of a rank.");
}

}  // namespace pxb::bind
