// Bindings of the native apps (C++ Apps run with no Python in the loop).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "apps/cubic.hpp"
#include "apps/heat1d.hpp"
#include "apps/linear_ode.hpp"

namespace py = pybind11;

namespace pxb::bind {

void register_apps(py::module_& m) {
    py::class_<LinearODE, App, std::shared_ptr<LinearODE>>(m, "LinearODE")
        .def(py::init([](std::vector<double> lam, double u0, double guess, const std::string& scheme,
                         bool residual) {
                 LinearODE::Scheme s = scheme == "forward_euler" ? LinearODE::Scheme::forward_euler
                                                                 : LinearODE::Scheme::backward_euler;
                 return std::make_shared<LinearODE>(std::move(lam), u0, guess, s, residual);
             }),
             py::arg("lam"), py::arg("u0"), py::arg("guess"), py::arg("scheme"), py::arg("residual"))
        .def("set_objective", &LinearODE::set_objective, py::arg("mean_square"), py::arg("tracking"),
             py::arg("target"), py::arg("regularization"))
        .def_property("lam", &LinearODE::lam, &LinearODE::set_lam)
        .def_property_readonly("gradient", &LinearODE::gradient)
        .def("reset_gradient", &LinearODE::reset_gradient);

    py::class_<Cubic, App, std::shared_ptr<Cubic>>(m, "Cubic")
        .def(py::init<std::size_t, double, double, double, double>(), py::arg("size"), py::arg("p"),
             py::arg("u0"), py::arg("guess"), py::arg("target"))
        .def_property("p", &Cubic::p, &Cubic::set_p)
        .def_property_readonly("gradient", &Cubic::gradient)
        .def_property_readonly("newton_iterations", &Cubic::newton_iterations);

    py::class_<Heat1D, App, std::shared_ptr<Heat1D>>(m, "Heat1D")
        .def(py::init([](int nspace, const std::string& guess, bool residual) {
                 Heat1D::Guess g = guess == "xbraid" ? Heat1D::Guess::xbraid
                                   : guess == "zero"  ? Heat1D::Guess::zero
                                                      : Heat1D::Guess::hashed;
                 return std::make_shared<Heat1D>(nspace, g, residual);
             }),
             py::arg("nspace"), py::arg("guess"), py::arg("residual"))
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
}

}  // namespace pxb::bind
