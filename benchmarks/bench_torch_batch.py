"""LayerParallel(batch_steps=True) against the per-step callbacks: time per training step, 1 rank.

    python benchmarks/bench_torch_batch.py                 # depth 64, 7 repeats (~2 min)
    python benchmarks/bench_torch_batch.py --depth 64 --repeats 9
    python benchmarks/bench_torch_batch.py --calls         # one grouped call against its rows one by one

batch_steps=True lets the engine hand LayerParallel each group of independent
steps (the i-th F-point of every interval, then the C-points, ...) in one
call, and evaluates the group's blocks as one ``torch.func.vmap`` over their
stacked parameters (the adjoint: one ``torch.func.vjp`` of it). Blocks (no
BatchNorm, so that the vmapped path is taken):

* dense: ``Tanh(Linear(32, 32))`` on a batch of 64 states of width 32;
* conv: ``ReLU(Conv3x3(8 -> 8))`` on a batch of 64 8x8 images of 8 channels,
  bench_torch.py's ConvResNet block without its BatchNorm.

A training step is the forward and backward pass of ``LayerParallel`` alone
with the loss ``<w, u(T)>`` (the part batch_steps changes), from a fresh MGRIT
start (``lp.reset()``); MGRIT as in bench_torch.py: 3 levels, cfactor 4, FCF;
"exact" to the default tolerances, "one_shot" 2 iterations per solve. One
torch thread; medians of interleaved rounds (bench_torch.interleaved_medians).
``--calls``: the cost of one grouped call of ``k`` rows (the app's
step_batch / step_adjoint_batch on the vmapped path) against the per-step
callbacks for the same ``k`` rows (step / step_adjoint), in microseconds per row.
Results: benchmarks/README.md (pyxbraid.torch, "batch_steps").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_torch import interleaved_medians  # noqa: E402

from pyxbraid.torch import LayerParallel  # noqa: E402

BATCH = 64
MGRIT = dict(max_levels=3, cfactor=4)


def dense_block(dtype: torch.dtype) -> Callable[[int], torch.nn.Module]:
    def block(k: int) -> torch.nn.Module:
        torch.manual_seed(k)
        return torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Tanh()).to(dtype)

    return block


def conv_block(dtype: torch.dtype) -> Callable[[int], torch.nn.Module]:
    def block(k: int) -> torch.nn.Module:
        torch.manual_seed(k)
        return torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU()).to(dtype)

    return block


CASES = {"dense": (dense_block, (BATCH, 32)), "conv": (conv_block, (BATCH, 8, 8, 8))}


def training_step(lp: LayerParallel, u0: torch.Tensor, w: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        lp.reset()
        lp.zero_grad(set_to_none=True)
        (lp(u0) * w).sum().backward()

    return step


class _Status:
    """The fields of the engine's status that LayerParallel's callbacks read (fine level, no kept graph)."""

    level, iter, tindex = 0, 0, 0

    def __init__(self, tstart: float = 0.0, tstop: float = 0.0) -> None:
        self.tstart, self.tstop = tstart, tstop


def per_call(rows: int, repeats: int) -> None:
    """Microseconds per row: one grouped call of ``rows`` steps against as many per-step calls."""
    print(f"\n# one call of {rows} rows (fine steps 1..{rows} of depth 64) against {rows} per-step calls, us per row")
    print("| block | dtype | forward: per step | grouped | adjoint: per step | grouped |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (factory, shape) in CASES.items():
        for dtype in (torch.float32, torch.float64):
            lp = LayerParallel(factory(dtype), 64, batch_steps=True, **MGRIT)
            app = lp._engine(shape, dtype, adjoint=True)[0]
            app.begin_gradient()
            g = torch.Generator().manual_seed(0)
            u = torch.randn((rows, *shape), generator=g, dtype=dtype).numpy()
            bar = torch.randn((rows, *shape), generator=g, dtype=dtype).numpy()
            h = 1.0 / 64
            tstart = np.arange(rows) * h
            tstop = tstart + h
            status = _Status()

            def steps() -> None:
                for i in range(rows):
                    app.step(u[i], u[i], None, _Status(tstart[i], tstop[i]))

            def grouped() -> None:
                app.step_batch(u, u, None, tstart, tstop, status)

            def adjoints() -> None:
                for i in range(rows):
                    app.step_adjoint(u[i], u[i], bar[i], bar[i], _Status(tstart[i], tstop[i]))

            def grouped_adjoint() -> None:
                app.step_adjoint_batch(u, u, bar, bar, tstart, tstop, status)

            fns = dict(steps=steps, grouped=grouped, adjoints=adjoints, grouped_adjoint=grouped_adjoint)
            times: dict[str, list[float]] = {n: [] for n in fns}
            with torch.no_grad():
                for _ in range(repeats):
                    for n, fn in fns.items():
                        t0 = time.perf_counter()
                        fn()
                        times[n].append(time.perf_counter() - t0)
            us = {n: 1e6 * statistics.median(t) / rows for n, t in times.items()}
            print(
                f"| {name} | {str(dtype).removeprefix('torch.')} | {us['steps']:.0f} | {us['grouped']:.0f} | "
                f"{us['adjoints']:.0f} | {us['grouped_adjoint']:.0f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", action="store_true", help="only the per-call comparison")
    parser.add_argument("--rows", type=int, default=16, help="rows of a grouped call (--calls)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.calls:
        per_call(args.rows, 5 * args.repeats)
        return
    print(f"# depth {args.depth}, 1 rank, 1 torch thread, median of {args.repeats} (ms per training step)")
    print("| block | dtype | mode | per step | batch_steps | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for name, (factory, shape) in CASES.items():
        for dtype in (torch.float32, torch.float64):
            g = torch.Generator().manual_seed(0)
            u0 = torch.randn(shape, generator=g, dtype=dtype).requires_grad_(True)
            w = torch.randn(shape, generator=g, dtype=dtype)
            for mode in ("exact", "one_shot"):
                fns = {
                    flag: training_step(
                        LayerParallel(factory(dtype), args.depth, mode=mode, batch_steps=flag, **MGRIT), u0, w
                    )
                    for flag in (False, True)
                }
                t = interleaved_medians(fns, args.repeats)
                print(
                    f"| {name} | {str(dtype).removeprefix('torch.')} | {mode} | {1e3 * t[False]:.1f} | "
                    f"{1e3 * t[True]:.1f} | {t[False] / t[True]:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
