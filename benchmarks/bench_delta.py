"""Delta correction on XBraid's ex-07 (Lorenz): iterations to tolerance with and without it.

    python benchmarks/bench_delta.py              # 1 rank, ~1 minute
    python benchmarks/bench_delta.py --max-iter 100

The problem is XBraid's ex-07 (tests/advanced_apps.py: Lorenz, forward Euler,
2048 steps on [0, log(10)/0.9 * 4], 3 levels, cfactor 2, F-relaxation only,
no skip, absolute tolerance 1e-6). For each delta rank (0 = plain MGRIT) and
Lyapunov setting: the iterations to the tolerance (or "no" within --max-iter),
the last residual norm, the step calls and the wall time on one rank (Python
step callbacks, so the time is the callbacks'). Results: benchmarks/README.md
("Delta correction").
"""

from __future__ import annotations

import argparse
import math
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


def run(options, max_iter, ntime):
    solver = xb.Solver(
        Lorenz(),
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--ntime", type=int, default=2048)
    args = parser.parse_args()
    print(f"ex-07 Lorenz, ntime {args.ntime}, 3 levels, F-relaxation, abs_tol 1e-6, max_iter {args.max_iter}")
    print(f"{'case':34s} {'iterations':>10s} {'last ||r||':>11s} {'steps':>8s} {'wall s':>7s}")
    for name, options in CASES:
        result, wall = run(options, args.max_iter, args.ntime)
        its = str(result.iterations) if result.converged else f"no ({result.iterations})"
        last = float(result.residual_norms[-1])
        print(f"{name:34s} {its:>10s} {last:11.3e} {result.calls['step']:8d} {wall:7.2f}")


if __name__ == "__main__":
    main()
