"""Delta correction for native apps: the Jacobian-vector product in C++.

``pyxbraid.apps.Lorenz`` (XBraid's ex-07) replays the recorded XBraid runs on 1 and 2
ranks (and the public run 23 on 3), and equals the Python App ``Lorenz`` of
advanced_apps bit for bit (residual histories, states, Lyapunov records) on 1, 2 and 3
ranks. ``pyxbraid.apps.LinearODE`` propagates the basis by its exact (linear) step and
equals an equivalent Python App bit for bit. Native apps without a Jacobian are refused.
"""

import math
import sys
from pathlib import Path

import advanced_cases as ac
import numpy as np
import pytest
from mpi4py import MPI

import pyxbraid as xb

TESTS = Path(__file__).resolve().parent
RUNNER = TESTS / "scripts" / "advanced_runner.py"
TSTOP = math.log(10.0) / 0.9 * 4
EX07 = dict(max_levels=3, nrelax=0, abs_tol=1e-6, cfactor=2, skip=False)
EX07_ONE_RANK = [r for r in ac.load_runs(nprocs=1) if r["program"] == "ex-07"]


@pytest.mark.parametrize("run", EX07_ONE_RANK, ids=[r["id"] for r in EX07_ONE_RANK])
def test_native_lorenz_reproduces_recorded_runs_one_rank(run):
    assert ac.compare(run, ac.execute(run, MPI.COMM_SELF, native=True)) == []


def test_native_lorenz_reproduces_public_run_23():
    runs = ac.public_runs("d_delta_correction")
    if not runs:
        pytest.skip("../shared/data/xbraid-advanced/public_runs.json is not here")
    run = ac.as_recorded(runs[0])
    got = ac.execute(run, MPI.COMM_SELF, native=True)
    assert ac.compare(run, got) == []
    # what the comparison holds it to: ex-07's defaults (rank 3, Lyapunov estimation)
    assert (got["iterations"], got["nlevels"]) == (14, 3)
    assert len(got["lyap_record_at_final_index"]) == 12 and len(got["sum_local_exponents"]) == 3


@pytest.mark.parametrize("nprocs", [2, 3])
def test_native_lorenz_recorded_runs_several_ranks(mpirun, nprocs):
    # every ex-07 run recorded on as many ranks, and the public run 23 (recorded on 1 rank)
    args = ["delta", "public=d_delta_correction", "--native"]
    ranks = mpirun.json(str(RUNNER), nprocs, timeout=300, args=args)
    expected = [r["id"] for r in ac.load_runs(nprocs=nprocs) if r["feature"] == "delta"]
    expected += [r["id"] for r in ac.public_runs("d_delta_correction")]
    assert ranks[0]["checked"] == expected and expected
    assert ranks[0]["mismatches"] == []


# Option sets on which the native Lorenz must equal the Python App bit for bit.
BITWISE = {
    "rank3-lyapunov": dict(delta_rank=3, lyapunov=True),
    "rank2-no-lyapunov": dict(delta_rank=2, max_iter=30),
    "rank1-defer": dict(delta_rank=1, lyapunov=True, defer_delta=(1, 2), max_iter=40),
    "rank2-fcf-lyapunov": dict(delta_rank=2, lyapunov=True, lyapunov_relax=True, max_iter=30),
    "rank3-fmg-nu1": dict(delta_rank=3, lyapunov=True, fmg=True, nrelax=1),
    "rank3-cf4-ml2-defer-iter": dict(delta_rank=3, lyapunov=True, cfactor=4, max_levels=2, defer_delta_iter=1),
    "plain": dict(max_iter=6),
}

BITWISE_CODE = """
import math, sys
sys.path.insert(0, TESTS)
import numpy as np
from advanced_apps import Lorenz
from mpi4py import MPI
import pyxbraid as xb

comm = MPI.COMM_WORLD
out = {}
for name, opts in CASES.items():
    seen = []
    for app in (Lorenz(), xb.apps.Lorenz(record=True)):
        s = xb.Solver(app, 0.0, TSTOP, 2048, comm=comm, **{**EX07, **opts})
        r = s.solve()
        records = app.records() if isinstance(app, xb.apps.Lorenz) else app.records
        calls = dict(r.calls)
        seen.append((list(r.residual_norms), s.local_states().tolist(), sorted(records.items()), calls, r.iterations))
    out[name] = dict(equal=seen[0] == seen[1], iterations=seen[1][4], points=len(seen[1][2]))
report(out)
"""


@pytest.mark.parametrize("nprocs", [1, 2, 3])
def test_native_lorenz_equals_python_app_bitwise(mpirun, nprocs):
    cases = BITWISE if nprocs < 3 else {k: BITWISE[k] for k in ("rank3-lyapunov", "rank2-fcf-lyapunov")}
    code = (
        BITWISE_CODE.replace("TESTS", repr(str(TESTS)))
        .replace("CASES", repr(cases))
        .replace("TSTOP", repr(TSTOP))
        .replace("EX07", repr(EX07))
    )
    ranks = mpirun.json(code, nprocs, timeout=300)
    for rank in ranks:
        assert {name: r["equal"] for name, r in rank.items()} == dict.fromkeys(cases, True)
    # every point recorded once, over the ranks; ex-07 converges in 14 iterations with rank 3
    assert sum(rank["rank3-lyapunov"]["points"] for rank in ranks) == 2049
    assert ranks[0]["rank3-lyapunov"]["iterations"] == 14


def test_native_lorenz_records():
    app = xb.apps.Lorenz(record=True)
    solver = xb.Solver(app, 0.0, TSTOP / 8, 256, comm=MPI.COMM_SELF, **EX07, delta_rank=2, lyapunov=True)
    assert solver.solve().converged
    records = app.records()
    assert sorted(records) == list(range(257))
    # exponents at the C-points but index 0, zeros at the F-points; an orthonormal basis at C-points
    assert records[0][0::4] == [0.0, 0.0] and records[1][0::4] == [0.0, 0.0]
    assert all(any(records[i][0::4]) for i in range(2, 257, 2))
    basis = np.asarray(records[256]).reshape(2, 4)[:, 1:]
    np.testing.assert_allclose(basis @ basis.T, np.eye(2), atol=1e-14)
    # without record (the default) there is no access, and no delta: empty records
    quiet = xb.apps.Lorenz()
    xb.Solver(quiet, 0.0, TSTOP / 8, 256, comm=MPI.COMM_SELF, **EX07, delta_rank=1).solve()
    assert quiet.records() == {}
    plain = xb.apps.Lorenz(record=True)
    xb.Solver(plain, 0.0, TSTOP / 8, 256, comm=MPI.COMM_SELF, **EX07).solve()
    assert plain.records()[256] == []


def test_native_lorenz_parameters():
    app = xb.apps.Lorenz(sigma=9.0, rho=20.0, beta=2.0, u0=(1.0, 2.0, 3.0))
    solver = xb.Solver(app, 0.0, 0.5, 64, comm=MPI.COMM_SELF, max_levels=1)
    solver.solve()
    u, h = np.array([1.0, 2.0, 3.0]), 0.5 / 64
    for _ in range(64):
        x, y, z = u
        u = np.array([h * (9.0 * (y - x)) + x, h * (x * (20.0 - z) - y) + y, h * (x * y - 2.0 * z) + z])
    np.testing.assert_array_equal(solver.state_at(64), u)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(u0=(1.0, 2.0)), ValueError, r"u0 must be 3 finite values, got \(1.0, 2.0\)"),
        (dict(u0=(1.0, math.nan, 0.0)), ValueError, r"u0 must be 3 finite values"),
        (dict(sigma=math.inf), ValueError, r"sigma"),
        (dict(rho="x"), TypeError, r"rho"),
        (dict(record=1), TypeError, r"record must be True or False, got 1"),
    ],
)
def test_native_lorenz_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        xb.apps.Lorenz(**kwargs)


class DecayDelta(xb.App):
    """The Python twin of ``pyxbraid.apps.LinearODE(lam)`` with the step's Jacobian for the basis."""

    def __init__(self, lam, scheme):
        super().__init__(shape=(len(lam),))
        self.lam = np.asarray(lam, dtype=np.float64)
        self.scheme = scheme

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.456

    def init_basis(self, t, index, v):
        v[index] = 1.0

    def step(self, u, ustop, fstop, status):
        dt = status.tstop - status.tstart
        factor = 1.0 / (1.0 - self.lam * dt) if self.scheme == "backward_euler" else 1.0 + self.lam * dt
        u[:] = factor * u
        for psi in status.basis_vectors:
            psi[:] = factor * psi


LAM = [-1.0, -3.0, -10.0]
LINEAR = dict(max_levels=4, abs_tol=1e-10, max_iter=40)


def _sequential(lam, scheme, times):
    u = np.ones(len(lam))
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        dt = t1 - t0
        u = (1.0 / (1.0 - np.asarray(lam) * dt)) * u if scheme == "backward_euler" else (1.0 + np.asarray(lam) * dt) * u
    return u


@pytest.mark.parametrize("scheme", ["backward_euler", "forward_euler"])
def test_linear_ode_delta_exact_jacobian(scheme):
    # With the full basis (rank = size) the coarse levels step with the fine propagator's
    # Delta: 3 iterations instead of 11; the solution is sequential stepping's.
    iterations = {}
    for rank in (0, 1, 3):
        app = xb.apps.LinearODE(lam=LAM, scheme=scheme)
        solver = xb.Solver(app, 0.0, 4.0, 256, comm=MPI.COMM_SELF, **LINEAR, delta_rank=rank, lyapunov=rank == 3)
        result = solver.solve()
        assert result.converged
        iterations[rank] = result.iterations
        np.testing.assert_allclose(solver.state_at(256), _sequential(LAM, scheme, solver.times), rtol=1e-8, atol=1e-12)
    assert iterations == {0: 11, 1: 11, 3: 3}


@pytest.mark.parametrize("scheme", ["backward_euler", "forward_euler"])
@pytest.mark.parametrize("options", [dict(delta_rank=3), dict(delta_rank=2, lyapunov=True, defer_delta=(1, 1))])
def test_linear_ode_equals_python_app_bitwise(scheme, options):
    seen = []
    for app in (DecayDelta(LAM, scheme), xb.apps.LinearODE(lam=LAM, scheme=scheme)):
        solver = xb.Solver(app, 0.0, 4.0, 256, comm=MPI.COMM_SELF, **LINEAR, **options)
        result = solver.solve()
        seen.append((list(result.residual_norms), solver.local_states().copy(), dict(result.calls)))
    np.testing.assert_array_equal(seen[0][0], seen[1][0])  # NaN (skipped first norm) equals NaN
    np.testing.assert_array_equal(seen[0][1], seen[1][1])
    # the same callbacks as often: steps, init_basis, the (native Euclidean) inner products
    assert seen[0][2] == seen[1][2] and seen[1][2]["init_basis"] > 0 and seen[1][2]["inner_product"] > 0


LINEAR_CODE = """
import sys
sys.path.insert(0, TESTS)
import numpy as np
from mpi4py import MPI
import pyxbraid as xb
from test_delta_native import DecayDelta, LAM, LINEAR, _sequential

comm = MPI.COMM_WORLD
out = {}
for scheme in ("backward_euler", "forward_euler"):
    seen = []
    for app in (DecayDelta(LAM, scheme), xb.apps.LinearODE(lam=LAM, scheme=scheme)):
        s = xb.Solver(app, 0.0, 4.0, 256, comm=comm, **LINEAR, delta_rank=3, lyapunov=True)
        r = s.solve()
        seen.append((np.asarray(r.residual_norms), s.local_states().copy()))
    equal = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(seen[0], seen[1]))
    last = s.local_states()[-1] if s.iupper == 256 else None  # the rank owning the last point
    error = None if last is None else float(np.abs(last - _sequential(LAM, scheme, s.times)).max())
    out[scheme] = dict(equal=equal, iterations=r.iterations, error=error)
# a singular step (1 + lam dt = 0 on level 3) on one rank: every rank raises
app = xb.apps.LinearODE(lam=[-1.0, -3.0], scheme="forward_euler")
s = xb.Solver(app, 0.0, 4.0, 256, comm=comm, max_levels=4, cfactor=4, delta_rank=1, lyapunov=True)
out["singular"] = outcome(s.solve)
report(out)
"""


@pytest.mark.parametrize("nprocs", [2, 3])
def test_linear_ode_delta_several_ranks(mpirun, nprocs):
    code = LINEAR_CODE.replace("TESTS", repr(str(TESTS)))
    ranks = mpirun.json(code, nprocs, timeout=180)
    for scheme in ("backward_euler", "forward_euler"):
        assert all(rank[scheme]["equal"] for rank in ranks)
        assert ranks[0][scheme]["iterations"] == 3
        errors = [rank[scheme]["error"] for rank in ranks if rank[scheme]["error"] is not None]
        assert len(errors) == 1 and errors[0] < 1e-12
    failed = [rank["singular"] for rank in ranks]
    types = [f["type"] for f in failed]
    assert "RuntimeError" in types and set(types) <= {"RuntimeError", "RemoteRankError"}
    assert all("a step's Jacobian made the basis vectors linearly dependent" in f["message"] for f in failed)


def test_linear_ode_singular_step_is_reported():
    # forward Euler with 1 + lam dt = 0 on a coarse level (dt = 1 on level 3): the Jacobian
    # maps the basis to 0, which Gram-Schmidt cannot normalize
    app = xb.apps.LinearODE(lam=[-1.0, -3.0], scheme="forward_euler")
    solver = xb.Solver(app, 0.0, 4.0, 256, comm=MPI.COMM_SELF, max_levels=4, cfactor=4, delta_rank=1, lyapunov=True)
    with pytest.raises(RuntimeError, match=r"basis vector 0 has norm 0 .* a step's Jacobian made the basis vectors"):
        solver.solve()


@pytest.mark.parametrize(
    ("app", "name"),
    [
        (lambda: xb.apps.Heat1D(9), "Heat1D"),
        (lambda: xb.apps.Cubic(), "Cubic"),
    ],
)
def test_native_apps_without_jacobian_are_refused(app, name):
    with pytest.raises(
        ValueError, match=rf"{name} has no Jacobian-vector product \(a native app provides .*\); delta_rank=1 needs it"
    ):
        xb.Solver(app(), 0.0, 1.0, 16, comm=MPI.COMM_SELF, max_levels=2, delta_rank=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(delta_rank=4), r"delta_rank=4 exceeds the state size 3"),
        (dict(delta_rank=1, max_levels=1), r"delta_rank=1 needs at least 2 levels"),
        (dict(delta_rank=1, adjoint=True), r"adjoint=True"),
        (dict(delta_rank=1, richardson=True), r"delta_rank=1 cannot be combined with richardson=True yet"),
    ],
)
def test_native_lorenz_refusals(options, message):
    with pytest.raises((TypeError, ValueError), match=message):
        xb.Solver(xb.apps.Lorenz(), 0.0, 1.0, 16, comm=MPI.COMM_SELF, **{"max_levels": 2, **options})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
