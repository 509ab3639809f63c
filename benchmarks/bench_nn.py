"""pyxbraid.nn benchmarks: kernels, time per training step, time to accuracy on peaks.

    python benchmarks/bench_nn.py kernels              # native f64/f32 layers vs PyTorch f64/f32 (1 rank, 1 thread)
    python benchmarks/bench_nn.py oneshot              # one-shot layer-parallel on 2 ranks vs eager PyTorch
    python benchmarks/bench_nn.py cycles               # one-shot training with the full and the lean cycle
    python benchmarks/bench_nn.py steps --ranks 1 2    # time per training step; speedup model
    python benchmarks/bench_nn.py peaks --ranks 1 2    # time to 88% validation accuracy on peaks
    python benchmarks/bench_nn.py all --ranks 1 2

Multi-rank runs launch `mpiexec -n P python -m mpi4py benchmarks/bench_nn.py --worker ...`
with the mpiexec next to this Python; every figure is a median over repeats, measured
side by side in one invocation. Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the numpy backprop reference of the tests


# --- workers (run under mpiexec) ------------------------------------------------------------
def worker_steps(repeats: int) -> list[dict]:
    from mpi4py import MPI

    from pyxbraid import nn

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(0)
    batch = 100
    x = rng.uniform(-3, 3, (batch, 2))
    y = rng.integers(0, 5, batch)
    rows = []
    modes = {
        "serial": None,
        "exact": dict(max_levels=10, cfactor=4, abs_tol=1e-10, abs_tol_adjoint=1e-10),
        "one-shot": dict(max_levels=10, cfactor=4, max_iter=2, one_shot=True),
    }
    for depth in (32, 128, 512):
        for width in (8, 32):
            for mode, lp in modes.items():
                net = nn.ResNet(2, width, depth, 5, T=1.0, seed=1)
                trainer = nn.Trainer(net, comm=comm, layer_parallel=lp, progress=False)
                trainer.loss_and_gradient(x, y)  # warm-up: builds the solver
                times = []
                for _ in range(repeats):
                    comm.Barrier()
                    t0 = time.perf_counter()
                    trainer.loss_and_gradient(x, y)  # a fresh batch each time (reset + solve)
                    times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
                r = trainer.last_solve
                rows.append(
                    dict(
                        depth=depth,
                        width=width,
                        mode=mode,
                        ranks=comm.Get_size(),
                        seconds=statistics.median(times),
                        iterations=r.iterations,
                        steps_all_ranks=r.step_calls_all_ranks,
                        steps_max_rank=comm.allreduce(r.step_calls, op=MPI.MAX),
                        level_sizes=list(r.level_sizes),
                    )
                )
    return rows


def worker_peaks() -> list[dict]:
    from mpi4py import MPI

    import pyxbraid as xb
    from pyxbraid import nn

    comm = MPI.COMM_WORLD
    data = xb.datasets.peaks()
    runs = [
        ("layer-serial, Adam, batch 100", None, lambda: nn.Adam(lr=0.01), 100, 30),
        ("exact layer-parallel, Adam, batch 100", dict(max_levels=3, cfactor=4), lambda: nn.Adam(lr=0.01), 100, 30),
        (
            "one-shot (2 its), L-BFGS, full batch",
            dict(max_levels=3, cfactor=4, max_iter=2, one_shot=True),
            nn.LBFGS,
            None,
            150,
        ),
        ("layer-serial, L-BFGS, full batch", None, nn.LBFGS, None, 150),
    ]
    rows = []
    for name, lp, make_opt, batch, epochs in runs:
        net = nn.ResNet(2, 8, 30, 5, T=1.0, activation="smooth_relu", seed=1, tikhonov=1e-5, smoothness=1e-5)
        trainer = nn.Trainer(net, comm=comm, optimizer=make_opt(), layer_parallel=lp, seed=1, progress=False)
        reached = {}
        start = time.perf_counter()

        def cb(epoch, h, start=start, reached=reached):
            if "t" not in reached and h.val_accuracy[-1] >= 0.88:
                reached.update(t=time.perf_counter() - start, epoch=epoch)

        comm.Barrier()
        start = time.perf_counter()
        reached.clear()
        history = trainer.fit(
            data.x_train,
            data.y_train,
            epochs=epochs,
            batch_size=batch,
            validation=(data.x_val, data.y_val),
            callback=lambda e, h: cb(e, h, start, reached),
        )
        wall = time.perf_counter() - start
        _, train_acc = trainer.evaluate(data.x_train, data.y_train)
        rows.append(
            dict(
                run=name,
                ranks=comm.Get_size(),
                epochs=epochs,
                wall=wall,
                train_accuracy=train_acc,
                val_accuracy=history.val_accuracy[-1],
                best_val=max(history.val_accuracy),
                seconds_to_88=reached.get("t"),
                epoch_to_88=reached.get("epoch"),
            )
        )
    return rows


ONESHOT_CASES = [(512, w, b) for w in (8, 32) for b in (100, 5000)]  # (depth, width, batch)
ONESHOT = dict(max_levels=10, cfactor=4, max_iter=2, one_shot=True)
# The lean cycle: two levels, cfactor 8, F-relaxation only. 2 iterations cost 640 step calls per
# rank at depth 512 on 2 ranks against the full hierarchy's 1658 (FCF, cfactor 4), and train peaks
# as well (the `cycles` part below).
ONESHOT_LEAN = dict(max_levels=2, cfactor=8, nrelax=0, max_iter=2, one_shot=True)
ONESHOT_CYCLES = {"full": ONESHOT, "lean": ONESHOT_LEAN}


def worker_oneshot(repeats: int) -> list[dict]:
    """One-shot layer-parallel training steps (2 MGRIT iterations), native float64 and float32."""
    from mpi4py import MPI

    from pyxbraid import nn

    comm = MPI.COMM_WORLD
    rows = []
    for depth, width, batch in ONESHOT_CASES:
        rng = np.random.default_rng(0)
        x, y = rng.uniform(-3, 3, (batch, 2)), rng.integers(0, 5, batch)
        for cycle, dtype in (("full", "float64"), ("full", "float32"), ("lean", "float32")):
            net = nn.ResNet(2, width, depth, 5, seed=1, dtype=dtype)
            trainer = nn.Trainer(net, comm=comm, layer_parallel=ONESHOT_CYCLES[cycle], progress=False)
            trainer.loss_and_gradient(x, y)  # warm-up: builds the solver
            times = []
            for _ in range(repeats):
                comm.Barrier()
                t0 = time.perf_counter()
                trainer.loss_and_gradient(x, y)
                times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
            rows.append(
                dict(
                    depth=depth,
                    width=width,
                    batch=batch,
                    dtype=dtype,
                    cycle=cycle,
                    ranks=comm.Get_size(),
                    seconds=statistics.median(times),
                )
            )
    return rows


CYCLES_DEPTH, CYCLES_STEPS = 256, 100


def worker_cycles() -> list[dict]:
    """Full-batch one-shot L-BFGS on peaks at depth 256: the full and the lean cycle against layer-serial."""
    from mpi4py import MPI

    import pyxbraid as xb
    from pyxbraid import nn

    comm = MPI.COMM_WORLD
    data = xb.datasets.peaks()
    rows = []
    for name, lp in (("layer-serial", None), *ONESHOT_CYCLES.items()):
        net = nn.ResNet(2, 8, CYCLES_DEPTH, 5, T=1.0, activation="smooth_relu", seed=1, tikhonov=1e-5, smoothness=1e-5)
        trainer = nn.Trainer(net, comm=comm, optimizer=nn.LBFGS(), layer_parallel=lp, seed=1, progress=False)
        comm.Barrier()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nn.LineSearchWarning)  # the one-shot gradient is inexact
            history = trainer.fit(data.x_train, data.y_train, epochs=CYCLES_STEPS, validation=(data.x_val, data.y_val))
        wall = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        loss, acc = trainer.evaluate(data.x_train, data.y_train)
        rows.append(
            dict(
                run=name,
                ranks=comm.Get_size(),
                wall=wall,
                loss=loss,
                train_accuracy=acc,
                val_accuracy=history.val_accuracy[-1],
            )
        )
    return rows


def worker(kind: str, repeats: int) -> None:
    from mpi4py import MPI

    work = {"steps": worker_steps, "oneshot": worker_oneshot, "cycles": lambda _: worker_cycles()}
    rows = work[kind](repeats) if kind in work else worker_peaks()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print("RESULT " + json.dumps(rows), flush=True)


def launch(kind: str, ranks: int, repeats: int) -> list[dict]:
    mpiexec = Path(sys.executable).with_name("mpiexec")
    cmd = [
        str(mpiexec),
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpi4py",
        __file__,
        "--worker",
        kind,
        "--repeats",
        str(repeats),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])


# --- kernels: native vs numpy vs torch (one process) ------------------------------------------
KERNEL_CASES = [  # (depth, width, batch); batch 5000 stops at depth 512 (torch's tape at 2048: ~5-20 GB)
    *[(d, w, 100) for w in (8, 32) for d in (32, 512, 2048)],
    *[(d, w, 5000) for w in (8, 32) for d in (32, 512)],
]


def torch_step_fn(torch, net, P, x, y, dtype):
    """One eager PyTorch forward + backward of the network (same smooth ReLU), in `dtype`."""
    tp = {k: torch.tensor(np.asarray(v), dtype=dtype, requires_grad=True) for k, v in P.items()}
    tx, ty = torch.tensor(x, dtype=dtype), torch.tensor(y)
    h, depth = net.h, net.config.depth

    def smooth_relu(z):
        return torch.where(z <= -0.1, torch.zeros_like(z), torch.where(z >= 0.1, z, (z + 0.1) ** 2 / 0.4))

    def step():
        for v in tp.values():
            v.grad = None
        u = smooth_relu(tx @ tp["opening.weight"].T + tp["opening.bias"])
        for k in range(depth):
            u = u + h * smooth_relu(u @ tp["layers.weight"][k].T + tp["layers.bias"][k])
        logits = u @ tp["classifier.weight"].T + tp["classifier.bias"]
        torch.nn.functional.cross_entropy(logits, ty).backward()

    return step


def bench_kernels(repeats: int, cases: list[tuple[int, int, int]] | None = None, numpy_ref: bool = False) -> None:
    """Native float64/float32 against eager PyTorch float64/float32 (one thread), side by side.

    Repeats run round robin over the variants of a case, so a burst of load from
    another process lands on one repeat of every variant, not on all repeats of one.
    """
    import nn_reference as ref

    from pyxbraid import nn

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None
    print("\n## Forward + backward of one training step (loss and full gradient), layer-serial, 1 rank, 1 thread")
    print("median of", repeats, "repeats; milliseconds\n")
    cols = ["native f64", "native f32", "torch f64", "torch f32"] + (["numpy f64"] if numpy_ref else [])
    print("| depth | width | batch | " + " | ".join(cols) + " | torch f32 / native f64 | torch f32 / native f32 |")
    print("|" + "---|" * (len(cols) + 5))
    rng = np.random.default_rng(0)
    for depth, width, batch in cases or KERNEL_CASES:
        x = rng.uniform(-3, 3, (batch, 2))
        y = rng.integers(0, 5, batch)
        fns = {}
        for name, dt in (("native f64", "float64"), ("native f32", "float32")):
            try:
                net = nn.ResNet(2, width, depth, 5, seed=1, dtype=dt)
            except TypeError:  # a build without float32 networks
                if dt == "float32":
                    continue
                net = nn.ResNet(2, width, depth, 5, seed=1)
            trainer = nn.Trainer(net, progress=False)
            fns[name] = lambda trainer=trainer: trainer.loss_and_gradient(x, y)
        P = net.parameters()
        if torch is not None:
            fns["torch f64"] = torch_step_fn(torch, net, P, x, y, torch.float64)
            fns["torch f32"] = torch_step_fn(torch, net, P, x, y, torch.float32)
        if numpy_ref:
            fns["numpy f64"] = lambda: ref.loss_and_gradient(P, x, y, net.config)
        times: dict[str, list[float]] = {k: [] for k in fns}
        for fn in fns.values():
            fn()  # warm-up (builds the solver)
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        cells = [f"{med[c]:.2f}" if c in med else "–" for c in cols]

        def ratio(a, b):
            return f"{med[a] / med[b]:.2f}x" if a in med and b in med else "–"

        print(
            f"| {depth} | {width} | {batch} | "
            + " | ".join(cells)
            + f" | {ratio('torch f32', 'native f64')} | {ratio('torch f32', 'native f32')} |",
            flush=True,
        )


# --- reports ------------------------------------------------------------------------------------
def report_steps(rows: list[dict]) -> None:
    print("\n## Time per training step (forward + backward), batch 100, cfactor 4, full hierarchy")
    print("median milliseconds; iterations = MGRIT iterations of the last step\n")
    print("| depth | width | ranks | layer-serial | exact layer-parallel (its) | one-shot, 2 its |")
    print("|---|---|---|---|---|---|")
    key = {(r["depth"], r["width"], r["ranks"], r["mode"]): r for r in rows}
    ranks = sorted({r["ranks"] for r in rows})
    for depth in (32, 128, 512):
        for width in (8, 32):
            for p in ranks:
                s, e, o = (key[(depth, width, p, m)] for m in ("serial", "exact", "one-shot"))
                print(
                    f"| {depth} | {width} | {p} | {s['seconds'] * 1e3:.2f} | {e['seconds'] * 1e3:.2f} "
                    f"({e['iterations']}) | {o['seconds'] * 1e3:.2f} |"
                )
    if 1 not in ranks:
        return
    # Speedup model from the 1-rank figures: the cost of one step call (forward with its
    # share of the adjoint) is c = T_1 / S_1 (S_1 = step calls of the solve); on P ranks each
    # iteration's work divides by P except the coarsest level, which is solved sequentially
    # (N_L steps per iteration, pipelined), plus a latency per level and sweep.
    print("\n## Speedup model: T_P = c * I * ((S_1/I - N_L) / P + N_L) + I * L * 4 * alpha,  alpha = 20 us\n")
    print(
        "| depth | width | mode | I | c (us/step) | T_1 ms | model T_2 | measured T_2 | model T_16 | model T_64 | "
        "serial T | model speedup vs serial at 64 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    alpha = 20e-6
    for depth in (32, 128, 512):
        for width in (8, 32):
            for mode in ("exact", "one-shot"):
                one = key[(depth, width, 1, mode)]
                serial = key[(depth, width, 1, "serial")]["seconds"]
                iters, steps = one["iterations"], one["steps_all_ranks"]
                nl = one["level_sizes"][-1]
                levels = len(one["level_sizes"])
                c = one["seconds"] / steps

                def model(p):
                    return c * iters * ((steps / iters - nl) / p + nl) + iters * levels * 4 * alpha * (p > 1)

                two = key.get((depth, width, 2, mode))
                meas = f"{two['seconds'] * 1e3:.2f}" if two else "–"
                print(
                    f"| {depth} | {width} | {mode} | {iters} | {c * 1e6:.1f} | {one['seconds'] * 1e3:.2f} | "
                    f"{model(2) * 1e3:.2f} | {meas} | {model(16) * 1e3:.2f} | {model(64) * 1e3:.2f} | "
                    f"{serial * 1e3:.2f} | {serial / model(64):.2f}x |"
                )


def report_oneshot(rows: list[dict], repeats: int) -> None:
    """One-shot on 2 ranks (rows from the workers) beside eager PyTorch on 1 and 2 threads (timed here)."""
    from pyxbraid import nn

    try:
        import torch
    except ImportError:
        torch = None
    print("\n## Layer-parallel one-shot (2 MGRIT iterations) on 2 ranks vs eager PyTorch")
    print("full: cfactor 4, full hierarchy, FCF; lean: 2 levels, cfactor 8, F-relaxation")
    print("median milliseconds of", repeats, "repeats; PyTorch layer-serial with 1 and 2 threads\n")
    print(
        "| depth | width | batch | full f64 | full f32 | lean f32 | torch f64 1 thr | torch f32 1 thr "
        "| torch f32 2 thr | torch f32 1 thr / full f32 | torch f32 1 thr / lean f32 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    key = {(r["depth"], r["width"], r["batch"], r["cycle"], r["dtype"]): r["seconds"] * 1e3 for r in rows}
    for depth, width, batch in ONESHOT_CASES:
        rng = np.random.default_rng(0)
        x, y = rng.uniform(-3, 3, (batch, 2)), rng.integers(0, 5, batch)
        net = nn.ResNet(2, width, depth, 5, seed=1)
        t = {}
        if torch is not None:
            for name, dt, threads in (
                ("f64 1", torch.float64, 1),
                ("f32 1", torch.float32, 1),
                ("f32 2", torch.float32, 2),
            ):
                torch.set_num_threads(threads)
                fn = torch_step_fn(torch, net, net.parameters(), x, y, dt)
                fn()
                ts = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
                t[name] = statistics.median(ts) * 1e3
            torch.set_num_threads(1)
        cells = [f"{t[k]:.1f}" if k in t else "–" for k in ("f64 1", "f32 1", "f32 2")]
        variants = (("full", "float64"), ("full", "float32"), ("lean", "float32"))
        mine = [key[(depth, width, batch, c, d)] for c, d in variants]
        ratios = [f"{t['f32 1'] / m:.2f}x" if "f32 1" in t else "–" for m in mine[1:]]
        print(
            f"| {depth} | {width} | {batch} | "
            + " | ".join(f"{m:.1f}" for m in mine)
            + " | "
            + " | ".join(cells)
            + " | "
            + " | ".join(ratios)
            + " |",
            flush=True,
        )


def report_cycles(rows: list[dict]) -> None:
    print(f"\n## One-shot cycles: peaks, width 8, depth {CYCLES_DEPTH}, {CYCLES_STEPS} full-batch L-BFGS steps")
    print("full: cfactor 4, full hierarchy, FCF; lean: 2 levels, cfactor 8, F-relaxation; 2 MGRIT iterations\n")
    print("| run | ranks | wall s | final train loss | train acc | val acc |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['ranks']} | {r['wall']:.1f} | {r['loss']:.4f} | "
            f"{r['train_accuracy']:.4f} | {r['val_accuracy']:.3f} |"
        )


def report_peaks(rows: list[dict]) -> None:
    print("\n## Peaks (width 8, 30 layers, T = 1, smooth ReLU, 5000 / 200 points): time to 88% validation")
    print("seconds include per-epoch validation; epochs = optimisation steps for full batch\n")
    print("| run | ranks | epochs | seconds to >= 88% val (epoch) | total s | final train acc | final val acc |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        to88 = "not reached" if r["seconds_to_88"] is None else f"{r['seconds_to_88']:.2f} ({r['epoch_to_88']})"
        print(
            f"| {r['run']} | {r['ranks']} | {r['epochs']} | {to88} | {r['wall']:.2f} | "
            f"{r['train_accuracy']:.4f} | {r['val_accuracy']:.3f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=["kernels", "oneshot", "cycles", "steps", "peaks", "all"], default="all")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", choices=["steps", "peaks", "oneshot", "cycles"])
    p.add_argument("--cases", help="kernels: depth,width,batch triples separated by ';' (default: KERNEL_CASES)")
    p.add_argument("--numpy", action="store_true", help="kernels: also time the numpy backprop reference")
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.repeats)
        return
    print(f"# pyxbraid.nn benchmarks ({os.cpu_count()} cores)")
    if a.what in ("kernels", "all"):
        cases = [tuple(int(v) for v in c.split(",")) for c in a.cases.split(";")] if a.cases else None
        bench_kernels(a.repeats, cases, a.numpy)
    if a.what in ("oneshot", "all"):
        report_oneshot(launch("oneshot", 2, a.repeats), a.repeats)
    if a.what in ("cycles", "all"):
        report_cycles(launch("cycles", 2, a.repeats))
    if a.what in ("steps", "all"):
        rows = [r for p_ in a.ranks for r in launch("steps", p_, a.repeats)]
        report_steps(rows)
    if a.what in ("peaks", "all"):
        rows = [r for p_ in a.ranks for r in launch("peaks", p_, a.repeats)]
        report_peaks(rows)


if __name__ == "__main__":
    main()
