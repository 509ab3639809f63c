"""Numpy residual layers (nn.Layer) against the native ResNet layer: time per training step.

    python benchmarks/bench_layers.py steps --ranks 1 2 --repeats 5   # modes x layers x depths
    python benchmarks/bench_layers.py overhead --repeats 7            # the Python path's cost per step call

``steps``: one training step (loss and gradient of a fresh batch: reset + solve) of the same
network with the native dense layer, nn.Dense (the same layer in numpy, through the engine's
Python-App path), and nn.Conv1d; layer-serial, exact (tolerances 1e-10) and one-shot (2
iterations) modes. ``overhead``: a layer whose forward and vjp cost next to nothing, on batch 1,
so that the time per step call is the Python path's own cost (the callback trampoline, the
parameter views, the result checks). Every figure is a median over repeats, side by side in one
invocation (steps: the maximum over ranks of each repeat); one BLAS thread per process.
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# One BLAS thread per process, as the engine runs one thread per rank: with several ranks
# per node, multi-threaded BLAS in every rank oversubscribes the cores (set before numpy loads;
# the mpiexec workers inherit it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

MODES = {
    "serial": None,
    "exact": dict(max_levels=10, cfactor=4, abs_tol=1e-10, abs_tol_adjoint=1e-10),
    "one-shot": dict(max_levels=10, cfactor=4, max_iter=2, one_shot=True),
}


def layer_for(kind: str, width: int):
    from pyxbraid import nn

    if kind == "native":
        return None
    if kind == "numpy Dense":
        return nn.Dense(width, activation="smooth_relu")
    return nn.Conv1d(channels=width // 4, length=4, kernel_size=3, activation="smooth_relu")


def worker_steps(repeats: int) -> list[dict]:
    from mpi4py import MPI

    from pyxbraid import nn

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(0)
    batch = 100
    x, y = rng.uniform(-3, 3, (batch, 2)), rng.integers(0, 5, batch)
    rows = []
    for depth in (32, 128):
        for width in (8, 32):
            for kind in ("native", "numpy Dense", "numpy Conv1d"):
                for mode, lp in MODES.items():
                    net = nn.ResNet(2, width, depth, 5, seed=1, layer=layer_for(kind, width))
                    trainer = nn.Trainer(net, comm=comm, layer_parallel=lp, progress=False)
                    trainer.loss_and_gradient(x, y)  # warm-up: builds the solver
                    times = []
                    for _ in range(repeats):
                        comm.Barrier()
                        t0 = time.perf_counter()
                        trainer.loss_and_gradient(x, y)
                        times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
                    r = trainer.last_solve
                    assert r is not None
                    rows.append(
                        dict(
                            depth=depth,
                            width=width,
                            layer=kind,
                            mode=mode,
                            ranks=comm.Get_size(),
                            ms=1e3 * statistics.median(times),
                            iterations=r.iterations,
                            steps_max_rank=comm.allreduce(r.step_calls, op=MPI.MAX),
                        )
                    )
    return rows


def launch(ranks: int, repeats: int) -> list[dict]:
    mpiexec = Path(sys.executable).with_name("mpiexec")
    cmd = [str(mpiexec), "-n", str(ranks), sys.executable, "-m", "mpi4py", __file__, "--worker", "--repeats"]
    out = subprocess.run([*cmd, str(repeats)], capture_output=True, text=True, check=True, timeout=3600).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])


def bench_steps(ranks: list[int], repeats: int) -> None:
    rows = [row for p in ranks for row in launch(p, repeats)]
    print(f"\n## Time per training step (batch 100, cfactor 4, max_levels 10), ms, median of {repeats}\n")
    print("| depth | width | mode | ranks | native (its) | numpy Dense (its) | numpy Conv1d (its) | Dense / native |")
    print("|---|---|---|---|---|---|---|---|")
    key = lambda r: (r["depth"], r["width"], r["mode"], r["ranks"])
    table: dict = {}
    for r in rows:
        table.setdefault(key(r), {})[r["layer"]] = r
    for (depth, width, mode, p), by in table.items():
        cells = [f"{by[k]['ms']:.2f} ({by[k]['iterations']})" for k in ("native", "numpy Dense", "numpy Conv1d")]
        ratio = by["numpy Dense"]["ms"] / by["native"]["ms"]
        print(f"| {depth} | {width} | {mode} | {p} | {' | '.join(cells)} | {ratio:.1f}x |")
    print("\nPython path's extra cost per step call (numpy Dense - native) / step calls of the busiest rank, us:\n")
    print("| depth | width | mode | ranks | extra us per step call |")
    print("|---|---|---|---|---|")
    for (depth, width, mode, p), by in table.items():
        extra = (by["numpy Dense"]["ms"] - by["native"]["ms"]) * 1e3 / max(by["native"]["steps_max_rank"], 1)
        print(f"| {depth} | {width} | {mode} | {p} | {extra:.1f} |")


def bench_overhead(repeats: int) -> None:
    from pyxbraid import nn
    from pyxbraid.nn.layers import checked_forward, checked_vjp, spec_of

    class Cheap(nn.Layer):
        """F(u) = 0 at (almost) no cost: the time per step call is the Python path's."""

        def __init__(self) -> None:
            super().__init__(state_shape=(8,))
            self.zeros = np.zeros((1, 8))
            self.grads = {"weight": np.zeros((8, 8))}

        def parameter_shapes(self):
            return {"weight": (8, 8)}

        def forward(self, u, params):
            return self.zeros

        def vjp(self, u, params, v):
            return self.zeros, self.grads

    x, y = np.zeros((1, 2)), np.zeros(1, dtype=np.int64)
    depth = 2048
    print(
        f"\n## The Python path's cost per step call (batch 1, width 8, depth {depth}, 1 rank), us, "
        f"median of {repeats}\n"
    )
    print("| what | us per step call |")
    print("|---|---|")
    for name, layer in (("native dense layer (C++)", None), ("numpy layer doing nothing (F = 0)", Cheap())):
        for mode in ("serial", "exact"):
            net = nn.ResNet(2, 8, depth, 5, seed=1, layer=layer)
            trainer = nn.Trainer(net, layer_parallel=MODES[mode], progress=False)
            trainer.loss_and_gradient(x, y)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                trainer.loss_and_gradient(x, y)
                times.append(time.perf_counter() - t0)
            r = trainer.last_solve
            assert r is not None
            us = 1e6 * statistics.median(times) / r.step_calls
            print(f"| {name}, {mode} (forward step + its adjoint step; {r.step_calls} step calls) | {us:.2f} |")
    layer, spec = Cheap(), spec_of(Cheap())
    u, params = np.zeros((1, 8)), {"weight": np.zeros((8, 8))}
    for what, call in (
        ("checked_forward (read-only view, result checks)", lambda: checked_forward(layer, u, params)),
        ("checked_vjp (read-only views, result checks)", lambda: checked_vjp(layer, spec, u, params, u)),
    ):
        n = 20000
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            times.append((time.perf_counter() - t0) / n)
        print(f"| of which {what} | {1e6 * statistics.median(times):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["steps", "overhead", "all"], default="all")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        from mpi4py import MPI

        rows = worker_steps(args.repeats)
        if MPI.COMM_WORLD.Get_rank() == 0:
            print("RESULT " + json.dumps(rows), flush=True)
        return
    if args.what in ("overhead", "all"):
        bench_overhead(args.repeats)
    if args.what in ("steps", "all"):
        bench_steps(args.ranks, args.repeats)


if __name__ == "__main__":
    main()
