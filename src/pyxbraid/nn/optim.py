"""Optimisers on distributed parameters.

Every rank updates only the parameters it stores; the only global quantities
are the dot products of L-BFGS and its line search, reduced over the
communicator by the ``dot`` the :class:`~pyxbraid.nn.Trainer` passes in.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from typing import Any, Callable

import numpy as np

__all__ = ["Adam", "LBFGS", "Optimizer", "SGD"]

Closure = Callable[[], "tuple[float, np.ndarray]"]
Dot = Callable[[np.ndarray, np.ndarray], float]


def _positive(name: str, value: Any, allow_zero: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def _fraction(name: str, value: Any) -> float:
    v = _positive(name, value, allow_zero=True)
    if not v < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return v


class Optimizer:
    """Base class: :meth:`step` updates ``params`` in place and returns the loss before the update."""

    def step(self, params: np.ndarray, closure: Closure, dot: Dot) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def forget(self) -> None:
        """Drop values cached for the current batch (called when the batch changes)."""

    def reset(self) -> None:
        """Forget all state (moments, curvature pairs)."""


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

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr = _positive("lr", lr)
        self.momentum = _fraction("momentum", momentum)
        self._velocity: np.ndarray | None = None

    def step(self, params: np.ndarray, closure: Closure, dot: Dot) -> float:
        loss, grad = closure()
        if self._velocity is None or self._velocity.shape != params.shape:
            self._velocity = np.zeros_like(params)
        self._velocity *= self.momentum
        self._velocity += grad
        params -= self.lr * self._velocity
        return loss

    def reset(self) -> None:
        self._velocity = None

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

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr = _positive("lr", lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        self.betas = (_fraction("betas[0]", betas[0]), _fraction("betas[1]", betas[1]))
        self.eps = _positive("eps", eps)
        self.reset()

    def reset(self) -> None:
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._t = 0

    def step(self, params: np.ndarray, closure: Closure, dot: Dot) -> float:
        loss, grad = closure()
        if self._m is None or self._m.shape != params.shape:
            self._m, self._v, self._t = np.zeros_like(params), np.zeros_like(params), 0
        b1, b2 = self.betas
        self._t += 1
        self._m *= b1
        self._m += (1 - b1) * grad
        self._v *= b2
        self._v += (1 - b2) * grad * grad
        mhat = self._m / (1 - b1 ** self._t)
        vhat = self._v / (1 - b2 ** self._t)
        params -= self.lr * mhat / (np.sqrt(vhat) + self.eps)
        return loss

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
        Number of stored pairs.
    c1 : float, default 1e-4
        Armijo constant in (0, 1).
    shrink : float, default 0.5
        Step reduction in (0, 1).
    max_backtracks : int, default 20

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

    def __init__(self, lr: float = 1.0, history: int = 10, c1: float = 1e-4, shrink: float = 0.5,
                 max_backtracks: int = 20) -> None:
        self.lr = _positive("lr", lr)
        if isinstance(history, bool) or not isinstance(history, (numbers.Integral, np.integer)) or history < 1:
            raise ValueError(f"history must be an integer >= 1, got {history!r}")
        self.history = int(history)
        self.c1 = _fraction("c1", c1)
        if self.c1 == 0.0:
            raise ValueError(f"c1 must be in (0, 1), got {c1!r}")
        self.shrink = _fraction("shrink", shrink)
        if self.shrink == 0.0:
            raise ValueError(f"shrink must be in (0, 1), got {shrink!r}")
        if isinstance(max_backtracks, bool) or not isinstance(max_backtracks, (numbers.Integral, np.integer)) \
                or max_backtracks < 1:
            raise ValueError(f"max_backtracks must be an integer >= 1, got {max_backtracks!r}")
        self.max_backtracks = int(max_backtracks)
        self.reset()

    def reset(self) -> None:
        self._pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=self.history)
        self._cached: tuple[float, np.ndarray] | None = None
        self.last_step_size = 0.0
        self.backtracks = 0

    def forget(self) -> None:
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
        for (s, y, rho), a in zip(self._pairs, reversed(alphas)):
            b = rho * dot(y, q)
            q += (a - b) * s
        return -q

    def step(self, params: np.ndarray, closure: Closure, dot: Dot) -> float:
        f0, g0 = self._cached if self._cached is not None else closure()
        d = self._direction(g0, dot)
        slope = dot(g0, d)
        if not slope < 0.0:        # not a descent direction: restart from steepest descent
            self._pairs.clear()
            d = -g0
            slope = -dot(g0, g0)
        start = params.copy()
        t = self.lr
        for self.backtracks in range(self.max_backtracks + 1):
            np.copyto(params, start)
            params += t * d
            f, g = closure()
            if math.isfinite(f) and f <= f0 + self.c1 * t * slope:
                break
            t *= self.shrink
        s = params - start
        y = g - g0
        sy = dot(s, y)
        if sy > 1e-12 * math.sqrt(dot(s, s) * dot(y, y)) and sy > 0.0:
            self._pairs.append((s, y, 1.0 / sy))
        self._cached = (f, g)
        self.last_step_size = t
        return f0

    def __repr__(self) -> str:
        return f"LBFGS(lr={self.lr}, history={self.history}, c1={self.c1}, shrink={self.shrink})"
