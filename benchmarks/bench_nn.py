"""pyxbraid.nn benchmarks: kernels, time per training step, time to accuracy on peaks.

    python benchmarks/bench_nn.py kernels              # native layers vs numpy vs PyTorch CPU (1 rank)
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


def worker(kind: str, repeats: int) -> None:
    from mpi4py import MPI

    rows = worker_steps(repeats) if kind == "steps" else worker_peaks()
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
def bench_kernels(repeats: int) -> None:
    import nn_reference as ref

    from pyxbraid import nn

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None
    print("\n## Forward + backward of one training step (loss and full gradient), layer-serial, 1 rank, 1 thread")
    print("median of", repeats, "repeats; milliseconds; batch 100 unless noted\n")
    print(
        "| depth | width | batch | pyxbraid native | numpy | PyTorch CPU (float64) | numpy / native | torch / native |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for depth, width, batch in [
        (32, 8, 100),
        (128, 8, 100),
        (32, 32, 100),
        (128, 32, 100),
        (32, 8, 5000),
        (32, 32, 5000),
    ]:
        x = rng.uniform(-3, 3, (batch, 2))
        y = rng.integers(0, 5, batch)
        net = nn.ResNet(2, width, depth, 5, seed=1)
        trainer = nn.Trainer(net, progress=False)
        P = net.parameters()

        def native():
            trainer.loss_and_gradient(x, y)

        def numpy_ref():
            ref.loss_and_gradient(P, x, y, net.config)

        def timed(fn):
            fn()
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return statistics.median(ts) * 1e3

        t_nat, t_np = timed(native), timed(numpy_ref)
        t_torch = None
        if torch is not None:
            tp = {k: torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=True) for k, v in P.items()}
            tx, ty = torch.tensor(x), torch.tensor(y)
            h = net.h

            def smooth_relu(z):
                return torch.where(z <= -0.1, torch.zeros_like(z), torch.where(z >= 0.1, z, (z + 0.1) ** 2 / 0.4))

            def torch_step():
                for v in tp.values():
                    v.grad = None
                u = smooth_relu(tx @ tp["opening.weight"].T + tp["opening.bias"])
                for k in range(depth):
                    u = u + h * smooth_relu(u @ tp["layers.weight"][k].T + tp["layers.bias"][k])
                logits = u @ tp["classifier.weight"].T + tp["classifier.bias"]
                loss = torch.nn.functional.cross_entropy(logits, ty)
                loss.backward()

            t_torch = timed(torch_step)
        torch_cell = "not installed" if t_torch is None else f"{t_torch:.3f}"
        ratio = "–" if t_torch is None else f"{t_torch / t_nat:.1f}x"
        print(
            f"| {depth} | {width} | {batch} | {t_nat:.3f} | {t_np:.3f} | {torch_cell} | {t_np / t_nat:.1f}x | {ratio} |"
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
    p.add_argument("what", nargs="?", choices=["kernels", "steps", "peaks", "all"], default="all")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", choices=["steps", "peaks"])
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.repeats)
        return
    print(f"# pyxbraid.nn benchmarks ({os.cpu_count()} cores)")
    if a.what in ("kernels", "all"):
        bench_kernels(a.repeats)
    if a.what in ("steps", "all"):
        rows = [r for p_ in a.ranks for r in launch("steps", p_, a.repeats)]
        report_steps(rows)
    if a.what in ("peaks", "all"):
        rows = [r for p_ in a.ranks for r in launch("peaks", p_, a.repeats)]
        report_peaks(rows)


if __name__ == "__main__":
    main()
