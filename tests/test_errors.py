"""Errors reach the caller with a clear message, on every rank, and never hang.

Single-rank tests run in the pytest process on MPI.COMM_SELF; multi-rank tests
launch the scripts in tests/scripts/ with the ``mpirun`` fixture (small
ntime, at most 3 ranks, short timeouts).
"""

from __future__ import annotations

import math
import re
import traceback
from pathlib import Path

import numpy as np
import pytest
from apps_python import Decay as CommonDecay
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import CallbackError, DivergenceError, PyxbraidError, RemoteRankError, SolverStateError

SCRIPTS = Path(__file__).resolve().parent / "scripts"


def msg(text: str) -> str:
    return re.escape(text)


def g17(x: float) -> str:
    """A float as the engine's messages print it (C++ precision 17, %g style)."""
    return format(float(x), ".17g")


class Decay(CommonDecay):
    """The common test App with two values (tests break u[1])."""

    def __init__(self):
        super().__init__(size=2)


def solver_for(app, ntime=16, **kw):
    kw.setdefault("comm", MPI.COMM_SELF)
    kw.setdefault("max_levels", 3)
    return xb.Solver(app, 0.0, 1.0, ntime, **kw)


def test_error_hierarchy():
    assert issubclass(RemoteRankError, PyxbraidError) and issubclass(RemoteRankError, RuntimeError)
    assert issubclass(CallbackError, PyxbraidError) and issubclass(CallbackError, ValueError)
    assert issubclass(DivergenceError, PyxbraidError) and issubclass(DivergenceError, FloatingPointError)
    assert issubclass(SolverStateError, PyxbraidError) and issubclass(SolverStateError, RuntimeError)
    err = RemoteRankError("rank 3: X.step raised", 3)
    assert err.rank == 3 and str(err) == "rank 3: X.step raised"
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert type(again) is RemoteRankError and again.rank == 3 and str(again) == str(err)


# ======================================================================================
# A Python exception on one rank: that rank re-raises it, every other rank raises
# RemoteRankError naming the rank and the place; nothing hangs.
# ======================================================================================
REMOTE_CASES = [
    ("step", 3, 1),
    ("init", 3, 1),
    ("access", 3, 1),
    ("spatial_norm", 3, 1),
    ("step", 2, 0),
    ("access", 2, 0),
    ("init", 3, 2),
    ("sync", 2, 1),
]


@pytest.mark.parametrize("where, nprocs, bad", REMOTE_CASES, ids=[f"{w}-{n}ranks-bad{b}" for w, n, b in REMOTE_CASES])
def test_exception_on_one_rank(mpirun, where, nprocs, bad):
    # Every rank reports (nothing hangs: the launcher's timeout would fail the test).
    ranks = mpirun.json(str(SCRIPTS / "remote_failure.py"), nprocs, timeout=60, args=(where, str(bad)))

    # The failing rank: the original exception, its own message.
    raised = ranks[bad]["raised"]
    # (step raises in its first level-0 step of iteration 1: an FCF relaxation step)
    assert raised["phase"] == {"step": "fc_relax", "sync": "top_cycle"}.get(where, where)
    own = {
        "step": f"boom in step at t={raised.get('tstart')!r}",
        "init": f"boom in init at t={raised.get('t')!r}",
        "access": f"boom in access at t={raised.get('t')!r}",
        "spatial_norm": "boom in spatial_norm",
        "sync": "boom in sync",
    }[where]
    assert ranks[bad]["first"] == {"type": "ValueError", "rank": None, "message": own}

    # Where it happened, as the engine reports it.
    if where == "step":
        assert raised["level"] == 0 and raised["iter"] == 1
        place = (
            "Boom.step (phase fc_relax, level 0, iteration 1, "
            f"t = {g17(raised['tstart'])} -> {g17(raised['tstop'])}, tindex "
        )
    elif where == "init":
        place = f"Boom.init (phase init, level 0, iteration 0, t = {g17(raised['t'])}, tindex "
    elif where == "access":
        place = "Boom.access (phase access, level 0, iteration "
        assert f", t = {g17(raised['t'])}, tindex " in ranks[(bad + 1) % nprocs]["first"]["message"]
    elif where == "sync":
        place = "Boom.sync (phase top_cycle, iteration 1)"
    else:
        place = "Boom.spatial_norm"

    for r in range(nprocs):
        # A second solve on a failed solver: SolverStateError everywhere.
        assert ranks[r]["again"] == {
            "type": "SolverStateError",
            "rank": None,
            "message": "this solver stopped after an error in an earlier solve() and "
            "cannot be reused; create a new Solver",
        }
        if r == bad:
            continue
        first = ranks[r]["first"]
        assert first["type"] == "RemoteRankError" and first["rank"] == bad
        assert first["message"].startswith(f"rank {bad}: {place}"), first["message"]
        assert f" raised ValueError: {own}" in first["message"]
        # The remote traceback names the user's callback.
        assert re.search(rf"remote_failure\.py\(\d+\): {where}\n", first["message"]), first["message"]


# ======================================================================================
# Single rank: the original exception, type, identity and traceback
# ======================================================================================
class MyAppError(Exception):
    """A user exception class that must survive unchanged."""

    def __init__(self, message, payload):
        super().__init__(message)
        self.payload = payload


def test_original_exception_and_traceback_reach_the_caller():
    class Raising(Decay):
        def step(self, u, ustop, fstop, status):
            if status.iter == 1 and status.level == 0:
                self.remember(status)
                raise KeyError(f"no data at t={status.tstart}")
            super().step(u, ustop, fstop, status)

    app = Raising()
    with pytest.raises(KeyError) as excinfo:
        solver_for(app).solve()
    assert type(excinfo.value) is KeyError
    assert excinfo.value.args == (f"no data at t={app.where[3]}",)
    frames = traceback.extract_tb(excinfo.tb)
    user = [f for f in frames if f.name == "step" and f.filename == __file__]
    assert len(user) == 1
    assert "raise KeyError" in user[0].line
    # The call chain goes through Solver.solve.
    assert any(f.name == "solve" and f.filename.endswith("solver.py") for f in frames)


def test_custom_exception_survives_as_itself():
    raised = []

    class Raising(Decay):
        def init(self, t, u):
            if t > 0.5:
                err = MyAppError(f"bad init at {t}", payload={"t": t})
                raised.append(err)
                raise err
            super().init(t, u)

    with pytest.raises(MyAppError) as excinfo:
        solver_for(Raising()).solve()
    assert type(excinfo.value) is MyAppError
    assert excinfo.value is raised[0]  # the very object, not a copy or a downcast
    assert excinfo.value.payload == {"t": raised[0].payload["t"]}
    assert raised[0].payload["t"] > 0.5
    assert not isinstance(excinfo.value, PyxbraidError)
    assert any(f.name == "init" and f.filename == __file__ for f in traceback.extract_tb(excinfo.tb))


@pytest.mark.parametrize("callback", ["init", "step", "access", "spatial_norm", "residual"])
def test_exception_type_preserved_in_every_callback(callback):
    class Raising(Decay):
        def init(self, t, u):
            if callback == "init" and t > 0.0:
                raise MyAppError("init", 1)
            super().init(t, u)

        def step(self, u, ustop, fstop, status):
            if callback == "step" and status.level == 1:
                raise MyAppError("step", 2)
            if fstop is not None:
                u += fstop
            super().step(u, ustop, fstop, status)

        def residual(self, ustop, r, status):
            if callback == "residual":
                raise MyAppError("residual", 3)
            r[...] = (1.0 + status.dt) * ustop - r

        def access(self, u, status):
            if callback == "access":
                raise MyAppError("access", 4)

        def spatial_norm(self, u):
            if callback == "spatial_norm":
                raise MyAppError("spatial_norm", 5)
            return float(np.linalg.norm(u))

    with pytest.raises(MyAppError, match=f"^{callback}$") as excinfo:
        solver_for(Raising()).solve()
    assert any(f.name == callback and f.filename == __file__ for f in traceback.extract_tb(excinfo.tb))


def test_solver_unusable_after_callback_exception():
    class Raising(Decay):
        def step(self, u, ustop, fstop, status):
            if status.iter == 1:
                raise RuntimeError("once")
            super().step(u, ustop, fstop, status)

    solver = solver_for(Raising())
    with pytest.raises(RuntimeError, match="^once$"):
        solver.solve()
    for _ in range(2):
        with pytest.raises(
            SolverStateError,
            match=msg(
                "this solver stopped after an error in an earlier solve() and cannot be reused; create a new Solver"
            ),
        ):
            solver.solve()
    # A new solver on the same app (fixed) works.
    ok = solver_for(Decay())
    assert ok.solve().converged


@pytest.mark.parametrize("failure", ["exception", "nan"])
def test_state_queries_after_failed_solve(failure):
    class Broken(Decay):
        calls_after = 0

        def step(self, u, ustop, fstop, status):
            if status.level == 1:
                if failure == "exception":
                    raise RuntimeError("broken")
                u[0] = math.nan
                return
            super().step(u, ustop, fstop, status)

    solver = solver_for(Broken())
    with pytest.raises((RuntimeError, CallbackError)):
        solver.solve()
    with pytest.raises(SolverStateError):
        solver.state_at(16)
    with pytest.raises(SolverStateError):
        solver.local_states()


# ======================================================================================
# Results that callbacks must not produce
# ======================================================================================
def test_step_producing_nan_is_callback_error():
    class Poison(Decay):
        def step(self, u, ustop, fstop, status):
            super().step(u, ustop, fstop, status)
            if status.level == 1 and self.where is None:
                self.remember(status)
                u[1] = math.nan

    app = Poison()
    with pytest.raises(CallbackError) as excinfo:
        solver_for(app).solve()
    phase, level, it, t0, t1 = app.where
    assert level == 1
    assert str(excinfo.value) == (
        f"rank 0: Poison.step (phase {phase}, level 1, iteration {it}, t = {g17(t0)} -> {g17(t1)}, "
        f"tindex {round(t0 * 8)}): produced a non-finite value (nan at flat index 1)"
    )


def test_step_returning_new_array_is_type_error():
    class Rebinding(Decay):
        def step(self, u, ustop, fstop, status):
            return u * 2

    with pytest.raises(
        TypeError,
        match=msg(
            "Rebinding.step must update its array argument in place and return None "
            "(write u[...] = ... or use in-place operators); it returned a numpy.ndarray"
        ),
    ):
        solver_for(Rebinding()).solve()


def test_init_returning_something_is_type_error():
    class Returning(Decay):
        def init(self, t, u):
            super().init(t, u)
            return 0

    with pytest.raises(TypeError, match=r"Returning\.init must update its array argument in place .* returned a int"):
        solver_for(Returning()).solve()


def test_step_returning_u_itself_is_accepted():
    class ReturnsU(Decay):
        def step(self, u, ustop, fstop, status):
            super().step(u, ustop, fstop, status)
            return u

    a, b = solver_for(ReturnsU()), solver_for(Decay())
    ra, rb = a.solve(), b.solve()
    assert ra.converged and ra.iterations == rb.iterations
    np.testing.assert_array_equal(ra.residual_norms, rb.residual_norms)
    np.testing.assert_array_equal(a.local_states(), b.local_states())


def test_init_producing_inf_is_callback_error():
    class Infinite(Decay):
        def init(self, t, u):
            super().init(t, u)
            if t > 0.5 and self.where is None:
                self.where = t
                u[1] = -math.inf

    app = Infinite()
    with pytest.raises(CallbackError) as excinfo:
        solver_for(app).solve()
    t = app.where
    assert str(excinfo.value) == (
        f"rank 0: Infinite.init (phase init, level 0, iteration 0, t = {g17(t)}, tindex {round(t * 16)}): "
        "produced a non-finite value (-inf at flat index 1)"
    )


def test_residual_producing_nan_is_callback_error():
    class BadResidual(Decay):
        def residual(self, ustop, r, status):
            r[...] = math.nan

    with pytest.raises(
        CallbackError,
        match=r"^rank 0: BadResidual\.residual \(phase \w+, level \d, iteration \d+, "
        r"t = .* -> .*\): produced a non-finite value \(nan at flat index 0\)$",
    ):
        solver_for(BadResidual()).solve()


@pytest.mark.parametrize("value, name", [("1.0", "str"), (None, "NoneType"), ([1.0], "list")])
def test_spatial_norm_not_a_number_is_type_error(value, name):
    class BadNorm(Decay):
        def spatial_norm(self, u):
            return value

    with pytest.raises(TypeError, match=msg(f"BadNorm.spatial_norm must return a real number, got {name}")):
        solver_for(BadNorm()).solve()


@pytest.mark.parametrize("value, shown", [(-1.0, "-1"), (math.nan, "nan"), (-math.inf, "-inf")])
def test_spatial_norm_negative_or_nan_is_callback_error(value, shown):
    class BadNorm(Decay):
        def spatial_norm(self, u):
            return value

    with pytest.raises(
        CallbackError,
        match=msg(
            f"rank 0: BadNorm.spatial_norm (phase f_restrict, level 0, iteration 1, t = 0.9375 -> 1, tindex 15): "
            f"returned {shown}; a norm must be a number >= 0"
        ),
    ):
        solver_for(BadNorm()).solve()


@pytest.mark.parametrize(
    "convert",
    [float, np.float64, np.float32, lambda v: int(round(v * 1e6))],
    ids=["float", "np.float64", "np.float32", "int"],
)
def test_spatial_norm_real_number_types_accepted(convert):
    class Norm(Decay):
        def spatial_norm(self, u):
            return convert(np.sqrt(np.sum(u * u)))

    result = solver_for(Norm(), abs_tol=1e-300, max_iter=3).solve()
    assert result.iterations == 3
    assert np.all(np.isfinite(result.residual_norms[1:]))


# ======================================================================================
# Divergence of an explicit scheme on coarse levels
# ======================================================================================
# Forward Euler for u' = lam u on [0, 1], ntime = 2048, two levels. The fine grid
# has lam*dt = -0.9 (stable, |1 + lam dt| = 0.1); coarse steps are cfactor
# times larger:
#  * lam = -1843.2, cfactor = 4: coarse |1 - 3.6| = 2.6 over 512 steps, the
#    coarse states reach ~1e200 (finite) but the squared residual overflows:
#    the residual norm is inf -> DivergenceError at iteration 1.
#  * lam = -3072, cfactor = 2: fine lam*dt = -1.5, coarse |1 - 3| = 2 over 1024
#    steps: 2^1024 overflows inside the last coarse step -> CallbackError from
#    the finiteness check of that step's output.
DIVERGES = dict(lam=-1843.2, cfactor=4)
OVERFLOWS = dict(lam=-3072.0, cfactor=2)


def explicit_solver(lam, cfactor, comm=MPI.COMM_SELF):
    app = xb.apps.LinearODE(lam=lam, scheme="forward_euler")
    return xb.Solver(app, 0.0, 1.0, 2048, comm=comm, max_levels=2, cfactor=cfactor, max_iter=30)


DIVERGENCE_MESSAGE = (
    "MGRIT diverged: residual norm is inf at iteration {it} (check the step function and the time step "
    "on coarse levels: coarse steps are cfactor^level times larger)"
)


def test_divergence_error():
    solver = explicit_solver(**DIVERGES)
    with pytest.raises(DivergenceError) as excinfo:
        solver.solve()
    assert isinstance(excinfo.value, FloatingPointError)
    assert str(excinfo.value) == DIVERGENCE_MESSAGE.format(it=1)
    # The iterate holds non-finite values: the solver cannot be reused (every
    # rank raised together, since the norm is reduced, so no notice is sent).
    with pytest.raises(SolverStateError):
        solver.solve()


def test_overflowing_coarse_step_is_callback_error():
    solver = explicit_solver(**OVERFLOWS)
    with pytest.raises(CallbackError) as excinfo:
        solver.solve()
    assert not isinstance(excinfo.value, DivergenceError)
    assert str(excinfo.value) == (
        "rank 0: LinearODE.step (phase f_interp, level 1, iteration 0, t = 0.9990234375 -> 1, tindex 1023): "
        "produced a non-finite value (inf at flat index 0)"
    )
    with pytest.raises(SolverStateError):
        solver.solve()


def test_stable_configuration_converges():
    # Same grid, a milder lam: the coarse steps stay stable enough.
    solver = explicit_solver(lam=-1024.0, cfactor=2)  # fine lam*dt = -0.5, coarse -1.0
    assert solver.solve().converged


AGAIN = {
    "type": "SolverStateError",
    "rank": None,
    "message": "this solver stopped after an error in an earlier solve() and cannot be reused; create a new Solver",
}


@pytest.mark.parametrize("nprocs", [2, 3])
def test_divergence_raises_on_every_rank(mpirun, nprocs):
    ranks = mpirun.json(str(SCRIPTS / "all_ranks_raise.py"), nprocs, timeout=60, args=("divergence",))
    for r in range(nprocs):
        assert ranks[r]["first"] == {
            "type": "DivergenceError",
            "rank": None,
            "message": DIVERGENCE_MESSAGE.format(it=1),
        }
        assert ranks[r]["again"] == AGAIN


@pytest.mark.parametrize("nprocs", [2, 3])
def test_overflow_raises_on_every_rank(mpirun, nprocs):
    ranks = mpirun.json(str(SCRIPTS / "all_ranks_raise.py"), nprocs, timeout=60, args=("nonfinite",))
    # The overflowing step is the last coarse step (t -> 1), on the last rank.
    where = "LinearODE.step (phase f_interp, level 1, iteration 0, t = 0.9990234375 -> 1, tindex 1023)"
    last = nprocs - 1
    assert ranks[last]["first"] == {
        "type": "CallbackError",
        "rank": None,
        "message": f"rank {last}: {where}: produced a non-finite value (inf at flat index 0)",
    }
    for r in range(nprocs - 1):
        assert ranks[r]["first"] == {
            "type": "RemoteRankError",
            "rank": last,
            "message": f"rank {last}: {where} failed: produced a non-finite value (inf at flat index 0)",
        }
    for r in range(nprocs):
        assert ranks[r]["again"] == AGAIN


# ======================================================================================
# Communicator
# ======================================================================================
@pytest.mark.parametrize(
    "comm, name",
    [(MPI.COMM_WORLD.py2f(), "int"), ("world", "str"), (MPI.Info(), "Info")],
    ids=["fortran-handle", "str", "Info"],
)
def test_wrong_communicator_type(comm, name):
    with pytest.raises(TypeError, match=msg(f"comm must be an mpi4py.MPI.Comm (e.g. MPI.COMM_WORLD), got {name}")):
        xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, comm=comm)


@pytest.mark.parametrize(
    "comm", [MPI.COMM_NULL, MPI.Comm(), MPI.Intracomm()], ids=["COMM_NULL", "Comm()", "Intracomm()"]
)
def test_null_communicator(comm):
    with pytest.raises(ValueError, match=msg("comm is MPI.COMM_NULL")):
        xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, comm=comm)


# ======================================================================================
# Progress output: rank 0 only
# ======================================================================================
def test_print_level_1_one_line_per_iteration(capsys):
    solver = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 64, comm=MPI.COMM_SELF, print_level=1)
    result = solver.solve()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + result.iterations
    assert lines[0] == "  Braid: Begin simulation, 64 time steps"
    assert re.fullmatch(r"  Braid: \|\| r_0 \|\| not available, wall time = \S+", lines[1])
    for k in range(1, result.iterations):
        m = re.fullmatch(rf"  Braid: \|\| r_{k} \|\| = (\S+), wall time = (\S+)", lines[1 + k])
        assert m, lines[1 + k]
        assert float(m.group(1)) == pytest.approx(result.residual_norms[k], rel=1e-6)
    # A warm restart prints its iterations only (no second "Begin simulation").
    again = solver.solve()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == again.iterations
    assert lines[0].startswith("  Braid: || r_0 || = ")


def test_print_level_2_adds_summary(capsys):
    solver = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 64, comm=MPI.COMM_SELF, print_level=2)
    result = solver.solve()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + result.iterations
    assert re.fullmatch(
        rf"  Braid: converged after {result.iterations} iterations, 6 levels \[65, 33, 17, 9, 5, 3\], "
        rf"{result.step_calls_all_ranks} steps, wall time \S+ s",
        lines[-1],
    )


@pytest.mark.parametrize("print_level", [1, 2])
def test_print_only_on_rank_0(mpirun, print_level):
    ranks = mpirun.json(str(SCRIPTS / "print_ranks.py"), 2, timeout=120, args=(str(print_level),))
    iterations = ranks[0]["iterations"]
    assert iterations == ranks[1]["iterations"] > 1
    rank0 = ranks[0]["lines"]
    assert len(rank0) == 1 + iterations + (print_level >= 2)
    assert ranks[1]["lines"] == []
    assert rank0[0] == "  Braid: Begin simulation, 16 time steps"
    assert [line.split("||")[1].strip() for line in rank0[1 : 1 + iterations]] == [f"r_{k}" for k in range(iterations)]


def test_progress_output_failure_does_not_hang(mpirun):
    ranks = mpirun.json(str(SCRIPTS / "progress_failure.py"), 2, timeout=60)
    assert ranks[0] == {"type": "BrokenPipeError", "rank": None, "message": "stdout closed"}
    assert ranks[1]["type"] == "RemoteRankError" and ranks[1]["rank"] == 0


# ======================================================================================
# State queries on several ranks
# ======================================================================================
def test_failure_in_on_demand_sweep_raises_on_every_rank(mpirun):
    ranks = mpirun.json(str(SCRIPTS / "state_query_failure.py"), 3, timeout=60, args=("ondemand",))
    assert all("ok" in ranks[r]["solve"] for r in range(3))
    assert ranks[1]["state_at"] == {"type": "ValueError", "rank": None, "message": "boom in the on-demand sweep"}
    for r in (0, 2):
        got = ranks[r]["state_at"]
        assert got["type"] == "RemoteRankError" and got["rank"] == 1
        assert got["message"].startswith("rank 1: Decay.step (phase state_query, level 0, "), got


def test_state_at_after_failed_solve_does_not_hang(mpirun):
    ranks = mpirun.json(str(SCRIPTS / "state_query_failure.py"), 3, timeout=60, args=("after_failure",))
    assert ranks[1]["solve"] == {"type": "ValueError", "rank": None, "message": "boom in solve"}
    for r in (0, 2):
        got = ranks[r]["solve"]
        assert got["type"] == "RemoteRankError" and got["rank"] == 1
        assert got["message"].startswith("rank 1: Decay.step (phase fc_relax"), got
    for r in range(3):
        assert ranks[r]["state_at"]["type"] == "SolverStateError", ranks[r]


DIFFERING_ARGS = """
from mpi4py import MPI
import pyxbraid as xb
comm = MPI.COMM_WORLD
case = "CASE"
kw = dict(max_levels=3, abs_tol=1e-8)
ntime = 32
if case == "max_iter" and comm.rank == 1:
    kw["max_iter"] = 7
if case == "ntime" and comm.rank == 2:
    ntime = 33
if case == "invalid" and comm.rank == 1:
    kw["cfactor"] = 1
result = outcome(lambda: xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, ntime, comm=comm, **kw).solve().iterations)
comm.Barrier()  # the communicator is still usable: nothing hung
report(result)
"""


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "max_iter",
            "max_iter differs between ranks (from 7 to 100): every rank must build the Solver with the same "
            "problem and options",
        ),
        (
            "ntime",
            "ntime differs between ranks (from 32 to 33): every rank must build the Solver with the same "
            "problem and options",
        ),
    ],
)
def test_options_differing_between_ranks_raise_everywhere(mpirun, case, message):
    ranks = mpirun.json(DIFFERING_ARGS.replace("CASE", case), 3, timeout=60)
    assert ranks == [{"type": "ValueError", "rank": None, "message": message}] * 3


def test_one_rank_rejecting_its_arguments_stops_all(mpirun):
    ranks = mpirun.json(DIFFERING_ARGS.replace("CASE", "invalid"), 3, timeout=60)
    remote = {
        "type": "RemoteRankError",
        "rank": 1,
        "message": "rank 1 rejected its Solver arguments: ValueError: cfactor must be >= 2, got 1",
    }
    assert ranks == [remote, {"type": "ValueError", "rank": None, "message": "cfactor must be >= 2, got 1"}, remote]
