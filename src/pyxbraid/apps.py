"""Built-in apps implemented in C++: no Python runs inside their time steps."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _core
from ._options import as_finite as _finite
from .app import NativeApp

__all__ = ["Cubic", "Heat1D", "LinearODE", "Lorenz"]


class LinearODE(NativeApp):
    """u' = lam * u, XBraid's ex-01 (scalar or diagonal ``lam``).

    Parameters
    ----------
    lam : float or sequence of float, default -1.0
        Decay rate; a sequence gives a diagonal system of that size.
    u0 : float, default 1.0
        Initial value at tstart (every component).
    guess : float, default 0.456
        Initial guess at the other C-points (ex-01's value).
    scheme : {"backward_euler", "forward_euler"}
        Backward Euler is ex-01: ``u <- (u + fstop) / (1 - lam dt)``.
    residual : bool, default False
        Use XBraid's user residual mode with ``A(u_i, u_{i-1}) = (1 - lam dt) u_i - u_{i-1}``.
    objective : {None, "mean_square"}
        Adjoint problem of XBraid's ex-01-adjoint: design ``lam``,
        ``f(u_i) = |u_i|^2 / ntime``; the gradient is d J / d lam.
    target : float, optional
        Tracking post-process of ex-01-optimization:
        ``J = (I - target)^2 / 2 + regularization / 2 |lam|^2``.
    regularization : float, default 0.0

    Examples
    --------
    >>> import pyxbraid as xb
    >>> s = xb.Solver(xb.apps.LinearODE(lam=[-1.0, -2.0]), tstart=0.0, tstop=1.0, ntime=8, max_levels=1)
    >>> s.solve().iterations, s.state_at(8).shape
    (0, (2,))
    """

    _cpp: Any

    def __init__(
        self,
        lam: float | Sequence[float] = -1.0,
        *,
        u0: float = 1.0,
        guess: float = 0.456,
        scheme: str = "backward_euler",
        residual: bool = False,
        objective: str | None = None,
        target: float | None = None,
        regularization: float = 0.0,
    ) -> None:
        if isinstance(lam, (numbers.Real, np.floating, np.integer)) and not isinstance(lam, bool):
            lams = [_finite("lam", lam)]
        else:
            arr = np.asarray(lam, dtype=np.float64)
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(f"lam must be a number or a non-empty 1-D sequence, got {lam!r}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"lam must be finite, got {lam!r}")
            lams = [float(x) for x in arr]
        if scheme not in ("backward_euler", "forward_euler"):
            raise ValueError(f"scheme must be 'backward_euler' or 'forward_euler', got {scheme!r}")
        if not isinstance(residual, (bool, np.bool_)):
            raise TypeError(f"residual must be True or False, got {residual!r}")
        self.shape = (len(lams),)
        self.u0 = _finite("u0", u0)
        self.guess = _finite("guess", guess)
        self.scheme = scheme
        self.residual = bool(residual)
        if objective not in (None, "mean_square"):
            raise ValueError(f"objective must be None or 'mean_square', got {objective!r}")
        if target is not None and objective is None:
            raise ValueError("target needs objective='mean_square'")
        self.objective = objective
        self.target = None if target is None else _finite("target", target)
        self.regularization = _finite("regularization", regularization)
        self._scalar = len(lams) == 1 and not isinstance(lam, (list, tuple, np.ndarray))
        self._cpp = _core.LinearODE(lams, self.u0, self.guess, self.scheme, self.residual)
        self._cpp.set_objective(
            objective == "mean_square",
            self.target is not None,
            0.0 if self.target is None else self.target,
            self.regularization,
        )

    def _native(self):
        return self._cpp

    @property
    def lam(self):
        """The decay rate(s): the design of the adjoint problem. Settable between solves."""
        values = self._cpp.lam
        return values[0] if self._scalar else np.array(values)

    @lam.setter
    def lam(self, value) -> None:
        arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if arr.shape != (self.shape[0],) or not np.all(np.isfinite(arr)):
            raise ValueError(f"lam must be {self.shape[0]} finite value(s), got {value!r}")
        self._cpp.lam = [float(x) for x in arr]

    def gradient(self):
        """Return this rank's gradient d J / d lam (float for a scalar lam)."""
        g = self._cpp.gradient
        return g[0] if self._scalar else np.array(g)

    def __repr__(self) -> str:
        return f"LinearODE(lam={self.lam!r}, scheme={self.scheme!r}, residual={self.residual})"


class Cubic(NativeApp):
    """u' = -u^3 + p: a nonlinear problem with an adjoint (design ``p``).

    Backward Euler; each step solves ``v + dt v^3 = u + dt p`` by Newton's
    method started from ``ustop``. The objective is
    ``f(u_i) = |u_i - target|^2 / ntime`` and the gradient is d J / d p.

    Parameters
    ----------
    p : float, default 0.5
        The forcing (design).
    u0 : float, default 1.0
        Initial value (every component).
    guess : float, default 0.0
        Initial guess at the other C-points.
    size : int, default 1
        Number of (identical, independent) components.
    target : float, default 0.0
        Tracking target of the objective.

    Examples
    --------
    >>> import pyxbraid as xb
    >>> app = xb.apps.Cubic(p=0.5)
    >>> s = xb.Solver(app, 0.0, 4.0, 64, max_levels=1, adjoint=True)
    >>> r = s.solve()
    >>> round(r.objective, 10), round(s.gradient(), 10)
    (0.6863855961, 0.716065896)
    """

    _cpp: Any

    def __init__(
        self, p: float = 0.5, *, u0: float = 1.0, guess: float = 0.0, size: int = 1, target: float = 0.0
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        self.shape = (int(size),)
        self.objective = "mean_square"
        self._cpp = _core.Cubic(
            int(size), _finite("p", p), _finite("u0", u0), _finite("guess", guess), _finite("target", target)
        )

    def _native(self):
        return self._cpp

    @property
    def p(self) -> float:
        """The forcing (design). Settable between solves."""
        return self._cpp.p

    @p.setter
    def p(self, value: float) -> None:
        self._cpp.p = _finite("p", value)

    def gradient(self) -> float:
        """Return this rank's gradient d J / d p."""
        return self._cpp.gradient

    def __repr__(self) -> str:
        return f"Cubic(p={self.p!r}, size={self.shape[0]})"


class Heat1D(NativeApp):
    """1-D heat equation u_t = u_xx + g on [0, pi], XBraid's ex-02.

    Exact solution sin(x) cos(t); backward Euler in time, second-order finite
    differences in space (``nspace`` points including the boundaries).

    Parameters
    ----------
    nspace : int, default 33
        Spatial points including both boundaries (>= 3).
    guess : {"random", "xbraid", "zero"}, default "random"
        Initial guess away from tstart: a rank-independent pseudo-random field
        (``"random"``), XBraid's per-process generator (``"xbraid"``, makes the
        results depend on the number of ranks exactly as XBraid's ex-02 does),
        or zeros.
    residual : bool, default False
        XBraid's residual mode for ex-02 (``r = A ustop - r - dt g``).
    spatial_coarsening : bool, default False
        ex-02's ``-sc``: each coarser time level also halves the spatial
        intervals (full weighting to coarsen, linear interpolation to refine)
        until 3 points remain; ``nspace - 1`` must be a power of 2.

    Examples
    --------
    >>> import pyxbraid as xb
    >>> heat = xb.apps.Heat1D(nspace=33)
    >>> s = xb.Solver(heat, tstart=0.0, tstop=2 * 3.141592653589793, ntime=64, max_levels=1)
    >>> _ = s.solve()
    >>> round(heat.error(s.times[-1], s.state_at(64)), 6)
    0.029214
    """

    _helper: Any
    nspace: int
    guess: str
    residual: bool
    spatial_coarsening: bool

    def __init__(
        self, nspace: int = 33, *, guess: str = "random", residual: bool = False, spatial_coarsening: bool = False
    ) -> None:
        if isinstance(nspace, bool) or not isinstance(nspace, numbers.Integral):
            raise TypeError(f"nspace must be an int, got {nspace!r}")
        if nspace < 3:
            raise ValueError(f"nspace must be >= 3, got {nspace}")
        if guess not in ("random", "xbraid", "zero"):
            raise ValueError(f"guess must be 'random', 'xbraid' or 'zero', got {guess!r}")
        if not isinstance(residual, (bool, np.bool_)):
            raise TypeError(f"residual must be True or False, got {residual!r}")
        if not isinstance(spatial_coarsening, (bool, np.bool_)):
            raise TypeError(f"spatial_coarsening must be True or False, got {spatial_coarsening!r}")
        if spatial_coarsening and (nspace - 1) & (nspace - 2):
            raise ValueError(f"spatial_coarsening=True needs nspace - 1 to be a power of 2, got nspace={nspace}")
        self.spatial_coarsening = bool(spatial_coarsening)
        self.nspace = int(nspace)
        self.shape = (self.nspace,)
        self.guess = guess
        self.residual = bool(residual)
        self._helper = _core.Heat1D(self.nspace, "random", False)

    def _native(self):
        # A fresh engine-side app per solver: guess="xbraid" restarts its generator, as XBraid does per run.
        return _core.Heat1D(self.nspace, self.guess, self.residual, self.spatial_coarsening)

    @property
    def dx(self) -> float:
        """Mesh width pi / (nspace - 1)."""
        return self._helper.dx

    def exact(self, t: float) -> np.ndarray:
        """Exact solution sin(x) cos(t) on the grid."""
        return self._helper.exact(float(t))

    def error(self, t: float, u: np.ndarray) -> float:
        """Discretization error sqrt(dx * sum (u - exact)^2), as ex-02 reports it."""
        return self._helper.error(float(t), np.ascontiguousarray(u, dtype=np.float64))

    def __repr__(self) -> str:
        return f"Heat1D(nspace={self.nspace}, guess={self.guess!r}, residual={self.residual})"


class Lorenz(NativeApp):
    """The Lorenz system by forward Euler, XBraid's ex-07 (delta correction).

    ``x' = sigma (y - x)``, ``y' = x (rho - z) - y``, ``z' = x y - beta z``,
    advanced by ``u <- u + h f(u)``; every point starts at ``u0`` (ex-07's
    initial condition and initial guess). With ``delta_rank=r`` (1 to 3) the
    basis vectors are propagated by the exact Jacobian of the step,
    ``I + h Df(u)`` at the step's input state, in C++; the basis starts as the
    unit vectors and the inner product is the Euclidean one.

    Parameters
    ----------
    sigma, rho, beta : float, default 10, 28, 8/3
        The Lorenz parameters (ex-07's).
    u0 : sequence of 3 float, optional
        Initial state (default: ex-07's, a point near the attractor).
    record : bool, default False
        Record, at every access, each point's local Lyapunov exponents and
        basis vectors (see :meth:`records`); off, the app defines no access.

    Examples
    --------
    >>> import math
    >>> import pyxbraid as xb
    >>> app = xb.apps.Lorenz(record=True)
    >>> s = xb.Solver(app, 0.0, math.log(10.0) / 0.9 * 4, 2048, max_levels=3, nrelax=0,
    ...               abs_tol=1e-6, skip=False, delta_rank=3, lyapunov=True)
    >>> r = s.solve()
    >>> r.iterations, len(app.records()[2048])
    (14, 12)
    """

    U0 = (9.614521163788712, 17.519127090401067, 13.94230712158098)
    _cpp: Any

    def __init__(
        self,
        *,
        sigma: float = 10.0,
        rho: float = 28.0,
        beta: float = 8.0 / 3.0,
        u0: Sequence[float] | None = None,
        record: bool = False,
    ) -> None:
        self.sigma, self.rho, self.beta = _finite("sigma", sigma), _finite("rho", rho), _finite("beta", beta)
        start = np.asarray(self.U0 if u0 is None else u0, dtype=np.float64)
        if start.shape != (3,) or not np.all(np.isfinite(start)):
            raise ValueError(f"u0 must be 3 finite values, got {u0!r}")
        if not isinstance(record, (bool, np.bool_)):
            raise TypeError(f"record must be True or False, got {record!r}")
        self.u0 = tuple(float(v) for v in start)
        self.record = bool(record)
        self.shape = (3,)
        self._cpp = _core.Lorenz(self.sigma, self.rho, self.beta, list(self.u0), self.record)

    def _native(self):
        return self._cpp

    def records(self) -> dict[int, list[float]]:
        """Return what the last access saw at this rank's points (``record=True``).

        Returns
        -------
        dict of int to list of float
            Per time index, ``[exp_j, psi_j[0], psi_j[1], psi_j[2]]`` for each
            basis vector j: the local Lyapunov exponent (0 where none is
            computed: F-points, index 0, ``lyapunov=False``) and the basis
            vector, ex-07's ``ex-07-lv.out`` line. Empty lists without delta
            correction.
        """
        return self._cpp.records()

    def __repr__(self) -> str:
        return f"Lorenz(sigma={self.sigma!r}, rho={self.rho!r}, beta={self.beta!r}, record={self.record})"
