#include "core/callbacks.hpp"

#include <cmath>
#include <exception>
#include <sstream>

#include "core/errors.hpp"

namespace pxb {

const char* phase_name(Phase p) noexcept {
    switch (p) {
#define PXB_PHASE_CASE(name, doc) \
    case Phase::name: return #name;
        PXB_PHASES(PXB_PHASE_CASE)
#undef PXB_PHASE_CASE
    }
    return "unknown";
}

void App::residual(const double*, double*, const Status&) {
    throw std::logic_error(name() + ".residual called but the app defines no residual");
}
double App::spatial_norm(const double*) {
    throw std::logic_error(name() + ".spatial_norm called but the app defines none");
}
void App::access(const double*, const Status&) {}
double App::objective(const double*, const Status&) {
    throw std::logic_error(name() + " defines no objective");
}
void App::objective_adjoint(const double*, double*, double, const Status&) {
    throw std::logic_error(name() + " defines no objective_adjoint");
}
void App::step_adjoint(const double*, const double*, double*, double*, const Status&) {
    throw std::logic_error(name() + " defines no step_adjoint");
}
void App::reset_gradient() {}
void App::init_adjoint(double, const double*, const Status&) {}
double App::postprocess(double sum) {
    return sum;
}
double App::postprocess_adjoint(double) {
    return 1.0;
}

void CallbackGate::probe_capabilities() {
    has_residual_ = app_.has_residual();
    has_norm_ = app_.has_spatial_norm();
    has_access_ = app_.has_access();
}

std::string CallbackGate::context(const char* callback, const Status* st) const {
    std::ostringstream out;
    out << "rank " << comm_.rank() << ": " << app_.name() << "." << callback;
    if (st) {
        out.precision(17);
        out << " (phase " << phase_name(st->phase) << ", level " << st->level << ", iteration " << st->iter
            << ", t = " << st->tstart;
        if (st->phase != Phase::init && st->phase != Phase::access) out << " -> " << st->tstop;
        out << ", tindex " << st->tindex << ")";
    }
    return out.str();
}

void CallbackGate::fail(const char* callback, const Status* st, const std::string& what) {
    const std::string where = context(callback, st);
    comm_.notify_failure(where + " failed: " + what);
    throw CallbackError(where + ": " + what);
}

void CallbackGate::check_finite(const char* callback, const double* v, const Status* st) {
    // x*0 is NaN exactly when x is NaN or infinite; the branch-free sum vectorises.
    double probe = 0.0;
    for (std::size_t k = 0; k < n_; ++k) probe += v[k] * 0.0;
    if (probe == 0.0) return;
    std::size_t bad = 0;
    while (bad < n_ && std::isfinite(v[bad])) ++bad;
    std::ostringstream msg;
    msg << "produced a non-finite value (" << v[bad] << " at flat index " << bad << ")";
    fail(callback, st, msg.str());
}

// Every callback runs inside this guard: a C++ or Python exception is announced
// to the other ranks (so they raise instead of waiting) and then re-thrown
// unchanged, keeping its type and traceback for the caller on this rank.
#define PXB_GUARDED(callback, st, ...)                                            \
    do {                                                                          \
        try {                                                                     \
            __VA_ARGS__;                                                          \
        } catch (const RemoteRankError&) {                                        \
            throw;                                                                \
        } catch (const std::exception& e) {                                       \
            comm_.notify_failure(context(callback, st) + " raised " + e.what());  \
            throw;                                                                \
        } catch (...) {                                                           \
            comm_.notify_failure(context(callback, st) + " raised an exception"); \
            throw;                                                                \
        }                                                                         \
    } while (0)

void CallbackGate::init(double t, double* u, const Status& st) {
    ++counts_.init;
    tick();
    PXB_GUARDED("init", &st, app_.init(t, u));
    check_finite("init", u, &st);
}

void CallbackGate::step(double* u, const double* ustop, const double* fstop, const Status& st) {
    ++counts_.step;
    tick();
    PXB_GUARDED("step", &st, app_.step(u, ustop, fstop, st));
    check_finite("step", u, &st);
}

void CallbackGate::residual(const double* ustop, double* r, const Status& st) {
    ++counts_.residual;
    tick();
    PXB_GUARDED("residual", &st, app_.residual(ustop, r, st));
    check_finite("residual", r, &st);
}

double CallbackGate::norm(const double* u, const Status* where) {
    ++counts_.norm;
    if (!has_norm_) {
        double s = 0.0;
        for (std::size_t k = 0; k < n_; ++k) s += u[k] * u[k];
        return std::sqrt(s);
    }
    double value = 0.0;
    PXB_GUARDED("spatial_norm", where, value = app_.spatial_norm(u));
    if (!(value >= 0.0)) {  // also catches NaN
        std::ostringstream msg;
        msg << "returned " << value << "; a norm must be a number >= 0";
        fail("spatial_norm", where, msg.str());
    }
    return value;
}

void CallbackGate::access(const double* u, const Status& st) {
    ++counts_.access;
    PXB_GUARDED("access", &st, app_.access(u, st));
}

double CallbackGate::objective(const double* u, const Status& st) {
    ++counts_.objective;
    tick();
    double value = 0.0;
    PXB_GUARDED("objective", &st, value = app_.objective(u, st));
    if (!std::isfinite(value)) {
        std::ostringstream msg;
        msg << "returned " << value << "; an objective value must be finite";
        fail("objective", &st, msg.str());
    }
    return value;
}

void CallbackGate::objective_adjoint(const double* u, double* u_bar, double f_bar, const Status& st) {
    ++counts_.objective_adjoint;
    PXB_GUARDED("objective_adjoint", &st, app_.objective_adjoint(u, u_bar, f_bar, st));
    check_finite("objective_adjoint", u_bar, &st);
}

void CallbackGate::step_adjoint(const double* u, const double* ustop, double* u_bar, double* ustop_bar,
                                const Status& st) {
    ++counts_.step_adjoint;
    tick();
    PXB_GUARDED("step_adjoint", &st, app_.step_adjoint(u, ustop, u_bar, ustop_bar, st));
    check_finite("step_adjoint", u_bar, &st);
    check_finite("step_adjoint", ustop_bar, &st);
}

void CallbackGate::reset_gradient() {
    PXB_GUARDED("reset_gradient", nullptr, app_.reset_gradient());
}

void CallbackGate::init_adjoint(double t, const double* u_bar, const Status& st) {
    ++counts_.init_adjoint;
    PXB_GUARDED("init_adjoint", &st, app_.init_adjoint(t, u_bar, st));
}

double CallbackGate::postprocess(double sum) {
    double value = 0.0;
    PXB_GUARDED("postprocess_objective", nullptr, value = app_.postprocess(sum));
    if (!std::isfinite(value)) fail("postprocess_objective", nullptr, "returned a non-finite value");
    return value;
}

double CallbackGate::postprocess_adjoint(double sum) {
    double value = 0.0;
    PXB_GUARDED("postprocess_objective_adjoint", nullptr, value = app_.postprocess_adjoint(sum));
    if (!std::isfinite(value)) fail("postprocess_objective_adjoint", nullptr, "returned a non-finite value");
    return value;
}

#undef PXB_GUARDED

}  // namespace pxb
