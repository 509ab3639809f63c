"""Defects found by fault injection, fuzzing and a new user's trial, each pinned by a test.

Memory safety and resources (phase table, size arithmetic, garbage collection
of solver cycles), silent acceptance (time grids, objective windows, zero
residuals, problems that differ between ranks).
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import _core

COMM = MPI.COMM_SELF


class PhaseRecorder(xb.App):
    """u' = -u with an adjoint (objective sum u^2 at every point); records status.phase per callback."""

    def __init__(self):
        super().__init__(shape=(2,))
        self.seen: dict[str, set] = {}
        self.grad = 0.0

    def _saw(self, callback, status):
        self.seen.setdefault(callback, set()).add(status.phase)

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.5

    def step(self, u, ustop, fstop, status):
        self._saw("step", status)
        u /= 1.0 + status.dt

    def access(self, u, status):
        self._saw("access", status)

    def objective(self, u, status):
        self._saw("objective", status)
        return float(u @ u)

    def objective_adjoint(self, u, u_bar, f_bar, status):
        self._saw("objective_adjoint", status)
        u_bar[:] = 2.0 * u * f_bar

    def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
        self._saw("step_adjoint", status)
        u_bar /= 1.0 + status.dt

    def init_adjoint(self, t, u_bar, status):
        self._saw("init_adjoint", status)

    def reset_gradient(self):
        self.grad = 0.0


class ResidualRecorder(PhaseRecorder):
    def residual(self, ustop, r, status):
        self._saw("residual", status)
        r[:] = (1.0 + status.dt) * ustop - r


def test_status_phase_is_a_phase_name_in_every_callback():
    # The phase-name table of the bindings once had one entry fewer than the
    # Phase enum: status.phase in objective callbacks read past its end.
    assert _core.PHASES == (
        "init",
        "fc_relax",
        "f_restrict",
        "residual",
        "f_interp",
        "access",
        "sequential",
        "state_query",
        "objective",
        "full_residual",
        "after_init",
        "top_cycle",
        "refine",
        "after_refine",
    )
    app = PhaseRecorder()
    xb.Solver(app, 0.0, 1.0, 16, comm=COMM, max_levels=3, adjoint=True, max_iter=3).solve()
    seq = PhaseRecorder()
    xb.Solver(seq, 0.0, 1.0, 16, comm=COMM, max_levels=1, adjoint=True).solve()
    res = ResidualRecorder()
    xb.Solver(res, 0.0, 1.0, 16, comm=COMM, max_levels=3, seq_soln=True, access_level=2, max_iter=2).solve()
    assert app.seen["objective"] == app.seen["objective_adjoint"] == app.seen["init_adjoint"] == {"objective"}
    # Coarse residuals are steps (no user residual); the final sweep's steps
    # are not recorded: no step_adjoint in phase access.
    assert app.seen["step"] == {"fc_relax", "f_restrict", "residual", "f_interp", "access"}
    assert app.seen["step_adjoint"] == {"fc_relax", "f_restrict", "residual", "f_interp"}
    assert app.seen["access"] == {"access"}
    assert seq.seen["step"] == seq.seen["step_adjoint"] == {"access"}
    assert seq.seen["init_adjoint"] == {"objective"}
    assert res.seen["residual"] == {"f_restrict", "residual"}
    assert res.seen["step"] == {"sequential", "fc_relax", "f_restrict", "f_interp", "access"}
    for rec in (app, seq, res):
        for phases in rec.seen.values():
            assert phases <= set(_core.PHASES)


class Big(xb.App):
    def __init__(self, shape):
        super().__init__(shape=shape)

    def init(self, t, u):
        raise AssertionError("no callback may run: the size check comes first")

    def step(self, u, ustop, fstop, status):
        raise AssertionError("unreachable")


def test_storage_size_that_wraps_around_is_a_memory_error_naming_shape_and_ntime():
    # 2**24 points x 2**40 values wrapped the arena size to 0 and crashed.
    with pytest.raises(MemoryError, match=r"overflows 64-bit arithmetic.*shape \(1099511627776,\), ntime 16777209"):
        xb.Solver(Big((2**40,)), 0.0, 1.0, 2**24 - 7, comm=COMM, storage=0, max_levels=1)


def test_storage_larger_than_the_machine_is_a_memory_error():
    with pytest.raises(
        MemoryError, match=r"GiB, more than the .* GiB of memory available on this machine.*shape \(1073741824,\)"
    ):
        xb.Solver(Big((2**30,)), 0.0, 1.0, 64, comm=COMM, max_levels=2)


def test_memory_grows_with_iterations_done_not_with_max_iter():
    # The residual histories were sized by max_iter: 16 B x 2**26 = 1 GiB for a 4-iteration solve.
    code = textwrap.dedent("""
        import resource
        from mpi4py import MPI
        import pyxbraid as xb
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        s = xb.Solver(xb.apps.LinearODE(objective="mean_square"), 0.0, 5.0, 10, comm=MPI.COMM_SELF,
                      max_levels=2, abs_tol=1e-6, abs_tol_adjoint=1e-6, adjoint=True, max_iter=2**26)
        r = s.solve()
        print(r.iterations, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    iterations, growth_kib = map(int, out.stdout.split())
    assert iterations < 20
    assert growth_kib < 50_000


class Keeper(xb.App):
    """Keeps the arrays it is given (against the advice) and may refer to its solver."""

    def __init__(self):
        super().__init__(shape=(3,))
        self.kept = []

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.5

    def step(self, u, ustop, fstop, status):
        u /= 1.0 + status.dt
        if status.done and status.tindex == 0:
            self.kept.append(u)


@pytest.mark.parametrize("how", ["kept view", "app.solver", "both", "progress printer"])
def test_solver_cycles_are_collected(how, capsys):
    gc.collect()
    app = Keeper()
    solver = xb.Solver(app, 0.0, 1.0, 8, comm=COMM, max_levels=2, print_level=1 if how == "progress printer" else 0)
    if how in ("app.solver", "both"):
        app.solver = solver
    solver.solve()
    if how in ("kept view", "both"):
        assert app.kept
        kept = app.kept[0]
        value = kept.copy()
    refs = [weakref.ref(solver), weakref.ref(solver._engine), weakref.ref(app)]
    del solver, app
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    if how in ("kept view", "both"):
        # The kept array still points to live memory (the engine's storage outlives the engine).
        np.testing.assert_array_equal(kept, value)


def test_repeated_cyclic_solvers_do_not_accumulate():
    gc.collect()
    live = []
    for _ in range(50):
        app = Keeper()
        solver = xb.Solver(app, 0.0, 1.0, 8, comm=COMM, max_levels=2)
        app.solver = solver
        solver.solve()
        live.append(weakref.ref(solver))
        del app, solver
    gc.collect()
    assert sum(r() is not None for r in live) == 0


# -- time grids and objective windows ---------------------------------------------------


def test_uniform_grid_too_short_for_ntime_steps():
    # 1.0 + (i/10) * 2.3e-16 rounds to 1.0 for the first points: dt = 0 steps and 100 useless iterations.
    with pytest.raises(
        ValueError,
        match=r"tstart=1, tstop=1.0000000000000002 and ntime=10 give a time grid that "
        r"is not strictly increasing \(t\[1\] = 1 <= t\[0\] = 1\)",
    ):
        xb.Solver(xb.apps.LinearODE(), 1.0, 1.0 + 2.3e-16, 10, comm=COMM)


def test_uniform_grid_whose_length_overflows():
    with pytest.raises(ValueError, match=r"tstop - tstart must be finite, got tstart=-1e\+308, tstop=1e\+308"):
        xb.Solver(xb.apps.LinearODE(), -1e308, 1e308, 10, comm=COMM)


@pytest.mark.parametrize("times", [np.array([0.0, 1.0, 2.0]) + 0j, [0.0, 1j, 2.0], [False, True]])
def test_non_real_time_grids_are_refused(times):
    with pytest.raises(TypeError, match="times must be a sequence of real numbers"):
        xb.Solver(xb.apps.LinearODE(), comm=COMM, times=times)


@pytest.mark.parametrize("name", ["tstart", "tstop"])
def test_complex_interval_ends_are_refused(name):
    kw = dict(tstart=0.0, tstop=1.0, ntime=4)
    kw[name] = 1 + 0j
    with pytest.raises(TypeError, match=f"{name} must be a real number, got"):
        xb.Solver(xb.apps.LinearODE(), comm=COMM, **kw)


def test_objective_window_without_time_points():
    app = xb.apps.LinearODE(objective="mean_square")
    with pytest.raises(
        ValueError,
        match=r"objective window \[tstart_objective, tstop_objective\] = \[5, 1\] "
        r"contains no time point",
    ):
        xb.Solver(app, 0.0, 1.0, 8, comm=COMM, adjoint=True, tstart_objective=5.0)
    with pytest.raises(
        ValueError, match=r"= \[0.3, 0.36\] contains no time point of the grid \(9 points in \[0, 1\]\)"
    ):
        xb.Solver(app, 0.0, 1.0, 8, comm=COMM, objective_only=True, tstart_objective=0.3, tstop_objective=0.36)
    # One point in the window is enough (closed window).
    s = xb.Solver(
        app, 0.0, 1.0, 8, comm=COMM, objective_only=True, tstart_objective=0.375, tstop_objective=0.375, max_levels=1
    )
    assert s.solve().objective > 0.0


def test_objective_window_needs_an_objective():
    with pytest.raises(ValueError, match="tstart_objective / tstop_objective need adjoint=True or objective_only=True"):
        xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, comm=COMM, tstop_objective=0.5)


def test_exactly_zero_residual_is_converged():
    # ||r_0|| = 0 made the default relative tolerance 0: 100 iterations, converged=False.
    r = xb.Solver(xb.apps.LinearODE(), 0, 1, 3, comm=COMM, max_levels=30, min_coarse=1).solve()
    assert r.converged
    assert r.residual_norms[-1] == 0.0
    assert r.iterations == 2
    # seq_soln starts from the exact solution: one iteration, residual 0.
    r = xb.Solver(xb.apps.LinearODE(), 0, 1, 16, comm=COMM, max_levels=3, seq_soln=True).solve()
    assert (r.iterations, r.converged, r.residual_norms.tolist()) == (1, True, [0.0])


# -- problems that differ between ranks ------------------------------------------------------


def test_native_app_parameters_that_differ_between_ranks_raise_on_every_rank(mpirun):
    code = """
        import json
        from mpi4py import MPI
        import pyxbraid as xb
        comm = MPI.COMM_WORLD
        cases = {
            "lam": lambda r: xb.apps.LinearODE(lam=-1.0 - r),
            "scheme": lambda r: xb.apps.LinearODE(scheme="forward_euler" if r else "backward_euler"),
            "guess": lambda r: xb.apps.Heat1D(nspace=9, guess="zero" if r else "random"),
            "cubic p": lambda r: xb.apps.Cubic(p=0.1 * r),
            "same": lambda r: xb.apps.LinearODE(lam=-1.0),
        }
        out = {}
        for name, make in cases.items():
            try:
                xb.Solver(make(comm.rank), 0.0, 1.0, 8, comm=comm).solve()
                out[name] = "ok"
            except ValueError as exc:
                out[name] = f"{type(exc).__name__}: {exc}"
        report(out)
    """
    runs = mpirun.json(code, 2)
    for out in runs:
        assert out.pop("same") == "ok"
        for name, text in out.items():
            app = {"lam": "LinearODE", "scheme": "LinearODE", "guess": "Heat1D", "cubic p": "Cubic"}[name]
            assert text.startswith(f"ValueError: {app}'s parameters (fingerprint) differs between ranks"), text


# -- communicators, waits, interrupts, failure notices -------------------------------------

FAILING_APP = """
import time
from mpi4py import MPI
import pyxbraid as xb

class Decay(xb.App):
    '''u' = -u; optionally fails (or sleeps) in one phase on one rank.'''
    def __init__(self, fail_rank=-1, fail_phase=None, sleep=0.0, shape=(2,)):
        super().__init__(shape=shape)
        self.fail_rank, self.fail_phase, self.sleep = fail_rank, fail_phase, sleep
        self.rank = MPI.COMM_WORLD.Get_rank()
    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.5
    def step(self, u, ustop, fstop, status):
        if self.rank == self.fail_rank and status.phase == self.fail_phase:
            if not self.sleep:
                raise ValueError(f"deliberate failure in {status.phase}")
            time.sleep(self.sleep)          # once
            self.fail_phase = None
        u /= 1.0 + status.dt
"""


def test_failed_solvers_free_their_communicators(mpirun):
    # Each failed 2-rank solve leaked two MPI communicators; after ~1000
    # failures MPI_Comm_dup failed unnoticed and every Solver ran on 1 rank.
    code = (
        FAILING_APP
        + """
from pyxbraid import _core
comm = MPI.COMM_WORLD
sizes, errors = set(), set()
for k in range(1500):
    s = xb.Solver(Decay(fail_rank=k % 2, fail_phase="fc_relax"), 0.0, 1.0, 8, comm=comm, max_levels=2)
    sizes.add(s._engine.nranks)
    try:
        s.solve()
    except Exception as exc:
        errors.add(type(exc).__name__)
    del s
ok = xb.Solver(Decay(), 0.0, 1.0, 8, comm=comm, max_levels=2)
report(dict(sizes=sorted(sizes), errors=sorted(errors), pending=_core._pending_failed_communicators(),
            after=ok._engine.nranks, iterations=ok.solve().iterations))
"""
    )
    for out in mpirun.json(code, 2, timeout=300):
        assert out["sizes"] == [2] and out["after"] == 2
        assert out["errors"] == ["RemoteRankError", "ValueError"]
        assert out["pending"] <= 2  # drained and freed, the last ones possibly still in progress
        assert out["iterations"] > 0


def test_a_solver_that_cannot_get_a_communicator_raises_instead_of_running_on_one_rank(mpirun):
    code = """
from mpi4py import MPI
import pyxbraid as xb
comm = MPI.COMM_WORLD
held = []
try:
    while len(held) < 100000:
        held.append(comm.Dup())
except MPI.Exception:
    pass
held.pop().Free()                   # one context left: the solver needs two
try:
    xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, comm=comm)
    outcome = "built"
except xb.MPIError as exc:
    outcome = f"MPIError: {exc}"
for c in held:
    c.Free()
after = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, comm=comm)
report(dict(outcome=outcome, held=len(held), after=after._engine.nranks))
"""
    for out in mpirun.json(code, 2, timeout=120):
        assert out["held"] > 100
        assert out["outcome"].startswith("MPIError: MPI_Comm_dup failed: "), out["outcome"]
        assert out["after"] == 2


def test_waiting_for_a_slow_rank_costs_little_cpu(mpirun):
    # Rank 1 sleeps 2 s in a step; rank 0 waits for it. Busy-waiting used 100% of a core.
    code = (
        FAILING_APP
        + """
import time
comm = MPI.COMM_WORLD
s = xb.Solver(Decay(fail_rank=1, fail_phase="f_interp", sleep=2.0), 0.0, 1.0, 16, comm=comm, max_levels=2,
              max_iter=3)
cpu0, wall0 = time.process_time(), time.perf_counter()
s.solve()
report(dict(cpu=time.process_time() - cpu0, wall=time.perf_counter() - wall0))
"""
    )
    waiting = mpirun.json(code, 2)[0]
    assert waiting["wall"] >= 2.0
    assert waiting["cpu"] < 0.2 * waiting["wall"], waiting


def test_failure_notice_belongs_to_the_operation_it_happened_in(mpirun):
    # Rank 2 fails in the state query after the solve; rank 0's solve (which
    # succeeded everywhere) once raised that failure.
    code = (
        FAILING_APP
        + """
comm = MPI.COMM_WORLD
outcomes = []
for trial in range(15):
    s = xb.Solver(Decay(fail_rank=2, fail_phase="state_query"), 0.0, 1.0, 24, comm=comm, max_levels=2,
                  access_level=0)
    try:
        s.solve()
        solved = "ok"
    except Exception as exc:
        solved = type(exc).__name__
    try:
        s.state_at(24)
        queried = "ok"
    except Exception as exc:
        queried = type(exc).__name__
    outcomes.append([solved, queried])
report(outcomes)
"""
    )
    runs = mpirun.json(code, 3, timeout=180)
    for rank, outcomes in enumerate(runs):
        expected = "ValueError" if rank == 2 else "RemoteRankError"
        assert outcomes == [["ok", expected]] * 15, (rank, outcomes)


INTERRUPTIBLE = """
import os, signal, sys
# Ctrl-C raises KeyboardInterrupt, as in a terminal (a job started in the background inherits SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
from mpi4py import MPI
import pyxbraid as xb
comm = MPI.COMM_WORLD
# A native solve that would run for minutes: 10**6 MGRIT iterations (no residual, no early stop).
s = xb.Solver(xb.apps.LinearODE(), 0.0, 5.0, 2**12, comm=comm, max_levels=2, residual_computation=False,
              max_iter=10**6)
open(os.path.join(sys.argv[1], str(comm.rank)), "w").write(str(os.getpid()))
"""


def _send_sigint_when_ready(piddir, rank, delay=1.0):
    import os
    import signal
    import threading
    import time

    def run():
        path = piddir / str(rank)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if path.is_file() and path.read_text():
                time.sleep(delay)
                try:
                    os.kill(int(path.read_text()), signal.SIGINT)
                except ProcessLookupError:
                    pass  # it ended by itself: the test's assertions say so
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_interrupts_a_native_solve(tmp_path):
    # The C++ loop never looked at signals: Ctrl-C waited for the solve to end.
    code = (
        INTERRUPTIBLE
        + """
try:
    s.solve()
    print("finished")
except KeyboardInterrupt:
    print("interrupted")
"""
    )
    script = tmp_path / "interrupt.py"
    script.write_text(code)
    thread = _send_sigint_when_ready(tmp_path, 0)
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    thread.join()
    assert out.stdout.strip() == "interrupted", out.stdout + out.stderr


def test_ctrl_c_on_one_rank_stops_every_rank(mpirun, tmp_path):
    code = (
        INTERRUPTIBLE
        + """
try:
    s.solve()
    outcome = "finished"
except BaseException as exc:
    outcome = f"{type(exc).__name__}: {exc}"
report(outcome)
"""
    )
    thread = _send_sigint_when_ready(tmp_path, 1)
    outcomes = mpirun.json(code, 2, timeout=120, args=(str(tmp_path),))
    thread.join()
    assert outcomes[1].startswith("KeyboardInterrupt")
    assert outcomes[0].startswith("RemoteRankError: rank 1: solve() raised KeyboardInterrupt"), outcomes[0]
