// Richardson extrapolation and Richardson-based error estimates (XBraid's
// braid_SetRichardsonEstimation): the interval sums dtk (_braid_GetDtk), the
// extrapolated C-point values of the level-0 C-relaxation (relax.c), the scaled
// FAS right-hand side, residual norm and estimates of the level-0 restriction
// (restrict.c) and their spreading to the fine points
// (_braid_FinalizeErrorEstimates).
//
// With local order k, fine steps dt_i and the coarse step DT of an interval,
// dtk = sum_i dt_i^k and DTK = DT^k. The fine propagator's error over the
// interval is ~ C dtk, the coarse step's ~ C DTK, so
// (DTK u_fine - dtk u_coarse) / (DTK - dtk) cancels the leading term.
#include <algorithm>
#include <cmath>

#include "core/engine.hpp"

namespace pxb {

void Engine::setup_richardson() {
    if (!opt_.richardson && !opt_.error_estimation) return;
    const Level& g = levels_[0];
    // Per owned level-0 C-point: the sum of its interval's fine steps to the
    // power k, added left to right from 0 (the order XBraid's ranks add their
    // parts in, so the sums are the same bits); 0 for index 0.
    rich_.dtk.assign(static_cast<std::size_t>(std::max(g.ncpoints, 0)), 0.0);
    for (int j = 0; j < g.ncpoints; ++j) {
        const int ci = g.clower + j * g.cfactor;
        double dtk = 0.0;
        for (int i = std::max(ci - g.cfactor + 1, 1); i <= ci; ++i)
            dtk += std::pow(times_[i] - times_[i - 1], opt_.local_order);
        rich_.dtk[static_cast<std::size_t>(j)] = dtk;
    }
    rich_.cpoint_estimate.assign(rich_.dtk.size(), 0.0);
    reset_error_estimates();
}

void Engine::reset_error_estimates() {
    // -1: not available (XBraid's initial value, until the first level-0 restriction).
    if (opt_.error_estimation) rich_.estimate.assign(static_cast<std::size_t>(levels_[0].npoints()), -1.0);
}

bool Engine::extrapolates(int level) const {
    // XBraid's FCRelax: never on the first iteration (nothing to extrapolate
    // from yet), only on level 0 of a hierarchy.
    return opt_.richardson && level == 0 && levels_[0].ncpoints > 0 && nlevels() > 1 && iter_ > 0;
}

double Engine::error_estimate_at(int level, int index) const {
    const Level& g = levels_[0];
    if (!opt_.error_estimation || level != 0 || index < g.ilower || index > g.iupper) return -1.0;
    return rich_.estimate[static_cast<std::size_t>(index - g.ilower)];
}

void Engine::richardson_comm_init() {
    // The coarse step of the first owned interval starts at the C-point left
    // of clower, owned by the left neighbour: it sends its last C-point's
    // value as it is before this sweep (the sweep goes right to left, so
    // one rank's coarse steps also start from values not yet relaxed).
    const Level& g = levels_[0];
    if (g.ilower > initiali() && g.clower > 0) {
        rich_.recv_source = owner(0, g.clower - g.cfactor);
        arena_.receive(rich_.left, rich_.recv_source, kRichardsonTag, rich_.recv);
    }
    if (g.iupper < g.gupper && g.cupper + g.cfactor <= g.gupper)
        arena_.send(g.ua.at(g.u_slot(g.cupper)), rich_.send_buf, owner(0, g.cupper + g.cfactor), kRichardsonTag,
                    rich_.send);
}

void Engine::richardson_comm_wait() {
    comm_.wait(rich_.recv);
    comm_.wait(rich_.send);
}

CVec Engine::extrapolate_cpoint(int ci, CVec u) {
    // u: the relaxed (fine) value at C-point ci, already stored. One coarse
    // step from the C-point to the left, then the stored value becomes
    // a u + b u_coarse.
    Level& g = levels_[0];
    const int left = ci - g.cfactor;
    Vec coarse = rich_.coarse;
    if (ci == g.clower) {
        comm_.wait(rich_.recv);
        arena_.received(rich_.left, rich_.recv_source, kRichardsonTag);
        arena_.copy(coarse, rich_.left);
    } else {
        arena_.copy(coarse, g.ua.at(g.u_slot(left)));
    }
    const double DTK = std::pow(times_[ci] - times_[left], opt_.local_order);
    const double dtk = rich_.dtk[static_cast<std::size_t>((ci - g.clower) / g.cfactor)];
    const double a = DTK / (DTK - dtk);
    const double b = -dtk / (DTK - dtk);
    fill_status(0, ci, Phase::fc_relax);
    status_.tstart = times_[left];
    status_.tindex = left;  // XBraid reports left - 1 here (a quirk), but gives the estimate of `left` as here
    status_.error_estimate = error_estimate_at(0, left);
    arena_.record_step(coarse, u, status_);
    gate_.step(coarse, u, nullptr, status_);  // ustop: the fine value (XBraid's)
    arena_.axpy(a, u, b, coarse);
    Vec stored = g.ua.at(g.u_slot(ci));
    arena_.copy(stored, coarse);
    return stored;
}

void Engine::richardson_coarse_point(int ii, Vec cu, Vec fa, TemporalNorm& rnorm) {
    // Level 1, point ii: cu = A_c(va)_ii, fa = the restricted fine residual.
    // XBraid: richardson scales the FAS right-hand side by DTK / (DTK - dtk)
    // and measures the level-0 residual norm here instead of at the fine
    // C-points; the estimate is |fa| / DTK (richardson) or |fa| / (DTK - dtk).
    const Level& c = levels_[1];
    const int i = c.ilower + ii;
    const double dtk = rich_.dtk[static_cast<std::size_t>(ii)];
    const double DTK = std::pow(c.t(i) - c.t(i - 1), opt_.local_order);
    if (opt_.richardson) {
        const double factor = DTK / (DTK - dtk);
        arena_.axpy(factor, cu, factor, fa);
        arena_.axpy(1.0, fa, -1.0, cu);
        rnorm.add(gate_.norm(cu, &status_));
    } else {
        arena_.axpy(1.0, cu, 1.0, fa);
    }
    if (opt_.error_estimation)
        rich_.cpoint_estimate[static_cast<std::size_t>(ii)] =
            gate_.norm(fa, &status_) / (opt_.richardson ? DTK : DTK - dtk);
}

void Engine::finalize_error_estimates() {
    // XBraid's _braid_FinalizeErrorEstimates: every fine point gets the
    // estimate (times dtk) of the interval it belongs to, i.e. of the next
    // C-point; points after the last C-point that of the last one. Where that
    // C-point is another rank's, the value comes from the neighbour (a rank
    // without C-points passes it on).
    const Level& g = levels_[0];
    if (g.ilower > g.iupper) return;
    const int last_cpoint = (g.gupper / g.cfactor) * g.cfactor;
    const std::size_t length = rich_.dtk.size();
    post_estimate_exchange(last_cpoint);
    std::size_t j = 0;
    for (int i = g.ilower; i <= g.iupper; ++i) {
        rich_.estimate[static_cast<std::size_t>(i - g.ilower)] = j < length ? cpoint_value(j) : received_estimate();
        if (g.is_cpoint(i) && i != last_cpoint) ++j;
    }
    comm_.wait(rich_.exchange.send_right);
    comm_.wait(rich_.exchange.send_left);
}

void Engine::post_estimate_exchange(int last_cpoint) {
    const Level& g = levels_[0];
    const std::size_t length = rich_.dtk.size();
    EstimateExchange& x = rich_.exchange;
    // Points after this rank's last C-point (or all, without C-points) need a neighbour's value.
    if (g.ilower > last_cpoint && g.ilower > 0)
        comm_.irecv(&x.received, 1, DType::float64, owner(0, g.ilower - 1), kEstimateTag, x.recv);
    else if (!g.is_cpoint(g.iupper) && g.iupper != g.gupper)
        comm_.irecv(&x.received, 1, DType::float64, owner(0, g.iupper + 1), kEstimateTag, x.recv);
    if (g.iupper >= last_cpoint && g.iupper != g.gupper) {
        x.to_right = length == 0 ? received_estimate() : cpoint_value(length - 1);
        comm_.isend(&x.to_right, 1, DType::float64, owner(0, g.iupper + 1), kEstimateTag, x.send_right);
    }
    if (g.ilower <= last_cpoint && g.ilower > 0 && !g.is_cpoint(g.ilower - 1)) {
        x.to_left = length == 0 ? received_estimate() : cpoint_value(0);
        comm_.isend(&x.to_left, 1, DType::float64, owner(0, g.ilower - 1), kEstimateTag, x.send_left);
    }
}

double Engine::received_estimate() {
    comm_.wait(rich_.exchange.recv);  // at once when it has arrived before
    return rich_.exchange.received;
}

}  // namespace pxb
