"""MGRIT invariants: sequential equivalence, option combinations, warm restart,
Python App == native App, access semantics.
"""

import itertools
import json
import math

import numpy as np
import pytest
from apps_python import Decay, DecayWithResidual
from mpi4py import MPI

import pyxbraid as xb

COMM = MPI.COMM_SELF


def sequential_linear(lam, ntime, tstart=0.0, tstop=5.0, u0=1.0, times=None):
    """Backward Euler by hand, same arithmetic as LinearODE."""
    t = times if times is not None else [tstart + (i / ntime) * (tstop - tstart) for i in range(ntime + 1)]
    u = [u0]
    for i in range(ntime):
        u.append((1.0 / (1.0 - lam * (t[i + 1] - t[i]))) * u[-1])
    return np.array(u)


def all_states(solver):
    return np.array([solver.state_at(i) for i in range(solver.ntime + 1)])


def test_max_levels_one_is_exact_sequential_stepping():
    s = xb.Solver(xb.apps.LinearODE(lam=-0.7), 0.0, 3.0, 37, comm=COMM, max_levels=1)
    r = s.solve()
    assert r.iterations == 0 and r.converged and r.nlevels == 1
    np.testing.assert_array_equal(all_states(s)[:, 0], sequential_linear(-0.7, 37, 0.0, 3.0))


def test_max_levels_one_matches_user_time_grid():
    times = [0.0, 0.1, 0.15, 0.4, 0.41, 1.0, 2.5]
    s = xb.Solver(xb.apps.LinearODE(), comm=COMM, times=times, max_levels=1)
    s.solve()
    np.testing.assert_array_equal(all_states(s)[:, 0], sequential_linear(-1.0, 6, times=times))


def test_heat_sequential_discretization_errors():
    # tests/data/expected_numbers.md (ex-02): 2.9214e-02 (ntime 64), 7.1103e-03 (ntime 256)
    for ntime, expected in ((64, 2.9214e-02), (256, 7.1103e-03)):
        heat = xb.apps.Heat1D(nspace=33)
        s = xb.Solver(heat, 0.0, 2 * math.pi, ntime, comm=COMM, max_levels=1)
        s.solve()
        assert heat.error(s.times[-1], s.state_at(ntime)) == pytest.approx(expected, rel=1e-4)


COMBOS = [
    dict(cfactor=cf, max_levels=ml, nrelax=nr, skip=sk, fmg=fmg, storage=st)
    for cf, ml, nr, sk, fmg, st in itertools.product(
        (2, 3, 4), (2, 3, 30), (0, 1, 2), (True, False), (False, True), (-1, 0)
    )
    if not (ml == 2 and fmg)
][::5]


@pytest.mark.parametrize("opts", COMBOS, ids=[",".join(f"{k}={v}" for k, v in c.items()) for c in COMBOS])
def test_converged_mgrit_equals_sequential(opts):
    ntime = 96
    s = xb.Solver(xb.apps.LinearODE(lam=-1.3), 0.0, 4.0, ntime, comm=COMM, abs_tol=1e-13, max_iter=200, **opts)
    r = s.solve()
    assert r.converged and r.residual_norms[-1] < 1e-13
    np.testing.assert_allclose(all_states(s)[:, 0], sequential_linear(-1.3, ntime, 0.0, 4.0), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "opts",
    [
        dict(max_levels=3),
        dict(max_levels=4, cfactor=4, nrelax=0),
        dict(max_levels=3, fmg=True),
        dict(max_levels=3, storage=0, cwt=1.2),
        dict(max_levels=3, relax_only_cg=True, nrelax=[1, 1, 3]),
    ],
)
def test_converged_heat_equals_sequential(opts):
    seq_app, app = xb.apps.Heat1D(nspace=17), xb.apps.Heat1D(nspace=17)
    seq = xb.Solver(seq_app, 0.0, 2 * math.pi, 64, comm=COMM, max_levels=1)
    seq.solve()
    s = xb.Solver(app, 0.0, 2 * math.pi, 64, comm=COMM, abs_tol=1e-12, max_iter=300, **opts)
    assert s.solve().converged
    np.testing.assert_allclose(all_states(s), all_states(seq), rtol=0, atol=1e-11)


def test_local_states_equal_state_at_and_cover_the_rank():
    s = xb.Solver(xb.apps.LinearODE(lam=[-1.0, -2.0]), 0.0, 1.0, 20, comm=COMM, max_levels=3, abs_tol=1e-12)
    s.solve()
    local = s.local_states()
    assert local.shape == (21, 2)
    np.testing.assert_array_equal(local, all_states(s))
    np.testing.assert_array_equal(s.local_times, s.times)


def test_access_level_zero_still_gives_states_on_demand():
    a = xb.Solver(xb.apps.LinearODE(), 0.0, 5.0, 10, comm=COMM, max_levels=2, abs_tol=1e-6, access_level=0)
    b = xb.Solver(xb.apps.LinearODE(), 0.0, 5.0, 10, comm=COMM, max_levels=2, abs_tol=1e-6)
    a.solve(), b.solve()
    np.testing.assert_array_equal(all_states(a), all_states(b))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize(
    "opts",
    [
        dict(max_levels=2),
        dict(max_levels=4, fmg=True),
        dict(max_levels=3, storage=0, skip=False),
        dict(max_levels=3, cfactor=[2, 4], nrelax=[0, 2], cwt=1.3),
    ],
)
def test_python_app_equals_native_app(opts, residual):
    kw = dict(comm=COMM, abs_tol=1e-10, **opts)
    py_app = DecayWithResidual(lam=[-1.0, -0.5], size=2) if residual else Decay(lam=[-1.0, -0.5], size=2)
    native = xb.apps.LinearODE(lam=[-1.0, -0.5], residual=residual)
    sp, sn = xb.Solver(py_app, 0.0, 5.0, 48, **kw), xb.Solver(native, 0.0, 5.0, 48, **kw)
    rp, rn = sp.solve(), sn.solve()
    assert rp.iterations == rn.iterations
    np.testing.assert_array_equal(rp.residual_norms, rn.residual_norms)
    np.testing.assert_array_equal(all_states(sp), all_states(sn))
    assert rp.calls == rn.calls


def test_warm_restart_continues_convergence():
    one = xb.Solver(xb.apps.LinearODE(), 0.0, 5.0, 64, comm=COMM, max_levels=3, abs_tol=1e-12, max_iter=100)
    r_one = one.solve()
    two = xb.Solver(xb.apps.LinearODE(), 0.0, 5.0, 64, comm=COMM, max_levels=3, abs_tol=1e-12, max_iter=3)
    first = two.solve()
    second = two.solve()
    assert first.iterations == 3 and not first.converged
    # the second solve starts where the first stopped: no skipped iteration, a
    # residual already at the level the first solve reached, fewer iterations.
    assert not math.isnan(second.residual_norms[0])
    assert second.residual_norms[0] < first.residual_norms[-1]
    third = two.solve()
    assert third.residual_norms[0] < second.residual_norms[-1]
    total = first.iterations + second.iterations + third.iterations
    assert third.converged and total <= r_one.iterations + 3
    np.testing.assert_allclose(all_states(two), all_states(one), atol=1e-11)


def test_warm_restart_keeps_relative_reference():
    s = xb.Solver(xb.apps.LinearODE(), 0.0, 5.0, 64, comm=COMM, max_levels=3, rel_tol=1e-6, max_iter=100, skip=False)
    r1 = s.solve()
    r2 = s.solve()
    assert r1.converged and r2.converged
    assert r2.iterations == 1  # already below 1e-6 * ||r_0|| of the first solve


class Recorder(Decay):
    def __init__(self):
        super().__init__()
        self.seen = []

    def access(self, u, status):
        self.seen.append((status.tindex, status.t, float(u[0]), status.done, status.phase))


def test_access_sees_every_fine_point_once_after_convergence():
    app = Recorder()
    s = xb.Solver(app, 0.0, 5.0, 10, comm=COMM, max_levels=2, abs_tol=1e-6)
    s.solve()
    assert sorted(i for i, *_ in app.seen) == list(range(11))
    for i, t, u, done, phase in app.seen:
        assert done and phase == "access"
        assert t == s.times[i]
        assert u == float(s.state_at(i)[0])


def test_final_fc_relax_accesses_each_point_once():
    app = Recorder()
    xb.Solver(app, 0.0, 5.0, 16, comm=COMM, max_levels=2, abs_tol=1e-6, final_fc_relax=True).solve()
    assert sorted(i for i, *_ in app.seen) == list(range(17))


def test_access_level_two_sees_every_iteration():
    app = Recorder()
    r = xb.Solver(app, 0.0, 5.0, 10, comm=COMM, max_levels=2, abs_tol=1e-6, access_level=2).solve()
    assert len(app.seen) == 11 * (r.iterations + 1)
    assert sum(1 for *_, done, _ in app.seen if done) == 11


def test_status_reports_levels_and_phases():
    phases = set()

    class Spy(Decay):
        def step(self, u, ustop, fstop, status):
            phases.add((status.phase, status.level))
            assert status.nlevels == 3 and status.dt > 0
            super().step(u, ustop, fstop, status)

    xb.Solver(Spy(), 0.0, 5.0, 32, comm=COMM, max_levels=3, abs_tol=1e-8).solve()
    assert {
        ("fc_relax", 0),
        ("f_restrict", 0),
        ("residual", 1),
        ("f_interp", 2),
        ("f_interp", 1),
        ("access", 0),
    } <= phases


def test_seq_soln_starts_converged():
    r = xb.Solver(xb.apps.LinearODE(), 0.0, 5.0, 64, comm=COMM, max_levels=3, seq_soln=True, abs_tol=1e-12).solve()
    assert r.iterations == 1 and r.residual_norms[0] == 0.0


def test_storage_levels_use_more_memory():
    sizes = []
    for storage in (-1, 1, 0):
        s = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 1024, comm=COMM, max_levels=4, storage=storage)
        sizes.append(s.storage_bytes)
    assert sizes[0] < sizes[1] < sizes[2]


def test_rank_independent_results(mpirun):
    code = """
import json, math, numpy as np, pyxbraid as xb
from mpi4py import MPI
app = xb.apps.Heat1D(nspace=17)
s = xb.Solver(app, 0.0, 2*math.pi, 100, max_levels=4, cfactor=3, abs_tol=1e-10, fmg=True)
r = s.solve()
u = s.state_at(100)
if MPI.COMM_WORLD.rank == 0:
    print("RESULT", json.dumps([r.iterations, list(r.residual_norms), list(u)]))
"""
    runs = [
        json.loads(next(line for line in mpirun(code, n).stdout.splitlines() if line.startswith("RESULT"))[7:])
        for n in (1, 2, 3)
    ]
    (iters, hist, u), others = runs[0], runs[1:]
    assert iters > 3
    for it, h, v in others:
        assert it == iters
        np.testing.assert_allclose(h, hist, rtol=1e-12)
        np.testing.assert_allclose(v, u, rtol=1e-12)


class DiagonalDecay2D(xb.App):
    """u' = lam*u for a (2, 3) state: exercises multi-dimensional views."""

    def __init__(self, lam):
        super().__init__(shape=(2, 3))
        self.lam = np.asarray(lam, dtype=float).reshape(2, 3)

    def init(self, t, u):
        u[...] = 1.0 if t == 0.0 else 0.456

    def step(self, u, ustop, fstop, status):
        assert u.shape == (2, 3) and ustop.shape == (2, 3) and u.flags.c_contiguous
        v = u + fstop if fstop is not None else u.copy()
        u[...] = (1.0 / (1.0 - self.lam * status.dt)) * v


def test_multidimensional_state_matches_native_diagonal_app():
    lam = [-1.0, -0.5, -2.0, -0.1, -3.0, -1.5]
    kw = dict(comm=COMM, max_levels=3, abs_tol=1e-10)
    sp = xb.Solver(DiagonalDecay2D(lam), 0.0, 2.0, 40, **kw)
    sn = xb.Solver(xb.apps.LinearODE(lam=lam), 0.0, 2.0, 40, **kw)
    rp, rn = sp.solve(), sn.solve()
    np.testing.assert_array_equal(rp.residual_norms, rn.residual_norms)
    assert sp.state_at(40).shape == (2, 3)
    np.testing.assert_array_equal(sp.state_at(40).ravel(), sn.state_at(40))
    assert sp.local_states().shape == (41, 2, 3)


def test_forward_euler_mgrit_equals_sequential():
    lam, ntime = -2.0, 128  # |1 + lam dt| < 1 on every level used below
    seq = xb.Solver(xb.apps.LinearODE(lam=lam, scheme="forward_euler"), 0.0, 4.0, ntime, comm=COMM, max_levels=1)
    seq.solve()
    s = xb.Solver(
        xb.apps.LinearODE(lam=lam, scheme="forward_euler"),
        0.0,
        4.0,
        ntime,
        comm=COMM,
        max_levels=3,
        cfactor=4,
        abs_tol=1e-13,
    )
    assert s.solve().converged
    expected = [(1.0 + lam * 4.0 / ntime) ** i for i in range(ntime + 1)]
    np.testing.assert_allclose(all_states(seq)[:, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(all_states(s)[:, 0], all_states(seq)[:, 0], atol=1e-12)
