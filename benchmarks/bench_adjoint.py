"""Cost of the adjoint: one primal+adjoint iteration against one primal iteration.

For XBraid's ex-01-adjoint problem (u' = lam u, backward Euler, f = u^2/N) with
the native LinearODE and the same problem as a Python App, a fixed number of
iterations (abs_tol = abs_tol_adjoint = 0), on 1 and 2 ranks:

- ns per fine step per iteration, primal only and primal + adjoint, and their ratio;
- memory per local time point: the state storage and the adjoint's (bar arena,
  tape, adjoint iterate).

Run without mpiexec (it launches its own 1- and 2-rank jobs):

    .venv/bin/python benchmarks/bench_adjoint.py [--log2n 16] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ITERS = 5
CONFIGS = {
    "ml=2 cf2 FCF": dict(max_levels=2, cfactor=2, nrelax=1),
    "full ML cf2 FCF": dict(max_levels=30, cfactor=2, nrelax=1),
    "full ML cf8 F": dict(max_levels=30, cfactor=8, nrelax=0),
}


def worker(log2n: int, python_log2n: int) -> None:
    from mpi4py import MPI

    import pyxbraid as xb

    class DecayAdjoint(xb.App):
        """ex-01-adjoint as a Python App, scalar style."""

        def __init__(self):
            super().__init__(shape=(1,))
            self.lam, self.grad = -1.0, 0.0

        def init(self, t, u):
            u[0] = 1.0 if t == 0.0 else 0.456

        def step(self, u, ustop, fstop, status):
            u[0] = (u[0] + fstop[0] if fstop is not None else u[0]) / (1.0 - self.lam * status.dt)

        def objective(self, u, status):
            return u[0] * u[0] / status.ntime

        def objective_adjoint(self, u, u_bar, f_bar, status):
            u_bar[0] = 2.0 * u[0] / status.ntime * f_bar

        def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
            d = 1.0 - self.lam * status.dt
            self.grad += status.dt * u[0] / (d * d) * u_bar[0]
            u_bar[0] = u_bar[0] / d

        def reset_gradient(self):
            self.grad = 0.0

    comm = MPI.COMM_WORLD
    rows = []
    for app_name, make, n in (
        ("native LinearODE", lambda: xb.apps.LinearODE(objective="mean_square"), 2**log2n),
        ("Python App (scalar)", DecayAdjoint, 2**python_log2n),
    ):
        for config, opts in CONFIGS.items():
            for adjoint in (False, True):
                kw = dict(adjoint=True, abs_tol=0.0, abs_tol_adjoint=0.0) if adjoint else dict(abs_tol=0.0)
                s = xb.Solver(make(), 0.0, 25.0, n, comm=comm, max_iter=ITERS, skip=False, **opts, **kw)
                comm.Barrier()
                r = s.solve()
                wall = comm.allreduce(r.wall_time, op=MPI.MAX)
                local = s.iupper - s.ilower + 1
                rows.append(
                    dict(
                        app=app_name,
                        config=config,
                        adjoint=adjoint,
                        n=n,
                        iters=r.iterations,
                        ns=wall / n / r.iterations * 1e9,
                        state_bytes=comm.allreduce(s.storage_bytes, op=MPI.MAX) / local,
                        adjoint_bytes=(comm.allreduce(s.adjoint_bytes, op=MPI.MAX) / local) if adjoint else 0.0,
                    )
                )
    if comm.rank == 0:
        print("ROWS " + json.dumps(rows), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2n", type=int, default=16)
    parser.add_argument("--python-log2n", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--quick", action="store_true", help="2^12 steps, 1 repeat")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.log2n, args.python_log2n, args.repeats = 12, 11, 1
    if args.worker:
        worker(args.log2n, args.python_log2n)
        return
    mpiexec = os.environ.get("PYXBRAID_MPIEXEC") or str(Path(sys.executable).with_name("mpiexec"))
    results: dict[tuple, list[dict]] = {}
    for _ in range(args.repeats):
        for p in (int(x) for x in args.ranks.split(",")):
            cmd = [
                mpiexec,
                "-n",
                str(p),
                sys.executable,
                "-m",
                "mpi4py",
                __file__,
                "--worker",
                "--log2n",
                str(args.log2n),
                "--python-log2n",
                str(args.python_log2n),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1200).stdout
            for row in json.loads(next(line for line in out.splitlines() if line.startswith("ROWS "))[5:]):
                results.setdefault((row["app"], row["config"], p, row["adjoint"]), []).append(row)
    print(f"adjoint benchmark: ex-01-adjoint, {ITERS} iterations, medians of {args.repeats} repeat(s)")
    print(
        f"{'app':20s} {'config':16s} {'P':>2s} {'N':>8s} {'primal ns/f/it':>15s} {'adjoint ns/f/it':>16s} "
        f"{'ratio':>6s} {'state B/pt':>11s} {'adjoint B/pt':>13s} {'2-rank speedup':>15s}"
    )
    for (app, config, p, adjoint), rows in sorted(results.items()):
        if adjoint:
            continue
        prim = statistics.median(r["ns"] for r in rows)
        adj_rows = results[(app, config, p, True)]
        adj = statistics.median(r["ns"] for r in adj_rows)
        speed = ""
        if p > 1 and (app, config, 1, True) in results:
            speed = f"{statistics.median(r['ns'] for r in results[(app, config, 1, True)]) / adj:.2f}x"
        print(
            f"{app:20s} {config:16s} {p:2d} {rows[0]['n']:8d} {prim:15.1f} {adj:16.1f} {adj / prim:6.2f} "
            f"{rows[0]['state_bytes']:11.1f} {adj_rows[0]['adjoint_bytes']:13.1f} {speed:>15s}"
        )


if __name__ == "__main__":
    main()
