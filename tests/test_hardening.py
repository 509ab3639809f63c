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
    assert _core.PHASES == ("init", "fc_relax", "f_restrict", "residual", "f_interp", "access", "sequential",
                            "state_query", "objective")
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
    with pytest.raises(MemoryError, match=r"GiB, more than this machine's .* GiB of memory.*shape \(1073741824,\)"):
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
    with pytest.raises(ValueError, match=r"tstart=1, tstop=1.0000000000000002 and ntime=10 give a time grid that "
                                         r"is not strictly increasing \(t\[1\] = 1 <= t\[0\] = 1\)"):
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
    with pytest.raises(ValueError, match=r"objective window \[tstart_objective, tstop_objective\] = \[5, 1\] "
                                         r"contains no time point"):
        xb.Solver(app, 0.0, 1.0, 8, comm=COMM, adjoint=True, tstart_objective=5.0)
    with pytest.raises(ValueError, match=r"= \[0.3, 0.36\] contains no time point of the grid \(9 points in \[0, 1\]\)"):
        xb.Solver(app, 0.0, 1.0, 8, comm=COMM, objective_only=True, tstart_objective=0.3, tstop_objective=0.36)
    # One point in the window is enough (closed window).
    s = xb.Solver(app, 0.0, 1.0, 8, comm=COMM, objective_only=True, tstart_objective=0.375, tstop_objective=0.375,
                  max_levels=1)
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
