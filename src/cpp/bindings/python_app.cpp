#include "bindings/python_app.hpp"

#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#include <numpy/arrayobject.h>

#include <structmember.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>

namespace py = pybind11;

namespace pxb::bind {

void init_numpy() {
    if (_import_array() < 0) throw py::error_already_set();
}

namespace {

struct StatusObject {
    PyObject_HEAD Status st;
    // What the basis views need (delta correction), set by the owning PyApp.
    const std::vector<Py_ssize_t>* shape;
    PyObject* memory_owner;  ///< borrowed: the engine's storage (a status is read during its call only)
    bool basis_writable;     ///< step: propagate in place; access: read-only
};

PyTypeObject* g_status_type = nullptr;
PyObject* g_phase_names[kPhaseCount] = {};  // one interned name per Phase

#define PXB_MEMBER(name, type, field, doc) \
    {name, type, static_cast<Py_ssize_t>(offsetof(StatusObject, st) + offsetof(Status, field)), READONLY, doc}

// clang-format off
// BEGIN GENERATED status-members (codegen/generate.py from src/pyxbraid/_vocabulary.py)
PyMemberDef status_members[] = {
    PXB_MEMBER("tstart", T_DOUBLE, tstart, "Time of the input state."),
    PXB_MEMBER("t", T_DOUBLE, tstart, "Time of the accessed state (same as tstart)."),
    PXB_MEMBER("tstop", T_DOUBLE, tstop, "Time the step advances to."),
    PXB_MEMBER("tindex", T_INT, tindex, "Index of tstart on this level."),
    PXB_MEMBER("level", T_INT, level, "Grid level (0 = finest)."),
    PXB_MEMBER("nlevels", T_INT, nlevels, "Levels in the hierarchy."),
    PXB_MEMBER("iter", T_INT, iter, "MGRIT iteration (0-based)."),
    PXB_MEMBER("done", T_BOOL, done, "True in the final sweep after convergence."),
    PXB_MEMBER("residual_norm", T_DOUBLE, residual_norm, "Latest residual norm (-1.0 when not available)."),
    PXB_MEMBER("ntime", T_INT, ntime, "Number of fine time steps."),
    PXB_MEMBER("nrefine", T_INT, nrefine, "Temporal refinements done so far (refine=True)."),
    PXB_MEMBER("error_estimate", T_DOUBLE, error_estimate, "Richardson error estimate of the level-0 point stepped to (step) or accessed (access); -1.0 when not available (error_estimation off, coarse levels, before the first level-0 restriction)."),
    {nullptr, 0, 0, 0, nullptr},
};
// END GENERATED status-members
// clang-format on
#undef PXB_MEMBER

// clang-format off
// BEGIN GENERATED phase-doc
constexpr const char* kPhaseDoc = "Calling routine: init, fc_relax, f_restrict, residual, f_interp, access, sequential, state_query, objective, full_residual, after_init, top_cycle, refine, after_refine.";
// END GENERATED phase-doc
// clang-format on

PyObject* status_dt(PyObject* self, void*) {
    const Status& st = reinterpret_cast<StatusObject*>(self)->st;
    return PyFloat_FromDouble(st.tstop - st.tstart);
}
PyObject* status_phase(PyObject* self, void*) {
    const int p = static_cast<int>(reinterpret_cast<StatusObject*>(self)->st.phase);
    if (p < 0 || p >= kPhaseCount) return PyUnicode_FromString("unknown");
    PyObject* name = g_phase_names[p];
    Py_INCREF(name);
    return name;
}
PyObject* status_basis_vectors(PyObject* self, void*) {
    // Built on demand: steps whose app does not read them cost no arrays.
    auto* obj = reinterpret_cast<StatusObject*>(self);
    const Status& st = obj->st;
    PyObject* list = PyList_New(st.basis_rank);
    if (list == nullptr || st.basis_rank == 0) return list;
    std::size_t n = 1;
    for (Py_ssize_t d : *obj->shape) n *= static_cast<std::size_t>(d);
    for (int j = 0; j < st.basis_rank; ++j) {
        std::byte* data = st.basis + static_cast<std::size_t>(j) * n * sizeof(double);
        PyObject* arr = PyArray_NewFromDescr(
            &PyArray_Type, PyArray_DescrFromType(NPY_FLOAT64), static_cast<int>(obj->shape->size()),
            const_cast<npy_intp*>(reinterpret_cast<const npy_intp*>(obj->shape->data())), nullptr, data,
            obj->basis_writable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, nullptr);
        if (arr == nullptr) {
            Py_DECREF(list);
            return nullptr;
        }
        if (obj->memory_owner != nullptr) {
            Py_INCREF(obj->memory_owner);
            if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(arr), obj->memory_owner) < 0) {
                Py_DECREF(arr);
                Py_DECREF(list);
                return nullptr;
            }
        }
        PyList_SET_ITEM(list, j, arr);
    }
    return list;
}
PyObject* status_lyapunov_exponents(PyObject* self, void*) {
    const Status& st = reinterpret_cast<StatusObject*>(self)->st;
    npy_intp dims[1] = {st.basis_rank};
    PyObject* arr = PyArray_ZEROS(1, dims, NPY_FLOAT64, 0);
    if (arr == nullptr || st.lyapunov_exponents == nullptr) return arr;
    auto* out = static_cast<double*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(arr)));
    for (int j = 0; j < st.basis_rank; ++j) out[j] = st.lyapunov_exponents[j];
    return arr;
}
PyObject* status_error_estimates(PyObject* self, void*) {
    // A copy: the engine's array changes with the next restriction.
    const Status& st = reinterpret_cast<StatusObject*>(self)->st;
    npy_intp n = st.error_estimates != nullptr ? st.n_error_estimates : 0;
    PyObject* out = PyArray_SimpleNew(1, &n, NPY_FLOAT64);
    if (out != nullptr && n > 0)
        std::memcpy(PyArray_DATA(reinterpret_cast<PyArrayObject*>(out)), st.error_estimates,
                    static_cast<std::size_t>(n) * sizeof(double));
    return out;
}
RefineRequest* refine_request(PyObject* self, const char* method) {
    RefineRequest* req = reinterpret_cast<StatusObject*>(self)->st.refine;
    if (req == nullptr)
        PyErr_Format(PyExc_RuntimeError, "status.%s is only available inside step of a Solver built with refine=True",
                     method);
    return req;
}
// An integral factor >= 1 (XBraid's "Refinement factor smaller than one" is an error here).
bool parse_rfactor(PyObject* arg, const char* method, long& r) {
    const double v = PyFloat_AsDouble(arg);
    if (v == -1.0 && PyErr_Occurred()) return false;
    if (!(v >= 1.0) || v != static_cast<double>(static_cast<long>(v)) || v > 1e9) {
        PyErr_Format(PyExc_ValueError, "status.%s: rfactor must be an integer >= 1, got %R", method, arg);
        return false;
    }
    r = static_cast<long>(v);
    return true;
}
PyObject* status_set_rfactor(PyObject* self, PyObject* arg) {
    RefineRequest* req = refine_request(self, "set_rfactor");
    long r = 0;
    if (req == nullptr || !parse_rfactor(arg, "set_rfactor", r)) return nullptr;
    if (!req->active) Py_RETURN_NONE;  // coarse levels and access sweeps: ignored, as in XBraid
    // Given step sizes stay only when they still describe this factor.
    if (static_cast<long>(req->dts.size()) != r - 1) req->dts.clear();
    req->rfactor = static_cast<int>(r);
    Py_RETURN_NONE;
}
PyObject* status_set_refinement_dts(PyObject* self, PyObject* arg) {
    RefineRequest* req = refine_request(self, "set_refinement_dts");
    if (req == nullptr) return nullptr;
    const Status& st = reinterpret_cast<StatusObject*>(self)->st;
    py::object seq_obj = py::reinterpret_steal<py::object>(
        PySequence_Fast(arg, "status.set_refinement_dts needs a sequence of step sizes"));
    if (!seq_obj) return nullptr;
    struct {
        PyObject* p;
    } seq{seq_obj.ptr()};
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.p);
    std::vector<double> dts(static_cast<std::size_t>(n));
    double sum = 0.0;
    for (Py_ssize_t k = 0; k < n; ++k) {
        const double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq.p, k));
        if (v == -1.0 && PyErr_Occurred()) return nullptr;
        if (!(v > 0.0) || !std::isfinite(v)) {
            PyErr_Format(PyExc_ValueError, "status.set_refinement_dts: dts[%zd] must be finite and > 0, got %R", k,
                         PySequence_Fast_GET_ITEM(seq.p, k));
            return nullptr;
        }
        dts[static_cast<std::size_t>(k)] = v;
        sum += v;
    }
    // The given steps must leave room for the last one (the rest of the interval).
    if (n > 0 && !(sum < st.tstop - st.tstart)) {
        const std::string msg = "status.set_refinement_dts: the " + std::to_string(n) + " step sizes sum to " +
                                std::to_string(sum) +
                                ", not less than the interval tstop - tstart = " + std::to_string(st.tstop - st.tstart);
        PyErr_SetString(PyExc_ValueError, msg.c_str());
        return nullptr;
    }
    if (!req->active) Py_RETURN_NONE;
    req->rfactor = static_cast<int>(n) + 1;
    req->dts = std::move(dts);
    Py_RETURN_NONE;
}
PyMethodDef status_methods[] = {
    {"set_rfactor", status_set_rfactor, METH_O,
     "refine=True, level-0 step: divide the interval stepped over into rfactor equal intervals (an integer >= "
     "1; XBraid's braid_StepStatusSetRFactor). Ignored on coarse levels and in access sweeps."},
    {"set_refinement_dts", status_set_refinement_dts, METH_O,
     "refine=True, level-0 step: divide the interval stepped over into len(dts) + 1 intervals, the first "
     "len(dts) of the given sizes (positive, summing to less than tstop - tstart) and the rest of the interval "
     "(XBraid's braid_StepStatusSetRefinementDtValues)."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef status_getset[] = {
    {"dt", status_dt, nullptr, "tstop - tstart.", nullptr},
    {"basis_vectors", status_basis_vectors, nullptr,
     "Delta correction: in step, the basis vectors to replace in place by the step's Jacobian applied to them "
     "(empty when none are propagated); in access, the point's basis (read-only). A new list of views per read.",
     nullptr},
    {"lyapunov_exponents", status_lyapunov_exponents, nullptr,
     "Delta correction, access: the local Lyapunov exponents at this point (0 where not provided: F-points, "
     "index 0, lyapunov off).",
     nullptr},
    {"error_estimates", status_error_estimates, nullptr,
     "sync: this rank's Richardson error estimates at its level-0 points (a new float64 array, -1.0 where not "
     "available; empty without error_estimation or outside sync).",
     nullptr},
    {"phase", status_phase, nullptr, kPhaseDoc, nullptr},
    {"caller", status_phase, nullptr, "The same as phase (XBraid's name: the calling function).", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};
PyObject* status_repr(PyObject* self) {
    const Status& st = reinterpret_cast<StatusObject*>(self)->st;
    const std::string text = "Status(phase=" + std::string(phase_name(st.phase)) +
                             ", level=" + std::to_string(st.level) + ", iter=" + std::to_string(st.iter) +
                             ", tstart=" + std::to_string(st.tstart) + ", tstop=" + std::to_string(st.tstop) + ")";
    return PyUnicode_FromString(text.c_str());
}
void status_dealloc(PyObject* self) {
    PyTypeObject* type = Py_TYPE(self);
    PyObject_Free(self);
    Py_DECREF(type);
}
PyType_Slot status_slots[] = {
    {Py_tp_doc, const_cast<char*>("What a callback is told about the call it serves (XBraid's StepStatus / "
                                  "AccessStatus). The same object is reused: read it, do not keep it.")},
    {Py_tp_members, status_members},
    {Py_tp_getset, status_getset},
    {Py_tp_methods, status_methods},
    {Py_tp_repr, reinterpret_cast<void*>(status_repr)},
    {Py_tp_dealloc, reinterpret_cast<void*>(status_dealloc)},
    {0, nullptr},
};
PyType_Spec status_spec = {"pyxbraid.Status", sizeof(StatusObject), 0, Py_TPFLAGS_DEFAULT, status_slots};

}  // namespace

void register_status_type(py::module_& module) {
    g_status_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&status_spec));
    if (g_status_type == nullptr) throw py::error_already_set();
    for (int p = 0; p < kPhaseCount; ++p)
        g_phase_names[p] = PyUnicode_InternFromString(phase_name(static_cast<Phase>(p)));
    module.add_object("Status", reinterpret_cast<PyObject*>(g_status_type));
    pybind11::tuple names(kPhaseCount);
    for (int p = 0; p < kPhaseCount; ++p)
        names[static_cast<std::size_t>(p)] = pybind11::str(phase_name(static_cast<Phase>(p)));
    module.attr("PHASES") = names;
}

PyApp::PyApp(py::object app, std::vector<Py_ssize_t> shape, const std::string& dtype, py::object init, py::object step,
             py::object residual, py::object spatial_norm, py::object access)
    : app_(std::move(app)),
      init_(std::move(init)),
      step_(std::move(step)),
      residual_(std::move(residual)),
      norm_(std::move(spatial_norm)),
      access_(std::move(access)),
      shape_(std::move(shape)) {
    if (dtype == "float32")
        dtype_ = DType::float32;
    else if (dtype != "float64")
        throw py::value_error("dtype must be 'float64' or 'float32', got '" + dtype + "'");
    size_ = 1;
    for (Py_ssize_t d : shape_) size_ *= static_cast<std::size_t>(d);
    name_ = py::str(py::type::handle_of(app_).attr("__name__"));
    auto* obj = PyObject_New(StatusObject, g_status_type);
    if (obj == nullptr) throw py::error_already_set();
    new (&obj->st) Status();
    obj->shape = &shape_;
    obj->memory_owner = nullptr;
    obj->basis_writable = false;
    status_ = &obj->st;
    status_obj_ = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(obj));
}

PyApp::~PyApp() {
    // The engine may be destroyed without the GIL (native solves release it).
    py::gil_scoped_acquire gil;
    clear_references();
    status_obj_ = py::object();
    memory_owner_ = py::object();
}

template <class Self>
auto PyApp::references_of(Self& self) {
    // The references that can lead back to the engine: the app and its bound methods.
    return std::array{&self.app_,
                      &self.init_,
                      &self.step_,
                      &self.residual_,
                      &self.norm_,
                      &self.access_,
                      &self.objective_,
                      &self.objective_adjoint_,
                      &self.step_adjoint_,
                      &self.reset_gradient_,
                      &self.postprocess_,
                      &self.postprocess_adjoint_,
                      &self.init_adjoint_,
                      &self.step_batch_,
                      &self.step_adjoint_batch_,
                      &self.sync_,
                      &self.shape_at_,
                      &self.coarsen_,
                      &self.refine_,
                      &self.coarsen_adjoint_,
                      &self.refine_adjoint_,
                      &self.init_shell_,
                      &self.state_type_,
                      &self.init_basis_,
                      &self.inner_product_};
}

int PyApp::traverse(visitproc visit, void* arg) const {
    // The views and the status object refer to nothing that leads back.
    for (const py::object* o : references_of(*this)) Py_VISIT(o->ptr());
    return 0;
}

void PyApp::clear_references() {
    for (PyObject*& v : views_) Py_CLEAR(v);
    for (PyObject*& v : shell_views_) Py_CLEAR(v);
    // Setting to None rather than null keeps is_none() checks valid if a
    // cleared engine is ever asked anything.
    for (py::object* o : references_of(*this)) *o = py::none();
}

PyObject* PyApp::view(CVec data, bool writable) const {
    // A C-contiguous view of engine memory (the app's element type). It gets
    // no base while it sits in the recycling cache; ViewRef gives it the
    // engine's storage as base the moment a callback keeps it.
    PyArray_Descr* descr = PyArray_DescrFromType(dtype_ == DType::float32 ? NPY_FLOAT32 : NPY_FLOAT64);
    const std::vector<Py_ssize_t>& shape = *cur_shape_;
    PyObject* arr =
        PyArray_NewFromDescr(&PyArray_Type, descr, static_cast<int>(shape.size()),
                             const_cast<npy_intp*>(reinterpret_cast<const npy_intp*>(shape.data())), nullptr,
                             const_cast<std::byte*>(data), writable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, nullptr);
    if (arr == nullptr) throw py::error_already_set();
    return arr;
}

PyObject* PyApp::rows_view(CVec data, std::size_t rows, bool writable, bool element_shape) const {
    std::vector<npy_intp> dims{static_cast<npy_intp>(rows)};
    if (element_shape) dims.insert(dims.end(), shape_.begin(), shape_.end());
    const int type = !element_shape || dtype_ == DType::float64 ? NPY_FLOAT64 : NPY_FLOAT32;
    PyObject* arr = PyArray_NewFromDescr(&PyArray_Type, PyArray_DescrFromType(type), static_cast<int>(dims.size()),
                                         dims.data(), nullptr, const_cast<std::byte*>(data),
                                         writable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, nullptr);
    if (arr == nullptr) throw py::error_already_set();
    if (memory_owner_.ptr() != nullptr) {
        Py_INCREF(memory_owner_.ptr());
        if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(arr), memory_owner_.ptr()) < 0) {
            Py_DECREF(arr);
            throw py::error_already_set();
        }
    }
    return arr;
}

void PyApp::set_shell(std::vector<Py_ssize_t> shell_shape, py::object init_shell, py::object state_type) {
    std::size_t m = 1;
    for (Py_ssize_t d : shell_shape) {
        if (d < 1) throw py::value_error("shell_shape entries must be integers >= 1");
        m *= static_cast<std::size_t>(d);
    }
    if (shell_shape.empty()) throw py::value_error("shell_shape must have at least one dimension");
    if (!PyType_Check(state_type.ptr()) ||
        !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(state_type.ptr()), &PyArray_Type))
        throw py::type_error("state_type must be a subclass of numpy.ndarray");
    shell_shape_ = std::move(shell_shape);
    shell_size_ = m;
    init_shell_ = std::move(init_shell);
    state_type_ = std::move(state_type);
}

namespace {
/// Give `arr` (a new array) `owner` as base; `arr` is released on failure.
PyObject* with_base(PyObject* arr, PyObject* owner) {
    if (arr == nullptr) throw py::error_already_set();
    if (owner == nullptr) return arr;
    Py_INCREF(owner);
    if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(arr), owner) < 0) {
        Py_DECREF(arr);
        throw py::error_already_set();
    }
    return arr;
}
}  // namespace

PyObject* PyApp::shell_view(CVec data, bool writable) const {
    PyObject* arr =
        PyArray_NewFromDescr(&PyArray_Type, PyArray_DescrFromType(NPY_FLOAT64), static_cast<int>(shell_shape_.size()),
                             const_cast<npy_intp*>(reinterpret_cast<const npy_intp*>(shell_shape_.data())), nullptr,
                             const_cast<std::byte*>(data), writable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, nullptr);
    return with_base(arr, memory_owner_.ptr());
}

PyObject* PyApp::shell_state_view(CVec data, bool writable, PyObject*& shell) const {
    static PyObject* const shell_name = PyUnicode_InternFromString("_shell");
    PyArray_Descr* descr = PyArray_DescrFromType(dtype_ == DType::float32 ? NPY_FLOAT32 : NPY_FLOAT64);
    PyObject* arr = with_base(
        PyArray_NewFromDescr(reinterpret_cast<PyTypeObject*>(state_type_.ptr()), descr, static_cast<int>(shape_.size()),
                             const_cast<npy_intp*>(reinterpret_cast<const npy_intp*>(shape_.data())), nullptr,
                             const_cast<std::byte*>(data), writable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, nullptr),
        memory_owner_.ptr());
    try {
        shell = shell_view(data + shell_offset(size_, dtype_), writable);
    } catch (...) {
        Py_DECREF(arr);
        throw;
    }
    if (PyObject_SetAttr(arr, shell_name, shell) != 0) {
        Py_DECREF(arr);
        Py_CLEAR(shell);
        throw py::error_already_set();
    }
    return arr;
}

namespace {
/// An array as we made it: `nd` dimensions `dims`, C-contiguous, writable as asked.
bool intact(PyObject* a, const std::vector<Py_ssize_t>& dims, bool writable) {
    auto* fields = reinterpret_cast<PyArrayObject_fields*>(a);
    auto* arr = reinterpret_cast<PyArrayObject*>(a);
    bool ok = fields->nd == static_cast<int>(dims.size()) && PyArray_CHKFLAGS(arr, NPY_ARRAY_C_CONTIGUOUS) &&
              (PyArray_ISWRITEABLE(arr) == writable);
    for (std::size_t d = 0; ok && d < dims.size(); ++d) ok = fields->dimensions[d] == dims[d];
    return ok;
}
}  // namespace

PyObject* PyApp::recycled_shell_state(PyObject*& slot, CVec data, bool writable) const {
    PyObject*& shell = shell_views_[&slot - views_];
    // Reusable when only the caches hold the state (1) and its shell (2: the cache and the state's _shell).
    if (slot != nullptr && shell != nullptr && Py_REFCNT(slot) == 1 && Py_REFCNT(shell) == 2 &&
        intact(slot, shape_, writable) && intact(shell, shell_shape_, writable)) {
        reinterpret_cast<PyArrayObject_fields*>(slot)->data = reinterpret_cast<char*>(const_cast<std::byte*>(data));
        reinterpret_cast<PyArrayObject_fields*>(shell)->data =
            reinterpret_cast<char*>(const_cast<std::byte*>(data + shell_offset(size_, dtype_)));
        Py_INCREF(slot);
        return slot;
    }
    Py_CLEAR(slot);
    Py_CLEAR(shell);
    slot = shell_state_view(data, writable, shell);
    Py_INCREF(slot);
    return slot;
}

PyObject* PyApp::recycled_view(PyObject*& slot, CVec data, bool writable) const {
    if (shell_size_ > 0) return recycled_shell_state(slot, data, writable);
    if (slot != nullptr && Py_REFCNT(slot) == 1) {
        auto* fields = reinterpret_cast<PyArrayObject_fields*>(slot);
        // Reuse only an untouched view: same shape and flags as we made it.
        const std::vector<Py_ssize_t>& shape = *cur_shape_;
        bool intact = fields->nd == static_cast<int>(shape.size()) &&
                      PyArray_CHKFLAGS(reinterpret_cast<PyArrayObject*>(slot), NPY_ARRAY_C_CONTIGUOUS) &&
                      (PyArray_ISWRITEABLE(reinterpret_cast<PyArrayObject*>(slot)) == writable);
        for (std::size_t d = 0; intact && d < shape.size(); ++d) intact = fields->dimensions[d] == shape[d];
        if (intact) {
            fields->data = reinterpret_cast<char*>(const_cast<std::byte*>(data));
            Py_INCREF(slot);
            return slot;
        }
    }
    Py_XDECREF(slot);
    slot = view(data, writable);
    Py_INCREF(slot);
    return slot;
}

PyObject* PyApp::status_object(const Status& st, bool basis_writable) {
    *status_ = st;
    auto* obj = reinterpret_cast<StatusObject*>(status_obj_.ptr());
    obj->memory_owner = memory_owner_.ptr();
    obj->basis_writable = basis_writable;
    return status_obj_.ptr();
}

void PyApp::check_in_place(const char* callback, PyObject* result, PyObject* target) const {
    // Callbacks work in place; returning a different array almost always means
    // the user rebound a local name (u = u + ...) and the engine state is stale.
    if (result == Py_None || result == target) return;
    std::string got = Py_TYPE(result)->tp_name;
    throw py::type_error(name_ + "." + callback +
                         " must update its array argument in place and return None (write u[...] = ... or use in-place "
                         "operators); it returned a " +
                         got);
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

/// Holds a recycled view for one call; afterwards, if the callback kept the
/// array (another reference exists), it leaves the cache and gets the engine's
/// storage (a capsule, not the engine) as base so the memory it points to
/// stays alive.
struct PyApp::ViewRef {
    PyObject* p;
    PyObject** slot;
    PyObject* owner;
    ~ViewRef() {
        Py_DECREF(p);
        if (slot == nullptr || *slot != p || Py_REFCNT(p) == 1) return;
        auto* arr = reinterpret_cast<PyArrayObject*>(p);
        if (owner != nullptr && PyArray_BASE(arr) == nullptr) {
            Py_INCREF(owner);
            if (PyArray_SetBaseObject(arr, owner) < 0) PyErr_Clear();
        }
        *slot = nullptr;
        Py_DECREF(p);
    }
};

void PyApp::init_any(double t, Vec u) {
    use_level(0);
    ViewRef uv{recycled_view(views_[0], u, true), &views_[0], memory_owner_.ptr()};
    Ref tv(PyFloat_FromDouble(t));
    if (tv.p == nullptr) throw py::error_already_set();
    PyObject* args[] = {tv.p, uv.p};
    Ref res(PyObject_Vectorcall(init_.ptr(), args, 2, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("init", res.p, uv.p);
}

void PyApp::init_shell_any(double t, Vec u) {
    Ref sv(shell_view(u + shell_offset(size_, dtype_), true));
    Ref tv(PyFloat_FromDouble(t));
    if (tv.p == nullptr) throw py::error_already_set();
    PyObject* args[] = {tv.p, sv.p};
    Ref res(PyObject_Vectorcall(init_shell_.ptr(), args, 2, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("init_shell", res.p, sv.p);
}

void PyApp::step_any(Vec u, CVec ustop, CVec fstop, const Status& st) {
    use_level(st.level);
    ViewRef uv{recycled_view(views_[0], u, true), &views_[0], memory_owner_.ptr()};
    ViewRef sv{ustop == u ? (Py_INCREF(uv.p), uv.p) : recycled_view(views_[1], ustop, false),
               ustop == u ? nullptr : &views_[1], memory_owner_.ptr()};  // an alias of u: uv settles it
    ViewRef fv{fstop ? recycled_view(views_[2], fstop, false) : (Py_INCREF(Py_None), Py_None), &views_[2],
               memory_owner_.ptr()};
    PyObject* args[] = {uv.p, sv.p, fv.p, status_object(st, true)};
    Ref res(PyObject_Vectorcall(step_.ptr(), args, 4, nullptr));
    status_->refine = nullptr;  // a status kept past the call must not point into the engine
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("step", res.p, uv.p);
}

void PyApp::step_batch_any(Vec u, CVec ustop, CVec fstop, const StepRows& rows, const Status& st) {
    Ref uv(rows_view(u, rows.count, true));
    Ref sv(ustop == u ? (Py_INCREF(uv.p), uv.p) : rows_view(ustop, rows.count, false));
    Ref fv(fstop ? rows_view(fstop, rows.count, false) : (Py_INCREF(Py_None), Py_None));
    Ref t0(rows_view(reinterpret_cast<CVec>(rows.tstart), rows.count, false, false));
    Ref t1(rows_view(reinterpret_cast<CVec>(rows.tstop), rows.count, false, false));
    PyObject* args[] = {uv.p, sv.p, fv.p, t0.p, t1.p, status_object(st)};
    Ref res(PyObject_Vectorcall(step_batch_.ptr(), args, 6, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("step_batch", res.p, uv.p);
}

void PyApp::step_adjoint_batch_any(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const StepRows& rows,
                                   const Status& st) {
    Ref uv(rows_view(u, rows.count, false));
    Ref sv(ustop == u ? (Py_INCREF(uv.p), uv.p) : rows_view(ustop, rows.count, false));
    Ref bv(rows_view(u_bar, rows.count, true));
    Ref sbv(rows_view(ustop_bar, rows.count, true));
    Ref t0(rows_view(reinterpret_cast<CVec>(rows.tstart), rows.count, false, false));
    Ref t1(rows_view(reinterpret_cast<CVec>(rows.tstop), rows.count, false, false));
    PyObject* args[] = {uv.p, sv.p, bv.p, sbv.p, t0.p, t1.p, status_object(st)};
    Ref res(PyObject_Vectorcall(step_adjoint_batch_.ptr(), args, 7, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("step_adjoint_batch", res.p, bv.p);
}

void PyApp::residual_any(CVec ustop, Vec r, const Status& st) {
    use_level(st.level);
    ViewRef sv{recycled_view(views_[1], ustop, false), &views_[1], memory_owner_.ptr()};
    ViewRef rv{recycled_view(views_[0], r, true), &views_[0], memory_owner_.ptr()};
    PyObject* args[] = {sv.p, rv.p, status_object(st)};
    Ref res(PyObject_Vectorcall(residual_.ptr(), args, 3, nullptr));
    status_->refine = nullptr;  // a status kept past the call must not point into the engine
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("residual", res.p, rv.p);
}

double PyApp::spatial_norm_any(CVec u) {
    use_level(0);  // norms are of level-0 states
    ViewRef uv{recycled_view(views_[1], u, false), &views_[1], memory_owner_.ptr()};
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

void PyApp::access_any(CVec u, const Status& st) {
    use_level(st.level);
    ViewRef uv{recycled_view(views_[1], u, false), &views_[1], memory_owner_.ptr()};
    PyObject* args[] = {uv.p, status_object(st)};
    Ref res(PyObject_Vectorcall(access_.ptr(), args, 2, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
}

void PyApp::init_basis_any(double t, int index, Vec v) {
    ViewRef vv{recycled_view(views_[0], v, true), &views_[0], memory_owner_.ptr()};
    Ref tv(PyFloat_FromDouble(t));
    Ref iv(PyLong_FromLong(index));
    if (tv.p == nullptr || iv.p == nullptr) throw py::error_already_set();
    PyObject* args[] = {tv.p, iv.p, vv.p};
    Ref res(PyObject_Vectorcall(init_basis_.ptr(), args, 3, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("init_basis", res.p, vv.p);
}

double PyApp::inner_product_any(CVec u, CVec v) {
    ViewRef uv{recycled_view(views_[1], u, false), &views_[1], memory_owner_.ptr()};
    ViewRef vv{recycled_view(views_[2], v, false), &views_[2], memory_owner_.ptr()};
    PyObject* args[] = {uv.p, vv.p};
    return call_real(inner_product_, "inner_product", args, 2);
}

void PyApp::set_adjoint(py::object objective, py::object objective_adjoint, py::object step_adjoint,
                        py::object reset_gradient, py::object postprocess, py::object postprocess_adjoint,
                        py::object init_adjoint) {
    init_adjoint_ = std::move(init_adjoint);
    objective_ = std::move(objective);
    objective_adjoint_ = std::move(objective_adjoint);
    step_adjoint_ = std::move(step_adjoint);
    reset_gradient_ = std::move(reset_gradient);
    postprocess_ = std::move(postprocess);
    postprocess_adjoint_ = std::move(postprocess_adjoint);
}

double PyApp::call_real(const py::object& fn, const char* name, PyObject* const* args, std::size_t nargs) const {
    Ref res(PyObject_Vectorcall(fn.ptr(), args, nargs, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    const double value = PyFloat_AsDouble(res.p);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        throw py::type_error(name_ + "." + name + " must return a real number, got " +
                             std::string(Py_TYPE(res.p)->tp_name));
    }
    return value;
}

double PyApp::objective_any(CVec u, const Status& st) {
    use_level(0);
    ViewRef uv{recycled_view(views_[1], u, false), &views_[1], memory_owner_.ptr()};
    PyObject* args[] = {uv.p, status_object(st)};
    return call_real(objective_, "objective", args, 2);
}

void PyApp::objective_adjoint_any(CVec u, Vec u_bar, double f_bar, const Status& st) {
    use_level(0);
    ViewRef uv{recycled_view(views_[1], u, false), &views_[1], memory_owner_.ptr()};
    ViewRef bv{recycled_view(views_[3], u_bar, true), &views_[3], memory_owner_.ptr()};
    Ref fv(PyFloat_FromDouble(f_bar));
    PyObject* args[] = {uv.p, bv.p, fv.p, status_object(st)};
    Ref res(PyObject_Vectorcall(objective_adjoint_.ptr(), args, 4, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("objective_adjoint", res.p, bv.p);
}

void PyApp::step_adjoint_any(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const Status& st) {
    use_level(st.level);
    ViewRef uv{recycled_view(views_[1], u, false), &views_[1], memory_owner_.ptr()};
    ViewRef sv{ustop == u ? (Py_INCREF(uv.p), uv.p) : recycled_view(views_[2], ustop, false),
               ustop == u ? nullptr : &views_[2], memory_owner_.ptr()};
    ViewRef bv{recycled_view(views_[3], u_bar, true), &views_[3], memory_owner_.ptr()};
    ViewRef sbv{recycled_view(views_[4], ustop_bar, true), &views_[4], memory_owner_.ptr()};
    PyObject* args[] = {uv.p, sv.p, bv.p, sbv.p, status_object(st)};
    Ref res(PyObject_Vectorcall(step_adjoint_.ptr(), args, 5, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place("step_adjoint", res.p, bv.p);
}

void PyApp::reset_gradient() {
    if (reset_gradient_.is_none()) return;
    Ref res(PyObject_CallNoArgs(reset_gradient_.ptr()));
    if (res.p == nullptr) throw py::error_already_set();
}

void PyApp::init_adjoint_any(double t, CVec u_bar, const Status& st) {
    if (init_adjoint_.is_none()) return;
    use_level(0);
    ViewRef bv{recycled_view(views_[1], u_bar, false), &views_[1], memory_owner_.ptr()};
    Ref tv(PyFloat_FromDouble(t));
    PyObject* args[] = {tv.p, bv.p, status_object(st)};
    Ref res(PyObject_Vectorcall(init_adjoint_.ptr(), args, 3, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
}

void PyApp::set_spatial(py::object shape_at, py::object coarsen, py::object refine, py::object coarsen_adjoint,
                        py::object refine_adjoint) {
    shape_at_ = std::move(shape_at);
    coarsen_ = std::move(coarsen);
    refine_ = std::move(refine);
    coarsen_adjoint_ = std::move(coarsen_adjoint);
    refine_adjoint_ = std::move(refine_adjoint);
}

std::size_t PyApp::size_at(int level) {
    if (shape_at_.is_none() || level == 0) return size_;
    // The Python side checked the answer (a tuple of ints >= 1, naming shape_at and the level).
    std::vector<Py_ssize_t> shape;
    for (py::handle d : shape_at_(level)) shape.push_back(d.cast<Py_ssize_t>());
    if (level_shapes_.size() <= static_cast<std::size_t>(level))
        level_shapes_.resize(static_cast<std::size_t>(level) + 1);
    std::size_t size = 1;
    for (Py_ssize_t d : shape) size *= static_cast<std::size_t>(d);
    level_shapes_[static_cast<std::size_t>(level)] = std::move(shape);
    return size;
}

const std::vector<Py_ssize_t>& PyApp::level_shape(int level) const noexcept {
    if (level <= 0 || static_cast<std::size_t>(level) >= level_shapes_.size()) return shape_;
    const auto& shape = level_shapes_[static_cast<std::size_t>(level)];
    return shape.empty() ? shape_ : shape;
}

void PyApp::call_space(const py::object& fn, const char* name, CVec src, int src_level, Vec dst, int dst_level,
                       const Status& st) {
    use_level(src_level);
    ViewRef sv{recycled_view(views_[1], src, false), &views_[1], memory_owner_.ptr()};
    use_level(dst_level);
    ViewRef dv{recycled_view(views_[0], dst, true), &views_[0], memory_owner_.ptr()};
    PyObject* args[] = {sv.p, dv.p, status_object(st)};
    Ref res(PyObject_Vectorcall(fn.ptr(), args, 3, nullptr));
    if (res.p == nullptr) throw py::error_already_set();
    check_in_place(name, res.p, dv.p);
}

void PyApp::coarsen_any(CVec fine, Vec coarse, const Status& st) {
    call_space(coarsen_, "coarsen", fine, st.level, coarse, st.level + 1, st);
}

void PyApp::refine_any(CVec coarse, Vec fine, const Status& st) {
    call_space(refine_, "refine", coarse, st.level + 1, fine, st.level, st);
}

void PyApp::coarsen_adjoint_any(CVec coarse_bar, Vec fine_bar, const Status& st) {
    call_space(coarsen_adjoint_, "coarsen_adjoint", coarse_bar, st.level + 1, fine_bar, st.level, st);
}

void PyApp::refine_adjoint_any(CVec fine_bar, Vec coarse_bar, const Status& st) {
    call_space(refine_adjoint_, "refine_adjoint", fine_bar, st.level, coarse_bar, st.level + 1, st);
}

void PyApp::sync(const Status& st) {
    PyObject* args[] = {status_object(st)};
    Ref res(PyObject_Vectorcall(sync_.ptr(), args, 1, nullptr));
    // A status object kept past the call must not point into the engine.
    status_->error_estimates = nullptr;
    status_->n_error_estimates = 0;
    if (res.p == nullptr) throw py::error_already_set();
}

double PyApp::postprocess(double sum) {
    Ref sv(PyFloat_FromDouble(sum));
    PyObject* args[] = {sv.p};
    return call_real(postprocess_, "postprocess_objective", args, 1);
}

double PyApp::postprocess_adjoint(double sum) {
    Ref sv(PyFloat_FromDouble(sum));
    PyObject* args[] = {sv.p};
    return call_real(postprocess_adjoint_, "postprocess_objective_adjoint", args, 1);
}

}  // namespace pxb::bind
