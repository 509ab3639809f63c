// The trampoline that lets a Python object act as a core App. Converts only:
// engine memory -> numpy views (no copies), Status -> a reused status object,
// Python exceptions -> error_already_set (re-raised unchanged by pybind11).
#pragma once

#include <pybind11/pybind11.h>
#include <array>

#include <string>
#include <vector>

#include "core/app.hpp"

namespace pxb::bind {

/// Import numpy's C API (call once from the module init).
void init_numpy();

/// Create the Python type pyxbraid.Status (a plain CPython type: attribute
/// reads cost ~20 ns instead of ~150 ns through a pybind11 property) and add it
/// to `module`.
void register_status_type(pybind11::module_& module);

class PyApp : public App {
public:
    /// `methods`: bound methods init, step, residual, spatial_norm, access
    /// (None where the app does not define the optional ones).
    PyApp(pybind11::object app, std::vector<Py_ssize_t> shape, const std::string& dtype, pybind11::object init,
          pybind11::object step, pybind11::object residual, pybind11::object spatial_norm, pybind11::object access);

    /// Adjoint callbacks (None where undefined): objective, objective_adjoint,
    /// step_adjoint, reset_gradient, postprocess_objective, postprocess_objective_adjoint.
    void set_adjoint(pybind11::object objective, pybind11::object objective_adjoint, pybind11::object step_adjoint,
                     pybind11::object reset_gradient, pybind11::object postprocess,
                     pybind11::object postprocess_adjoint, pybind11::object init_adjoint);
    /// The app's step_batch and step_adjoint_batch (None: one by one).
    void set_step_batch(pybind11::object step_batch, pybind11::object step_adjoint_batch) {
        step_batch_ = std::move(step_batch);
        step_adjoint_batch_ = std::move(step_adjoint_batch);
    }
    /// The app's sync (None: not called).
    void set_sync(pybind11::object sync) { sync_ = std::move(sync); }
    /// Delta correction: the app's init_basis and inner_product (None: the Euclidean dot product).
    void set_basis(pybind11::object init_basis, pybind11::object inner_product) {
        init_basis_ = std::move(init_basis);
        inner_product_ = std::move(inner_product);
    }
    /// Shells (XBraid's braid_SetShell; before the engine is built): their
    /// shape, the app's init_shell and the ndarray subclass whose instances
    /// carry a shell (pyxbraid.app.ShellState: states are handed out as it,
    /// with the shell as attribute `_shell`).
    void set_shell(std::vector<Py_ssize_t> shell_shape, pybind11::object init_shell, pybind11::object state_type);
    /// Spatial coarsening: `shape_at(level)` returns the level's shape as a
    /// tuple of ints (checked in Python; None: the app's shape on every
    /// level), `coarsen` and `refine` the app's methods (None: copies).
    void set_spatial(pybind11::object shape_at, pybind11::object coarsen, pybind11::object refine,
                     pybind11::object coarsen_adjoint, pybind11::object refine_adjoint);
    ~PyApp() override;

    std::size_t size() const override { return size_; }
    std::size_t size_at(int level) override;
    bool has_spatial_coarsening() const override { return !coarsen_.is_none(); }
    void coarsen_any(CVec fine, Vec coarse, const Status& st) override;
    void refine_any(CVec coarse, Vec fine, const Status& st) override;
    bool has_spatial_adjoint() const override { return !coarsen_adjoint_.is_none(); }
    void coarsen_adjoint_any(CVec coarse_bar, Vec fine_bar, const Status& st) override;
    void refine_adjoint_any(CVec fine_bar, Vec coarse_bar, const Status& st) override;
    DType dtype() const override { return dtype_; }
    std::string name() const override { return name_; }
    void init_any(double t, Vec u) override;
    std::size_t shell_size() const override { return shell_size_; }
    void init_shell_any(double t, Vec u) override;
    void step_any(Vec u, CVec ustop, CVec fstop, const Status& st) override;
    bool has_step_batch() const override { return !step_batch_.is_none(); }
    void step_batch_any(Vec u, CVec ustop, CVec fstop, const StepRows& rows, const Status& st) override;
    bool has_step_adjoint_batch() const override { return !step_adjoint_batch_.is_none(); }
    void step_adjoint_batch_any(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const StepRows& rows,
                                const Status& st) override;
    bool has_residual() const override { return !residual_.is_none(); }
    void residual_any(CVec ustop, Vec r, const Status& st) override;
    bool has_spatial_norm() const override { return !norm_.is_none(); }
    double spatial_norm_any(CVec u) override;
    bool has_access() const override { return !access_.is_none(); }
    void access_any(CVec u, const Status& st) override;

    bool has_adjoint() const override { return !objective_.is_none(); }
    double objective_any(CVec u, const Status& st) override;
    void objective_adjoint_any(CVec u, Vec u_bar, double f_bar, const Status& st) override;
    void step_adjoint_any(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const Status& st) override;
    void reset_gradient() override;
    void init_adjoint_any(double t, CVec u_bar, const Status& st) override;
    bool has_postprocess() const override { return !postprocess_.is_none(); }
    double postprocess(double sum) override;
    double postprocess_adjoint(double sum) override;
    bool has_sync() const override { return !sync_.is_none(); }
    bool has_init_basis() const override { return !init_basis_.is_none(); }
    void init_basis_any(double t, int index, Vec v) override;
    bool has_inner_product() const override { return !inner_product_.is_none(); }
    double inner_product_any(CVec u, CVec v) override;
    void sync(const Status& st) override;

    /// A Python object owning the memory callbacks see (a capsule around the
    /// engine's Storage, not the engine): an array a callback kept holds it,
    /// so the memory outlives the engine without keeping the engine or the
    /// app alive (numpy arrays are invisible to the cycle collector).
    void set_memory_owner(pybind11::object owner) { memory_owner_ = std::move(owner); }

    /// Garbage-collector support for the object that owns this app (the
    /// engine): visit / drop every Python reference held here.
    int traverse(visitproc visit, void* arg) const;
    void clear_references();

private:
    /// The app and its bound methods (pointers, const for a const self): what garbage collection
    /// traverses and clears.
    template <class Self>
    static auto references_of(Self& self);
    PyObject* view(CVec data, bool writable) const;
    /// Apps with shells: a new state array of the ShellState type carrying
    /// its shell `shell` (both with the engine's storage as base; `shell`
    /// gets a new reference).
    PyObject* shell_state_view(CVec data, bool writable, PyObject*& shell) const;
    /// recycled_view for apps with shells: the cached ShellState of `slot` and
    /// its shell (the same slot of shell_views_) are reused when nobody else holds them.
    PyObject* recycled_shell_state(PyObject*& slot, CVec data, bool writable) const;
    /// A new float64 array of shell_shape over `data`, with the engine's storage as base.
    PyObject* shell_view(CVec data, bool writable) const;
    /// A new (rows, *shape) view of engine memory with the engine's storage as
    /// base (a kept one stays valid); `element_shape` false: a (rows,) float64 view.
    PyObject* rows_view(CVec data, std::size_t rows, bool writable, bool element_shape = true) const;
    /// A view of `data`, reusing the array object in `slot` when nobody else
    /// holds it (the user did not keep it): saves an allocation per call.
    PyObject* recycled_view(PyObject*& slot, CVec data, bool writable) const;
    /// The reused status object holding `st` (`basis_writable`: a step's basis views are writable).
    PyObject* status_object(const Status& st, bool basis_writable = false);
    /// The shape of the states of `level` (the app's shape unless shape_at says otherwise).
    const std::vector<Py_ssize_t>& level_shape(int level) const noexcept;
    /// The views made next have the shape of `level`'s states.
    void use_level(int level) const noexcept { cur_shape_ = &level_shape(level); }
    struct ViewRef;
    void check_in_place(const char* callback, PyObject* result, PyObject* target) const;

    pybind11::object app_, init_, step_, residual_, norm_, access_, status_obj_;
    pybind11::object objective_ = pybind11::none(), objective_adjoint_ = pybind11::none(),
                     step_adjoint_ = pybind11::none(), reset_gradient_ = pybind11::none(),
                     postprocess_ = pybind11::none(), postprocess_adjoint_ = pybind11::none(),
                     init_adjoint_ = pybind11::none(), step_batch_ = pybind11::none(),
                     step_adjoint_batch_ = pybind11::none(), sync_ = pybind11::none(), init_shell_ = pybind11::none(),
                     state_type_ = pybind11::none(), shape_at_ = pybind11::none(), coarsen_ = pybind11::none(),
                     refine_ = pybind11::none(), coarsen_adjoint_ = pybind11::none(),
                     refine_adjoint_ = pybind11::none(), init_basis_ = pybind11::none(),
                     inner_product_ = pybind11::none();
    /// Call `fn(src, dst, status)` with src of `src_level`'s shape (read-only) and dst of `dst_level`'s (written).
    void call_space(const pybind11::object& fn, const char* name, CVec src, int src_level, Vec dst, int dst_level,
                    const Status& st);
    double call_real(const pybind11::object& fn, const char* name, PyObject* const* args, std::size_t nargs) const;
    Status* status_ = nullptr;
    mutable PyObject* views_[5] = {nullptr, nullptr, nullptr, nullptr,
                                   nullptr};  ///< recycled views: u (rw), ustop (ro), fstop (ro), bar (rw), bar2 (rw)
    mutable PyObject* shell_views_[5] = {nullptr, nullptr, nullptr, nullptr,
                                         nullptr};  ///< their shells (apps with shells)
    std::vector<Py_ssize_t> shape_;
    std::vector<std::vector<Py_ssize_t>> level_shapes_;           ///< shape_at's answers (empty: the app's shape)
    mutable const std::vector<Py_ssize_t>* cur_shape_ = &shape_;  ///< shape of the views made now
    std::size_t size_ = 1;
    std::vector<Py_ssize_t> shell_shape_;
    std::size_t shell_size_ = 0;
    DType dtype_ = DType::float64;
    std::string name_;
    pybind11::object memory_owner_;  ///< see set_memory_owner
};

}  // namespace pxb::bind
