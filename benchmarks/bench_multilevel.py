"""Multilevel training in depth: time and fine gradient evaluations to a validation accuracy on peaks.

    python benchmarks/bench_multilevel.py                              # depth 256, serial, 1 rank, 3 seeds
    python benchmarks/bench_multilevel.py --depth 1024 --seeds 1 2 3
    python benchmarks/bench_multilevel.py --ranks 2 --mode exact       # layer-parallel on 2 ranks
    python benchmarks/bench_multilevel.py --strategies single nested:8:8,1,1,1,1,1,1 mgopt:2

Each strategy trains the peaks ResNet (width 8, T = 5, smooth ReLU, Tikhonov and
smoothness 1e-5, Adam lr 0.01, mini-batches of 100) until the first epoch whose
validation accuracy is >= --target (at most --max-epochs fine epochs), for each
seed, and reports the median wall time to the target, the fine-level gradient
evaluations, the coarse ones weighted by their cost (depth_l / depth), the epochs
and the validation accuracy reached; the speedups are single-level's median over the
strategy's, in wall time and in work (fine evaluations plus the cost-weighted coarse ones:
independent of the machine's load). Strategies:

- ``single``: the network alone;
- ``nested:L:e1,...``: nn.Nested(L, epochs=[e1, ...]) (coarsest level first);
- ``mgopt:L`` or ``mgopt:L:pre,post,coarse_steps``: nn.MGOpt.

With --ranks P > 1 the measurements run under ``mpiexec -n P python -m mpi4py``.
Results: benchmarks/README.md ("Multilevel training in depth").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from _ranks import add_rank_arguments, measure_and_report

# one core per rank: the engine is single-threaded, and BLAS threads (numpy's dot products) only contend
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
DEFAULT = ["single", "nested:6:8,1,1,1,1", "nested:4:6,2,1", "mgopt:2", "mgopt:6:0,1,8"]


def strategy_of(text: str):
    from pyxbraid import nn

    name, *rest = text.split(":")
    if name == "single":
        return "single"
    levels = int(rest[0])
    if name == "nested":
        return nn.Nested(levels, epochs=[int(e) for e in rest[1].split(",")] if len(rest) > 1 else None)
    if len(rest) > 1:
        pre, post, coarse = (int(v) for v in rest[1].split(","))
        return nn.MGOpt(levels, pre=pre, post=post, coarse_steps=coarse)
    return nn.MGOpt(levels)


def run_one(depth: int, strategy: str, seed: int, mode: str, target: float, max_epochs: int) -> dict:
    from mpi4py import MPI

    import pyxbraid as xb
    from pyxbraid import nn

    comm = MPI.COMM_WORLD
    data = xb.datasets.peaks()
    lp = {
        "serial": None,
        "exact": dict(max_levels=3, cfactor=4),
        "one-shot": dict(max_levels=3, cfactor=4, max_iter=2, one_shot=True),
    }[mode]
    net = nn.ResNet(2, 8, depth, 5, T=5.0, tikhonov=1e-5, smoothness=1e-5, seed=seed)
    trainer = nn.Trainer(
        net,
        comm=comm,
        optimizer=nn.Adam(lr=0.01),
        layer_parallel=lp,
        seed=seed,
        strategy=strategy_of(strategy),
        progress=False,
    )
    reached: dict = {}
    comm.Barrier()
    start = time.perf_counter()

    def stop(epoch: int, history: nn.History) -> bool:
        if history.val_accuracy[-1] >= target:
            reached.update(epoch=epoch, seconds=time.perf_counter() - start)
            return True
        return False

    history = trainer.fit(
        data.x_train,
        data.y_train,
        epochs=max_epochs,
        batch_size=100,
        validation=(data.x_val, data.y_val),
        callback=stop,
    )
    wall = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    ev = trainer.gradient_evaluations
    return {
        "depth": depth,
        "strategy": strategy,
        "seed": seed,
        "mode": mode,
        "ranks": comm.Get_size(),
        "reached": bool(reached),
        "seconds": wall,
        "epochs": len(history.epoch),
        "coarse_epochs": [len(h.epoch) for h in trainer.level_histories[:-1]],
        "val_accuracy": history.val_accuracy[-1],
        "fine_evaluations": ev["fine"],
        "coarse_weighted": ev["coarse_weighted"],
    }


def worker(args: argparse.Namespace) -> list[dict]:
    from mpi4py import MPI

    rows = []
    # seeds outermost: the strategies of one seed run back to back, so a change in the machine's load
    # during the run spreads over all strategies instead of falling on one
    for depth in args.depth:
        for seed in args.seeds:
            for strategy in args.strategies:
                rows.append(run_one(depth, strategy, seed, args.mode, args.target, args.max_epochs))
                if MPI.COMM_WORLD.Get_rank() == 0:
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], target: float) -> str:
    out = [
        f"| depth | mode, ranks | strategy | reached {target:.0%} | time to target (s) | fine grad. evals | "
        "coarse evals (fine-weighted) | fine epochs | val. acc. | speedup (time) | speedup (work) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base: dict = {}
    base_work: dict = {}
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["depth"], r["mode"], r["ranks"], r["strategy"]), []).append(r)
    for (depth, mode, ranks, strategy), rs in groups.items():
        t = statistics.median(r["seconds"] for r in rs)
        work = statistics.median(r["fine_evaluations"] + r["coarse_weighted"] for r in rs)
        if strategy == "single":
            base[(depth, mode, ranks)], base_work[(depth, mode, ranks)] = t, work
        b, bw = base.get((depth, mode, ranks)), base_work.get((depth, mode, ranks))
        out.append(
            f"| {depth} | {mode}, {ranks} | {strategy} | {sum(r['reached'] for r in rs)}/{len(rs)} | {t:.2f} | "
            f"{statistics.median(r['fine_evaluations'] for r in rs):g} | "
            f"{statistics.median(r['coarse_weighted'] for r in rs):g} | "
            f"{statistics.median(r['epochs'] for r in rs):g} | "
            f"{statistics.median(r['val_accuracy'] for r in rs):.3f} | "
            f"{'' if b is None else f'{b / t:.2f}x'} | {'' if bw is None else f'{bw / work:.2f}x'} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depth", type=int, nargs="+", default=[256])
    p.add_argument("--strategies", nargs="+", default=DEFAULT)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--mode", choices=["serial", "exact", "one-shot"], default="serial")
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--max-epochs", type=int, default=40)
    add_rank_arguments(p)
    args = p.parse_args()
    measure_and_report(args, worker, __file__, lambda rows: table(rows, args.target))


if __name__ == "__main__":
    main()
