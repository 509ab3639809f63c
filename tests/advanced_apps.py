"""Python Apps of the XBraid examples behind the advanced features' reference runs.

Each is written from the problem description in ``xbraid_advanced_reference.md``
(and ``../shared/design/xbraid-advanced.md``): the same arithmetic as the XBraid
example, so the recorded residual histories are reproduced.

- ``Ex01``: u' = lam u, backward Euler (XBraid's ex-01 / ex-01-expanded and the
  recording driver ``ex01drv``), with the user residual A(u_i, u_{i-1}) = (1 - lam dt) u_i - u_{i-1}
  and a sync that records every call.
- ``Heat2D``: XBraid's ex-03 (2-D heat equation, backward Euler), with exact
  (direct) spatial solves where ex-03 runs hypre's PFMG to 1e-14.
"""

from __future__ import annotations

import math

import numpy as np
from mpi4py.MPI import MAX as MPI_MAX

import pyxbraid as xb

CALLERS = {"after_init": 7, "top_cycle": 5, "after_refine": 4}  # XBraid's braid_ASCaller_* numbers


class Ex01(xb.App):
    """u' = lam u with backward Euler: init 1 at t = 0, 0.456 elsewhere; norm |u|."""

    def __init__(self, lam=-1.0):
        super().__init__(shape=(1,))
        self.lam = lam
        self.syncs = []  # [caller, iter, level, done] per sync call (XBraid's numbering)

    def init(self, t, u):
        u[0] = 1.0 if t == 0.0 else 0.456

    def step(self, u, ustop, fstop, status):
        if fstop is not None:
            u += fstop
        u[0] = 1.0 / (1.0 - self.lam * (status.tstop - status.tstart)) * u[0]

    def spatial_norm(self, u):
        return abs(float(u[0]))


class Ex01Residual(Ex01):
    """Ex01 with the user residual (residual mode, or the full residual norm)."""

    def residual(self, ustop, r, status):
        r[0] = (1.0 - self.lam * (status.tstop - status.tstart)) * ustop[0] - r[0]


class Ex01ResidualXBraidWrap(Ex01Residual):
    """Ex01Residual evaluated at the times XBraid gives a periodic problem's residual at index 0.

    XBraid passes tstop = t_0 (= tstart) to the residual of the wrap-around point, where its
    step gets tstop (a documented deviation: pyxbraid gives both tstop). With this residual
    pyxbraid reproduces XBraid's numbers, which shows that this is the only difference.
    """

    def residual(self, ustop, r, status):
        tstop = 0.0 if status.tindex == -1 else status.tstop
        r[0] = (1.0 - self.lam * (tstop - status.tstart)) * ustop[0] - r[0]


class Ex01Sync(Ex01):
    def sync(self, status):
        self.syncs.append([CALLERS[status.caller], status.iter, status.level, int(status.done)])


class Ex01ResidualSync(Ex01Residual, Ex01Sync):
    pass


class Heat2D(xb.App):
    """XBraid's ex-03: u_t = K (u_xx + u_yy) on [0, pi]^2, zero Dirichlet boundary, backward Euler.

    ``nx`` x ``nx`` nodes (boundary included), node (i, j) at (i dx, j dy), stored as
    ``u[j, i]`` (x fastest, as hypre's boxes). The step solves the implicit system
    exactly; XBraid's ex-03 uses one matrix per level, built from the first dt that
    level sees, so this app does the same.
    """

    def __init__(self, nx=17, K=1.0, cfl=0.30, nt=32):
        super().__init__(shape=(nx, nx))
        self.nx, self.K = nx, K
        self.dx = math.pi / (nx - 1)
        self.dy = math.pi / (nx - 1)
        dx2, dy2 = self.dx * self.dx, self.dy * self.dy
        self.dt = (cfl * dx2 * dy2) / (K * (dx2 + dy2))
        self.tstop = 0.0 + nt * self.dt
        self.abs_tol = 1e-9 / math.sqrt(self.dx * self.dy * self.dt)
        self._matrix = {}  # level -> interior matrix (first dt of that level)
        self.syncs = []
        j, i = np.meshgrid(np.arange(nx), np.arange(nx), indexing="ij")
        self.ic = np.sin(i * self.dx) * np.sin(j * self.dy)

    def matrix(self, level, dt):
        if level not in self._matrix:
            n = self.nx - 2
            K = int(self.K)  # ex-03 keeps K in an int
            ax, ay = -K * (dt / (self.dx * self.dx)), -K * (dt / (self.dy * self.dy))
            diag = 1.0 + 2 * K * ((dt / (self.dx * self.dx)) + (dt / (self.dy * self.dy)))
            A = np.zeros((n * n, n * n))
            for jj in range(n):
                for ii in range(n):
                    m = jj * n + ii
                    A[m, m] = diag
                    if ii > 0:
                        A[m, m - 1] = ax
                    if ii < n - 1:
                        A[m, m + 1] = ax
                    if jj > 0:
                        A[m, m - n] = ay
                    if jj < n - 1:
                        A[m, m + n] = ay
            self._matrix[level] = (A, np.linalg.inv(A))
        return self._matrix[level]

    def init(self, t, u):
        u[...] = self.ic if t == 0.0 else 0.0

    def step(self, u, ustop, fstop, status):
        _, inverse = self.matrix(status.level, status.tstop - status.tstart)
        b = u.copy()
        b[0, :] = b[-1, :] = b[:, 0] = b[:, -1] = 0.0  # the Dirichlet values
        if fstop is not None:
            b += fstop
        inner = inverse @ b[1:-1, 1:-1].ravel()  # A is well conditioned (cond < 3)
        u[...] = b
        u[1:-1, 1:-1] = inner.reshape(self.nx - 2, self.nx - 2)

    def residual(self, ustop, r, status):
        # r = A ustop - b(r): boundary rows are the identity, b's boundary entries 0.
        A, _ = self.matrix(status.level, status.tstop - status.tstart)
        inner = A @ ustop[1:-1, 1:-1].ravel() - r[1:-1, 1:-1].ravel()
        r[...] = ustop
        r[1:-1, 1:-1] = inner.reshape(self.nx - 2, self.nx - 2)

    def error_norm(self, t, u):
        """ex-03's discretization error sqrt(dx dy sum (exact - u)^2) (no forcing: exact = exp(-2t) sin x sin y)."""
        e = math.exp(-2.0 * t) * self.ic - u
        return math.sqrt(math.sqrt(float(np.sum(e * e))) ** 2 * self.dx * self.dy)


class CosinePeriodic(Ex01):
    """XBraid's ex-01-refinement with -periodic: u' = cos t on [0, 2 pi], u <- u + dt cos(tstop)."""

    def step(self, u, ustop, fstop, status):
        dt = status.tstop - status.tstart
        u[0] = u[0] + dt * math.cos(status.tstop)


class Ex06(Ex01):
    """XBraid's ex-06: u' = -4u - t + 1 (exact (-4t + 11 exp(-4t) + 5)/16), backward Euler or SDIRK23.

    Its access keeps, per level-0 index, what ex-06 writes to ``ex-06.out.<index>``: t, the
    value, the Richardson estimate and |value - exact(t)| (the last call wins). ``refine``
    adds ex-06's ``-refinet`` sync: the global maximum of all error estimates.
    """

    def __init__(self, time_discr=1, refine=False, comm=None):
        super().__init__()
        self.time_discr = time_discr
        self.refine = refine
        self.comm = comm
        self.rows = {}  # index -> (t, value, estimate, error) of the last access
        self.max_estimate = []  # the sync's global maxima, in order
        self.printed_final = None

    def access(self, u, status):
        if status.level > 0:
            return
        t, value = status.t, float(u[0])
        error = abs(value - self.exact(t))
        self.rows[status.tindex] = (t, value, status.error_estimate, error)
        if status.done and t == 0.5:
            self.printed_final = [t, value, error]

    def sync(self, status):
        if not self.refine or status.caller not in ("top_cycle", "after_refine"):
            return
        estimates = status.error_estimates
        local = max([-1.0, *estimates.tolist()])
        self.max_estimate.append(self.comm.allreduce(local, op=MPI_MAX) if self.comm is not None else local)

    @staticmethod
    def implicit_solve(x, tstop, dt):
        return (-4.0 * x + 1 - tstop) / (1.0 + 4.0 * dt)

    def step(self, u, ustop, fstop, status):
        tstart, dt = status.tstart, status.tstop - status.tstart
        x = float(u[0])
        if self.time_discr == 2:
            gamma = (2.0 - math.sqrt(2.0)) / 2.0
            k = self.implicit_solve(x, tstart + gamma * dt, gamma * dt)
            y = x + (1.0 - 2.0 * gamma) * dt * k
            x = x + k * dt / 2.0
            k = self.implicit_solve(y, tstart + (1.0 - gamma) * dt, gamma * dt)
            x = x + k * (dt / 2.0)
        else:
            x = x + dt * self.implicit_solve(x, tstart + dt, dt)
        u[0] = x

    @staticmethod
    def exact(t):
        return (1.0 / 16.0) * (-4.0 * t + 11.0 * math.exp(-4.0 * t) + 5.0)
