"""Time-periodic problems (XBraid's braid_SetPeriodic).

XBraid parity is in test_advanced_reference.py; here: the solution is a fixed point
of the period map, the wrap-around step's status, grouped steps, ranks, errors.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

import pyxbraid as xb

COMM = MPI.COMM_SELF
TWO_PI = 2 * math.pi


class Forced(xb.App):
    """u' = -a u + cos(t) (one rate per component), backward Euler: a unique periodic solution."""

    def __init__(self, rates=(1.0, 3.0)):
        super().__init__(shape=(len(rates),))
        self.a = np.asarray(rates, dtype=float)
        self.wrap = []  # (tstart, tstop, tindex, level) of the steps to index 0
        self.accessed = []

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.25

    def step(self, u, ustop, fstop, status):
        if status.tindex == -1:
            self.wrap.append((status.tstart, status.tstop, status.level))
        dt = status.tstop - status.tstart
        u[:] = (u + dt * math.cos(status.tstop)) / (1.0 + self.a * dt)

    def access(self, u, status):
        self.accessed.append(status.tindex)

    def march(self, u, times):
        """Return u after the steps times[0] -> times[1] -> ... (the period map when times span a period)."""
        for t0, t1 in zip(times[:-1], times[1:], strict=True):
            u = (u + (t1 - t0) * math.cos(t1)) / (1.0 + self.a * (t1 - t0))
        return u


class BatchedForced(Forced):
    def step_batch(self, u, ustop, fstop, tstart, tstop, status):
        dt = (tstop - tstart)[:, None]
        u[...] = (u + dt * np.cos(tstop)[:, None]) / (1.0 + self.a * dt)


def periodic_solver(app, ntime=32, **kw):
    kw.setdefault("comm", COMM)
    kw.setdefault("max_levels", 3)
    kw.setdefault("abs_tol", 1e-10)
    return xb.Solver(app, 0.0, TWO_PI, ntime, periodic=True, **kw)


def test_the_solution_is_a_fixed_point_of_the_period_map():
    app = Forced()
    solver = periodic_solver(app)
    result = solver.solve()
    assert result.converged and result.nlevels == 3
    states = solver.local_states()
    assert states.shape == (32, 2)  # points 0..ntime-1
    times = solver.times
    # every state is the step of the one before it (to the tolerance's order) ...
    for i in range(1, 32):
        np.testing.assert_allclose(states[i], app.march(states[i - 1], times[i - 1 : i + 1]), atol=1e-9)
    # ... the wrap-around step from t[ntime-1] to tstop closes the period ...
    np.testing.assert_allclose(app.march(states[31], times[31:33]), states[0], atol=1e-9)
    # ... so one period of time steps from u(0) returns to u(0), and index ntime is index 0
    np.testing.assert_allclose(app.march(states[0], times), states[0], atol=1e-9)
    assert np.array_equal(solver.state_at(32), states[0]) and np.array_equal(solver.state_at(-1), states[0])
    # the initial condition 1.0 was only a guess: the periodic solution is not 1
    assert abs(states[0][0] - 1.0) > 0.1


def test_fixed_point_on_a_user_time_grid():
    # times=: the wrap-around step goes from times[ntime-1] to times[ntime] (a nonuniform grid)
    app = Forced()
    rng = np.random.default_rng(1)
    times = np.sort(np.concatenate([[0.0, TWO_PI], rng.uniform(0.0, TWO_PI, 39)]))
    solver = xb.Solver(app, times=times, ntime=40, comm=COMM, periodic=True, max_levels=3, abs_tol=1e-10)
    result = solver.solve()
    states = solver.local_states()
    assert result.converged and states.shape == (40, 2)
    assert {w[1] for w in app.wrap} == {times[-1]}
    np.testing.assert_allclose(app.march(states[0], times), states[0], atol=1e-9)


def test_the_wrap_around_step_goes_from_the_last_point_to_tstop():
    app = Forced()
    solver = periodic_solver(app, ntime=16, max_levels=2)
    solver.solve()
    times = solver.times
    assert app.wrap and {w[1] for w in app.wrap} == {TWO_PI} == {times[16]}
    # level 0 from t[15], level 1 from its last point t[14]
    assert {(w[0], w[2]) for w in app.wrap} == {(times[15], 0), (times[14], 1)}
    # the final access sweep visits the ntime points once each
    assert sorted(app.accessed) == list(range(16))


@pytest.mark.parametrize("storage", [-1, 0])
@pytest.mark.parametrize("cfactor", [2, 4])
def test_grouped_steps_are_bitwise_the_same(storage, cfactor):
    kw = dict(ntime=64, cfactor=cfactor, storage=storage, max_levels=3)
    one, grouped = periodic_solver(Forced(), **kw), periodic_solver(BatchedForced(), **kw)
    r1, r2 = one.solve(), grouped.solve()
    assert r2.calls["step_batch"] > 0
    assert np.array_equal(r1.residual_norms, r2.residual_norms, equal_nan=True)
    assert np.array_equal(one.local_states(), grouped.local_states())


def test_native_app_runs_periodic():
    # LinearODE's periodic solution of u' = -u is 0: the iterate decays to it
    solver = xb.Solver(
        xb.apps.LinearODE(), 0.0, 5.0, 10, comm=COMM, max_levels=2, nrelax=[1, 5], abs_tol=1e-6, periodic=True
    )
    result = solver.solve()
    assert result.iterations == 2  # XBraid's ex-01-expanded -periodic (public run 15)
    assert float(result.residual_norms[1]) == pytest.approx(1.2905439754062685e-08, rel=1e-12)
    assert np.max(np.abs(solver.local_states())) < 1e-9


def test_rank_independent(mpirun):
    code = """
import math, sys
import numpy as np
sys.path.insert(0, TESTS)
from test_periodic import Forced, BatchedForced, periodic_solver
from mpi4py import MPI
out = {}
for name, cls in (("one", Forced), ("batched", BatchedForced)):
    solver = periodic_solver(cls(), ntime=48, comm=MPI.COMM_WORLD, cfactor=[2, 3])
    r = solver.solve()
    out[name] = {"iterations": r.iterations, "norms": [float(x) for x in r.residual_norms[1:]],
                 "u": [float(x) for x in solver.state_at(47)]}
report(out)
""".replace("TESTS", repr(str(__import__("pathlib").Path(__file__).resolve().parent)))
    serial = {}
    for name, cls in (("one", Forced), ("batched", BatchedForced)):
        solver = periodic_solver(cls(), ntime=48, cfactor=[2, 3])
        r = solver.solve()
        serial[name] = (r.iterations, r.residual_norms[1:], solver.state_at(47))
    for nprocs in (2, 3):
        for rank in mpirun.json(code, nprocs, timeout=120):
            for name in ("one", "batched"):
                iterations, norms, u = serial[name]
                assert rank[name]["iterations"] == iterations
                np.testing.assert_allclose(rank[name]["norms"], norms, rtol=1e-12)
                np.testing.assert_allclose(rank[name]["u"], u, rtol=1e-12)


def test_periodic_errors():
    with pytest.raises(ValueError, match="periodic=True cannot be combined with seq_soln=True"):
        periodic_solver(Forced(), seq_soln=True)
    with pytest.raises(ValueError, match="periodic=True cannot be combined with adjoint=True"):
        xb.Solver(xb.apps.LinearODE(objective="mean_square"), 0.0, 1.0, 8, periodic=True, adjoint=True)
    with pytest.raises(ValueError, match=r"periodic=True needs max_levels >= 2 .*, got max_levels=1"):
        periodic_solver(Forced(), max_levels=1)
    with pytest.raises(ValueError, match="periodic=True cannot be combined with objective_only=True"):
        xb.Solver(xb.apps.LinearODE(objective="mean_square"), 0.0, 1.0, 8, periodic=True, objective_only=True)
    with pytest.raises(ValueError, match=r"ntime - 1 = 2 > min_coarse = 2\), got 1"):
        periodic_solver(Forced(), ntime=3)
    with pytest.raises(TypeError, match=r"periodic must be True/False \(or 0/1\), got 'yes'"):
        xb.Solver(Forced(), 0.0, 1.0, 8, periodic="yes")


def test_periodic_needs_as_many_points_as_ranks(mpirun):
    code = """
import pyxbraid as xb
report(outcome(lambda: xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 2, periodic=True, max_levels=2)))
"""
    ranks = mpirun.json(code, 3, timeout=60)
    assert ranks[0]["type"] == "ValueError"
    assert "ntime=2 gives 2 time points (periodic), fewer than the 3 ranks" in ranks[0]["message"]


@settings(max_examples=20, deadline=None)
@given(
    st.integers(2, 4),
    st.integers(2, 4),
    st.integers(0, 2),
    st.integers(1, 6),
    st.booleans(),
    st.sampled_from([-1, 0, 1]),
    st.booleans(),
    st.integers(8, 48),
)
def test_fixed_point_for_any_options(max_levels, cfactor, nrelax, nrelax_coarse, skip, storage, fmg, ntime):
    app = Forced((2.0,))
    nrel = [nrelax] * (max_levels - 1) + [nrelax_coarse]
    try:
        solver = periodic_solver(
            app,
            ntime=ntime,
            max_levels=max_levels,
            cfactor=cfactor,
            nrelax=nrel,
            skip=skip,
            storage=storage,
            fmg=fmg,
            max_iter=60,
        )
    except ValueError as exc:  # too few points for two levels
        assert "periodic=True needs at least 2 levels" in str(exc)
        return
    result = solver.solve()
    assert len(result.residual_norms) == result.iterations
    if result.converged:
        states = solver.local_states()
        u0 = states[0]
        np.testing.assert_allclose(app.march(u0, solver.times), u0, atol=1e-8)


def test_readme_example():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## XBraid's advanced features", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "periodic=True" in b)
    ns = {}
    exec(compile(block, "README periodic", "exec"), ns)
    u, solver = ns["u"], ns["solver"]
    assert f"{u[0]:.4f}" == "0.5002" and solver.state_at(64)[0] == u[0] and ns["result"].converged
