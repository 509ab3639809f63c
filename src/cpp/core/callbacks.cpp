#include "core/callbacks.hpp"

#include <cmath>
#include <exception>
#include <sstream>
#include <stdexcept>

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

// The defaults of the optional callbacks: the engine calls them only when the
// app says it has them (has_residual(), ...), so reaching one is a bug.
void App::step_batch_any(Vec u, CVec ustop, CVec fstop, const StepRows& rows, const Status& st) {
    // Row by row: what a batched app must do (used by apps without a batched step).
    const std::size_t bytes = size() * element_size(dtype());
    Status row = st;
    for (std::size_t i = 0; i < rows.count; ++i) {
        row.tstart = rows.tstart[i];
        row.tstop = rows.tstop[i];
        step_any(u + i * bytes, ustop + i * bytes, fstop ? fstop + i * bytes : nullptr, row);
    }
}

void App::step_adjoint_batch_any(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const StepRows& rows, const Status& st) {
    const std::size_t bytes = size() * element_size(dtype());
    Status row = st;
    for (std::size_t i = 0; i < rows.count; ++i) {
        row.tstart = rows.tstart[i];
        row.tstop = rows.tstop[i];
        step_adjoint_any(u + i * bytes, ustop + i * bytes, u_bar + i * bytes, ustop_bar + i * bytes, row);
    }
}

void App::init_shell_any(double, Vec) {
    throw std::logic_error(name() + " defines no init_shell");
}
void App::residual_any(CVec, Vec, const Status&) {
    throw std::logic_error(name() + " defines no residual");
}
double App::spatial_norm_any(CVec) {
    throw std::logic_error(name() + " defines no spatial_norm");
}
void App::access_any(CVec, const Status&) {}
void App::init_basis_any(double, int, Vec) {
    throw std::logic_error(name() + " defines no init_basis");
}
double App::inner_product_any(CVec, CVec) {
    throw std::logic_error(name() + " defines no inner_product");
}
void App::jacobian_apply_any(CVec, Vec, int, const Status&) {
    throw std::logic_error(name() + " defines no jacobian_apply");
}
double App::objective_any(CVec, const Status&) {
    throw std::logic_error(name() + " defines no objective");
}
void App::objective_adjoint_any(CVec, Vec, double, const Status&) {
    throw std::logic_error(name() + " defines no objective_adjoint");
}
void App::step_adjoint_any(CVec, CVec, Vec, Vec, const Status&) {
    throw std::logic_error(name() + " defines no step_adjoint");
}
void App::init_adjoint_any(double, CVec, const Status&) {}
void App::coarsen_any(CVec, Vec, const Status&) {
    throw std::logic_error(name() + " defines no coarsen");
}
void App::refine_any(CVec, Vec, const Status&) {
    throw std::logic_error(name() + " defines no refine");
}
void App::coarsen_adjoint_any(CVec, Vec, const Status&) {
    throw std::logic_error(name() + " defines no coarsen_adjoint");
}
void App::refine_adjoint_any(CVec, Vec, const Status&) {
    throw std::logic_error(name() + " defines no refine_adjoint");
}

void CallbackGate::probe_capabilities(bool residual_mode) {
    has_residual_ = residual_mode && app_.has_residual();
    has_sync_ = app_.has_sync();
    has_norm_ = app_.has_spatial_norm();
    has_access_ = app_.has_access();
    has_step_batch_ = app_.has_step_batch();
    has_step_adjoint_batch_ = app_.has_step_adjoint_batch();
    has_inner_product_ = app_.has_inner_product();
    has_jacobian_ = app_.has_jacobian();
    has_spatial_coarsening_ = app_.has_spatial_coarsening();
    adjoint_uses_ustop_ = app_.step_adjoint_uses_ustop();
}

namespace {
bool is_sync_phase(Phase p) {
    return p == Phase::after_init || p == Phase::top_cycle;
}
}  // namespace

std::string CallbackGate::context(const char* callback, const Status* st) const {
    std::ostringstream out;
    out << "rank " << comm_.rank() << ": " << app_.name() << "." << callback;
    if (st && is_sync_phase(st->phase)) {
        out << " (phase " << phase_name(st->phase) << ", iteration " << st->iter << ")";
    } else if (st) {
        out.precision(17);
        out << " (phase " << phase_name(st->phase) << ", level " << st->level << ", iteration " << st->iter
            << ", t = " << st->tstart;
        if (st->phase != Phase::init && st->phase != Phase::access) out << " -> " << st->tstop;
        out << ", tindex " << st->tindex << ")";
    }
    return out.str();
}

std::string CallbackGate::batch_context(const char* callback, const Status& st, const StepRows& rows) const {
    std::ostringstream out;
    out.precision(17);
    out << "rank " << comm_.rank() << ": " << app_.name() << "." << callback << " (phase " << phase_name(st.phase)
        << ", level " << st.level << ", iteration " << st.iter << ", " << rows.count
        << " steps, the first from t = " << rows.tstart[0] << " -> " << rows.tstop[0] << ")";
    return out.str();
}

void CallbackGate::fail(const char* callback, const Status* st, const std::string& what) {
    const std::string where = context(callback, st);
    comm_.notify_failure(where + " failed: " + what);
    throw CallbackError(where + ": " + what);
}

void CallbackGate::check_finite_n(const char* callback, CVec v, std::size_t n, const Status* st) {
    double value = 0.0;
    const std::size_t bad = ops::first_non_finite(dtype_, n, v, value);
    if (bad == n) return;
    std::ostringstream msg;
    msg << "produced a non-finite value (" << value << " at flat index " << bad << ")";
    fail(callback, st, msg.str());
}

void CallbackGate::announce_failure(const char* callback, const Status* st, const char* what) {
    comm_.notify_failure(context(callback, st) + (what ? std::string(" raised ") + what : " raised an exception"));
}

// Every callback runs inside this guard: see CallbackGate::guarded (the same,
// for statements).
#define PXB_GUARDED(callback, st, ...)                \
    do {                                              \
        try {                                         \
            __VA_ARGS__;                              \
        } catch (const RemoteRankError&) {            \
            throw;                                    \
        } catch (const std::exception& e) {           \
            announce_failure(callback, st, e.what()); \
            throw;                                    \
        } catch (...) {                               \
            announce_failure(callback, st, nullptr);  \
            throw;                                    \
        }                                             \
    } while (0)

void CallbackGate::init(double t, Vec u, const Status& st) {
    ++counts_.init;
    tick();
    PXB_GUARDED("init", &st, app_.init_any(t, u));
    check_finite("init", u, &st);
}

void CallbackGate::init_shell(double t, Vec u, const Status& st) {
    ++counts_.init_shell;
    tick();
    PXB_GUARDED("init_shell", &st, app_.init_shell_any(t, u));
}

void CallbackGate::step(Vec u, CVec ustop, CVec fstop, const Status& st) {
    ++counts_.step;
    tick();
    PXB_GUARDED("step", &st, app_.step_any(u, ustop, fstop, st));
    check_finite("step", u, &st);
}

void CallbackGate::step_batch(Vec u, CVec ustop, CVec fstop, const StepRows& rows, const Status& st) {
    counts_.step += static_cast<long long>(rows.count);
    ++counts_.step_batch;
    tick();
    guarded_batch("step_batch", st, rows, [&] { app_.step_batch_any(u, ustop, fstop, rows, st); });
    check_finite_rows("step_batch", u, st, rows);
}

void CallbackGate::step_adjoint_batch(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const StepRows& rows,
                                      const Status& st) {
    counts_.step_adjoint += static_cast<long long>(rows.count);
    ++counts_.step_adjoint_batch;
    tick();
    guarded_batch("step_adjoint_batch", st, rows,
                  [&] { app_.step_adjoint_batch_any(u, ustop, u_bar, ustop_bar, rows, st); });
    check_finite_rows("step_adjoint_batch", u_bar, st, rows);
    check_finite_rows("step_adjoint_batch", ustop_bar, st, rows);
}

template <class Call>
void CallbackGate::guarded_batch(const char* callback, const Status& st, const StepRows& rows, Call&& call) {
    try {
        call();
    } catch (const RemoteRankError&) {
        throw;
    } catch (const std::exception& e) {
        comm_.notify_failure(batch_context(callback, st, rows) + " raised " + e.what());
        throw;
    } catch (...) {
        comm_.notify_failure(batch_context(callback, st, rows) + " raised an exception");
        throw;
    }
}

void CallbackGate::check_finite_rows(const char* callback, CVec v, const Status& st, const StepRows& rows) {
    double value = 0.0;
    const std::size_t total = rows.count * n_;
    const std::size_t bad = ops::first_non_finite(dtype_, total, v, value);
    if (bad == total) return;
    // Name the row's own step, as a one-by-one call would be named.
    Status row = st;
    row.tstart = rows.tstart[bad / n_];
    row.tstop = rows.tstop[bad / n_];
    std::ostringstream msg;
    msg << "produced a non-finite value (" << value << " in row " << bad / n_ << " at flat index " << bad % n_ << ")";
    fail(callback, &row, msg.str());
}

void CallbackGate::residual(CVec ustop, Vec r, const Status& st) {
    ++counts_.residual;
    tick();
    PXB_GUARDED("residual", &st, app_.residual_any(ustop, r, st));
    check_finite("residual", r, &st);
}

void CallbackGate::full_residual(CVec ustop, Vec r, const Status& st) {
    ++counts_.residual;
    tick();
    PXB_GUARDED("residual", &st, app_.residual_any(ustop, r, st));
    check_finite("residual", r, &st);
}

void CallbackGate::sync(const Status& st) {
    ++counts_.sync;
    PXB_GUARDED("sync", &st, app_.sync(st));
}

double CallbackGate::norm(CVec u, const Status* where) {
    ++counts_.norm;
    if (!has_norm_) {
        return ops::norm2(dtype_, n_, u);
    }
    double value = 0.0;
    PXB_GUARDED("spatial_norm", where, value = app_.spatial_norm_any(u));
    if (!(value >= 0.0)) {  // also catches NaN
        std::ostringstream msg;
        msg << "returned " << value << "; a norm must be a number >= 0";
        fail("spatial_norm", where, msg.str());
    }
    return value;
}

void CallbackGate::access(CVec u, const Status& st) {
    ++counts_.access;
    PXB_GUARDED("access", &st, app_.access_any(u, st));
}

void CallbackGate::init_basis(double t, int index, Vec v, const Status& st) {
    ++counts_.init_basis;
    tick();
    PXB_GUARDED("init_basis", &st, app_.init_basis_any(t, index, v));
    check_finite("init_basis", v, &st);
}

void CallbackGate::step_with_basis(Vec u, CVec ustop, Status& st) {
    if (st.basis != nullptr && has_jacobian_) {
        // A native app: its Jacobian at the input state, so before step advances u.
        tick();
        PXB_GUARDED("jacobian_apply", &st, app_.jacobian_apply_any(u, st.basis, st.basis_rank, st));
        check_finite_n("jacobian_apply", st.basis, static_cast<std::size_t>(st.basis_rank) * n_, &st);
        st.basis = nullptr;
        st.basis_rank = 0;
    }
    step(u, ustop, nullptr, st);
    st.basis = nullptr;
    st.basis_rank = 0;
}

double CallbackGate::inner_product(CVec u, CVec v) {
    ++counts_.inner_product;
    if (!has_inner_product_) return ops::dot(dtype_, n_, u, v);
    double value = 0.0;
    PXB_GUARDED("inner_product", nullptr, value = app_.inner_product_any(u, v));
    if (!std::isfinite(value)) {
        std::ostringstream msg;
        msg << "returned " << value << "; an inner product must be finite";
        fail("inner_product", nullptr, msg.str());
    }
    return value;
}

void CallbackGate::objective_not_finite(double value, const Status& st) {
    std::ostringstream msg;
    msg << "returned " << value << "; an objective value must be finite";
    fail("objective", &st, msg.str());
}

void CallbackGate::reset_gradient() {
    PXB_GUARDED("reset_gradient", nullptr, app_.reset_gradient());
}

void CallbackGate::probe_level_sizes(int nlevels) {
    sizes_.assign(1, n_);
    for (int level = 1; level < nlevels; ++level) {
        // Called while the solver is built: a failure is agreed on by the
        // ranks there (Engine's constructor), not announced from here.
        const std::size_t size = app_.size_at(level);
        if (size == 0 || size > n_) {
            std::ostringstream msg;
            msg << app_.name() << ".shape_at(" << level << ") gives a state of " << size
                << " elements; a coarse level's state must have between 1 and " << n_
                << " elements (the finest level's)";
            throw std::invalid_argument(msg.str());
        }
        if (size != n_ && !has_spatial_coarsening_)
            throw std::invalid_argument(app_.name() + ".shape_at(" + std::to_string(level) +
                                        ") differs from the finest level's shape, but the app defines no "
                                        "coarsen and refine to move states between the levels");
        sizes_.push_back(size);
    }
}

void CallbackGate::coarsen(CVec fine, Vec coarse, const Status& st) {
    ++counts_.coarsen;
    tick();
    PXB_GUARDED("coarsen", &st, app_.coarsen_any(fine, coarse, st));
    check_finite_n("coarsen", coarse, size_at(st.level + 1), &st);
}

void CallbackGate::refine(CVec coarse, Vec fine, const Status& st) {
    ++counts_.refine;
    tick();
    PXB_GUARDED("refine", &st, app_.refine_any(coarse, fine, st));
    check_finite_n("refine", fine, size_at(st.level), &st);
}

void CallbackGate::coarsen_adjoint(CVec coarse_bar, Vec fine_bar, const Status& st) {
    ++counts_.coarsen_adjoint;
    tick();
    PXB_GUARDED("coarsen_adjoint", &st, app_.coarsen_adjoint_any(coarse_bar, fine_bar, st));
    check_finite_n("coarsen_adjoint", fine_bar, size_at(st.level), &st);
}

void CallbackGate::refine_adjoint(CVec fine_bar, Vec coarse_bar, const Status& st) {
    ++counts_.refine_adjoint;
    tick();
    PXB_GUARDED("refine_adjoint", &st, app_.refine_adjoint_any(fine_bar, coarse_bar, st));
    check_finite_n("refine_adjoint", coarse_bar, size_at(st.level + 1), &st);
}

void CallbackGate::init_adjoint(double t, CVec u_bar, const Status& st) {
    ++counts_.init_adjoint;
    PXB_GUARDED("init_adjoint", &st, app_.init_adjoint_any(t, u_bar, st));
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
