"""Spatial coarsening (XBraid's braid_SetSpatialCoarsen / SetSpatialRefine): per-level state shapes.

Recorded XBraid runs of ex-02 with ``-sc`` (tests/data/xbraid_advanced_reference.json,
feature ``spatial_coarsening``, and the public run ``01_ex-02_np1``) are reproduced by
the native ``Heat1D(spatial_coarsening=True)`` and by the Python App ``Ex02`` of
advanced_apps, on 1 and 2 ranks: iterations, levels, residual histories (to 1e-12
relative; they agree bit for bit), the final state and the printed discretization
error. Invariants: coarsen/refine as copies give exactly the numbers of no coarsening;
the callbacks see the shapes and levels XBraid gives them. Bad input is refused naming
the callback and the level.
"""

from __future__ import annotations

import math
from pathlib import Path

import advanced_cases as ac
import numpy as np
import pytest
from advanced_apps import diffusion_class, ex02_class
from mpi4py import MPI

import pyxbraid as xb

RUNNER = Path(__file__).resolve().parent / "scripts" / "advanced_runner.py"
ONE_RANK = ac.load_runs(nprocs=1, ids=None)
ONE_RANK = [r for r in ONE_RANK if r["feature"] == "spatial_coarsening"]


@pytest.mark.parametrize("python_app", [False, True], ids=["native", "python"])
@pytest.mark.parametrize("run", ONE_RANK, ids=[r["id"] for r in ONE_RANK])
def test_recorded_runs_one_rank(run, python_app):
    assert ac.compare(run, ac.execute(run, MPI.COMM_SELF, python_app=python_app)) == []


@pytest.mark.parametrize("nprocs", [2, 3])
@pytest.mark.parametrize("python_app", [False, True], ids=["native", "python"])
def test_recorded_runs_two_and_three_ranks(mpirun, python_app, nprocs):
    args = ["spatial_coarsening"] + (["--python"] if python_app else [])
    ranks = mpirun.json(str(RUNNER), nprocs, timeout=300, args=args)
    expected = [r["id"] for r in ac.load_runs(nprocs=nprocs) if r["feature"] == "spatial_coarsening"]
    assert ranks[0]["checked"] == expected and len(expected) == {2: 10, 3: 3}[nprocs]
    assert ranks[0]["mismatches"] == []


@pytest.mark.parametrize("python_app", [False, True], ids=["native", "python"])
def test_public_run_01(python_app):
    runs = ac.public_runs("a_spatial_coarsening")
    if not runs:
        pytest.skip("../shared/data/xbraid-advanced/public_runs.json is not here")
    run = next(r for r in runs if r["id"] == "01_ex-02_np1")
    run = dict(run, program=run["example"])
    got = ac.execute(run, MPI.COMM_SELF, python_app=python_app)
    assert ac.compare(run, got) == []
    # the numbers themselves (XBraid: 6 iterations, 4 levels, ||r_5|| = 5.042801883873144e-08)
    assert (got["iterations"], got["nlevels"]) == (6, 4)
    assert got["rnorms"][-1] == pytest.approx(5.042801883873144e-08, rel=1e-12)
    assert f"{got['discretization_error']:1.4e}" == "2.9214e-02"


def test_public_run_01_per_level_grids():
    # ex-02's own table of the grids its steps saw (last dx, dt per level, printed %.2e)
    runs = ac.public_runs("a_spatial_coarsening")
    if not runs:
        pytest.skip("../shared/data/xbraid-advanced/public_runs.json is not here")
    table = next(r for r in runs if r["id"] == "01_ex-02_np1")["extra"]["sc_info_per_level"]

    class Grids(ex02_class(coarsening=True)):
        seen = {}

        def step(self, u, ustop, fstop, status):
            self.seen[status.level] = (math.pi / (u.shape[0] - 1.0), status.dt)
            super().step(u, ustop, fstop, status)

    app = Grids(33)
    tol = 1e-7 / (math.sqrt(2 * math.pi / 63) * math.sqrt(math.pi / 32))
    xb.Solver(
        app, 0.0, 2 * math.pi, 64, comm=MPI.COMM_SELF, max_levels=4, min_coarse=3, skip=False, abs_tol=tol, max_iter=30
    ).solve()
    assert len(app.seen) == len(table) == 4
    for row in table:
        dx, dt = app.seen[row["level"]]
        assert (f"{dx:.2e}", f"{dt:.2e}", f"{dt / dx**2:.2e}") == (
            f"{row['dx']:.2e}",
            f"{row['dt']:.2e}",
            f"{row['dt_over_dx2']:.2e}",
        )


def _solve(app, **opts):
    solver = xb.Solver(app, 0.0, 2 * math.pi, 64, comm=MPI.COMM_SELF, **opts)
    result = solver.solve()
    return result, np.concatenate([solver.state_at(i) for i in range(65)])


@pytest.mark.parametrize(
    "opts",
    [
        dict(max_levels=4, min_coarse=3, skip=False, abs_tol=1e-6, max_iter=30),
        dict(max_levels=5, skip=True, fmg=True, abs_tol=1e-6, max_iter=30),
        dict(max_levels=3, cfactor=4, nrelax=2, storage=0, rel_tol=1e-10, max_iter=30),
        dict(max_levels=3, periodic=True, nrelax=[1, 1, 5], abs_tol=1e-8, max_iter=30),
        dict(max_levels=4, seq_soln=True, final_fc_relax=True, relax_only_cg=True, abs_tol=1e-8, max_iter=30),
    ],
    ids=["ml4", "ml5-skip-fmg", "ml3-cf4-storage0", "periodic", "seq-fcf-relaxcg"],
)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "res"])
def test_identity_coarsening_equals_no_coarsening_bitwise(opts, residual):
    plain, plain_states = _solve(ex02_class(residual, coarsening=False)(17), **opts)
    ident, ident_states = _solve(ex02_class(residual, coarsening="identity")(17), **opts)
    assert ident.calls["coarsen"] > 0 and ident.calls["refine"] > 0
    assert plain.calls["coarsen"] == plain.calls["refine"] == 0
    assert ident.iterations == plain.iterations
    assert np.array_equal(ident.residual_norms, plain.residual_norms, equal_nan=True)
    assert np.array_equal(ident_states, plain_states)


def test_native_heat1d_matches_the_python_app_bitwise():
    opts = dict(max_levels=5, min_coarse=3, skip=False, abs_tol=1e-7, max_iter=30, fmg=True)
    native, native_states = _solve(xb.apps.Heat1D(33, guess="xbraid", spatial_coarsening=True), **opts)
    python, python_states = _solve(ex02_class(coarsening=True)(33), **opts)
    assert np.array_equal(native.residual_norms, python.residual_norms, equal_nan=True)
    assert np.array_equal(native_states, python_states)
    assert native.calls["coarsen"] == python.calls["coarsen"] > 0
    assert native.calls["refine"] == python.calls["refine"] > 0


class _Recorder:
    """Ex02 (-sc) that records the shapes and levels the callbacks see."""

    @staticmethod
    def make():
        base = ex02_class(coarsening=True)

        class Recording(base):
            def __init__(self):
                super().__init__(33)
                self.seen = set()

            def step(self, u, ustop, fstop, status):
                self.seen.add(("step", status.level, u.shape, ustop.shape))
                super().step(u, ustop, fstop, status)

            def coarsen(self, fine, coarse, status):
                self.seen.add(("coarsen", status.level, fine.shape, coarse.shape, status.phase))
                assert status.t == status.tstart == status.tstop
                super().coarsen(fine, coarse, status)

            def refine(self, coarse, fine, status):
                self.seen.add(("refine", status.level, coarse.shape, fine.shape, status.phase))
                super().refine(coarse, fine, status)

        return Recording()


def test_callbacks_see_each_levels_shape():
    app = _Recorder.make()
    _solve(app, max_levels=6, min_coarse=1, skip=True, abs_tol=1e-6, max_iter=30)
    sizes = {0: 33, 1: 17, 2: 9, 3: 5, 4: 3, 5: 3}  # ex-02: 3 points stay 3 points

    def of(kind):
        return [e[1:] for e in app.seen if e[0] == kind]

    assert {(lv, u[0], s[0]) for lv, u, s in of("step")} == {(lv, sizes[lv], sizes[lv]) for lv in range(6)}
    coarsens = {(lv, f[0], c[0]) for lv, f, c, _ in of("coarsen")}
    assert coarsens == {(lv, sizes[lv], sizes[lv + 1]) for lv in range(5)}
    refines = {(lv, c[0], f[0]) for lv, c, f, _ in of("refine")}
    assert refines == {(lv, sizes[lv + 1], sizes[lv]) for lv in range(5)}
    phases = {e[-1] for e in app.seen if e[0] in ("coarsen", "refine")}
    assert phases == {"init", "f_restrict", "f_interp"}  # init: the skipped first down-cycle


# -- bad input ------------------------------------------------------------------------------


def _app(**methods):
    base = ex02_class(coarsening=True)
    return type("Bad", (base,), methods)(9)


@pytest.mark.parametrize(
    ("shape_at", "error", "match"),
    [
        (lambda self, level: (9,) if level == 0 else (5, 0), ValueError, r"Bad\.shape_at\(1\) returned \(5, 0\)"),
        (lambda self, level: (9,) if level == 0 else "x", ValueError, r"Bad\.shape_at\(1\) returned 'x'"),
        (lambda self, level: (9,) if level == 0 else None, TypeError, r"Bad\.shape_at\(1\) returned None"),
        (lambda self, level: (9 + level,), ValueError, r"Bad\.shape_at\(1\) gives a state of 10 elements"),
        (lambda self, level: (4,), ValueError, r"Bad\.shape_at\(0\) must be the app's shape \(9,\), got \(4,\)"),
    ],
    ids=["zero", "string", "none", "larger", "level0"],
)
def test_bad_shape_at_is_named(shape_at, error, match):
    with pytest.raises(error, match=match):
        xb.Solver(_app(shape_at=shape_at), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=3)


def test_coarsen_without_refine_and_shape_at_without_them_are_refused():
    class OnlyCoarsen(ex02_class(coarsening=False)):
        def coarsen(self, fine, coarse, status):
            coarse[:] = fine

    with pytest.raises(TypeError, match="OnlyCoarsen must define both coarsen and refine"):
        xb.Solver(OnlyCoarsen(9), 0.0, 1.0, 16, comm=MPI.COMM_SELF)

    class OnlyShape(ex02_class(coarsening=False)):
        def shape_at(self, level):
            return (9,)

    with pytest.raises(TypeError, match="OnlyShape defines shape_at but not coarsen and refine"):
        xb.Solver(OnlyShape(9), 0.0, 1.0, 16, comm=MPI.COMM_SELF)


def test_adjoint_without_transposes_and_step_batch_are_refused_with_coarsening():
    no_transposes = type("NoTransposes", (diffusion_class(True),), {"coarsen_adjoint": xb.App.coarsen_adjoint})
    with pytest.raises(TypeError, match=r"needs NoTransposes\.coarsen_adjoint\(\)"):
        xb.Solver(no_transposes(9), 0.0, 1.0, 16, comm=MPI.COMM_SELF, adjoint=True)

    def step_batch(self, u, ustop, fstop, tstart, tstop, status):
        raise AssertionError("not called")

    with pytest.raises(ValueError, match="step_batch cannot be combined with spatial coarsening"):
        xb.Solver(_app(step_batch=step_batch), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=3)


# -- the adjoint (XBraid refuses it with spatial coarsening) -------------------------------

ADJ = dict(max_levels=4, adjoint=True, abs_tol=1e-13, abs_tol_adjoint=1e-13, max_iter=60)


def _gradient(app, comm=MPI.COMM_SELF, **opts):
    solver = xb.Solver(app, 0.0, 0.25, 64, comm=comm, **{**ADJ, **opts})
    result = solver.solve()
    return result, float(solver.gradient()[0]), solver


def test_adjoint_with_coarsening_equals_backpropagation_and_finite_differences():
    app = diffusion_class(True)(17)
    result, grad, solver = _gradient(app)
    assert result.calls["coarsen_adjoint"] > 0 and result.calls["refine_adjoint"] > 0
    assert result.converged
    J, backprop = app.sequential(solver.times)
    assert result.objective == pytest.approx(J, rel=1e-13)
    assert grad == pytest.approx(backprop, rel=1e-11)  # measured: 8e-16
    h = 1e-6
    fd = (
        diffusion_class(True)(17, kappa=0.3 + h).sequential(solver.times)[0]
        - diffusion_class(True)(17, kappa=0.3 - h).sequential(solver.times)[0]
    ) / (2 * h)
    assert grad == pytest.approx(fd, rel=1e-7)
    # and the objective's own finite difference through MGRIT with coarsening
    values = []
    for kappa in (0.3 + h, 0.3 - h):
        other = xb.Solver(
            diffusion_class(True)(17, kappa=kappa),
            0.0,
            0.25,
            64,
            comm=MPI.COMM_SELF,
            **{**ADJ, "adjoint": False, "objective_only": True},
        )
        values.append(other.solve().objective)
    assert grad == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-6)
    # the adjoint iteration converges as fast as the primal one (wrong transposes would not)
    adjoint_norms = np.asarray(result.adjoint_residual_norms)
    assert adjoint_norms[-1] < 1e-13 and result.iterations <= 30


def test_adjoint_with_identity_coarsening_equals_no_coarsening_bitwise():
    plain, plain_grad, _ = _gradient(diffusion_class(False)(17))
    ident, ident_grad, _ = _gradient(diffusion_class("identity")(17))
    assert ident.calls["coarsen_adjoint"] > 0 and plain.calls["coarsen_adjoint"] == 0
    assert ident_grad == plain_grad and ident.objective == plain.objective
    assert np.array_equal(ident.adjoint_residual_norms, plain.adjoint_residual_norms, equal_nan=True)
    assert np.array_equal(ident.residual_norms, plain.residual_norms, equal_nan=True)


def test_adjoint_with_coarsening_on_two_and_three_ranks(mpirun):
    here = Path(__file__).resolve().parent
    code = f"""
import sys
sys.path[:0] = [{str(here)!r}]
from mpi4py import MPI
from advanced_apps import diffusion_class
import pyxbraid as xb

app = diffusion_class(True)(17)
solver = xb.Solver(app, 0.0, 0.25, 64, max_levels=4, adjoint=True, abs_tol=1e-13, abs_tol_adjoint=1e-13,
                   max_iter=60)
result = solver.solve()
report({{"gradient": float(solver.gradient()[0]), "backprop": app.sequential(solver.times)[1],
        "objective": result.objective, "iterations": result.iterations}})
"""
    for nprocs in (2, 3):
        ranks = mpirun.json(code, nprocs, timeout=120)
        assert len({r["gradient"] for r in ranks}) == 1
        assert ranks[0]["gradient"] == pytest.approx(ranks[0]["backprop"], rel=1e-11)


def test_coarsen_errors_reach_the_caller():
    class Boom(KeyError):
        pass

    def coarsen(self, fine, coarse, status):
        raise Boom("coarsen failed")

    solver = xb.Solver(_app(coarsen=coarsen), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=3, skip=False)
    with pytest.raises(Boom):
        solver.solve()

    def refine(self, coarse, fine, status):
        return fine + 1.0  # not in place

    solver = xb.Solver(_app(refine=refine), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=3, skip=False)
    with pytest.raises(TypeError, match=r"Bad\.refine must update its array argument in place"):
        solver.solve()

    def nan_coarsen(self, fine, coarse, status):
        coarse[:] = np.nan

    solver = xb.Solver(_app(coarsen=nan_coarsen), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=3, skip=False)
    with pytest.raises(xb.CallbackError, match=r"Bad\.coarsen .*level 0.*non-finite"):
        solver.solve()


def test_a_failing_coarsen_on_one_rank_raises_on_every_rank(mpirun):
    here = Path(__file__).resolve().parent
    code = f"""
import sys
sys.path[:0] = [{str(here)!r}, {str(here / "scripts")!r}]
from mpi4py import MPI
from reporting import outcome
import pyxbraid as xb
from advanced_apps import diffusion_class, ex02_class

class App(ex02_class(coarsening=True)):
    def coarsen(self, fine, coarse, status):
        if MPI.COMM_WORLD.Get_rank() == 1 and status.iter == 1:
            raise ZeroDivisionError("rank 1 coarsen")
        super().coarsen(fine, coarse, status)

solver = xb.Solver(App(17), 0.0, 6.283185307179586, 64, max_levels=4, skip=False, max_iter=5)
report(outcome(lambda: solver.solve().iterations))
"""
    ranks = mpirun.json(code, 2, timeout=120)
    assert ranks[1]["type"] == "ZeroDivisionError"
    assert ranks[0]["type"] == "RemoteRankError" and ranks[0]["rank"] == 1


def test_shape_at_failing_or_differing_on_one_rank(mpirun):
    here = Path(__file__).resolve().parent
    code = f"""
import sys
sys.path[:0] = [{str(here)!r}, {str(here / "scripts")!r}]
from mpi4py import MPI
from reporting import outcome
import pyxbraid as xb
from advanced_apps import ex02_class

rank = MPI.COMM_WORLD.Get_rank()

class Failing(ex02_class(coarsening=True)):
    def shape_at(self, level):
        if rank == 1 and level == 2:
            raise KeyError("rank 1 shape_at")
        return super().shape_at(level)

class Differing(ex02_class(coarsening=True)):
    def shape_at(self, level):
        return (3,) if rank == 1 and level == 2 else super().shape_at(level)

report([outcome(lambda: xb.Solver(cls(17), 0.0, 1.0, 16, max_levels=4) and "built") for cls in (Failing, Differing)])
"""
    ranks = mpirun.json(code, 2, timeout=120)
    assert ranks[1][0]["type"] == "KeyError" and "rank 1 shape_at" in ranks[1][0]["message"]
    assert ranks[0][0]["type"] == "RemoteRankError" and ranks[0][0]["rank"] == 1
    for r in ranks:
        assert r[1]["type"] == "ValueError" and "Differing.shape_at(2) differs between ranks" in r[1]["message"]


def test_float32_states_with_coarsening():
    class Smooth(xb.App):
        def __init__(self, dtype):
            super().__init__(shape=(17,), dtype=dtype)

        def shape_at(self, level):
            return (max(16 >> level, 2) + 1,)

        def init(self, t, u):
            u[:] = 1.0 if t == 0.0 else 0.5

        def step(self, u, ustop, fstop, status):
            u /= 1.0 + status.dt

        def coarsen(self, fine, coarse, status):
            assert fine.dtype == coarse.dtype == self.dtype
            coarse[:] = fine[:: (fine.size - 1) // (coarse.size - 1)]

        def refine(self, coarse, fine, status):
            fine[:] = np.interp(np.linspace(0, 1, fine.size), np.linspace(0, 1, coarse.size), coarse)

    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        solver = xb.Solver(Smooth(dtype), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=4, abs_tol=tol)
        result = solver.solve()
        assert result.converged and result.calls["coarsen"] > 0
        assert solver.state_at(16).dtype == dtype
        np.testing.assert_allclose(solver.state_at(16), (1.0 / (1.0 + 1.0 / 16)) ** 16, rtol=10 * tol)


def test_virtual_time_with_coarsening_on_two_ranks(mpirun):
    # coarse levels send their own (smaller) states; the clocked messages must agree on it
    code = """
import math
import pyxbraid as xb
runs = []
for vt in (False, True):
    heat = xb.apps.Heat1D(33, spatial_coarsening=True)
    r = xb.Solver(heat, 0.0, 2 * math.pi, 64, max_levels=5, abs_tol=1e-9, virtual_time=vt).solve()
    runs.append([r.iterations, list(r.residual_norms[1:]), r.virtual_wall_time is not None])
report(runs)
"""
    ranks = mpirun.json(code, 2, timeout=120)
    (plain, clocked) = ranks[0]
    assert plain[:2] == clocked[:2] and clocked[2] and not plain[2]


def test_heat1d_spatial_coarsening_input():
    with pytest.raises(ValueError, match="nspace - 1 to be a power of 2, got nspace=10"):
        xb.apps.Heat1D(10, spatial_coarsening=True)
    with pytest.raises(TypeError, match="spatial_coarsening must be True or False"):
        xb.apps.Heat1D(9, spatial_coarsening="yes")
    # guess="random" works with coarsening too, and converges to the sequential solution
    heat = xb.apps.Heat1D(17, spatial_coarsening=True)
    solver = xb.Solver(heat, 0.0, 2 * math.pi, 64, comm=MPI.COMM_SELF, max_levels=4, abs_tol=1e-10, max_iter=60)
    result = solver.solve()
    seq = xb.Solver(xb.apps.Heat1D(17), 0.0, 2 * math.pi, 64, comm=MPI.COMM_SELF, max_levels=1)
    seq.solve()
    assert result.calls["coarsen"] > 0
    assert np.allclose(solver.state_at(64), seq.state_at(64), rtol=0, atol=1e-9)


def test_readme_example():
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## XBraid's advanced features", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "spatial_coarsening=True" in b)
    ns = {}
    exec(compile(block, "README spatial coarsening", "exec"), ns)
    result, heat, solver = ns["result"], ns["heat"], ns["solver"]
    assert (result.iterations, result.residual_norms[-1]) == (6, 5.042801883873144e-08)
    assert f"{heat.error(solver.times[-1], solver.state_at(64)):1.4e}" == "2.9214e-02"
