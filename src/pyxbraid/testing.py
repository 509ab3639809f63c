"""Check your own App's adjoint callbacks (XBraid's braid_TestAll idea).

Four checks, each returning a :class:`CheckResult` (truthy when it passed,
``.assert_ok()`` raises with the details):

- :func:`check_step_adjoint`: the dot-product test of ``step_adjoint`` against
  central finite differences of ``step`` in random directions (state, ustop
  and, when you name it, the design);
- :func:`check_objective_adjoint`: ``objective_adjoint`` against finite
  differences of ``objective``;
- :func:`check_gradient`: a whole adjoint solve's gradient against finite
  differences of the objective of whole solves (collective over the solver's
  communicator);
- :func:`check_layer`: a :class:`pyxbraid.nn.Layer`'s ``vjp`` against finite
  differences of its ``forward``, the state part and each parameter
  separately (a :class:`LayerCheckResult` saying which part is wrong and by
  how much).

The first two call your callbacks directly with a stand-in status object
(``tstart, tstop, dt, t, tindex, level, nlevels, iter, done, phase, ntime,
residual_norm``), so they work on Python Apps.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .app import App
from .nn.layers import Layer, checked_forward, checked_vjp, readonly, spec_of

__all__ = [
    "CheckResult",
    "LayerCheckResult",
    "check_gradient",
    "check_layer",
    "check_objective_adjoint",
    "check_step_adjoint",
]


@dataclass
class CheckResult:
    """Outcome of a check.

    Attributes
    ----------
    passed : bool
        True when every compared pair agreed within the tolerance.
    max_rel_error : float
        The largest relative discrepancy seen.
    details : list of str
        One line per comparison (what, adjoint value, finite-difference value, error).
    """

    passed: bool
    max_rel_error: float
    details: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def assert_ok(self) -> None:
        """Raise AssertionError listing the comparisons when the check failed."""
        if not self.passed:
            raise AssertionError("adjoint check failed:\n  " + "\n  ".join(self.details))


def _status(t: float, dt: float, level: int, ntime: int) -> Any:
    return types.SimpleNamespace(
        tstart=t,
        tstop=t + dt,
        dt=dt,
        t=t,
        tindex=0,
        level=level,
        nlevels=level + 1,
        iter=0,
        done=False,
        phase="fc_relax",
        residual_norm=-1.0,
        ntime=ntime,
    )


def _compare(what: str, adjoint: float, fd: float, rtol: float, atol: float, out: list[str]) -> float:
    err = abs(adjoint - fd) / max(abs(fd), abs(adjoint), atol / rtol if rtol > 0 else 1.0, 1e-300)
    out.append(f"{what}: adjoint {adjoint:.12e}, finite differences {fd:.12e}, relative error {err:.2e}")
    return err


def _design_get(app: App, design: str) -> np.ndarray:
    return np.array(getattr(app, design), dtype=np.float64, copy=True)


def _design_set(app: App, design: str, value: np.ndarray) -> None:
    old = getattr(app, design)
    setattr(app, design, float(value) if np.ndim(old) == 0 else value.reshape(np.shape(old)).copy())


@contextlib.contextmanager
def _design_shifted(app: App, design: str | None, p0: np.ndarray | None, dp: np.ndarray | None, shift: float):
    """Temporarily set the design to p0 + shift * dp (no-op without a design)."""
    if dp is None or design is None or p0 is None:
        yield
        return
    _design_set(app, design, p0 + shift * dp)
    try:
        yield
    finally:
        _design_set(app, design, p0)


def _gradient_of(app: App) -> np.ndarray:
    return np.array(app.gradient(), dtype=np.float64, copy=True)


def check_step_adjoint(
    app: App,
    *,
    t: float = 0.0,
    dt: float = 0.1,
    u: np.ndarray | None = None,
    ustop: np.ndarray | None = None,
    design: str | None = None,
    directions: int = 3,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-12,
    level: int = 0,
    ntime: int = 1,
    seed: int = 0,
) -> CheckResult:
    """Dot-product test of ``step_adjoint`` against finite differences of ``step``.

    For random directions ``du``, ``dustop`` (and ``dp`` of the design) and a
    random weight ``w``, checks ``<w, dPhi> = <J_u^T w, du> + <J_ustop^T w, dustop>
    (+ <grad, dp>)`` where ``dPhi`` comes from central differences of
    ``step`` with step ``eps``.

    Parameters
    ----------
    app : App
        A Python App with ``step``, ``step_adjoint``, ``reset_gradient``.
    t, dt : float
        The step to test (from t to t + dt).
    u, ustop : array_like, optional
        Where to test (default: random states).
    design : str, optional
        Name of the attribute holding the design (float or array) that ``step``
        reads; enables the check of the gradient contribution.
    directions : int, default 3
    eps : float, default 1e-6
    rtol, atol : float
        Tolerance of each comparison.
    level : int, default 0
        ``status.level`` passed to the callbacks.
    ntime : int, default 1
        ``status.ntime`` passed to the callbacks.
    seed : int, default 0

    Returns
    -------
    CheckResult

    Examples
    --------
    >>> import numpy as np, pyxbraid as xb
    >>> from pyxbraid.testing import check_step_adjoint
    >>> class Decay(xb.App):
    ...     def __init__(self):
    ...         super().__init__(shape=(2,)); self.lam = -1.0; self.grad = 0.0
    ...     def init(self, t, u): u[:] = 1.0
    ...     def step(self, u, ustop, fstop, status):
    ...         u /= 1.0 - self.lam * status.dt
    ...     def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
    ...         d = 1.0 - self.lam * status.dt
    ...         self.grad += float(np.dot(u, u_bar)) * status.dt / d**2
    ...         u_bar /= d
    ...     def reset_gradient(self): self.grad = 0.0
    >>> bool(check_step_adjoint(Decay(), design="lam"))
    True
    """
    rng = np.random.default_rng(seed)
    shape = app.shape
    u0 = rng.standard_normal(shape) if u is None else np.array(u, dtype=np.float64).reshape(shape)
    s0 = rng.standard_normal(shape) if ustop is None else np.array(ustop, dtype=np.float64).reshape(shape)
    status = _status(t, dt, level, ntime)

    def phi(uu: np.ndarray, ss: np.ndarray) -> np.ndarray:
        out = uu.copy()
        app.step(out, ss.copy(), None, status)
        return out

    details: list[str] = []
    worst = 0.0
    for k in range(directions):
        du, ds, w = (rng.standard_normal(shape) for _ in range(3))
        p0 = _design_get(app, design) if design is not None else None
        dp = rng.standard_normal(p0.shape) if p0 is not None else None

        def shifted(sign: float, p0: Any = p0, dp: Any = dp, du: Any = du, ds: Any = ds) -> np.ndarray:
            with _design_shifted(app, design, p0, dp, sign * eps):
                return phi(u0 + sign * eps * du, s0 + sign * eps * ds)

        fd_total = float(np.vdot(w, (shifted(+1.0) - shifted(-1.0)) / (2 * eps)))
        app.reset_gradient()
        u_bar = w.copy()
        ustop_bar = np.zeros(shape)
        app.step_adjoint(u0.copy(), s0.copy(), u_bar, ustop_bar, status)
        adj_total = float(np.vdot(u_bar, du) + np.vdot(ustop_bar, ds))
        if dp is not None:
            adj_total += float(np.vdot(_gradient_of(app), dp))
        app.reset_gradient()
        worst = max(worst, _compare(f"direction {k}", adj_total, fd_total, rtol, atol, details))
    return CheckResult(worst <= rtol, worst, details)


def check_objective_adjoint(
    app: App,
    *,
    t: float = 0.0,
    u: np.ndarray | None = None,
    design: str | None = None,
    f_bar: float = 1.3,
    directions: int = 3,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-12,
    ntime: int = 10,
    seed: int = 0,
) -> CheckResult:
    """``objective_adjoint`` against central finite differences of ``objective``.

    Checks ``f_bar * df = <u_bar, du> (+ <grad, dp>)`` for random directions.

    Parameters
    ----------
    app : App
        A Python App with ``objective``, ``objective_adjoint`` and ``reset_gradient``.
    t : float
        ``status.t`` passed to the callbacks.
    u : array_like, optional
        Where to test (default: a random state).
    design : str, optional
        Attribute holding the design, when the objective depends on it.
    f_bar : float, default 1.3
    directions, eps, rtol, atol, ntime, seed
        As in :func:`check_step_adjoint`.

    Returns
    -------
    CheckResult
    """
    rng = np.random.default_rng(seed)
    shape = app.shape
    u0 = rng.standard_normal(shape) if u is None else np.array(u, dtype=np.float64).reshape(shape)
    status = _status(t, 0.0, 0, ntime)
    status.phase = "objective"
    details: list[str] = []
    worst = 0.0
    for k in range(directions):
        du = rng.standard_normal(shape)
        p0 = _design_get(app, design) if design is not None else None
        dp = rng.standard_normal(p0.shape) if p0 is not None else None

        def f(sign: float, p0: Any = p0, dp: Any = dp, du: Any = du) -> float:
            with _design_shifted(app, design, p0, dp, sign * eps):
                return float(app.objective(u0 + sign * eps * du, status))

        fd = f_bar * (f(+1.0) - f(-1.0)) / (2 * eps)
        app.reset_gradient()
        u_bar = np.zeros(shape)
        app.objective_adjoint(u0.copy(), u_bar, f_bar, status)
        adj = float(np.vdot(u_bar, du))
        if dp is not None:
            adj += float(np.vdot(_gradient_of(app), dp))
        app.reset_gradient()
        worst = max(worst, _compare(f"direction {k}", adj, fd, rtol, atol, details))
    return CheckResult(worst <= rtol, worst, details)


def check_gradient(
    make_solver: Callable[[], Any],
    get_design: Callable[[], np.ndarray | float],
    set_design: Callable[[np.ndarray | float], None],
    *,
    directions: int = 2,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-12,
    seed: int = 0,
) -> CheckResult:
    """Check a whole adjoint solve's gradient against finite differences of whole solves.

    Collective: every rank of the solver's communicator must call it with the
    same arguments (the directions are drawn from ``seed`` on every rank).

    Parameters
    ----------
    make_solver : callable
        Returns a fresh :class:`pyxbraid.Solver` built with ``adjoint=True`` whose
        app reads the current design.
    get_design, set_design : callable
        Read and write the design (a float or an array).
    directions : int, default 2
    eps : float, default 1e-6
        Finite-difference step along each random direction.
    rtol, atol : float
        Solve to tolerances well below ``rtol`` for a meaningful comparison.
    seed : int, default 0

    Returns
    -------
    CheckResult

    Examples
    --------
    >>> import pyxbraid as xb
    >>> from pyxbraid.testing import check_gradient
    >>> app = xb.apps.LinearODE(objective="mean_square")
    >>> def make():
    ...     return xb.Solver(app, 0.0, 5.0, 32, max_levels=3, adjoint=True,
    ...                      abs_tol=1e-13, abs_tol_adjoint=1e-13)
    >>> def set_lam(v):
    ...     app.lam = v
    >>> bool(check_gradient(make, lambda: app.lam, set_lam))
    True
    """
    rng = np.random.default_rng(seed)
    p0 = np.array(get_design(), dtype=np.float64, copy=True)
    scalar = p0.ndim == 0

    def put(value: np.ndarray) -> None:
        set_design(float(value) if scalar else value.copy())

    def solve() -> tuple[float, np.ndarray]:
        solver = make_solver()
        result = solver.solve()
        return float(result.objective), np.array(solver.gradient(), dtype=np.float64)

    details: list[str] = []
    worst = 0.0
    try:
        put(p0)
        _, grad = solve()
        for k in range(directions):
            d = rng.standard_normal(p0.shape)
            put(p0 + eps * d)
            jp, _ = solve()
            put(p0 - eps * d)
            jm, _ = solve()
            fd = (jp - jm) / (2 * eps)
            worst = max(worst, _compare(f"direction {k}", float(np.vdot(grad, d)), fd, rtol, atol, details))
    finally:
        put(p0)
    return CheckResult(worst <= rtol, worst, details)


@dataclass
class LayerCheckResult(CheckResult):
    """Outcome of :func:`check_layer`: one relative error per part of the ``vjp``.

    Attributes
    ----------
    errors : dict of str to float
        The largest relative error of each part over the directions:
        ``"state"`` (the state gradient ``(dF/du)^T v``) and
        ``"parameter <name>"`` for each parameter (``(dF/dtheta)^T v``).
    rtol : float
        The tolerance each part was held to.
    """

    errors: dict[str, float] = field(default_factory=dict)
    rtol: float = 0.0

    @property
    def failed(self) -> list[str]:
        """Return the parts whose error exceeds ``rtol`` (empty when the check passed)."""
        return [part for part, err in self.errors.items() if not err <= self.rtol]

    def summary(self) -> str:
        """Return one line per part: its worst relative error, and whether it passed."""
        return "\n".join(
            f"{part}: relative error {err:.2e} ({'ok' if err <= self.rtol else f'WRONG, > rtol={self.rtol:g}'})"
            for part, err in self.errors.items()
        )

    def assert_ok(self) -> None:
        """Raise AssertionError naming the wrong parts of the vjp, by how much, with the comparisons."""
        if not self.passed:
            wrong = ", ".join(f"{part} (relative error {self.errors[part]:.2e})" for part in self.failed)
            raise AssertionError(
                f"layer check failed: the vjp's {wrong} disagree with finite differences of forward "
                f"(rtol={self.rtol:g})\n  " + "\n  ".join(self.details)
            )


def check_layer(
    layer: Layer,
    *,
    batch: int = 3,
    u: np.ndarray | None = None,
    params: dict[str, np.ndarray] | None = None,
    directions: int = 3,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-12,
    seed: int = 0,
) -> LayerCheckResult:
    """Dot-product test of a :class:`pyxbraid.nn.Layer`'s ``vjp`` against finite differences of ``forward``.

    For random cotangents ``v`` and directions, each part of the
    vector-Jacobian product is compared with central differences of
    ``forward`` separately: the state part ``<vjp_u(v), du>`` against
    ``<v, (F(u + eps du) - F(u - eps du)) / (2 eps)>``, and for every parameter
    ``<vjp_theta(v), dtheta>`` against the same differences in ``theta``
    alone -- so the result says which part is wrong (``result.failed``) and by
    how much (``result.errors``). The layer's definition and the arrays it
    returns are checked as the trainer checks them (float64, exact shapes),
    with read-only inputs, and ``forward`` must give the same result twice.

    Parameters
    ----------
    layer : pyxbraid.nn.Layer
    batch : int, default 3
        Samples in the random states (ignored when ``u`` is given).
    u : array_like, optional
        Where to test, shape ``(n, *layer.state_shape)`` (default: normal).
    params : dict of str to array_like, optional
        The parameters to test at (default: normal, standard deviation 0.5,
        so that biases are not zero).
    directions : int, default 3
    eps : float, default 1e-6
        Finite-difference step along each (standard normal) direction.
    rtol, atol : float, default 1e-6, 1e-12
        Tolerance of each comparison (``atol``: below it, values count as zero).
    seed : int, default 0

    Returns
    -------
    LayerCheckResult
        Truthy when every part passed; ``.assert_ok()`` raises naming the
        wrong parts.

    Raises
    ------
    TypeError, ValueError
        A bad argument, or a layer whose definition or results break the
        protocol (naming the layer, the method and what was wrong).

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid import nn
    >>> from pyxbraid.testing import check_layer
    >>> bool(check_layer(nn.Dense(4, activation="tanh")))
    True
    >>> class Wrong(nn.Dense):                  # forgets the activation's derivative in the bias gradient
    ...     def vjp(self, u, params, v):
    ...         u_bar, grads = super().vjp(u, params, v)
    ...         return u_bar, {**grads, "bias": v.sum(axis=0)}
    >>> result = check_layer(Wrong(4, activation="tanh"))
    >>> result.failed
    ['parameter bias']
    >>> result.errors["state"] < 1e-8, result.errors["parameter weight"] < 1e-8
    (True, True)
    """
    spec = spec_of(layer)
    name = type(layer).__name__
    for arg, count, minimum in (("batch", batch, 1), ("directions", directions, 1), ("seed", seed, 0)):
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)):
            raise TypeError(f"{arg} must be an integer >= {minimum}, got {count!r}")
        if count < minimum:
            raise ValueError(f"{arg} must be an integer >= {minimum}, got {count!r}")
    for arg, real in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if isinstance(real, (bool, np.bool_)) or not isinstance(real, (int, float, np.floating, np.integer)):
            raise TypeError(f"{arg} must be a real number, got {real!r}")
        if not (np.isfinite(real) and real > 0):
            raise ValueError(f"{arg} must be finite and > 0, got {real!r}")
    rng = np.random.default_rng(seed)
    if u is None:
        u0 = rng.standard_normal((int(batch), *spec.state_shape))
    else:
        u0 = _float_array("u", u)
        if u0.ndim != 1 + len(spec.state_shape) or u0.shape[1:] != spec.state_shape or u0.shape[0] < 1:
            raise ValueError(f"u must have shape (n, *{name}.state_shape) = (n, {spec.state_shape}), got {u0.shape}")
    if params is None:
        theta = {k: np.asarray(0.5 * rng.standard_normal(shape)) for k, shape in spec.parameters.items()}
    else:
        if not isinstance(params, dict) or set(params) != set(spec.parameters):
            got = sorted(map(str, params)) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"params must be a dict with the parameters {sorted(spec.parameters)}, got {got}")
        theta = {k: _float_array(f"params[{k!r}]", params[k]) for k in spec.parameters}
        for k, shape in spec.parameters.items():
            if theta[k].shape != shape:
                raise ValueError(f"params[{k!r}] must have shape {shape}, got {theta[k].shape}")

    def forward(uu: np.ndarray, pp: dict[str, np.ndarray]) -> np.ndarray:
        return checked_forward(layer, uu, {k: readonly(v) for k, v in pp.items()})

    first, again = forward(u0, theta), forward(u0, theta)
    if not np.array_equal(first, again):
        raise ValueError(
            f"{name}.forward is not deterministic: two calls at the same u and params differ by up to "
            f"{float(np.max(np.abs(first - again))):.3g}; finite differences cannot check it"
        )
    details: list[str] = []
    errors: dict[str, float] = {"state": 0.0, **{f"parameter {k}": 0.0 for k in spec.parameters}}
    for d in range(directions):
        v = rng.standard_normal(u0.shape)
        u_bar, grads = checked_vjp(layer, spec, u0, {k: readonly(x) for k, x in theta.items()}, v)
        du = rng.standard_normal(u0.shape)
        fd = float(np.vdot(v, (forward(u0 + eps * du, theta) - forward(u0 - eps * du, theta)) / (2 * eps)))
        err = _compare(f"state, direction {d}", float(np.vdot(u_bar, du)), fd, rtol, atol, details)
        errors["state"] = max(errors["state"], err)
        for k, shape in spec.parameters.items():
            dp = rng.standard_normal(shape)
            plus, minus = dict(theta), dict(theta)
            plus[k], minus[k] = theta[k] + eps * dp, theta[k] - eps * dp
            fd = float(np.vdot(v, (forward(u0, plus) - forward(u0, minus)) / (2 * eps)))
            err = _compare(f"parameter {k}, direction {d}", float(np.vdot(grads[k], dp)), fd, rtol, atol, details)
            errors[f"parameter {k}"] = max(errors[f"parameter {k}"], err)
    worst = max(errors.values())
    return LayerCheckResult(worst <= rtol, worst, details, errors, float(rtol))


def _float_array(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as a float64 copy; TypeError naming ``name`` unless it is a real, finite array."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real array, got {type(value).__name__} ({exc})") from None
    if arr.dtype.kind not in "fiu" or arr.dtype.fields is not None:
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr
