/// \file status.hpp
/// \brief What a user callback is told about the call it is serving (XBraid's
///        braid_StepStatus / braid_AccessStatus, flattened into one struct).
#pragma once

namespace pxb {

/// Which part of the algorithm invoked a callback (XBraid's braid_ASCaller_*).
enum class Phase : int {
    init = 0,          ///< initial guess (braid_ASCaller_InitGuess / BaseInit)
    fc_relax = 1,      ///< F- and C-relaxation (braid_ASCaller_FCRelax)
    f_restrict = 2,    ///< F-sweep + FAS residual before restriction (braid_ASCaller_FRestrict)
    residual = 3,      ///< coarse-grid residual during restriction (braid_ASCaller_Residual)
    f_interp = 4,      ///< F-relaxation before interpolation / coarsest solve (braid_ASCaller_FInterp)
    access = 5,        ///< final (or per-iteration) access sweep (braid_ASCaller_FAccess)
    sequential = 6,    ///< sequential solution used as initial guess (seq_soln)
    state_query = 7,   ///< on-demand F-sweep to answer a state query
    objective = 8,     ///< objective evaluation / its derivative (XBraid's ObjectiveStatus)
};

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
};

}  // namespace pxb
