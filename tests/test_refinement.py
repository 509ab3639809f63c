"""Adaptive temporal refinement (refine=True, XBraid's FRefine): invariants, bad input, refusals.

XBraid's own runs (ex-01-refinement, ex-06 -refinet) are replayed on 1 and 2 ranks by
test_advanced_reference.py (feature ``refine``).
"""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyxbraid as xb

SCRIPTS = Path(__file__).resolve().parent / "scripts"


class Decay(xb.App):
    """Backward Euler for u' = -u; level-0 steps ask for ``factor(status)`` (None: nothing)."""

    def __init__(self, factor=None, dts=None):
        super().__init__(shape=(1,))
        self.factor = factor
        self.dts = dts
        self.seen = []  # (phase, nrefine, ntime) of level-0 steps

    def init(self, t, u):
        u[0] = 1.0 if t == 0.0 else 0.456

    def step(self, u, ustop, fstop, status):
        u[0] = 1.0 / (1.0 + (status.tstop - status.tstart)) * u[0]
        if status.level == 0:
            self.seen.append((status.phase, status.nrefine, status.ntime))
        if self.dts is not None and status.level == 0:
            dts = self.dts(status)
            if dts:
                status.set_refinement_dts(dts)
        if self.factor is not None:
            r = self.factor(status)
            if r is not None:
                status.set_rfactor(r)


def middle_once(status):
    """Factor 4 for the intervals touching t = 2.5, in the first refinement only."""
    return 4 if status.nrefine == 0 and status.tstart <= 2.5 <= status.tstop else 1


def solve(app, **opts):
    opts = dict(dict(max_levels=6, abs_tol=1e-12, ntime=40), **opts)
    solver = xb.Solver(app, tstart=0.0, tstop=5.0, **opts)
    return solver, solver.solve()


def test_factor_one_everywhere_is_no_refinement_bitwise():
    plain_solver, plain = solve(Decay())
    solver, result = solve(Decay(factor=lambda s: 1), refine=True)
    assert result.nrefine == 0 and result.ntime == 40
    assert np.array_equal(result.residual_norms, plain.residual_norms, equal_nan=True)
    assert np.array_equal(solver.local_states(), plain_solver.local_states())
    assert list(result.cycle_iterations) == list(range(result.iterations))


def test_refined_grid_solution_is_sequential_stepping_on_it():
    solver, result = solve(Decay(factor=middle_once), refine=True)
    assert result.nrefine == 1 and result.converged
    times = np.asarray(solver.times)
    assert result.ntime == len(times) - 1 == 40 + 2 * 3  # two intervals in 4 parts
    expected = np.cumprod(np.concatenate([[1.0], 1.0 / (1.0 + np.diff(times))]))
    np.testing.assert_allclose(solver.local_states()[:, 0], expected, rtol=0, atol=1e-12)
    # the refining cycle's iteration index appears twice; it is no iteration
    k = list(result.cycle_iterations)
    assert len(k) == result.iterations + 1 and k[1] == k[2] == 1


def test_given_step_sizes_and_status_fields():
    def dts(status):
        if status.nrefine == 0 and status.tstart <= 2.5 <= status.tstop:
            dt = status.tstop - status.tstart
            return [dt / 4.0, dt / 2.0]  # three intervals: dt/4, dt/2, dt/4
        return None

    app = Decay(dts=dts)
    solver, result = solve(app, refine=True)
    t = np.asarray(solver.times)
    i = int(np.searchsorted(t, 2.375 - 1e-12))
    assert t[i : i + 4] == pytest.approx([2.375, 2.375 + 0.03125, 2.375 + 0.09375, 2.5])
    assert result.ntime == 44
    assert {(n, nt) for (_, n, nt) in app.seen} >= {(0, 40), (1, 44)}
    assert "refine" in {p for (p, _, _) in app.seen}  # the steps onto the new grid


def test_limits_stop_refining():
    # factor 2 everywhere, every cycle: max_refinements and tpoints_cutoff stop it
    _, result = solve(Decay(factor=lambda s: 2), refine=True, max_refinements=2)
    assert (result.nrefine, result.ntime) == (2, 160)
    _, result = solve(Decay(factor=lambda s: 2), refine=True, tpoints_cutoff=100)
    assert (result.nrefine, result.ntime) == (2, 160)  # 40 < 100, 80 < 100, then 160 >= 100
    # incr_max_levels: one more level allowed per refinement (XBraid's braid_SetIncrMaxLevels)
    _, result = solve(Decay(factor=lambda s: 2), refine=True, max_refinements=1, max_levels=2)
    assert (result.nrefine, result.nlevels) == (1, 2)
    _, result = solve(Decay(factor=lambda s: 2), refine=True, max_refinements=1, max_levels=2, incr_max_levels=True)
    assert (result.nrefine, result.nlevels) == (1, 3)


@pytest.mark.parametrize(
    "opts, message",
    [
        (dict(periodic=True), "refine=True cannot be combined with periodic=True"),
        (dict(seq_soln=True), "refine=True cannot be combined with seq_soln=True"),
        (dict(richardson=True), "refine=True cannot be combined with richardson=True"),
        (dict(full_residual_norm=True), "full_residual_norm=True"),
        (dict(relax_only_cg=True), "refine=True cannot be combined with relax_only_cg=True"),
    ],
)
def test_refused_combinations(opts, message):
    app = Decay()
    if opts.get("full_residual_norm"):

        class WithResidual(Decay):
            def residual(self, ustop, r, status):
                r[0] = (1.0 + (status.tstop - status.tstart)) * ustop[0] - r[0]

        app = WithResidual()
    with pytest.raises(ValueError, match=message):
        xb.Solver(app, tstart=0.0, tstop=5.0, ntime=40, refine=True, **opts)


def test_refused_with_delta_correction():
    # refine=True with delta_rank > 0 is not checked against XBraid: refused, naming both.
    class WithBasis(Decay):
        def init_basis(self, t, index, v):
            v[0] = 1.0

        def inner_product(self, u, v):
            return float(u[0] * v[0])

    with pytest.raises(ValueError, match=r"delta_rank=1 cannot be combined with refine=True"):
        xb.Solver(WithBasis(), tstart=0.0, tstop=5.0, ntime=40, refine=True, delta_rank=1)


def test_refused_with_adjoint_and_options_need_refine():
    with pytest.raises(ValueError, match=r"max_refinements.*refine"):
        xb.Solver(Decay(), tstart=0.0, tstop=5.0, ntime=40, max_refinements=3)
    with pytest.raises(ValueError, match=r"max_refinements must be >= 0, got -1"):
        xb.Solver(Decay(), tstart=0.0, tstop=5.0, ntime=40, refine=True, max_refinements=-1)
    with pytest.raises(ValueError, match=r"tpoints_cutoff must be >= 1, got 0"):
        xb.Solver(Decay(), tstart=0.0, tstop=5.0, ntime=40, refine=True, tpoints_cutoff=0)


@pytest.mark.parametrize(
    "factor, error, message",
    [
        (lambda s: 0, ValueError, r"set_rfactor: rfactor must be an integer >= 1, got 0"),
        (lambda s: 2.5, ValueError, r"rfactor must be an integer >= 1, got 2.5"),
        (lambda s: "2", TypeError, r"must be real number"),
    ],
)
def test_bad_rfactor(factor, error, message):
    with pytest.raises(error, match=message):
        solve(Decay(factor=factor), refine=True)


def test_bad_refinement_dts():
    with pytest.raises(ValueError, match=r"set_refinement_dts: dts\[0\] must be finite and > 0, got -1"):
        solve(Decay(dts=lambda s: [-1.0]), refine=True)
    with pytest.raises(ValueError, match=r"sum to .*not less than the interval"):
        solve(Decay(dts=lambda s: [s.tstop - s.tstart]), refine=True)


def test_set_rfactor_needs_refine():
    with pytest.raises(
        RuntimeError, match=r"set_rfactor is only available inside step of a Solver built with refine=True"
    ):
        solve(Decay(factor=lambda s: 2))


@pytest.mark.parametrize("where", ["refine_step", "rfactor", "after_refine"])
def test_failure_on_one_rank(mpirun, where):
    ranks = mpirun.json(str(SCRIPTS / "refine_failure.py"), 2, timeout=120, args=(where, "1"))
    assert ranks[1]["first"]["type"] == "ValueError"
    assert ranks[0]["first"]["type"] == "RemoteRankError" and ranks[0]["first"]["rank"] == 1
    for r in ranks:
        assert r["again"]["type"] == "SolverStateError"


def test_two_ranks_equal_one_rank(mpirun):
    one = mpirun.json(str(SCRIPTS / "refine_ranks.py"), 1, timeout=120)[0]
    two = mpirun.json(str(SCRIPTS / "refine_ranks.py"), 2, timeout=120)[0]
    assert (two["ntime"], two["iters"]) == (one["ntime"], one["iters"])
    assert two["norms"] == pytest.approx(one["norms"], rel=1e-12)
    assert two["states"] == pytest.approx(one["states"], rel=1e-13, abs=1e-300)


@settings(derandomize=True, deadline=None, database=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    ntime=st.integers(4, 40),
    cfactor=st.integers(2, 4),
    max_levels=st.integers(2, 5),
    storage=st.sampled_from([-1, 0, 1]),
    fmg=st.booleans(),
    seed=st.integers(0, 10**6),
    dts=st.booleans(),
)
def test_random_refinements_converge_to_sequential_stepping(ntime, cfactor, max_levels, storage, fmg, seed, dts):
    # Factors 1..3 picked by (seed, index, refinement), the first two refinements only: whatever
    # the grid becomes, the converged iterate is backward Euler stepped along it.
    def factor(status):
        if status.level != 0 or status.nrefine >= 2:
            return None
        r = 1 + (seed * 7919 + status.tindex * 104729 + status.nrefine * 31) % 3
        if dts and r > 1:
            dt = status.tstop - status.tstart
            status.set_refinement_dts([dt / (r + 1)] * (r - 1))
        return r

    solver, result = solve(
        Decay(factor=factor),
        refine=True,
        ntime=ntime,
        cfactor=cfactor,
        max_levels=max_levels,
        storage=storage,
        fmg=fmg,
        max_iter=60,
    )
    times = np.asarray(solver.times)
    assert result.ntime == len(times) - 1 >= ntime and np.all(np.diff(times) > 0)
    assert times[0] == 0.0 and times[-1] == 5.0
    if result.nlevels > 1:
        assert result.converged
    expected = np.cumprod(np.concatenate([[1.0], 1.0 / (1.0 + np.diff(times))]))
    np.testing.assert_allclose(solver.local_states()[:, 0], expected, rtol=0, atol=1e-10)


def test_print_level_reports_the_refinement(capsys):
    # XBraid's output: the refining cycle's r_k, the refinement, then the same k again
    xb.Solver(Decay(factor=middle_once), tstart=0.0, tstop=5.0, ntime=40, refine=True, print_level=1).solve()
    lines = [ln.strip() for ln in capsys.readouterr().out.splitlines() if "Braid:" in ln]
    heads = [ln.split(" =")[0].split(",")[0] for ln in lines]
    assert heads[:5] == [
        "Braid: Begin simulation",
        "Braid: || r_0 || not available",
        "Braid: || r_1 ||",
        "Braid: Temporal refinement occurred",
        "Braid: || r_1 ||",
    ]
    assert lines[3] == "Braid: Temporal refinement occurred, 46 time steps"


def test_a_second_solve_and_reset_keep_the_refined_grid():
    solver, first = solve(Decay(factor=middle_once), refine=True)
    again = solver.solve()  # warm restart: continues on the refined grid
    assert (first.ntime, again.ntime, again.nrefine) == (46, 46, 1)
    assert solver.state_at(46)[0] == pytest.approx(solver.local_states()[-1, 0], rel=0, abs=0)
    solver.reset()
    third = solver.solve()  # from init again, on the refined grid
    assert third.ntime == 46 and third.converged
    expected = np.cumprod(np.concatenate([[1.0], 1.0 / (1.0 + np.diff(np.asarray(solver.times)))]))
    np.testing.assert_allclose(solver.local_states()[:, 0], expected, rtol=0, atol=1e-12)


def test_a_kept_status_cannot_refine_later():
    kept = []

    class Keeper(Decay):
        def step(self, u, ustop, fstop, status):
            super().step(u, ustop, fstop, status)
            kept.append(status)

    solve(Keeper(), refine=True)
    with pytest.raises(RuntimeError, match="only available inside step"):
        kept[-1].set_rfactor(2)
