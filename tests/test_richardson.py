"""Richardson extrapolation and error estimates (XBraid's braid_SetRichardsonEstimation).

XBraid parity (ex-06, ex-02 and public run 08, on 1 and 2 ranks) is in
test_advanced_reference.py; here: what the extrapolation buys against the exact
solution, what the estimates estimate, what the callbacks see and when, that the
estimates change nothing else, native apps, grouped steps, 2-4 ranks, errors.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from apps_python import BatchedDecay, Decay, DecayWithResidual
from mpi4py import MPI

import pyxbraid as xb

sys.path.insert(0, str(Path(__file__).resolve().parent))
import advanced_cases as ac  # noqa: E402
from advanced_apps import Ex06  # noqa: E402

COMM = MPI.COMM_SELF
ORDER = {1: 2, 2: 3}  # ex-06's local orders: backward Euler 2, SDIRK23 3


def ex06_solver(app, ntime=256, comm=COMM, **kw):
    """ex-06's solver (storage 0, no skip, min_coarse 8, its tolerance); kw overrides."""
    opts = dict(max_levels=100, min_coarse=8, storage=0, skip=False, abs_tol=1e-12 / math.sqrt(0.5 / 255))
    opts.update(kw)
    return xb.Solver(app, 0.0, 0.5, ntime, comm=comm, **opts)


def errors(solver, app):
    """|u_i - exact(t_i)| at every fine point (one rank)."""
    u = solver.local_states()[:, 0]
    return np.abs(u - np.array([app.exact(t) for t in solver.times]))


class Status:
    def __init__(self, tstart, tstop):
        self.tstart, self.tstop = tstart, tstop


class Ex06Watched(Ex06):
    """Ex06 remembering the estimates its callbacks were told."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = []  # (phase, level, iter, tindex, dt, estimate)
        self.syncs = []  # (caller, iter, estimates)

    def step(self, u, ustop, fstop, status):
        self.steps.append((status.phase, status.level, status.iter, status.tindex, status.dt, status.error_estimate))
        super().step(u, ustop, fstop, status)

    def sync(self, status):
        self.syncs.append((status.caller, status.iter, status.error_estimates))
        super().sync(status)


@pytest.mark.parametrize(
    ("time_discr", "gain", "final_error"),
    [(1, 90.0, 7.397956900079272e-06), (2, 1000.0, 4.4448955627274245e-10)],
)
def test_extrapolation_is_more_accurate(time_discr, gain, final_error):
    # ex-06 (u' = -4u - t + 1): the C-points converge to the extrapolated solution, of one
    # order more; measured max C-point errors 9.85e-4 -> 1.01e-5 (BE), 6.25e-7 -> 6.04e-10 (SDIRK)
    plain_app, rich_app = Ex06(time_discr), Ex06(time_discr)
    plain, rich = ex06_solver(plain_app), ex06_solver(rich_app, richardson=True, local_order=ORDER[time_discr])
    r0, r1 = plain.solve(), rich.solve()
    assert r0.converged and r1.converged and r0.nlevels == r1.nlevels == 6
    e0, e1 = errors(plain, plain_app), errors(rich, rich_app)
    assert e1[::2].max() * gain < e0[::2].max()
    assert e1[1::2].max() < e0[1::2].max() / 20  # the F-points start from better C-points
    assert e1[-1] == pytest.approx(final_error, rel=1e-9)  # XBraid's printed final error (public run 08 for BE)


@pytest.mark.parametrize("time_discr", [1, 2])
def test_estimates_are_the_local_errors_of_the_coarse_intervals(time_discr):
    # The estimate of the points of interval (t_{2j-2}, t_{2j}] is the error of the two fine steps
    # from the exact u(t_{2j-2}): measured ratios 0.990-0.997 (BE), 1.00096-1.00097 (SDIRK).
    app = Ex06(time_discr)
    solver = ex06_solver(app, error_estimation=True, local_order=ORDER[time_discr])
    solver.solve()
    est, t = solver.local_error_estimates(), solver.times
    assert est[0] == 0.0  # index 0: XBraid's value (no interval ends there)
    ratios = []
    for j in range(1, 129):
        u = np.array([app.exact(t[2 * j - 2])])
        for i in (2 * j - 1, 2 * j):
            app.step(u, u, None, Status(t[i - 1], t[i]))
        assert est[2 * j - 1] == est[2 * j]  # the interval's F-point and C-point share it
        ratios.append(est[2 * j] / abs(u[0] - app.exact(t[2 * j])))
    lo, hi = (0.985, 1.0) if time_discr == 1 else (1.0009, 1.0011)
    assert lo < min(ratios) and max(ratios) < hi


@pytest.mark.parametrize("max_levels", [1, 2, 6])
def test_error_estimation_changes_nothing_else(max_levels):
    # Bitwise the same iteration with and without estimates; richardson off is plain MGRIT.
    plain, est = (
        ex06_solver(Ex06(), max_levels=max_levels),
        ex06_solver(Ex06(), max_levels=max_levels, error_estimation=True),
    )
    r0, r1 = plain.solve(), est.solve()
    assert np.array_equal(r0.residual_norms, r1.residual_norms, equal_nan=True)
    assert np.array_equal(plain.local_states(), est.local_states())
    if max_levels == 1:  # no restriction: none ever
        assert set(est.local_error_estimates()) == {-1.0}
    # one level: richardson changes nothing either (XBraid: no extrapolation without a coarse level)
    if max_levels == 1:
        rich = ex06_solver(Ex06(), max_levels=1, richardson=True)
        rich.solve()
        assert np.array_equal(plain.local_states(), rich.local_states())


def test_what_the_callbacks_see():
    app = Ex06Watched(refine=True, comm=COMM)
    solver = ex06_solver(app, error_estimation=True, richardson=True, ntime=64, min_coarse=4)
    result = solver.solve()
    final = solver.local_error_estimates()
    assert len(final) == 65 and np.all(final[1:] > 0.0)
    # sync: this rank's estimates; -1 after the initial guess, then the last restriction's
    caller, it, first = app.syncs[0]
    assert (caller, it) == ("after_init", 0) and first.shape == (65,) and set(first) == {-1.0}
    tops = [s for s in app.syncs if s[0] == "top_cycle"]
    assert len(tops) == result.iterations and np.array_equal(tops[-1][2], final)
    assert app.max_estimate[-1] == final.max()
    # access: the estimate of the accessed point (the final access: the final estimates)
    assert [app.rows[i][2] for i in range(65)] == final.tolist()
    # steps: -1 on coarse levels and in iteration 0's relaxation (before the first restriction) ...
    assert {s[5] for s in app.steps if s[1] > 0} == {-1.0}
    first_relax = [s for s in app.steps if s[2] == 0 and s[1] == 0 and s[0] == "fc_relax"]
    assert first_relax and {s[5] for s in first_relax} == {-1.0}
    # ... then the estimate of the point stepped to: the access sweeps come after the restriction
    # of their iteration (access_level 2: every iteration, then the final one)
    dt = solver.times[1]
    sweep = [s for s in app.steps if s[0] == "access"]
    last = [s for s in sweep if s[2] == sweep[-1][2]]
    assert len(last) == 32 and {s[4] for s in last} == {dt}
    assert [s[5] for s in last] == [final[s[3] + 1] for s in last]
    # the extrapolation's coarse steps: level 0, fc_relax, over a coarse interval, from iteration 1
    coarse = [s for s in app.steps if s[1] == 0 and s[0] == "fc_relax" and s[4] == pytest.approx(2 * dt)]
    assert coarse and min(s[2] for s in coarse) == 1


def test_without_error_estimation():
    app = Ex06Watched()
    solver = ex06_solver(app, richardson=True, ntime=64, min_coarse=4)
    solver.solve()
    assert {s[5] for s in app.steps} == {-1.0}
    assert all(s[2].shape == (0,) for s in app.syncs)
    assert {row[2] for row in app.rows.values()} == {-1.0}
    with pytest.raises(ValueError, match=r"local_error_estimates\(\) needs error_estimation=True"):
        solver.local_error_estimates()


def test_estimates_start_over_after_reset():
    app = Ex06Watched()
    solver = ex06_solver(app, error_estimation=True, ntime=64, min_coarse=4)
    solver.solve()
    assert np.all(solver.local_error_estimates()[1:] > 0)
    solver.reset()
    app.syncs.clear()
    solver.solve()
    assert set(app.syncs[0][2]) == {-1.0} and np.all(solver.local_error_estimates()[1:] > 0)


@pytest.mark.parametrize("residual", [False, True])
def test_native_app_and_python_app_agree(residual):
    # LinearODE and the Python Decay (the same arithmetic), plain and in user-residual mode
    # (where only the estimates are allowed)
    kw = dict(max_levels=3, abs_tol=1e-10, richardson=not residual, error_estimation=True, skip=False)
    native = xb.Solver(xb.apps.LinearODE(residual=residual), 0.0, 5.0, 64, comm=COMM, **kw)
    python = xb.Solver((DecayWithResidual if residual else Decay)(), 0.0, 5.0, 64, comm=COMM, **kw)
    r0, r1 = native.solve(), python.solve()
    assert r0.iterations == r1.iterations
    np.testing.assert_allclose(r0.residual_norms, r1.residual_norms, rtol=1e-12)
    np.testing.assert_allclose(native.local_states(), python.local_states(), rtol=1e-12)
    np.testing.assert_allclose(native.local_error_estimates(), python.local_error_estimates(), rtol=1e-12)
    assert r0.converged
    if residual:
        return
    # the extrapolation: the C-points of u' = -u are ~10x closer to exp(-t)
    exact = np.exp(-native.times)
    plain = xb.Solver(xb.apps.LinearODE(residual=residual), 0.0, 5.0, 64, comm=COMM, max_levels=3, abs_tol=1e-10)
    plain.solve()
    e_plain = np.abs(plain.local_states()[::2, 0] - exact[::2]).max()
    e_rich = np.abs(native.local_states()[::2, 0] - exact[::2]).max()
    assert e_rich * 10 < e_plain  # measured 1.39e-2 -> 1.20e-3


@pytest.mark.parametrize("cfactor", [2, 4])
def test_grouped_steps_give_the_same_numbers(cfactor):
    kw = dict(max_levels=3, cfactor=cfactor, abs_tol=1e-10, richardson=True, error_estimation=True, skip=False)
    one = xb.Solver(Decay(), 0.0, 5.0, 64, comm=COMM, **kw)
    grouped_app = BatchedDecay()
    grouped = xb.Solver(grouped_app, 0.0, 5.0, 64, comm=COMM, **kw)
    r0, r1 = one.solve(), grouped.solve()
    assert grouped_app.calls["step_batch"] > 0
    assert np.array_equal(r0.residual_norms, r1.residual_norms, equal_nan=True)
    assert np.array_equal(one.local_states(), grouped.local_states())
    assert np.array_equal(one.local_error_estimates(), grouped.local_error_estimates())


CONFIGS = {
    # ranks split intervals, trailing F-points after the last C-point
    "cf4": dict(ntime=101, cfactor=4, max_levels=3, min_coarse=2),
    # one C-point every 16 points: on 3-4 ranks a rank owns none and passes estimates on
    "cf16": dict(ntime=26, cfactor=16, max_levels=2, min_coarse=1),
    "sdirk": dict(ntime=64, max_levels=4, min_coarse=4, time_discr=2),
}


def run_config(name, comm):
    kw = dict(CONFIGS[name])
    time_discr = kw.pop("time_discr", 1)
    app = Ex06(time_discr)
    solver = ex06_solver(
        app, comm=comm, richardson=True, error_estimation=True, local_order=ORDER[time_discr], max_iter=30, **kw
    )
    result = solver.solve()
    states = comm.gather(solver.local_states()[:, 0].tolist(), root=0)
    estimates = comm.gather(solver.local_error_estimates().tolist(), root=0)
    if comm.Get_rank() != 0:
        return None
    return {
        "iterations": result.iterations,
        "norms": [float(x) for x in result.residual_norms],
        "u": sum(states, []),
        "est": sum(estimates, []),
    }


def test_rank_independent(mpirun):
    code = """
import sys
sys.path.insert(0, TESTS)
from test_richardson import CONFIGS, run_config
from mpi4py import MPI
report({name: run_config(name, MPI.COMM_WORLD) for name in CONFIGS})
""".replace("TESTS", repr(str(Path(__file__).resolve().parent)))
    serial = {name: run_config(name, COMM) for name in CONFIGS}
    assert all(s["est"][0] == 0.0 and min(s["est"][1:]) > 0 for s in serial.values())
    for nprocs in (2, 3, 4):
        got = mpirun.json(code, nprocs, timeout=180)[0]
        for name, ref in serial.items():
            assert got[name]["iterations"] == ref["iterations"], (nprocs, name)
            # the temporal norm sums in another order across ranks: last bits
            np.testing.assert_allclose(got[name]["norms"], ref["norms"], rtol=1e-12)
            assert got[name]["u"] == ref["u"] and got[name]["est"] == ref["est"], (nprocs, name)


class CoarseStepFails(Ex06):
    """Raises in the extrapolation's coarse step (level 0, over a coarse interval) on one rank."""

    def __init__(self, bad):
        super().__init__()
        self.bad = bad

    def step(self, u, ustop, fstop, status):
        coarse = status.level == 0 and status.phase == "fc_relax" and status.dt > 1.5 * 0.5 / 64
        if coarse and MPI.COMM_WORLD.Get_rank() == self.bad:
            raise KeyError(f"coarse step at {status.tindex}")
        super().step(u, ustop, fstop, status)


@pytest.mark.parametrize("bad", [0, 1])
def test_exception_in_the_coarse_step(mpirun, bad):
    # through the callback choke point: that rank raises it, the other one RemoteRankError
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from test_richardson import CoarseStepFails, ex06_solver
from mpi4py import MPI
solver = ex06_solver(CoarseStepFails({bad}), ntime=64, min_coarse=4, comm=MPI.COMM_WORLD, richardson=True)
report(outcome(solver.solve))
"""
    ranks = mpirun.json(code, 2, timeout=60)
    assert ranks[bad]["type"] == "KeyError" and "coarse step at" in ranks[bad]["message"]
    other = ranks[1 - bad]
    assert other["type"] == "RemoteRankError" and other["rank"] == bad
    assert "CoarseStepFails.step (phase fc_relax, level 0, iteration 1" in other["message"]


def test_user_residual_mode_is_refused():
    # XBraid runs it but stalls: ex-02 -res -richardson ends at max_iter 30 with ||r|| 9.2e-3
    # (recorded; without -richardson: 8 iterations); LinearODE(residual=True) likewise (7.2e-4
    # after 40 iterations, measured before the refusal)
    for run in ac.load_runs(deviations=True):
        if run.get("deviation") == "richardson_residual_mode":
            assert run["iterations"] == 30 and run["rnorms"][-1] > 9e-3
            with pytest.raises(ValueError, match=r"richardson=True cannot be combined with the app's residual"):
                ac.execute(run, COMM)
    with pytest.raises(ValueError, match=r"richardson=True cannot be combined with the app's residual"):
        xb.Solver(DecayWithResidual(), 0.0, 5.0, 16, comm=COMM, max_levels=2, richardson=True)
    # the full residual norm (not the residual mode) is refused too: it stops on the fine equations'
    # residual, which the extrapolated C-points do not make zero (measured: 5.46e-2 for 100 iterations)
    with pytest.raises(ValueError, match=r"richardson=True cannot be combined with full_residual_norm=True"):
        xb.Solver(DecayWithResidual(), 0.0, 5.0, 16, comm=COMM, max_levels=2, richardson=True, full_residual_norm=True)
    # estimates only: both work
    for kw in (dict(full_residual_norm=True), dict()):
        solver = xb.Solver(DecayWithResidual(), 0.0, 5.0, 16, comm=COMM, max_levels=2, error_estimation=True, **kw)
        assert solver.solve().converged and np.all(solver.local_error_estimates()[1:] > 0)


def test_adjoint():
    # error estimation leaves the primal iteration alone: the same gradient; richardson is refused
    kw = dict(max_levels=2, abs_tol=1e-10, abs_tol_adjoint=1e-10, adjoint=True)
    grads = []
    for est in (False, True):
        solver = xb.Solver(
            xb.apps.LinearODE(objective="mean_square"), 0.0, 5.0, 32, comm=COMM, error_estimation=est, **kw
        )
        solver.solve()
        grads.append(solver.gradient())
        if est:
            assert np.all(solver.local_error_estimates()[1:] > 0)
    assert np.array_equal(grads[0], grads[1])
    with pytest.raises(ValueError, match=r"richardson=True cannot be combined with adjoint=True"):
        xb.Solver(xb.apps.LinearODE(objective="mean_square"), 0.0, 5.0, 32, comm=COMM, richardson=True, **kw)


@pytest.mark.parametrize(
    ("kw", "exc", "message"),
    [
        (dict(richardson=True, local_order=1), ValueError, r"local_order must be >= 2, got 1"),
        (dict(error_estimation=True, local_order=0), ValueError, r"local_order must be >= 2, got 0"),
        (
            dict(local_order=3),
            ValueError,
            r"local_order=3 has no effect without richardson=True or error_estimation=True "
            r"\(got richardson=False, error_estimation=False\)",
        ),
        (dict(richardson=True, cwt=0.5), ValueError, r"richardson=True needs cwt = 1 on every level"),
        (dict(error_estimation=True, cwt=[1.0, 1.2]), ValueError, r"error_estimation=True needs cwt = 1"),
        (dict(richardson=True, periodic=True), ValueError, r"richardson=True cannot be combined with periodic=True"),
        (dict(error_estimation=True, periodic=True), ValueError, r"error_estimation=True cannot be combined with"),
        (dict(richardson="yes"), TypeError, r"richardson must be True/False \(or 0/1\), got 'yes'"),
        (dict(richardson=True, local_order=2.5), TypeError, r"local_order must be an int, got 2.5"),
    ],
)
def test_errors(kw, exc, message):
    with pytest.raises(exc, match=message):
        xb.Solver(xb.apps.LinearODE(), 0.0, 5.0, 16, comm=COMM, max_levels=2, **kw)


def test_readme_example(capsys):
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## XBraid's advanced features", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "richardson=" in b)
    ns = {}
    exec(compile(block, "README richardson", "exec"), ns)
    assert capsys.readouterr().out.split() == ["9.8e-04", "1.0e-05"]
    assert f"{ns['estimates'][1]:.2e}" == "4.07e-05"


@pytest.mark.parametrize("option", ["richardson", "error_estimation"])
def test_shells_and_spatial_coarsening_are_refused_until_checked_against_xbraid(option):
    class Shelled(Decay):
        def __init__(self):
            xb.App.__init__(self, shape=(1,), shell_shape=(1,))

        def init_shell(self, t, shell):
            shell[0] = t

    class Coarsened(Decay):
        def coarsen(self, fine, coarse, status):
            coarse[...] = fine

        def refine(self, coarse, fine, status):
            fine[...] = coarse

    kw = {option: True, "local_order": 2, "max_levels": 2, "comm": COMM}
    with pytest.raises(ValueError, match=r"richardson / error_estimation cannot be combined with them yet"):
        xb.Solver(Shelled(), 0.0, 1.0, 8, **kw)
    with pytest.raises(ValueError, match=r"cannot be combined with spatial coarsening .* yet"):
        xb.Solver(Coarsened(), 0.0, 1.0, 8, **kw)
