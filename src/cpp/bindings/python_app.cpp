#include "bindings/python_app.hpp"

#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#include <string>

namespace py = pybind11;

namespace pxb::bind {

void init_numpy() {
    if (_import_array() < 0) throw py::error_already_set();
}

PyApp::PyApp(py::object app, std::vector<Py_ssize_t> shape, py::object init, py::object step,
             py::object residual, py::object spatial_norm, py::object access)
    : app_(std::move(app)),
      init_(std::move(init)),
      step_(std::move(step)),
      residual_(std::move(residual)),
      norm_(std::move(spatial_norm)),
      access_(std::move(access)),
      shape_(std::move(shape)) {
    size_ = 1;
    for (Py_ssize_t d : shape_) size_ *= static_cast<std::size_t>(d);
    name_ = py::str(py::type::handle_of(app_).attr("__name__"));
    status_obj_ = py::cast(StatusView{}, py::return_value_policy::move);
    status_ = status_obj_.cast<StatusView*>();
}

PyApp::~PyApp() {
    // The engine may be destroyed without the GIL (native solves release it).
    py::gil_scoped_acquire gil;
    app_ = py::object();
    init_ = py::object();
    step_ = py::object();
    residual_ = py::object();
    norm_ = py::object();
    access_ = py::object();
    status_obj_ = py::object();
}

PyObject* PyApp::view(const double* data, bool writable) const {
    // A C-contiguous float64 view of engine memory; its base keeps the engine alive.
    PyArray_Descr* descr = PyArray_DescrFromType(NPY_DOUBLE);
    PyObject* arr = PyArray_NewFromDescr(&PyArray_Type, descr, static_cast<int>(shape_.size()),
                                         const_cast<npy_intp*>(reinterpret_cast<const npy_intp*>(shape_.data())),
                                         nullptr, const_cast<double*>(data),
                                         writable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, nullptr);
    if (arr == nullptr) throw py::error_already_set();
    if (owner_ != nullptr) {
        Py_INCREF(owner_);
        if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(arr), owner_) < 0) {
            Py_DECREF(arr);
            throw py::error_already_set();
        }
    }
    return arr;
}

PyObject* PyApp::status_object(const Status& st) {
    status_->st = st;
    return status_obj_.ptr();
}

void PyApp::check_in_place(const char* callback, PyObject* result, PyObject* target) const {
    // Callbacks work in place; returning a different array almost always means
    // the user rebound a local name (u = u + ...) and the engine state is stale.
    if (result == Py_None || result == target) return;
    std::string got = Py_TYPE(result)->tp_name;
    throw py::type_error(name_ + "." + callback + " must update its array argument in place and return None (write u[...] = ... or use in-place operators); it returned a " + got);
}

namespace {
// RAII for new references from the C API.
struct Ref {
    PyObject* p;
    explicit Ref(PyObject* o) : p(o) {}
    ~Ref() { Py_XDECREF(p); }
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;
};
}  // namespace

void PyApp::init(double t, double* u) {
    Ref uv(view(u, true));
    Ref tv(PyFloat_FromDouble(t));
    if (tv.p == nullptr) throw py::error_already_set();
    PyObject* args[] = {tv.p, uv.p};
    Ref res(PyObject_Vectorcall(init_.ptr(), args, 2, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("init", res.p, uv.p);
}

void PyApp::step(double* u, const double* ustop, const double* fstop, const Status& st) {
    Ref uv(view(u, true));
    Ref sv(ustop == u ? (Py_INCREF(uv.p), uv.p) : view(ustop, false));
    Ref fv(fstop ? view(fstop, false) : (Py_INCREF(Py_None), Py_None));
    PyObject* args[] = {uv.p, sv.p, fv.p, status_object(st)};
    Ref res(PyObject_Vectorcall(step_.ptr(), args, 4, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("step", res.p, uv.p);
}

void PyApp::residual(const double* ustop, double* r, const Status& st) {
    Ref sv(view(ustop, false));
    Ref rv(view(r, true));
    PyObject* args[] = {sv.p, rv.p, status_object(st)};
    Ref res(PyObject_Vectorcall(residual_.ptr(), args, 3, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("residual", res.p, rv.p);
}

double PyApp::spatial_norm(const double* u) {
    Ref uv(view(u, false));
    PyObject* args[] = {uv.p};
    Ref res(PyObject_Vectorcall(norm_.ptr(), args, 1, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    const double value = PyFloat_AsDouble(res.p);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        throw py::type_error(name_ + ".spatial_norm must return a real number, got " +
                             std::string(Py_TYPE(res.p)->tp_name));
    }
    return value;
}

void PyApp::access(const double* u, const Status& st) {
    Ref uv(view(u, false));
    PyObject* args[] = {uv.p, status_object(st)};
    Ref res(PyObject_Vectorcall(access_.ptr(), args, 2, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
}

}  // namespace pxb::bind
