"""Training: the three modes (layer-serial, exact layer-parallel, one-shot), mini-batches, history."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import signal
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from .._options import check_option
from .._vocabulary import OPTIONS
from ..errors import _Agreed
from ..solver import Solver, SolveResult
from ._apps import LayerBatch, NativeBatch
from ._files import check_writable
from .hierarchy import check_levels
from .network import INDEX_MAX, ResNet
from .optim import Adam, Optimizer
from .strategies import Saving, Strategy, run_mgopt, run_nested, strategy_from

__all__ = ["ConvergenceWarning", "History", "Trainer", "TrainingInterrupted"]

# layer_parallel keys (the Solver's option names) -> (default for exact mode, default for one-shot mode)
_LAYER_PARALLEL_KEYS = {
    "max_levels": (3, 3),
    "min_coarse": (2, 2),
    "cfactor": (4, 4),
    "nrelax": (1, 1),
    "cwt": (1.0, 1.0),
    "fmg": (False, False),
    "storage": (-1, -1),
    "tnorm": (2, 2),
    "max_iter": (100, 2),
    "abs_tol": (1e-10, 0.0),
    "abs_tol_adjoint": (1e-10, 0.0),
    # Virtual time (the Solver's defaults): trainer.last_solve.virtual_wall_time per gradient evaluation.
    **{
        o.name: (o.default, o.default)
        for o in OPTIONS
        if o.name in ("virtual_time", "virtual_latency", "virtual_bandwidth")
    },
}
# Relative tolerances (the Solver's): given instead of abs_tol / abs_tol_adjoint, as in the Solver.
_RELATIVE_KEYS = {"rel_tol": "abs_tol", "rel_tol_adjoint": "abs_tol_adjoint"}
# What the exact mode iterates to (a one-shot trainer switches to it when training stalls).
_EXACT = {"abs_tol": _LAYER_PARALLEL_KEYS["abs_tol"][0], "abs_tol_adjoint": _LAYER_PARALLEL_KEYS["abs_tol_adjoint"][0]}
# Old spellings, accepted with a DeprecationWarning: one name per concept, XBraid's.
_DEPRECATED_KEYS = {"tol": "abs_tol", "adjoint_tol": "abs_tol_adjoint"}


class ConvergenceWarning(RuntimeWarning):
    """Exact layer-parallel mode: MGRIT or its adjoint did not reach the tolerance in max_iter iterations."""


class TrainingInterrupted(KeyboardInterrupt):
    """:meth:`Trainer.fit` stopped on SIGTERM or SIGINT after writing its checkpoint (raised on every rank).

    A ``KeyboardInterrupt`` (``except Exception`` does not swallow it).

    Attributes
    ----------
    signum : int
        The signal (``signal.SIGTERM`` or ``signal.SIGINT``).
    checkpoint : str
        The checkpoint written: continue with ``fit(..., checkpoint=..., resume=True)``.
    epoch, step : int
        Completed epochs, and completed steps of the next epoch, saved in it
        (with a nested strategy: of the level being trained).
    level : int or None
        With a nested strategy: the level being trained (0: the network
        itself); None otherwise (MG/Opt trains every level in each cycle).
    """

    def __init__(self, signum: int, checkpoint: str, epoch: int, step: int, level: int | None = None) -> None:
        self.signum, self.checkpoint, self.epoch, self.step = int(signum), str(checkpoint), int(epoch), int(step)
        self.level = None if level is None else int(level)
        where = "" if level is None else f" (level {level})"
        super().__init__(
            f"training stopped by {signal.Signals(self.signum).name} after {epoch} epoch(s) and {step} "
            f"step(s) of the next{where}; checkpoint written to {self.checkpoint!r}: continue with "
            f"fit(..., checkpoint={self.checkpoint!r}, resume=True)"
        )

    def __reduce__(self):
        return (type(self), (self.signum, self.checkpoint, self.epoch, self.step, self.level))


@dataclass
class History:
    """What :meth:`Trainer.fit` recorded, one entry per epoch (``step_*``: per optimisation step).

    ``train_accuracy`` counts the correct predictions of each training batch
    at the time it was used (as Keras reports it); ``val_*`` are measured at
    the end of each epoch; ``residual`` / ``adjoint_residual`` are the last
    MGRIT residual norms of the epoch and ``mgrit_iterations`` its
    iterations: NaN and 0 where no MGRIT iteration ran -- in layer-serial
    mode, and for a network too shallow for the hierarchy (``depth`` below
    ``cfactor * min_coarse``: the engine then marches through the layers
    sequentially, which gives the exact gradient).
    """

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)
    residual: list[float] = field(default_factory=list)
    adjoint_residual: list[float] = field(default_factory=list)
    mgrit_iterations: list[int] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        """Plain lists (JSON-serialisable)."""
        return asdict(self)


def _agree(comm: Any, what: str, value: Any) -> None:
    """Raise on every rank unless ``value`` is the same on all ranks (cheap: one allgather).

    ``value`` may be a dict of named items (nested dicts allowed): the error
    then names the items that differ and shows only those.
    """
    if comm.Get_size() == 1:
        return
    values = comm.allgather(value)
    if all(v == values[0] for v in values):
        return
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if isinstance(value, dict):
        flat = [_flatten(v) for v in values]
        keys = [k for k in flat[0] if any(f.get(k) != flat[0][k] for f in flat)]
        shown = "; ".join(f"{k}: " + ", ".join(f"rank {r}: {f.get(k)!r}" for r, f in enumerate(flat)) for k in keys)
    else:
        shown = "; ".join(f"rank {r}: {v}" for r, v in enumerate(values))
    raise ValueError(
        f"{what} differs between ranks (rank(s) {differ} differ from rank 0): {shown}; every rank "
        "must pass the same data and settings"
    )


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _digest(*arrays: np.ndarray | None) -> str:
    """Return a fingerprint of arrays (dtype, shape and bytes): agreed between ranks instead of the data itself."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(np.ascontiguousarray(a).data.cast("B"))
    return h.hexdigest()


def _describe(optimizer: Optimizer) -> str:
    """Type and hyperparameters of an optimizer (for agreement between ranks)."""
    try:
        return json.dumps([type(optimizer).__name__, optimizer.hyperparameters()], sort_keys=True)
    except (NotImplementedError, TypeError, ValueError):
        return f"{type(optimizer).__name__}: {optimizer!r}"


def _as_array(name: str, value: Any) -> np.ndarray:
    """``numpy.asarray``, with ragged nesting and the like reported under the argument's name."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(
            f"{name} must be an array, got {type(value).__name__} that numpy cannot convert ({exc})"
        ) from None


def _last(norms: np.ndarray) -> float:
    """Return the last residual norm of a solve; NaN when no MGRIT iteration ran (sequential marching)."""
    return float(norms[-1]) if len(norms) else math.nan


def _stalled_at(losses: list[float], patience: int) -> int | None:
    """Return the first epoch after which training stalled, or None.

    Stalled after epoch ``e``: the mean training losses of epochs
    ``e - patience + 1 .. e`` are all no better than the best loss before
    them (a NaN loss counts as no better).

    >>> _stalled_at([1.0, 0.5, 0.6, 0.7, 0.4], 2), _stalled_at([1.0, 0.5, 0.4], 2)
    (4, None)
    """
    for end in range(patience + 1, len(losses) + 1):
        best_before = min(losses[: end - patience])
        if not any(loss < best_before for loss in losses[end - patience : end]):
            return end
    return None


def _tolerances(options: dict[str, Any]) -> str:
    """Name the primal and adjoint stopping tolerances of MGRIT settings ("abs_tol=1e-10 / ...")."""
    names = [k for k in ("abs_tol", "rel_tol", "abs_tol_adjoint", "rel_tol_adjoint") if k in options]
    return " / ".join(f"{k}={options[k]:g}" for k in names)


def _is_int(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (numbers.Integral, np.integer))


def _lp(key: str) -> str:
    return f"layer_parallel[{key!r}]"


class _StopSignals:
    """SIGTERM/SIGINT during a checkpointed fit: remember the first, stop at the next step boundary.

    A second signal gets the previous handler's behaviour (KeyboardInterrupt
    for SIGINT, termination for SIGTERM): pressing Ctrl-C twice still stops
    a job stuck in a step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal.signal works there only
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handler(self, signum: int, frame: Any) -> None:
        if not self.signum:
            self.signum = signum
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self.__exit__()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)


class Trainer:
    """Trains a :class:`ResNet` with MGRIT forward and adjoint (collective over ``comm``).

    Every rank calls the same methods with the same data; each stores and
    updates only the parameters of its own layers.

    Parameters
    ----------
    net : ResNet
        Distributed over ``comm`` when the trainer is built.
    comm : mpi4py.MPI.Comm, default MPI.COMM_WORLD
    optimizer : Optimizer, default Adam(lr=1e-2)
        :class:`SGD`, :class:`Adam` or :class:`LBFGS`.
    layer_parallel : dict or None
        ``None``: layer-serial -- plain forward propagation and
        backpropagation (``max_levels = 1``; pipelined across ranks).
        A dict selects MGRIT with keys ``max_levels`` (3), ``cfactor`` (4),
        ``nrelax`` (1), ``cwt``, ``min_coarse``, ``fmg``, ``storage``,
        ``tnorm``, ``max_iter``, ``abs_tol``, ``abs_tol_adjoint``,
        ``virtual_time``, ``virtual_latency``, ``virtual_bandwidth`` (the Solver's
        names; ``tol`` and ``adjoint_tol`` are deprecated spellings; with
        ``virtual_time``, ``last_solve.virtual_wall_time`` predicts each gradient
        evaluation on one core per rank) and ``one_shot``:

        * ``one_shot=False`` (exact): forward and adjoint MGRIT iterate until
          both residual norms are below ``abs_tol`` / ``abs_tol_adjoint`` (default
          1e-10, absolute; at most ``max_iter``, default 100, else a
          :class:`ConvergenceWarning`): the gradient is that of
          backpropagation to that tolerance.
        * ``one_shot=True``: exactly ``max_iter`` (default 2) primal and
          adjoint iterations per gradient, warm-restarted from the previous
          iterate while the batch stays the same: inexact gradients, as in
          the simultaneous (one-shot) method of the paper, which trains
          full-batch (``batch_size=None``, e.g. with :class:`LBFGS`). With
          mini-batches every batch starts afresh from the initial guess (the
          opening layer's output at every layer), so a fixed small number
          of iterations is not enough: on peaks 2 iterations made Adam
          diverge once the network became nonlinear. For mini-batches give
          a relative tolerance instead (below): the *adaptive* one-shot mode.

        ``rel_tol`` / ``rel_tol_adjoint`` (instead of ``abs_tol`` /
        ``abs_tol_adjoint``, as in the Solver): iterate until the primal /
        adjoint residual is below this fraction of its first iteration's, at
        most ``max_iter`` iterations. With ``one_shot=True`` this is the
        mode that trains with mini-batches: e.g. ``rel_tol=1e-2,
        rel_tol_adjoint=1e-2, max_iter=20`` reaches serial training's
        validation accuracy on peaks at 0.6-0.8x the exact mode's cost per
        epoch (``benchmarks/bench_minibatch.py``).

        ``switch_to_exact`` (one-shot only, epochs, default None): when the
        mean training loss of that many consecutive epochs is no better than
        the best before them, the inexact gradients have stalled and the
        trainer continues in the exact mode (``abs_tol=abs_tol_adjoint=1e-10``,
        ``max_iter=100``); :attr:`switched_to_exact_at` records the epoch.

        Every value is checked here (``layer_parallel['cfactor'] must be
        >= 2, got 1``). A network too shallow for the hierarchy (``depth <
        cfactor * min_coarse``) is trained by sequential marching: the exact
        gradient, with no MGRIT iteration (see :class:`History`).
    seed : int, default 0
        Seeds the shuffling of mini-batches (identical on every rank).
    progress : bool, default True
        A tqdm progress bar on rank 0 (with a multilevel strategy: one per
        level trained, naming the level and its depth).
    strategy : {"single", "nested", "mgopt"} or Strategy, default "single"
        How :meth:`fit` trains: the network alone (``"single"``), or over a
        hierarchy of networks of depth ``depth, depth/2, ...``
        (:mod:`pyxbraid.nn.hierarchy`): nested iteration (``"nested"``,
        :class:`~pyxbraid.nn.Nested`: coarsest network first, prolonged
        level by level) or Nash's MG/Opt (``"mgopt"``,
        :class:`~pyxbraid.nn.MGOpt`: a V-cycle per optimisation step). A
        :class:`~pyxbraid.nn.Nested` or :class:`~pyxbraid.nn.MGOpt` object
        sets the details. Every mode and rank count works; the coarse
        levels use the same mode, settings, seed and optimizer type;
        checkpoints hold every level's state (see :meth:`fit`).
    levels : int, optional
        Levels of a strategy given by name (default: 3 for ``"nested"``, 2
        for ``"mgopt"``); the depth must be divisible by ``2**(levels - 1)``.

    Attributes
    ----------
    gradient_evaluations : dict
        Of the last :meth:`fit`: ``fine`` (gradient evaluations of this
        network), ``per_level`` (of each level, finest first) and
        ``coarse_weighted`` (coarse levels' evaluations weighted by their
        cost relative to the fine network's, ``depth_l / depth``). A fit
        resumed from a checkpoint counts those of the run it continues
        too: it reports the uninterrupted run's counts, with every strategy.
    level_histories : list of History
        Of the last :meth:`fit`, one per level trained, coarsest first
        (``[history]`` for the single-level and MG/Opt strategies).
    switched_to_exact_at : int or None
        With ``layer_parallel['switch_to_exact']``: the epoch after which
        one-shot training stalled and went on in the exact mode; None before.

    Examples
    --------
    >>> import pyxbraid as xb
    >>> from pyxbraid import nn
    >>> data = xb.datasets.peaks()
    >>> net = nn.ResNet(2, 8, 8, 5, seed=1)
    >>> trainer = nn.Trainer(net, optimizer=nn.LBFGS(), progress=False,
    ...                      layer_parallel=dict(max_levels=2, cfactor=4, max_iter=2, one_shot=True))
    >>> history = trainer.fit(data.x_train, data.y_train, epochs=5,      # full batch, warm restarts
    ...                       validation=(data.x_val, data.y_val))
    >>> len(history.loss), history.loss[-1] < history.loss[0]
    (5, True)
    """

    net: ResNet
    comm: MPI.Comm
    optimizer: Optimizer
    seed: int
    mode: str
    progress: bool
    history: History | None
    last_solve: SolveResult | None
    last_accuracy: float
    _options: dict[str, Any]
    _classifier_rank: int
    strategy: Strategy
    _gradient_count: int
    _fit_calls: int
    _progress_label: str
    _nested_done: bool

    def __init__(
        self,
        net: ResNet,
        *,
        comm: Any = None,
        optimizer: Optimizer | None = None,
        layer_parallel: dict[str, Any] | None = None,
        seed: int = 0,
        progress: bool = True,
        strategy: str | Strategy = "single",
        levels: int | None = None,
    ) -> None:
        if not isinstance(net, ResNet):
            raise TypeError(f"net must be a pyxbraid.nn.ResNet, got {type(net).__name__}")
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py.MPI.Comm (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
        optimizer = Adam(lr=1e-2) if optimizer is None else optimizer
        with _Agreed(comm, "Trainer arguments"):
            if not isinstance(optimizer, Optimizer):
                raise TypeError(
                    f"optimizer must be a pyxbraid.nn optimizer (SGD, Adam, LBFGS), got {type(optimizer).__name__}"
                )
            if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
                raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
            self.mode, self._options = self._parse_layer_parallel(layer_parallel)
            self._switch_patience: int | None = self._parse_switch(layer_parallel)
            if comm.Get_size() > net.config.depth + 1:
                raise ValueError(
                    f"a network of depth {net.config.depth} has {net.config.depth + 1} layers' time "
                    f"points, fewer than the {comm.Get_size()} ranks of comm"
                )
            self.strategy = strategy_from(strategy, levels)
            check_levels(self.strategy.levels, net.config.depth, comm.Get_size())
        # Valid but different settings on different ranks would build
        # different engines (or line searches of different lengths): a hang.
        _agree(
            comm,
            "Trainer settings",
            {
                "network": asdict(net.config),
                "layer": net._layer_spec.description,
                "mode": self.mode,
                "layer_parallel": self._options,
                "switch_to_exact": self._switch_patience,
                "seed": int(seed),
                "optimizer": _describe(optimizer),
                "strategy": self.strategy.settings(),
            },
        )
        net.distribute(comm)
        self.net, self.comm, self.optimizer, self.seed = net, comm, optimizer, int(seed)
        self.progress = bool(progress)
        self.history: History | None = None
        self._train: dict[int, tuple[NativeBatch | LayerBatch, Solver]] = {}
        self._eval: OrderedDict[int, tuple[NativeBatch | LayerBatch, Solver]] = OrderedDict()
        self._current_batch: Any = None  # identity of the batch loaded into the training engine
        self._fit_calls = 0  # makes mini-batch identities unique across fit() calls
        self._loaded_app: Any = None  # the engine app that holds it
        self.last_solve = None  # SolveResult of the last gradient evaluation
        self.switched_to_exact_at: int | None = None  # the epoch after which one-shot training went exact
        self.last_accuracy = math.nan  # of the batch of the last gradient evaluation
        self._gradient_count = 0  # gradient evaluations so far
        self.gradient_evaluations: dict[str, Any] = {}
        self.level_histories: list[History] = []
        self._level_trainers: list[Trainer] | None = None  # the strategy's levels, built on first use
        self._hierarchy: Any = None
        self._progress_label = ""
        self._nested_done = False  # nested iteration's cascade ran (in an earlier fit())
        self._classifier_rank = comm.Get_size() - 1

    @staticmethod
    def _parse_layer_parallel(lp: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        if lp is None:
            return "serial", {"max_levels": 1}
        if not isinstance(lp, dict):
            raise TypeError(f"layer_parallel must be a dict of MGRIT settings or None, got {type(lp).__name__}")
        lp = dict(lp)
        for old, new in _DEPRECATED_KEYS.items():
            if old not in lp:
                continue
            if new in lp:
                raise ValueError(f"layer_parallel got both {old!r} and {new!r}: give {new!r} only")
            warnings.warn(
                f"layer_parallel[{old!r}] is deprecated: use {new!r} (XBraid's name, as the Solver's)",
                DeprecationWarning,
                stacklevel=4,
            )
            lp[new] = lp.pop(old)
        known = {*_LAYER_PARALLEL_KEYS, *_RELATIVE_KEYS, "one_shot", "switch_to_exact"}
        unknown = sorted(set(lp) - known)
        if unknown:
            raise TypeError(
                f"layer_parallel got unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
            )
        one_shot = lp.get("one_shot", False)
        if not isinstance(one_shot, (bool, np.bool_)):
            raise TypeError(f"layer_parallel['one_shot'] must be True or False, got {one_shot!r}")
        mode = "one_shot" if one_shot else "exact"
        # The Solver's rules (its vocabulary), checked now under the keys the
        # user wrote: a bad value must not wait for the first fit().
        options = {
            key: check_option(key, lp.get(key, one_shot_default if one_shot else exact_default), _lp(key))
            for key, (exact_default, one_shot_default) in _LAYER_PARALLEL_KEYS.items()
        }
        for relative, absolute in _RELATIVE_KEYS.items():
            if relative not in lp:
                continue
            if absolute in lp:
                raise ValueError(f"layer_parallel got both {absolute!r} and {relative!r}: give one of them")
            options[relative] = check_option(relative, lp[relative], _lp(relative))
            del options[absolute]  # the Solver takes one tolerance of each kind
        if options["max_levels"] == 1:
            raise ValueError(
                "layer_parallel['max_levels'] must be >= 2 (use layer_parallel=None for layer-serial training), got 1"
            )
        return mode, options

    @staticmethod
    def _parse_switch(lp: dict[str, Any] | None) -> int | None:
        """Return layer_parallel['switch_to_exact'] checked (None when not given)."""
        patience = None if lp is None else lp.get("switch_to_exact")
        if patience is None:
            return None
        if isinstance(patience, (bool, np.bool_)) or not isinstance(patience, (numbers.Integral, np.integer)):
            raise TypeError(f"layer_parallel['switch_to_exact'] must be a positive integer or None, got {patience!r}")
        if patience < 1:
            raise ValueError(f"layer_parallel['switch_to_exact'] must be >= 1 (epochs), got {patience}")
        if not lp.get("one_shot", False):  # type: ignore[union-attr]
            raise ValueError(
                "layer_parallel['switch_to_exact'] needs one_shot=True (the exact mode is exact already), got "
                f"{patience} with one_shot={lp.get('one_shot', False)!r}"  # type: ignore[union-attr]
            )
        return int(patience)

    # -- data ------------------------------------------------------------------------------
    def _check_inputs(self, x: Any, name: str = "x") -> np.ndarray:
        """Return inputs as a float64 (n, in_features) array, checked."""
        c = self.net.config
        xa = _as_array(name, x)
        if xa.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real array, got dtype {xa.dtype}")
        xa = np.ascontiguousarray(xa, dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != c.in_features or xa.shape[0] == 0:
            raise ValueError(f"{name} must have shape (n, {c.in_features}) with n >= 1, got {xa.shape}")
        if not np.all(np.isfinite(xa)):
            bad = int(np.argwhere(~np.isfinite(xa))[0][0])
            raise ValueError(f"{name} must be finite, got {xa[bad].tolist()} in row {bad}")
        return xa

    def _check_data(self, x: Any, y: Any, name: str = "x") -> tuple[np.ndarray, np.ndarray]:
        """Return inputs as float64 (n, in_features) and labels as int64 (n,), checked."""
        c = self.net.config
        xa = self._check_inputs(x, name)
        label_name = "y" if name == "x" else f"{name} labels"
        if y is None:
            raise TypeError(
                f"{label_name} must be given: the class labels of the {xa.shape[0]} rows of {name} "
                "(predict() needs none)"
            )
        ya = _as_array(label_name, y)
        if ya.ndim == 2 and ya.shape[1] == c.classes and ya.dtype.kind in "fiub":
            if not (np.all((ya == 0) | (ya == 1)) and np.all(ya.sum(axis=1) == 1)):
                raise ValueError(f"{label_name} given as a 2-D array must be one-hot rows with {c.classes} columns")
            ya = ya.argmax(axis=1)
        if ya.dtype.kind not in "iu" and not (ya.dtype.kind == "f" and np.all(ya == np.round(ya))):
            raise TypeError(f"{label_name} must hold integer class labels, got dtype {ya.dtype}")
        if ya.shape != (xa.shape[0],):
            raise ValueError(f"{label_name} must have shape ({xa.shape[0]},) to match {name}, got {ya.shape}")
        outside = (ya < 0) | (ya >= c.classes)  # before any cast: 1e300 must not wrap around
        if np.any(outside):
            bad = ya[outside][0]
            raise ValueError(f"{label_name} must be in 0..{c.classes - 1}, got {bad.item()!r}")
        return xa, ya.astype(np.int64)

    # -- engines -----------------------------------------------------------------------------
    def _solver(self, batch: int, purpose: str) -> tuple[NativeBatch | LayerBatch, Solver]:
        c = self.net.config
        app = self.net.batch_app(batch)
        common: dict[str, Any] = dict(comm=self.comm, tstart_objective=c.T, tstop_objective=c.T)
        if purpose == "eval":
            solver = Solver(app, 0.0, c.T, c.depth, max_levels=1, objective_only=True, **common)
        elif self.mode == "serial":
            solver = Solver(app, 0.0, c.T, c.depth, max_levels=1, adjoint=True, **common)
        else:
            solver = Solver(
                app, 0.0, c.T, c.depth, adjoint=True, access_level=0, skip=False, **self._solver_options(), **common
            )
        return app, solver

    def _solver_options(self) -> dict[str, Any]:
        """Return the MGRIT settings of the training solves: the user's, or the exact mode's after a switch."""
        if self.switched_to_exact_at is None:
            return self._options
        options = {k: v for k, v in self._options.items() if k not in _RELATIVE_KEYS}
        return {**options, **_EXACT, "max_iter": _LAYER_PARALLEL_KEYS["max_iter"][0]}

    def _exact_gradients(self) -> bool:
        return self.mode == "exact" or self.switched_to_exact_at is not None

    def _maybe_switch_to_exact(self, history: History) -> None:
        """Train exactly from now on if the one-shot loss stalled for ``switch_to_exact`` epochs (every rank).

        Decided from ``history.loss`` alone, identical on every rank and
        restored by a checkpoint (a resumed run continues in the mode it had
        reached): see :func:`_stalled_at`.
        """
        if self._switch_patience is None or self.switched_to_exact_at is not None:
            return
        epoch = _stalled_at(history.loss, self._switch_patience)
        if epoch is not None:
            self._switch_to_exact(epoch)

    def _switch_to_exact(self, epoch: int) -> None:
        """Train exactly from now on, recording ``epoch`` as :attr:`switched_to_exact_at`."""
        self.switched_to_exact_at = epoch
        self._train.clear()  # rebuilt with the exact mode's tolerances
        self._current_batch = self._loaded_app = None

    def _train_engine(self, batch: int) -> tuple[NativeBatch | LayerBatch, Solver]:
        if batch not in self._train:
            self._train[batch] = self._solver(batch, "train")
        return self._train[batch]

    def _eval_engine(self, batch: int) -> tuple[NativeBatch | LayerBatch, Solver]:
        if batch in self._eval:
            self._eval.move_to_end(batch)
        else:
            if len(self._eval) >= 4:
                self._eval.popitem(last=False)
            self._eval[batch] = self._solver(batch, "eval")
        return self._eval[batch]

    def _solve(self, solver: Solver, engines: dict[int, Any], batch: int) -> SolveResult:
        """Run ``solver``; if it fails, forget it (collective: every rank fails in the same solve).

        A failed solver cannot be reused (:class:`pyxbraid.SolverStateError`):
        the next call builds a new one, so an error -- in a numpy layer, say
        -- leaves the trainer usable.
        """
        try:
            return solver.solve()
        except BaseException:
            engines.pop(batch, None)
            if engines is self._train:  # the warm-restart state went with it
                self._current_batch = self._loaded_app = None
            raise

    # -- objective and gradient ----------------------------------------------------------------
    def _dot(self, a: np.ndarray, b: np.ndarray) -> float:
        local = float(np.dot(a, b))
        return self.comm.allreduce(local, op=MPI.SUM) if self.comm.Get_size() > 1 else local

    def _gathered_iterate(self, full_token: Any = None) -> list[dict[str, Any]] | None:
        """Return every rank's piece of the training engine's MGRIT iterate for a checkpoint (collective).

        On rank 0 the list of the ranks' :meth:`Solver.iterate` dicts (stacked
        by :func:`~pyxbraid.nn.checkpoint.stack_iterate`, where a failure is
        agreed between the ranks); None on the others, and on every rank
        when there is no iterate to keep. Only a full batch in an MGRIT mode
        carries an iterate from one step to the next (warm restarts);
        mini-batches and layer-serial mode start every gradient afresh.
        ``full_token``: the full batch's identity in the engine (default: that
        of :meth:`fit` alone, ``("full", digest)``).
        """
        loaded = self._current_batch
        if full_token is None:
            full = isinstance(loaded, tuple) and loaded[0] == "full"
        else:
            full = loaded == full_token
        if self.mode == "serial" or not full:
            return None
        solver = self._train[self._loaded_app.shape[0]][1]
        mine = solver.iterate()
        return self.comm.gather(mine, root=0) if self.comm.Get_size() > 1 else [mine]

    def _restore_iterate(self, x: np.ndarray, y: np.ndarray, token: Any, iterate: dict[str, Any]) -> None:
        """Load the full batch into the training engine with a checkpoint's iterate (every rank)."""
        app, solver = self._train_engine(x.shape[0])
        app.set_batch(x, y)
        self.net.sync_opening()
        solver.set_iterate(iterate)
        self._current_batch, self._loaded_app = token, app

    def _evaluate_batch(self, x: np.ndarray, y: np.ndarray, token: Any) -> tuple[float, np.ndarray]:
        self._gradient_count += 1
        app, solver = self._train_engine(x.shape[0])
        if token is None or token != self._current_batch or app is not self._loaded_app:
            app.set_batch(x, y)
            if self.mode != "serial":
                self.net.sync_opening()  # the guess at later times is the opening layer's output
            solver.reset()
            self._current_batch, self._loaded_app = token, app
            self.optimizer.forget()
        else:
            solver.refresh_initial_condition()  # the opening layer may have changed
        result = self._solve(solver, self._train, x.shape[0])
        if self._exact_gradients() and not result.converged:
            warnings.warn(
                f"exact layer-parallel mode: MGRIT did not reach {_tolerances(self._solver_options())} in "
                f"max_iter={self._solver_options()['max_iter']} "
                f"iterations (residuals {_last(result.residual_norms):.3g} / "
                f"{_last(result.adjoint_residual_norms):.3g}); raise max_iter or loosen tol",
                ConvergenceWarning,
                stacklevel=3,
            )
        if self.net.layer is not None:
            with _Agreed(self.comm, "the numpy layers' parameter gradients"):
                self.net._check_layer_gradient()
        grad = self.net.local_gradient.copy()
        # This rank's regularisation share and, on the classifier's rank, the
        # batch's correct predictions: one reduction for both.
        totals = np.array(
            [self.net.regularization(grad), app.correct if self.comm.Get_rank() == self._classifier_rank else 0.0]
        )
        if self.comm.Get_size() > 1:
            self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        self.last_solve = result
        self.last_accuracy = float(totals[1]) / x.shape[0]
        assert result.objective is not None  # an adjoint solve always evaluates the objective
        return result.objective + float(totals[0]), grad

    def loss_and_gradient(self, x: Any, y: Any) -> tuple[float, np.ndarray]:
        """Return the training objective on ``(x, y)`` and this rank's part of its gradient (collective).

        The objective is the mean softmax cross-entropy plus the network's
        regularisation; the gradient is with respect to this rank's
        parameters (flat, in the layout of :meth:`ResNet.parameters` restricted
        to the rank's layers) as the selected mode computes it.

        Returns
        -------
        (float, numpy.ndarray)
        """
        with _Agreed(self.comm, "loss_and_gradient() data"):
            xa, ya = self._check_data(x, y)
        _agree(self.comm, "loss_and_gradient() data (x, y)", {"x.shape": xa.shape, "data": _digest(xa, ya)})
        return self._evaluate_batch(xa, ya, None)

    # -- evaluation -------------------------------------------------------------------------
    def _forward(self, x: np.ndarray, y: np.ndarray | None, chunk: int = 10000):
        """Exact (layer-serial) forward over chunks: (sum of losses, correct, logits or None)."""
        total, correct, logits = 0.0, 0, []
        for start in range(0, x.shape[0], chunk):
            xb = x[start : start + chunk]
            yb = None if y is None else y[start : start + chunk]
            app, solver = self._eval_engine(xb.shape[0])
            app.set_batch(xb, yb)
            solver.reset()
            result = self._solve(solver, self._eval, xb.shape[0])
            assert result.objective is not None  # objective_only=True: always evaluated
            total += result.objective * xb.shape[0]
            if self.comm.Get_rank() == self._classifier_rank:
                correct += app.correct
                if y is None:
                    logits.append(app.logits)
        return total, correct, logits

    def evaluate(self, x: Any, y: Any) -> tuple[float, float]:
        """Mean cross-entropy (without regularisation) and accuracy on ``(x, y)`` (collective).

        Uses an exact layer-serial forward pass, whatever the training mode.
        """
        with _Agreed(self.comm, "evaluate() data"):
            xa, ya = self._check_data(x, y)
        _agree(self.comm, "evaluate() data (x, y)", {"x.shape": xa.shape, "data": _digest(xa, ya)})
        total, correct, _ = self._forward(xa, ya)
        if self.comm.Get_size() > 1:
            correct = self.comm.allreduce(correct, op=MPI.SUM)
        return total / xa.shape[0], correct / xa.shape[0]

    def predict_logits(self, x: Any) -> np.ndarray:
        """Class scores ``W_c u_T + b_c``, shape (n, classes), on every rank (collective)."""
        with _Agreed(self.comm, "predict() data"):
            xa = self._check_inputs(x)
        _agree(self.comm, "predict() data (x)", {"x.shape": xa.shape, "data": _digest(xa)})
        _, _, logits = self._forward(xa, None)
        # the scores live on the classifier's rank; the others' (empty) are replaced by them
        out = np.concatenate(logits) if logits else np.empty((0, self.net.config.classes))
        if self.comm.Get_size() > 1:
            out = self.comm.bcast(out, root=self._classifier_rank)
        return out

    def predict(self, x: Any) -> np.ndarray:
        """Predicted class of each row of ``x`` (collective)."""
        return self.predict_logits(x).argmax(axis=1)

    # -- training ----------------------------------------------------------------------------
    def fit(
        self,
        x: Any,
        y: Any,
        *,
        epochs: int = 1,
        batch_size: int | None = None,
        validation: tuple[Any, Any] | None = None,
        shuffle: bool = True,
        callback: Callable[[int, History], bool | None] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        resume: bool = False,
    ) -> History:
        """Train (collective): ``epochs`` passes over ``(x, y)`` in seeded, shuffled mini-batches.

        Parameters
        ----------
        x : array, shape (n, in_features)
        y : array of int, shape (n,), or one-hot (n, classes)
            Every rank passes the same data (checked: a fingerprint of the
            bytes is compared, one allgather).
        epochs : int
            Total number of epochs (with ``resume``: including those done before).
        batch_size : int or None
            None (or >= n): full batch -- every step sees all data, and the
            MGRIT modes warm-restart across steps.
        validation : (x_val, y_val), optional
            Loss and accuracy measured after each epoch.
        shuffle : bool, default True
            Shuffle before each epoch (seeded by the trainer's ``seed``);
            needed for data sorted by class, like peaks.
        callback : callable(epoch, history), optional
            Called on every rank after each epoch (an exception in it on
            one rank raises on every rank). Returning True stops training
            after that epoch (on every rank, when one rank's returns True).
            With a multilevel strategy: after each epoch of the fine network.
        checkpoint : str or path, optional
            Write a checkpoint (a versioned ``.npz``, no pickle) after every
            epoch, atomically (temporary file + rename), and on SIGTERM or
            SIGINT: then the last completed step is saved and
            :class:`TrainingInterrupted` is raised on every rank. It holds
            the parameters, the optimizer state (gathered to the network's
            global layout), the shuffling generator, the epoch and step
            counters and the history. With a multilevel strategy: every
            level's part (parameters, optimizer state, history, MGRIT
            iterate), the strategy's settings, the gradient-evaluation counts
            and where the schedule stands (nested: the level trained and its
            epoch and step; MG/Opt: the V-cycles done -- a signal stops after
            the cycle in progress).
        resume : bool, default False
            Continue from ``checkpoint`` (which must exist), on any number
            of ranks. The network's configuration, the data, the mode and
            its MGRIT settings, ``seed``, ``batch_size``, ``shuffle`` and the
            optimizer type must be those of the run that wrote it (else a
            ``ValueError`` naming the difference), and so must the strategy
            and its settings (``Nested(levels=3)`` against a checkpoint of
            ``levels=2``: a ``ValueError`` naming ``levels`` and both values);
            the optimizer continues with the checkpoint's hyperparameters and
            state.

        Returns
        -------
        History

        Notes
        -----
        What a resumed run reproduces. ``fit(epochs=2, checkpoint=c)``
        followed, in a new process, by ``fit(epochs=4, checkpoint=c,
        resume=True)`` gives parameters bit-identical to one ``fit(epochs=4)``
        on the same number of ranks, in every mode: the checkpoint holds the
        parameters, the optimizer's state, the shuffling generator and, with a
        full batch in an MGRIT mode (where each step warm-restarts MGRIT from
        the previous one), MGRIT's iterate. Across rank counts: the gradients
        of every mode do not depend on the rank count, so SGD and Adam runs
        resume bit-identically on another number of ranks; L-BFGS sums its
        dot products over the ranks, so its runs differ in the last bits.

        The multilevel strategies resume the same way, bit for bit on the
        same number of ranks: parameters, every level's history
        (:attr:`level_histories`), :attr:`gradient_evaluations` and
        :attr:`switched_to_exact_at` are those of the uninterrupted run.
        Nested iteration also moves between rank counts like a single
        network (its transfers are rank-independent); MG/Opt's line search
        and coarse objective sum dot products over the ranks, so across
        rank counts it agrees to rounding. With ``Nested(epochs=None)`` the
        coarse levels train for ``epochs``: a checkpoint written during the
        cascade resumes only with the same ``epochs`` (a ``ValueError``
        says so); once the fine network trains, a larger ``epochs``
        continues it.

        Examples
        --------
        >>> import os, tempfile
        >>> import pyxbraid as xb
        >>> from pyxbraid import nn
        >>> d = xb.datasets.make_peaks(60, 10, seed=1)
        >>> ckpt = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
        >>> first = nn.Trainer(nn.ResNet(2, 4, 6, 5), progress=False)
        >>> _ = first.fit(d.x_train, d.y_train, epochs=2, batch_size=20, checkpoint=ckpt)
        >>> later = nn.Trainer(nn.ResNet(2, 4, 6, 5), progress=False)     # e.g. in a new job
        >>> h = later.fit(d.x_train, d.y_train, epochs=4, batch_size=20, checkpoint=ckpt, resume=True)
        >>> h.epoch
        [1, 2, 3, 4]
        """
        with _Agreed(self.comm, "fit() arguments"):
            xa, ya = self._check_data(x, y)
            if isinstance(epochs, bool) or not isinstance(epochs, (numbers.Integral, np.integer)) or epochs < 1:
                raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
            n = xa.shape[0]
            if batch_size is None:
                batch_size = n
            if (
                isinstance(batch_size, bool)
                or not isinstance(batch_size, (numbers.Integral, np.integer))
                or batch_size < 1
            ):
                raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
            batch_size = min(int(batch_size), n)
            if batch_size > INDEX_MAX:
                raise ValueError(f"batch_size must be <= {INDEX_MAX} (the engine's index limit), got {batch_size}")
            xv = yv = None
            if validation is not None:
                if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
                    raise TypeError("validation must be a pair (x_val, y_val)")
                xv, yv = self._check_data(validation[0], validation[1], name="validation")
            if not isinstance(shuffle, (bool, np.bool_)):
                raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
            if callback is not None and not callable(callback):
                raise TypeError(f"callback must be callable(epoch, history) or None, got {type(callback).__name__}")
            if not isinstance(resume, (bool, np.bool_)):
                raise TypeError(f"resume must be True or False, got {resume!r}")
            if checkpoint is not None:
                if not isinstance(checkpoint, (str, os.PathLike)):
                    raise TypeError(f"checkpoint must be a path or None, got {type(checkpoint).__name__}")
                checkpoint = Path(checkpoint)
                try:
                    self.optimizer.state_dict()
                except NotImplementedError:
                    raise TypeError(
                        f"checkpoint needs an optimizer with state_dict(); {type(self.optimizer).__name__} has none"
                    ) from None
                if self.comm.Get_rank() == 0:  # the writer: fail now, not after an epoch of work
                    if resume and not checkpoint.is_file():
                        raise FileNotFoundError(f"resume=True but there is no checkpoint file {str(checkpoint)!r}")
                    check_writable(checkpoint, "checkpoint")
            elif resume:
                raise ValueError("resume=True needs checkpoint=PATH (the checkpoint to continue from)")
        digest = _digest(xa, ya)
        settings = self._fit_settings(n, batch_size, bool(shuffle), digest, None if xv is None else _digest(xv, yv))
        _agree(
            self.comm,
            "fit() data and settings",
            {
                "x.shape": xa.shape,
                "epochs": int(epochs),
                **settings,
                "checkpoint given": checkpoint is not None,
                "resume": bool(resume),
            },
        )

        if self.strategy.name != "single":
            run = run_nested if self.strategy.name == "nested" else run_mgopt
            validation_data = None if xv is None or yv is None else (xv, yv)
            saving = Saving(checkpoint, bool(resume), digest, None if xv is None else _digest(xv, yv))
            history = run(self, xa, ya, int(epochs), batch_size, validation_data, bool(shuffle), callback, saving)
            self.history = history
            return history
        history = self._fit_single(
            xa, ya, int(epochs), batch_size, (xv, yv), callback, checkpoint, bool(resume), (settings, digest, shuffle)
        )
        self.level_histories = [history]
        return history

    def _fit_single(
        self,
        xa: np.ndarray,
        ya: np.ndarray,
        epochs: int,
        batch_size: int,
        validation: tuple[np.ndarray | None, np.ndarray | None],
        callback: Any,
        checkpoint: Any,
        resume: bool,
        agreed: tuple[dict, str, Any],
        hooks: Any = None,
    ) -> History:
        """Run the single-level training loop of :meth:`fit` (arguments checked and agreed).

        ``hooks`` (a :class:`~pyxbraid.nn.checkpoint.LevelHooks`): this loop
        trains one level of a multilevel strategy, whose checkpoint it writes
        with ``hooks.write`` and whose state it continues from
        (``hooks.resumed``) instead of a single-level checkpoint. Without
        ``hooks`` it sets :attr:`gradient_evaluations` to the loop's count,
        with the resumed run's (a multilevel strategy then sets its own).
        """
        from . import checkpoint as ckpt

        xv, yv = validation
        settings, digest, shuffle = agreed
        n = xa.shape[0]
        rng = np.random.default_rng(self.seed)
        history = History()
        progress = ckpt.Progress.start(rng)
        iterate = None
        counted_from = self._gradient_count  # this fit's gradient evaluations are those after this count
        if hooks is not None and hooks.resumed is not None:
            history, progress, iterate = hooks.resumed
        elif hooks is None and resume:
            history, progress, iterate, done = ckpt.load(self, checkpoint, settings, int(epochs), n, batch_size)
            counted_from -= done  # and those of the run it continues: resumed, it reports the uninterrupted count
        self.history = history
        # A resumed run continues in the mode it had reached (before the iterate: switching drops the engines).
        self._maybe_switch_to_exact(history)
        if iterate is not None:
            # The next step warm-restarts MGRIT from exactly where the saved run stood.
            with _Agreed(self.comm, f"checkpoint {str(checkpoint)!r} MGRIT iterate"):
                self._restore_iterate(xa, ya, ("full", digest), iterate)
        self._fit_calls += 1
        steps_per_epoch = -(-n // batch_size)
        full_batch = batch_size == n
        bar = None
        if self.progress and self.comm.Get_rank() == 0:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=int(epochs) * steps_per_epoch,
                initial=progress.epoch * steps_per_epoch + progress.step,
                desc=f"train ({self.mode}){self._progress_label}",
                unit="step",
                dynamic_ncols=True,
                leave=True,
            )
            if history.val_accuracy:
                bar.set_postfix({"val_acc": f"{history.val_accuracy[-1]:.3f}"}, refresh=False)
        start = time.perf_counter() - progress.wall_seconds
        params = self.net.local_parameters
        stop = _StopSignals() if checkpoint is not None else None
        last = progress.last  # (residual, adjoint residual, iterations) of the last gradient

        def save(epoch: int, step: int, epoch_rng: Any, loss_sum: float, correct_sum: float) -> None:
            now = ckpt.Progress(epoch, step, epoch_rng, loss_sum, correct_sum, time.perf_counter() - start, last)
            if hooks is not None:
                hooks.write(history, now)
            else:
                ckpt.save(self, checkpoint, settings, history, now, self._gradient_count - counted_from)

        try:
            if stop is not None:
                stop.__enter__()
            for epoch in range(progress.epoch, int(epochs)):
                first_step, loss_sum, correct_sum, epoch_rng, order = progress.begin_epoch(
                    epoch, rng, n, shuffle and not full_batch
                )
                for b in range(first_step, steps_per_epoch):
                    idx = order[b * batch_size : (b + 1) * batch_size]
                    xb, yb = (xa, ya) if full_batch else (np.ascontiguousarray(xa[idx]), np.ascontiguousarray(ya[idx]))
                    # Identities of the batch in the training engine: the
                    # same content keeps MGRIT's iterate (warm restart).
                    token = ("full", digest) if full_batch else ("batch", self._fit_calls, epoch, b)
                    first: list[float] = []

                    def closure(xb=xb, yb=yb, token=token, first=first):
                        loss, grad = self._evaluate_batch(xb, yb, token)
                        if not first:
                            first.append(self.last_accuracy)
                        return loss, grad

                    loss = self.optimizer.step(params, closure, self._dot)
                    if not math.isfinite(loss):
                        raise FloatingPointError(
                            f"the training loss became {loss} at epoch {epoch}, step {b}; lower the learning rate"
                        )
                    history.step_loss.append(loss)
                    loss_sum += loss * xb.shape[0]
                    correct_sum += first[0] * xb.shape[0]
                    res = self.last_solve
                    if self.mode != "serial" and res is not None:
                        last = (_last(res.residual_norms), _last(res.adjoint_residual_norms), int(res.iterations))
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(self._postfix(loss, first[0], history, last), refresh=False)
                    if stop is not None and self._stop_requested(stop):
                        save(epoch, b + 1, epoch_rng, loss_sum, correct_sum)
                        raise TrainingInterrupted(
                            self._stop_requested(stop), str(checkpoint), epoch, b + 1, getattr(hooks, "level", None)
                        )
                history.epoch.append(epoch + 1)
                history.loss.append(loss_sum / n)
                history.train_accuracy.append(correct_sum / n)
                if xv is not None:
                    vl, va = self.evaluate(xv, yv)
                else:
                    vl = va = math.nan
                history.val_loss.append(vl)
                history.val_accuracy.append(va)
                history.residual.append(last[0])
                history.adjoint_residual.append(last[1])
                history.mgrit_iterations.append(last[2])
                history.wall_seconds.append(time.perf_counter() - start)
                self._maybe_switch_to_exact(history)
                if bar is not None:  # the epoch's own validation accuracy, not the previous one
                    bar.set_postfix(
                        self._postfix(history.step_loss[-1], history.train_accuracy[-1], history, last), refresh=True
                    )
                stop_now = False
                if callback is not None:
                    with _Agreed(self.comm, "fit() callback"):
                        stop_now = callback(epoch + 1, history) is True
                    if self.comm.Get_size() > 1:  # one rank's True stops every rank
                        stop_now = bool(self.comm.allreduce(stop_now, op=MPI.LOR))
                if checkpoint is not None:  # the state the next epoch starts from
                    save(epoch + 1, 0, rng.bit_generator.state, 0.0, 0.0)
                    if stop is not None and self._stop_requested(stop):
                        raise TrainingInterrupted(
                            self._stop_requested(stop), str(checkpoint), epoch + 1, 0, getattr(hooks, "level", None)
                        )
                if stop_now:
                    break
        finally:
            if stop is not None:
                stop.__exit__()
            if bar is not None:
                bar.close()
        if hooks is None:
            fine = self._gradient_count - counted_from
            self.gradient_evaluations = {"fine": fine, "per_level": [fine], "coarse_weighted": 0.0}
        return history

    def _postfix(self, loss: float, accuracy: float, history: History, last: tuple) -> dict[str, str]:
        post = {"loss": f"{loss:.4f}", "acc": f"{accuracy:.3f}"}
        if history.val_accuracy and not math.isnan(history.val_accuracy[-1]):
            post["val_acc"] = f"{history.val_accuracy[-1]:.3f}"
        if not math.isnan(last[0]):  # no MGRIT iteration ran: layer-serial, or too shallow
            post["res"] = f"{last[0]:.1e}"
            post["adj"] = f"{last[1]:.1e}"
        return post

    def _stop_requested(self, stop: _StopSignals) -> int:
        """Return the signal received on any rank, 0 if none (a tiny allreduce: every rank stops at the same step)."""
        flag = stop.signum
        if self.comm.Get_size() > 1:
            flag = self.comm.allreduce(flag, op=MPI.MAX)
        return flag

    def _fit_settings(self, n: int, batch_size: int, shuffle: bool, data: str, validation: str | None) -> dict:
        """Return what a resumed fit() must share with the run that wrote the checkpoint (JSON-normalised)."""
        opt = self.optimizer
        hyper: Any
        try:
            optimizer = opt.state_dict()["optimizer"]
            hyper = opt.hyperparameters()
        except NotImplementedError:
            optimizer, hyper = type(opt).__name__, repr(opt)
        settings = {
            "mode": self.mode,
            # virtual_* only predict timings: a run may resume with or without them.
            "layer_parallel": {k: v for k, v in self._options.items() if not k.startswith("virtual_")}
            if self.mode != "serial"
            else None,
            "seed": self.seed,
            "n": n,
            "batch_size": batch_size,
            "shuffle": shuffle,
            "data": data,
            "validation": validation,
            "optimizer": optimizer,
            "optimizer_hyperparameters": hyper,
        }
        return json.loads(json.dumps(settings))

    # -- plots ---------------------------------------------------------------------------------
    def plot(self, history: History, path: str | Path) -> None:
        """Training curves (loss; training and validation accuracy) to an image file (collective; rank 0 writes).

        Written atomically (temporary file + rename; a link at ``path`` is
        replaced, not followed); a failure raises on every rank.
        """
        with _Agreed(self.comm, "plot()"):
            if not isinstance(history, History):
                raise TypeError(f"history must be a pyxbraid.nn.History, got {type(history).__name__}")
            if self.comm.Get_rank() == 0:
                from .plotting import plot_history

                plot_history(history, path, title=f"{self.net!r}, {self.mode}")

    def plot_decision_regions(self, path: str | Path, x: Any, y: Any, resolution: int = 200) -> None:
        """Predicted class over the bounding box of 2-D data, with the points on top (collective; rank 0 writes)."""
        with _Agreed(self.comm, "plot_decision_regions() arguments"):
            if self.net.config.in_features != 2:
                raise ValueError(
                    f"decision regions need 2-D inputs, the network has in_features={self.net.config.in_features}"
                )
            xa, ya = self._check_data(x, y)
            if not _is_int(resolution) or not 2 <= resolution <= 4096:
                raise ValueError(f"resolution must be an integer in 2..4096, got {resolution!r}")
        _agree(
            self.comm,
            "plot_decision_regions() data (x, y)",
            {"x.shape": xa.shape, "data": _digest(xa, ya), "resolution": int(resolution)},
        )
        lo, hi = xa.min(axis=0), xa.max(axis=0)
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
        labels = self.predict(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
        with _Agreed(self.comm, "plot_decision_regions() output"):
            if self.comm.Get_rank() == 0:
                from .plotting import plot_regions

                plot_regions(gx, gy, labels, xa, ya, self.net.config.classes, path)
