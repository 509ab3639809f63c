"""Delta correction on XBraid's ex-07 (Lorenz): iterations to tolerance with and without it.

    python benchmarks/bench_delta.py              # 1 rank, ~1 minute
    python benchmarks/bench_delta.py --max-iter 100
    python benchmarks/bench_delta.py --repeats 7  # the native-vs-Python table with 7 repeats

The problem is XBraid's ex-07 (tests/advanced_apps.py: Lorenz, forward Euler,
2048 steps on [0, log(10)/0.9 * 4], 3 levels, cfactor 2, F-relaxation only,
no skip, absolute tolerance 1e-6). For each delta rank (0 = plain MGRIT) and
Lyapunov setting: the iterations to the tolerance (or "no" within --max-iter),
the last residual norm, the step calls and the wall time on one rank (Python
step callbacks, so the time is the callbacks'). Then the native Lorenz
(``pyxbraid.apps.Lorenz``: step and Jacobian-vector product in C++) against the
Python App on the same problem: bitwise the same iterations, so the wall and
thread-CPU milliseconds per iteration (median of --repeats solves) compare the
cost of one iteration. Results: benchmarks/README.md ("Delta correction").
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

from mpi4py import MPI

import pyxbraid as xb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from advanced_apps import Lorenz  # noqa: E402

CASES = [
    ("plain MGRIT", {}),
    ("rank 1", dict(delta_rank=1, lyapunov=True)),
    ("rank 2", dict(delta_rank=2, lyapunov=True)),
    ("rank 3", dict(delta_rank=3, lyapunov=True)),
    ("rank 3, no Lyapunov estimation", dict(delta_rank=3)),
    ("rank 3, lyapunov_relax", dict(delta_rank=3, lyapunov=True, lyapunov_relax=True)),
    ("rank 3, defer_delta=(1, 0)", dict(delta_rank=3, lyapunov=True, defer_delta=(1, 0))),
]


NATIVE_CASES = [
    ("plain MGRIT", dict(max_iter=39)),
    ("rank 3", dict(delta_rank=3, lyapunov=True)),
    ("rank 2", dict(delta_rank=2, lyapunov=True)),
]


def run(options, max_iter, ntime, app=None):
    solver = xb.Solver(
        app if app is not None else Lorenz(),
        0.0,
        math.log(10.0) / 0.9 * 4,
        ntime,
        comm=MPI.COMM_SELF,
        max_levels=3,
        nrelax=0,
        cfactor=2,
        skip=False,
        abs_tol=1e-6,
        max_iter=max_iter,
        **options,
    )
    start = time.perf_counter()
    result = solver.solve()
    return result, time.perf_counter() - start


def per_iteration(make_app, options, ntime, repeats):
    """Median wall and thread-CPU milliseconds per iteration over ``repeats`` solves, and the iterations."""
    walls, cpus, its = [], [], 0
    options = dict(options)
    max_iter = options.pop("max_iter", 100)
    for _ in range(repeats):
        cpu = time.thread_time()
        result, wall = run(options, max_iter, ntime, make_app())
        cpus.append((time.thread_time() - cpu) / result.iterations * 1e3)
        walls.append(wall / result.iterations * 1e3)
        its = result.iterations
    return statistics.median(walls), statistics.median(cpus), its


def native_vs_python(ntime, repeats):
    print(f"\nnative pyxbraid.apps.Lorenz vs the Python App, median of {repeats} solves, per iteration")
    print(f"{'case':14s} {'iterations':>10s} {'Python ms':>10s} {'native ms':>10s} {'speed-up':>8s}", end="")
    print(f" {'Python CPU':>10s} {'native CPU':>10s} {'speed-up':>8s}")
    for name, options in NATIVE_CASES:
        py_wall, py_cpu, its = per_iteration(Lorenz, options, ntime, repeats)
        nat_wall, nat_cpu, its_native = per_iteration(xb.apps.Lorenz, options, ntime, repeats)
        assert its == its_native, (its, its_native)
        print(f"{name:14s} {its:10d} {py_wall:10.2f} {nat_wall:10.3f} {py_wall / nat_wall:7.1f}x", end="")
        print(f" {py_cpu:10.2f} {nat_cpu:10.3f} {py_cpu / nat_cpu:7.1f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--ntime", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5, help="solves per native-vs-Python row (median)")
    args = parser.parse_args()
    print(f"ex-07 Lorenz, ntime {args.ntime}, 3 levels, F-relaxation, abs_tol 1e-6, max_iter {args.max_iter}")
    print(f"{'case':34s} {'iterations':>10s} {'last ||r||':>11s} {'steps':>8s} {'wall s':>7s}")
    for name, options in CASES:
        result, wall = run(options, args.max_iter, args.ntime)
        its = str(result.iterations) if result.converged else f"no ({result.iterations})"
        last = float(result.residual_norms[-1])
        print(f"{name:34s} {its:>10s} {last:11.3e} {result.calls['step']:8d} {wall:7.2f}")
    native_vs_python(args.ntime, args.repeats)


if __name__ == "__main__":
    main()
