/// \file options.hpp
/// \brief Solver options with XBraid's names, meanings and defaults.
#pragma once

#include <vector>

namespace pxb {

/// Options of one solver. Per-level vectors may be shorter than max_levels:
/// missing levels take the global value (XBraid's "level -1" setting).
struct Options {
    int max_levels = 30;
    int min_coarse = 2;
    int cfactor = 2;                       ///< global coarsening factor
    std::vector<int> cfactor_level;        ///< per-level override (entry l for level l)
    int nrelax = 1;                        ///< 0 = F, 1 = FCF, 2 = FCFCF, ...
    std::vector<int> nrelax_level;
    double cwt = 1.0;                      ///< C-relaxation weight
    std::vector<double> cwt_level;
    double tol = 1e-9;
    bool rel_tol = true;                   ///< tolerance relative to ||r_0||
    int max_iter = 100;
    int tnorm = 2;                         ///< 1: sum, 2: sqrt of sum of squares, 3: max
    bool fmg = false;
    int nfmg = -1;
    int nfmg_vcyc = 1;
    bool skip = true;
    int storage = -1;                      ///< -1: C-points, 0: all levels, s>0: levels >= s
    bool seq_soln = false;
    bool residual_computation = true;
    bool relax_only_cg = false;
    bool final_fc_relax = false;
    int access_level = 1;
    int print_level = 0;

    // adjoint (XBraid_Adjoint)
    bool adjoint = false;
    double tol_adjoint = 1e-6;
    bool rel_tol_adjoint = true;
    bool has_tstart_objective = false;     ///< default: tstart
    double tstart_objective = 0.0;
    bool has_tstop_objective = false;      ///< default: tstop
    double tstop_objective = 0.0;
    bool objective_only = false;           ///< evaluate J without the adjoint (line searches)

    int cfactor_at(int level) const {
        return level < static_cast<int>(cfactor_level.size()) ? cfactor_level[level] : cfactor;
    }
    int nrelax_at(int level) const {
        return level < static_cast<int>(nrelax_level.size()) ? nrelax_level[level] : nrelax;
    }
    double cwt_at(int level) const {
        return level < static_cast<int>(cwt_level.size()) ? cwt_level[level] : cwt;
    }

    /// Throws std::invalid_argument naming the first bad option and its value.
    void validate() const;
};

}  // namespace pxb
