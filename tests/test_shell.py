"""Shell vectors (XBraid's braid_SetShell): ``App(shell_shape=...)``.

XBraid parity (ex-01-expanded-bdf2 on 1 and 2 ranks) is in test_advanced_reference.py;
here: what shells promise on their own -- an app that ignores its shells computes
bit for bit what it computes without them, every step sees its target point's
shell (also where storage keeps only a shell), shells travel between ranks and
reach the solution, and the errors name what is wrong.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from advanced_apps import Bdf2
from apps_python import Decay
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

import pyxbraid as xb

COMM = MPI.COMM_SELF
TESTS = Path(__file__).resolve().parent


class GuessDecay(Decay):
    """Backward Euler whose result also depends on ustop's values (an implicit solver's guess)."""

    def step(self, u, ustop, fstop, status):
        if fstop is not None:
            u += fstop
        u[...] = (u + 0.25 * ustop) / (1.0 + (status.tstop - status.tstart) + 0.25)


class IgnoringShells(GuessDecay):
    """GuessDecay with shells it fills but never reads."""

    def __init__(self, *args, shell_shape=(3,), **kwargs):
        super().__init__(*args, **kwargs)
        self.shell_shape = xb.app._as_shell_shape(shell_shape)

    def init(self, t, u):
        super().init(t, u)
        u.shell[...] = -t

    def init_shell(self, t, shell):
        shell[...] = t


class IgnoringShellsWithResidual(IgnoringShells):
    def residual(self, ustop, r, status):
        r[...] = (1.0 + (status.tstop - status.tstart) + 0.25) * ustop - r - 0.25 * ustop


class GuessDecayWithResidual(GuessDecay):
    def residual(self, ustop, r, status):
        r[...] = (1.0 + (status.tstop - status.tstart) + 0.25) * ustop - r - 0.25 * ustop


class TimeShells(xb.App):
    """Backward Euler carrying its time as shell; every step checks and records its target's shell."""

    def __init__(self, dtype=np.float64, size=1):
        super().__init__(shape=(size,), dtype=dtype, shell_shape=(2,))
        self.seen = []  # (level, phase, tstop, ustop.shell[0], ustop is u)
        self.init_shells = []

    def init(self, t, u):
        u[...] = 1.0 if t == 0.0 else 0.5
        u.shell = [t, 1.0]

    def init_shell(self, t, shell):
        self.init_shells.append(t)
        shell[0], shell[1] = t, 2.0

    def step(self, u, ustop, fstop, status):
        self.seen.append((status.level, status.phase, status.tstop, float(ustop.shell[0]), ustop is u))
        u /= 1.0 + (status.tstop - status.tstart)
        u.shell[0] = ustop.shell[0]
        u.shell[1] = ustop.shell[1] + 10.0  # a stepped vector's shell: kept where the point keeps a shell only


def solve(app, ntime=16, **kw):
    kw.setdefault("comm", COMM)
    solver = xb.Solver(app, 0.0, 4.0, ntime, **kw)
    return solver, solver.solve()


OPTIONS = [
    dict(max_levels=2),
    dict(max_levels=3, fmg=True),
    dict(max_levels=3, storage=0),
    dict(max_levels=4, storage=1, cfactor=[4, 2]),
    dict(max_levels=3, nrelax=0, skip=False),
    dict(max_levels=3, nrelax=[2, 1, 3], cwt=0.8),
    dict(max_levels=3, seq_soln=True),
    dict(max_levels=1),
    dict(max_levels=3, relax_only_cg=True, nrelax=[1, 1, 4], max_iter=12),
    dict(max_levels=3, final_fc_relax=True, access_level=0),
    dict(max_levels=3, periodic=True, nrelax=[1, 1, 5]),
    dict(max_levels=3, virtual_time=True),
    dict(max_levels=3, tnorm=3, nfmg=1, fmg=True, nfmg_vcyc=2),
]


def same_run(plain, shelled, **options):
    opts = {"abs_tol": 1e-10, "max_iter": 30, **options}
    s0, r0 = solve(plain, **opts)
    s1, r1 = solve(shelled, **opts)
    assert r0.iterations == r1.iterations and r0.nlevels == r1.nlevels
    assert np.array_equal(r0.residual_norms, r1.residual_norms, equal_nan=True)
    if r0.full_residual_norms is not None:
        assert np.array_equal(r0.full_residual_norms, r1.full_residual_norms, equal_nan=True)
        assert r0.final_full_residual_norm == r1.final_full_residual_norm
    assert np.array_equal(s0.local_states(), s1.local_states())
    assert r0.calls["step"] == r1.calls["step"] and r0.calls["init"] == r1.calls["init"]
    return s1, r1


@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
def test_ignoring_shells_is_bitwise_the_same(options):
    # Also where ustop holds only a shell: its values are then the guess used without shells.
    same_run(GuessDecay(size=3), IgnoringShells(size=3), **options)


@pytest.mark.parametrize("full", [False, True])
def test_ignoring_shells_is_bitwise_the_same_with_a_residual(full):
    # residual mode (fstop passed to coarse steps), or the full residual norm at every fine point
    _, result = same_run(
        GuessDecayWithResidual(size=2),
        IgnoringShellsWithResidual(size=2),
        max_levels=3,
        fmg=True,
        full_residual_norm=full,
    )
    assert (result.full_residual_norms is not None) == full


@settings(derandomize=True, database=None, max_examples=25, deadline=None)
@given(
    max_levels=st.integers(1, 4),
    cfactor=st.sampled_from([2, 3, 4]),
    nrelax=st.integers(0, 2),
    skip=st.booleans(),
    storage=st.sampled_from([-1, 0, 1, 2]),
    fmg=st.booleans(),
    ntime=st.integers(2, 40),
    shell=st.integers(1, 4),
)
def test_ignoring_shells_is_bitwise_the_same_for_any_options(
    max_levels, cfactor, nrelax, skip, storage, fmg, ntime, shell
):
    options = dict(max_levels=max_levels, cfactor=cfactor, nrelax=nrelax, skip=skip, storage=storage, fmg=fmg)
    same_run(GuessDecay(), IgnoringShells(shell_shape=(shell,)), ntime=ntime, **options)


@pytest.mark.parametrize("storage", [-1, 0])
@pytest.mark.parametrize("fmg", [False, True])
def test_every_step_sees_its_target_points_shell(storage, fmg):
    app = TimeShells()
    solver, result = solve(app, ntime=16, max_levels=3, storage=storage, fmg=fmg, abs_tol=1e-10)
    assert result.iterations > 2
    # init at the C-points, init_shell at the fine F-points (XBraid's Init / SInit), once each
    assert result.calls["init"] == 9 and result.calls["init_shell"] == 8
    assert app.init_shells == [0.25 * i for i in range(1, 17, 2)]
    for level, phase, tstop, shell_t, alias in app.seen:
        assert shell_t == tstop, (level, phase, tstop, shell_t)
        assert not alias  # every point has a shell: ustop is never u
    # the steps to fine F-points (which keep only a shell with storage=-1) saw it too
    assert sum(1 for s in app.seen if s[0] == 0 and round(s[2] / 0.25) % 2 == 1) > 8
    shells = solver.local_shells()
    np.testing.assert_array_equal(shells[:, 0], solver.local_times)
    # index 0 keeps init's shell; every other point the shell of the step that computed it
    assert shells[0, 1] == 1.0 and np.all(shells[1:, 1] > 10.0)
    state = solver.state_at(5)
    assert isinstance(state, xb.ShellState) and state.shell[0] == 1.25
    np.testing.assert_array_equal(solver.shell_at(5), state.shell)
    np.testing.assert_array_equal(state, solver.local_states()[5])


def test_states_are_recycled_unless_kept():
    # One ShellState per argument slot, reused call after call; one a callback keeps (or whose
    # shell it keeps) stays valid (it holds the engine's memory) and is replaced by a new one.
    ids, kept = set(), []

    class Keeps(TimeShells):
        def step(self, u, ustop, fstop, status):
            ids.add((id(u), id(ustop)))
            if status.phase == "access" or (status.level == 0 and len(kept) < 3):
                kept.append((ustop, u.shell))
            super().step(u, ustop, fstop, status)

    solver, _ = solve(Keeps(), ntime=16, max_levels=3, abs_tol=1e-10)
    assert 3 <= len(ids) <= 2 + 2 * len(kept)
    del solver
    import gc

    gc.collect()
    for ustop, shell in kept:  # the memory outlives the solver
        assert ustop.shell.shape == (2,) and shell.shape == (2,) and np.isfinite(ustop).all()


def test_seq_soln_steps_without_shells_first_as_xbraid():
    # XBraid's sequential initial guess runs before any shell is set: ustop is u there.
    app = TimeShells()
    _, result = solve(app, ntime=8, max_levels=2, seq_soln=True, abs_tol=1e-10)
    assert result.calls["init"] == 1 and result.calls["init_shell"] == 0
    first = [s for s in app.seen if s[1] == "sequential"]
    assert len(first) == 8 and all(alias for *_, alias in first)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 3])
def test_shells_of_float32_and_odd_sizes(dtype, size):
    # the shell is float64 after the state, 8-byte aligned (float32 states of odd size are padded)
    app = TimeShells(dtype=dtype, size=size)
    solver, result = solve(app, ntime=12, max_levels=3, abs_tol=1e-6)
    assert solver.state_at(12).dtype == dtype and solver.shell_at(12).dtype == np.float64
    np.testing.assert_array_equal(solver.local_shells()[:, 0], solver.local_times)
    exact = 0.75 ** np.arange(13)  # backward Euler with dt = 1/3
    np.testing.assert_allclose(solver.local_states(), np.repeat(exact[:, None], size, axis=1), atol=1e-5)


def test_bdf2_solution_has_the_time_values_in_its_shells():
    solver = xb.Solver(Bdf2(0.0, 5.0, 5), 0.0, 5.0, 5, comm=COMM, max_levels=2, abs_tol=1e-6)
    result = solver.solve()
    assert result.iterations == 3
    shells = solver.local_shells()
    np.testing.assert_array_equal(shells, [[t + 0.5, t] for t in range(6)])
    # XBraid's ex-01-expanded-bdf2 prints y(5) = 3.05723944751237e-03, y(5.5) = 1.63265357113180e-03
    np.testing.assert_allclose(solver.local_states()[5], [1.63265357113180e-03, 3.05723944751237e-03], rtol=1e-13)


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
class NoInitShell(xb.App):
    def __init__(self):
        super().__init__(shape=1, shell_shape=2)

    def init(self, t, u):
        u[...] = 1.0

    def step(self, u, ustop, fstop, status):
        u /= 2.0


def test_shell_shape_errors():
    with pytest.raises(ValueError, match=r"shell_shape entries must be integers >= 1, got \(0,\)"):
        xb.App(shape=1, shell_shape=(0,))
    with pytest.raises(TypeError, match="shell_shape must be an int or a tuple of ints, got 1.5"):
        xb.App(shape=1, shell_shape=1.5)
    with pytest.raises(ValueError, match="shell_shape entries must be integers >= 1, got 'ab'"):
        xb.App(shape=1, shell_shape="ab")
    with pytest.raises(ValueError, match=r"shell_shape must have at least one dimension"):
        xb.App(shape=1, shell_shape=())
    with pytest.raises(TypeError, match=r"NoInitShell has shell_shape=\(2,\) and must implement init_shell"):
        xb.Solver(NoInitShell(), 0.0, 1.0, 4, comm=COMM)


def test_adjoint_step_batch_and_spatial_coarsening_are_refused():
    class WithAdjoint(TimeShells):
        def objective(self, u, status):
            return 0.0

        def objective_adjoint(self, u, u_bar, f_bar, status):
            pass

        def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
            pass

        def reset_gradient(self):
            pass

    with pytest.raises(ValueError, match=r"adjoint=True cannot be combined with shells \(WithAdjoint.shell_shape\)"):
        xb.Solver(WithAdjoint(), 0.0, 1.0, 4, comm=COMM, adjoint=True)
    # objective_only records no tape: allowed, the objective sees states with shells
    seen = []

    class Objective(WithAdjoint):
        def objective(self, u, status):
            seen.append(float(u.shell[0]) == status.t)
            return float(u[0])

    solver = xb.Solver(Objective(), 0.0, 1.0, 4, comm=COMM, objective_only=True, max_levels=2)
    assert math.isfinite(solver.solve().objective) and seen and all(seen)

    class Batched(TimeShells):
        def step_batch(self, u, ustop, fstop, tstart, tstop, status):
            pass

    with pytest.raises(TypeError, match="Batched defines step_batch and has shell_shape"):
        xb.Solver(Batched(), 0.0, 1.0, 4, comm=COMM)

    class Coarsened(TimeShells):
        def coarsen(self, fine, coarse, status):
            coarse[...] = fine

        def refine(self, coarse, fine, status):
            fine[...] = coarse

    with pytest.raises(TypeError, match="Coarsened defines coarsen/refine and has shell_shape=.*cannot be combined"):
        xb.Solver(Coarsened(), 0.0, 1.0, 4, comm=COMM, max_levels=2)


class Writes(TimeShells):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def step(self, u, ustop, fstop, status):
        if self.how == "ustop.shell[0]":
            ustop.shell[0] = 1.0
        elif self.how == "ustop.shell =":
            ustop.shell = [1.0, 2.0]
        elif self.how == "wrong shape":
            u.shell = np.zeros(3)
        elif self.how == "wrong dtype":
            u.shell = ["a", "b"]
        elif self.how == "derived":
            (u * 2).shell  # noqa: B018
        super().step(u, ustop, fstop, status)


@pytest.mark.parametrize(
    ("how", "error", "message"),
    [
        ("ustop.shell[0]", ValueError, "read-only"),
        ("ustop.shell =", ValueError, "this state's shell is read-only"),
        ("wrong shape", ValueError, r"shell must have the app's shell_shape \(2,\), got shape \(3,\)"),
        ("wrong dtype", TypeError, "shell values must be real numbers"),
        ("derived", AttributeError, "carries no shell"),
    ],
)
def test_shell_write_errors_reach_the_caller(how, error, message):
    solver = xb.Solver(Writes(how), 0.0, 1.0, 4, comm=COMM, max_levels=2)
    with pytest.raises(error, match=message):
        solver.solve()


def test_no_shells_and_no_iterate():
    solver, _ = solve(Decay(), ntime=4, max_levels=2)
    with pytest.raises(ValueError, match="Decay has no shells"):
        solver.shell_at(0)
    with pytest.raises(ValueError, match="Decay has no shells"):
        solver.local_shells()
    solver, _ = solve(TimeShells(), ntime=4, max_levels=2)
    with pytest.raises(NotImplementedError, match=r"iterate\(\) is not available for apps with shells"):
        solver.iterate()
    with pytest.raises(NotImplementedError, match=r"set_iterate\(\) is not available for apps with shells"):
        solver.set_iterate({})


# ---------------------------------------------------------------------------------------
# several ranks
# ---------------------------------------------------------------------------------------
def test_shells_travel_between_ranks(mpirun):
    code = """
import sys
import numpy as np
sys.path.insert(0, TESTS)
from test_shell import TimeShells, GuessDecay, IgnoringShells
from advanced_apps import Bdf2
from mpi4py import MPI
import pyxbraid as xb
comm = MPI.COMM_WORLD
out = {}
for fmg in (False, True):
    app = TimeShells()
    s = xb.Solver(app, 0.0, 4.0, 24, comm=comm, max_levels=3, fmg=fmg, abs_tol=1e-10)
    r = s.solve()
    out[f"time{fmg}"] = {"ok": all(x[2] == x[3] for x in app.seen),
                         "iterations": r.iterations, "norms": [float(x) for x in r.residual_norms[1:]],
                         "shells": s.local_shells().tolist(), "times": s.local_times.tolist()}
for name, cls in (("plain", GuessDecay), ("shelled", IgnoringShells)):
    s = xb.Solver(cls(size=3), 0.0, 4.0, 24, comm=comm, max_levels=3, fmg=True, abs_tol=1e-10)
    r = s.solve()
    out[name] = {"norms": [float(x) for x in r.residual_norms[1:]], "u": s.state_at(23).tolist()}
s = xb.Solver(Bdf2(0.0, 20.0, 20), 0.0, 20.0, 20, comm=comm, max_levels=3, fmg=True, abs_tol=1e-6)
r = s.solve()
out["bdf2"] = {"iterations": r.iterations, "norms": [float(x) for x in r.residual_norms[1:]],
               "last": s.state_at(20).tolist(), "shell": s.shell_at(20).tolist()}
report(out)
""".replace("TESTS", repr(str(TESTS)))
    solver = xb.Solver(Bdf2(0.0, 20.0, 20), 0.0, 20.0, 20, comm=COMM, max_levels=3, fmg=True, abs_tol=1e-6)
    result = solver.solve()
    for nprocs in (2, 3):
        ranks = mpirun.json(code, nprocs, timeout=180)
        for rank in ranks:
            for fmg in ("False", "True"):
                got = rank[f"time{fmg}"]
                assert got["ok"] and got["iterations"] > 2
                np.testing.assert_array_equal(np.asarray(got["shells"])[:, 0], got["times"])
            assert rank["plain"] == rank["shelled"]
            assert rank["bdf2"]["iterations"] == result.iterations
            np.testing.assert_allclose(rank["bdf2"]["norms"], result.residual_norms[1:], rtol=1e-12)
            np.testing.assert_allclose(rank["bdf2"]["last"], solver.state_at(20), rtol=1e-12)
            assert rank["bdf2"]["shell"] == [20.5, 20.0]


def test_init_shell_failure_reaches_every_rank(mpirun):
    code = """
import sys
sys.path.insert(0, TESTS)
from test_shell import TimeShells
from mpi4py import MPI
import pyxbraid as xb

class Fails(TimeShells):
    def init_shell(self, t, shell):
        if MPI.COMM_WORLD.Get_rank() == 1 and t > 2.0:
            raise KeyError("no shell here")
        super().init_shell(t, shell)

s = xb.Solver(Fails(), 0.0, 4.0, 16, comm=MPI.COMM_WORLD, max_levels=2)
report(outcome(lambda: s.solve().iterations))
""".replace("TESTS", repr(str(TESTS)))
    ranks = mpirun.json(code, 2, timeout=120)
    assert ranks[1]["type"] == "KeyError" and "no shell here" in ranks[1]["message"]
    assert ranks[0]["type"] == "RemoteRankError" and ranks[0]["rank"] == 1
    assert "Fails.init_shell" in ranks[0]["message"]


def test_example_and_readme_block(mpirun):
    out = mpirun(str(TESTS.parent / "examples" / "ex01_bdf2_shell.py"), 2, timeout=120).stdout
    assert "iterations: 3 (XBraid: 3)" in out
    # the last lines of XBraid's access file ex-01-expanded-bdf2.out.0005.000
    assert "5.00000000000000e+00 3.05723944751237e-03\n5.50000000000000e+00 1.63265357113180e-03" in out
    import re

    sys.path.insert(0, str(TESTS.parent / "examples"))
    from ex01_bdf2_shell import Bdf2 as ExampleBdf2

    text = (TESTS.parent / "README.md").read_text()
    section = text.split("## XBraid's advanced features", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "shell_at" in b)
    ns = {"xb": xb, "Bdf2": ExampleBdf2}
    exec(compile(block, "README shells", "exec"), ns)
    assert ns["result"].iterations == 3
    assert ns["solver"].shell_at(5).tolist() == [5.5, 5.0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
