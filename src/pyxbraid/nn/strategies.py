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

import functools
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .hierarchy import PROLONGATIONS, RESTRICTIONS, Hierarchy, _check_choice

if TYPE_CHECKING:
    from ._files import NpzReader
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
    network alone. With ``fit(checkpoint=...)`` the checkpoint is written
    after every epoch of every level; it records the level being trained,
    its epoch and step, and every level's state, and ``resume=True``
    continues the cascade exactly there (a coarse level that its ``tol``
    had ended is not trained further).

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

    Checkpoints (``fit(checkpoint=...)``) are written between V-cycles:
    after every epoch and, on SIGTERM/SIGINT, after the cycle in progress.
    They hold every level's parameters and optimizer state (the smoothers'
    moments persist from cycle to cycle) and, with a full batch in an
    MGRIT mode, every level's MGRIT iterate (each level warm-restarts from
    its own). With ``layer_parallel['switch_to_exact']`` every level goes
    exact once the fine network's one-shot training stalls.

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


@dataclass
class Saving:
    """The checkpoint arguments of :meth:`Trainer.fit` for a multilevel run (checked and agreed by fit)."""

    checkpoint: Path | None = None
    resume: bool = False
    data: str = ""  # fingerprints of the training and validation data (the fit settings a resume must share)
    validation: str | None = None

    def settings(self, trainers: list[Trainer], n: int, batch_size: int, shuffle: bool) -> list[dict]:
        """Return each level's fit settings, as a single-level checkpoint records them (none without checkpoint)."""
        if self.checkpoint is None:
            return [{} for _ in trainers]
        return [t._fit_settings(n, batch_size, shuffle, self.data, self.validation) for t in trainers]


# a full-batch identity no engine has: a level whose MGRIT iterate the checkpoint need not keep
_NO_ITERATE = ("no iterate",)


def _fresh_progress(trainer: Trainer, epochs: int = 0):
    """Return the progress of a level that is not being trained: ``epochs`` epochs done, nothing else."""
    from .checkpoint import Progress

    progress = Progress.start(np.random.default_rng(trainer.seed))
    progress.epoch = epochs
    return progress


def _nested_schedule(strategy: Nested, epochs: int) -> list[int]:
    """Return the epochs of each level, finest first (level 0: ``fit(epochs=...)``)."""
    coarse = [epochs] * (strategy.levels - 1) if strategy.epochs is None else strategy.epochs[::-1]
    return [epochs, *coarse]


def _check_nested_phase(strategy: Nested, schedule: list[int], phase: Any, r: NpzReader) -> list[int]:
    """Check a nested checkpoint's phase; return the most epochs each level may have done (finest first)."""
    keys = {"cascade", "level", "offset", "coarse_epochs"}
    if not isinstance(phase, dict) or set(phase) != keys:
        raise r.error(f"phase must be a JSON object with the keys {', '.join(sorted(keys))}")
    levels = strategy.levels
    cascade, level, coarse = phase["cascade"], phase["level"], phase["coarse_epochs"]
    if not isinstance(cascade, bool):
        raise r.error(f"phase.cascade must be true or false, got {cascade!r}")
    top = levels - 1 if cascade else 0
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= top:
        raise r.error(f"phase.level must be an integer in [0, {top}], got {level!r}")
    offset = phase["offset"]
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not 0.0 <= offset < math.inf:
        raise r.error(f"phase.offset must be a finite number >= 0, got {offset!r}")
    if (
        not isinstance(coarse, list)
        or len(coarse) != levels - 1
        or not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in coarse)
    ):
        raise r.error(f"phase.coarse_epochs must be a list of {levels - 1} non-negative integers")
    mine = schedule[1:][::-1]
    if cascade and level > 0 and coarse != mine:
        raise ValueError(
            f"checkpoint {str(r.path)!r} was written on level {level} of a nested cascade whose coarse levels "
            f"train for {coarse} epochs (coarsest first), this fit() would train them for {mine}: resume with "
            "the epochs it was written with (Nested(epochs=None) trains each coarse level for fit()'s epochs)"
        )
    saved = [schedule[0], *coarse[::-1]]
    # done: every coarser level of the cascade and the current one (at most their epochs); to come: none
    return [saved[i] if (cascade and i >= level) or i == level else 0 for i in range(levels)]


def run_nested(
    trainer: Trainer,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    validation: tuple[np.ndarray, np.ndarray] | None,
    shuffle: bool,
    callback: Callable[[int, History], Any] | None,
    saving: Saving | None = None,
) -> History:
    """Nested iteration (see :class:`Nested`): coarsest level first, prolonged level by level.

    With ``saving.checkpoint``, every level's training loop writes the whole
    run's checkpoint (every level's part; ``phase``: whether the cascade runs,
    the level being trained, the coarse levels' wall time and epochs), after
    each epoch and on SIGTERM/SIGINT; ``saving.resume`` continues from it.
    """
    from . import checkpoint as ckpt
    from .trainer import History

    strategy = trainer.strategy
    assert isinstance(strategy, Nested)
    saving = Saving() if saving is None else saving
    trainers = level_trainers(trainer)
    hierarchy = trainer._hierarchy
    n = x.shape[0]
    schedule = _nested_schedule(strategy, epochs)
    settings = saving.settings(trainers, n, batch_size, shuffle)
    before = [t._gradient_count for t in trainers]
    # the cascade runs once: a later fit() continues training the fine network
    cascade = not trainer._nested_done
    current = strategy.levels - 1 if cascade else 0
    histories = [History() for _ in trainers]  # of each level, finest first
    offset = 0.0  # wall time of the coarser levels: the finer histories' times include them
    coarse_epochs = schedule[1:][::-1]  # the cascade's, coarsest first (resumed: the checkpoint's)
    resumed: Any = None
    if saving.resume:
        assert saving.checkpoint is not None  # fit() checked it
        check = functools.partial(_check_nested_phase, strategy, schedule)
        phase, counts, parts = ckpt.load_levels(
            trainers, saving.checkpoint, settings, n, batch_size, strategy.settings(), check
        )
        cascade, current, offset = phase["cascade"], phase["level"], float(phase["offset"])
        coarse_epochs = phase["coarse_epochs"]
        before = [t._gradient_count - c for t, c in zip(trainers, counts, strict=True)]
        for level in range(current + 1, strategy.levels):  # the levels done
            histories[level] = trainers[level].history = parts[level][0]
            trainers[level]._maybe_switch_to_exact(histories[level])
        resumed = parts[current]
    elif cascade:  # the coarsest network starts from the fine network's initial parameters, restricted
        for level in range(strategy.levels - 1):
            trainers[level + 1].net.local_parameters[...] = hierarchy.restrict(
                level, trainers[level].net.local_parameters
            )
    trainer._nested_done = True

    def write(level: int, history: History, progress: ckpt.Progress) -> None:
        states = [
            ckpt.LevelState(history, progress)
            if i == level
            else ckpt.LevelState(histories[i], _fresh_progress(t, len(histories[i].epoch)), _NO_ITERATE)
            for i, t in enumerate(trainers)
        ]
        phase = {"cascade": cascade, "level": level, "offset": offset, "coarse_epochs": coarse_epochs}
        counts = [t._gradient_count - b for t, b in zip(trainers, before, strict=True)]
        assert saving.checkpoint is not None  # write is only called with a checkpoint
        ckpt.save_levels(trainers, saving.checkpoint, settings, states, strategy.settings(), phase, counts)

    top = strategy.levels - 1 if cascade else 0
    for level in range(current, -1, -1):
        t = trainers[level]
        state = resumed if level == current else None
        n_epochs, cb = (schedule[level], _plateau(strategy.tol)) if level > 0 else (epochs, callback)
        if state is not None and level > 0 and cb is not None and state[1].step == 0 and state[0].loss:
            if cb(state[1].epoch, state[0]):  # the plateau had ended this level when the checkpoint was written
                n_epochs = state[1].epoch
        if n_epochs > 0 or state is not None:
            hooks = (
                None if saving.checkpoint is None else ckpt.LevelHooks(level, functools.partial(write, level), state)
            )
            start = time.perf_counter() - (0.0 if state is None else state[1].wall_seconds)
            xv, yv = (None, None) if validation is None else validation
            history = t._fit_single(
                x,
                y,
                n_epochs,
                batch_size,
                (xv, yv),
                cb,
                saving.checkpoint,
                False,
                (settings[level], saving.data, shuffle),
                hooks,
            )
            history.wall_seconds = [w + offset for w in history.wall_seconds]
            offset += time.perf_counter() - start
            histories[level] = history
        if level > 0:
            trainers[level - 1].net.local_parameters[...] = hierarchy.prolong(level - 1, t.net.local_parameters)
    trainer.level_histories = [histories[level] for level in range(top, -1, -1)]
    trainer.gradient_evaluations = _count(trainers, before)
    return histories[0]


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


def _check_mgopt_phase(levels: int, epochs: int, steps: int, phase: Any, r: NpzReader) -> list[int]:
    """Check an MG/Opt checkpoint's phase; return the most epochs each level may have done (finest first)."""
    if not isinstance(phase, dict) or set(phase) != {"cycles"}:
        raise r.error("phase must be a JSON object with the key cycles")
    cycles = phase["cycles"]
    if isinstance(cycles, bool) or not isinstance(cycles, int) or not 0 <= cycles <= epochs * steps:
        raise r.error(f"phase.cycles must be an integer in [0, {epochs * steps}], got {cycles!r}")
    # the fine network's history and progress; the coarse levels keep none (each cycle restricts to them anew)
    return [epochs] + [0] * (levels - 1)


def _switch_levels(trainers: list[Trainer], history: History) -> None:
    """MG/Opt with switch_to_exact: every level goes exact once the fine network's one-shot training stalled."""
    fine = trainers[0]
    fine._maybe_switch_to_exact(history)
    if fine.switched_to_exact_at is None:
        return
    for t in trainers[1:]:
        if t.switched_to_exact_at is None:
            t._switch_to_exact(fine.switched_to_exact_at)


def _last_solve(trainer: Trainer) -> tuple[float, float, int]:
    """Return (residual, adjoint residual, MGRIT iterations) of the trainer's last gradient; NaN, NaN, 0 if none."""
    res = trainer.last_solve
    if trainer.mode == "serial" or res is None:
        return (math.nan, math.nan, 0)
    norms, adjoint = res.residual_norms, res.adjoint_residual_norms
    return (
        float(norms[-1]) if len(norms) else math.nan,
        float(adjoint[-1]) if len(adjoint) else math.nan,
        int(res.iterations),
    )


def run_mgopt(
    trainer: Trainer,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int,
    validation: tuple[np.ndarray, np.ndarray] | None,
    shuffle: bool,
    callback: Callable[[int, History], Any] | None,
    saving: Saving | None = None,
) -> History:
    """MG/Opt (see :class:`MGOpt`): one V-cycle per optimisation step of each epoch.

    With ``saving.checkpoint``, the whole run's checkpoint is written after
    each epoch and, on SIGTERM/SIGINT, after the V-cycle in progress (the
    granularity: a cycle is never cut); ``saving.resume`` continues from it.
    """
    from . import checkpoint as ckpt
    from .trainer import History, TrainingInterrupted, _StopSignals

    strategy = trainer.strategy
    assert isinstance(strategy, MGOpt)
    saving = Saving() if saving is None else saving
    trainers = level_trainers(trainer)
    hierarchy = trainer._hierarchy
    before = [t._gradient_count for t in trainers]
    n = x.shape[0]
    full = batch_size == n
    steps = -(-n // batch_size)
    settings = saving.settings(trainers, n, batch_size, shuffle)
    rng = np.random.default_rng(trainer.seed)
    history = History()
    progress = ckpt.Progress.start(rng)
    trainer._fit_calls += 1
    full_token = ("mgopt", trainer._fit_calls, "full")  # (with the level) the full batch's identity in each engine
    if saving.resume:
        assert saving.checkpoint is not None  # fit() checked it
        check = functools.partial(_check_mgopt_phase, strategy.levels, epochs, steps)
        _, counts, parts = ckpt.load_levels(
            trainers, saving.checkpoint, settings, n, batch_size, strategy.settings(), check
        )
        history, progress = parts[0][0], parts[0][1]
        before = [t._gradient_count - c for t, c in zip(trainers, counts, strict=True)]
        _switch_levels(trainers, history)  # before the iterates: switching drops the engines
        from ..errors import _Agreed

        for level, (t, part) in enumerate(zip(trainers, parts, strict=True)):
            if part[2] is not None:
                with _Agreed(t.comm, f"checkpoint {str(saving.checkpoint)!r} MGRIT iterate"):
                    t._restore_iterate(x, y, (full_token, level), part[2])
    trainer.history = history
    bar = None
    if trainer.progress and trainer.comm.Get_rank() == 0:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=epochs * steps,
            initial=progress.epoch * steps + progress.step,
            desc=f"train ({trainer.mode}) MG/Opt, {strategy.levels} levels",
            unit="cycle",
            dynamic_ncols=True,
            leave=True,
        )
    start = time.perf_counter() - progress.wall_seconds
    last = progress.last  # (residual, adjoint residual, iterations) of the fine network's last gradient
    stop = _StopSignals() if saving.checkpoint is not None else None

    def save(epoch: int, step: int, epoch_rng: Any, loss_sum: float, correct_sum: float) -> None:
        now = ckpt.Progress(epoch, step, epoch_rng, loss_sum, correct_sum, time.perf_counter() - start, last)
        states = [ckpt.LevelState(history, now, (full_token, 0) if full else _NO_ITERATE)] + [
            ckpt.LevelState(History(), _fresh_progress(t), (full_token, level) if full else _NO_ITERATE)
            for level, t in enumerate(trainers[1:], 1)
        ]
        counts = [t._gradient_count - b for t, b in zip(trainers, before, strict=True)]
        assert saving.checkpoint is not None  # save is only called with a checkpoint
        phase = {"cycles": len(history.step_loss)}
        ckpt.save_levels(trainers, saving.checkpoint, settings, states, strategy.settings(), phase, counts)

    def requested() -> int:
        """Return the signal received on any rank (collective), 0 if none or without checkpoint."""
        return 0 if stop is None else trainer._stop_requested(stop)

    try:
        if stop is not None:
            stop.__enter__()
        for epoch in range(progress.epoch, epochs):
            first_step, loss_sum, correct_sum, epoch_rng, order = progress.begin_epoch(
                epoch, rng, n, shuffle and not full
            )
            for b in range(first_step, steps):
                idx = order[b * batch_size : (b + 1) * batch_size]
                xb, yb = (x, y) if full else (np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx]))
                token = full_token if full else ("mgopt", trainer._fit_calls, (epoch, b))
                loss, acc = _cycle(trainers, hierarchy, strategy, 0, xb, yb, token, None)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the training loss became {loss} at epoch {epoch}, step {b}")
                history.step_loss.append(loss)
                loss_sum += loss * xb.shape[0]
                correct_sum += acc * xb.shape[0]
                last = _last_solve(trainer)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({"loss": f"{loss:.4f}", "acc": f"{acc:.3f}"}, refresh=False)
                signum = requested()
                if signum:
                    save(epoch, b + 1, epoch_rng, loss_sum, correct_sum)
                    raise TrainingInterrupted(signum, str(saving.checkpoint), epoch, b + 1)
            record = (epoch, n, loss_sum, correct_sum, last, start)
            stop_now = _end_epoch(trainers, history, record, validation, bar, callback)
            if saving.checkpoint is not None:  # the state the next epoch starts from
                save(epoch + 1, 0, rng.bit_generator.state, 0.0, 0.0)
                signum = requested()
                if signum:
                    raise TrainingInterrupted(signum, str(saving.checkpoint), epoch + 1, 0)
            if stop_now:
                break
    finally:
        if stop is not None:
            stop.__exit__()
        if bar is not None:
            bar.close()
    trainer.level_histories = [history]
    trainer.gradient_evaluations = _count(trainers, before)
    return history


def _end_epoch(
    trainers: list[Trainer],
    history: History,
    record: tuple[int, int, float, float, tuple, float],
    validation: tuple[np.ndarray, np.ndarray] | None,
    bar: Any,
    callback: Callable[[int, History], Any] | None,
) -> bool:
    """Record an epoch as :meth:`Trainer.fit` does; return True when the callback asks to stop (every rank).

    ``record``: the epoch, the number of samples, the epoch's sums of losses
    and correct predictions, the fine network's last MGRIT residuals and
    iterations, and the fit's start time.
    """
    from mpi4py import MPI

    from ..errors import _Agreed

    trainer = trainers[0]
    epoch, n, loss_sum, correct_sum, last, start = record
    history.epoch.append(epoch + 1)
    history.loss.append(loss_sum / n)
    history.train_accuracy.append(correct_sum / n)
    vl, va = trainer.evaluate(*validation) if validation is not None else (math.nan, math.nan)
    history.val_loss.append(vl)
    history.val_accuracy.append(va)
    history.residual.append(last[0])
    history.adjoint_residual.append(last[1])
    history.mgrit_iterations.append(last[2])
    history.wall_seconds.append(time.perf_counter() - start)
    _switch_levels(trainers, history)
    if bar is not None and not math.isnan(va):
        bar.set_postfix({"loss": f"{history.loss[-1]:.4f}", "val_acc": f"{va:.3f}"}, refresh=True)
    stop = False
    if callback is not None:
        with _Agreed(trainer.comm, "fit() callback"):
            stop = callback(epoch + 1, history) is True
        if trainer.comm.Get_size() > 1:
            stop = bool(trainer.comm.allreduce(stop, op=MPI.LOR))
    return stop
