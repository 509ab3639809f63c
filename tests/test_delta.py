"""Low-rank Delta correction with Lyapunov vectors (XBraid's braid_SetDeltaCorrection).

The recorded XBraid runs of ex-07 (Lorenz) are replayed in test_advanced_reference.py
on 1, 2 and 3 ranks (the native ``apps.Lorenz``: test_delta_native.py); here: the invariants, what callbacks see, and the errors.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from advanced_apps import Lorenz
from mpi4py import MPI

import pyxbraid as xb

TESTS = Path(__file__).resolve().parent
TSTOP = math.log(10.0) / 0.9 * 4
EX07 = dict(max_levels=3, nrelax=0, abs_tol=1e-6, cfactor=2, skip=False)


def lorenz(ntime=256, app=None, **options):
    app = app or Lorenz()
    solver = xb.Solver(app, 0.0, TSTOP / 8, ntime, comm=MPI.COMM_SELF, **{**EX07, **options})
    return solver, solver.solve(), app


def test_delta_rank_zero_and_unused_basis_are_plain_mgrit_bitwise():
    # Without delta correction, and with the basis carried but never used (deferred past
    # the last iteration), the states and residuals are those of plain MGRIT, bit for bit.
    plain, r0, _ = lorenz(max_iter=12)
    zero, r1, _ = lorenz(max_iter=12, delta_rank=0)
    unused, r2, _ = lorenz(max_iter=12, delta_rank=3, defer_delta=(0, 1000))
    assert list(r0.residual_norms) == list(r1.residual_norms) == list(r2.residual_norms)
    np.testing.assert_array_equal(plain.local_states(), zero.local_states())
    np.testing.assert_array_equal(plain.local_states(), unused.local_states())


def test_delta_converges_where_plain_mgrit_does_not():
    _, with_delta, _ = lorenz(ntime=2048, app=Lorenz(), max_iter=30, delta_rank=3, lyapunov=True)
    solver = xb.Solver(Lorenz(), 0.0, TSTOP, 2048, comm=MPI.COMM_SELF, **EX07, max_iter=30)
    without = solver.solve()
    assert with_delta.converged and not without.converged


def test_defer_delta_pair_is_the_two_options():
    _, a, _ = lorenz(delta_rank=2, lyapunov=True, defer_delta=(1, 2))
    _, b, _ = lorenz(delta_rank=2, lyapunov=True, defer_delta_level=1, defer_delta_iter=2)
    assert list(a.residual_norms) == list(b.residual_norms)


class Seen(Lorenz):
    """Lorenz that records what step and access are told."""

    def __init__(self):
        super().__init__()
        self.steps = []  # (phase, level, number of basis vectors)
        self.access_seen = {}

    def step(self, u, ustop, fstop, status):
        self.steps.append((status.phase, status.level, len(status.basis_vectors)))
        super().step(u, ustop, fstop, status)

    def access(self, u, status):
        super().access(u, status)
        basis = status.basis_vectors
        self.access_seen[status.tindex] = (status.lyapunov_exponents.copy(), [b.flags.writeable for b in basis])


def test_what_callbacks_see():
    app = Seen()
    solver, result, _ = lorenz(app=app, delta_rank=2, lyapunov=True)
    assert result.converged
    phases = {(p, lvl, k) for p, lvl, k in app.steps}
    # FRestrict always propagates; the coarsest level and FInterp with lyapunov; the
    # final FC sweep of level 0 too (it computes the exponents)
    assert ("f_restrict", 0, 2) in phases and ("f_interp", 1, 2) in phases and ("fc_relax", 0, 2) in phases
    assert all(k in (0, 2) for _, _, k in app.steps)
    # exponents at C-points but index 0; zeros at F-points; the basis is read-only in access
    exps0, writable = app.access_seen[0]
    assert not exps0.any() and writable == [False, False]
    assert not app.access_seen[1][0].any()
    assert all(app.access_seen[i][0].any() for i in range(2, 257, 2))
    # orthonormal basis at the C-points (Gram-Schmidt after the step)
    rec = np.asarray(app.records[256]).reshape(2, 4)[:, 1:]
    np.testing.assert_allclose(rec @ rec.T, np.eye(2), atol=1e-14)
    # without lyapunov: no exponents, and no basis propagated outside FRestrict
    app = Seen()
    lorenz(app=app, delta_rank=2)
    assert not any(e.any() for e, _ in app.access_seen.values())
    assert {p for p, _, k in app.steps if k} == {"f_restrict", "residual"}


class WeightedInner(Lorenz):
    """Lorenz with a user inner product (a weighted one)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def inner_product(self, u, v):
        self.calls += 1
        return float(2.0 * np.dot(u, v))


def test_user_inner_product_is_used():
    app = WeightedInner()
    _, result, _ = lorenz(app=app, delta_rank=3, lyapunov=True)
    assert app.calls > 0 and result.converged
    assert result.calls["inner_product"] == app.calls
    _, plain, _ = lorenz(delta_rank=3, lyapunov=True)
    assert plain.calls["inner_product"] > 0  # the Euclidean default is counted too


class NoBasis(xb.App):
    def __init__(self):
        super().__init__(shape=(2,))

    def init(self, t, u):
        u[:] = 1.0

    def step(self, u, ustop, fstop, status):
        u *= 0.5


class Dependent(Lorenz):
    def init_basis(self, t, index, v):
        v[0] = 1.0  # every basis vector the same


class Residual(Lorenz):
    def residual(self, ustop, r, status):
        r[:] = ustop - r


class Batched(Lorenz):
    def step_batch(self, u, ustop, fstop, tstart, tstop, status):
        raise AssertionError("not called")


@pytest.mark.parametrize(
    ("app", "options", "error", "message"),
    [
        (Lorenz, dict(lyapunov=True), ValueError, r"lyapunov=True needs delta_rank >= 1"),
        (Lorenz, dict(lyapunov_relax=True), ValueError, r"lyapunov_relax=True needs delta_rank >= 1"),
        (Lorenz, dict(delta_rank=-1), ValueError, r"delta_rank must be >= 0, got -1"),
        (Lorenz, dict(delta_rank=1, defer_delta_level=-1), ValueError, r"defer_delta_level must be >= 0"),
        (Lorenz, dict(delta_rank=4), ValueError, r"delta_rank=4 exceeds the state size 3"),
        (NoBasis, dict(delta_rank=1), ValueError, r"NoBasis defines no init_basis; delta_rank=1 needs it"),
        (Lorenz, dict(delta_rank=1, periodic=True), ValueError, r"delta_rank=1 cannot be combined with periodic"),
        (Lorenz, dict(delta_rank=2, max_levels=1), ValueError, r"delta_rank=2 needs at least 2 levels"),
        (Lorenz, dict(delta_rank=1, seq_soln=True), ValueError, r"delta_rank=1 cannot be combined with seq_soln"),
        (Residual, dict(delta_rank=1), ValueError, r"delta_rank=1 cannot be combined with a user residual"),
        (
            Residual,
            dict(delta_rank=1, full_residual_norm=True),
            ValueError,
            r"delta_rank=1 cannot be combined with full_residual_norm",
        ),
        (Batched, dict(delta_rank=1), ValueError, r"delta_rank=1 cannot be combined with step_batch"),
        (
            Lorenz,
            dict(delta_rank=1, refine=True),
            ValueError,
            r"delta_rank=1 cannot be combined with refine=True \(temporal refinement\) yet",
        ),
        (Lorenz, dict(delta_rank=1, defer_delta=(1,)), ValueError, r"defer_delta must be a pair"),
        (Lorenz, dict(delta_rank=1, defer_delta="ab"), ValueError, r"defer_delta must be a pair"),
        (
            Lorenz,
            dict(delta_rank=1, defer_delta=(1, 1), defer_delta_iter=2),
            ValueError,
            r"give defer_delta=\(level, iteration\) or defer_delta_level / defer_delta_iter, not both",
        ),
    ],
)
def test_errors_name_the_option(app, options, error, message):
    with pytest.raises(error, match=message):
        xb.Solver(app(), 0.0, 1.0, 16, comm=MPI.COMM_SELF, **{"max_levels": 2, **options})


class LorenzShell(Lorenz):
    def __init__(self):
        super().__init__()
        xb.App.__init__(self, shape=(3,), shell_shape=(1,))

    def init_shell(self, t, shell):
        shell[:] = t


class LorenzCoarsened(Lorenz):
    def coarsen(self, fine, coarse, status):
        coarse[:] = fine

    def refine(self, coarse, fine, status):
        fine[:] = coarse


@pytest.mark.parametrize(
    ("app", "options", "feature"),
    [
        (LorenzShell, dict(), r"shells \(shell_shape\)"),
        (LorenzCoarsened, dict(), r"spatial coarsening \(the app's coarsen and refine\) yet"),
        (Lorenz, dict(richardson=True), r"richardson=True yet"),
        (Lorenz, dict(error_estimation=True), r"error_estimation=True yet"),
    ],
)
def test_combinations_not_checked_against_xbraid_are_refused(app, options, feature):
    # Delta correction with shells, spatial coarsening, Richardson extrapolation or error
    # estimation has no XBraid run to check it against: refused at construction, naming both.
    with pytest.raises(ValueError, match=r"delta_rank=1 cannot be combined with " + feature):
        xb.Solver(app(), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=2, delta_rank=1, **options)
    # without delta correction the same app and options are accepted
    xb.Solver(app(), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=2, max_iter=3, **options).solve()


class Lorenz32(Lorenz):
    def __init__(self):
        super().__init__()
        self.dtype = np.dtype(np.float32)


def test_float32_is_refused():
    with pytest.raises(ValueError, match=r"delta_rank=1 needs float64 states"):
        xb.Solver(Lorenz32(), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=2, delta_rank=1)


@pytest.mark.parametrize("name", ["lyapunov", "lyapunov_relax"])
@pytest.mark.parametrize("value", [2, 0.5, "yes", None])
def test_bad_bool_is_type_error(name, value):
    with pytest.raises(TypeError, match=rf"{name} must be True/False \(or 0/1\), got {value!r}"):
        xb.Solver(Lorenz(), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=2, delta_rank=1, **{name: value})


def test_adjoint_is_refused():
    from adjoint_cases import DecayAdjoint  # noqa: PLC0415 (a test helper)

    class WithBasis(DecayAdjoint):
        def init_basis(self, t, index, v):
            v.flat[index] = 1.0

    with pytest.raises(ValueError, match=r"delta_rank=1 cannot be combined with adjoint=True"):
        xb.Solver(WithBasis(), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=2, delta_rank=1, adjoint=True)


def test_dependent_basis_and_iterate_are_refused():
    with pytest.raises(RuntimeError, match="basis vector 1 has norm 0 in the Gram-Schmidt"):
        lorenz(app=Dependent(), delta_rank=2)
    solver, _, _ = lorenz(delta_rank=1)
    with pytest.raises(NotImplementedError, match=r"iterate\(\) is not available with delta correction"):
        solver.iterate()


def test_init_basis_failure_reaches_every_rank(mpirun):
    code = """
import sys
sys.path.insert(0, TESTS)
from advanced_apps import Lorenz
from mpi4py import MPI
import pyxbraid as xb

class Fails(Lorenz):
    def init_basis(self, t, index, v):
        if MPI.COMM_WORLD.Get_rank() == 1 and index == 1:
            raise KeyError("no basis here")
        super().init_basis(t, index, v)

class InnerFails(Lorenz):
    def inner_product(self, u, v):
        if MPI.COMM_WORLD.Get_rank() == 0:
            raise ZeroDivisionError("bad inner product")
        return float(u @ v)

out = {}
for name, cls in (("init_basis", Fails), ("inner_product", InnerFails)):
    s = xb.Solver(cls(), 0.0, 1.0, 64, comm=MPI.COMM_WORLD, max_levels=3, nrelax=0, delta_rank=2)
    out[name] = outcome(lambda: s.solve().iterations)
report(out)
""".replace("TESTS", repr(str(TESTS)))
    ranks = mpirun.json(code, 2, timeout=120)
    assert ranks[1]["init_basis"]["type"] == "KeyError" and "no basis here" in ranks[1]["init_basis"]["message"]
    assert ranks[0]["init_basis"]["type"] == "RemoteRankError"
    assert "Fails.init_basis" in ranks[0]["init_basis"]["message"]
    assert ranks[0]["inner_product"]["type"] == "ZeroDivisionError"
    assert ranks[1]["inner_product"]["type"] == "RemoteRankError"
    assert "InnerFails.inner_product" in ranks[1]["inner_product"]["message"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
