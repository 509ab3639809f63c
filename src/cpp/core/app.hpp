/// \file app.hpp
/// \brief The user problem as the engine sees it: XBraid's user callbacks on
///        contiguous states owned by the engine, of the element type the app
///        declares (float64 or float32).
///
/// The engine talks to every app through the type-erased calls of `App`
/// (`*_any`, states as bytes). Native apps derive from `TypedApp<double>` and
/// write their callbacks on `double*`; the Python app handles both types itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/status.hpp"
#include "core/vector_ops.hpp"

namespace pxb {

/// The times of a group of independent steps (row i: tstart[i] -> tstop[i]).
struct StepRows {
    std::size_t count = 0;
    const double* tstart = nullptr;
    const double* tstop = nullptr;
};

/// Abstract application: sizes, capabilities and the type-erased callbacks.
class App {
public:
    virtual ~App() = default;

    /// Number of elements in one state vector (of the finest level).
    virtual std::size_t size() const = 0;
    /// Number of elements of a state on `level` (spatial coarsening; default
    /// size()). Asked once per level when a solver is built; never more than size().
    virtual std::size_t size_at(int /*level*/) { return size(); }
    /// True when coarsen_any/refine_any move states between levels
    /// (XBraid's braid_SetSpatialCoarsen / braid_SetSpatialRefine); without
    /// them a state moves between levels as a copy.
    virtual bool has_spatial_coarsening() const { return false; }
    /// True when coarsen_adjoint_any/refine_adjoint_any are defined (the adjoint with spatial coarsening).
    virtual bool has_spatial_adjoint() const { return false; }
    /// Element type of the states (the engine stores, sends and hands out this type).
    virtual DType dtype() const { return DType::float64; }
    /// float64 values of a state's shell (XBraid's braid_SetShell): per-point
    /// metadata stored after the state (see shell_offset), copied and sent with
    /// it, never summed or normed, and kept where storage drops the state.
    /// 0: no shells (the default).
    virtual std::size_t shell_size() const { return 0; }

    /// Told the time interval once, when a solver is built for this app.
    virtual void on_setup(double /*tstart*/, double /*tstop*/) {}

    /// Name used in error messages ("Decay", "LinearODE").
    virtual std::string name() const { return "App"; }

    /// Fingerprint of the problem's parameters (e.g. Fingerprint from
    /// core/fingerprint.hpp over them): every rank must build the solver for
    /// the same problem, and the engine compares this value across ranks when
    /// it is built. Leave out what legitimately differs per rank (the design
    /// of distributed layers). Default 0: nothing to compare.
    virtual std::uint64_t fingerprint() const { return 0; }

    virtual bool has_residual() const { return false; }
    virtual bool has_spatial_norm() const { return false; }
    virtual bool has_access() const { return false; }
    virtual bool has_adjoint() const { return false; }
    virtual bool has_postprocess() const { return false; }
    /// True when sync() wants to be called (XBraid's braid_SetSync).
    virtual bool has_sync() const { return false; }
    /// Called on every rank at fixed points of the algorithm; `st.phase` says
    /// which (after_init, top_cycle): XBraid's sync callback. No state is passed.
    virtual void sync(const Status& /*st*/) {}
    /// True when step_batch_any advances many independent states in one call:
    /// the engine then groups the independent steps of its sweeps.
    virtual bool has_step_batch() const { return false; }
    /// False when step_adjoint never reads ustop (its result does not depend
    /// on the step's guess, so ustop_bar stays zero): the adjoint then saves
    /// one state per step, not two, and neither checks nor adds ustop_bar.
    virtual bool step_adjoint_uses_ustop() const { return true; }

    /// Delta correction: true when init_basis_any is defined (it must be for delta_rank > 0).
    virtual bool has_init_basis() const { return false; }
    /// Delta correction, who propagates the basis: true when jacobian_apply_any
    /// does (native apps); the engine then calls it at the step's input state
    /// just before step_any, which sees no basis. False: step_any replaces
    /// st.basis itself (the Python app).
    virtual bool has_jacobian() const { return false; }
    /// Why delta correction is refused when has_init_basis() is false (error
    /// messages: "<name> <this>; delta_rank=r needs it").
    virtual std::string delta_requirement() const { return "defines no init_basis"; }
    /// True when inner_product_any replaces the Euclidean dot product.
    virtual bool has_inner_product() const { return false; }

    // -- the callbacks, type-erased (see TypedApp for their meaning) -------------------
    virtual void init_any(double t, Vec u) = 0;
    /// Fill only the shell of `u` (at shell_offset) for time t: the points
    /// where storage keeps a shell only (XBraid's SInit). Apps with shells only.
    virtual void init_shell_any(double t, Vec u);
    virtual void step_any(Vec u, CVec ustop, CVec fstop, const Status& st) = 0;
    /// Rows of `rows.count` states, contiguous: u (in/out), ustop (in), fstop
    /// (in, or nullptr); each row is the step it would be alone, `st` tells
    /// what the rows share (level, phase, iteration; its times are NaN).
    virtual void step_batch_any(Vec u, CVec ustop, CVec fstop, const StepRows& rows, const Status& st);
    /// True when step_adjoint_batch_any takes the adjoints of a group of steps in one call.
    virtual bool has_step_adjoint_batch() const { return false; }
    /// The adjoints of `rows.count` independent steps: rows of u, ustop (in),
    /// u_bar (in/out), ustop_bar (out, zeroed on entry), as step_adjoint_any row by row.
    virtual void step_adjoint_batch_any(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const StepRows& rows,
                                        const Status& st);
    virtual void residual_any(CVec ustop, Vec r, const Status& st);
    virtual double spatial_norm_any(CVec u);
    /// Fill `v` (a state) with basis vector `index` at time t (XBraid's InitBasis).
    virtual void init_basis_any(double t, int index, Vec v);
    /// An inner product of two states (XBraid's InnerProd; when has_inner_product()).
    virtual double inner_product_any(CVec u, CVec v);
    /// Replace each of the `rank` basis vectors (states, one after the other)
    /// by the Jacobian of the step st.tstart -> st.tstop at its input state
    /// `u` applied to it (when has_jacobian(); XBraid's step on basis vectors).
    virtual void jacobian_apply_any(CVec u, Vec basis, int rank, const Status& st);
    virtual void access_any(CVec u, const Status& st);
    virtual double objective_any(CVec u, const Status& st);
    virtual void objective_adjoint_any(CVec u, Vec u_bar, double f_bar, const Status& st);
    virtual void step_adjoint_any(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const Status& st);
    virtual void init_adjoint_any(double t, CVec u_bar, const Status& st);
    /// Spatial coarsening: fill `coarse` (size_at(st.level + 1) elements) from
    /// `fine` (size_at(st.level)); st.level is the fine level, as in XBraid.
    virtual void coarsen_any(CVec fine, Vec coarse, const Status& st);
    /// Spatial refinement: fill `fine` (size_at(st.level)) from `coarse`
    /// (size_at(st.level + 1)); st.level is the fine level.
    virtual void refine_any(CVec coarse, Vec fine, const Status& st);
    /// The transpose of coarsen (a linear map): `fine_bar` (out, zeroed on
    /// entry, size_at(st.level)) = C^T `coarse_bar` (size_at(st.level + 1)).
    virtual void coarsen_adjoint_any(CVec coarse_bar, Vec fine_bar, const Status& st);
    /// The transpose of refine: `coarse_bar` (out, zeroed on entry) = R^T `fine_bar`.
    virtual void refine_adjoint_any(CVec fine_bar, Vec coarse_bar, const Status& st);

    // -- design (XBraid_Adjoint) ------------------------------------------------------
    /// Set the gradient accumulator to zero.
    virtual void reset_gradient() {}
    /// J = F(I) from I = sum of objective().
    virtual double postprocess(double sum) { return sum; }
    /// dF/dI at I = sum; may ASSIGN the design part of dF/ddesign to the gradient.
    virtual double postprocess_adjoint(double /*sum*/) { return 1.0; }
};

/// An app written on `Real*` states (native apps: TypedApp<double>).
template <class Real>
class TypedApp : public App {
public:
    DType dtype() const override { return sizeof(Real) == sizeof(float) ? DType::float32 : DType::float64; }

    /// Fill `u` (out) with the initial condition at t = tstart, a guess elsewhere.
    virtual void init(double t, Real* u) = 0;
    /// Advance `u` (in/out) from st.tstart to st.tstop. `ustop` (in) is the
    /// engine's best guess of the result (XBraid's ustop); `fstop` (in) is the
    /// FAS right-hand side, or nullptr (only passed when has_residual()).
    virtual void step(Real* u, const Real* ustop, const Real* fstop, const Status& st) = 0;
    /// XBraid's residual: on entry `r` (in/out) holds u(tstart); on exit
    /// r = A(ustop, r), the residual of the step equation at tstop.
    virtual void residual(const Real* /*ustop*/, Real* /*r*/, const Status& /*st*/) { missing("residual"); }
    /// Replaces the default Euclidean 2-norm when has_spatial_norm().
    virtual double spatial_norm(const Real* /*u*/) { missing("spatial_norm"); }
    /// Look at a state (when has_access()).
    virtual void access(const Real* /*u*/, const Status& /*st*/) {}
    /// f(u) at one fine time point st.tstart (index st.tindex).
    virtual double objective(const Real* /*u*/, const Status& /*st*/) { missing("objective"); }
    /// u_bar (out, zeroed on entry) = (df/du)^T f_bar; add (df/ddesign)^T f_bar to the gradient.
    virtual void objective_adjoint(const Real* /*u*/, Real* /*u_bar*/, double /*f_bar*/, const Status& /*st*/) {
        missing("objective_adjoint");
    }
    /// u (in): the step's input state; ustop (in): its ustop. u_bar (in/out):
    /// overwrite with (dPhi/du)^T u_bar; ustop_bar (out, zeroed on entry):
    /// (dPhi/dustop)^T u_bar; add (dPhi/ddesign)^T u_bar to the gradient.
    virtual void step_adjoint(const Real* /*u*/, const Real* /*ustop*/, Real* /*u_bar*/, Real* /*ustop_bar*/,
                              const Status& /*st*/) {
        missing("step_adjoint");
    }
    /// u_bar (in): the adjoint of the initial state init(tstart) after a
    /// reverse sweep; add (d init / d design)^T u_bar to the gradient. Not in
    /// XBraid (whose initial condition cannot depend on the design); called
    /// on the rank owning index 0 once per adjoint iteration. Default: no-op.
    virtual void init_adjoint(double /*t*/, const Real* /*u_bar*/, const Status& /*st*/) {}
    /// Delta correction: true when jacobian_apply is defined. A native app
    /// supports delta correction exactly when it has one (init_basis defaults
    /// to unit vectors, the inner product to the Euclidean one).
    bool has_jacobian() const override { return false; }
    bool has_init_basis() const final { return has_jacobian(); }
    std::string delta_requirement() const override {
        return "has no Jacobian-vector product (a native app provides has_jacobian() and jacobian_apply())";
    }
    /// Basis vector `index` at time t into `v` (zeroed on entry): by default
    /// the unit vector e_index, as XBraid's ex-07.
    virtual void init_basis(double /*t*/, int index, Real* v) { v[index] = Real(1); }
    /// `rank` basis vectors of size() elements each, one after the other, in
    /// `basis` (in/out): replace each by J v, J the Jacobian of step() from
    /// st.tstart to st.tstop at its input state `u` (the state has not been
    /// advanced yet). Called only when has_jacobian().
    virtual void jacobian_apply(const Real* /*u*/, Real* /*basis*/, int /*rank*/, const Status& /*st*/) {
        missing("jacobian_apply");
    }
    /// Spatial coarsening (when has_spatial_coarsening()): see App::coarsen_any.
    virtual void coarsen(const Real* /*fine*/, Real* /*coarse*/, const Status& /*st*/) { missing("coarsen"); }
    /// Spatial refinement (when has_spatial_coarsening()): see App::refine_any.
    virtual void refine(const Real* /*coarse*/, Real* /*fine*/, const Status& /*st*/) { missing("refine"); }
    /// See App::coarsen_adjoint_any (when has_spatial_adjoint()).
    virtual void coarsen_adjoint(const Real* /*coarse_bar*/, Real* /*fine_bar*/, const Status& /*st*/) {
        missing("coarsen_adjoint");
    }
    /// See App::refine_adjoint_any (when has_spatial_adjoint()).
    virtual void refine_adjoint(const Real* /*fine_bar*/, Real* /*coarse_bar*/, const Status& /*st*/) {
        missing("refine_adjoint");
    }

    void init_any(double t, Vec u) final { init(t, ops::as<Real>(u)); }
    void step_any(Vec u, CVec ustop, CVec fstop, const Status& st) final {
        step(ops::as<Real>(u), ops::as<Real>(ustop), fstop ? ops::as<Real>(fstop) : nullptr, st);
    }
    void residual_any(CVec ustop, Vec r, const Status& st) final {
        residual(ops::as<Real>(ustop), ops::as<Real>(r), st);
    }
    double spatial_norm_any(CVec u) final { return spatial_norm(ops::as<Real>(u)); }
    void access_any(CVec u, const Status& st) final { access(ops::as<Real>(u), st); }
    double objective_any(CVec u, const Status& st) final { return objective(ops::as<Real>(u), st); }
    void objective_adjoint_any(CVec u, Vec u_bar, double f_bar, const Status& st) final {
        objective_adjoint(ops::as<Real>(u), ops::as<Real>(u_bar), f_bar, st);
    }
    void step_adjoint_any(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const Status& st) final {
        step_adjoint(ops::as<Real>(u), ops::as<Real>(ustop), ops::as<Real>(u_bar), ops::as<Real>(ustop_bar), st);
    }
    void init_adjoint_any(double t, CVec u_bar, const Status& st) final { init_adjoint(t, ops::as<Real>(u_bar), st); }
    void init_basis_any(double t, int index, Vec v) final { init_basis(t, index, ops::as<Real>(v)); }
    void jacobian_apply_any(CVec u, Vec basis, int rank, const Status& st) final {
        jacobian_apply(ops::as<Real>(u), ops::as<Real>(basis), rank, st);
    }
    void coarsen_any(CVec fine, Vec coarse, const Status& st) final {
        coarsen(ops::as<Real>(fine), ops::as<Real>(coarse), st);
    }
    void refine_any(CVec coarse, Vec fine, const Status& st) final {
        refine(ops::as<Real>(coarse), ops::as<Real>(fine), st);
    }
    void coarsen_adjoint_any(CVec coarse_bar, Vec fine_bar, const Status& st) final {
        coarsen_adjoint(ops::as<Real>(coarse_bar), ops::as<Real>(fine_bar), st);
    }
    void refine_adjoint_any(CVec fine_bar, Vec coarse_bar, const Status& st) final {
        refine_adjoint(ops::as<Real>(fine_bar), ops::as<Real>(coarse_bar), st);
    }

private:
    [[noreturn]] void missing(const char* callback) const {
        throw std::logic_error(name() + " defines no " + callback + " (called without the capability)");
    }
};

}  // namespace pxb
