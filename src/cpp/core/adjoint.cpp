// XBraid_Adjoint: after each primal iteration, the objective is reduced and
// the recorded iteration is replayed in reverse with the current adjoint
// iterate as seed ("primal and adjoint braid cycles"). The bars of the
// iteration's input states form the next adjoint iterate; the user's
// step_adjoint / objective_adjoint accumulate the gradient.
#include <algorithm>
#include <cstring>

#include "core/engine.hpp"
#include "core/norms.hpp"

namespace pxb {

namespace {
constexpr int kReverseTag = 1000;  // + the primal tag
}

double Engine::finish_objective() {
    double sum = local_objective_;
    comm_.allreduce(&sum, 1, MPI_SUM);
    objective_ = gate_.app().has_postprocess() ? gate_.postprocess(sum) : sum;
    if (!opt_.objective_only) {
        f_bar_ = gate_.app().has_postprocess() ? gate_.postprocess_adjoint(sum) : 1.0;
        // The postprocess derivative may assign the design term of the
        // gradient; it must count once, on rank 0.
        if (comm_.rank() != 0) gate_.reset_gradient();
    }
    return objective_;
}

void Engine::reverse_sweep() {
    double* bar = bar_.data();
    double* sbar = scratch_.data();
    double* tmp = scratch_.data() + n_;
    const std::vector<TapeOp>& ops = tape_.ops();
    // Reverse messages: one buffer per received primal message, alive until
    // the end of the sweep.
    std::size_t nrecv = 0;
    for (const TapeOp& op : ops) nrecv += op.kind == TapeOp::Kind::recv;
    if (rev_bufs_.size() < nrecv * n_) rev_bufs_.resize(nrecv * n_);
    rev_reqs_.assign(nrecv, MPI_REQUEST_NULL);
    std::size_t next_buf = 0;

    for (auto it = ops.rbegin(); it != ops.rend(); ++it) {
        const TapeOp& op = *it;
        double* ybar = bar + op.y;
        switch (op.kind) {
            case TapeOp::Kind::copy: {
                double* xbar = bar + op.x;
                for (std::size_t q = 0; q < n_; ++q) {
                    xbar[q] += ybar[q];
                    ybar[q] = 0.0;
                }
                break;
            }
            case TapeOp::Kind::axpy: {
                if (op.x == op.y) {
                    const double c = op.a + op.b;
                    for (std::size_t q = 0; q < n_; ++q) ybar[q] *= c;
                } else {
                    double* xbar = bar + op.x;
                    for (std::size_t q = 0; q < n_; ++q) {
                        xbar[q] += op.a * ybar[q];
                        ybar[q] *= op.b;
                    }
                }
                break;
            }
            case TapeOp::Kind::step: {
                const double* u = op.saved;
                const double* ustop = op.saved_ustop;
                std::fill(sbar, sbar + n_, 0.0);
                gate_.step_adjoint(u, ustop, ybar, sbar, op.st);
                double* target = op.ustop_is_u ? ybar : bar + op.x;
                for (std::size_t q = 0; q < n_; ++q) target[q] += sbar[q];
                break;
            }
            case TapeOp::Kind::objective: {
                std::fill(tmp, tmp + n_, 0.0);
                gate_.objective_adjoint(op.saved, tmp, f_bar_, op.st);
                for (std::size_t q = 0; q < n_; ++q) ybar[q] += tmp[q];
                break;
            }
            case TapeOp::Kind::recv: {
                // The primal value came from op.peer: its bar goes back there.
                double* buf = rev_bufs_.data() + next_buf * n_;
                std::memcpy(buf, ybar, n_ * sizeof(double));
                comm_.isend(buf, n_, op.peer, op.tag + kReverseTag, rev_reqs_[next_buf]);
                ++next_buf;
                std::fill(ybar, ybar + n_, 0.0);
                break;
            }
            case TapeOp::Kind::send: {
                MPI_Request req;
                comm_.irecv(tmp, n_, op.peer, op.tag + kReverseTag, req);
                comm_.wait(req);
                for (std::size_t q = 0; q < n_; ++q) ybar[q] += tmp[q];
                break;
            }
        }
    }
    for (MPI_Request& r : rev_reqs_) comm_.wait(r);
}

double Engine::update_adjoint_iterate() {
    // New adjoint iterate = bars of the iteration's input states (stored
    // level-0 points; only C-points in iteration 0, when F-points held no value).
    Level& g = levels_[0];
    double* diff = scratch_.data();
    TemporalNorm norm(opt_.tnorm);
    for (int i = g.ilower; i <= g.iupper; ++i) {
        const int slot = g.u_slot(i);
        if (slot < 0) continue;
        if (iter_ == 0 && !g.is_cpoint(i)) continue;
        const double* fresh = bar_.data() + offset_of(g.ua.at(slot));
        double* kept = ubar_.data() + static_cast<std::size_t>(slot) * n_;
        if (i > 0) {
            for (std::size_t q = 0; q < n_; ++q) diff[q] = 1.0 * fresh[q] + (-1.0) * kept[q];
            norm.add(gate_.norm(diff));
        }
        std::memcpy(kept, fresh, n_ * sizeof(double));
    }
    return norm.reduce(comm_);
}

void Engine::adjoint_top_of_cycle() {
    finish_objective();
    if (opt_.objective_only) return;
    // Seed: the iteration's output states carry the current adjoint iterate.
    std::fill(bar_.begin(), bar_.end(), 0.0);
    Level& g = levels_[0];
    // Index 0 is never an output of an iteration (init(tstart) stays fixed):
    // leaving it unseeded makes its bar this sweep's d J / d u_0 alone.
    for (int i = std::max(g.ilower, 1); i <= g.iupper; ++i) {
        const int slot = g.u_slot(i);
        if (slot < 0) continue;
        std::memcpy(bar_.data() + offset_of(g.ua.at(slot)), ubar_.data() + static_cast<std::size_t>(slot) * n_,
                    n_ * sizeof(double));
    }
    tape_.recording = false;
    reverse_sweep();
    initial_adjoint();
    rnorm_adj_ = update_adjoint_iterate();
    record_norm(adj_norms_, iter_, rnorm_adj_);
    if (iter_ == 0 && rnorm0_adj_ == -1.0) rnorm0_adj_ = rnorm_adj_ > 0.0 ? rnorm_adj_ : 1.0;
}

void Engine::adjoint_after_sequential() {
    // max_levels = 1: the recorded sequential sweep reversed once is the exact
    // discrete adjoint (backpropagation through time).
    finish_objective();
    if (opt_.objective_only) return;
    std::fill(bar_.begin(), bar_.end(), 0.0);
    tape_.recording = false;
    reverse_sweep();
    initial_adjoint();
    tape_.clear();
}

void Engine::initial_adjoint() {
    Level& g = levels_[0];
    if (g.ilower != 0) return;
    Status st = point_status(0, Phase::objective, done_);
    gate_.init_adjoint(g.t(0), bar_.data() + offset_of(g.ua.at(g.u_slot(0))), st);
}

}  // namespace pxb
