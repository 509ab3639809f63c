#!/usr/bin/env python
"""Spatial coarsening: cost per MGRIT iteration of Heat1D with and without it (see benchmarks/README.md).

One command prints the table::

    .venv/bin/python benchmarks/bench_spatial.py                  # nspace 257 and 4097, 1 and 2 ranks
    .venv/bin/python benchmarks/bench_spatial.py --quick          # smoke test, a few seconds

Problem: XBraid's ex-02 (``apps.Heat1D``, backward Euler, nspace points) on
[0, 2 pi] with ntime 256, 5 levels, cfactor 2, FCF relaxation, no skip. Each
configuration runs a fixed 5 iterations (abs_tol 1e-300) for the cost per
iteration (median of ``--repeats`` solves, each solve timed between barriers on
rank 0; also the slowest rank's thread CPU time, which a loaded machine does not
inflate), and once more to abs_tol 1e-8 for the iterations it needs. With
spatial coarsening the coarse levels step on 2^l times fewer points
(``Heat1D(spatial_coarsening=True)``: XBraid's ``-sc``), at the price of the
coarsen/refine calls and (here) slower convergence.

The script is its own driver: it launches ``mpiexec -n P python -m mpi4py
bench_spatial.py --worker`` for each rank count and prints one table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
NTIME, LEVELS, FIXED_ITERS = 256, 5, 5


def worker(args) -> None:
    from mpi4py import MPI

    import pyxbraid as xb

    comm = MPI.COMM_WORLD
    rows = []
    for nspace in (int(s) for s in args.sizes.split(",")):
        for coarsening in (False, True):

            def solver(tol, max_iter, nspace=nspace, coarsening=coarsening):
                app = xb.apps.Heat1D(nspace, guess="random", spatial_coarsening=coarsening)
                opts = dict(max_levels=LEVELS, cfactor=2, nrelax=1, skip=False, abs_tol=tol, max_iter=max_iter)
                return xb.Solver(app, 0.0, 2 * math.pi, NTIME, comm=comm, **opts)

            times, cpu = [], []
            for _ in range(args.repeats):
                s = solver(1e-300, FIXED_ITERS)
                comm.Barrier()
                t0, c0 = time.perf_counter(), time.thread_time()
                result = s.solve()
                c1 = time.thread_time()
                comm.Barrier()
                times.append((time.perf_counter() - t0) / result.iterations)
                # this thread's CPU time (the native solve runs in it): the compute, not the
                # time spent descheduled on a loaded machine; the slowest rank's
                cpu.append(comm.allreduce(c1 - c0, op=MPI.MAX) / result.iterations)
            converged = solver(1e-8, 100).solve()
            rows.append(
                dict(
                    nspace=nspace,
                    coarsening=coarsening,
                    ms_per_iteration=1e3 * statistics.median(times),
                    cpu_ms_per_iteration=1e3 * statistics.median(cpu),
                    iterations_to_1e8=converged.iterations,
                    steps_per_iteration=result.calls["step"] / result.iterations,
                    coarsen_per_iteration=result.calls["coarsen"] / result.iterations,
                    refine_per_iteration=result.calls["refine"] / result.iterations,
                )
            )
    if comm.Get_rank() == 0:
        Path(args.out).write_text(json.dumps(rows))


def _mpiexec() -> str:
    if os.environ.get("PYXBRAID_MPIEXEC"):
        return os.environ["PYXBRAID_MPIEXEC"]
    cand = Path(sys.executable).with_name("mpiexec")
    return str(cand) if cand.exists() else shutil.which("mpiexec") or "mpiexec"


def run_ranks(args, nranks: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [_mpiexec(), "-n", str(nranks), sys.executable, "-m", "mpi4py", str(HERE), "--worker"]
        cmd += ["--out", str(out), "--sizes", args.sizes, "--repeats", str(args.repeats)]
        subprocess.run(cmd, check=True, timeout=1800)
        return json.loads(out.read_text())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="257,4097", help="nspace values (comma-separated, 2^k + 1)")
    p.add_argument("--ranks", default="1,2", help="rank counts (comma-separated)")
    p.add_argument("--repeats", type=int, default=5, help="timed solves per configuration (median)")
    p.add_argument("--quick", action="store_true", help="nspace 65, 1 repeat, 1 rank")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.sizes, args.ranks, args.repeats = "65", "1", 1
    results = {int(r): run_ranks(args, int(r)) for r in args.ranks.split(",")}
    print(f"Heat1D, ntime {NTIME}, {LEVELS} levels, cfactor 2, FCF, no skip; median of {args.repeats} solves")
    print(
        "| nspace | ranks | spatial coarsening | ms / iteration | ratio | CPU ms / iteration | ratio | steps / it "
        "| coarsen + refine / it | iterations to 1e-8 |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for ranks, rows in results.items():
        by = {(r["nspace"], r["coarsening"]): r for r in rows}
        for nspace in sorted({r["nspace"] for r in rows}):
            base = by[(nspace, False)]["ms_per_iteration"]
            base_cpu = by[(nspace, False)]["cpu_ms_per_iteration"]
            for coarsening in (False, True):
                r = by[(nspace, coarsening)]
                calls = r["coarsen_per_iteration"] + r["refine_per_iteration"]
                print(
                    f"| {nspace} | {ranks} | {'yes' if coarsening else 'no'} | {r['ms_per_iteration']:.2f} "
                    f"| {base / r['ms_per_iteration']:.2f}x | {r['cpu_ms_per_iteration']:.2f} "
                    f"| {base_cpu / r['cpu_ms_per_iteration']:.2f}x | {r['steps_per_iteration']:.0f} | {calls:.0f} "
                    f"| {r['iterations_to_1e8']} |"
                )


if __name__ == "__main__":
    main()
