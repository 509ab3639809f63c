/// \file status.hpp
/// \brief What a user callback is told about the call it is serving (XBraid's
///        braid_StepStatus / braid_AccessStatus, flattened into one struct).
#pragma once

#include <cstddef>
#include <vector>

namespace pxb {

/// What a level-0 step asks of a temporal refinement (refine=True): the
/// factor of the interval it stepped over and, optionally, the r - 1 first
/// new step sizes (XBraid's StepStatusSetRFactor / SetRefinementDtValues).
struct RefineRequest {
    bool active = false;      ///< false: the request is ignored (coarse levels, access sweeps, refinement stopped)
    int rfactor = 0;          ///< 0: not set by this step (the interval keeps its previous factor)
    std::vector<double> dts;  ///< empty: r equal sub-intervals
};

/// The phases, X(name, doc), from the one declaration in
/// src/pyxbraid/_vocabulary.py: the enum, its names and every table indexed
/// by phase (the bindings' interned names) are generated from this list, so
/// none of them can drift from the others.
// clang-format off
// BEGIN GENERATED phases (codegen/generate.py)
#define PXB_PHASES(X)                                                                                        \
    X(init, "initial guess (braid_ASCaller_InitGuess / BaseInit)")                                           \
    X(fc_relax, "F- and C-relaxation (braid_ASCaller_FCRelax)")                                              \
    X(f_restrict, "F-sweep + FAS residual before restriction (braid_ASCaller_FRestrict)")                    \
    X(residual, "coarse-grid residual during restriction (braid_ASCaller_Residual)")                         \
    X(f_interp, "F-relaxation before interpolation / coarsest solve (braid_ASCaller_FInterp)")               \
    X(access, "final (or per-iteration) access sweep (braid_ASCaller_FAccess)")                              \
    X(sequential, "sequential solution used as initial guess (seq_soln)")                                    \
    X(state_query, "on-demand final sweep answering a state query (access_level=0)")                         \
    X(objective, "objective evaluation and its adjoint (XBraid's ObjectiveStatus)")                          \
    X(full_residual, "full residual norm at every fine point (braid_ASCaller_ComputeFullRNorm)")             \
    X(after_init, "sync after the initial guess (braid_ASCaller_Drive_AfterInit)")                           \
    X(top_cycle, "sync at the top of each cycle (braid_ASCaller_Drive_TopCycle)")                            \
    X(refine, "level-0 steps of a temporal refinement (braid_ASCaller_FRefine)")                             \
    X(after_refine, "sync after a refinement rebuilt the hierarchy (braid_ASCaller_FRefine_AfterInitHier)")
// END GENERATED phases
// clang-format on

/// Which part of the algorithm invoked a callback (XBraid's braid_ASCaller_*).
enum class Phase : int {
#define PXB_PHASE_ENUM(name, doc) name,
    PXB_PHASES(PXB_PHASE_ENUM)
#undef PXB_PHASE_ENUM
};

/// Number of phases (the size of every table indexed by Phase).
inline constexpr int kPhaseCount = 0
#define PXB_PHASE_COUNT(name, doc) +1
    PXB_PHASES(PXB_PHASE_COUNT)
#undef PXB_PHASE_COUNT
    ;

/// Name of a phase as shown to users ("fc_relax", ...).
const char* phase_name(Phase p) noexcept;

/// Everything a callback may want to know. Times are those of the level the
/// call works on; for `init` and `access` only `tstart` (= t) and `tindex` are set.
struct Status {
    double tstart = 0.0;        ///< time of the state being stepped (or accessed)
    double tstop = 0.0;         ///< time the step advances to
    int tindex = 0;             ///< index of tstart on `level`
    int level = 0;              ///< grid level (0 = finest)
    int nlevels = 1;            ///< levels in the hierarchy
    int iter = 0;               ///< MGRIT iteration (0-based)
    bool done = false;          ///< true in the final sweep after convergence
    Phase phase = Phase::init;  ///< which routine called
    double residual_norm = -1;  ///< latest ||r|| (or -1 when not available)
    int ntime = 0;              ///< number of fine time steps
    int nrefine = 0;            ///< temporal refinements done so far (refine=True)
    /// refine=True, steps only: where status.set_rfactor writes (null elsewhere).
    RefineRequest* refine = nullptr;
    /// Delta correction: the basis vectors (basis_rank of them, one after the
    /// other, each a state) that a step must replace in place by the step's
    /// Jacobian applied to them; in access, the point's basis (read-only).
    /// nullptr: nothing to propagate (XBraid's StepStatusGetBasisVec gives NULL).
    /// An app with has_jacobian() (a native app) never sees it in step: the
    /// engine has propagated the basis through jacobian_apply already.
    std::byte* basis = nullptr;
    int basis_rank = 0;
    /// access with Lyapunov exponents: basis_rank local exponents at this
    /// point (nullptr: none provided, XBraid's num_returned = 0).
    const double* lyapunov_exponents = nullptr;
    /// error_estimation: the Richardson estimate of the level-0 point stepped to or
    /// accessed, -1 when not available.
    double error_estimate = -1.0;
    /// sync: this rank's level-0 estimates (ilower..iupper), valid during the call;
    /// none (count 0) without error_estimation.
    const double* error_estimates = nullptr;
    int n_error_estimates = 0;
};

}  // namespace pxb
