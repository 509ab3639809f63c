"""pyxbraid.torch: what LayerParallel costs against plain torch autograd, and why it is built as it is.

Run on 1 and 2 ranks (one torch thread per rank)::

    python benchmarks/bench_torch.py
    mpiexec -n 2 python -m mpi4py benchmarks/bench_torch.py

Prints (rank 0), for a convolutional ResNet block ``ReLU(BatchNorm(Conv3x3))``:

1. per-call costs of one block: ``F`` without graph (a primal step), ``F`` with
   graph, ``F`` with graph + one vector-Jacobian product (a recomputing adjoint
   step), and the bytes autograd saves for one block's graph (measured with
   saved-tensor hooks);
2. forward and backward wall time of plain autograd and of each mode, with
   MGRIT iterations and step counts;
3. recompute vs keep each step's graph (``keep_graph``): backward CPU time
   and the graph memory of each;
4. the coarse-level weight policies "tstop" and "mean": iterations to the
   tolerance for weights that vary randomly and smoothly from layer to layer.
"""

from __future__ import annotations

import argparse
import time

import torch
from mpi4py import MPI

from pyxbraid.torch import LayerParallel


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def make_block(width: int, weights: str = "random", depth: int = 32, scale: float = 1.0):
    def block(k: int) -> torch.nn.Module:
        torch.manual_seed(k if weights == "random" else 0)
        m = torch.nn.Sequential(
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU()
        ).double()
        with torch.no_grad():
            if weights == "smooth":  # one set of weights, scaled smoothly along the depth
                for p in m.parameters():
                    p.mul_(1 + 0.5 * torch.sin(torch.tensor(6.283 * k / depth)))
            m[0].weight.mul_(scale)
        return m

    return block


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    depth, width = args.depth, args.width
    torch.manual_seed(1)
    u0 = torch.randn(args.batch, width, args.image, args.image, dtype=torch.float64)
    say(
        f"bench_torch: {size} rank(s); state {tuple(u0.shape)}, {depth} blocks ReLU(BatchNorm(Conv3x3)), float64, "
        "1 torch thread per rank"
    )

    # 1. per-call costs
    block = make_block(width)(0)
    x = u0.clone()
    n = 100

    def f_nograd():
        with torch.no_grad():
            block(x)

    def f_graph():
        block(x.clone().requires_grad_())

    def f_vjp():
        y = x.clone().requires_grad_()
        torch.autograd.grad(block(y), [y, *block.parameters()], x)

    costs = {
        name: best(lambda f=f: [f() for _ in range(n)]) / n
        for name, f in (("F", f_nograd), ("F graph", f_graph), ("F graph + VJP", f_vjp))
    }
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        y = x.clone().requires_grad_()
        block(y)
    graph_bytes = sum(saved)
    say(
        "\n1. one block, per call: "
        + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in costs.items())
        + f"; autograd saves {graph_bytes / 2**20:.2f} MiB per block graph (state {u0.numel() * 8 / 2**20:.2f} MiB)"
    )

    # 2. modes against plain autograd
    blocks = [make_block(width)(k) for k in range(depth)] if rank == 0 else []

    def plain():
        y = u0.clone().requires_grad_()
        z = y
        t0 = time.perf_counter()
        for b in blocks:
            z = z + (1 / depth) * b(z)
        t1 = time.perf_counter()
        z.sum().backward()
        plain.t = (t1 - t0, time.perf_counter() - t1)

    if rank == 0:
        best(plain)
        say(f"\n2. plain autograd (one process): forward {plain.t[0] * 1e3:.1f} ms, backward {plain.t[1] * 1e3:.1f} ms")
    comm.Barrier()
    results = {}
    for mode in ("serial", "exact", "one_shot"):
        lp = LayerParallel(make_block(width), depth=depth, comm=comm, mode=mode, max_levels=3, cfactor=4)

        def run(lp=lp):
            y = u0.clone().requires_grad_()
            comm.Barrier()
            t0 = time.perf_counter()
            uT = lp(y)
            t1 = time.perf_counter()
            uT.sum().backward()
            run.t = (t1 - t0, time.perf_counter() - t1)

        run()
        best(run)
        results[mode] = (run.t, lp.last_forward, lp.last_backward)
        line = f"   {mode:8s}: forward {run.t[0] * 1e3:7.1f} ms, backward {run.t[1] * 1e3:7.1f} ms"
        if lp.last_backward is not None:
            f, b = lp.last_forward, lp.last_backward
            line += (
                f"  (iterations {f.iterations} + {b.iterations}; steps on all ranks {f.step_calls_all_ranks} + "
                f"{b.step_calls_all_ranks}; adjoint steps on rank 0 {b.calls['step_adjoint']})"
            )
        say(line)

    # 3. recompute vs keep the graph (exact mode): CPU time of the backward, interleaved, best of 3
    cpu = {}
    lps = {
        keep: LayerParallel(
            make_block(width), depth=depth, comm=comm, mode="exact", max_levels=3, cfactor=4, keep_graph=keep
        )
        for keep in (False, True)
    }
    for _ in range(3):
        for keep, lp in lps.items():
            y = u0.clone().requires_grad_()
            uT = lp(y)
            comm.Barrier()
            t = time.process_time()
            uT.sum().backward()
            cpu.setdefault(keep, []).append(time.process_time() - t)
    bwd = lps[False].last_backward
    steps, adj = bwd.calls["step"], bwd.calls["step_adjoint"]
    per_iteration = steps / max(bwd.iterations, 1)
    local_layers = len(lps[False].owned_layers)
    say(
        f"\n3. exact backward on rank 0: {steps} primal + {adj} adjoint steps in {bwd.iterations} iterations; CPU time "
        f"recomputing F_k in each adjoint step {min(cpu[False]) * 1e3:.0f} ms, keeping each step's graph "
        f"(keep_graph=True) {min(cpu[True]) * 1e3:.0f} ms. Graph memory: recompute 1 step graph "
        f"({graph_bytes / 2**20:.2f} MiB); keep {per_iteration:.0f} step graphs per iteration "
        f"({per_iteration * graph_bytes / 2**20:.1f} MiB); plain autograd {local_layers} "
        f"({local_layers * graph_bytes / 2**20:.1f} MiB) for this rank's layers"
    )

    # 4. coarse-level weight policies
    say("\n4. coarse weights, exact mode, 3 levels, cfactor 4, T = 8 (iterations forward + backward to 1e-10):")
    for weights, scale in (("random", 3.0), ("smooth", 1.0)):
        for coarse in ("tstop", "mean"):
            lp = LayerParallel(
                make_block(width, weights, 4 * depth, scale),
                depth=4 * depth,
                T=8.0,
                comm=comm,
                mode="exact",
                max_levels=3,
                cfactor=4,
                coarse=coarse,
                tol=1e-10,
                adjoint_tol=1e-10,
            )
            y = u0.clone().requires_grad_()
            t = time.perf_counter()
            lp(y).sum().backward()
            t = time.perf_counter() - t
            f, b = lp.last_forward, lp.last_backward
            say(
                f"   {weights:6s} weights, coarse={coarse!r:7s}: {f.iterations} + {b.iterations} iterations, "
                f"residual after 3: {f.residual_norms[3]:.2e}, {t:.2f} s"
            )


if __name__ == "__main__":
    main()
