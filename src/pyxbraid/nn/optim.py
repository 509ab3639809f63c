"""Optimisers on distributed parameters.

Every rank updates only the parameters it stores; the only global quantities
are the dot products of L-BFGS and its line search, reduced over the
communicator by the ``dot`` the :class:`~pyxbraid.nn.Trainer` passes in.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Adam", "LBFGS", "LineSearchWarning", "Optimizer", "SGD"]

Closure = Callable[[], "tuple[float, np.ndarray]"]
Dot = Callable[[np.ndarray, np.ndarray], float]


def _as_real(value: Any) -> float | None:
    """Return ``value`` as a float when it is a real number (a bool is not), else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        return None
    return float(value)


def _as_int(value: Any) -> int | None:
    """Return ``value`` as an int when it is an integer (a bool is not), else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        return None
    return int(value)


def _positive(name: str, value: Any, allow_zero: bool = False) -> float:
    v = _as_real(value)
    if v is None:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def _fraction(name: str, value: Any) -> float:
    v = _positive(name, value, allow_zero=True)
    if not v < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return v


class LineSearchWarning(RuntimeWarning):
    """L-BFGS: no trial step of the line search decreased the loss enough; the step was undone."""


def _vector(name: str, value: Any, size: int | None) -> np.ndarray:
    """Check a state vector: 1-D, float (no complex/str/object), finite, ``size`` entries when given; a float64 copy."""
    arr = np.asarray(value)
    if arr.dtype.kind != "f" or arr.ndim != 1:
        raise ValueError(f"state[{name!r}] must be a 1-D float array, got dtype {arr.dtype}, shape {arr.shape}")
    if size is not None and arr.size != size:
        raise ValueError(f"state[{name!r}] must have {size} entries like the other vectors, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"state[{name!r}] contains NaN or infinite values")
    return np.array(arr, dtype=np.float64, copy=True)


class Optimizer:
    """Base class: :meth:`step` updates ``params`` in place and returns the loss before the update.

    :meth:`state_dict` / :meth:`load_state_dict` save and restore everything
    a step depends on (hyperparameters and accumulated state), so training
    can continue exactly where it stopped. Vectors in the state are laid out
    like the ``params`` given to :meth:`step` (in a :class:`Trainer`: this
    rank's parameters; the trainer's checkpoints convert them to the
    network's global layout and back).
    """

    #: state_dict keys holding parameter-space vectors (None when absent)
    _VECTORS: tuple[str, ...] = ()
    #: state_dict keys holding lists of parameter-space vectors
    _VECTOR_LISTS: tuple[str, ...] = ()

    def step(self, params: np.ndarray, closure: Closure, dot: Dot) -> float:  # pragma: no cover - interface
        """Update ``params`` in place and return the loss before the update.

        Parameters
        ----------
        params : numpy.ndarray
            The parameters (this rank's, in a :class:`Trainer`), updated in place.
        closure : callable() -> (float, numpy.ndarray)
            Evaluates the loss and its gradient at the current ``params``
            (collective in a :class:`Trainer`: every rank calls it equally often).
        dot : callable(a, b) -> float
            The inner product of two parameter vectors (summed over the ranks).
        """
        raise NotImplementedError

    def forget(self) -> None:
        """Drop values cached for the current batch (called when the batch changes)."""

    def reset(self) -> None:
        """Forget all state (moments, curvature pairs)."""

    def hyperparameters(self) -> dict[str, Any]:
        """Return the constructor's arguments, as given to it (JSON-serialisable)."""
        raise NotImplementedError  # pragma: no cover - interface

    def state_dict(self) -> dict[str, Any]:
        """Return everything :meth:`step` depends on: ``{"optimizer": name, **hyperparameters, **state}`` (copies)."""
        raise NotImplementedError  # pragma: no cover - interface

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (hyperparameters included); ValueError naming a bad entry."""
        raise NotImplementedError  # pragma: no cover - interface

    def _check_state(self, state: Any) -> dict[str, Any]:
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from {type(self).__name__}.state_dict(), got {type(state).__name__}")
        name = self.state_dict()["optimizer"]
        if state.get("optimizer") != name:
            raise ValueError(f"state is for optimizer {state.get('optimizer')!r}, not {name!r}")
        expected = set(self.state_dict())
        missing, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unknown:
            raise ValueError(f"state for {name} is missing {missing} / has unknown keys {unknown}")
        # the hyperparameters pass the constructor's checks
        type(self)(**{k: state[k] for k in self.hyperparameters()})
        return state


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum.

    ``v <- momentum * v + g``, ``theta <- theta - lr * v`` (PyTorch's convention).

    Parameters
    ----------
    lr : float
        Learning rate (> 0).
    momentum : float, default 0.9
        In [0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid import nn
    >>> x = np.array([1.0, -2.0])
    >>> opt = nn.SGD(lr=0.1, momentum=0.0)
    >>> opt.step(x, lambda: (float(x @ x), 2 * x), lambda a, b: float(a @ b))
    5.0
    >>> x
    array([ 0.8, -1.6])
    """

    _VECTORS = ("velocity",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self._configure(lr, momentum)
        self._velocity: np.ndarray | None = None

    def _configure(self, lr: Any, momentum: Any) -> None:
        self.lr = _positive("lr", lr)
        self.momentum = _fraction("momentum", momentum)

    def step(self, params: np.ndarray, closure: Closure, dot: Dot) -> float:
        """Take one momentum step (``dot`` is not used); return the loss before it."""
        loss, grad = closure()
        velocity = self._velocity
        if velocity is None or velocity.shape != params.shape:
            velocity = self._velocity = np.zeros_like(params)
        velocity *= self.momentum
        velocity += grad
        params -= self.lr * velocity
        return loss

    def reset(self) -> None:
        """Forget the momentum."""
        self._velocity = None

    def hyperparameters(self) -> dict[str, Any]:
        """Return ``{"lr", "momentum"}``."""
        return {"lr": self.lr, "momentum": self.momentum}

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer": "SGD", "lr", "momentum", "velocity"}`` (velocity: None before the first step).

        Examples
        --------
        >>> import numpy as np
        >>> from pyxbraid import nn
        >>> x = np.array([1.0, -2.0]); opt = nn.SGD(lr=0.1)
        >>> _ = opt.step(x, lambda: (float(x @ x), 2 * x), lambda a, b: float(a @ b))
        >>> again = nn.SGD(lr=0.1); again.load_state_dict(opt.state_dict())
        >>> again.state_dict()["velocity"]
        array([ 2., -4.])
        """
        v = None if self._velocity is None else self._velocity.copy()
        return {"optimizer": "SGD", **self.hyperparameters(), "velocity": v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; ValueError naming a bad entry."""
        state = self._check_state(state)
        v = None if state["velocity"] is None else _vector("velocity", state["velocity"], None)
        self._configure(state["lr"], state["momentum"])
        self._velocity = v

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum})"


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias correction.

    Parameters
    ----------
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid import nn
    >>> x = np.array([1.0, -2.0])
    >>> opt = nn.Adam(lr=0.1)
    >>> opt.step(x, lambda: (float(x @ x), 2 * x), lambda a, b: float(a @ b))
    5.0
    >>> np.round(x, 6)      # the first step moves every entry by lr
    array([ 0.9, -1.9])
    """

    _VECTORS = ("m", "v")

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self._configure(lr, betas, eps)
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._t = 0

    def _configure(self, lr: Any, betas: Any, eps: Any) -> None:
        self.lr = _positive("lr", lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        self.betas = (_fraction("betas[0]", betas[0]), _fraction("betas[1]", betas[1]))
        self.eps = _positive("eps", eps)

    def reset(self) -> None:
        """Forget the moments and the step count."""
        self._m = self._v = None
        self._t = 0

    def step(self, params: np.ndarray, closure: Closure, dot: Dot) -> float:
        """Take one Adam step (``dot`` is not used); return the loss before it."""
        loss, grad = closure()
        m, v = self._m, self._v
        if m is None or v is None or m.shape != params.shape:
            m, v, self._t = np.zeros_like(params), np.zeros_like(params), 0
            self._m, self._v = m, v
        b1, b2 = self.betas
        self._t += 1
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * grad * grad
        mhat = m / (1 - b1**self._t)
        vhat = v / (1 - b2**self._t)
        params -= self.lr * mhat / (np.sqrt(vhat) + self.eps)
        return loss

    def hyperparameters(self) -> dict[str, Any]:
        """Return ``{"lr", "betas", "eps"}``."""
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps}

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer": "Adam", "lr", "betas", "eps", "t", "m", "v"}`` (m, v: None before the first step).

        Examples
        --------
        >>> import numpy as np
        >>> from pyxbraid import nn
        >>> x = np.array([1.0, -2.0]); opt = nn.Adam(lr=0.1)
        >>> _ = opt.step(x, lambda: (float(x @ x), 2 * x), lambda a, b: float(a @ b))
        >>> state = opt.state_dict(); state["t"], state["m"]
        (1, array([ 0.2, -0.4]))
        """
        copy = lambda a: None if a is None else a.copy()
        return {"optimizer": "Adam", **self.hyperparameters(), "t": self._t, "m": copy(self._m), "v": copy(self._v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; ValueError naming a bad entry."""
        state = self._check_state(state)
        t = state["t"]
        t_int = _as_int(t)
        if t_int is None or t_int < 0:
            raise ValueError(f"state['t'] must be a non-negative integer, got {t!r}")
        if (state["m"] is None) != (state["v"] is None) or (state["m"] is None) != (t == 0):
            raise ValueError("state['m'] and state['v'] must both be None (t = 0) or both be vectors (t > 0)")
        m = v = None
        if state["m"] is not None:
            m = _vector("m", state["m"], None)
            v = _vector("v", state["v"], m.size)
            if np.any(v < 0):
                raise ValueError("state['v'] must be >= 0 (a second moment)")
        self._configure(state["lr"], tuple(state["betas"]), state["eps"])
        self._m, self._v, self._t = m, v, t_int

    def __repr__(self) -> str:
        return f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps})"


class LBFGS(Optimizer):
    """Limited-memory BFGS with a backtracking (Armijo) line search.

    The direction comes from the two-loop recursion over the last
    ``history`` pairs ``(s, y)`` (all inner products reduced over the
    ranks); the step ``t`` starts at ``lr`` and is multiplied by ``shrink``
    until ``J(theta + t d) <= J(theta) + c1 t g.d``. A pair is stored only
    when ``s.y > 0`` (curvature condition), so the inverse Hessian
    approximation stays positive definite. Meant for full-batch training
    (``batch_size=None``), as in the layer-parallel paper.

    Parameters
    ----------
    lr : float, default 1.0
        Initial step of each line search.
    history : int, default 10
        Number of stored pairs (1..1000000).
    c1 : float, default 1e-4
        Armijo constant in (0, 1).
    shrink : float, default 0.5
        Step reduction in (0, 1).
    max_backtracks : int, default 20
        At most this many reductions (1..10000). When no trial step passes
        the Armijo test, the step is undone, the curvature pairs are
        dropped and a :class:`LineSearchWarning` is issued.

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid import nn
    >>> A = np.diag([1.0, 10.0]); x = np.array([1.0, 1.0])
    >>> opt = nn.LBFGS()
    >>> for _ in range(10):
    ...     _ = opt.step(x, lambda: (0.5 * float(x @ A @ x), A @ x), lambda a, b: float(a @ b))
    >>> bool(np.linalg.norm(x) < 1e-8)
    True
    """

    _VECTORS = ("cached_gradient",)
    _VECTOR_LISTS = ("s", "y")

    def __init__(
        self, lr: float = 1.0, history: int = 10, c1: float = 1e-4, shrink: float = 0.5, max_backtracks: int = 20
    ) -> None:
        self._configure(lr, history, c1, shrink, max_backtracks)
        self.reset()

    def _configure(self, lr: Any, history: Any, c1: Any, shrink: Any, max_backtracks: Any) -> None:
        self.lr = _positive("lr", lr)
        history_int = _as_int(history)
        if history_int is None or not 1 <= history_int <= 1_000_000:
            raise ValueError(f"history must be an integer in 1..1000000, got {history!r}")
        self.history = history_int
        self.c1 = _fraction("c1", c1)
        if self.c1 == 0.0:
            raise ValueError(f"c1 must be in (0, 1), got {c1!r}")
        self.shrink = _fraction("shrink", shrink)
        if self.shrink == 0.0:
            raise ValueError(f"shrink must be in (0, 1), got {shrink!r}")
        backtracks = _as_int(max_backtracks)
        if backtracks is None or not 1 <= backtracks <= 10_000:  # shrink ** 10000 underflows long before
            raise ValueError(f"max_backtracks must be an integer in 1..10000, got {max_backtracks!r}")
        self.max_backtracks = backtracks

    def reset(self) -> None:
        """Forget the curvature pairs and the cached loss and gradient."""
        self._pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=self.history)
        self._cached: tuple[float, np.ndarray] | None = None
        self.last_step_size = 0.0
        self.backtracks = 0

    def forget(self) -> None:
        """Drop the loss and gradient cached at the current iterate (the batch changed)."""
        self._cached = None

    def _direction(self, g: np.ndarray, dot: Dot) -> np.ndarray:
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(self._pairs):
            a = rho * dot(s, q)
            q -= a * y
            alphas.append(a)
        if self._pairs:
            s, y, _ = self._pairs[-1]
            q *= dot(s, y) / dot(y, y)
        for (s, y, rho), a in zip(self._pairs, reversed(alphas), strict=True):
            b = rho * dot(y, q)
            q += (a - b) * s
        return -q

    def step(self, params: np.ndarray, closure: Closure, dot: Dot) -> float:
        """Take one L-BFGS step with its line search; return the loss before it."""
        f0, g0 = self._cached if self._cached is not None else closure()
        d = self._direction(g0, dot)
        slope = dot(g0, d)
        if not slope < 0.0:  # not a descent direction: restart from steepest descent
            self._pairs.clear()
            d = -g0
            slope = -dot(g0, g0)
        start = params.copy()
        t = self.lr
        accepted = False
        for backtracks in range(self.max_backtracks + 1):
            self.backtracks = backtracks
            np.copyto(params, start)
            params += t * d
            f, g = closure()
            if math.isfinite(f) and f <= f0 + self.c1 * t * slope:
                accepted = True
                break
            if backtracks < self.max_backtracks:
                t *= self.shrink
        if not accepted:
            # Keeping the last trial would take a step that increased the
            # loss (or made it NaN): undo it. The curvature pairs produced
            # the failing direction, so drop them: the next step starts from
            # steepest descent at the same point.
            np.copyto(params, start)
            self._pairs.clear()
            self._cached = (f0, g0)
            self.last_step_size = 0.0
            warnings.warn(
                f"L-BFGS line search failed: none of the steps {self.lr:g} * {self.shrink:g}^k, "
                f"k = 0..{self.max_backtracks}, decreased the loss {f0:.6g} enough (last trial: {f:.6g}, "
                f"Armijo c1={self.c1:g}); the step was undone and the curvature history reset. "
                "Lower lr or raise max_backtracks if this persists.",
                LineSearchWarning,
                stacklevel=3,
            )
            return f0
        s = params - start
        y = g - g0
        sy = dot(s, y)
        if sy > 1e-12 * math.sqrt(dot(s, s) * dot(y, y)) and sy > 0.0:
            self._pairs.append((s, y, 1.0 / sy))
        self._cached = (f, g)
        self.last_step_size = t
        return f0

    def hyperparameters(self) -> dict[str, Any]:
        """Return ``{"lr", "history", "c1", "shrink", "max_backtracks"}``."""
        return {
            "lr": self.lr,
            "history": self.history,
            "c1": self.c1,
            "shrink": self.shrink,
            "max_backtracks": self.max_backtracks,
        }

    def state_dict(self) -> dict[str, Any]:
        """Return the hyperparameters and the state of the next step.

        The state: the curvature pairs ``s``, ``y``, ``rho`` (oldest first), the
        loss and gradient cached at the current iterate (``cached_loss``,
        ``cached_gradient``; None when the next step evaluates them afresh),
        ``last_step_size`` and ``backtracks``.

        Examples
        --------
        >>> import numpy as np
        >>> from pyxbraid import nn
        >>> A = np.diag([1.0, 10.0]); x = np.array([1.0, 1.0]); opt = nn.LBFGS()
        >>> f = lambda: (0.5 * float(x @ A @ x), A @ x)
        >>> _ = opt.step(x, f, lambda a, b: float(a @ b))
        >>> again = nn.LBFGS(); again.load_state_dict(opt.state_dict())
        >>> y = x.copy(); _ = opt.step(x, f, lambda a, b: float(a @ b))
        >>> _ = again.step(y, lambda: (0.5 * float(y @ A @ y), A @ y), lambda a, b: float(a @ b))
        >>> bool(np.array_equal(x, y))
        True
        """
        cached = self._cached
        return {
            "optimizer": "LBFGS",
            **self.hyperparameters(),
            "s": [p[0].copy() for p in self._pairs],
            "y": [p[1].copy() for p in self._pairs],
            "rho": [p[2] for p in self._pairs],
            "cached_loss": None if cached is None else cached[0],
            "cached_gradient": None if cached is None else cached[1].copy(),
            "last_step_size": self.last_step_size,
            "backtracks": self.backtracks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; ValueError naming a bad entry."""
        state = self._check_state(state)
        for key in ("s", "y", "rho"):
            if not isinstance(state[key], (list, tuple)):
                raise ValueError(f"state[{key!r}] must be a list, got {type(state[key]).__name__}")
        k = len(state["s"])
        if len(state["y"]) != k or len(state["rho"]) != k:
            raise ValueError(
                f"state['s'], state['y'] and state['rho'] must have the same length, got "
                f"{k}, {len(state['y'])}, {len(state['rho'])}"
            )
        if k > state["history"]:
            raise ValueError(f"state holds {k} curvature pairs, more than history={state['history']}")
        size = None
        pairs = []
        for i in range(k):
            s_i = _vector(f"s[{i}]", state["s"][i], size)
            size = s_i.size
            y_i = _vector(f"y[{i}]", state["y"][i], size)
            rho = _as_real(state["rho"][i])
            if rho is None or not (math.isfinite(rho) and rho > 0):
                raise ValueError(f"state['rho'][{i}] must be a finite number > 0, got {state['rho'][i]!r}")
            pairs.append((s_i, y_i, rho))
        cached = None
        if (state["cached_loss"] is None) != (state["cached_gradient"] is None):
            raise ValueError("state['cached_loss'] and state['cached_gradient'] must both be None or both be set")
        if state["cached_loss"] is not None:
            f = _as_real(state["cached_loss"])
            if f is None or not math.isfinite(f):
                raise ValueError(f"state['cached_loss'] must be a finite number, got {state['cached_loss']!r}")
            cached = (f, _vector("cached_gradient", state["cached_gradient"], size))
        step = _as_real(state["last_step_size"])
        if step is None or not (math.isfinite(step) and step >= 0):
            raise ValueError(f"state['last_step_size'] must be a finite number >= 0, got {state['last_step_size']!r}")
        backtracks = _as_int(state["backtracks"])
        if backtracks is None or not 0 <= backtracks <= state["max_backtracks"]:
            raise ValueError(
                f"state['backtracks'] must be an integer in 0..max_backtracks, got {state['backtracks']!r}"
            )
        self._configure(**{key: state[key] for key in self.hyperparameters()})
        self.reset()
        self._pairs.extend(pairs)
        self._cached = cached
        self.last_step_size, self.backtracks = step, backtracks

    def __repr__(self) -> str:
        return (
            f"LBFGS(lr={self.lr}, history={self.history}, c1={self.c1}, shrink={self.shrink}, "
            f"max_backtracks={self.max_backtracks})"
        )
