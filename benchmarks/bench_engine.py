#!/usr/bin/env python
"""Performance benchmark of the pyxbraid engine (see benchmarks/README.md).

One command produces the whole table::

    .venv/bin/python benchmarks/bench_engine.py              # 2^17 and 2^20, 3 repeats, 1 and 2 ranks
    .venv/bin/python benchmarks/bench_engine.py --quick      # smoke test (2^14, 1 repeat), < 30 s
    .venv/bin/python benchmarks/bench_engine.py --pymgrit-python /tmp/pymgrit-venv/bin/python

Problem: u' = lam u, lam = -1, backward Euler on [0, 1] (XBraid's ex-01), a
fixed 5 MGRIT iterations (abs_tol=1e-300, max_iter=5, skip=False).

The script itself is the driver: it never initialises MPI. For every rank
count P of ``--ranks`` it launches ``mpiexec -n P python -m mpi4py
bench_engine.py --worker ...``; rank 0 of that job writes its measurements as
JSON, and the driver prints one table. pyMGRIT, if importable (by this Python
or by ``--pymgrit-python``), is timed in a separate subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()

TSTART, TSTOP, LAM = 0.0, 1.0, -1.0
ITERS = 5  # fixed number of MGRIT iterations

# name -> (label, Solver keyword arguments)
CONFIGS = {
    "ml2": ("ml=2 cf2 FCF", dict(max_levels=2, cfactor=2, nrelax=1)),
    "full": ("full ML cf2 FCF", dict(max_levels=30, cfactor=2, nrelax=1)),
    "cf8": ("full ML cf8 F", dict(max_levels=30, cfactor=8, nrelax=0)),
    "seq": ("sequential", dict(max_levels=1)),
}

APPS = {
    "native": "native LinearODE",
    "py_numpy": "Python App (numpy)",
    "py_scalar": "Python App (scalar)",
    "py_batched": "Python App (batched)",
}

# Reference figures (project issue, same kind of machine).
XBRAID_C_OVERHEAD_NS = {"ml2": 160.0, "full": 220.0, "cf8": 67.0}
XBRAID_CYTHON_NS_PER_FINE_ITER = 4300.0
PYMGRIT_ISSUE_NS_PER_FINE_ITER = 14000.0
TARGET_PYTHON_NS_PER_FINE_ITER = 1500.0
TARGET_SPEEDUP_2 = 1.8
# issue 14: the numpy App with step_batch, ns per fine step per iteration at 2^17
TARGET_BATCHED_NS = {"ml2": 1000.0, "full": 500.0, "cf8": 500.0}
TARGET_BATCHED_VS_PYMGRIT = 20.0


# ----------------------------------------------------------------------------
# Worker: runs under mpiexec, measures, rank 0 writes JSON
# ----------------------------------------------------------------------------
def _python_apps(xb):
    class Decay(xb.App):
        """Idiomatic numpy: in-place ops on the 1-element view."""

        def __init__(self, lam=LAM):
            super().__init__(shape=(1,))
            self.lam = lam

        def init(self, t, u):
            u[:] = 1.0 if t == 0.0 else 0.456

        def step(self, u, ustop, fstop, status):
            if fstop is not None:
                u += fstop
            u /= 1.0 - self.lam * (status.tstop - status.tstart)

    class DecayScalar(xb.App):
        """Same problem, scalar indexing (fewer numpy calls)."""

        def __init__(self, lam=LAM):
            super().__init__(shape=(1,))
            self.lam = lam

        def init(self, t, u):
            u[0] = 1.0 if t == 0.0 else 0.456

        def step(self, u, ustop, fstop, status):
            u[0] = (u[0] + (fstop[0] if fstop is not None else 0.0)) / (1.0 - self.lam * status.dt)

    class DecayBatched(Decay):
        """The numpy App with step_batch: the engine hands it many independent steps at once."""

        def step_batch(self, u, ustop, fstop, tstart, tstop, status):
            if fstop is not None:
                u += fstop
            u /= (1.0 - self.lam * (tstop - tstart))[:, None]

    return {"py_numpy": Decay, "py_scalar": DecayScalar, "py_batched": DecayBatched}


def _make_app(xb, name):
    if name == "native":
        return xb.apps.LinearODE(lam=LAM)
    return _python_apps(xb)[name]()


def _raw_step_ns(xb, core, app, dt, target_s=0.05):
    """Ns per bare step call of the app through the engine's app interface."""
    if not hasattr(core, "_time_raw_steps"):
        raise SystemExit(
            "bench_engine.py needs the benchmark hooks of a development build: bash scripts/dev-install.sh"
        )
    native, _ = xb.Solver._native_app(app)
    n = 1000
    t = core._time_raw_steps(native, n, dt)
    while t < 0.01 and n < 10**8:
        n *= 10
        t = core._time_raw_steps(native, n, dt)
    n = max(1000, int(n * target_s / max(t, 1e-9)))
    return core._time_raw_steps(native, n, dt) / n * 1e9


def _user_python_ns(app, dt, target_s=0.05):
    """Ns per call of the user's step() from a plain Python loop (no engine)."""
    import numpy as np

    class St:  # the attributes the example steps read
        pass

    st = St()
    st.tstart, st.tstop, st.dt = 0.0, dt, dt
    u = np.ones(1)
    step = app.step
    n = 1000
    while True:
        u[0] = 1.0
        t0 = time.perf_counter()
        for _ in range(n):
            step(u, u, None, st)
        t = time.perf_counter() - t0
        if t >= target_s or n >= 10**7:
            return t / n * 1e9
        n = max(n * 2, int(n * target_s / max(t, 1e-9) * 1.1))


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_jiffies() -> int:
    """Non-idle CPU time of the whole machine so far, in clock ticks (/proc/stat).

    Includes steal time (vCPU time taken by the hypervisor for other guests).
    """
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return 0
    return sum(v) - v[3] - v[4]  # minus idle and iowait


def _build_stamp(path: str) -> str:
    """Modification time and size of the compiled engine (identifies the build measured)."""
    try:
        st = os.stat(path)
    except OSError:
        return "?"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st.st_mtime))}, {st.st_size} bytes"


def worker(args) -> None:
    import numpy as np
    from mpi4py import MPI

    import pyxbraid as xb
    from pyxbraid import _core as core

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    py_sizes = [int(s) for s in args.python_sizes.split(",") if s] if args.python_apps else []
    repeats = args.repeats

    out = {
        "ranks": size,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
        "numpy": np.__version__,
        "pyxbraid": getattr(xb, "__version__", "?"),
        "core_build": _build_stamp(core.__file__),
        "loadavg_start": os.getloadavg(),
        "rows": [],
    }

    # warm-up: code paths, allocator
    for name in ["native"] + (["py_numpy", "py_scalar", "py_batched"] if py_sizes else []):
        app = _make_app(xb, name)
        for cfg in CONFIGS.values():
            xb.Solver(app, TSTART, TSTOP, 1024, comm=comm, abs_tol=1e-300, max_iter=2, skip=False, **cfg[1]).solve()

    for p in sizes:
        n = 2**p
        dt = (TSTOP - TSTART) / n
        for name in APPS:
            if name != "native" and p not in py_sizes:
                continue
            app = _make_app(xb, name)
            for cname, (_, kw) in CONFIGS.items():
                walls, outer, calls, inits, iters, bare, user, cpu, others, nlev = (
                    [],
                    [],
                    [],
                    [],
                    [],
                    [],
                    [],
                    [],
                    [],
                    None,
                )
                for _ in range(repeats):
                    # bare step cost, measured on all ranks at once right before the
                    # solve (same machine load); mean over ranks
                    comm.Barrier()
                    cb0, tb0 = time.process_time(), MPI.Wtime()
                    busy0 = _busy_jiffies() if rank == 0 else 0
                    bare.append(comm.allreduce(_raw_step_ns(xb, core, app, dt), op=MPI.SUM) / size)
                    if name != "native":
                        comm.Barrier()
                        user.append(comm.allreduce(_user_python_ns(app, dt), op=MPI.SUM) / size)
                    solver = xb.Solver(
                        app, TSTART, TSTOP, n, comm=comm, abs_tol=1e-300, max_iter=ITERS, skip=False, **kw
                    )
                    comm.Barrier()
                    t0 = MPI.Wtime()
                    r = solver.solve()
                    t1, c1 = MPI.Wtime(), time.process_time()
                    # CPU time / wall time of this rank over the bare-step measurement and
                    # the solve: < 1 when other processes took its core
                    cpu.append(comm.allreduce((c1 - cb0) / max(t1 - tb0, 1e-12), op=MPI.MIN))
                    # cores used by other processes meanwhile (machine busy time - ours)
                    own = comm.allreduce(c1 - cb0, op=MPI.SUM)
                    if rank == 0:
                        busy = (_busy_jiffies() - busy0) / _CLK_TCK
                        others.append(max(0.0, busy - own) / max(t1 - tb0, 1e-12))
                    walls.append(comm.allreduce(r.wall_time, op=MPI.MAX))
                    outer.append(comm.allreduce(t1 - t0, op=MPI.MAX))
                    calls.append(r.step_calls_all_ranks)
                    inits.append(comm.allreduce(r.calls["init"], op=MPI.SUM))
                    iters.append(r.iterations)
                    nlev = r.nlevels
                    del solver, r
                row = {
                    "log2n": p,
                    "app": name,
                    "config": cname,
                    "ranks": size,
                    "nlevels": nlev,
                    "walls": walls,
                    "outers": outer,
                    "calls": calls,
                    "inits": inits,
                    "bare_all": bare,
                    "user_all": user,
                    "iterations": iters,
                    "cpu": cpu,
                    "others": others,
                }
                out["rows"].append(row)
                if rank == 0 and args.verbose:
                    print(
                        f"  [P={size}] 2^{p} {name:9s} {cname:4s} walls {[round(w, 4) for w in walls]} s iters {iters}",
                        file=sys.stderr,
                        flush=True,
                    )
    out["loadavg_end"] = os.getloadavg()
    if rank == 0:
        Path(args.out).write_text(json.dumps(out))


# ----------------------------------------------------------------------------
# pyMGRIT worker: plain subprocess (its own Python), prints JSON on stdout
# ----------------------------------------------------------------------------
def pymgrit_worker(args) -> None:
    res = {"python": sys.executable}
    try:
        import numpy as np

        shim = False
        if not hasattr(np, "in1d"):  # pyMGRIT 1.0.6 calls np.in1d, removed in numpy 2.4
            np.in1d = np.isin  # noqa: NPY201  (the shim: pyMGRIT needs the old name)
            shim = True
        import pymgrit
        from pymgrit.core.mgrit import Mgrit
        from pymgrit.dahlquist.dahlquist import Dahlquist
    except Exception as exc:  # noqa: BLE001
        res["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(res))
        return
    try:
        from importlib.metadata import version

        res["version"] = version("pymgrit")
    except Exception:  # noqa: BLE001
        res["version"] = getattr(pymgrit, "__version__", "?")
    res["numpy"] = np.__version__
    res["in1d_shim"] = shim
    n = 2**args.pymgrit_log2n
    times, iters = [], []
    try:
        for _ in range(args.repeats):
            fine = Dahlquist(t_start=TSTART, t_stop=TSTOP, nt=n + 1, method="BE", constant_lambda=LAM)
            coarse = Dahlquist(t_start=TSTART, t_stop=TSTOP, nt=n // 2 + 1, method="BE", constant_lambda=LAM)
            m = Mgrit(
                problem=[fine, coarse],
                cf_iter=1,
                tol=1e-300,
                max_iter=ITERS,
                nested_iteration=False,
                logging_lvl=30,
                output_fcn=None,
            )
            info = m.solve()
            times.append(info["time_solve"])
            iters.append(int(m.solve_iter))
    except Exception as exc:  # noqa: BLE001
        res["error"] = f"run failed: {type(exc).__name__}: {exc}"
        print(json.dumps(res))
        return
    res.update(
        log2n=args.pymgrit_log2n,
        times=times,
        iterations=iters,
        ns_per_fine_iter=statistics.median(times) / n / ITERS * 1e9,
    )
    print(json.dumps(res))


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mpiexec() -> str:
    cand = Path(sys.executable).with_name("mpiexec")
    if os.environ.get("PYXBRAID_MPIEXEC"):
        return os.environ["PYXBRAID_MPIEXEC"]
    if cand.exists():
        return str(cand)
    return shutil.which("mpiexec") or "mpiexec"


def _clean_env() -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("PMI_", "PMIX_", "HYDI_", "OMPI_COMM_WORLD", "MPI_LOCAL")):
            del env[k]
    return env


def _busy_cores(interval: float = 0.5) -> float:
    """Cores busy (all processes) over ``interval`` seconds, from /proc/stat."""

    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle

    try:
        t0, i0 = sample()
        time.sleep(interval)
        t1, i1 = sample()
    except OSError:
        return 0.0
    total = max(t1 - t0, 1)
    return (os.cpu_count() or 1) * (1.0 - (i1 - i0) / total)


def wait_idle(max_wait: float) -> float:
    """Wait (up to max_wait s) until other processes use < 0.25 core; return the busy cores seen last."""
    deadline = time.monotonic() + max_wait
    busy = _busy_cores()
    while busy > 0.25 and time.monotonic() < deadline:
        time.sleep(2.0)
        busy = _busy_cores()
    return busy


def run_ranks(args, nranks: int, repeats: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = _mpiexec().split() + [
            "-n",
            str(nranks),
            sys.executable,
            "-m",
            "mpi4py",
            str(HERE),
            "--worker",
            "--out",
            str(out),
            "--sizes",
            args.sizes,
            "--python-sizes",
            args.python_sizes,
            "--repeats",
            str(repeats),
        ]
        if not args.python_apps:
            cmd.append("--no-python-apps")
        if args.verbose:
            cmd.append("--verbose")
        print(
            f"# running: {' '.join(cmd[:3])} ... --worker ({nranks} rank{'s' if nranks > 1 else ''})",
            file=sys.stderr,
            flush=True,
        )
        proc = subprocess.run(
            cmd, env=_clean_env(), timeout=args.timeout, text=True, stdout=subprocess.PIPE, stderr=None
        )
        if proc.returncode != 0 or not out.exists():
            sys.stderr.write(proc.stdout or "")
            raise SystemExit(f"worker with {nranks} ranks failed (rc={proc.returncode})")
        return json.loads(out.read_text())


def merge(results: dict, nranks: int, res: dict) -> None:
    """Append the measurements of one worker launch to ``results[nranks]``."""
    if nranks not in results:
        results[nranks] = res
        return
    old = results[nranks]
    old["loadavg_end"] = res["loadavg_end"]
    old.setdefault("core_builds", []).append(res.get("core_build", "?"))
    index = {(r["log2n"], r["app"], r["config"]): r for r in old["rows"]}
    for r in res["rows"]:
        o = index[(r["log2n"], r["app"], r["config"])]
        for k in ("walls", "outers", "calls", "inits", "bare_all", "user_all", "iterations", "cpu", "others"):
            o[k] = o[k] + r[k]


CLEAN_CPU = 0.95  # a repeat is clean when every rank had >= 95% of a core ...
CLEAN_OTHERS = 0.2  # ... and other processes used < 0.2 core meanwhile (2 vCPUs may share a physical core)


def _clean(r: dict, i: int) -> bool:
    return r["cpu"][i] >= CLEAN_CPU and r["others"][i] < CLEAN_OTHERS


def unclean_rows(res: dict) -> int:
    return sum(1 for r in res["rows"] if not any(_clean(r, i) for i in range(len(r["cpu"]))))


def finalize(results: dict) -> None:
    """Medians over the clean repeats (all repeats where none is clean)."""
    med = statistics.median
    for res in results.values():
        for r in res["rows"]:
            clean = [i for i in range(len(r["cpu"])) if _clean(r, i)]
            keep = clean or list(range(len(r["cpu"])))
            r["clean"] = len(clean)
            r["nrep"] = len(r["cpu"])

            def m(key, r=r, keep=keep):
                return med([r[key][i] for i in keep])

            r["wall"], r["outer"] = m("walls"), m("outers")
            r["step_calls_all"], r["init_calls_all"] = m("calls"), m("inits")
            r["bare_ns"] = m("bare_all")
            r["cpu_frac"] = m("cpu")
            r["others_frac"] = m("others")
            r["user_ns"] = m("user_all") if r["user_all"] else None
            r["best"] = min(r["walls"][i] for i in keep)


def run_pymgrit(args) -> dict:
    py = args.pymgrit_python or os.environ.get("PYMGRIT_PYTHON") or sys.executable
    if not Path(py).exists() and not shutil.which(py):
        return {"error": f"{py} not found"}
    cmd = [
        py,
        str(HERE),
        "--pymgrit-worker",
        "--pymgrit-log2n",
        str(args.pymgrit_log2n),
        "--repeats",
        str(args.repeats),
    ]
    try:
        proc = subprocess.run(cmd, env=_clean_env(), timeout=args.timeout, text=True, capture_output=True, check=False)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"no result (rc={proc.returncode}): {proc.stderr.strip()[-300:]}"}


def _fmt(x, spec="8.1f", dash="-"):
    return dash.rjust(len(format(0.0, spec))) if x is None else format(x, spec)


def report(args, results: dict[int, dict], pym: dict | None, elapsed: float) -> None:
    any_res = next(iter(results.values()))
    print("=" * 118)
    print(
        "pyxbraid engine benchmark: u' = -u, backward Euler on [0,1], "
        f"{ITERS} MGRIT iterations (abs_tol=1e-300, skip=False)"
    )
    print(f"machine : {platform.platform()}; {os.cpu_count()} CPUs: {_cpu_model()}")
    print(
        f"python  : {platform.python_version()} ({sys.executable}); numpy {any_res['numpy']}; "
        f"pyxbraid {any_res['pyxbraid']}"
    )
    builds = sorted(
        {res.get("core_build", "?") for res in results.values()}
        | {b for res in results.values() for b in res.get("core_builds", [])}
    )
    print(
        f"engine  : _core built {' / '.join(builds)}"
        + ("  (WARNING: the engine was rebuilt during the benchmark)" if len(builds) > 1 else "")
    )
    print(f"MPI     : {any_res['mpi_library']}")
    print(
        f"timing  : medians of {args.repeats} repeat(s) (+{getattr(args, 'extra_launches', 0)} extra) in separate "
        "launches alternating rank counts, undisturbed repeats only (see ok);"
    )
    print("          wall = max over ranks of SolveResult.wall_time")
    print("=" * 118)
    hdr = (
        f"{'N':>4} {'app':<20} {'config':<16} {'P':>2} {'it':>3} {'lv':>3} "
        f"{'ns/fine/it':>10} {'calls/f/it':>10} {'ns/call':>8} {'init/f':>6} {'bare':>7} {'user':>7} "
        f"{'cb':>6} {'ENG.OVH':>8} {'XBr.ovh':>7} {'cpu%':>4} {'oth':>4} {'ok':>3}"
    )
    print(hdr)
    print("-" * len(hdr))

    table = {}  # (p, app, cfg, P) -> dict
    ranks = sorted(results)
    sizes = sorted({r["log2n"] for res in results.values() for r in res["rows"]})
    for p in sizes:
        for app in APPS:
            for cfg in CONFIGS:
                for P in ranks:
                    res = results[P]
                    row = next(
                        (r for r in res["rows"] if r["log2n"] == p and r["app"] == app and r["config"] == cfg), None
                    )
                    if row is None:
                        continue
                    n = 2**p
                    its = ITERS if cfg != "seq" else 1
                    bad = cfg != "seq" and any(i != ITERS for i in row["iterations"])
                    bare = row["bare_ns"]
                    user = row["user_ns"] if app != "native" else bare
                    ns_fine = row["wall"] / n / its * 1e9
                    calls_f = row["step_calls_all"] / n / its
                    ns_call = P * row["wall"] / row["step_calls_all"] * 1e9
                    ovh = ns_call - bare
                    cb = (bare - user) if app != "native" else None
                    init_f = row["init_calls_all"] / n / its
                    d = dict(
                        ns_fine=ns_fine,
                        calls_f=calls_f,
                        ns_call=ns_call,
                        bare=bare,
                        user=user,
                        ovh=ovh,
                        cb=cb,
                        wall=row["wall"],
                        init_f=init_f,
                        best=row["best"],
                    )
                    # sequential marching on P > 1 ranks: P - 1 ranks idle at any time
                    ovh_show = None if (cfg == "seq" and P > 1) else ovh
                    table[(p, app, cfg, P)] = d
                    itstr = "seq" if cfg == "seq" else (f"{row['iterations'][0]}" + ("!" if bad else ""))
                    ref = XBRAID_C_OVERHEAD_NS.get(cfg) if app == "native" else None
                    print(
                        f"2^{p:<2} {APPS[app]:<20} {CONFIGS[cfg][0]:<16} {P:>2} {itstr:>3} "
                        f"{row['nlevels']:>3} {ns_fine:>10.1f} {calls_f:>10.3f} {ns_call:>8.1f} "
                        f"{init_f:>6.3f} {bare:>7.1f} {user:>7.1f} {_fmt(cb, '6.1f')} "
                        f"{_fmt(ovh_show, '8.1f')} {_fmt(ref, '7.0f')} "
                        f"{min(100.0, 100 * row['cpu_frac']):4.0f} {row['others_frac']:4.2f} "
                        f"{row['clean']}/{row['nrep']}"
                    )
            if any(k[0] == p and k[1] == app for k in table):
                print()
    print("Columns (all ns; medians): ns/fine/it = wall / N / iterations (sequential: wall / N), wall = max over")
    print("  ranks; calls/f/it = step calls (all ranks) / N / iterations; ns/call = P * wall / step calls (rank-time")
    print("  per step call); init/f = init callbacks / N / iterations; bare = _core._time_raw_steps per call (the")
    print("  app's step alone through the engine's app interface: C++ step, or Python callback incl. crossing),")
    print("  measured right before each solve, mean over ranks; user = the user's step() called from a plain")
    print("  Python loop (native: = bare); cb = bare - user = engine's Python-callback crossing; ENG.OVH = ns/call")
    print("  - bare = engine overhead per step call (includes init callbacks, norms, communication, waiting; not")
    print("  shown for sequential marching on P > 1 ranks, where P-1 ranks idle); XBr.ovh = XBraid C engine")
    print("  overhead per step call (reference, project issue); cpu% = CPU time / wall time of the solve, minimum")
    print("  over ranks, during the bare-step measurement and the solve (below 95: another process took CPU from")
    print("  a rank); oth = cores used by other processes or stolen by the hypervisor meanwhile (/proc/stat busy")
    print("  + steal time - ours; the 2 vCPUs may share a physical core);")
    print("  ok = clean repeats (cpu% >= 95 and oth < 0.2) / repeats: medians are")
    print("  over the clean repeats only (over all repeats, and then possibly disturbed, where ok is 0/n).")

    # --- summary -----------------------------------------------------------
    print()
    print("References (project issue, same kind of machine): XBraid C engine overhead/step call ~160 ns ml=2,")
    print(
        f"  ~220 ns full ML, ~67 ns cf8 F-relax; XBraid via Cython ~{XBRAID_CYTHON_NS_PER_FINE_ITER / 1000:.1f} us"
        f" per fine step per iteration; pyMGRIT ~{PYMGRIT_ISSUE_NS_PER_FINE_ITER / 1000:.0f} us."
    )
    if pym is None:
        print("pyMGRIT : not run (--no-pymgrit)")
    elif "error" in pym:
        msg = "pyMGRIT not installed" if "ModuleNotFoundError" in pym["error"] else "pyMGRIT failed"
        print(f"pyMGRIT : {msg} ({pym['error']}; python {pym['python']})")
    else:
        print(
            f"pyMGRIT : {pym['ns_per_fine_iter']:.0f} ns per fine step per iteration measured here "
            f"(pymgrit {pym['version']}, Dahlquist BE, 2 levels cf2 FCF, N=2^{pym['log2n']}, 1 rank, "
            f"iterations {pym['iterations'][0]}"
            f"{', np.in1d shimmed to np.isin for numpy ' + pym['numpy'] if pym.get('in1d_shim') else ''})"
        )

    pmax = max(sizes)
    print()
    print(f"Targets (N=2^{pmax} where available):")
    for cfg in ("ml2", "full", "cf8"):
        d = table.get((pmax, "native", cfg, 1))
        if d:
            ref = XBRAID_C_OVERHEAD_NS[cfg]
            ok = d["ovh"] <= ref / 2
            print(
                f"  native engine overhead {CONFIGS[cfg][0]:<16}: {d['ovh']:6.1f} ns/call vs XBraid {ref:.0f} "
                f"(target <= {ref / 2:.0f}): {'MET' if ok else 'NOT MET'}"
            )
    for app in ("py_numpy", "py_scalar"):
        ps = [k[0] for k in table if k[1] == app]
        if not ps:
            continue
        pp = max(ps)
        for cfg in ("ml2", "full", "cf8"):
            d = table.get((pp, app, cfg, 1))
            if d:
                ok = d["ns_fine"] < TARGET_PYTHON_NS_PER_FINE_ITER
                user_part = d["calls_f"] * d["user"]
                eng_part = d["ns_fine"] - user_part
                print(
                    f"  {APPS[app]:<20} {CONFIGS[cfg][0]:<16} 2^{pp}: {d['ns_fine']:7.0f} ns/fine/it "
                    f"(target < 1500: {'MET' if ok else 'NOT MET'}) = user Python {user_part:6.0f} "
                    f"({d['calls_f']:.2f} calls x {d['user']:.0f} ns) + engine {eng_part:5.0f} "
                    f"({d['calls_f']:.2f} x {d['cb']:.0f} cb + {d['ovh']:.0f} ovh)"
                )
    pb = [k[0] for k in table if k[1] == "py_batched"]
    for cfg in ("ml2", "full", "cf8") if pb else ():
        d = table.get((max(pb), "py_batched", cfg, 1))
        one = table.get((max(pb), "py_numpy", cfg, 1))
        if d:
            tgt = TARGET_BATCHED_NS[cfg]
            line = (
                f"  {APPS['py_batched']:<20} {CONFIGS[cfg][0]:<16} 2^{max(pb)}: {d['ns_fine']:7.0f} ns/fine/it "
                f"(target <= {tgt:.0f}: {'MET' if d['ns_fine'] <= tgt else 'NOT MET'})"
            )
            if one:
                line += f"; {one['ns_fine'] / d['ns_fine']:5.1f}x the one-by-one numpy App"
            if cfg == "ml2" and pym is not None and "ns_per_fine_iter" in pym:
                ratio = pym["ns_per_fine_iter"] / d["ns_fine"]
                ok = ratio >= TARGET_BATCHED_VS_PYMGRIT
                verdict = "MET" if ok else "NOT MET"
                line += f"; {ratio:5.1f}x pyMGRIT (target >= {TARGET_BATCHED_VS_PYMGRIT:.0f}x: {verdict})"
            print(line)
    if 1 in ranks and len(ranks) > 1:
        for P in ranks[1:]:
            for cfg in CONFIGS:
                a, b = table.get((pmax, "native", cfg, 1)), table.get((pmax, "native", cfg, P))
                if a and b:
                    s = a["wall"] / b["wall"]
                    tgt = (
                        f" (target >= {TARGET_SPEEDUP_2}: {'MET' if s >= TARGET_SPEEDUP_2 else 'NOT MET'})"
                        if P == 2 and cfg != "seq"
                        else ""
                    )
                    print(
                        f"  speedup {P} vs 1 rank, native, {CONFIGS[cfg][0]:<16} 2^{pmax}: {s:5.2f}x{tgt:<24}"
                        f" best-of-repeats ratio {a['best'] / b['best']:5.2f}x"
                    )

    # --- simple speedup model ----------------------------------------------------
    print()
    print("Break-even model (1-rank numbers): serial time = N*c (c = ns/fine step of sequential marching, same")
    print("  app); MGRIT on P ranks ~ k*(W*N/P + S*N) + communication, W = ns/fine/it above, k = iterations,")
    print("  S = sequential part per fine step and iteration. Full multilevel: S ~ 0 (coarsest grid tiny), so")
    print("  break-even P ~ k*W/c; for an expensive step (overhead negligible) W/c -> calls/f/it, P ~ k*calls.")
    print("  ml=2: the coarse grid (N/2 points) is marched sequentially in every iteration, S ~ c/2, so")
    print(f"  k*N/2 = {ITERS / 2:.1f}*N steps stay on the critical path: no break-even at any P with k={ITERS}.")
    for app in APPS:
        ps = [k[0] for k in table if k[1] == app and k[3] == 1]
        if not ps:
            continue
        pp = max(ps)
        seq = table.get((pp, app, "seq", 1))
        for cfg in ("full", "cf8"):
            d = table.get((pp, app, cfg, 1))
            if d and seq:
                cheap = ITERS * d["ns_fine"] / seq["ns_fine"]
                costly = ITERS * d["calls_f"]
                extra = ""
                if app == "native":
                    extra = f"; vs a bare C++ loop (c = {d['bare']:.1f} ns): P ~ {ITERS * d['ns_fine'] / d['bare']:.0f}"
                print(
                    f"  {APPS[app]:<20} {CONFIGS[cfg][0]:<16} 2^{pp}: k*W/c = {ITERS}*{d['ns_fine']:.0f}/"
                    f"{seq['ns_fine']:.0f} = {cheap:5.1f} ranks (expensive step: {costly:4.1f}){extra}"
                )
    loads = ", ".join(f"P={P}: {results[P]['loadavg_start'][0]:.2f}->{results[P]['loadavg_end'][0]:.2f}" for P in ranks)
    print()
    busy = getattr(args, "busy_starts", [])
    busy_txt = f"; other processes' busy cores at each launch: {', '.join(f'{b:.2f}' for b in busy)}" if busy else ""
    print(f"loadavg (1 min) during the runs: {loads}{busy_txt}; total benchmark time {elapsed:.0f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="comma-separated log2(ntime) (default 17,20)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per measurement, median taken (default 3)")
    ap.add_argument("--ranks", default="1,2", help="comma-separated MPI rank counts (default 1,2)")
    ap.add_argument(
        "--python-apps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the two Python Apps (default on)",
    )
    ap.add_argument(
        "--python-sizes",
        default=None,
        help="log2(ntime) for the Python Apps (default 17; add 20 for 2^20, ~5 s per iteration)",
    )
    ap.add_argument("--quick", action="store_true", help="smoke test: 2^14, 1 repeat")
    ap.add_argument(
        "--pymgrit", action=argparse.BooleanOptionalAction, default=True, help="time pyMGRIT if importable (default on)"
    )
    ap.add_argument(
        "--pymgrit-python", default=None, help="Python interpreter with pymgrit installed (default: this one)"
    )
    ap.add_argument(
        "--pymgrit-log2n",
        type=int,
        default=None,
        help="log2(ntime) for pyMGRIT (default 14; its setup is quadratic in N)",
    )
    ap.add_argument("--json", default=None, help="also write all raw measurements to this file")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per subprocess")
    ap.add_argument(
        "--extra",
        type=int,
        default=None,
        help="up to this many extra launches per rank count while some row has no clean repeat (default 3; --quick: 0)",
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=None,
        help="before each launch wait up to this many seconds for other processes to use < 0.25 core "
        "(default 60; --quick: 0)",
    )
    ap.add_argument("--verbose", action="store_true", help="progress lines on stderr")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pymgrit-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.quick:
        args.sizes = args.sizes or "14"
        args.python_sizes = args.python_sizes or "14"
        args.repeats = args.repeats or 1
        args.pymgrit_log2n = args.pymgrit_log2n or 12
        args.wait_idle = 0.0 if args.wait_idle is None else args.wait_idle
        args.extra = 0 if args.extra is None else args.extra
    args.sizes = args.sizes or "17,20"
    args.python_sizes = args.python_sizes or "17"
    args.repeats = args.repeats or 3
    args.pymgrit_log2n = args.pymgrit_log2n or 14
    args.wait_idle = 60.0 if args.wait_idle is None else args.wait_idle
    args.extra = 3 if args.extra is None else args.extra

    if args.worker:
        worker(args)
        return
    if args.pymgrit_worker:
        pymgrit_worker(args)
        return

    if any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")):
        raise SystemExit("bench_engine.py: run it without mpiexec; it launches its own MPI jobs (see --ranks)")
    t0 = time.perf_counter()
    ranks = sorted({int(r) for r in args.ranks.split(",") if r})
    # Repeats are separate launches, alternating between rank counts, so that a
    # burst of load from other processes hits one repeat rather than all of them.
    results: dict[int, dict] = {}
    busy_starts = []
    for _ in range(args.repeats):
        for P in ranks:
            if args.wait_idle > 0:
                busy_starts.append(wait_idle(args.wait_idle))
            merge(results, P, run_ranks(args, P, repeats=1))
    # extra launches for rank counts with rows that had no clean repeat
    args.extra_launches = 0
    for P in ranks:
        for _ in range(args.extra):
            if unclean_rows(results[P]) == 0:
                break
            if args.wait_idle > 0:
                busy_starts.append(wait_idle(args.wait_idle))
            merge(results, P, run_ranks(args, P, repeats=1))
            args.extra_launches += 1
    args.busy_starts = busy_starts
    finalize(results)
    pym = run_pymgrit(args) if args.pymgrit else None
    report(args, results, pym, time.perf_counter() - t0)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "pymgrit": pym}, indent=1))


if __name__ == "__main__":
    main()
