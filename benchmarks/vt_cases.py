"""The problems of the virtual-time benchmarks (bench_virtual_time.py, scaling.py) and their MPI worker.

A driver launches ``mpiexec -n P python -m mpi4py vt_cases.py --worker ...``; the
worker builds one case, runs a warm-up solve and then ``--repeats`` timed solves
(virtual time on and off alternating when asked for both), and rank 0 writes
one JSON record. No timing happens in the driver.

Cases (``CASES``), each one solve of the kind a user repeats:

- ``linear_ode`` (``--config ml2|full|cf8``): XBraid's ex-01 as the native
  ``LinearODE``, 5 fixed MGRIT iterations (as bench_engine.py);
- ``heat1d``: the native ``Heat1D`` (XBraid's ex-02), full multilevel, FCF,
  iterated to ``abs_tol``;
- ``python_app``: ex-01 as a numpy Python App (bench_engine.py's), 5 iterations;
- ``resnet``: one gradient of the peaks ResNet (width 8, batch 100, smooth ReLU
  as the paper's) by ``pyxbraid.nn.Trainer``, exact (``--config exact``) or
  one-shot (``--config one_shot``) layer-parallel mode;
- ``torch_conv``: one forward and backward of a ``pyxbraid.torch.LayerParallel``
  convolutional ResNet (blocks ``ReLU(BatchNorm(Conv3x3))``), exact mode.

``--serial`` times the serial baseline instead (one rank): sequential time
stepping (``max_levels=1``), layer-serial training, or plain torch autograd,
as thread CPU time (the time of one dedicated core).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
FIXED_ITERATIONS = 5


def _busy_jiffies() -> int:
    """Non-idle CPU ticks of the whole machine so far (/proc/stat; steal included)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return 0
    return sum(v) - v[3] - v[4]


# -- the cases ---------------------------------------------------------------------------------


class EngineCase:
    """A Solver on a native or Python app; ``run`` resets and solves (the same work every time)."""

    adjoint_factor = 1  # step calls per fine step of the sequential coarsest grid (2 with an adjoint)
    supports_step_cost = True  # can run with virtual_step_cost (the algorithm's critical path in step calls)

    def __init__(self, xb, comm, app_factory, ntime, options, state_bytes):
        self.xb, self.comm, self.ntime, self.options = xb, comm, ntime, options
        self.app_factory = app_factory
        self.state_bytes = state_bytes
        self.cfactor, self.nrelax = options["cfactor"], options["nrelax"]
        self.solvers = {}

    def _solver(self, virtual):
        key = json.dumps(virtual, sort_keys=True)
        if key not in self.solvers:
            extra = dict(virtual_time=True, **virtual) if virtual is not None else {}
            self.solvers[key] = self.xb.Solver(
                self.app_factory(), 0.0, 1.0, self.ntime, comm=self.comm, **self.options, **extra
            )
        return self.solvers[key]

    def run(self, virtual):
        s = self._solver(virtual)
        s.reset()
        self.comm.Barrier()
        r = s.solve()
        return dict(
            virtual=r.virtual_wall_time,
            wall=self.comm.allreduce(r.wall_time, op=max_op()),
            iterations=r.iterations,
            steps=r.step_calls_all_ranks,
            adjoint_steps=self.comm.allreduce(r.calls["step_adjoint"]),
            level_sizes=list(r.level_sizes),
        )

    def serial(self):
        s = self.xb.Solver(self.app_factory(), 0.0, 1.0, self.ntime, comm=self.comm, max_levels=1)
        s.solve()  # warm-up (first-touch of the storage)
        s.reset()
        t = time.thread_time()
        s.solve()
        return time.thread_time() - t


def max_op():
    from mpi4py import MPI

    return MPI.MAX


def _numpy_decay(xb):
    class Decay(xb.App):
        """u' = -u, backward Euler, idiomatic numpy (bench_engine.py's Python App)."""

        def __init__(self):
            super().__init__(shape=(1,))

        def init(self, t, u):
            u[:] = 1.0 if t == 0.0 else 0.456

        def step(self, u, ustop, fstop, status):
            if fstop is not None:
                u += fstop
            u /= 1.0 + (status.tstop - status.tstart)

    return Decay


LINEAR_CONFIGS = {
    "ml2": dict(max_levels=2, cfactor=2, nrelax=1),
    "full": dict(max_levels=30, cfactor=2, nrelax=1),
    "cf8": dict(max_levels=30, cfactor=8, nrelax=0),
}


def make_linear_ode(xb, comm, args):
    opts = dict(LINEAR_CONFIGS[args.config], abs_tol=1e-300, max_iter=FIXED_ITERATIONS, skip=False)
    return EngineCase(xb, comm, lambda: xb.apps.LinearODE(lam=-1.0), 2**args.log2n, opts, 8)


def make_python_app(xb, comm, args):
    opts = dict(LINEAR_CONFIGS[args.config], abs_tol=1e-300, max_iter=FIXED_ITERATIONS, skip=False)
    return EngineCase(xb, comm, _numpy_decay(xb), 2**args.log2n, opts, 8)


def make_heat1d(xb, comm, args):
    nspace = args.nspace
    opts = dict(max_levels=30, cfactor=2, nrelax=1, abs_tol=1e-8, skip=False)
    case = EngineCase(xb, comm, lambda: xb.apps.Heat1D(nspace=nspace, guess="zero"), 2**args.log2n, opts, 8 * nspace)
    return case


class ResNetCase:
    """One gradient of the peaks ResNet by the Trainer (a fresh batch each time: reset + solve)."""

    adjoint_factor = 2
    supports_step_cost = False  # the Trainer passes virtual_time, virtual_latency, virtual_bandwidth only

    def __init__(self, comm, args):
        import numpy as np

        from pyxbraid import nn

        self.nn, self.comm, self.args = nn, comm, args
        rng = np.random.default_rng(0)
        self.x = rng.uniform(-3, 3, (args.batch, 2))
        self.y = rng.integers(0, 5, args.batch)
        self.state_bytes = 8 * args.batch * args.width
        self.cfactor, self.nrelax = 4, 1
        self.trainers = {}

    def _layer_parallel(self):
        if self.args.config == "one_shot":
            return dict(max_levels=10, cfactor=4, max_iter=2, one_shot=True)
        return dict(max_levels=10, cfactor=4, abs_tol=1e-10, abs_tol_adjoint=1e-10)

    def _trainer(self, virtual, serial=False):
        key = "serial" if serial else json.dumps(virtual, sort_keys=True)
        if key not in self.trainers:
            a = self.args
            net = self.nn.ResNet(2, a.width, a.depth, 5, T=1.0, activation="smooth_relu", seed=1)
            if serial:
                lp = None
            else:
                lp = self._layer_parallel()
                if virtual is not None:
                    lp.update(virtual_time=True, **virtual)
            self.trainers[key] = self.nn.Trainer(net, comm=self.comm, layer_parallel=lp, progress=False)
        return self.trainers[key]

    def run(self, virtual):
        t = self._trainer(virtual)
        self.comm.Barrier()
        t.loss_and_gradient(self.x, self.y)
        r = t.last_solve
        return dict(
            virtual=r.virtual_wall_time,
            wall=self.comm.allreduce(r.wall_time, op=max_op()),
            iterations=r.iterations,
            steps=r.step_calls_all_ranks,
            adjoint_steps=self.comm.allreduce(r.calls["step_adjoint"]),
            level_sizes=list(r.level_sizes),
        )

    def serial(self):
        t = self._trainer(None, serial=True)
        t.loss_and_gradient(self.x, self.y)  # warm-up
        start = time.thread_time()
        t.loss_and_gradient(self.x, self.y)
        return time.thread_time() - start


class TorchCase:
    """One forward and backward through a LayerParallel conv ResNet (exact mode)."""

    adjoint_factor = 2
    supports_step_cost = True

    def __init__(self, comm, args):
        import torch

        torch.set_num_threads(1)
        self.torch, self.comm, self.args = torch, comm, args
        torch.manual_seed(1)
        self.u0 = torch.randn(args.batch, args.width, args.image, args.image, dtype=torch.float64)
        self.state_bytes = 8 * self.u0.numel()
        self.cfactor, self.nrelax = 4, 1
        self.layers = {}

    def block(self, k):
        torch = self.torch
        torch.manual_seed(k)
        w = self.args.width
        return torch.nn.Sequential(
            torch.nn.Conv2d(w, w, 3, padding=1), torch.nn.BatchNorm2d(w), torch.nn.ReLU()
        ).double()

    def _layer(self, virtual, mode="exact"):
        from pyxbraid.torch import LayerParallel

        key = mode + json.dumps(virtual, sort_keys=True)
        if key not in self.layers:
            extra = {} if virtual is None else dict(virtual_time=True, **virtual)
            self.layers[key] = LayerParallel(
                self.block,
                depth=self.args.depth,
                T=1.0,
                comm=self.comm,
                mode=mode,
                max_levels=3,
                cfactor=4,
                solver_options=extra or None,
            )
        return self.layers[key]

    def _pass(self, lp):
        u0 = self.u0.clone().requires_grad_(True)
        lp(u0).square().mean().backward()

    def run(self, virtual):
        lp = self._layer(virtual)
        self.comm.Barrier()
        self._pass(lp)
        f, b = lp.last_forward, lp.last_backward
        return dict(
            virtual=None if virtual is None else f.virtual_wall_time + b.virtual_wall_time,
            wall=self.comm.allreduce(f.wall_time + b.wall_time, op=max_op()),
            iterations=f.iterations + b.iterations,
            steps=f.step_calls_all_ranks + b.step_calls_all_ranks,
            adjoint_steps=self.comm.allreduce(f.calls["step_adjoint"] + b.calls["step_adjoint"]),
            level_sizes=list(f.level_sizes),
        )

    def serial(self):
        lp = self._layer(None, mode="serial")
        self._pass(lp)  # warm-up
        start = time.thread_time()
        self._pass(lp)
        return time.thread_time() - start


def build_case(args, comm):
    if args.case in ("resnet",):
        return ResNetCase(comm, args)
    if args.case == "torch_conv":
        return TorchCase(comm, args)
    import pyxbraid as xb

    return {"linear_ode": make_linear_ode, "python_app": make_python_app, "heat1d": make_heat1d}[args.case](
        xb, comm, args
    )


# -- this machine's MPI (the validation predicts it, not a cluster) ---------------------------------


def measure_network(comm, reps: int = 2000) -> dict:
    """Latency (half a small-message round trip) and bandwidth (4 MiB messages) between ranks 0 and 1."""
    import numpy as np

    if comm.Get_size() < 2:
        return {}
    rank = comm.Get_rank()

    def pingpong(n, count):
        buf = np.zeros(n)
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(count):
            if rank == 0:
                comm.Send(buf, dest=1)
                comm.Recv(buf, source=1)
            elif rank == 1:
                comm.Recv(buf, source=0)
                comm.Send(buf, dest=0)
        return (time.perf_counter() - t) / (2 * count)

    pingpong(1, 100)
    small = statistics.median(pingpong(1, reps // 10) for _ in range(10))
    big_n = 1 << 19  # 4 MiB
    big = statistics.median(pingpong(big_n, 5) for _ in range(5))
    latency = comm.bcast(small, root=0)
    bandwidth = comm.bcast(8 * big_n / max(big - small, 1e-9), root=0)
    return dict(virtual_latency=latency, virtual_bandwidth=bandwidth)


# -- the worker ---------------------------------------------------------------------------------

# A run is clean when other processes used less than this many cores meanwhile (a rank's own CPU
# share says nothing here: a rank waiting for its neighbour sleeps).
CLEAN_OTHER_CORES = 0.2


def measure(case, comm, virtual) -> dict:
    """One solve of ``case`` with its wall time and how busy the rest of the machine was meanwhile."""
    from mpi4py import MPI

    jiffies, wall0, cpu0 = _busy_jiffies(), time.perf_counter(), time.process_time()
    rec = case.run(virtual)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    ours = comm.allreduce(cpu)  # process CPU time of every rank (all threads)
    busy = (_busy_jiffies() - jiffies) / os.sysconf("SC_CLK_TCK")
    rec["virtual_on"] = virtual is not None
    # Cores used by other processes meanwhile (/proc/stat counts the whole machine), rank 0's reading.
    rec["other_cores"] = comm.bcast(max(0.0, (busy - ours) / wall) if wall > 0 else 0.0, root=0)
    rec["cpu_share"] = comm.allreduce(cpu / wall if wall > 0 else 1.0, op=MPI.MIN)
    return rec


def worker(args) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    case = build_case(args, comm)
    out = dict(
        case=args.case,
        config=args.config,
        ranks=comm.Get_size(),
        state_bytes=case.state_bytes,
        adjoint_factor=case.adjoint_factor,
        cfactor=case.cfactor,
        nrelax=case.nrelax,
    )
    if args.serial:
        times = [case.serial() for _ in range(args.repeats)]
        out["serial"] = statistics.median(times)
        out["serial_all"] = times
    else:
        if args.network == "local":
            virtual = measure_network(comm) or dict(virtual_latency=0.0, virtual_bandwidth=1e12)
        else:
            virtual = dict(virtual_latency=args.latency, virtual_bandwidth=args.bandwidth)
        out["network"] = virtual
        modes = {"on": [virtual], "off": [None], "both": [virtual, None]}[args.virtual]
        for v in modes:
            case.run(v)  # warm-up: builds the solver, touches its memory
        runs = []
        deadline = time.monotonic() + args.max_seconds
        pairs = clean_pairs = 0
        while True:
            pair = [measure(case, comm, v) for v in modes]
            runs.extend(pair)
            pairs += 1
            clean_pairs += all(r["other_cores"] < CLEAN_OTHER_CORES for r in pair)
            # One decision for all ranks (they read the clock and /proc/stat at slightly different times).
            more = pairs < args.repeats or (clean_pairs < args.clean and time.monotonic() < deadline)
            if not comm.bcast(more, root=0):
                break
            if args.clean and not all(r["other_cores"] < CLEAN_OTHER_CORES for r in pair):
                time.sleep(1.0)  # let a burst of other work pass
        out["runs"] = runs
        if args.critical_path and case.supports_step_cost:
            # Every step call costs 1, nothing else: the critical path in step calls, free of any
            # measurement (the algorithm's own parallelism).
            cp = case.run(dict(virtual_latency=0.0, virtual_bandwidth=1e300, virtual_step_cost=1.0))
            out["critical_path"] = cp["virtual"]
            out["total_calls"] = cp["steps"] + cp["adjoint_steps"]
    if rank == 0:
        Path(args.out).write_text(json.dumps(out))


# -- the driver side: launching a worker --------------------------------------------------------


def mpiexec() -> str:
    import shutil

    if os.environ.get("PYXBRAID_MPIEXEC"):
        return os.environ["PYXBRAID_MPIEXEC"]
    cand = Path(sys.executable).with_name("mpiexec")
    return str(cand) if cand.exists() else (shutil.which("mpiexec") or "mpiexec")


def clean_env() -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("PMI_", "PMIX_", "HYDI_", "OMPI_COMM_WORLD", "MPI_LOCAL")):
            del env[k]
    env.setdefault("OMP_NUM_THREADS", "1")  # one core per rank: BLAS and torch single-threaded
    return env


def launch(ranks: int, case_args: list[str], timeout: float = 3600) -> dict:
    """Run the worker on ``ranks`` ranks with ``case_args``; return rank 0's record."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [
            mpiexec(),
            "-n",
            str(ranks),
            sys.executable,
            "-m",
            "mpi4py",
            str(HERE),
            "--worker",
            "--out",
            str(out),
            *case_args,
        ]
        proc = subprocess.run(cmd, env=clean_env(), timeout=timeout, text=True, capture_output=True)
        if proc.returncode != 0 or not out.exists():
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"worker ({ranks} ranks, {' '.join(case_args)}) failed (rc={proc.returncode})")
        return json.loads(out.read_text())


def case_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--case", default="linear_ode", choices=["linear_ode", "python_app", "heat1d", "resnet", "torch_conv"]
    )
    p.add_argument("--config", default="full")
    p.add_argument("--log2n", type=int, default=20)
    p.add_argument("--nspace", type=int, default=129)
    p.add_argument("--depth", type=int, default=1024)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--image", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    return p


def main(argv=None) -> None:
    p = argparse.ArgumentParser(parents=[case_parser()], description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true")
    p.add_argument("--out", default="vt_out.json")
    p.add_argument("--serial", action="store_true")
    p.add_argument("--critical-path", action="store_true", help="also one solve with virtual_step_cost=1")
    p.add_argument("--clean", type=int, default=0, help="repeat until this many undisturbed repeats ...")
    p.add_argument("--max-seconds", type=float, default=120.0, help="... or this long")
    p.add_argument("--virtual", default="on", choices=["on", "off", "both"])
    p.add_argument("--network", default="given", choices=["given", "local"])
    p.add_argument("--latency", type=float, default=1.5e-6)
    p.add_argument("--bandwidth", type=float, default=12.0e9)
    args = p.parse_args(argv)
    if not args.worker:
        raise SystemExit("vt_cases.py is the worker of bench_virtual_time.py and scaling.py: run those")
    worker(args)


if __name__ == "__main__":
    main()
