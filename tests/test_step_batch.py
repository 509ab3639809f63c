"""Grouped steps (``App.step_batch`` / ``App.step_adjoint_batch``).

The contract: an App whose ``step_batch`` does row by row what ``step`` does
gets the same numbers as stepping one by one -- bitwise for the primal
(iterations, residual histories, every state, the objective, the order and
values of access calls), to round-off for the gradient (its terms are summed in
another order) -- and every recorded XBraid run reproduces with it.
"""

from pathlib import Path

import numpy as np
import pytest
from adjoint_cases import DecayAdjoint, DecayAdjointBatched
from adjoint_cases import check_case as check_adjoint_case
from adjoint_cases import load_cases as load_adjoint_cases
from apps_python import BatchedDecay, Decay, decay_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpi4py import MPI
from reference_cases import check_case, load_cases, make_solver

import pyxbraid as xb

HERE = Path(__file__).resolve().parent
COMM = MPI.COMM_SELF
EX01 = load_cases(apps=("ex01",), ranks=1)
ADJOINT = load_adjoint_cases(ranks=1)
# The gradient's terms are summed in another order when the adjoint is grouped.
GRADIENT_SUMMATION_ORDER = 1e-13


def run(app, ntime=64, **options):
    solver = xb.Solver(app, 0.0, 2.0, ntime, comm=COMM, **options)
    result = solver.solve()
    states = np.array([solver.state_at(i) for i in range(ntime + 1)])
    return result, states


def assert_same_run(a, b):
    (ra, xa), (rb, xb_) = a, b
    assert ra.iterations == rb.iterations
    np.testing.assert_array_equal(ra.residual_norms, rb.residual_norms)  # NaN where skipped: equal too
    np.testing.assert_array_equal(xa, xb_)
    assert ra.calls["step"] == rb.calls["step"]


# -- the XBraid reference runs -------------------------------------------------------------


@pytest.mark.parametrize("case", EX01, ids=[c["name"] for c in EX01])
def test_reference_cases_with_a_batched_app(case):
    """Every recorded ex-01 run: XBraid's numbers, and bitwise the one-by-one Python App's."""
    assert check_case(case, COMM, python_app="batched") == []
    runs = []
    for kind in ("plain", "batched"):
        solver, app = make_solver(case, COMM, python_app=kind)
        results = [solver.solve() for _ in case["solves"]]
        states = np.array([solver.state_at(i) for i in range(solver.ntime + 1)])
        runs.append((results, states, app))
    (plain, x_plain, _), (batched, x_batched, app) = runs
    for p, b in zip(plain, batched, strict=True):
        assert p.iterations == b.iterations
        np.testing.assert_array_equal(p.residual_norms, b.residual_norms)
    np.testing.assert_array_equal(x_plain, x_batched)


def test_reference_cases_group_their_steps():
    """The batched runs above really group: most steps come in calls of many rows."""
    grouped = 0
    for case in EX01:
        solver, app = make_solver(case, COMM, python_app="batched")
        solver.solve()
        if app.rows:
            grouped += 1
            assert max(app.rows) > 1
    assert grouped >= len(EX01) // 2


@pytest.mark.parametrize("case", ADJOINT, ids=[c["name"] for c in ADJOINT])
def test_adjoint_reference_cases_with_a_batched_app(case):
    """XBraid_Adjoint's recorded runs with step_batch and step_adjoint_batch."""
    assert check_adjoint_case(case, COMM, python_app="batched") == []


@pytest.mark.parametrize("nprocs", [2, 3])
def test_reference_cases_batched_multi_rank(mpirun, nprocs):
    runner = HERE / "case_runner.py"
    for module, loader in (("reference_cases", load_cases), ("adjoint_cases", load_adjoint_cases)):
        out = mpirun(str(runner), nprocs, timeout=600, args=(module, "batched")).stdout
        assert [line for line in out.splitlines() if line.startswith("MISMATCH")] == []
        expected = [c for c in loader(ranks=nprocs) if c["app"] in ("ex01", "ex01_adjoint")]
        assert f"CHECKED {len(expected)}" in out


# -- bitwise the same as one by one ----------------------------------------------------------

OPTION_SETS = [
    dict(cfactor=4),
    dict(cfactor=2, max_levels=2),
    dict(cfactor=3, nrelax=2),
    dict(cfactor=4, fmg=True),
    dict(cfactor=2, storage=0),
    dict(cfactor=4, final_fc_relax=True, batch_size=3),
    dict(cfactor=2, tnorm=1, batch_size=1),
    dict(cfactor=2, cwt=0.7, nrelax=1),
    dict(cfactor=3, skip=False, seq_soln=True),
    dict(cfactor=2, relax_only_cg=True),
    dict(cfactor=4, residual_computation=False, max_iter=5),
    dict(cfactor=[2, 4], max_levels=3),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=[str(o) for o in OPTION_SETS])
@pytest.mark.parametrize("residual", [False, True], ids=["step", "user residual"])
def test_batched_equals_one_by_one(options, residual):
    lam = np.array([-1.0, -0.3])
    plain = run(decay_class(False, residual)(lam, size=2), abs_tol=1e-12, **options)
    batched_app = decay_class(True, residual)(lam, size=2)
    batched = run(batched_app, abs_tol=1e-12, **options)
    assert_same_run(plain, batched)
    if options.get("batch_size") != 1:
        assert batched[0].calls["step_batch"] == batched_app.calls["step_batch"] > 0
        # one-by-one steps are left only where the steps are sequential or wait for a neighbour
        assert batched_app.calls["step"] < plain[0].calls["step"] / 2


class Accessing(Decay):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def access(self, u, status):
        self.seen.append((status.t, status.done, status.iter, u.copy()))


class AccessingBatched(Accessing, BatchedDecay):
    pass


@pytest.mark.parametrize("options", [dict(), dict(final_fc_relax=True), dict(access_level=2)])
def test_access_calls_in_the_same_order(options):
    apps = [Accessing(-0.7), AccessingBatched(-0.7)]
    for app in apps:
        run(app, ntime=50, cfactor=4, abs_tol=1e-10, **options)
    assert [s[:3] for s in apps[0].seen] == [s[:3] for s in apps[1].seen]
    for a, b in zip(apps[0].seen, apps[1].seen, strict=True):
        np.testing.assert_array_equal(a[3], b[3])


def test_batch_size_bounds_the_rows():
    app = BatchedDecay(-1.0)
    run(app, ntime=256, cfactor=2, batch_size=7, abs_tol=1e-10)
    assert max(app.rows) == 7
    app = BatchedDecay(-1.0)
    run(app, ntime=256, cfactor=2, abs_tol=1e-10)  # automatic: every interval of the level at once
    assert max(app.rows) == 128  # the 128 F-points right of C-points 0, 2, ..., 254


def test_status_of_a_batch():
    seen = []

    class Looking(BatchedDecay):
        def step_batch(self, u, ustop, fstop, tstart, tstop, status):
            seen.append((status.phase, status.level, status.iter, status.tstart, status.tindex, tstart.copy()))
            assert not tstart.flags.writeable and not tstop.flags.writeable and u.flags.writeable
            assert tstart.dtype == np.float64 and tstart.shape == tstop.shape == (len(u),)
            assert u.shape == (len(u), 1)
            super().step_batch(u, ustop, fstop, tstart, tstop, status)

    run(Looking(-1.0), ntime=64, cfactor=4, abs_tol=1e-10)
    phases = {s[0] for s in seen}
    assert {"fc_relax", "f_restrict", "f_interp", "access", "residual"} <= phases
    assert all(np.isnan(s[3]) and s[4] == -1 for s in seen)
    # sweeps: rows advance intervals cfactor steps apart (on their level's grid);
    # the coarse right-hand side: consecutive points of the coarse level
    for phase, level, _, _, _, t0 in seen:
        if len(t0) > 1:
            stride = 1 if phase == "residual" else 4
            assert np.allclose(np.diff(t0), stride * (2.0 / 64) * 4**level)


def test_float32_batched_equals_one_by_one():
    class Decay32(Decay):
        def __init__(self):
            super().__init__(-0.9, size=3)
            self.dtype = np.dtype(np.float32)
            self.lam = self.lam.astype(np.float32)

        def step(self, u, ustop, fstop, status):
            u *= np.float32(1.0 / (1.0 + 0.9 * status.dt))

    class Batched32(Decay32):
        def step_batch(self, u, ustop, fstop, tstart, tstop, status):
            assert u.dtype == np.float32
            u *= (1.0 / (1.0 + 0.9 * (tstop - tstart))).astype(np.float32)[:, None]

    plain, batched = run(Decay32(), cfactor=4, abs_tol=1e-6), run(Batched32(), cfactor=4, abs_tol=1e-6)
    assert batched[1].dtype == np.float32
    assert_same_run(plain, batched)


# -- the adjoint ----------------------------------------------------------------------------


class AdjointRowByRow(DecayAdjoint):
    """step_batch without step_adjoint_batch: the reverse sweep calls step_adjoint per row."""

    step_batch = DecayAdjointBatched.step_batch


@pytest.mark.parametrize("options", OPTION_SETS[:6], ids=[str(o) for o in OPTION_SETS[:6]])
def test_adjoint_with_grouped_steps(options):
    results = {}
    for cls in (DecayAdjoint, AdjointRowByRow, DecayAdjointBatched):
        app = cls(lam=-1.3)
        solver = xb.Solver(app, 0.0, 3.0, 120, comm=COMM, adjoint=True, abs_tol=1e-13, abs_tol_adjoint=1e-13, **options)
        result = solver.solve()
        results[cls] = (result, solver.gradient())
    (plain, g_plain), (rows, g_rows), (grouped, g_grouped) = results.values()
    assert plain.objective == rows.objective == grouped.objective  # summed in the one-by-one order
    assert plain.iterations == rows.iterations == grouped.iterations
    np.testing.assert_allclose(rows.adjoint_residual_norms, plain.adjoint_residual_norms, rtol=1e-12)
    np.testing.assert_allclose(grouped.adjoint_residual_norms, plain.adjoint_residual_norms, rtol=1e-12)
    assert g_rows == pytest.approx(g_plain, rel=GRADIENT_SUMMATION_ORDER)
    assert g_grouped == pytest.approx(g_plain, rel=GRADIENT_SUMMATION_ORDER)
    assert rows.calls["step_adjoint_batch"] == 0 and rows.calls["step_batch"] > 0
    assert grouped.calls["step_adjoint_batch"] > 0
    assert grouped.calls["step_adjoint"] == plain.calls["step_adjoint"]


def test_batched_gradient_against_finite_differences():
    def objective(lam):
        solver = xb.Solver(DecayAdjointBatched(lam=lam), 0.0, 3.0, 96, comm=COMM, objective_only=True, max_levels=1)
        return solver.solve().objective

    app = DecayAdjointBatched(lam=-0.8)
    solver = xb.Solver(app, 0.0, 3.0, 96, comm=COMM, adjoint=True, cfactor=4, abs_tol=1e-14, abs_tol_adjoint=1e-14)
    solver.solve()
    h = 1e-6
    fd = (objective(-0.8 + h) - objective(-0.8 - h)) / (2 * h)
    assert solver.gradient() == pytest.approx(fd, rel=1e-8)


def test_step_adjoint_batch_needs_step_batch():
    class OnlyAdjoint(DecayAdjoint):
        step_adjoint_batch = DecayAdjointBatched.step_adjoint_batch

    with pytest.raises(TypeError, match="OnlyAdjoint defines step_adjoint_batch but not step_batch"):
        xb.Solver(OnlyAdjoint(), 0.0, 1.0, 8, comm=COMM, adjoint=True)


# -- errors ---------------------------------------------------------------------------------


class BatchError(RuntimeError):
    pass


def test_exception_in_step_batch_keeps_its_type():
    class Failing(BatchedDecay):
        def step_batch(self, u, ustop, fstop, tstart, tstop, status):
            if status.iter == 1:
                raise BatchError("batch boom")
            super().step_batch(u, ustop, fstop, tstart, tstop, status)

    with pytest.raises(BatchError, match="batch boom"):
        run(Failing(-1.0), cfactor=4)


def test_non_finite_row_is_named():
    class Nan(BatchedDecay):
        def step_batch(self, u, ustop, fstop, tstart, tstop, status):
            super().step_batch(u, ustop, fstop, tstart, tstop, status)
            if len(u) > 2:
                u[2, 0] = np.nan

    with pytest.raises(xb.CallbackError, match=r"Nan\.step_batch .*produced a non-finite value \(nan in row 2"):
        run(Nan(-1.0), cfactor=4)


def test_step_batch_must_work_in_place():
    class Rebinding(BatchedDecay):
        def step_batch(self, u, ustop, fstop, tstart, tstop, status):
            return u * 0.5

    with pytest.raises(TypeError, match="Rebinding.step_batch must update its array argument in place"):
        run(Rebinding(-1.0), cfactor=4)


def test_kept_batch_arrays_stay_valid():
    kept = []

    class Keeping(BatchedDecay):
        def step_batch(self, u, ustop, fstop, tstart, tstop, status):
            super().step_batch(u, ustop, fstop, tstart, tstop, status)
            kept.append((u, tstart))

    run(Keeping(-1.0), cfactor=4, max_iter=2)
    import gc

    gc.collect()
    u, tstart = kept[-1]
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(tstart))  # the memory is still the engine's storage


def test_failure_in_step_batch_on_one_rank_raises_everywhere(mpirun):
    code = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import pyxbraid as xb
from mpi4py import MPI
from apps_python import BatchedDecay

class Failing(BatchedDecay):
    def step_batch(self, u, ustop, fstop, tstart, tstop, status):
        if MPI.COMM_WORLD.rank == 1 and status.iter == 1:
            raise KeyError("rank 1 batch")
        super().step_batch(u, ustop, fstop, tstart, tstop, status)

try:
    xb.Solver(Failing(-1.0), 0.0, 2.0, 96, comm=MPI.COMM_WORLD, cfactor=2, abs_tol=1e-12).solve()
    report(["no error", None, ""])
except Exception as exc:
    report([type(exc).__name__, getattr(exc, "rank", None), str(exc)])
"""
    results = mpirun.json(code, 3, timeout=60)
    assert results[1][0] == "KeyError" and "rank 1 batch" in results[1][2]
    for kind, rank, message in (results[0], results[2]):
        assert (kind, rank) == ("RemoteRankError", 1)
        assert "Failing.step_batch (phase " in message and "raised KeyError" in message


@pytest.mark.parametrize("bad", [-1, 1.5, "4"])
def test_batch_size_is_checked(bad):
    with pytest.raises((ValueError, TypeError), match="batch_size"):
        xb.Solver(BatchedDecay(-1.0), 0.0, 1.0, 8, comm=COMM, batch_size=bad)


# -- property: any hierarchy, any options ---------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ntime=st.integers(2, 90),
    cfactor=st.integers(2, 6),
    max_levels=st.integers(1, 4),
    nrelax=st.integers(0, 2),
    storage=st.sampled_from([-1, 0, 1]),
    batch_size=st.integers(0, 9),
    fmg=st.booleans(),
    residual=st.booleans(),
)
def test_fuzz_batched_equals_one_by_one(ntime, cfactor, max_levels, nrelax, storage, batch_size, fmg, residual):
    options = dict(
        cfactor=cfactor, max_levels=max_levels, nrelax=nrelax, storage=storage, fmg=fmg, max_iter=6, abs_tol=1e-12
    )
    plain = run(decay_class(False, residual)(-1.1), ntime=ntime, **options)
    batched = run(decay_class(True, residual)(-1.1), ntime=ntime, batch_size=batch_size, **options)
    assert_same_run(plain, batched)


def test_fuzz_multi_rank_batched_equals_one_by_one(mpirun):
    """2 and 3 ranks: batched and one-by-one runs agree bitwise on every rank, for many hierarchies."""
    code = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import numpy as np
import pyxbraid as xb
from mpi4py import MPI
from apps_python import BatchedDecay, Decay, decay_class

comm = MPI.COMM_WORLD
rng = np.random.default_rng(7)
bad = []
for trial in range(25):
    opts = dict(cfactor=int(rng.integers(2, 5)), max_levels=int(rng.integers(2, 5)), nrelax=int(rng.integers(0, 3)),
                storage=int(rng.choice([-1, 0])), fmg=bool(rng.integers(2)), max_iter=6, abs_tol=1e-12,
                batch_size=int(rng.integers(0, 5)))
    ntime = int(rng.integers(8, 120))
    runs = []
    for cls in (Decay, BatchedDecay):
        s = xb.Solver(cls(-0.9, size=2), 0.0, 2.0, ntime, comm=comm, **opts)
        r = s.solve()
        runs.append((r.iterations, np.nan_to_num(r.residual_norms, nan=-7.0).tolist(),
                     np.asarray(s.local_states()).tolist()))
    if runs[0] != runs[1]:
        bad.append((ntime, opts))
report(bad)
"""
    for nprocs in (2, 3):
        assert mpirun.json(code, nprocs, timeout=300) == [[]] * nprocs
