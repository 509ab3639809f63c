"""Multilevel training in depth of the torch digits network: time and fine gradient evaluations to 97%.

    python benchmarks/bench_multilevel_digits.py                          # depth 32, serial, 1 rank, 3 seeds
    python benchmarks/bench_multilevel_digits.py --ranks 2 --mode exact   # layer-parallel on 2 ranks
    python benchmarks/bench_multilevel_digits.py --ranks 2 --mode one-shot
    python benchmarks/bench_multilevel_digits.py --strategies single nested:4:6,1,1 mgopt:2

Each strategy trains ``pyxbraid-train digits``'s convolutional ResNet
(:class:`pyxbraid.torch.ConvResNet`: width 8, T = 2, float64, Adam lr 5e-3, mini-batches of
64; :func:`pyxbraid.torch._digits.train` on :func:`pyxbraid.torch.train_multilevel`) until the
first epoch whose validation accuracy is >= --target (at most --max-epochs fine epochs), for each
seed (the network's, the data split's and the shuffling's), and reports the median wall time to the
target, the fine-level
gradient evaluations (training steps), the coarse ones weighted by their cost (depth_l / depth),
the fine epochs and the validation accuracy reached; the speedups are single-level's median
over the strategy's, in wall time and in work (fine plus cost-weighted coarse evaluations:
independent of the machine's load). Strategies:

- ``single``: the network alone;
- ``nested:L:e1,...``: nested iteration over L networks of depth depth, depth/2, ...
  (``pyxbraid.torch.Hierarchy``), coarse epochs e1, ... coarsest first;
- ``mgopt:L[:pre,post,coarse]``: MG/Opt V-cycles over L networks, one per mini-batch (Adam
  smoothing: ``pre`` and ``post`` steps, default 1 and 1; ``coarse`` Adam steps on the coarsest
  network, default 4; Armijo backtracking on the prolonged correction).

With --ranks P > 1 the measurements run under ``mpiexec -n P python -m mpi4py``.
Results: benchmarks/README.md ("Multilevel training in depth").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from _ranks import add_rank_arguments, measure_and_report
from bench_multilevel import table

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
DEFAULT = ["single", "nested:4:4,1,1", "mgopt:2"]
MODES = {"serial": "serial", "exact": "parallel", "one-shot": "one-shot"}  # -> pyxbraid-train digits --mode


def run_one(depth: int, strategy: str, seed: int, mode: str, target: float, max_epochs: int) -> dict:
    import torch
    from mpi4py import MPI

    from pyxbraid import datasets
    from pyxbraid.torch import _digits

    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    name, *rest = strategy.split(":")
    levels = int(rest[0]) if rest else 1
    coarse = [int(e) for e in rest[1].split(",")] if len(rest) > 1 and name == "nested" else None
    mgopt = tuple(int(e) for e in rest[1].split(",")) if len(rest) > 1 and name == "mgopt" else (1, 1, 4)
    settings = _digits.Settings(
        mode=MODES[mode],
        dtype="float64",
        epochs=max_epochs,
        batch_size=64,
        lr=5e-3,
        width=8,
        depth=depth,
        T=2.0,
        max_levels=2,
        cfactor=4,
        max_iter=None,
        coarse="tstop",
        seed=seed,
        threads=1,
        strategy=name,
        levels=levels,
        coarse_epochs=coarse,
        target_accuracy=target,
        mgopt=mgopt,
    )
    data = datasets.digits(seed=seed)
    net = _digits.build(settings, comm, data.image_shape, data.classes)
    comm.Barrier()
    start = time.perf_counter()
    outcome = _digits.train(net, settings, data, comm, progress=False)
    wall = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    seconds = outcome.target_seconds
    if seconds is not None and comm.Get_size() > 1:
        seconds = comm.allreduce(seconds, op=MPI.MAX)
    return {
        "depth": depth,
        "strategy": strategy,
        "seed": seed,
        "mode": mode,
        "ranks": comm.Get_size(),
        "reached": outcome.target_epoch is not None,
        "seconds": seconds if seconds is not None else wall,
        "epochs": len(outcome.history.epoch),
        "coarse_epochs": [len(h.epoch) for h in outcome.level_histories[:-1]],
        "coarse_val_accuracy": [h.val_accuracy[-1] if h.val_accuracy else None for h in outcome.level_histories[:-1]],
        "val_accuracy": outcome.history.val_accuracy[-1],
        "fine_evaluations": outcome.evaluations[0],
        "coarse_weighted": outcome.coarse_weighted,
    }


def worker(args: argparse.Namespace) -> list[dict]:
    from mpi4py import MPI

    rows = []
    # seeds outermost: a change in the machine's load spreads over all strategies
    for seed in args.seeds:
        for strategy in args.strategies:
            rows.append(run_one(args.depth, strategy, seed, args.mode, args.target, args.max_epochs))
            if MPI.COMM_WORLD.Get_rank() == 0:
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--strategies", nargs="+", default=DEFAULT)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--mode", choices=list(MODES), default="serial")
    p.add_argument("--target", type=float, default=0.97)
    p.add_argument("--max-epochs", type=int, default=20)
    add_rank_arguments(p)
    args = p.parse_args()
    measure_and_report(args, worker, __file__, lambda rows: table(rows, args.target))


if __name__ == "__main__":
    main()
