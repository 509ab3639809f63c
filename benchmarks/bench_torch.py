"""pyxbraid.torch benchmarks: LayerParallel against plain torch, per training step, and the design choices.

    python benchmarks/bench_torch.py             # steps at depth 16, 64, 256, memory, overhead, model (~15 min)
    python benchmarks/bench_torch.py --quick     # smoke run: depth 16, 2 repeats (~1-2 min)
    python benchmarks/bench_torch.py steps --depths 64 --ranks 1 2 --repeats 5
    python benchmarks/bench_torch.py memory      # peak memory per step, float32 and float64 (1 rank)
    python benchmarks/bench_torch.py overhead    # the engine's overhead per step call (1 rank)
    python benchmarks/bench_torch.py design --ranks 1 2   # per-call costs, keep_graph, coarse weights
    python benchmarks/bench_torch.py torchbraid --torchbraid DIR   # TorchBraid on the same network

The network is :class:`pyxbraid.torch.ConvResNet`, the conv ResNet of
``pyxbraid-train digits``: opening conv (1 -> 8 channels), ``depth`` blocks
``ReLU(BatchNorm2d(Conv3x3))`` (T = 2), 2x2 average pooling + linear head, on
a batch of 64 8x8 images. A training step is the forward and backward pass
(opening, blocks, head, cross-entropy; no optimiser step), from a fresh MGRIT
start (``lp.reset()``, as for a new mini-batch). Plain torch runs the same
modules eagerly (``u = u + h F_k(u)``): with 1 thread in the same process as
pyxbraid on 1 rank, interleaved with it, and with torch's default thread count
in a process of its own. pyxbraid runs one torch thread per rank. MGRIT: 3
levels, cfactor 4, FCF relaxation; "exact" to the default tolerances (float64
1e-12, float32 1e-5, relative); "one_shot" 2 iterations per solve.

Every figure is a median over repeats taken in rounds (one call of each
configuration per round, so that load from other work on a shared machine
falls on all of them alike); for several ranks, of the slowest rank's time in
each round. Multi-rank parts launch ``mpiexec -n P python -m mpi4py
benchmarks/bench_torch.py --worker ...`` with the mpiexec next to this Python,
one after the other in one invocation; memory cases run in fresh processes.
TorchBraid is compared only when ``--torchbraid DIR`` names a built TorchBraid
source tree (it is never part of this repository). Results and the speedup
model: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from mpi4py import MPI

from pyxbraid.torch import ConvResNet, LayerParallel

BATCH, WIDTH, IMAGE, CLASSES, T = 64, 8, 8, 10, 2.0
MGRIT = dict(max_levels=3, cfactor=4)
MODES = ("serial", "exact", "one_shot")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
PLAIN1 = "plain torch, 1 thread"
PLAIN_DEFAULT = "plain torch, default threads"


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int, comm: Any = None) -> dict[str, float]:
    """Median seconds per call of each function; for several ranks the slowest rank's time of each call.

    One warm-up call each (solvers, allocator pools), then ``repeats`` rounds
    of one call of each: on a shared machine, load that comes and goes then
    hits every configuration alike instead of whichever happened to run.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if comm is not None:
                comm.Barrier()
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
            times[name].append(comm.allreduce(t, op=MPI.MAX) if comm is not None else t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def repeats_for(depth: int, repeats: int) -> int:
    """Half as many repeats at depth >= 256 (an exact step there takes seconds), at least 2."""
    return max(2, repeats // 2) if depth >= 256 else repeats


def batch(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 1, IMAGE, IMAGE, generator=g, dtype=torch.float64).to(dtype)
    return x, torch.randint(0, CLASSES, (BATCH,), generator=g)


def conv_block(k: int, dtype: torch.dtype) -> torch.nn.Module:
    """A block of ConvResNet's kind (seeded by k)."""
    torch.manual_seed(k + 1)
    conv = torch.nn.Conv2d(WIDTH, WIDTH, 3, padding=1)
    return torch.nn.Sequential(conv, torch.nn.BatchNorm2d(WIDTH), torch.nn.ReLU()).to(dtype)


def network(depth: int, dtype: torch.dtype, mode: str, comm: Any, **extra: Any) -> ConvResNet:
    options = dict(MGRIT, **extra) if mode != "serial" else {}
    return ConvResNet((1, IMAGE, IMAGE), CLASSES, WIDTH, depth, T, comm, dtype=dtype, mode=mode, **options)


def plain_step(net: ConvResNet, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A training step of plain torch over the modules of a 1-rank ``net`` (all blocks are local)."""
    blocks = [net.lp.layer(k) for k in range(net.lp.depth)]
    h = T / net.lp.depth

    def step() -> None:
        net.zero_grad(set_to_none=True)
        u = net.opening(x)
        for b in blocks:
            u = u + h * b(u)
        torch.nn.functional.cross_entropy(net.head(u), y).backward()

    return step


def engine_step(net: ConvResNet, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A training step through LayerParallel; ``reset``: a fresh batch starts MGRIT from the initial guess."""

    def step() -> None:
        net.zero_grad(set_to_none=True)
        net.lp.reset()
        torch.nn.functional.cross_entropy(net(x), y).backward()

    return step


def outside_step(net: ConvResNet, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """Opening, head and loss without the blocks: the replicated part that no rank count divides."""
    fixed = torch.nn.Sequential(net.opening, *net.head)

    def step() -> None:
        fixed.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(fixed(x), y).backward()

    return step


# --- steps: one training step, plain torch and every mode ----------------------------------------
def worker_steps(depths: list[int], repeats: int) -> list[dict]:
    """Under mpiexec: every mode, and on 1 rank plain torch (1 thread) and the outside part, interleaved."""
    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    torch.set_num_threads(1)
    rows: list[dict] = []
    for depth in depths:
        for name, dtype in DTYPES.items():
            x, y = batch(dtype)
            nets = {mode: network(depth, dtype, mode, comm) for mode in MODES}
            fns = {mode: engine_step(net, x, y) for mode, net in nets.items()}
            if size == 1:  # plain torch on the serial net's own modules, in this process
                fns[PLAIN1] = plain_step(nets["serial"], x, y)
                fns["outside"] = outside_step(nets["serial"], x, y)
            medians = interleaved_medians(fns, repeats_for(depth, repeats), comm)
            for mode, seconds in medians.items():
                row = dict(depth=depth, dtype=name, mode=mode, ranks=size, seconds=seconds)
                lp = nets[mode].lp if mode in nets else None
                fwd, bwd = (lp.last_forward, lp.last_backward) if lp is not None else (None, None)
                if lp is not None and fwd is not None and bwd is not None:
                    row.update(
                        iterations=[fwd.iterations, bwd.iterations],
                        steps=[fwd.step_calls_all_ranks, bwd.step_calls_all_ranks],
                        level_sizes=list(fwd.level_sizes),
                        storage_mib=comm.allreduce(sum(s.storage_bytes for _, s in lp._engines.values())) / 2**20,
                    )
                rows.append(row)
    if size > 1:  # one message of a state between neighbours (the model's m)
        state = torch.zeros(BATCH, WIDTH, IMAGE, IMAGE, dtype=torch.float64).numpy()
        peer = comm.Get_rank() ^ 1
        if peer < size:

            def exchange() -> None:
                comm.Sendrecv(state, dest=peer, recvbuf=state.copy(), source=peer)

            seconds = interleaved_medians({"m": exchange}, 50, comm)["m"]
            rows.append(dict(message_seconds=seconds, message_bytes=state.nbytes))
    return rows


def worker_plain_threads(depths: list[int], repeats: int) -> list[dict]:
    """Plain torch with torch's default thread count, in a process of its own (never set to 1 thread)."""
    rows: list[dict] = []
    for depth in depths:
        fns = {}
        for name, dtype in DTYPES.items():
            x, y = batch(dtype)
            fns[name] = plain_step(network(depth, dtype, "serial", MPI.COMM_SELF), x, y)
        for name, seconds in interleaved_medians(fns, repeats_for(depth, repeats)).items():
            rows.append(dict(depth=depth, dtype=name, mode=PLAIN_DEFAULT, ranks=1, seconds=seconds))
    rows.append(dict(default_threads=torch.get_num_threads()))
    return rows


# --- memory: peak resident memory of a training step, each case in a fresh process ---------------
def rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker_memory(case: str, dtype_name: str, depth: int) -> dict:
    """Peak RSS over two training steps above the RSS after imports, network and data (1 rank, 1 thread).

    One step of a tiny network of the same mode first: the lazy imports and
    one-off setup of a first call (tens of MiB) are then in the baseline, not
    counted as the step's memory, while the tiny step's own peak stays far
    below that of the measured steps.
    """
    torch.set_num_threads(1)
    dtype = DTYPES[dtype_name]
    mode = "serial" if case == "plain" else case
    x, y = batch(dtype)
    tiny = network(4, dtype, mode, MPI.COMM_SELF)
    (plain_step if case == "plain" else engine_step)(tiny, x[:2], y[:2])()
    net = network(depth, dtype, mode, MPI.COMM_SELF)
    step = plain_step(net, x, y) if case == "plain" else engine_step(net, x, y)
    base = rss_now()
    for _ in range(2):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(case=case, dtype=dtype_name, depth=depth, mib=(peak - base) / 2**20)


# --- overhead: the engine's cost per step call for a torch block ---------------------------------
def bench_overhead(repeats: int, depth: int = 64) -> list[dict]:
    """Engine overhead per step call: sequential marching through the engine against plain loops.

    ``max_levels=1``: the engine marches through the layers (no MGRIT), so its
    time minus that of a plain loop doing the same block evaluations is the
    engine's own cost. Forward under ``no_grad``: ``depth`` primal step calls
    against a loop of ``u += h F_k(u)``. Forward + backward: the forward march,
    then the backward solve (XBraid_Adjoint: a primal march and the reverse
    sweep, each adjoint step recomputing ``F_k`` with autograd and taking one
    vector-Jacobian product), ``2 depth`` primal and ``depth`` adjoint step
    calls, against plain loops of the same evaluations. Eval mode (BatchNorm
    with running statistics: no statistics pass). The identity block on a
    tiny state leaves only the per-call cost; on the benchmark's state it adds
    the engine's copies of the state.
    """
    torch.set_num_threads(1)
    rows: list[dict] = []
    cases = [
        ("ReLU(BN(Conv3x3))", (BATCH, WIDTH, IMAGE, IMAGE), conv_block),
        ("identity", (BATCH, WIDTH, IMAGE, IMAGE), lambda k, dtype: torch.nn.Identity()),
        ("identity", (1, 1, 2, 2), lambda k, dtype: torch.nn.Identity()),
    ]
    for name, dtype in DTYPES.items():
        for label, shape, make in cases:
            x = torch.randn(*shape, dtype=torch.float64).to(dtype)
            lp = LayerParallel(
                lambda k, make=make, dtype=dtype: make(k, dtype),
                depth=depth,
                T=T,
                comm=MPI.COMM_SELF,
                mode="exact",
                max_levels=1,
            )
            lp.eval()
            fns = overhead_pair(lp, x)
            t = interleaved_medians(fns, repeats)
            fwd = [t["plain"] / depth * 1e6, t["engine"] / depth * 1e6]
            mix = [t["plain_mix"] / (3 * depth) * 1e6, t["engine_mix"] / (3 * depth) * 1e6]
            rows.append(dict(dtype=name, block=label, shape=list(shape), forward_us=fwd, training_us=mix))
    return rows


def overhead_pair(lp: LayerParallel, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """The engine's sequential march and the plain loops doing the same evaluations."""
    blocks = [lp.layer(k) for k in range(lp.depth)]
    h = T / lp.depth

    def plain() -> list[torch.Tensor]:
        states = []
        with torch.no_grad():
            u = x.clone()
            for b in blocks:
                states.append(u.clone())
                u.add_(b(u), alpha=h)
        return states

    def plain_mix() -> None:
        plain()  # the forward march
        states = plain()  # the backward solve's primal march
        bar = torch.ones_like(x)
        for b, s in zip(reversed(blocks), reversed(states), strict=True):
            s = s.detach().requires_grad_(True)
            got = torch.autograd.grad(b(s), [s, *b.parameters()], bar, allow_unused=True)
            if got[0] is not None:
                bar = bar + h * got[0]

    def engine() -> None:
        with torch.no_grad():
            lp(x)

    def engine_mix() -> None:
        lp(x.clone().requires_grad_(True)).backward(torch.ones_like(x))

    return dict(plain=plain, engine=engine, plain_mix=plain_mix, engine_mix=engine_mix)


# --- TorchBraid on the same network (only with --torchbraid DIR: a built TorchBraid tree) ---------
TORCHBRAID_CONFIGS = {  # name: (levels, iterations per solve), TorchBraid's own forward and backward solves
    "TorchBraid, 1 level": (1, 1),
    "TorchBraid, 3 levels, 2 its": (3, 2),
}


def worker_torchbraid(depths: list[int], repeats: int, tree: str) -> list[dict]:
    """Under mpiexec: TorchBraid's LayerParallel over the same blocks, opening, head and loss, float32.

    1 level: TorchBraid marches through the layers (its counterpart of
    "serial"); 3 levels, cfactor 4, 2 iterations forward and backward: its
    usual training setting (F-relaxation), the counterpart of "one_shot" (also
    timed with F-relaxation, ``nrelax=0``). pyxbraid's serial
    and one_shot run in the same rounds, so the comparison sees the same load.
    float32 only: TorchBraid receives the result on rank 0 into a float32
    buffer.
    """
    sys.path.insert(0, str(Path(tree) / "src"))
    import torchbraid  # noqa: PLC0415 - optional, from the tree given on the command line

    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    dtype = torch.float32
    rows: list[dict] = []
    for depth in depths:
        x, y = batch(dtype)
        fns = {}
        for name, (levels, iterations) in TORCHBRAID_CONFIGS.items():
            outer = network(depth, dtype, "serial", MPI.COMM_SELF)  # opening and head (replicated)
            tb = torchbraid.LayerParallel(
                comm,
                lambda: conv_block(0, dtype),
                depth,
                T,
                max_fwd_levels=levels,
                max_bwd_levels=levels,
                max_iters=iterations,
            )
            tb.setCFactor(4)
            tb.setPrintLevel(0)
            fns[name] = torchbraid_step(outer, tb, x, y)
        for mode in ("serial", "one_shot"):
            fns[f"pyxbraid {mode}"] = engine_step(network(depth, dtype, mode, comm), x, y)
        # TorchBraid relaxes with F sweeps only (its default nrelax=0); pyxbraid's default is FCF
        f_relax = network(depth, dtype, "one_shot", comm, nrelax=0)
        fns["pyxbraid one_shot, F-relaxation"] = engine_step(f_relax, x, y)
        for name, seconds in interleaved_medians(fns, repeats_for(depth, repeats), comm).items():
            rows.append(dict(depth=depth, dtype="float32", mode=name, ranks=comm.Get_size(), seconds=seconds))
    return rows


def torchbraid_step(outer: ConvResNet, tb: Any, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        outer.zero_grad(set_to_none=True)
        tb.zero_grad()
        logits = outer.head(tb(outer.opening(x)))
        torch.nn.functional.cross_entropy(logits, y).backward()

    return step


# --- design: per-call costs, keep_graph, coarse weights (the earlier measurements) -----------------
def make_block(width: int, weights: str = "random", depth: int = 32, scale: float = 1.0) -> Any:
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


def best(fn: Any, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def worker_design(depth: int = 32, width: int = 8, batch_size: int = 32, image: int = 8) -> None:
    """Per-call costs of one block, modes against autograd, keep_graph, coarse weight policies (prints)."""
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

    def say(*args: Any) -> None:
        if rank == 0:
            print(*args, flush=True)

    torch.manual_seed(1)
    u0 = torch.randn(batch_size, width, image, image, dtype=torch.float64)
    say(f"\n# design measurements: {size} rank(s); state {tuple(u0.shape)}, {depth} blocks, float64, 1 thread")

    # 1. per-call costs
    block = make_block(width)(0)
    x = u0.clone()
    n = 100

    def f_nograd() -> None:
        with torch.no_grad():
            block(x)

    def f_graph() -> None:
        block(x.clone().requires_grad_())

    def f_vjp() -> None:
        y = x.clone().requires_grad_()
        torch.autograd.grad(block(y), [y, *block.parameters()], x)

    calls = (("F", f_nograd), ("F graph", f_graph), ("F graph + VJP", f_vjp))
    costs = {name: best(lambda f=f: [f() for _ in range(n)]) / n for name, f in calls}
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x.clone().requires_grad_())
    graph_bytes = sum(saved)
    say(
        "\n1. one block, per call: "
        + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in costs.items())
        + f"; autograd saves {graph_bytes / 2**20:.2f} MiB per block graph (state {u0.numel() * 8 / 2**20:.2f} MiB)"
    )

    # 2. modes against plain autograd
    blocks = [make_block(width)(k) for k in range(depth)] if rank == 0 else []
    plain_times: list[float] = []

    def plain() -> None:
        z = u0.clone().requires_grad_()
        t0 = time.perf_counter()
        for b in blocks:
            z = z + (1 / depth) * b(z)
        t1 = time.perf_counter()
        z.sum().backward()
        plain_times[:] = [t1 - t0, time.perf_counter() - t1]

    if rank == 0:
        best(plain)
        fwd, bwd = plain_times[0] * 1e3, plain_times[1] * 1e3
        say(f"\n2. plain autograd (one process): forward {fwd:.1f} ms, backward {bwd:.1f} ms")
    comm.Barrier()
    for mode in MODES:
        lp = LayerParallel(make_block(width), depth=depth, comm=comm, mode=mode, max_levels=3, cfactor=4)
        run_times: list[float] = []

        def run(lp: LayerParallel = lp, run_times: list[float] = run_times) -> None:
            y = u0.clone().requires_grad_()
            comm.Barrier()
            t0 = time.perf_counter()
            uT = lp(y)
            t1 = time.perf_counter()
            uT.sum().backward()
            run_times[:] = [t1 - t0, time.perf_counter() - t1]

        run()
        best(run)
        line = f"   {mode:8s}: forward {run_times[0] * 1e3:7.1f} ms, backward {run_times[1] * 1e3:7.1f} ms"
        f, b = lp.last_forward, lp.last_backward
        if f is not None and b is not None:
            line += (
                f"  (iterations {f.iterations} + {b.iterations}; steps on all ranks {f.step_calls_all_ranks} + "
                f"{b.step_calls_all_ranks}; adjoint steps on rank 0 {b.calls['step_adjoint']})"
            )
        say(line)

    # 3. recompute vs keep the graph (exact mode): CPU time of the backward, interleaved, best of 3
    cpu: dict[bool, list[float]] = {}
    lps = {
        keep: LayerParallel(
            make_block(width), depth=depth, comm=comm, mode="exact", max_levels=3, cfactor=4, keep_graph=keep
        )
        for keep in (False, True)
    }
    for _ in range(3):
        for keep, lp in lps.items():
            uT = lp(u0.clone().requires_grad_())
            comm.Barrier()
            t = time.process_time()
            uT.sum().backward()
            cpu.setdefault(keep, []).append(time.process_time() - t)
    bwd = lps[False].last_backward
    assert bwd is not None
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
            t = time.perf_counter()
            lp(u0.clone().requires_grad_()).sum().backward()
            t = time.perf_counter() - t
            f, b = lp.last_forward, lp.last_backward
            assert f is not None and b is not None
            say(
                f"   {weights:6s} weights, coarse={coarse!r:7s}: {f.iterations} + {b.iterations} iterations, "
                f"residual after 3: {f.residual_norms[3]:.2e}, {t:.2f} s"
            )


# --- reports --------------------------------------------------------------------------------------
def table(head: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def ms(row: dict | None) -> str:
    return f"{row['seconds'] * 1e3:.1f}" if row else "–"


def report_steps(key: dict, depths: list[int], ranks: list[int], threads: int) -> None:
    print("\n## Time per training step (forward + backward), milliseconds, median")
    print(
        "serial: its ratio to plain torch with 1 thread (target <= 1.2x); exact, one_shot: MGRIT iterations "
        f"forward + backward; plain torch's default thread count here: {threads}\n"
    )
    head = ["depth", "dtype", PLAIN1, f"plain torch, {threads} threads"]
    for p in ranks:
        head += [f"serial, {p} rank" + "s" * (p > 1), f"exact, {p}", f"one_shot, {p}"]
    rows = []
    for depth in depths:
        for dtype in DTYPES:
            plain1 = key.get((depth, dtype, PLAIN1, 1))
            cells = [str(depth), dtype, ms(plain1), ms(key.get((depth, dtype, PLAIN_DEFAULT, 1)))]
            for p in ranks:
                for mode in MODES:
                    r = key.get((depth, dtype, mode, p))
                    cell = ms(r)
                    if r and mode == "serial" and plain1:
                        cell += f" ({r['seconds'] / plain1['seconds']:.2f}x)"
                    elif r and "iterations" in r:
                        cell += f" ({r['iterations'][0]}+{r['iterations'][1]})"
                    cells.append(cell)
            rows.append(cells)
    table(head, rows)


def report_dtypes(key: dict, memory: list[dict], depths: list[int]) -> None:
    """What float32 buys: time per step on 1 rank, and peak memory per step, against float64."""
    print("\n## float32 against float64 (1 rank): time per step (ms) and peak memory per step (MiB)\n")
    head = ["depth", "mode", "float64 ms", "float32 ms", "time f64/f32", "engine storage f64 / f32 MiB"]
    rows = []
    for depth in depths:
        for mode in (PLAIN1, *MODES):
            r64, r32 = key.get((depth, "float64", mode, 1)), key.get((depth, "float32", mode, 1))
            if not (r64 and r32):
                continue
            store = "–"
            if "storage_mib" in r64 and mode != "serial":
                store = f"{r64['storage_mib']:.2f} / {r32['storage_mib']:.2f}"
            ratio = f"{r64['seconds'] / r32['seconds']:.2f}x"
            rows.append([str(depth), mode, ms(r64), ms(r32), ratio, store])
    table(head, rows)
    if memory:
        print("\nPeak RSS above the baseline over two training steps (1 rank), a fresh process each, MiB:\n")
        by = {(m["depth"], m["case"], m["dtype"]): m["mib"] for m in memory}
        rows = []
        for depth in sorted({m["depth"] for m in memory}):
            for case in ("plain", *MODES):
                f64, f32 = by.get((depth, case, "float64")), by.get((depth, case, "float32"))
                if f64 is None or f32 is None:
                    continue
                name = PLAIN1 if case == "plain" else case
                rows.append([str(depth), name, f"{f64:.1f}", f"{f32:.1f}", f"{f64 / f32:.2f}x" if f32 > 0 else "–"])
        table(["depth", "case", "float64 MiB", "float32 MiB", "f64/f32"], rows)


def report_model(rows: list[dict], key: dict, depths: list[int], ranks: list[int]) -> None:
    """The speedup model of the native ResNet (benchmarks/README.md) for torch blocks.

    From the 1-rank run of a mode: ``S`` step calls of the forward and backward
    solves (all levels; a backward step call carries its adjoint step), ``I``
    iterations, ``N_L`` points on the coarsest level, ``L`` levels. The cost of
    one step call with its share of the adjoint and of the statistics pass is
    ``c = (T_1 - T_out) / S``, ``T_out`` the opening, head and loss (replicated,
    not parallel). On ``P`` ranks every level's work divides by ``P`` except the
    coarsest (``N_L`` steps per iteration, sequential), and each level and sweep
    adds a message of one state (``m``, measured between 2 ranks here; 4 per
    level and iteration counting the reverse sweep):

        T_P = T_out + c * (S - I N_L) / P + c * I N_L + I * L * 4 * m
    """
    if 1 not in ranks:
        return
    message = [r for r in rows if "message_seconds" in r]
    m = message[0]["message_seconds"] if message else 60e-6  # (no 2-rank run: a typical shared-memory figure)
    m_bytes = message[0]["message_bytes"] if message else BATCH * WIDTH * IMAGE * IMAGE * 8
    print(
        f"\n## Speedup model: T_P = T_out + c (S - I N_L) / P + c I N_L + I L 4 m, m = {m * 1e6:.0f} us "
        f"(one {m_bytes // 1024} KiB float64 state between 2 ranks, measured; float32: half)\n"
    )
    head = ["depth", "dtype", "mode", "I (fwd+bwd)", "S", "N_L", "c (us)", "T_out ms", "T_1 ms", "model T_2"]
    head += ["measured T_2", "model T_4", "T_16", "T_64", PLAIN1, "ranks to beat it (model)"]
    out = []
    for depth in depths:
        for dtype in DTYPES:
            plain = key.get((depth, dtype, PLAIN1, 1))
            outside = key.get((depth, dtype, "outside", 1))
            for mode in ("exact", "one_shot"):
                one = key.get((depth, dtype, mode, 1))
                if one is None or plain is None or outside is None or "steps" not in one:
                    continue
                model = speedup_model(one, outside["seconds"], m * (1 if dtype == "float64" else 0.5))
                beat = next(
                    (p for p in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if model(p) < plain["seconds"]), None
                )
                if beat is None:
                    beat_cell = "never (the sequential part alone is slower)"
                elif beat > depth // 4:  # beyond one coarse interval per rank the model no longer holds
                    beat_cell = f"never ({beat} ranks > depth / cfactor)"
                else:
                    beat_cell = str(beat)
                nl = one["level_sizes"][-1]
                out.append(
                    [str(depth), dtype, mode, "+".join(map(str, one["iterations"])), str(sum(one["steps"])), str(nl)]
                    + [f"{model.c * 1e6:.0f}", f"{outside['seconds'] * 1e3:.1f}", ms(one)]
                    + [f"{model(2) * 1e3:.1f}", ms(key.get((depth, dtype, mode, 2)))]
                    + [f"{model(p) * 1e3:.1f}" for p in (4, 16, 64)]
                    + [ms(plain), beat_cell]
                )
    table(head, out)


class speedup_model:  # noqa: N801 - used as a function of P
    """T_P of the docstring of :func:`report_model`, from one mode's 1-rank row."""

    def __init__(self, one: dict, t_out: float, m: float) -> None:
        self.iters, self.steps = sum(one["iterations"]), sum(one["steps"])
        self.nl, self.levels = one["level_sizes"][-1], len(one["level_sizes"])
        self.t_out, self.m = t_out, m
        self.c = (one["seconds"] - t_out) / self.steps

    def __call__(self, p: int) -> float:
        if p == 1:
            return self.t_out + self.c * self.steps
        serial_part = self.c * self.iters * self.nl  # the coarsest level, sequential in every iteration
        parallel = self.c * (self.steps - self.iters * self.nl) / p
        return self.t_out + parallel + serial_part + self.iters * self.levels * 4 * self.m


def report_overhead(rows: list[dict], depth: int) -> None:
    print(f"\n## Engine overhead per step call (1 rank, 1 thread, max_levels=1, eval mode, depth {depth})")
    print("microseconds per step call, median; forward: primal steps under no_grad; training: forward + backward\n")
    head = ["dtype", "block", "state", "plain F", "engine step", "overhead", "plain F, F+VJP", "engine steps"]
    out = []
    for r in rows:
        f, t = r["forward_us"], r["training_us"]
        shape = "x".join(map(str, r["shape"]))
        out.append(
            [r["dtype"], r["block"], shape, f"{f[0]:.1f}", f"{f[1]:.1f}", f"{f[1] - f[0]:.1f}"]
            + [f"{t[0]:.1f}", f"{t[1]:.1f}", f"{t[1] - t[0]:.1f}"]
        )
    table([*head, "overhead"], out)


def report_torchbraid(key: dict, depths: list[int], ranks: list[int], status: str) -> None:
    print("\n## TorchBraid on the same network (float32), milliseconds per training step, median\n")
    if status:
        print(f"not measured: {status}")
        return
    head = [
        "depth",
        "ranks",
        "pyxbraid serial",
        "TorchBraid, 1 level",
        "pyxbraid one_shot",
        "pyxbraid one_shot, F-relaxation",
        "TorchBraid, 3 levels, 2 its",
    ]
    out = []
    for depth in depths:
        for p in ranks:
            cells = [str(depth), str(p)]
            for mode in head[2:]:
                cells.append(ms(key.get((depth, "float32", mode, p))))
            out.append(cells)
    table(head, out)


# --- driver ---------------------------------------------------------------------------------------
def launch(args: list[str], ranks: int | None) -> str:
    """Run this script as a worker: under the mpiexec next to this Python, or (ranks None) as a plain process."""
    cmd = [sys.executable, __file__, *args]
    if ranks is not None:
        mpiexec = Path(sys.executable).with_name("mpiexec")
        cmd = [str(mpiexec), "-n", str(ranks), sys.executable, "-m", "mpi4py", __file__, *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=7200).stdout


def result_of(out: str) -> Any:
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def run_steps(a: argparse.Namespace) -> tuple[list[dict], int]:
    sizes = ["--depths", *map(str, a.depths), "--repeats", str(a.repeats)]
    rows = result_of(launch(["--worker", "plain-threads", *sizes], None))
    threads = next(r["default_threads"] for r in rows if "default_threads" in r)
    for p in a.ranks:
        rows += result_of(launch(["--worker", "steps", *sizes], p))
    return rows, threads


def run_memory(a: argparse.Namespace) -> list[dict]:
    rows = []
    for depth in a.memory_depths:
        for case in ("plain", *MODES):
            for dtype in DTYPES:
                args = ["--worker", "memory", "--case", case, "--dtype", dtype, "--depths", str(depth)]
                rows.append(result_of(launch(args, None)))
    return rows


def run_torchbraid(a: argparse.Namespace) -> tuple[list[dict], str]:
    """TorchBraid rows, or why there are none."""
    if not a.torchbraid:
        return [], "no --torchbraid DIR given (a TorchBraid tree built against XBraid; see benchmarks/README.md)"
    sizes = ["--depths", *map(str, a.depths), "--repeats", str(a.repeats), "--torchbraid", a.torchbraid]
    rows: list[dict] = []
    for p in a.ranks:
        try:
            rows += result_of(launch(["--worker", "torchbraid", *sizes], p))
        except subprocess.CalledProcessError as exc:
            return rows, f"TorchBraid failed on {p} rank(s): {exc.stderr.strip().splitlines()[-1:]}"
    return rows, ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=["all", "steps", "memory", "overhead", "design", "torchbraid"])
    p.add_argument("--depths", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (depth >= 256: half as many, at least 2)")
    p.add_argument("--memory-depths", type=int, nargs="+", default=[16, 64], help="depths of the memory part")
    p.add_argument("--torchbraid", metavar="DIR", help="a built TorchBraid source tree to compare against")
    p.add_argument("--quick", action="store_true", help="smoke run: depth 16, 2 repeats")
    p.add_argument("--worker", choices=["steps", "plain-threads", "memory", "torchbraid", "design"])
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.what = a.what or "all"
    if a.quick:
        a.depths, a.repeats, a.memory_depths = [16], 2, [16]
    if a.worker:
        run_worker(a)
        return
    load = os.getloadavg()
    print(
        f"# pyxbraid.torch benchmarks ({os.cpu_count()} cores; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})"
    )
    print(
        f"# {' '.join(sys.argv)}; torch {torch.__version__}; {a.repeats} repeats "
        f"(depth >= 256: {repeats_for(256, a.repeats)})"
    )
    rows: list[dict] = []
    if a.what in ("all", "steps"):
        steps, threads = run_steps(a)
        rows += steps
        key = {(r["depth"], r["dtype"], r["mode"], r["ranks"]): r for r in rows if "mode" in r}
        report_steps(key, a.depths, a.ranks, threads)
        report_model(rows, key, a.depths, a.ranks)
    memory = run_memory(a) if a.what in ("all", "memory") else []
    if a.what in ("all", "steps", "memory"):
        key = {(r["depth"], r["dtype"], r["mode"], r["ranks"]): r for r in rows if "mode" in r}
        report_dtypes(key, memory, a.depths)
    if a.what in ("all", "overhead"):
        depth = 16 if a.quick else 64
        report_overhead(bench_overhead(3 * a.repeats, depth), depth)
    if a.what in ("all", "torchbraid"):
        tb, status = run_torchbraid(a)
        rows += tb
        key = {(r["depth"], r["dtype"], r["mode"], r["ranks"]): r for r in rows if "mode" in r}
        report_torchbraid(key, a.depths, a.ranks, status)
    if a.what == "design":
        for ranks in a.ranks:
            print(launch(["--worker", "design"], ranks), end="")
    load = os.getloadavg()
    print(f"\n(load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})")


def run_worker(a: argparse.Namespace) -> None:
    """The worker side of launch(): measure, and rank 0 prints one RESULT line of JSON."""
    if a.worker == "design":
        worker_design()
        return
    if a.worker == "steps":
        result: Any = worker_steps(a.depths, a.repeats)
    elif a.worker == "plain-threads":
        result = worker_plain_threads(a.depths, a.repeats)
    elif a.worker == "memory":
        result = worker_memory(a.case, a.dtype, a.depths[0])
    else:
        result = worker_torchbraid(a.depths, a.repeats, a.torchbraid)
    if MPI.COMM_WORLD.Get_rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
