"""Training strategies over a hierarchy of networks in depth: single-level, nested iteration, MG/Opt.

``Trainer(..., strategy=...)`` selects one; :meth:`Trainer.fit` keeps its
API. A strategy works with every training mode (layer-serial, exact
layer-parallel, one-shot) and every rank count: each level is trained by
its own :class:`Trainer` on the same communicator, with the same mode,
MGRIT settings, seed and a fresh optimizer of the same type and
hyperparameters. The levels are those of :class:`~pyxbraid.nn.hierarchy.Hierarchy`
(depth ``N``, ``N/2``, ... with steps ``h``, ``2h``, ...).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .hierarchy import PROLONGATIONS, RESTRICTIONS, Hierarchy, _check_choice

if TYPE_CHECKING:
    from .trainer import History, Trainer

__all__ = ["MGOpt", "Nested", "Single", "Strategy"]


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


class Strategy:
    """Base class of the training strategies (see :class:`Single`, :class:`Nested`, :class:`MGOpt`)."""

    name = "strategy"
    levels = 1
    restriction = "average"
    prolongation = "linear"

    def settings(self) -> dict[str, Any]:
        """Return the strategy's name and settings (JSON-serialisable; agreed between ranks)."""
        return {"strategy": self.name, "levels": self.levels}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "strategy")
        return f"{type(self).__name__}({args})"


class Single(Strategy):
    """Train the network alone (no hierarchy): :meth:`Trainer.fit` as without a strategy."""

    name = "single"


class Nested(Strategy):
    """Nested (cascadic) iteration: train the coarsest network, prolong, continue one level finer.

    The coarsest network starts from the restriction of the fine network's
    initial parameters; after training, level ``l`` is prolonged into level
    ``l - 1`` as its starting point, down to the fine network, which is
    trained for the ``epochs`` given to :meth:`Trainer.fit`. The cascade runs
    in a trainer's first ``fit()``; later calls continue training the fine
    network alone.

    Parameters
    ----------
    levels : int, default 3
        Networks of depth ``N, N/2, ..., N/2**(levels-1)``.
    epochs : sequence of int, optional
        Epochs of the coarse levels, coarsest first (``levels - 1`` entries).
        Default: as many as ``fit(epochs=...)`` on each coarse level (an epoch
        of level ``l`` costs ``2**-l`` of a fine one).
    tol : float, optional
        Leave a coarse level early, at the first epoch whose training loss
        fell by less than ``tol`` (relative) from the previous epoch's.
    restriction, prolongation : str
        See :mod:`pyxbraid.nn.hierarchy` (``"average"`` / ``"inject"``,
        ``"linear"`` / ``"constant"``).

    Examples
    --------
    >>> import pyxbraid as xb
    >>> from pyxbraid import nn
    >>> d = xb.datasets.make_peaks(200, 50, seed=1)
    >>> trainer = nn.Trainer(nn.ResNet(2, 8, 16, 5, T=2.0, seed=1), optimizer=nn.Adam(lr=0.02),
    ...                      strategy=nn.Nested(levels=3, epochs=[4, 4]), progress=False)
    >>> history = trainer.fit(d.x_train, d.y_train, epochs=4, batch_size=50)
    >>> [h.epoch[-1] for h in trainer.level_histories]     # coarsest first
    [4, 4, 4]
    >>> trainer.gradient_evaluations["fine"], trainer.gradient_evaluations["coarse_weighted"]
    (16, 12.0)
    """

    name = "nested"

    def __init__(
        self,
        levels: int = 3,
        *,
        epochs: Sequence[int] | None = None,
        tol: float | None = None,
        restriction: str = "average",
        prolongation: str = "linear",
    ) -> None:
        self.levels = _int("levels", levels, 1)
        if epochs is not None:
            if isinstance(epochs, (str, bytes)) or not isinstance(epochs, Sequence):
                raise ValueError(f"epochs must be a sequence of {self.levels - 1} integers or None, got {epochs!r}")
            if len(epochs) != self.levels - 1:
                raise ValueError(
                    f"epochs must have levels - 1 = {self.levels - 1} entries (the coarse levels, coarsest "
                    f"first), got {list(epochs)!r}"
                )
            epochs = [_int("epochs[]", e, 0) for e in epochs]
        self.epochs = None if epochs is None else list(epochs)
        if tol is not None:
            tol = _fraction("tol", tol)
        self.tol = tol
        self.restriction = _check_choice("restriction", restriction, RESTRICTIONS)
        self.prolongation = _check_choice("prolongation", prolongation, PROLONGATIONS)

    def settings(self) -> dict[str, Any]:
        """Return the strategy's name and settings."""
        return {
            "strategy": self.name,
            "levels": self.levels,
            "epochs": self.epochs,
            "tol": self.tol,
            "restriction": self.restriction,
            "prolongation": self.prolongation,
        }


class MGOpt(Strategy):
    """Nash's MG/Opt: V-cycles over the hierarchy of networks, one per optimisation step of ``fit``.

    On level ``l`` (objective ``F_l(theta) = f_l(theta) - <v_l, theta>``,
    ``v_0 = 0``) a V-cycle takes ``pre`` optimizer steps, restricts the
    parameters ``theta_c = R theta``, sets ``v_{l+1} = grad f_{l+1}(theta_c)
    - P^T grad F_l(theta)`` (so that the coarse objective is first-order
    coherent: its gradient at ``theta_c`` is ``P^T grad F_l(theta)``), runs a
    V-cycle on level ``l + 1`` (on the coarsest: ``coarse_steps`` optimizer
    steps), prolongs the correction ``e = P (theta_c' - theta_c)``, takes the
    largest ``alpha`` in ``1, 1/2, ...`` (at most ``max_backtracks``
    halvings) with ``F_l(theta + alpha e) <= F_l(theta) + c1 alpha <grad, e>``
    (Armijo; no correction if ``e`` is not a descent direction or no step is
    accepted), then ``post`` optimizer steps.

    Parameters
    ----------
    levels : int, default 2
    pre, post : int, default 1, 1
        Smoothing steps of the trainer's optimizer on each level but the coarsest.
    coarse_steps : int, default 4
        Optimizer steps on the coarsest level per cycle.
    max_backtracks : int, default 4
    c1 : float, default 1e-4
    restriction, prolongation : str
        See :mod:`pyxbraid.nn.hierarchy`.

    Notes
    -----
    Per cycle and level (but the coarsest) the gradient is evaluated at the
    start of each smoothing step, at the point after pre-smoothing, and once
    per line-search trial; the accepted trial's gradient is reused by the
    first post-smoothing step, and the coarse gradient at the restricted
    point (which ``v`` needs) by the coarse level's first step.

    Examples
    --------
    >>> import pyxbraid as xb
    >>> from pyxbraid import nn
    >>> d = xb.datasets.make_peaks(200, 50, seed=1)
    >>> trainer = nn.Trainer(nn.ResNet(2, 8, 16, 5, T=2.0, seed=1), optimizer=nn.Adam(lr=0.02),
    ...                      strategy=nn.MGOpt(levels=2), progress=False)
    >>> history = trainer.fit(d.x_train, d.y_train, epochs=5)
    >>> history.loss[-1] < history.loss[0]
    True
    """

    name = "mgopt"

    def __init__(
        self,
        levels: int = 2,
        *,
        pre: int = 1,
        post: int = 1,
        coarse_steps: int = 4,
        max_backtracks: int = 4,
        c1: float = 1e-4,
        restriction: str = "average",
        prolongation: str = "linear",
    ) -> None:
        self.levels = _int("levels", levels, 1)
        self.pre = _int("pre", pre, 0)
        self.post = _int("post", post, 0)
        self.coarse_steps = _int("coarse_steps", coarse_steps, 1)
        self.max_backtracks = _int("max_backtracks", max_backtracks, 0)
        self.c1 = _fraction("c1", c1)
        self.restriction = _check_choice("restriction", restriction, RESTRICTIONS)
        self.prolongation = _check_choice("prolongation", prolongation, PROLONGATIONS)

    def settings(self) -> dict[str, Any]:
        """Return the strategy's name and settings."""
        return {
            "strategy": self.name,
            "levels": self.levels,
            "pre": self.pre,
            "post": self.post,
            "coarse_steps": self.coarse_steps,
            "max_backtracks": self.max_backtracks,
            "c1": self.c1,
            "restriction": self.restriction,
            "prolongation": self.prolongation,
        }


STRATEGIES = {"single": Single, "nested": Nested, "mgopt": MGOpt}


def strategy_from(strategy: Any, levels: Any) -> Strategy:
    """Return the Strategy for ``Trainer(strategy=..., levels=...)`` (ValueError/TypeError naming the argument)."""
    if isinstance(strategy, Strategy):
        if levels is not None:
            raise ValueError(
                f"levels={levels!r} was given with strategy={strategy!r}: give the levels to the strategy object only"
            )
        return strategy
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(
            f"strategy must be one of {', '.join(map(repr, STRATEGIES))} or a pyxbraid.nn Strategy "
            f"(Nested(...), MGOpt(...)), got {strategy!r}"
        )
    if strategy == "single":
        if levels not in (None, 1):
            raise ValueError(f"levels must be 1 or None with strategy='single', got {levels!r}")
        return Single()
    return STRATEGIES[strategy]() if levels is None else STRATEGIES[strategy](levels=levels)


# -- running them ------------------------------------------------------------------------------
def level_trainers(trainer: Trainer) -> list[Trainer]:
    """Return the trainers of the hierarchy's levels (built on first use; ``[trainer, coarser, ...]``)."""
    from .trainer import Trainer

    cached = trainer._level_trainers
    if cached is not None:
        return cached
    s = trainer.strategy
    hierarchy = Hierarchy(trainer.net, s.levels, s.restriction, s.prolongation)
    layer_parallel = None if trainer.mode == "serial" else {**trainer._options, "one_shot": trainer.mode == "one_shot"}
    if trainer._switch_patience is not None:
        layer_parallel = {**(layer_parallel or {}), "switch_to_exact": trainer._switch_patience}
    out = [trainer]
    for level in range(1, s.levels):
        opt = trainer.optimizer
        t = Trainer(
            hierarchy.nets[level],
            comm=trainer.comm,
            optimizer=type(opt)(**opt.hyperparameters()),
            layer_parallel=layer_parallel,
            seed=trainer.seed,
            progress=trainer.progress,
        )
        t._progress_label = f" level {level}/{s.levels - 1}, depth {hierarchy.depth(level)}"
        out.append(t)
    trainer._progress_label = f" level 0/{s.levels - 1}, depth {hierarchy.depth(0)}" if s.levels > 1 else ""
    trainer._hierarchy = hierarchy
    trainer._level_trainers = out
    return out


def _count(trainers: list[Trainer], before: list[int]) -> dict[str, Any]:
    """Return the gradient evaluations since ``before``: fine, per level, and coarse weighted by relative cost."""
    counts = [t._gradient_count - b for t, b in zip(trainers, before, strict=True)]
    depth = trainers[0].net.config.depth
    weighted = sum(c * t.net.config.depth / depth for c, t in zip(counts[1:], trainers[1:], strict=True))
    return {"fine": counts[0], "per_level": counts, "coarse_weighted": float(weighted)}


def run_nested(
    trainer: Trainer,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    validation: tuple[np.ndarray, np.ndarray] | None,
    shuffle: bool,
    callback: Callable[[int, History], Any] | None,
) -> History:
    """Nested iteration (see :class:`Nested`): coarsest level first, prolonged level by level."""
    strategy = trainer.strategy
    assert isinstance(strategy, Nested)
    trainers = level_trainers(trainer)
    hierarchy = trainer._hierarchy
    before = [t._gradient_count for t in trainers]
    # the cascade runs once: a later fit() continues training the fine network
    first = not trainer._nested_done
    trainer._nested_done = True
    # the coarsest network starts from the fine network's initial parameters, restricted
    for level in range(strategy.levels - 1 if first else 0):
        trainers[level + 1].net.local_parameters[...] = hierarchy.restrict(level, trainers[level].net.local_parameters)
    histories = []
    offset = 0.0  # wall time of the coarser levels: the fine history's times include them
    for level in range(strategy.levels - 1 if first else 0, -1, -1):
        t = trainers[level]
        if level > 0:
            n_epochs = epochs if strategy.epochs is None else strategy.epochs[strategy.levels - 1 - level]
            cb = _plateau(strategy.tol)
        else:
            n_epochs, cb = epochs, callback
        if n_epochs > 0:
            start = time.perf_counter()
            t._as_level = True
            try:
                history = t.fit(
                    x, y, epochs=n_epochs, batch_size=batch_size, validation=validation, shuffle=shuffle, callback=cb
                )
            finally:
                t._as_level = False
            history.wall_seconds = [w + offset for w in history.wall_seconds]
            offset += time.perf_counter() - start
            histories.append(history)
        else:
            from .trainer import History

            histories.append(History())
        if level > 0:
            trainers[level - 1].net.local_parameters[...] = hierarchy.prolong(level - 1, t.net.local_parameters)
    trainer.level_histories = histories
    trainer.gradient_evaluations = _count(trainers, before)
    return histories[-1]


def _plateau(tol: float | None) -> Callable[[int, History], bool] | None:
    if tol is None:
        return None

    def stop(epoch: int, history: History) -> bool:
        loss = history.loss
        return len(loss) >= 2 and loss[-2] - loss[-1] < tol * abs(loss[-2])

    return stop


class _Objective:
    """``F(theta) = f(theta) - <v, theta>`` of one level on one batch; remembers the last evaluation."""

    def __init__(self, trainer: Trainer, x: np.ndarray, y: np.ndarray, token: Any, v: np.ndarray | None) -> None:
        self.t, self.x, self.y, self.token, self.v = trainer, x, y, token, v
        self.cached: tuple[np.ndarray, float, np.ndarray, float] | None = None

    def seed(self, loss: float, grad: np.ndarray, accuracy: float) -> None:
        """Remember ``f`` and its gradient at the current parameters, evaluated already (without the linear term)."""
        params = self.t.net.local_parameters
        if self.v is not None:
            loss -= self.t._dot(self.v, params)
            grad = grad - self.v
        self.cached = (params.copy(), loss, grad.copy(), accuracy)

    def __call__(self) -> tuple[float, np.ndarray]:
        params = self.t.net.local_parameters
        same = self.cached is not None and bool(np.array_equal(self.cached[0], params))
        comm = self.t.comm
        if comm.Get_size() > 1:  # every rank decides alike (a rank's part may be empty, or unchanged)
            from mpi4py import MPI

            same = bool(comm.allreduce(same, op=MPI.LAND))
        if same and self.cached is not None:
            return self.cached[1], self.cached[2].copy()
        loss, grad = self.t._evaluate_batch(self.x, self.y, self.token)
        if self.v is not None:
            loss -= self.t._dot(self.v, params)
            grad -= self.v
        self.cached = (params.copy(), loss, grad.copy(), self.t.last_accuracy)
        return loss, grad


def _step(t: Trainer, objective: _Objective, n: int) -> None:
    params = t.net.local_parameters
    for _ in range(n):
        loss = t.optimizer.step(params, objective, t._dot)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the training loss became {loss} in an MG/Opt smoothing step; lower the lr")


def _cycle(
    trainers: list[Trainer],
    hierarchy: Hierarchy,
    s: MGOpt,
    level: int,
    x: Any,
    y: Any,
    token: Any,
    v: Any,
    known: tuple[float, np.ndarray, float] | None = None,
) -> tuple[float, float]:
    """One V-cycle from ``level``; return the objective and accuracy at its start (level 0's are the fit's).

    ``known``: ``f``, its gradient and the accuracy at the current parameters, if evaluated already.
    """
    t = trainers[level]
    objective = _Objective(t, x, y, (token, level), v)
    params = t.net.local_parameters
    if known is not None:
        objective.seed(*known)
    first = objective()
    start = (first[0], t.last_accuracy)
    if level == s.levels - 1:
        t.optimizer.forget()
        _step(t, objective, s.coarse_steps)
        return start
    _step(t, objective, s.pre)
    f0, g = objective()
    tc = trainers[level + 1]
    coarse = tc.net.local_parameters
    coarse[...] = hierarchy.restrict(level, params)
    c0 = coarse.copy()
    fc, gc = tc._evaluate_batch(x, y, (token, level + 1))
    vc = gc - hierarchy.restrict_gradient(level, g)
    _cycle(trainers, hierarchy, s, level + 1, x, y, token, vc, (fc, gc, tc.last_accuracy))
    e = hierarchy.prolong(level, coarse - c0)
    slope = t._dot(g, e)
    if slope < 0.0:
        base, alpha = params.copy(), 1.0
        for _ in range(s.max_backtracks + 1):
            params[...] = base + alpha * e
            fa, _ = objective()
            if fa <= f0 + s.c1 * alpha * slope:
                break
            alpha *= 0.5
        else:
            params[...] = base
    _step(t, objective, s.post)
    return start


def run_mgopt(
    trainer: Trainer,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    validation: tuple[np.ndarray, np.ndarray] | None,
    shuffle: bool,
    callback: Callable[[int, History], Any] | None,
) -> History:
    """MG/Opt (see :class:`MGOpt`): one V-cycle per optimisation step of each epoch."""
    from .trainer import History

    strategy = trainer.strategy
    assert isinstance(strategy, MGOpt)
    trainers = level_trainers(trainer)
    hierarchy = trainer._hierarchy
    before = [t._gradient_count for t in trainers]
    n = x.shape[0]
    full = batch_size == n
    steps = -(-n // batch_size)
    rng = np.random.default_rng(trainer.seed)
    history = History()
    trainer.history = history
    trainer._fit_calls += 1
    bar = None
    if trainer.progress and trainer.comm.Get_rank() == 0:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=epochs * steps,
            desc=f"train ({trainer.mode}) MG/Opt, {strategy.levels} levels",
            unit="cycle",
            dynamic_ncols=True,
            leave=True,
        )
    start = time.perf_counter()
    try:
        for epoch in range(epochs):
            order = np.arange(n) if (full or not shuffle) else rng.permutation(n)
            loss_sum = correct_sum = 0.0
            for b in range(steps):
                idx = order[b * batch_size : (b + 1) * batch_size]
                xb, yb = (x, y) if full else (np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx]))
                token = ("mgopt", trainer._fit_calls, "full" if full else (epoch, b))
                loss, acc = _cycle(trainers, hierarchy, strategy, 0, xb, yb, token, None)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the training loss became {loss} at epoch {epoch}, step {b}")
                history.step_loss.append(loss)
                loss_sum += loss * xb.shape[0]
                correct_sum += acc * xb.shape[0]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({"loss": f"{loss:.4f}", "acc": f"{acc:.3f}"}, refresh=False)
            if _end_epoch(trainer, history, epoch, n, loss_sum, correct_sum, validation, start, bar, callback):
                break
    finally:
        if bar is not None:
            bar.close()
    trainer.level_histories = [history]
    trainer.gradient_evaluations = _count(trainers, before)
    return history


def _end_epoch(
    trainer: Trainer,
    history: History,
    epoch: int,
    n: int,
    loss_sum: float,
    correct_sum: float,
    validation: tuple[np.ndarray, np.ndarray] | None,
    start: float,
    bar: Any,
    callback: Callable[[int, History], Any] | None,
) -> bool:
    """Record an epoch as :meth:`Trainer.fit` does; return True when the callback asks to stop (every rank)."""
    from mpi4py import MPI

    from ..errors import _Agreed

    history.epoch.append(epoch + 1)
    history.loss.append(loss_sum / n)
    history.train_accuracy.append(correct_sum / n)
    vl, va = trainer.evaluate(*validation) if validation is not None else (math.nan, math.nan)
    history.val_loss.append(vl)
    history.val_accuracy.append(va)
    res = trainer.last_solve
    last = (math.nan, math.nan, 0)
    if trainer.mode != "serial" and res is not None:
        norms, adjoint = res.residual_norms, res.adjoint_residual_norms
        last = (
            float(norms[-1]) if len(norms) else math.nan,
            float(adjoint[-1]) if len(adjoint) else math.nan,
            int(res.iterations),
        )
    history.residual.append(last[0])
    history.adjoint_residual.append(last[1])
    history.mgrit_iterations.append(last[2])
    history.wall_seconds.append(time.perf_counter() - start)
    if bar is not None and not math.isnan(va):
        bar.set_postfix({"loss": f"{history.loss[-1]:.4f}", "val_acc": f"{va:.3f}"}, refresh=True)
    stop = False
    if callback is not None:
        with _Agreed(trainer.comm, "fit() callback"):
            stop = callback(epoch + 1, history) is True
        if trainer.comm.Get_size() > 1:
            stop = bool(trainer.comm.allreduce(stop, op=MPI.LOR))
    return stop
