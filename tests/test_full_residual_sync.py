"""The full residual norm (XBraid's braid_SetFullRNormRes) and the sync callback (braid_SetSync).

XBraid parity is in test_advanced_reference.py; here: what the features promise
on their own (the norm's value, the residual mode left off, the stopping test,
grouped steps, the calls of sync and their status, errors).
"""

import math

import numpy as np
import pytest
from apps_python import BatchedDecay, BatchedDecayWithResidual, Decay, DecayWithResidual
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

import pyxbraid as xb

COMM = MPI.COMM_SELF


class Recorder(DecayWithResidual):
    """Decay with a residual (residual mode unless full_residual_norm), remembering fstops and syncs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fstops = 0
        self.synced = []

    def step(self, u, ustop, fstop, status):
        self.fstops += fstop is not None
        super().step(u, ustop, fstop, status)

    def sync(self, status):
        assert status.caller == status.phase
        self.synced.append((status.caller, status.iter, status.level, status.done, status.ntime, status.nlevels))


def solve(app, **kw):
    kw.setdefault("comm", COMM)
    solver = xb.Solver(app, 0.0, 5.0, kw.pop("ntime", 10), **kw)
    return solver, solver.solve()


# ---------------------------------------------------------------------------------------
# full residual norm
# ---------------------------------------------------------------------------------------
def test_full_norm_is_the_scaled_cpoint_norm_and_leaves_residual_mode_off():
    # u' = -u, backward Euler, dt = 0.5: A(u_i, u_{i-1}) = 1.5 u_i - u_{i-1} = 1.5 (u_i - Phi(u_{i-1})),
    # zero at F-points (they are stepped), so the full norm is 1.5 times the C-point norm.
    app = Recorder()
    _, result = solve(app, max_levels=2, abs_tol=1e-6, full_residual_norm=True)
    assert app.fstops == 0  # the residual serves the norm only
    assert result.iterations == 4
    assert math.isnan(result.full_residual_norms[0])
    np.testing.assert_allclose(result.full_residual_norms[1:3], 1.5 * result.residual_norms[1:3], rtol=1e-14)
    assert result.final_full_residual_norm < 1e-15
    # without the option the same app runs in residual mode (steps get fstop)
    plain = Recorder()
    _, other = solve(plain, max_levels=2, abs_tol=1e-6)
    assert plain.fstops > 0 and other.full_residual_norms is None and other.final_full_residual_norm is None


def test_the_stopping_test_uses_the_full_norm():
    # ||r_2|| = 8.6e-4 and Full ||r_2|| = 1.3e-3: a tolerance between them stops after
    # iteration 2 only without the full norm.
    _, plain = solve(Decay(), max_levels=2, abs_tol=1e-3)
    _, full = solve(DecayWithResidual(), max_levels=2, abs_tol=1e-3, full_residual_norm=True)
    assert plain.residual_norms[2] < 1e-3 < full.full_residual_norms[2]
    assert (plain.iterations, full.iterations) == (3, 4)


def test_residual_computation_off_keeps_the_full_norm_and_its_stopping_test():
    # As XBraid: residual_computation=False leaves the C-point norms "not available" but the full
    # norm is still measured and stops the iteration. XBraid's ex-01-expanded with
    # braid_SetFullRNormRes(core, my_Residual) added and -resid_compute 0 (run locally, 1 and 2
    # ranks) prints Full || r_k || = 4.268308e-02, 1.293291e-03, 2.881939e-17 and 4 iterations.
    _, result = solve(
        DecayWithResidual(),
        max_levels=2,
        abs_tol=1e-6,
        max_iter=100,
        residual_computation=False,
        full_residual_norm=True,
    )
    assert result.iterations == 4 and result.converged
    assert np.all(np.isnan(result.residual_norms))
    assert math.isnan(result.full_residual_norms[0])
    np.testing.assert_allclose(result.full_residual_norms[1:3], [4.268308e-02, 1.293291e-03], rtol=5e-7)
    assert result.full_residual_norms[3] == pytest.approx(2.881939e-17, rel=5e-7)


def test_full_norm_with_grouped_steps_is_bitwise_the_same():
    kw = dict(max_levels=3, ntime=64, cfactor=2, abs_tol=1e-10, full_residual_norm=True, storage=0)
    s1, one = solve(DecayWithResidual(), **kw)
    s2, grouped = solve(BatchedDecayWithResidual(), **kw)
    assert np.array_equal(one.full_residual_norms, grouped.full_residual_norms, equal_nan=True)
    assert one.final_full_residual_norm == grouped.final_full_residual_norm
    assert np.array_equal(s1.local_states(), s2.local_states())


def test_full_norm_needs_a_residual_and_no_adjoint():
    with pytest.raises(TypeError, match=r"full_residual_norm=True needs Decay\.residual\(\)"):
        solve(Decay(), full_residual_norm=True)
    with pytest.raises(ValueError, match="full_residual_norm=True needs the app's residual: build LinearODE"):
        solve(xb.apps.LinearODE(), full_residual_norm=True)
    with pytest.raises(ValueError, match="full_residual_norm=True cannot be combined with adjoint=True"):
        solve(xb.apps.LinearODE(residual=True, objective="mean_square"), full_residual_norm=True, adjoint=True)
    with pytest.raises(TypeError, match=r"full_residual_norm must be True/False \(or 0/1\), got 'yes'"):
        solve(DecayWithResidual(), full_residual_norm="yes")


def test_native_app_full_norm_equals_the_python_app():
    _, native = solve(xb.apps.LinearODE(residual=True), max_levels=3, ntime=64, abs_tol=1e-9, full_residual_norm=True)
    _, python = solve(DecayWithResidual(), max_levels=3, ntime=64, abs_tol=1e-9, full_residual_norm=True)
    assert np.array_equal(native.full_residual_norms, python.full_residual_norms, equal_nan=True)
    assert native.iterations == python.iterations


def test_print_level_prints_the_full_norm(capsys):
    solve(DecayWithResidual(), max_levels=2, abs_tol=1e-6, full_residual_norm=True, print_level=1)
    out = capsys.readouterr().out
    assert "  Braid: Full || r_1 || = 4.268308e-02\n" in out
    assert "Full || r_0 ||" not in out  # not available: skipped


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(2, 4),
    st.integers(0, 2),
    st.booleans(),
    st.sampled_from([-1, 0, 1]),
    st.booleans(),
    st.sampled_from([1, 2, 3]),
    st.integers(8, 40),
)
def test_full_norm_properties(max_levels, cfactor, nrelax, skip, storage, fmg, tnorm, ntime):
    # The engine's full norm of u' = -u (residual (1 + dt) u_i - u_{i-1}) on a uniform grid is
    # (1 + dt) times the C-point norm, up to the F-points' round-off; the history has one
    # entry per iteration, and convergence means the full norm met the tolerance.
    solver = xb.Solver(
        xb.apps.LinearODE(residual=True),
        0.0,
        2.0,
        ntime,
        comm=COMM,
        max_levels=max_levels,
        cfactor=cfactor,
        nrelax=nrelax,
        skip=skip,
        storage=storage,
        fmg=fmg,
        tnorm=tnorm,
        abs_tol=1e-8,
        max_iter=15,
        full_residual_norm=True,
    )
    result = solver.solve()
    full, plain = result.full_residual_norms, result.residual_norms
    assert len(full) == result.iterations
    assert np.array_equal(np.isnan(full), np.isnan(plain))
    scale = 1.0 + 2.0 / ntime
    ok = ~np.isnan(plain)
    # F-point residuals are round-off: a few ulps of |u| <= 1 at each of the ntime points
    np.testing.assert_allclose(full[ok], scale * plain[ok], rtol=1e-13, atol=ntime * 4.4e-16)
    if result.converged and result.iterations:
        assert full[-1] < 1e-8
    assert result.final_full_residual_norm >= 0.0


class InexactHeatSteps(xb.App):
    """u' = -K u (K = c tridiag(-1, 2, -1)), backward Euler solved INEXACTLY: ``sweeps``
    Jacobi iterations from x = u (ustop is not used), so the F-points' residuals are not zero.
    """

    def __init__(self, m=6, c=3.0, sweeps=2):
        super().__init__(shape=(m,))
        self.K = c * (2.0 * np.eye(m) - np.eye(m, k=1) - np.eye(m, k=-1))
        self.sweeps = sweeps

    def init(self, t, u):
        u[:] = np.sin(np.arange(1, u.size + 1)) if t == 0.0 else 0.3

    def step(self, u, ustop, fstop, status):
        if fstop is not None:
            u += fstop
        A = np.eye(u.size) + (status.tstop - status.tstart) * self.K
        d = np.diag(A)
        b = u.copy()
        for _ in range(self.sweeps):
            u[:] = (b - (A @ u - d * u)) / d


class InexactHeat(InexactHeatSteps):
    """InexactHeatSteps with the exact implicit residual (I + dt K) ustop - u(tstart)."""

    def residual(self, ustop, r, status):
        A = np.eye(ustop.size) + (status.tstop - status.tstart) * self.K
        r[:] = A @ ustop - r

    def residuals(self, states, times, periodic):
        """The residual norm at every fine point of the states, from the definition (no engine).

        Periodic: index 0 follows the last point over the last interval (the wrap-around
        step to tstop), which Python's index -1 gives.
        """
        dts = np.diff(times)
        eye = np.eye(states.shape[1])
        first = 0 if periodic else 1
        return np.array(
            [np.linalg.norm((eye + dts[i - 1] * self.K) @ states[i] - states[i - 1]) for i in range(first, len(states))]
        )


def temporal(norms, tnorm):
    return {1: np.sum(norms), 2: math.sqrt(float(np.sum(norms * norms))), 3: np.max(norms)}[tnorm]


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 4),
    st.integers(2, 4),
    st.integers(0, 2),
    st.sampled_from([-1, 0, 1]),
    st.sampled_from([1, 2, 3]),
    st.booleans(),
    st.booleans(),
    st.integers(1, 3),
    st.integers(10, 40),
)
def test_final_full_norm_is_the_residual_of_the_returned_iterate(
    max_levels, cfactor, nrelax, storage, tnorm, fmg, periodic, sweeps, ntime
):
    # An inexact step (F-point residuals nonzero): the final full residual norm equals the
    # temporal norm of the app's residual A(u_i, u_{i-1}) at every fine point of the
    # returned solution, computed here from the states alone (periodic: index 0's residual
    # from the last point over the wrap-around step to tstop).
    app = InexactHeat(sweeps=sweeps)
    try:
        solver = xb.Solver(
            app,
            0.0,
            1.0,
            ntime,
            comm=COMM,
            max_levels=max_levels,
            cfactor=cfactor,
            nrelax=nrelax,
            storage=storage,
            tnorm=tnorm,
            fmg=fmg,
            periodic=periodic,
            abs_tol=1e-9,
            max_iter=6,
            full_residual_norm=True,
        )
    except ValueError as exc:  # periodic with too few points for two levels
        assert periodic and "periodic=True needs at least 2 levels" in str(exc)
        return
    result = solver.solve()
    expected = temporal(app.residuals(solver.local_states(), solver.times, periodic), tnorm)
    assert result.final_full_residual_norm == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert expected > 0.0  # the inexact F-point steps leave residuals the C-point norm does not see


def test_full_norm_counts_a_residual_per_fine_point():
    # Every full norm evaluates the residual once per fine point (ntime of them): one per
    # iteration after iteration 0 (skipped) plus the final one; the residual mode is off.
    app = InexactHeat()
    result = xb.Solver(app, 0.0, 1.0, 16, comm=COMM, max_levels=3, abs_tol=1e-9, full_residual_norm=True).solve()
    measured = int(np.sum(~np.isnan(result.full_residual_norms))) + 1
    assert result.calls["residual"] == measured * 16


@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("storage", [-1, 0])
def test_measuring_the_full_norm_and_syncing_change_nothing(periodic, storage):
    # The same iterations with and without the full norm (and a sync): the iterates, the
    # C-point residual norms and the step calls are bitwise the same; only the measurements
    # are added. abs_tol=0 fixes the number of iterations, so the stopping test cannot differ.
    class Synced(InexactHeat):
        def sync(self, status):
            self.last = (status.caller, status.iter)

    kw = dict(comm=COMM, max_levels=3, abs_tol=0.0, max_iter=5, storage=storage, periodic=periodic)
    runs = []
    for app, full in ((InexactHeatSteps(), False), (Synced(), True), (InexactHeat(), True)):
        solver = xb.Solver(app, 0.0, 1.0, 32, full_residual_norm=full, **kw)
        runs.append((solver.solve(), solver.local_states()))
    (base, u0), *others = runs
    assert base.full_residual_norms is None
    for result, states in others:
        assert result.iterations == base.iterations == 5
        assert np.array_equal(result.residual_norms, base.residual_norms, equal_nan=True)
        assert np.array_equal(states, u0)
        assert result.calls["step"] > base.calls["step"]  # the full norm's F-point steps


# ---------------------------------------------------------------------------------------
# sync
# ---------------------------------------------------------------------------------------
class SyncRecorder(Decay):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.synced = []

    sync = Recorder.sync


def test_sync_after_init_and_at_the_top_of_every_cycle():
    app = SyncRecorder()
    solver, result = solve(app, max_levels=2, abs_tol=1e-6)
    assert result.iterations == 4 and result.calls["sync"] == 5
    assert app.synced == [("after_init", 0, 0, False, 10, 2)] + [("top_cycle", k, 0, False, 10, 2) for k in range(4)]
    # a warm restart does not initialise again: no after_init (XBraid's warm_restart)
    app.synced.clear()
    again = solver.solve()
    assert [c[0] for c in app.synced] == ["top_cycle"] * again.iterations
    # reset() forgets the iterate: the next solve initialises (and syncs after it)
    solver.reset()
    app.synced.clear()
    solver.solve()
    assert app.synced[0][0] == "after_init"


def test_sync_with_sequential_marching_and_grouped_steps():
    app = SyncRecorder()
    _, result = solve(app, max_levels=1)
    assert [c[0] for c in app.synced] == ["after_init"] and result.calls["sync"] == 1

    class Batched(BatchedDecay, SyncRecorder):
        pass

    app = Batched()
    _, result = solve(app, max_levels=3, ntime=64, abs_tol=1e-9)
    assert result.calls["step_batch"] > 0
    assert [c[0] for c in app.synced] == ["after_init"] + ["top_cycle"] * result.iterations


def test_sync_residual_norm_is_the_latest():
    seen = []

    class App(Decay):
        def sync(self, status):
            seen.append((status.caller, status.iter, status.residual_norm))

    _, result = solve(App(), max_levels=2, abs_tol=1e-6)
    # at the top of cycle k the norm of iteration k is known (-1: iteration 0 was skipped)
    assert seen[1:] == [("top_cycle", k, -1.0 if k == 0 else result.residual_norms[k]) for k in range(4)]


def test_sync_may_communicate(mpirun):
    # Every rank calls sync at the same points, so it may reduce over the ranks
    # (XBraid's ex-06 takes a global maximum there).
    code = """
from mpi4py import MPI
import pyxbraid as xb

class App(xb.App):
    def __init__(self):
        super().__init__(shape=(1,))
        self.sums = []
    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.456
    def step(self, u, ustop, fstop, status):
        u /= 1.0 + status.dt
    def sync(self, status):
        self.sums.append(MPI.COMM_WORLD.allreduce(status.iter))

app = App()
result = xb.Solver(app, 0.0, 5.0, 10, max_levels=2, abs_tol=1e-6).solve()
report({"sums": app.sums, "iterations": result.iterations})
"""
    ranks = mpirun.json(code, 2, timeout=120)
    assert ranks[0] == ranks[1] == {"sums": [0, 0, 2, 4, 6], "iterations": 4}


def test_readme_example_runs_and_gives_the_documented_numbers(capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## XBraid's advanced features", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    ns = {}
    exec(compile(blocks[0], "README full residual norm", "exec"), ns)
    full = ns["result"].full_residual_norms
    assert math.isnan(full[0]) and f"{full[1]:.3e}" == "4.268e-02" and f"{full[2]:.3e}" == "1.293e-03"
    assert f"{full[3]:.1e}" == "7.8e-18"
    assert capsys.readouterr().out.startswith("iteration 0: ||r|| = -1.000e+00\niteration 1: ||r|| = 2.846e-02\n")
