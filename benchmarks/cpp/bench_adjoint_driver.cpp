// Cost of one adjoint iteration against one primal iteration with no Python
// in the way: XBraid's ex-01-adjoint problem (u' = lam u, backward Euler,
// f = u^2 / N) with the native LinearODE, a fixed number of iterations (zero
// tolerances, skip off), process CPU time per fine step per iteration (CPU
// time, not wall time: on a shared machine it is far less sensitive to load).
// One rank. Build it against the engine library of scripts/ctest.sh:
//
//   bash scripts/ctest.sh
//   .venv/bin/mpicxx -O3 -DNDEBUG -std=c++17 -ffp-contract=off -Isrc/cpp \
//       benchmarks/cpp/bench_adjoint_driver.cpp build/ctest/libpyxbraid_engine.a -o build/bench_adjoint_driver
//   build/bench_adjoint_driver [log2n=16] [max_levels=30] [cfactor=2] [nrelax=1] [repeats=9] [iterations=5]
//                              [window=1]
//
// Prints the median and the minimum over the repeats, primal and adjoint
// solves alternating, and their ratio: of the medians, of the minima, and the
// median of each adjoint solve's ratio to the primal solve just before it.
// window=0 shrinks the objective window to the last time point (an objective
// term at one point instead of every fine point): the difference to window=1
// is what the objective terms and their adjoints cost.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <vector>

#include "apps/linear_ode.hpp"
#include "core/engine.hpp"

namespace {
double cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

struct Config {
    int n, max_levels, cfactor, nrelax, iterations;
    bool whole_window;
};

/// ns of CPU time per fine step per iteration of one solve.
double solve_ns(const Config& c, bool adjoint) {
    auto app = std::make_shared<pxb::LinearODE>(std::vector<double>{-1.0}, 1.0, 0.456,
                                                pxb::LinearODE::Scheme::backward_euler, false);
    app->set_objective(true, false, 0.0, 0.0);
    pxb::Options o;
    o.max_levels = c.max_levels;
    o.cfactor = c.cfactor;
    o.nrelax = c.nrelax;
    o.max_iter = c.iterations;
    o.skip = false;
    o.has_abs_tol = true;
    o.abs_tol = 0.0;
    o.has_rel_tol = false;
    if (adjoint) {
        o.adjoint = true;
        o.has_abs_tol_adjoint = true;
        o.abs_tol_adjoint = 0.0;
        o.has_rel_tol_adjoint = false;
        if (!c.whole_window) {
            o.has_tstart_objective = true;
            o.tstart_objective = 25.0;
        }
    }
    pxb::Engine engine(app, MPI_COMM_WORLD, 0.0, 25.0, c.n, {}, o);
    const double t0 = cpu_seconds();
    const pxb::SolveSummary s = engine.solve();
    return (cpu_seconds() - t0) / c.n / s.iterations * 1e9;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    auto arg = [&](int i, int fallback) { return argc > i ? std::atoi(argv[i]) : fallback; };
    const Config c{1 << arg(1, 16), arg(2, 30), arg(3, 2), arg(4, 1), arg(6, 5), arg(7, 1) != 0};
    const int repeats = arg(5, 9);
    std::vector<double> primal, adjoint;
    for (int r = 0; r < repeats; ++r) {
        primal.push_back(solve_ns(c, false));
        adjoint.push_back(solve_ns(c, true));
    }
    const double pmin = *std::min_element(primal.begin(), primal.end());
    const double amin = *std::min_element(adjoint.begin(), adjoint.end());
    // Each adjoint solve against the primal solve just before it: on a shared
    // machine the load drifts over seconds, and a pair sees the same load.
    std::vector<double> paired;
    for (int r = 0; r < repeats; ++r) paired.push_back(adjoint[r] / primal[r]);
    std::printf(
        "N=%d max_levels=%d cfactor=%d nrelax=%d, %d iterations%s: primal %.1f ns (min %.1f), adjoint %.1f ns "
        "(min %.1f) per fine step per iteration; ratio %.2f (of the minima %.2f, paired %.2f)\n",
        c.n, c.max_levels, c.cfactor, c.nrelax, c.iterations, c.whole_window ? "" : ", objective at tstop only",
        median(primal), pmin, median(adjoint), amin, median(adjoint) / median(primal), amin / pmin, median(paired));
    MPI_Finalize();
    return 0;
}
