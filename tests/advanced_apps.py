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


class Ex01Refinement(Ex01):
    """XBraid's ex-01-refinement (u' = -u, backward Euler) with its refinement factors (-refine 1..4).

    ``refine``: the -refine mode; ``tol``: -tol (mode 2's factor); ``max_rfactor``: -max_rfactor
    (0: no limit); ``sync``: count the syncs after a refinement (ex-01-refinement's -sync).
    """

    def __init__(self, refine=1, tol=1e-6, max_rfactor=0):
        super().__init__()
        self.refine, self.tol, self.max_rfactor = refine, tol, max_rfactor
        self.num_syncs = 0

    def step(self, u, ustop, fstop, status):
        dt = status.tstop - status.tstart
        v = float(u[0])
        u[0] = 1.0 / (1.0 + dt) * v
        if status.level != 0 or status.nrefine >= 8:
            return
        rf = self._rfactor(float(u[0]), v, dt, status)
        rf = max(rf, 1)
        if self.max_rfactor > 0:
            rf = min(rf, self.max_rfactor)
        status.set_rfactor(rf)

    def _rfactor(self, value, v, dt, status):
        near = status.tstart <= 2.5 + 0.00001 and 2.5 - 0.00001 <= status.tstop
        if self.refine == 1:
            return 100 if dt > 0.001 and near else 1
        if self.refine == 2:
            lte = abs(value - (1.0 - dt) * v)
            arg = 0.5 * lte / value / self.tol
            # C's (int) of NaN (a negative argument of sqrt) is INT_MIN on x86: factor 1
            return math.ceil(math.sqrt(arg)) if arg >= 0.0 else 1
        if self.refine == 3:
            if dt > 0.001 and near:
                status.set_refinement_dts([dt / 2.0])
                return 2
            return 1
        if self.refine == 4:
            return 3 if status.nrefine < 4 and (status.tindex + 1) % 2 == 0 else 1
        return 1


class Ex01RefinementSync(Ex01Refinement):
    """Ex01Refinement with ex-01-refinement's -sync: counts the syncs after a refinement."""

    def sync(self, status):
        if status.caller == "after_refine":
            self.num_syncs += 1


class Ex06(Ex01):
    """XBraid's ex-06: u' = -4u - t + 1 (exact (-4t + 11 exp(-4t) + 5)/16), backward Euler or SDIRK23.

    Its access keeps, per level-0 index, what ex-06 writes to ``ex-06.out.<index>``: t, the
    value, the Richardson estimate and |value - exact(t)| (the last call wins). ``refine``
    adds ex-06's ``-refinet`` sync: the global maximum of all error estimates.
    """

    def __init__(self, time_discr=1, refine=False, comm=None, refine_time=False):
        super().__init__()
        self.time_discr = time_discr
        self.refine = refine
        self.refine_time = refine_time  # ask for refinement (the Solver must have refine=True)
        self.comm = comm
        self.rows = {}  # index -> (t, value, estimate, error) of the last access
        self.ntime = None  # the grid the rows belong to
        self.max_estimate = []  # the sync's global maxima, in order
        self.printed_final = None

    def access(self, u, status):
        if status.level > 0:
            return
        t, value = status.t, float(u[0])
        error = abs(value - self.exact(t))
        if status.ntime != self.ntime:  # a refinement renumbered the points: earlier rows are stale
            self.rows, self.ntime = {}, status.ntime
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
        if self.refine_time:
            self._ask_refinement(status)

    def _ask_refinement(self, status):
        # ex-06 -refinet: halve the intervals whose estimate exceeds 2% of the last sync's maximum
        est = status.error_estimate
        largest = self.max_estimate[-1] if self.max_estimate else 0.0
        if status.level == 0 and status.iter > 1 and est > 0.02 * largest and est != -1.0:
            status.set_rfactor(2)

    @staticmethod
    def exact(t):
        return (1.0 / 16.0) * (-4.0 * t + 11.0 * math.exp(-4.0 * t) + 5.0)


class Bdf2(xb.App):
    """XBraid's ex-01-expanded-bdf2: u' = lam u by variable-step BDF2 through shell vectors.

    Each XBraid point carries two solution values: ``u = [y(t_n + dt0/2), y(t_n)]`` and
    its shell ``[t_n + dt0/2, t_n]`` (the example's ``yprev`` / ``tprev``), with
    ``dt0 = (tstop - tstart) / ntime`` on every level. The step reads its target times
    from ``ustop.shell`` (also where the target point keeps only a shell) and ignores
    ``status``'s times, as the example does. Norm: the Euclidean norm of both values.
    """

    def __init__(self, tstart, tstop, ntime, lam=-1.0):
        super().__init__(shape=(2,), shell_shape=(2,))
        self.lam = lam
        self.dt = (tstop - tstart) / ntime
        self.syncs = []  # no sync (the replay gathers this list)

    def _bdf2(self, t0, t1, t2, y1, y2):
        h0 = t0 - t1
        rho = h0 / (t1 - t2)
        c0 = (2 * rho + 1) / (rho + 1) - self.lam * h0
        return (rho + 1) / c0 * y1 - (rho * rho / (rho + 1)) / c0 * y2

    def init(self, t, u):
        self.init_shell(t, u.shell)
        if t == 0.0:
            u[1] = 1.0
            u[0] = math.exp(self.lam * 0.5 * self.dt)
        else:
            u[:] = 0.456

    def init_shell(self, t, shell):
        shell[1] = t
        shell[0] = t + 0.5 * self.dt

    def step(self, u, ustop, fstop, status):
        ts, tu, y = ustop.shell, u.shell, u
        new_y2 = self._bdf2(ts[1], tu[0], tu[1], y[0], y[1])
        new_y1 = self._bdf2(ts[0], ts[1], tu[0], new_y2, y[0])
        u.shell[:] = ts
        u[0] = new_y1
        u[1] = new_y2

    def spatial_norm(self, u):
        return math.sqrt(u[0] ** 2 + u[1] ** 2)


class Lorenz(xb.App):
    """XBraid's ex-07: the Lorenz system with forward Euler and its Jacobian for the basis vectors.

    ``step`` propagates ``status.basis_vectors`` (delta correction) by F = I + h J(u_old), as
    ex-07's MatVec; ``init_basis`` gives the unit vectors; ``access`` records, per point, the
    state, the local Lyapunov exponents and the basis (ex-07's ``ex-07-lv.out`` record).
    """

    SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
    U0 = (9.614521163788712, 17.519127090401067, 13.94230712158098)

    def __init__(self):
        super().__init__(shape=(3,))
        self.states = {}  # index -> state (final access)
        self.records = {}  # index -> [exp_j, psi_j (3)] for j < rank, as ex-07 writes them
        self.syncs = []  # (advanced_cases gathers every app's sync calls)

    def init(self, t, u):
        u[:] = self.U0

    def init_basis(self, t, index, v):
        v[index] = 1.0

    def _jacobian_step(self, u, h):
        s, r, b = self.SIGMA, self.RHO, self.BETA
        x, y, z = float(u[0]), float(u[1]), float(u[2])
        jac = ((-s, s, 0.0), (r - z, -1.0, -x), (y, x, -b))
        # F = I + h J, entry by entry as ex-07's MatAxpy (h*J + I).
        return [[h * jac[i][j] + (1.0 if i == j else 0.0) for j in range(3)] for i in range(3)]

    def step(self, u, ustop, fstop, status):
        h = status.tstop - status.tstart
        basis = status.basis_vectors
        f = self._jacobian_step(u, h) if basis else None
        x, y, z = float(u[0]), float(u[1]), float(u[2])
        k = (self.SIGMA * (y - x), x * (self.RHO - z) - y, x * y - self.BETA * z)
        u[0] = h * k[0] + x
        u[1] = h * k[1] + y
        u[2] = h * k[2] + z
        for psi in basis:
            p = (float(psi[0]), float(psi[1]), float(psi[2]))
            for i in range(3):
                acc = 0.0
                for j in range(3):
                    acc += f[i][j] * p[j]
                psi[i] = acc

    def access(self, u, status):
        self.states[status.tindex] = u.copy()
        exps = status.lyapunov_exponents
        rec = []
        for j, psi in enumerate(status.basis_vectors):
            rec.append(float(exps[j]))
            rec.extend(float(v) for v in psi)
        self.records[status.tindex] = rec


def ex02_class(residual=False, coarsening=True):
    """An ``Ex02`` class with the user residual (``-res``) and coarsening.

    ``coarsening``: True (``-sc``), False (no shape_at/coarsen/refine: the plain path)
    or "identity" (coarsen and refine as copies, every level of the finest shape).
    """
    attrs = {}
    if residual:
        attrs["residual"] = Ex02._residual
    if coarsening is True:
        attrs.update(shape_at=Ex02._shape_at, coarsen=Ex02._coarsen, refine=Ex02._refine)
    elif coarsening == "identity":
        attrs.update(coarsen=Ex02._copy, refine=Ex02._copy)
    return type("Ex02", (Ex02,), attrs)


class Ex02(xb.App):
    """XBraid's ex-02 (1-D heat equation, backward Euler) with its spatial coarsening (``-sc``).

    The Python twin of ``pyxbraid.apps.Heat1D(guess="xbraid", spatial_coarsening=...)``:
    loops over Python floats in ex-02's operation order (math.sin/cos, as the C code),
    so the recorded numbers are reproduced bit for bit. The Solver uses the methods a
    class overrides, so the variants are subclasses (``ex02_class``).
    """

    def __init__(self, nspace=33):
        super().__init__(shape=(nspace,))
        self.nspace = nspace
        self.rand_state = 1  # braid_Rand's per-process state
        self.error_tol = None  # -refinet tol_e: ask for refinement from the error estimates
        self.syncs = []

    def _coarsens(self, level):
        return level < math.floor(math.log2(self.nspace)) - 1

    def _shape_at(self, level):
        n = self.nspace
        for lv in range(level):
            if self._coarsens(lv):
                n = (n - 1) // 2 + 1
        return (n,)

    @staticmethod
    def forcing(t, x):
        return (-1.0) * math.sin(x) * math.sin(t) + math.sin(x) * math.cos(t)

    def init(self, t, u):
        n = u.shape[0]
        dx = (math.pi - 0.0) / (n - 1.0)
        if t == 0.0:
            x = 0.0
            for i in range(n):
                u[i] = math.sin(x) * math.cos(0.0)
                x = x + dx
            return
        for i in range(n):
            self.rand_state = (self.rand_state * 1103515245 + 12345) % 2**64
            u[i] = ((self.rand_state // 65536) % 32768) / 32768.0

    def step(self, u, ustop, fstop, status):
        tstop, dt = status.tstop, status.tstop - status.tstart
        n = u.shape[0]
        dx = (math.pi - 0.0) / (n - 1.0)
        v = [float(a) for a in u]
        if fstop is not None:
            v = [a + float(f) for a, f in zip(v, fstop, strict=True)]
        cfl = dt / (dx * dx)
        a, b, c = -cfl, 1.0 + 2 * cfl, -cfl
        v[0] = math.sin(0.0) * math.cos(tstop)
        v[n - 1] = math.sin(math.pi) * math.cos(tstop)
        x = 0.0
        for i in range(n):
            v[i] = v[i] + dt * self.forcing(tstop, x)
            x = x + dx
        g = [0.0] * n
        for i in range(1, n - 1):
            m = 1.0 / (b - a * g[i - 1])
            g[i] = m * c
            v[i] = m * (v[i] - a * v[i - 1])
        for i in range(n - 2, 0, -1):
            v[i] = v[i] - g[i] * v[i + 1]
        u[:] = v
        if self.error_tol is not None and status.level == 0:
            # ex-02 -refinet: factor ceil(sqrt(estimate / tol)) where an estimate is available. A
            # factor 0 (an estimate of exactly 0) is XBraid's error message, then 1: here 1 directly.
            est = status.error_estimate
            status.set_rfactor(max(1, math.ceil(math.sqrt(est / self.error_tol))) if est != -1.0 else 1)

    def _residual(self, ustop, r, status):
        tstop, dt = status.tstop, status.tstop - status.tstart
        n = ustop.shape[0]
        dx = (math.pi - 0.0) / (n - 1.0)
        cfl = dt / (dx * dx)
        a, b, c = -cfl, 1.0 + 2 * cfl, -cfl
        s = [float(v) for v in ustop]
        g = [s[0]] + [a * s[i - 1] + b * s[i] + c * s[i + 1] for i in range(1, n - 1)] + [s[n - 1]]
        x = 0.0
        for i in range(n):
            r[i] = g[i] - float(r[i]) - dt * self.forcing(tstop, x)
            x = x + dx

    def _coarsen(self, fine, coarse, status):
        fsize, csize = fine.shape[0], coarse.shape[0]
        if not self._coarsens(status.level):
            coarse[:] = fine
            return
        f = [float(v) for v in fine]
        for i in range(1, csize - 1):
            coarse[i] = 0.5 * f[2 * i] + 0.25 * f[2 * i + 1] + 0.25 * f[2 * i - 1]
        coarse[0] = f[0]
        coarse[csize - 1] = f[fsize - 1]

    def _refine(self, coarse, fine, status):
        csize, fsize = coarse.shape[0], fine.shape[0]
        if not self._coarsens(status.level):
            fine[:] = coarse
            return
        c = [float(v) for v in coarse]
        for i in range(1, fsize - 1):
            fine[i] = 0.5 * c[i // 2] + 0.5 * c[(i + 1) // 2] if i % 2 == 1 else c[i // 2]
        fine[0] = c[0]
        fine[fsize - 1] = c[csize - 1]

    def _copy(self, src, dst, status):
        dst[:] = src

    def error(self, t, u):
        """ex-02's discretization error sqrt(dx sum (u - sin x cos t)^2)."""
        n = u.shape[0]
        dx = (math.pi - 0.0) / (n - 1.0)
        x, s = 0.0, 0.0
        for i in range(n):
            d = float(u[i]) - math.sin(x) * math.cos(t)
            s = s + d * d
            x = x + dx
        return math.sqrt(s * dx)


class Diffusion(xb.App):
    """u_t = kappa u_xx on [0, 1], zero Dirichlet boundaries, forward Euler; design: kappa.

    Spatial coarsening halves the grid of 2^k + 1 points per level down to 3 points
    (injection to coarsen, linear interpolation to refine) and defines both
    transposes, so the adjoint runs with it. Objective: sum over the fine points of
    0.5 dx |u|^2. ``coarsening="identity"``: coarsen/refine and their transposes are
    copies (every level of the finest shape); False: none of them.
    """

    def __init__(self, n=17, kappa=0.3):
        super().__init__(shape=(n,))
        self.kappa = kappa
        self.grad = np.zeros(1)

    def shape_at(self, level):
        return (max((self.shape[0] - 1) >> level, 2) + 1,)

    def init(self, t, u):
        x = np.linspace(0.0, 1.0, u.shape[0])
        u[:] = np.sin(math.pi * x) if t == 0.0 else 0.25 * np.sin(3 * math.pi * x)

    def _lap(self, u):
        dx = 1.0 / (u.shape[0] - 1)
        return (u[:-2] - 2.0 * u[1:-1] + u[2:]) / (dx * dx)

    def step(self, u, ustop, fstop, status):
        u[1:-1] += status.dt * self.kappa * self._lap(u)

    def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
        w = u_bar.copy()
        dx = 1.0 / (u.shape[0] - 1)
        c = status.dt * self.kappa / (dx * dx)
        self.grad[0] += float(np.dot(w[1:-1], status.dt * self._lap(u)))
        u_bar[:-2] += c * w[1:-1]
        u_bar[1:-1] += -2.0 * c * w[1:-1]
        u_bar[2:] += c * w[1:-1]

    def objective(self, u, status):
        return 0.5 / (u.shape[0] - 1) * float(np.dot(u, u))

    def objective_adjoint(self, u, u_bar, f_bar, status):
        u_bar[:] = f_bar / (u.shape[0] - 1) * u

    def reset_gradient(self):
        self.grad[:] = 0.0

    def coarsen(self, fine, coarse, status):
        coarse[:] = fine[:: (fine.shape[0] - 1) // (coarse.shape[0] - 1)]

    def coarsen_adjoint(self, coarse_bar, fine_bar, status):
        fine_bar[:: (fine_bar.shape[0] - 1) // (coarse_bar.shape[0] - 1)] = coarse_bar

    def refine(self, coarse, fine, status):
        if coarse.shape == fine.shape:
            fine[:] = coarse
            return
        fine[::2] = coarse
        fine[1::2] = 0.5 * (coarse[:-1] + coarse[1:])

    def refine_adjoint(self, fine_bar, coarse_bar, status):
        if coarse_bar.shape == fine_bar.shape:
            coarse_bar[:] = fine_bar
            return
        coarse_bar[:] = fine_bar[::2]
        coarse_bar[:-1] += 0.5 * fine_bar[1::2]
        coarse_bar[1:] += 0.5 * fine_bar[1::2]

    def sequential(self, times):
        """J and dJ/dkappa by plain forward marching and backpropagation (the reference)."""
        n = self.shape[0]
        x = np.linspace(0.0, 1.0, n)
        us = [np.sin(math.pi * x)]
        for k in range(len(times) - 1):
            u = us[-1].copy()
            u[1:-1] += (times[k + 1] - times[k]) * self.kappa * self._lap(u)
            us.append(u)
        dx = 1.0 / (n - 1)
        J = sum(0.5 * dx * float(np.dot(u, u)) for u in us)
        lam, grad = dx * us[-1], 0.0
        for k in range(len(times) - 2, -1, -1):
            dt, u = times[k + 1] - times[k], us[k]
            grad += float(np.dot(lam[1:-1], dt * self._lap(u)))
            c = dt * self.kappa / (dx * dx)
            back = lam.copy()
            back[:-2] += c * lam[1:-1]
            back[1:-1] += -2.0 * c * lam[1:-1]
            back[2:] += c * lam[1:-1]
            lam = back + dx * u
        return J, grad


def diffusion_class(coarsening=True):
    """``Diffusion`` with coarsening True (halving), "identity" (copies) or False (none)."""
    if coarsening is True:
        return Diffusion

    def copy(self, src, dst, status):
        dst[:] = src

    names = ("shape_at", "coarsen", "refine", "coarsen_adjoint", "refine_adjoint")
    attrs = {m: xb.App.__dict__[m] for m in names}  # the base class's: not overridden
    if coarsening == "identity":
        attrs.update({m: copy for m in names[1:]})
    return type("Diffusion", (Diffusion,), attrs)
