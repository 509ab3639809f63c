/// \file app.hpp
/// \brief The user problem as the engine sees it: XBraid's user callbacks on
///        contiguous float64 states owned by the engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.hpp"

namespace pxb {

/// Abstract application. States are `size()` contiguous doubles owned by the
/// engine; callbacks work in place and must not keep the pointers.
class App {
public:
    virtual ~App() = default;

    /// Number of doubles in one state vector.
    virtual std::size_t size() const = 0;

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

    /// Fill `u` (out) with the initial condition at t = tstart, a guess elsewhere.
    virtual void init(double t, double* u) = 0;

    /// Advance `u` (in/out) from st.tstart to st.tstop. `ustop` (in) is the
    /// engine's best guess of the result (XBraid's ustop); `fstop` (in) is the
    /// FAS right-hand side, or nullptr (only passed when has_residual()).
    virtual void step(double* u, const double* ustop, const double* fstop, const Status& st) = 0;

    /// True when the app supplies residual(); changes FAS semantics as in XBraid.
    virtual bool has_residual() const { return false; }

    /// XBraid's residual: on entry `r` (in/out) holds u(tstart); on exit
    /// r = A(ustop, r), the residual of the step equation at tstop.
    virtual void residual(const double* ustop, double* r, const Status& st);

    /// True when spatial_norm() replaces the default Euclidean 2-norm.
    virtual bool has_spatial_norm() const { return false; }
    virtual double spatial_norm(const double* u);

    /// True when access() should be called.
    virtual bool has_access() const { return false; }
    virtual void access(const double* u, const Status& st);

    // --- adjoint (XBraid_Adjoint: objectiveT, objectiveT_diff, step_diff,
    //     reset_gradient, postprocess_obj, postprocess_obj_diff) -------------

    /// True when objective / step_adjoint / ... are available.
    virtual bool has_adjoint() const { return false; }
    /// f(u) at one fine time point st.tstart (index st.tindex).
    virtual double objective(const double* u, const Status& st);
    /// u_bar (out, zeroed on entry) = (df/du)^T f_bar; add (df/ddesign)^T f_bar to the gradient.
    virtual void objective_adjoint(const double* u, double* u_bar, double f_bar, const Status& st);
    /// u (in): the step's input state; ustop (in): its ustop. u_bar (in/out):
    /// overwrite with (dPhi/du)^T u_bar; ustop_bar (out, zeroed on entry):
    /// (dPhi/dustop)^T u_bar; add (dPhi/ddesign)^T u_bar to the gradient.
    virtual void step_adjoint(const double* u, const double* ustop, double* u_bar, double* ustop_bar, const Status& st);
    /// Set the gradient accumulator to zero.
    virtual void reset_gradient();
    /// u_bar (in): the adjoint of the initial state init(tstart) after a
    /// reverse sweep; add (d init / d design)^T u_bar to the gradient. Not in
    /// XBraid (whose initial condition cannot depend on the design); called
    /// on the rank owning index 0 once per adjoint iteration. Default: no-op.
    virtual void init_adjoint(double t, const double* u_bar, const Status& st);
    /// True when J = F(I) is post-processed (I = sum of objective()).
    virtual bool has_postprocess() const { return false; }
    virtual double postprocess(double sum);
    /// dF/dI at I = sum; may ASSIGN the design part of dF/ddesign to the gradient.
    virtual double postprocess_adjoint(double sum);
};

}  // namespace pxb
