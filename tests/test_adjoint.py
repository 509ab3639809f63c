"""Adjoint gradients: finite differences, sequential adjoint (backpropagation
through time), nonlinear apps, rank independence, memory, one-shot warm
restarts, objective_only, the testing helpers, and adjoint errors.
"""

from collections import Counter

import numpy as np
import pytest
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid.testing import check_gradient, check_objective_adjoint, check_step_adjoint

COMM = MPI.COMM_SELF
TIGHT = dict(abs_tol=1e-13, abs_tol_adjoint=1e-13, max_iter=200)

# Tolerances, each with its reason.
# Rank counts change the order of reductions: last-bit differences. Measured on 1-3 ranks
# (LinearODE and Cubic, 48 steps, 3 levels): objective 4e-16, gradient 5e-16, adjoint norms 3e-16.
SUMMATION_ORDER = 1e-14
ACROSS_RANKS_ADJ = 1e-14
CONVERGED = 1e-10  # MGRIT + adjoint solved to 1e-13 absolute vs sequential: the solve's tolerance x condition
FINITE_DIFFERENCE = 1e-7  # central differences with eps ~1e-5: truncation O(eps^2) and round-off O(1e-16/eps)
EXACT = 1e-13  # the same formula evaluated in another order (native vs hand-written): round-off


def gradient_of(app, max_levels, ntime=64, tstop=4.0, **kw):
    s = xb.Solver(app, 0.0, tstop, ntime, comm=COMM, max_levels=max_levels, adjoint=True, **TIGHT, **kw)
    r = s.solve()
    return r, s.gradient()


def fd_objective(make_app, set_design, design, eps, ntime=64, tstop=4.0, direction=None):
    def J(x):
        app = make_app()
        set_design(app, x)
        return xb.Solver(app, 0.0, tstop, ntime, comm=COMM, max_levels=1, objective_only=True).solve().objective

    d = np.ones_like(np.asarray(design, dtype=float)) if direction is None else direction
    return (J(design + eps * d) - J(design - eps * d)) / (2 * eps)


CONFIGS = [
    dict(max_levels=2),
    dict(max_levels=3, cfactor=4),
    dict(max_levels=4, nrelax=0),
    dict(max_levels=3, nrelax=2, cwt=1.2),
    dict(max_levels=3, storage=0),
    dict(max_levels=30, fmg=True),
]


@pytest.mark.parametrize("opts", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_linear_gradient_equals_sequential_adjoint_and_fd(opts):
    lam = np.array([-1.0, -0.3, -2.0])
    r_seq, g_seq = gradient_of(xb.apps.LinearODE(lam=lam, objective="mean_square"), 1)
    r, g = gradient_of(xb.apps.LinearODE(lam=lam, objective="mean_square"), **opts)
    assert r.converged
    assert r.objective == pytest.approx(r_seq.objective, rel=SUMMATION_ORDER)
    np.testing.assert_allclose(g, g_seq, rtol=CONVERGED)
    for k in range(3):
        d = np.eye(3)[k]
        fd = fd_objective(
            lambda: xb.apps.LinearODE(lam=lam, objective="mean_square"),
            lambda app, x: setattr(app, "lam", x),
            lam,
            1e-6,
            direction=d,
        )
        assert g_seq[k] == pytest.approx(fd, rel=FINITE_DIFFERENCE)


@pytest.mark.parametrize("opts", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_nonlinear_gradient_equals_sequential_adjoint_and_fd(opts):
    r_seq, g_seq = gradient_of(xb.apps.Cubic(p=0.4, target=0.2), 1)
    r, g = gradient_of(xb.apps.Cubic(p=0.4, target=0.2), **opts)
    assert r.converged
    assert r.objective == pytest.approx(r_seq.objective, rel=SUMMATION_ORDER)
    assert g == pytest.approx(g_seq, rel=CONVERGED)
    fd = fd_objective(lambda: xb.apps.Cubic(p=0.4, target=0.2), lambda app, x: setattr(app, "p", float(x)), 0.4, 1e-6)
    assert g_seq == pytest.approx(fd, rel=FINITE_DIFFERENCE)


def test_max_levels_one_is_backpropagation_through_time():
    # Hand-written backpropagation of backward Euler for f = u^2/N.
    lam, n, T = -0.7, 40, 3.0
    dt = T / n
    u = [1.0]
    for _ in range(n):
        u.append(u[-1] / (1 - lam * dt))
    J = sum(x * x / n for x in u)
    ubar, grad = 0.0, 0.0
    for i in range(n, 0, -1):
        ubar += 2 * u[i] / n
        grad += dt * u[i - 1] / (1 - lam * dt) ** 2 * ubar
        ubar = ubar / (1 - lam * dt)
    r, g = gradient_of(xb.apps.LinearODE(lam=lam, objective="mean_square"), 1, ntime=n, tstop=T)
    assert r.objective == pytest.approx(J, rel=EXACT)
    assert g == pytest.approx(grad, rel=EXACT)


def test_gradient_independent_of_ranks(mpirun):
    code = """
import numpy as np, pyxbraid as xb
from mpi4py import MPI
out = []
for app in (xb.apps.LinearODE(lam=[-1.0, -0.5], objective="mean_square"), xb.apps.Cubic(p=0.3, size=2)):
    s = xb.Solver(app, 0.0, 4.0, 48, max_levels=3, adjoint=True, abs_tol=1e-12, abs_tol_adjoint=1e-12)
    r = s.solve()
    g = s.gradient()
    local = s.gradient(reduce=False)
    total = MPI.COMM_WORLD.allreduce(np.sum(local))
    out.append([r.iterations, r.objective, np.atleast_1d(g).tolist(), list(r.adjoint_residual_norms), float(total)])
report(out)
"""
    runs = [mpirun.json(code, p)[0] for p in (1, 2, 3)]
    for other in runs[1:]:
        for (it, J, g, adj, tot), (it0, J0, g0, adj0, _) in zip(other, runs[0], strict=True):
            assert it == it0
            assert J == pytest.approx(J0, rel=SUMMATION_ORDER)
            np.testing.assert_allclose(g, g0, rtol=SUMMATION_ORDER)
            np.testing.assert_allclose(adj, adj0, rtol=ACROSS_RANKS_ADJ, atol=1e-20)
            assert tot == pytest.approx(np.sum(g0), rel=SUMMATION_ORDER)  # reduce=False parts sum to the total


def test_adjoint_memory_does_not_grow_with_iterations():
    def run(max_iter, ntime):
        s = xb.Solver(
            xb.apps.LinearODE(objective="mean_square"),
            0.0,
            5.0,
            ntime,
            comm=COMM,
            max_levels=3,
            adjoint=True,
            abs_tol=0.0,
            abs_tol_adjoint=0.0,
            max_iter=max_iter,
        )
        assert s.solve().iterations == max_iter
        return s.adjoint_bytes

    assert run(3, 256) == run(25, 256)
    small, large = run(3, 256), run(3, 1024)
    assert 3.0 < large / small < 5.0  # linear in the number of time points


def test_adjoint_memory_per_point_at_two_levels_is_within_the_target():
    # Issue 14: at most 200 B per time point for a 1-value state at ml=2 (bars, tape, saved
    # step inputs and objective arguments, adjoint iterate). Measured 169-182 B at 2^10-2^16.
    n = 4096
    s = xb.Solver(
        xb.apps.LinearODE(objective="mean_square"),
        0.0,
        25.0,
        n,
        comm=COMM,
        max_levels=2,
        adjoint=True,
        abs_tol=0.0,
        abs_tol_adjoint=0.0,
        max_iter=5,
        skip=False,
    )
    assert s.solve().iterations == 5
    assert s.adjoint_bytes / n <= 200.0


def test_objective_only_matches_adjoint_objective_without_adjoint_work():
    kw = dict(comm=COMM, max_levels=3, abs_tol=1e-12)
    a = xb.Solver(xb.apps.Cubic(p=0.3), 0.0, 4.0, 64, adjoint=True, abs_tol_adjoint=1e-12, **kw).solve()
    b = xb.Solver(xb.apps.Cubic(p=0.3), 0.0, 4.0, 64, objective_only=True, **kw).solve()
    assert b.objective == pytest.approx(a.objective, rel=SUMMATION_ORDER)
    assert b.calls["step_adjoint"] == 0 and a.calls["step_adjoint"] > 0
    assert len(b.adjoint_residual_norms) == b.iterations and np.all(np.isnan(b.adjoint_residual_norms))


def test_one_shot_warm_restarts_converge_primal_and_adjoint():
    # A fixed small number of iterations per solve; iterates carry over.
    exact_r, exact_g = gradient_of(xb.apps.Cubic(p=0.4), 1)
    s = xb.Solver(
        xb.apps.Cubic(p=0.4),
        0.0,
        4.0,
        64,
        comm=COMM,
        max_levels=3,
        adjoint=True,
        abs_tol=1e-14,
        abs_tol_adjoint=1e-14,
        max_iter=2,
    )
    errors = []
    for _ in range(8):
        s.solve()
        errors.append(abs(s.gradient() - exact_g))
    assert errors[-1] < 1e-10 < errors[0]
    assert all(b <= a * 1.5 for a, b in zip(errors, errors[1:], strict=False))


# ---- the testing helpers -------------------------------------------------------------


class DecayAdjoint(xb.App):
    def __init__(self, lam=-1.0, bug=None):
        super().__init__(shape=(3,))
        self.lam, self.grad, self.bug = lam, 0.0, bug

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.5

    def step(self, u, ustop, fstop, status):
        if fstop is not None:
            u += fstop
        u /= 1.0 - self.lam * status.dt

    def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
        d = 1.0 - self.lam * status.dt
        if self.bug != "no design term":
            self.grad += float(np.dot(u, u_bar)) * status.dt / d**2
        u_bar /= d if self.bug != "wrong factor" else d**2

    def objective(self, u, status):
        return float(np.dot(u, u)) / status.ntime

    def objective_adjoint(self, u, u_bar, f_bar, status):
        u_bar[:] = (2.0 if self.bug != "objective" else 1.0) * u / status.ntime * f_bar

    def reset_gradient(self):
        self.grad = 0.0


def test_check_step_adjoint_accepts_correct_and_catches_wrong():
    assert check_step_adjoint(DecayAdjoint(), design="lam")
    assert not check_step_adjoint(DecayAdjoint(bug="wrong factor"), design="lam")
    bad = check_step_adjoint(DecayAdjoint(bug="no design term"), design="lam")
    assert not bad and bad.max_rel_error > 1e-3
    with pytest.raises(AssertionError, match="direction 0: adjoint"):
        bad.assert_ok()


def test_check_objective_adjoint_accepts_correct_and_catches_wrong():
    assert check_objective_adjoint(DecayAdjoint())
    assert not check_objective_adjoint(DecayAdjoint(bug="objective"))


def test_check_gradient_accepts_correct_and_catches_wrong():
    for bug, expected in ((None, True), ("no design term", False)):
        app = DecayAdjoint(bug=bug)

        def make(app=app):
            return xb.Solver(
                app, 0.0, 3.0, 24, comm=COMM, max_levels=3, adjoint=True, abs_tol=1e-13, abs_tol_adjoint=1e-13
            )

        result = check_gradient(make, lambda app=app: app.lam, lambda v, app=app: setattr(app, "lam", v))
        assert bool(result) is expected, result.details


def test_check_gradient_on_native_nonlinear_app():
    app = xb.apps.Cubic(p=0.3)

    def make():
        return xb.Solver(app, 0.0, 4.0, 32, comm=COMM, max_levels=3, adjoint=True, **TIGHT)

    assert check_gradient(make, lambda: app.p, lambda v: setattr(app, "p", v))


# ---- adjoint errors ---------------------------------------------------------------


def test_adjoint_needs_the_adjoint_callbacks():
    class NoAdjoint(xb.App):
        def __init__(self):
            super().__init__(shape=(1,))

        def init(self, t, u):
            u[:] = 1.0

        def step(self, u, ustop, fstop, status):
            u *= 0.5

        def objective(self, u, status):
            return float(u[0])

    with pytest.raises(
        TypeError, match=r"adjoint=True needs NoAdjoint.objective_adjoint, step_adjoint, reset_gradient\(\)"
    ):
        xb.Solver(NoAdjoint(), 0.0, 1.0, 8, comm=COMM, adjoint=True)
    xb.Solver(NoAdjoint(), 0.0, 1.0, 8, comm=COMM, objective_only=True).solve()
    with pytest.raises(ValueError, match="LinearODE has no objective"):
        xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, comm=COMM, adjoint=True)


def test_adjoint_option_validation():
    app = xb.apps.LinearODE(objective="mean_square")
    with pytest.raises(ValueError, match="give either abs_tol_adjoint or rel_tol_adjoint"):
        xb.Solver(app, 0.0, 1.0, 8, comm=COMM, adjoint=True, abs_tol_adjoint=1e-6, rel_tol_adjoint=1e-6)
    with pytest.raises(ValueError, match="abs_tol_adjoint must be >= 0, got -1"):
        xb.Solver(app, 0.0, 1.0, 8, comm=COMM, adjoint=True, abs_tol_adjoint=-1)
    with pytest.raises(ValueError, match="tstop_objective must be >= tstart_objective"):
        xb.Solver(app, 0.0, 1.0, 8, comm=COMM, adjoint=True, tstart_objective=0.5, tstop_objective=0.2)
    with pytest.raises(ValueError, match="give adjoint=True or objective_only=True, not both"):
        xb.Solver(app, 0.0, 1.0, 8, comm=COMM, adjoint=True, objective_only=True)
    with pytest.raises(ValueError, match="cannot be combined with a user residual"):
        xb.Solver(xb.apps.LinearODE(objective="mean_square", residual=True), 0.0, 1.0, 8, comm=COMM, adjoint=True)
    with pytest.raises(RuntimeError, match="gradient\\(\\) needs a Solver built with adjoint=True"):
        xb.Solver(app, 0.0, 1.0, 8, comm=COMM).gradient()


def test_exception_in_step_adjoint_on_one_rank_of_three(mpirun):
    code = """
import numpy as np, pyxbraid as xb
from mpi4py import MPI
comm = MPI.COMM_WORLD
class Decay(xb.App):
    def __init__(self):
        super().__init__(shape=(1,)); self.grad = 0.0
    def init(self, t, u): u[:] = 1.0
    def step(self, u, ustop, fstop, status):
        if fstop is not None: u += fstop
        u /= 1.5
    def objective(self, u, status): return float(u[0] ** 2)
    def objective_adjoint(self, u, u_bar, f_bar, status): u_bar[:] = 2 * u * f_bar
    def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
        if comm.rank == 1 and status.iter == 1:
            raise KeyError("adjoint boom")
        u_bar /= 1.5
    def reset_gradient(self): self.grad = 0.0
try:
    xb.Solver(Decay(), 0.0, 1.0, 30, max_levels=2, adjoint=True, abs_tol=1e-14).solve()
    line = f"RANK {comm.rank} OK"
except Exception as exc:
    line = f"RANK {comm.rank} {type(exc).__name__} {getattr(exc, 'rank', None)} {exc}"
lines = comm.gather(line)
if comm.rank == 0:
    print(*lines, sep=chr(10), flush=True)
"""
    out = mpirun(code, 3, timeout=60).stdout
    lines = sorted(line for line in out.splitlines() if line.startswith("RANK"))
    assert lines[1].startswith("RANK 1 KeyError None 'adjoint boom'")
    for line in (lines[0], lines[2]):
        assert "RemoteRankError 1 rank 1: Decay.step_adjoint (phase " in line
        assert "iteration 1" in line and line.endswith("raised KeyError: 'adjoint boom'")


def test_python_app_adjoint_identical_to_native():
    from adjoint_cases import DecayAdjoint as PyDecay

    for opts in (dict(max_levels=2), dict(max_levels=3, cfactor=4, nrelax=2), dict(max_levels=1)):
        kw = dict(comm=COMM, adjoint=True, abs_tol=1e-10, abs_tol_adjoint=1e-10, **opts)
        sp = xb.Solver(PyDecay(-0.8), 0.0, 10.0, 40, **kw)
        sn = xb.Solver(xb.apps.LinearODE(lam=-0.8, objective="mean_square"), 0.0, 10.0, 40, **kw)
        rp, rn = sp.solve(), sn.solve()
        assert rp.iterations == rn.iterations and rp.objective == rn.objective
        np.testing.assert_array_equal(rp.residual_norms, rn.residual_norms)
        np.testing.assert_array_equal(rp.adjoint_residual_norms, rn.adjoint_residual_norms)
        assert sp.gradient() == sn.gradient()


# ---- the statuses the adjoint callbacks see ----------------------------------------

STATUS_FIELDS = ("tstart", "tstop", "tindex", "level", "nlevels", "iter", "done", "phase", "residual_norm", "ntime")


class StatusRecorder(xb.App):
    """ex-01-adjoint, counting the status every step, objective and adjoint call sees."""

    def __init__(self):
        super().__init__(shape=(1,))
        self.lam = -1.0
        self.calls = {name: Counter() for name in ("step", "step_adjoint", "objective", "objective_adjoint")}

    def seen(self, callback, status, *extra):
        self.calls[callback][tuple(getattr(status, f) for f in STATUS_FIELDS + extra)] += 1

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.456

    def step(self, u, ustop, fstop, status):
        self.seen("step", status)
        u[0] = (1.0 / (1.0 - self.lam * status.dt)) * u[0]

    def objective(self, u, status):
        self.seen("objective", status, "error_estimate")
        return 1.0 / status.ntime * u[0] * u[0]

    def objective_adjoint(self, u, u_bar, f_bar, status):
        self.seen("objective_adjoint", status, "error_estimate")
        u_bar[0] = 2.0 / status.ntime * u[0] * f_bar

    def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
        self.seen("step_adjoint", status)
        u_bar[0] = 1.0 / (1.0 - self.lam * status.dt) * u_bar[0]

    def reset_gradient(self):
        pass


@pytest.mark.parametrize(
    "options",
    [
        dict(max_levels=3, cfactor=2),
        dict(max_levels=2, cfactor=4, nrelax=0),
        dict(max_levels=3, cfactor=2, skip=False, fmg=True),
        dict(max_levels=1),
    ],
    ids=["3 levels FCF", "2 levels cf4 F", "fmg", "sequential"],
)
def test_adjoint_callbacks_see_the_statuses_of_the_primal_calls(options):
    # The reverse sweep rebuilds each recorded call's status from the tape (level, index, phase,
    # done, residual norm) and the iteration: every step_adjoint sees the status its step saw,
    # every objective_adjoint its objective's, once each. After MGRIT iterations the final access
    # sweep records nothing; with one level that sweep is the recorded sequential march.
    app = StatusRecorder()
    solver = xb.Solver(
        app, 0.0, 2.0, 32, comm=COMM, adjoint=True, max_iter=4, abs_tol=1e-14, abs_tol_adjoint=1e-14, **options
    )
    solver.solve()
    steps = app.calls["step"]
    sequential = options["max_levels"] == 1
    recorded = Counter({k: n for k, n in steps.items() if sequential or k[STATUS_FIELDS.index("phase")] != "access"})
    assert sum(recorded.values()) > 0
    assert app.calls["step_adjoint"] == recorded
    assert app.calls["objective_adjoint"] == app.calls["objective"]
    assert sum(app.calls["objective"].values()) >= 33
