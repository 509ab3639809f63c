#include "core/options.hpp"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace pxb {

namespace {
template <class T>
[[noreturn]] void reject(const char* name, const char* rule, T value) {
    std::ostringstream msg;
    msg << name << " must be " << rule << ", got " << value;
    throw std::invalid_argument(msg.str());
}
}  // namespace

void Options::validate() const {
    // The facade validates with friendlier messages first; this is the backstop
    // for C++ users of the core.
    if (max_levels < 1) reject("max_levels", ">= 1", max_levels);
    if (min_coarse < 1) reject("min_coarse", ">= 1", min_coarse);
    if (cfactor < 2) reject("cfactor", ">= 2", cfactor);
    for (int cf : cfactor_level)
        if (cf < 2) reject("cfactor (per level)", ">= 2", cf);
    if (nrelax < 0) reject("nrelax", ">= 0", nrelax);
    for (int nr : nrelax_level)
        if (nr < 0) reject("nrelax (per level)", ">= 0", nr);
    if (!(cwt > 0.0) || !std::isfinite(cwt)) reject("cwt", "a finite number > 0", cwt);
    for (double w : cwt_level)
        if (!(w > 0.0) || !std::isfinite(w)) reject("cwt (per level)", "a finite number > 0", w);
    if (!(tol >= 0.0) || !std::isfinite(tol)) reject("tolerance", "a finite number >= 0", tol);
    if (max_iter < 1) reject("max_iter", ">= 1", max_iter);
    if (tnorm < 1 || tnorm > 3) reject("tnorm", "1, 2 or 3", tnorm);
    if (nfmg < -1) reject("nfmg", ">= -1", nfmg);
    if (nfmg_vcyc < 1) reject("nfmg_vcyc", ">= 1", nfmg_vcyc);
    if (storage < -1) reject("storage", ">= -1", storage);
    if (access_level < 0 || access_level > 2) reject("access_level", "0, 1 or 2", access_level);
    if (print_level < 0 || print_level > 3) reject("print_level", "between 0 and 3", print_level);
    if (!(tol_adjoint >= 0.0) || !std::isfinite(tol_adjoint))
        reject("adjoint tolerance", "a finite number >= 0", tol_adjoint);
}

}  // namespace pxb
