"""Property-based fuzzing of the engine's public entry points (hypothesis, derandomized).

Generated values go to Solver options, time grids, App declarations and
callbacks that misbehave. The property everywhere: a clear exception of the
documented type whose message names the culprit, or a correct result -- never
a crash, a hang, or a silently wrong value. Multi-rank: a bad value on one rank
raises on every rank.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpi4py import MPI

import pyxbraid as xb

COMM = MPI.COMM_SELF
FUZZ = settings(
    derandomize=True, deadline=None, database=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)

# Values of every kind a user might pass by mistake.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.binary(max_size=2),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(max_magnitude=10),
    st.lists(st.integers(-3, 6), max_size=4),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
    st.just(np.int64(3)),
    st.just(np.float32(0.5)),
    st.just(np.array([2, 3])),
    st.just(object()),
)

OPTIONS = {
    "max_levels": st.integers(-2, 8),
    "min_coarse": st.integers(-1, 6),
    "cfactor": st.integers(0, 6),
    "nrelax": st.integers(-1, 3),
    "cwt": st.floats(-1.0, 3.0),
    "max_iter": st.integers(-1, 12),
    "tnorm": st.integers(0, 4),
    "fmg": st.booleans(),
    "nfmg": st.integers(-2, 3),
    "nfmg_vcyc": st.integers(-1, 3),
    "skip": st.booleans(),
    "storage": st.integers(-2, 3),
    "seq_soln": st.booleans(),
    "residual_computation": st.booleans(),
    "relax_only_cg": st.booleans(),
    "final_fc_relax": st.booleans(),
    "full_residual_norm": st.booleans(),
    "periodic": st.booleans(),
    "richardson": st.booleans(),
    "error_estimation": st.booleans(),
    "local_order": st.integers(0, 4),
    "refine": st.booleans(),
    "max_refinements": st.integers(-1, 3),
    "tpoints_cutoff": st.integers(-1, 50),
    "incr_max_levels": st.booleans(),
    "access_level": st.integers(-1, 3),
    "print_level": st.integers(-1, 1),
    "abs_tol": st.floats(-1.0, 1.0),
    "rel_tol": st.floats(-1.0, 1.0),
    "batch_size": st.integers(-1, 5),
    "virtual_time": st.booleans(),
    "virtual_latency": st.floats(-1e-6, 1e-3),
    "virtual_bandwidth": st.floats(-1.0, 1e10),
    "virtual_step_cost": st.one_of(st.none(), st.floats(-1e-6, 1e-3)),
    "delta_rank": st.integers(-1, 3),
    "defer_delta_level": st.integers(-1, 3),
    "defer_delta_iter": st.integers(-1, 3),
    "lyapunov": st.booleans(),
    "lyapunov_relax": st.booleans(),
}


@st.composite
def option_sets(draw):
    names = draw(st.lists(st.sampled_from(sorted(OPTIONS)), unique=True, max_size=6))
    kwargs = {}
    for name in names:
        # mostly plausible values of the right type, sometimes anything at all
        kwargs[name] = draw(st.one_of(OPTIONS[name], OPTIONS[name], junk))
    return kwargs


def _names_culprit(exc: BaseException, names) -> bool:
    text = str(exc)
    return any(name in text for name in names)


def _sequential(lam, times, u0=1.0):
    u = u0
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        u = u / (1.0 - lam * (t1 - t0))
    return u


@FUZZ
@given(option_sets(), st.integers(1, 40))
def test_solver_options(kwargs, ntime):
    try:
        solver = xb.Solver(xb.apps.LinearODE(), 0.0, 2.0, ntime, comm=COMM, **kwargs)
    except (TypeError, ValueError) as exc:
        assert _names_culprit(exc, kwargs), f"{type(exc).__name__}: {exc} (given {kwargs})"
        return
    result = solver.solve()
    max_iter = kwargs.get("max_iter", 100)
    assert 0 <= result.iterations <= max_iter
    norms = result.residual_norms
    assert len(norms) == result.iterations
    assert np.all(np.isnan(norms) | (norms >= 0.0))
    if solver._options.virtual_time:  # True, or 1 (bool options take 0/1)
        # the prediction is a time, on every rank the same; without virtual_time there is none
        assert result.virtual_wall_time is not None and 0.0 <= result.virtual_wall_time < float("inf")
    else:
        assert result.virtual_wall_time is None
    if solver._options.periodic:
        # periodic: the solution of u' = -u is 0 (a fixed point of the period map), not the sequential one
        if result.converged:
            assert abs(float(solver.state_at(0)[0])) < 1.0
        return
    if solver._options.error_estimation:
        est = solver.local_error_estimates()
        assert est.shape == (ntime + 1,) and np.all((est == -1.0) | (est >= 0.0))
    if solver._options.richardson and solver.nlevels > 1:
        # the C-points converge to the extrapolated solution, not the sequential one
        assert np.all(np.isfinite(solver.local_states()))
        return
    if result.converged and result.iterations and not kwargs.get("relax_only_cg") and np.isfinite(norms[-1]):
        # converged: the solution is the sequential one to the tolerance's order. The error e_i =
        # Phi e_{i-1} - r_i of a contractive step (|Phi| < 1) is at most sum |r_i| <= (ntime + 1) ||r||
        # in any of the norms: a loose tolerance (abs_tol=1) allows a large error, a tight one none.
        exact = _sequential(-1.0, solver.times)
        bound = max(1e-6 + 1e-3 * abs(exact), (ntime + 1) * float(norms[-1]) * (1 + 1e-12))
        assert abs(float(solver.state_at(ntime)[0]) - exact) <= bound
    if solver.nlevels == 1 and not kwargs.get("relax_only_cg"):
        # one level is sequential marching: exact
        assert float(solver.state_at(ntime)[0]) == pytest.approx(_sequential(-1.0, solver.times), rel=1e-14)


class Rotation(xb.App):
    """u' = A u (a damped rotation) by forward Euler, with the step's Jacobian for the basis vectors."""

    A = np.array([[-0.1, 1.0], [-1.0, -0.1]])

    def __init__(self):
        super().__init__(shape=(2,))

    def init(self, t, u):
        u[:] = (1.0, 0.0) if t == 0.0 else (0.3, 0.2)

    def init_basis(self, t, index, v):
        v[index] = 1.0

    def step(self, u, ustop, fstop, status):
        f = np.eye(2) + status.dt * self.A
        u[:] = f @ u
        for psi in status.basis_vectors:
            psi[:] = f @ psi


DELTA_OPTIONS = ("delta_rank", "defer_delta_level", "defer_delta_iter", "lyapunov", "lyapunov_relax")


def _check_delta(make_app, kwargs, delta_option, ntime, u0, step):
    """Delta correction with any other options: a named error, or the sequential solution on convergence.

    ``step(u, dt)`` is the app's time step, marched here for the reference.
    """
    kwargs.setdefault(delta_option, 1)
    kwargs.setdefault("delta_rank", 2)
    try:
        solver = xb.Solver(make_app(), 0.0, 4.0, ntime, comm=COMM, **kwargs)
    except (TypeError, ValueError) as exc:
        assert _names_culprit(exc, kwargs), f"{type(exc).__name__}: {exc} (given {kwargs})"
        return
    result = solver.solve()
    norms = result.residual_norms
    assert 0 <= result.iterations <= kwargs.get("max_iter", 100) and len(norms) == result.iterations
    if result.converged and result.iterations and not kwargs.get("relax_only_cg") and np.isfinite(norms[-1]):
        u = np.array(u0, dtype=float)
        for t0, t1 in zip(solver.times[:-1], solver.times[1:], strict=True):
            u = step(u, t1 - t0)
        bound = max(1e-6, 10 * (ntime + 1) * float(norms[-1]))
        assert np.abs(solver.state_at(ntime) - u).max() <= bound


@FUZZ
@given(option_sets(), st.sampled_from(DELTA_OPTIONS), st.integers(2, 40))
def test_delta_options(kwargs, delta_option, ntime):
    # A Python App whose step applies its Jacobian to the basis vectors
    _check_delta(Rotation, kwargs, delta_option, ntime, [1.0, 0.0], lambda u, dt: (np.eye(2) + dt * Rotation.A) @ u)


@FUZZ
@given(option_sets(), st.sampled_from(DELTA_OPTIONS), st.integers(2, 40))
def test_delta_options_native(kwargs, delta_option, ntime):
    # The same with a native app (its Jacobian in C++): backward Euler for u' = lam u
    lam = np.array([-1.0, -3.0])
    _check_delta(
        lambda: xb.apps.LinearODE(lam=list(lam)),
        kwargs,
        delta_option,
        ntime,
        [1.0, 1.0],
        lambda u, dt: (1.0 / (1.0 - lam * dt)) * u,
    )


grid_values = st.one_of(
    st.floats(-1e6, 1e6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(1e308),
    st.just(-1e308),
    st.just(5e-324),
)


@FUZZ
@given(st.one_of(grid_values, junk), st.one_of(grid_values, junk), st.one_of(st.integers(-2, 50), junk))
def test_uniform_time_grids(tstart, tstop, ntime):
    try:
        solver = xb.Solver(xb.apps.LinearODE(), tstart, tstop, ntime, comm=COMM, max_levels=1)
    except (TypeError, ValueError) as exc:
        assert _names_culprit(exc, ("tstart", "tstop", "ntime")), str(exc)
        return
    times = solver.times
    assert np.all(np.isfinite(times)) and np.all(np.diff(times) > 0)
    assert times[0] == float(tstart) and times[-1] == pytest.approx(float(tstop), rel=1e-15)
    solver.solve()
    got = float(solver.state_at(len(times) - 1)[0])
    assert got == pytest.approx(_sequential(-1.0, times), rel=1e-12, abs=1e-300)


@FUZZ
@given(st.one_of(st.lists(grid_values, max_size=8), st.lists(junk, max_size=4), junk))
def test_user_time_grids(times):
    try:
        solver = xb.Solver(xb.apps.LinearODE(), comm=COMM, times=times, max_levels=1)
    except (TypeError, ValueError) as exc:
        assert "times" in str(exc), str(exc)
        return
    grid = np.asarray(times, dtype=float)
    np.testing.assert_array_equal(solver.times, grid)
    solver.solve()


shapes = st.one_of(
    st.integers(-2, 5), st.tuples(st.integers(-1, 3), st.integers(-1, 3)), st.lists(st.integers(0, 4), max_size=3), junk
)


class Declared(xb.App):
    def __init__(self, shape):
        super().__init__(shape=shape)

    def init(self, t, u):
        u[...] = 1.0

    def step(self, u, ustop, fstop, status):
        u *= 0.5


@FUZZ
@given(shapes)
def test_app_shapes(shape):
    try:
        app = Declared(shape)
    except (TypeError, ValueError) as exc:
        assert "shape" in str(exc), str(exc)
        return
    assert all(isinstance(d, int) and d >= 1 for d in app.shape)
    if math.prod(app.shape) > 2**16:
        return  # valid but big: sizes beyond memory are tested on their own (test_hardening)
    solver = xb.Solver(app, 0.0, 1.0, 4, comm=COMM, max_levels=1)
    solver.solve()
    np.testing.assert_array_equal(solver.state_at(4), np.full(app.shape, 0.5**4))


class DeclaredShell(Declared):
    def __init__(self, shell_shape):
        xb.App.__init__(self, shape=(2,), shell_shape=shell_shape)

    def init(self, t, u):
        u[...] = 1.0
        u.shell[...] = t

    def init_shell(self, t, shell):
        shell[...] = t

    def step(self, u, ustop, fstop, status):
        u *= 0.5
        u.shell = ustop.shell


@FUZZ
@given(shapes, st.sampled_from([-1, 0, 1]), st.integers(1, 3))
def test_app_shell_shapes(shell_shape, storage, max_levels):
    try:
        app = DeclaredShell(shell_shape)
    except (TypeError, ValueError) as exc:
        assert "shell_shape" in str(exc), str(exc)
        return
    if shell_shape is None:  # no shells: a plain app
        assert app.shell_shape is None
        return
    assert all(isinstance(d, int) and d >= 1 for d in app.shell_shape)
    if math.prod(app.shell_shape) > 2**16:
        return
    solver = xb.Solver(app, 0.0, 1.0, 4, comm=COMM, max_levels=max_levels, storage=storage)
    solver.solve()
    np.testing.assert_array_equal(solver.state_at(4), np.full(2, 0.5**4))
    # every point's shell is its time: init_shell's, carried by the steps (ustop.shell)
    assert solver.local_shells().shape == (5, *app.shell_shape)
    for i, t in enumerate(solver.times):
        assert np.all(solver.shell_at(i) == t)


# Callbacks that misbehave: what they do -> (exception type, text the message must contain).
MISBEHAVIOUR = {
    "step returns a new array": ("step", lambda u: u * 2.0, TypeError, "must update its array argument in place"),
    "step writes NaN": ("step", lambda u: u.fill(np.nan), xb.CallbackError, "non-finite value"),
    "step writes inf": ("step", lambda u: u.fill(np.inf), xb.CallbackError, "non-finite value"),
    "init writes NaN": ("init", lambda u: u.fill(np.nan), xb.CallbackError, "Broken.init"),
    "step raises": ("step", lambda u: 1 / 0, ZeroDivisionError, "division by zero"),
    "init returns a list": ("init", lambda u: [1.0], TypeError, "Broken.init must update its array"),
    "norm is negative": ("spatial_norm", lambda u: -1.0, xb.CallbackError, "a norm must be a number >= 0"),
    "norm is NaN": ("spatial_norm", lambda u: math.nan, xb.CallbackError, "a norm must be a number >= 0"),
    "norm is text": ("spatial_norm", lambda u: "one", TypeError, "spatial_norm must return a real number"),
}


@FUZZ
@given(st.sampled_from(sorted(MISBEHAVIOUR)), st.integers(0, 3), st.integers(1, 3), st.integers(2, 20))
def test_misbehaving_callbacks(kind, when, max_levels, ntime):
    callback, action, error, text = MISBEHAVIOUR[kind]

    class Broken(xb.App):
        calls = 0

        def __init__(self):
            super().__init__(shape=(2,))

        def _maybe(self, name, u):
            if name == callback:
                Broken.calls += 1
                if Broken.calls > when:
                    return action(u)
            return None

        def init(self, t, u):
            u[:] = 1.0
            return self._maybe("init", u)

        def step(self, u, ustop, fstop, status):
            u *= 0.5
            return self._maybe("step", u)

        def spatial_norm(self, u):
            value = self._maybe("spatial_norm", u)
            return float(np.linalg.norm(u)) if value is None else value

    solver = xb.Solver(Broken(), 0.0, 1.0, ntime, comm=COMM, max_levels=max_levels)
    try:
        solver.solve()
        solver.state_at(ntime)
    except error as exc:
        assert text in str(exc), str(exc)
        with pytest.raises(xb.SolverStateError):
            solver.solve()
        return
    # Not reached when the callback ran often enough to misbehave.
    assert Broken.calls <= when


BAD_ON_ONE_RANK = """
from hypothesis import given, settings, strategies as st
from mpi4py import MPI
import pyxbraid as xb
comm = MPI.COMM_WORLD
bad_values = st.one_of(st.integers(-3, 1), st.floats(allow_nan=True), st.text(max_size=2), st.none())
outcomes = []

@settings(derandomize=True, deadline=None, database=None, max_examples=25)
@given(st.sampled_from(["max_levels", "cfactor", "nrelax", "max_iter", "cwt", "tnorm", "ntime", "tstop", "times"]),
       bad_values, st.integers(0, comm.Get_size() - 1))
def one_rank_is_wrong(name, value, culprit):
    kwargs = dict(tstart=0.0, tstop=1.0, ntime=8, max_levels=2)
    if comm.rank == culprit:
        kwargs["times" if name == "times" else name] = [0.0, value] if name == "times" else value
        if name == "times":
            kwargs.pop("tstart"), kwargs.pop("tstop"), kwargs.pop("ntime")
    try:
        solver = xb.Solver(xb.apps.LinearODE(), comm=comm, **kwargs)
        solver.solve()
        outcomes.append("ok")
    except Exception as exc:
        outcomes.append(type(exc).__name__)

one_rank_is_wrong()
report(outcomes)
"""


def test_bad_value_on_one_rank_raises_on_every_rank(mpirun):
    runs = mpirun.json(BAD_ON_ONE_RANK, 3, timeout=300)
    assert len({len(r) for r in runs}) == 1 and len(runs[0]) >= 20
    for k in range(len(runs[0])):
        outcome = [r[k] for r in runs]
        # all succeed (the value happened to be valid), or all raise: the culprit its
        # own error, the others RemoteRankError or the same validation error
        assert outcome.count("ok") in (0, 3), outcome


@FUZZ
@given(
    st.lists(
        st.one_of(st.integers(-2, 12), st.text(max_size=2), st.tuples(st.integers(0, 4), st.integers(0, 4))), max_size=4
    ),
    st.integers(1, 4),
    st.integers(2, 20),
    st.booleans(),
)
def test_spatial_shapes(sizes, max_levels, ntime, skip):
    # Any per-level shapes (shape_at) either solve -- to the sequential answer, the coarse
    # levels only accelerate -- or are refused naming shape_at and the level.
    class Shaped(xb.App):
        def __init__(self):
            super().__init__(shape=(8,))

        def shape_at(self, level):
            return (8,) if level == 0 or not sizes else sizes[(level - 1) % len(sizes)]

        def init(self, t, u):
            u[...] = 1.0

        def step(self, u, ustop, fstop, status):
            u *= 0.5

        def coarsen(self, fine, coarse, status):
            coarse[...] = np.resize(fine, coarse.shape)

        def refine(self, coarse, fine, status):
            fine[...] = np.resize(coarse, fine.shape)

    try:
        solver = xb.Solver(Shaped(), 0.0, 1.0, ntime, comm=COMM, max_levels=max_levels, skip=skip, max_iter=200)
    except (TypeError, ValueError) as exc:
        assert "Shaped.shape_at(" in str(exc), str(exc)
        return
    result = solver.solve()
    assert result.converged
    np.testing.assert_allclose(solver.state_at(ntime), np.full(8, 0.5**ntime), rtol=1e-8, atol=1e-12)
