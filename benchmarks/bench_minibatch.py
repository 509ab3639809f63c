"""Mini-batch layer-parallel training: one-shot that converges, against serial and exact training, on peaks.

    python benchmarks/bench_minibatch.py                         # depth 30 and 128, 1 rank, 3 seeds
    python benchmarks/bench_minibatch.py --depth 128 --ranks 2    # under mpiexec -n 2
    python benchmarks/bench_minibatch.py --modes exact adaptive:1e-3

Each mode trains the peaks ResNet (width 8, smooth ReLU, Tikhonov and smoothness
1e-5, T = 1 at depth 30 as the CLI's default and T = 5 deeper, Adam lr 0.01,
mini-batches of 100, --epochs epochs) for each seed, and reports medians over the
seeds of the final validation accuracy, the wall and CPU time per epoch (CPU: the
busiest rank's; the comparison with the exact mode uses it, as a loaded machine's wall
time is unreliable), the MGRIT
iterations per gradient (primal; mean over the run) and the epoch after which an
adaptive run switched to exact solves. Modes (MGRIT: 3 levels, cfactor 4):

- ``serial``: layer-serial forward and backpropagation (the reference accuracy);
- ``exact``: MGRIT and adjoint to abs_tol 1e-10 (at most 100 iterations);
- ``one-shot``: 2 MGRIT iterations per gradient, the paper's full-batch setting
  applied to mini-batches (it diverges);
- ``adaptive:R`` (``adaptive`` = ``adaptive:1e-2``): one-shot with ``rel_tol =
  rel_tol_adjoint = R``, at most 20 iterations, ``switch_to_exact=2``;
  ``adaptive:R:P``: ``switch_to_exact=P`` (0: never switch).

With --ranks P > 1 the measurements run under ``mpiexec -n P python -m mpi4py``.
Results: benchmarks/README.md ("Mini-batch one-shot training").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

from _ranks import add_rank_arguments, measure_and_report

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
DEFAULT_MODES = ["serial", "exact", "one-shot", "adaptive:1e-2", "adaptive:1e-3"]


def layer_parallel(mode: str) -> dict | None:
    """Return the Trainer's layer_parallel settings of a benchmark mode."""
    mgrit = dict(max_levels=3, cfactor=4)
    if mode == "serial":
        return None
    if mode == "exact":
        return mgrit
    if mode == "one-shot":
        return dict(mgrit, max_iter=2, one_shot=True)
    _, *rest = mode.split(":")
    rel = float(rest[0]) if rest else 1e-2
    patience = int(rest[1]) if len(rest) > 1 else 2
    return dict(mgrit, one_shot=True, rel_tol=rel, rel_tol_adjoint=rel, max_iter=20, switch_to_exact=patience or None)


def run_one(depth: int, mode: str, seed: int, epochs: int) -> dict:
    from mpi4py import MPI

    import pyxbraid as xb
    from pyxbraid import nn

    comm = MPI.COMM_WORLD
    data = xb.datasets.peaks()
    net = nn.ResNet(2, 8, depth, 5, T=1.0 if depth <= 30 else 5.0, tikhonov=1e-5, smoothness=1e-5, seed=seed)
    trainer = nn.Trainer(
        net, comm=comm, optimizer=nn.Adam(lr=0.01), layer_parallel=layer_parallel(mode), seed=seed, progress=False
    )
    iterations: list[int] = []
    evaluate = trainer._evaluate_batch

    def counted(*args):  # the MGRIT iterations of every gradient, not only each epoch's last
        out = evaluate(*args)
        iterations.append(int(trainer.last_solve.iterations))
        return out

    trainer._evaluate_batch = counted
    comm.Barrier()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        history = trainer.fit(
            data.x_train, data.y_train, epochs=epochs, batch_size=100, validation=(data.x_val, data.y_val)
        )
        accuracy, diverged = history.val_accuracy[-1], False
    except FloatingPointError:  # the loss overflowed: training diverged
        accuracy, diverged = math.nan, True
    wall = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    # CPU time (the busiest rank's): what a loaded machine's wall time hides; waits do not spin
    busy = comm.allreduce(time.process_time() - cpu, op=MPI.MAX)
    done = len(trainer.history.epoch) if trainer.history is not None else 0
    return {
        "depth": depth,
        "mode": mode,
        "seed": seed,
        "ranks": comm.Get_size(),
        "val_accuracy": accuracy,
        "diverged": diverged,
        "seconds_per_epoch": wall / max(done, 1),
        "cpu_seconds_per_epoch": busy / max(done, 1),
        "loss": trainer.history.loss if trainer.history is not None else [],
        "iterations_per_gradient": statistics.mean(iterations) if iterations and mode != "serial" else 0.0,
        "switched_to_exact_at": trainer.switched_to_exact_at,
    }


def worker(args: argparse.Namespace) -> list[dict]:
    from mpi4py import MPI

    rows = []
    for depth in args.depth:
        for seed in args.seeds:  # seeds outermost: a change of the machine's load spreads over all modes
            for mode in args.modes:
                rows.append(run_one(depth, mode, seed, args.epochs))
                if MPI.COMM_WORLD.Get_rank() == 0:
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| depth | ranks | mode | val. acc. (median) | diverged | s / epoch | CPU s / epoch | CPU vs exact | "
        "MGRIT its / gradient | switched to exact after epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["depth"], r["ranks"], r["mode"]), []).append(r)
    exact = {
        (d, p): statistics.median(r["cpu_seconds_per_epoch"] for r in rs)
        for (d, p, m), rs in groups.items()
        if m == "exact"
    }
    for (depth, ranks, mode), rs in groups.items():
        t = statistics.median(r["seconds_per_epoch"] for r in rs)
        c = statistics.median(r["cpu_seconds_per_epoch"] for r in rs)
        accs = [r["val_accuracy"] for r in rs if not r["diverged"]]
        base = exact.get((depth, ranks))
        switched = [str(r["switched_to_exact_at"]) for r in rs if r["switched_to_exact_at"] is not None]
        out.append(
            f"| {depth} | {ranks} | {mode} | {statistics.median(accs) if accs else math.nan:.3f} | "
            f"{sum(r['diverged'] for r in rs)}/{len(rs)} | {t:.3f} | {c:.3f} | "
            f"{'' if base is None else f'{c / base:.2f}x'} | "
            f"{statistics.median(r['iterations_per_gradient'] for r in rs):.1f} | {', '.join(switched) or '-'} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, nargs="+", default=[30, 128])
    p.add_argument("--modes", nargs="+", default=DEFAULT_MODES)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=20)
    add_rank_arguments(p)
    args = p.parse_args()
    measure_and_report(args, worker, __file__, table)


if __name__ == "__main__":
    main()
