"""float32 states: the element type follows the App (float64 by default).

The engine stores, sends and hands callbacks float32 arrays; norms and
reductions accumulate in float64; XBraid parity is a float64 matter and stays
bitwise (the reference tests run in float64).
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import CallbackError

COMM = MPI.COMM_SELF
# float32 against float64 on the same problem: a few float32 round-offs per step,
# accumulated over the steps (eps32 = 1.2e-7).
FLOAT32_VS_FLOAT64 = 1e-5


class Decay(xb.App):
    """u' = -u (backward Euler) on a vector, recording the dtype of every array it is given."""

    def __init__(self, dtype, size=3):
        super().__init__(shape=(size,), dtype=dtype)
        self.seen = set()
        self.grad = 0.0

    def _saw(self, *arrays):
        self.seen.update(a.dtype for a in arrays if a is not None)

    def init(self, t, u):
        self._saw(u)
        u[:] = np.linspace(1.0, 2.0, u.size) if t == 0.0 else 0.5

    def step(self, u, ustop, fstop, status):
        self._saw(u, ustop, fstop)
        if fstop is not None:
            u += fstop
        u /= 1.0 + status.dt

    def access(self, u, status):
        self._saw(u)

    def objective(self, u, status):
        self._saw(u)
        return float(u @ u) / status.ntime

    def objective_adjoint(self, u, u_bar, f_bar, status):
        self._saw(u, u_bar)
        u_bar[:] = 2.0 * u / status.ntime * f_bar

    def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
        self._saw(u, ustop, u_bar, ustop_bar)
        d = 1.0 + status.dt
        self.grad += float(u @ u_bar) * status.dt / d**2  # d/dlam at lam = -1 (u' = lam u)
        u_bar /= d

    def reset_gradient(self):
        self.grad = 0.0


def solve(dtype, **kw):
    app = Decay(dtype)
    solver = xb.Solver(app, 0.0, 2.0, 64, comm=COMM, max_levels=3, **kw)
    result = solver.solve()
    return app, solver, result


def test_dtype_defaults_to_float64_and_is_validated():
    assert Decay(np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="dtype must be numpy.float64 or numpy.float32, got <class 'numpy.int32'>"):
        Decay(np.int32)
    with pytest.raises(TypeError, match="dtype must be numpy.float64 or numpy.float32, got 'single precision'"):
        Decay("single precision")


def test_float32_states_reach_callbacks_and_results():
    app, solver, result = solve(np.float32, abs_tol=1e-5)
    assert result.converged
    assert app.seen == {np.dtype(np.float32)}
    assert solver.state_at(64).dtype == np.float32
    assert solver.local_states().dtype == np.float32
    _, solver64, _ = solve(np.float64, abs_tol=1e-10)
    np.testing.assert_allclose(solver.local_states(), solver64.local_states(), rtol=FLOAT32_VS_FLOAT64)


def test_float32_halves_the_state_storage():
    _, s32, _ = solve(np.float32, abs_tol=1e-5)
    _, s64, _ = solve(np.float64, abs_tol=1e-5)
    assert s32.storage_bytes * 2 == pytest.approx(s64.storage_bytes, rel=0.01)


def test_float32_adjoint_gradient():
    app32, s32, r32 = solve(np.float32, adjoint=True, abs_tol=1e-6, abs_tol_adjoint=1e-6)
    app64, s64, r64 = solve(np.float64, adjoint=True, abs_tol=1e-12, abs_tol_adjoint=1e-12)
    assert app32.seen == {np.dtype(np.float32)}
    assert r32.objective == pytest.approx(r64.objective, rel=FLOAT32_VS_FLOAT64)
    assert s32.gradient() == pytest.approx(s64.gradient(), rel=FLOAT32_VS_FLOAT64)


def test_float32_non_finite_state_is_a_callback_error():
    class Overflowing(Decay):
        def step(self, u, ustop, fstop, status):
            with np.errstate(over="ignore"):
                u *= np.float32(1e30)  # float32 overflows where float64 would not

    solver = xb.Solver(Overflowing(np.float32), 0.0, 1.0, 8, comm=COMM, max_levels=1)
    with pytest.raises(CallbackError, match=r"produced a non-finite value \(inf at flat index 0\)"):
        solver.solve()


def test_float32_across_ranks(mpirun):
    code = """
import numpy as np
from mpi4py import MPI
import pyxbraid as xb

class Decay(xb.App):
    def __init__(self):
        super().__init__(shape=(3,), dtype=np.float32)
    def init(self, t, u):
        u[:] = np.linspace(1.0, 2.0, 3) if t == 0.0 else 0.5
    def step(self, u, ustop, fstop, status):
        u /= 1.0 + status.dt

s = xb.Solver(Decay(), 0.0, 2.0, 64, max_levels=3, abs_tol=1e-6)
r = s.solve()
u = s.state_at(64)
report(dict(iterations=r.iterations, final=u.tolist(), dtype=str(u.dtype)))
"""
    runs = [mpirun.json(code, p)[0] for p in (1, 2, 3)]
    for other in runs[1:]:
        assert other["dtype"] == "float32" and other["iterations"] == runs[0]["iterations"]
        # MGRIT's iterates do not depend on the rank count: the same float32 values.
        assert other["final"] == runs[0]["final"]
