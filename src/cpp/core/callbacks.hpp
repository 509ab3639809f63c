/// \file callbacks.hpp
/// \brief The one place where user callbacks are invoked (XBraid's base.c idea):
///        results are checked here, calls are counted here, and a failing
///        callback is reported to the other ranks from here.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "core/app.hpp"
#include "core/communication.hpp"
#include "core/errors.hpp"
#include "core/status.hpp"

namespace pxb {

// clang-format off
// BEGIN GENERATED call-counts (codegen/generate.py from src/pyxbraid/_vocabulary.py)
/// Per-rank counts of callback invocations.
struct CallCounts {
    long long init = 0;  ///< init
    long long init_shell = 0;  ///< init_shell
    long long step = 0;  ///< step
    long long step_batch = 0;  ///< step_batch
    long long residual = 0;  ///< residual
    long long norm = 0;  ///< spatial_norm
    long long init_basis = 0;  ///< init_basis
    long long inner_product = 0;  ///< inner_product
    long long access = 0;  ///< access
    long long sync = 0;  ///< sync
    long long objective = 0;  ///< objective
    long long objective_adjoint = 0;  ///< objective_adjoint
    long long step_adjoint = 0;  ///< step_adjoint
    long long step_adjoint_batch = 0;  ///< step_adjoint_batch
    long long coarsen = 0;  ///< coarsen
    long long refine = 0;  ///< refine
    long long coarsen_adjoint = 0;  ///< coarsen_adjoint
    long long refine_adjoint = 0;  ///< refine_adjoint
    long long init_adjoint = 0;  ///< init_adjoint
};
// END GENERATED call-counts
// clang-format on

class CallbackGate {
public:
    CallbackGate(App& app, Communicator& comm) : app_(app), comm_(comm), n_(app.size()), dtype_(app.dtype()) {}

    void init(double t, Vec u, const Status& st);
    /// The shell of `u` only (apps with shells; counted as init_shell).
    void init_shell(double t, Vec u, const Status& st);
    void step(Vec u, CVec ustop, CVec fstop, const Status& st);
    /// Many independent steps in one call (apps with has_step_batch()); counts each row as a step.
    void step_batch(Vec u, CVec ustop, CVec fstop, const StepRows& rows, const Status& st);
    /// The adjoints of a group of steps in one call; counts each row as a step_adjoint.
    void step_adjoint_batch(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const StepRows& rows, const Status& st);
    void residual(CVec ustop, Vec r, const Status& st);
    /// The app's residual used for the full residual norm (counted as a residual).
    void full_residual(CVec ustop, Vec r, const Status& st);
    /// The app's sync (only when has_sync()).
    void sync(const Status& st);
    /// Spatial norm: the app's, or the Euclidean 2-norm computed natively (in float64).
    double norm(CVec u, const Status* where = nullptr);
    void access(CVec u, const Status& st);
    /// Basis vector `index` at time t into `v` (delta correction).
    void init_basis(double t, int index, Vec v, const Status& st);
    /// Delta correction's step: propagates the basis `st.basis` (basis_rank
    /// states, or nullptr) by the step's Jacobian, through jacobian_apply at
    /// the input state for a native app or inside step for the Python app,
    /// then advances `u`; st.basis and st.basis_rank are cleared on return.
    void step_with_basis(Vec u, CVec ustop, Status& st);
    /// The app's inner product, or the Euclidean dot product computed natively.
    double inner_product(CVec u, CVec v);
    // The adjoint's callbacks, inline: one call per fine point or step in every
    // adjoint iteration, where the gate's own call costs as much as a scalar
    // app's work. The same guard and checks as every other callback.
    double objective(CVec u, const Status& st) {
        ++counts_.objective;
        tick();
        double value = 0.0;
        guarded("objective", &st, [&] { value = app_.objective_any(u, st); });
        if (!std::isfinite(value)) objective_not_finite(value, st);
        return value;
    }
    void objective_adjoint(CVec u, Vec u_bar, double f_bar, const Status& st) {
        ++counts_.objective_adjoint;
        guarded("objective_adjoint", &st, [&] { app_.objective_adjoint_any(u, u_bar, f_bar, st); });
        check_finite("objective_adjoint", u_bar, &st);
    }
    void step_adjoint(CVec u, CVec ustop, Vec u_bar, Vec ustop_bar, const Status& st) {
        ++counts_.step_adjoint;
        tick();
        guarded("step_adjoint", &st, [&] { app_.step_adjoint_any(u, ustop, u_bar, ustop_bar, st); });
        check_finite("step_adjoint", u_bar, &st);
        // An adjoint that ignores ustop (a native app's promise) leaves ustop_bar as it got it: zero.
        if (adjoint_uses_ustop_) check_finite("step_adjoint", ustop_bar, &st);
    }
    void reset_gradient();
    void init_adjoint(double t, CVec u_bar, const Status& st);
    /// The app's coarsen (st.level: the fine level); checks the coarse state.
    void coarsen(CVec fine, Vec coarse, const Status& st);
    /// The app's refine (st.level: the fine level); checks the fine state.
    void refine(CVec coarse, Vec fine, const Status& st);
    /// The transposes of coarsen and refine (the adjoint's reverse sweep).
    void coarsen_adjoint(CVec coarse_bar, Vec fine_bar, const Status& st);
    void refine_adjoint(CVec fine_bar, Vec coarse_bar, const Status& st);
    /// Ask the app for the state size of each of `nlevels` levels (its
    /// shape_at) and keep them: every check of a state on a level uses them.
    /// Throws naming the level when a size is 0 or larger than level 0's.
    void probe_level_sizes(int nlevels);
    /// Elements of a state on `level` (size() before probe_level_sizes).
    std::size_t size_at(int level) const noexcept {
        return level >= 0 && static_cast<std::size_t>(level) < sizes_.size() ? sizes_[static_cast<std::size_t>(level)]
                                                                             : n_;
    }
    bool has_spatial_coarsening() const { return has_spatial_coarsening_; }
    double postprocess(double sum);
    double postprocess_adjoint(double sum);

    /// The user-residual mode: the app's residual replaces the engine's and coarse steps get fstop.
    bool has_residual() const { return has_residual_; }
    bool has_sync() const { return has_sync_; }
    bool has_access() const { return has_access_; }
    bool has_step_batch() const { return has_step_batch_; }
    bool has_step_adjoint_batch() const { return has_step_adjoint_batch_; }
    /// False when the app's step_adjoint ignores ustop (its ustop_bar stays zero).
    bool adjoint_uses_ustop() const { return adjoint_uses_ustop_; }
    std::size_t size() const noexcept { return n_; }
    DType dtype() const noexcept { return dtype_; }
    const CallCounts& counts() const noexcept { return counts_; }
    void reset_counts() noexcept { counts_ = CallCounts{}; }
    App& app() noexcept { return app_; }

    /// Cache the app's optional capabilities (call once before solving).
    /// `residual_mode`: whether the app's residual (if any) switches on the user-residual mode.
    void probe_capabilities(bool residual_mode);

private:
    /// Every 64th call: let the interrupt hook run if it is due (Ctrl-C).
    void tick() {
        if ((++ticks_ & 63u) == 0) comm_.maybe_check_interrupt();
    }
    [[noreturn]] void fail(const char* callback, const Status* st, const std::string& what);
    /// Runs `call`, a callback: an exception it raises is announced to the
    /// other ranks (so they raise instead of waiting), then re-thrown
    /// unchanged, keeping its type and traceback for the caller on this rank.
    template <class Call>
    void guarded(const char* callback, const Status* st, Call&& call) {
        try {
            call();
        } catch (const RemoteRankError&) {
            throw;
        } catch (const std::exception& e) {
            announce_failure(callback, st, e.what());
            throw;
        } catch (...) {
            announce_failure(callback, st, nullptr);
            throw;
        }
    }
    /// Tell the other ranks that `callback` raised (`what`; nullptr: not a std::exception).
    void announce_failure(const char* callback, const Status* st, const char* what);
    [[noreturn]] void objective_not_finite(double value, const Status& st);
    /// Throws (naming the callback and the call) when `v`, a state of the
    /// call's level, holds a NaN or an infinity. Inline for a one-value state:
    /// a scalar ODE's callbacks cost a few ns, a call to the general check as much.
    void check_finite(const char* callback, CVec v, const Status* st) {
        // A one-value state on level 0 is one on every level (no level is larger).
        if (n_ == 1 && scalar_is_finite(v)) return;
        check_finite_n(callback, v, size_at(st ? st->level : 0), st);
    }
    /// Whether the first value of `v` is finite (x - x is 0 exactly then).
    bool scalar_is_finite(CVec v) const noexcept {
        if (dtype_ == DType::float32) {
            float x;
            std::memcpy(&x, v, sizeof x);
            return x - x == 0.0f;
        }
        double x;
        std::memcpy(&x, v, sizeof x);
        return x - x == 0.0;
    }
    /// check_finite of a state of `n` elements.
    void check_finite_n(const char* callback, CVec v, std::size_t n, const Status* st);
    std::string context(const char* callback, const Status* st) const;
    std::string batch_context(const char* callback, const Status& st, const StepRows& rows) const;
    template <class Call>
    void guarded_batch(const char* callback, const Status& st, const StepRows& rows, Call&& call);
    void check_finite_rows(const char* callback, CVec v, const Status& st, const StepRows& rows);

    App& app_;
    Communicator& comm_;
    std::size_t n_;
    std::vector<std::size_t> sizes_;  ///< elements of a state per level (probe_level_sizes)
    DType dtype_;
    CallCounts counts_;
    unsigned ticks_ = 0;
    bool has_residual_ = false;
    bool has_norm_ = false;
    bool has_access_ = false;
    bool has_step_batch_ = false;
    bool has_step_adjoint_batch_ = false;
    bool has_sync_ = false;
    bool has_inner_product_ = false;
    bool has_jacobian_ = false;
    bool has_spatial_coarsening_ = false;
    bool adjoint_uses_ustop_ = true;
};

}  // namespace pxb
