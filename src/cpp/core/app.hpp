/// \file app.hpp
/// \brief The user problem as the engine sees it: XBraid's user callbacks on
///        contiguous float64 states owned by the engine.
#pragma once

#include <cstddef>
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
};

}  // namespace pxb
