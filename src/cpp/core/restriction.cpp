// F-relaxation, FAS residual, residual norm and injection to the next level
// (XBraid's restrict.c).
#include <cstring>

#include "core/engine.hpp"
#include "core/norms.hpp"

namespace pxb {

void Engine::f_restrict(int level) {
    Level& g = levels_[level];
    Level& c = levels_[level + 1];
    double* r = work_;
    const bool objective = level == 0 && (opt_.adjoint || opt_.objective_only);
    TemporalNorm rnorm(opt_.tnorm);

    comm_init_fc(level);
    for (int k = g.ncpoints; k >= 0; --k) {
        int flo, fhi, ci;
        g.interval(k, flo, fhi, ci);
        if (flo <= fhi)
            fetch(level, flo - 1, r);
        else if (ci > 0)
            fetch(level, ci - 1, r);
        for (int fi = flo; fi <= fhi; ++fi) {
            take_step(level, fi, r, Phase::f_restrict);
            store(level, fi, r);
            if (objective) evaluate_objective(fi, r);
        }
        if (objective && ci > -1) evaluate_objective(ci, g.ua.at(g.u_slot(ci)));
        if (ci > 0) {
            const double* u = g.ua.at(g.u_slot(ci));
            // FAS residual r = f - A(u) (f = 0 on level 0 and where skip left no fa).
            user_or_default_residual(level, ci, u, r, Phase::f_restrict);
            if (level == 0 || !g.fa_valid)
                vaxpy(0.0, r, -1.0, r);
            else
                vaxpy(1.0, g.fa.at(ci - g.ilower), -1.0, r);
            if (level == 0) rnorm.add(gate_.norm(r, &status_));
            const int cidx = ci / g.cfactor - c.ilower;
            vcopy(c.va.at(cidx), u);
            vcopy(c.fa.at(cidx), r);
        } else if (ci == 0) {
            vcopy(c.va.at(0 - c.ilower), g.ua.at(g.u_slot(0)));
        }
    }
    comm_wait(level);

    // Coarse level: u = va, then fa += A_c(va) (needs the left neighbour's last va).
    c.va_valid = true;
    c.fa_valid = true;
    init_coarse_from_va(level + 1);
    const int clevel = level + 1;
    if (c.ilower <= c.iupper) {
        const int left = owner(clevel, c.ilower - 1);
        va_recv_source_ = left;
        if (left >= 0) comm_.irecv(c.va.at(-1), n_, left, kVaTag + clevel, va_recv_);
        const int right = owner(clevel, c.iupper + 1);
        if (right >= 0) vsend(c.va.at(c.iupper - c.ilower), va_send_buf_, right, kVaTag + clevel, va_send_);
    }
    double* cu = work2_;
    for (int i = c.iupper; i >= c.ilower; --i) {
        if (i <= 0) continue;
        const int ii = i - c.ilower;
        if (ii == 0) {
            comm_.wait(va_recv_);
            vreceived(c.va.at(-1), va_recv_source_, kVaTag + clevel);
        }
        vcopy(cu, c.va.at(ii - 1));
        user_or_default_residual(clevel, i, c.va.at(ii), cu, Phase::residual);
        vaxpy(1.0, cu, 1.0, c.fa.at(ii));
    }
    comm_.wait(va_recv_);
    comm_.wait(va_send_);

    if (level == 0) {
        // residual_computation off: no reduction, "not available" (-1) as XBraid.
        const double value = opt_.residual_computation ? rnorm.reduce(comm_) : -1.0;
        current_rnorm_ = value;
        record_norm(rnorms_, iter_, value);
        // XBraid's reference ||r_0||: iteration 0, or 1 when iteration 0 was
        // skipped; set once per solver (kept across warm restarts).
        if ((iter_ == 0 || (iter_ == 1 && opt_.skip && !opt_.seq_soln)) && rnorm0_ == -1.0)
            rnorm0_ = value;
    }
}

}  // namespace pxb
