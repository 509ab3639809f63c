// XBraid's ex-01 solved with the C++ API alone (no Python): the core is a
// library usable from C++, and this driver (run by ctest, on 1 and 2 ranks)
// checks it gives XBraid's numbers.
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/linear_ode.hpp"
#include "core/engine.hpp"

namespace {
int failures = 0;

void expect(bool ok, const char* what, int rank) {
    if (ok) return;
    ++failures;
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what);
}
}  // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    {
        // ex-01: u' = -u on [0, 5], 10 backward Euler steps, 2 levels, |r| < 1e-6.
        auto app = std::make_shared<pxb::LinearODE>(std::vector<double>{-1.0}, 1.0, 0.456,
                                                    pxb::LinearODE::Scheme::backward_euler, false);
        pxb::Options options;
        options.max_levels = 2;
        options.has_abs_tol = true;
        options.abs_tol = 1e-6;
        options.has_rel_tol = false;
        pxb::Engine engine(app, MPI_COMM_WORLD, 0.0, 5.0, 10, {}, options);
        const pxb::SolveSummary summary = engine.solve();
        double u10 = 0.0;
        engine.state_at(10, &u10);
        expect(summary.iterations == 4, "4 iterations, as XBraid", rank);
        expect(summary.converged, "converged", rank);
        expect(std::fabs(summary.residual_norms[1] - 2.845538412744718e-02) < 1e-15, "||r_1|| as XBraid", rank);
        expect(std::fabs(u10 - 0.017341529915832606) < 1e-15, "u(5) = (2/3)^10", rank);

        // An option the engine refuses: std::invalid_argument naming it.
        pxb::Options bad;
        bad.cfactor = 1;
        bool refused = false;
        try {
            pxb::Engine(app, MPI_COMM_WORLD, 0.0, 5.0, 10, {}, bad);
        } catch (const std::invalid_argument& e) {
            refused = std::string(e.what()) == "cfactor must be >= 2, got 1";
        }
        expect(refused, "cfactor=1 refused with a message naming it", rank);
        if (rank == 0 && failures == 0)
            std::printf("ex01_driver: 4 iterations, u(5) = %.17g, as XBraid\n", u10);
    }
    int all = 0;
    MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Finalize();
    return all == 0 ? 0 : 1;
}
