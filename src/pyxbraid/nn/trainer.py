"""Training: the three modes (layer-serial, exact layer-parallel, one-shot), mini-batches, history."""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from mpi4py import MPI

from .. import _core
from ..app import NativeApp
from ..errors import _Agreed
from ..solver import Solver
from .network import ResNet
from .optim import Adam, Optimizer

__all__ = ["ConvergenceWarning", "History", "Trainer"]

# layer_parallel keys -> (Solver keyword, default for exact mode, default for one-shot mode)
_LAYER_PARALLEL_KEYS = {
    "max_levels": ("max_levels", 3, 3),
    "min_coarse": ("min_coarse", 2, 2),
    "cfactor": ("cfactor", 4, 4),
    "nrelax": ("nrelax", 1, 1),
    "cwt": ("cwt", 1.0, 1.0),
    "fmg": ("fmg", False, False),
    "storage": ("storage", -1, -1),
    "tnorm": ("tnorm", 2, 2),
    "max_iter": ("max_iter", 100, 2),
    "tol": ("abs_tol", 1e-10, 0.0),
    "adjoint_tol": ("abs_tol_adjoint", 1e-10, 0.0),
}


class ConvergenceWarning(RuntimeWarning):
    """Exact layer-parallel mode: MGRIT or its adjoint did not reach the tolerance in max_iter iterations."""


class _BatchApp(NativeApp):
    """The network as an engine app for one batch size (the native ResNetBatch)."""

    objective = "cross_entropy"

    def __init__(self, net: ResNet, batch: int) -> None:
        self.shape = (batch, net.config.width)
        self.net = net
        self.cpp = _core.ResNetBatch(net._native, batch)

    def _native(self) -> Any:
        return self.cpp

    def gradient(self) -> np.ndarray:
        return self.net._gradient


@dataclass
class History:
    """What :meth:`Trainer.fit` recorded, one entry per epoch (``step_*``: per optimisation step).

    ``train_accuracy`` counts the correct predictions of each training batch
    at the time it was used (as Keras reports it); ``val_*`` are measured at
    the end of each epoch; ``residual`` / ``adjoint_residual`` are the last
    MGRIT residual norms of the epoch (NaN in layer-serial mode).
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
    """Raise on every rank unless ``value`` is the same on all ranks (cheap: one allgather)."""
    if comm.Get_size() == 1:
        return
    values = comm.allgather(value)
    if any(v != values[0] for v in values):
        raise ValueError(f"{what} differs between ranks: {values}; every rank must pass the same data and settings")


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
        ``tnorm``, ``max_iter``, ``tol``, ``adjoint_tol`` and ``one_shot``:

        * ``one_shot=False`` (exact): forward and adjoint MGRIT iterate until
          both residual norms are below ``tol`` / ``adjoint_tol`` (default
          1e-10, absolute; at most ``max_iter``, default 100, else a
          :class:`ConvergenceWarning`): the gradient is that of
          backpropagation to that tolerance.
        * ``one_shot=True``: exactly ``max_iter`` (default 2) primal and
          adjoint iterations per gradient, warm-restarted from the previous
          iterate while the batch stays the same: inexact gradients, as in
          the simultaneous (one-shot) method of the paper, which trains
          full-batch (``batch_size=None``, e.g. with :class:`LBFGS`). With
          mini-batches every batch starts afresh from the initial guess (the
          opening layer's output at every layer), so ``max_iter`` iterations
          must suffice on their own: on peaks (30 layers, cfactor 4) 2
          iterations made Adam diverge once the network became nonlinear
          (measured on a trained network: primal exact after 4 iterations,
          the adjoint only after 7) -- use the exact mode, which stops as
          soon as both have converged, for mini-batch training.
    seed : int, default 0
        Seeds the shuffling of mini-batches (identical on every rank).
    progress : bool, default True
        A tqdm progress bar on rank 0.

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

    def __init__(self, net: ResNet, *, comm: Any = None, optimizer: Optimizer | None = None,
                 layer_parallel: dict[str, Any] | None = None, seed: int = 0, progress: bool = True) -> None:
        if not isinstance(net, ResNet):
            raise TypeError(f"net must be a pyxbraid.nn.ResNet, got {type(net).__name__}")
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py.MPI.Comm (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
        optimizer = Adam(lr=1e-2) if optimizer is None else optimizer
        with _Agreed(comm, "Trainer arguments"):
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"optimizer must be a pyxbraid.nn optimizer (SGD, Adam, LBFGS), "
                                f"got {type(optimizer).__name__}")
            if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
                raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
            self.mode, self._options = self._parse_layer_parallel(layer_parallel)
        net.distribute(comm)
        self.net, self.comm, self.optimizer, self.seed = net, comm, optimizer, int(seed)
        self.progress = bool(progress)
        self.history: History | None = None
        self._train: dict[int, tuple[_BatchApp, Solver]] = {}
        self._eval: OrderedDict[int, tuple[_BatchApp, Solver]] = OrderedDict()
        self._current_batch: Any = None      # identity of the batch loaded into the training engine
        self._loaded_app: Any = None         # the engine app that holds it
        self.last_solve = None               # SolveResult of the last gradient evaluation
        self.last_accuracy = math.nan        # of the batch of the last gradient evaluation
        self._classifier_rank = comm.Get_size() - 1

    @staticmethod
    def _parse_layer_parallel(lp: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        if lp is None:
            return "serial", {"max_levels": 1}
        if not isinstance(lp, dict):
            raise TypeError(f"layer_parallel must be a dict of MGRIT settings or None, got {type(lp).__name__}")
        unknown = sorted(set(lp) - set(_LAYER_PARALLEL_KEYS) - {"one_shot"})
        if unknown:
            raise TypeError(f"layer_parallel got unknown key(s) {', '.join(map(repr, unknown))}; known: "
                            f"{', '.join(sorted([*_LAYER_PARALLEL_KEYS, 'one_shot']))}")
        one_shot = lp.get("one_shot", False)
        if not isinstance(one_shot, (bool, np.bool_)):
            raise TypeError(f"layer_parallel['one_shot'] must be True or False, got {one_shot!r}")
        mode = "one_shot" if one_shot else "exact"
        options = {}
        for key, (solver_key, exact_default, one_shot_default) in _LAYER_PARALLEL_KEYS.items():
            options[solver_key] = lp.get(key, one_shot_default if one_shot else exact_default)
        if options["max_levels"] == 1:
            raise ValueError("layer_parallel['max_levels'] must be >= 2 (use layer_parallel=None for layer-serial "
                             "training), got 1")
        return mode, options

    # -- data ------------------------------------------------------------------------------
    def _check_data(self, x: Any, y: Any, name: str = "x") -> tuple[np.ndarray, np.ndarray | None]:
        c = self.net.config
        xa = np.asarray(x)
        if xa.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real array, got dtype {xa.dtype}")
        xa = np.ascontiguousarray(xa, dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != c.in_features or xa.shape[0] == 0:
            raise ValueError(f"{name} must have shape (n, {c.in_features}) with n >= 1, got {xa.shape}")
        if not np.all(np.isfinite(xa)):
            bad = int(np.argwhere(~np.isfinite(xa))[0][0])
            raise ValueError(f"{name} must be finite, got {xa[bad].tolist()} in row {bad}")
        if y is None:
            return xa, None
        label_name = "y" if name == "x" else f"{name} labels"
        ya = np.asarray(y)
        if ya.ndim == 2 and ya.shape[1] == c.classes and ya.dtype.kind in "fiub":
            if not (np.all((ya == 0) | (ya == 1)) and np.all(ya.sum(axis=1) == 1)):
                raise ValueError(f"{label_name} given as a 2-D array must be one-hot rows with {c.classes} columns")
            ya = ya.argmax(axis=1)
        if ya.dtype.kind not in "iu" and not (ya.dtype.kind == "f" and np.all(ya == np.round(ya))):
            raise TypeError(f"{label_name} must hold integer class labels, got dtype {ya.dtype}")
        ya = ya.astype(np.int64)
        if ya.shape != (xa.shape[0],):
            raise ValueError(f"{label_name} must have shape ({xa.shape[0]},) to match {name}, got {ya.shape}")
        if ya.size and (ya.min() < 0 or ya.max() >= c.classes):
            bad = ya[(ya < 0) | (ya >= c.classes)][0]
            raise ValueError(f"{label_name} must be in 0..{c.classes - 1}, got {int(bad)}")
        return xa, ya

    # -- engines -----------------------------------------------------------------------------
    def _solver(self, batch: int, purpose: str) -> tuple[_BatchApp, Solver]:
        c = self.net.config
        app = _BatchApp(self.net, batch)
        common = dict(comm=self.comm, tstart_objective=c.T, tstop_objective=c.T)
        if purpose == "eval":
            solver = Solver(app, 0.0, c.T, c.depth, max_levels=1, objective_only=True, **common)
        elif self.mode == "serial":
            solver = Solver(app, 0.0, c.T, c.depth, max_levels=1, adjoint=True, **common)
        else:
            solver = Solver(app, 0.0, c.T, c.depth, adjoint=True, access_level=0, skip=False,
                            **self._options, **common)
        return app, solver

    def _train_engine(self, batch: int) -> tuple[_BatchApp, Solver]:
        if batch not in self._train:
            self._train[batch] = self._solver(batch, "train")
        return self._train[batch]

    def _eval_engine(self, batch: int) -> tuple[_BatchApp, Solver]:
        if batch in self._eval:
            self._eval.move_to_end(batch)
        else:
            if len(self._eval) >= 4:
                self._eval.popitem(last=False)
            self._eval[batch] = self._solver(batch, "eval")
        return self._eval[batch]

    # -- objective and gradient ----------------------------------------------------------------
    def _dot(self, a: np.ndarray, b: np.ndarray) -> float:
        local = float(np.dot(a, b))
        return self.comm.allreduce(local, op=MPI.SUM) if self.comm.Get_size() > 1 else local

    def _evaluate_batch(self, x: np.ndarray, y: np.ndarray, token: Any) -> tuple[float, np.ndarray]:
        app, solver = self._train_engine(x.shape[0])
        if token is None or token != self._current_batch or app is not self._loaded_app:
            app.cpp.set_batch(x, y)
            if self.mode != "serial":
                self.net._share_opening()   # the guess at later times is the opening layer's output
            solver.reset()
            self._current_batch, self._loaded_app = token, app
            self.optimizer.forget()
        else:
            solver.refresh_initial_condition()   # the opening layer may have changed
        result = solver.solve()
        if self.mode == "exact" and not result.converged:
            warnings.warn(f"exact layer-parallel mode: MGRIT did not reach tol={self._options['abs_tol']:g} / "
                          f"adjoint_tol={self._options['abs_tol_adjoint']:g} in max_iter={self._options['max_iter']} "
                          f"iterations (residuals {result.residual_norms[-1]:.3g} / "
                          f"{result.adjoint_residual_norms[-1]:.3g}); raise max_iter or loosen tol",
                          ConvergenceWarning, stacklevel=3)
        grad = self.net._gradient.copy()
        # This rank's regularisation share and, on the classifier's rank, the
        # batch's correct predictions: one reduction for both.
        totals = np.array([self.net._regularization(grad),
                           app.cpp.correct if self.comm.Get_rank() == self._classifier_rank else 0.0])
        if self.comm.Get_size() > 1:
            self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        self.last_solve = result
        self.last_accuracy = float(totals[1]) / x.shape[0]
        return result.objective + float(totals[0]), grad

    def loss_and_gradient(self, x: Any, y: Any) -> tuple[float, np.ndarray]:
        """The training objective on ``(x, y)`` and this rank's part of its gradient (collective).

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
        return self._evaluate_batch(xa, ya, None)

    # -- evaluation -------------------------------------------------------------------------
    def _forward(self, x: np.ndarray, y: np.ndarray | None, chunk: int = 10000):
        """Exact (layer-serial) forward over chunks: (sum of losses, correct, logits or None)."""
        total, correct, logits = 0.0, 0, []
        for start in range(0, x.shape[0], chunk):
            xb = x[start: start + chunk]
            yb = None if y is None else y[start: start + chunk]
            app, solver = self._eval_engine(xb.shape[0])
            app.cpp.set_batch(xb, yb)
            solver.reset()
            result = solver.solve()
            total += result.objective * xb.shape[0]
            if self.comm.Get_rank() == self._classifier_rank:
                correct += app.cpp.correct
                if y is None:
                    logits.append(app.cpp.logits.reshape(xb.shape[0], self.net.config.classes))
        return total, correct, logits

    def evaluate(self, x: Any, y: Any) -> tuple[float, float]:
        """Mean cross-entropy (without regularisation) and accuracy on ``(x, y)`` (collective).

        Uses an exact layer-serial forward pass, whatever the training mode.
        """
        with _Agreed(self.comm, "evaluate() data"):
            xa, ya = self._check_data(x, y)
        total, correct, _ = self._forward(xa, ya)
        if self.comm.Get_size() > 1:
            correct = self.comm.allreduce(correct, op=MPI.SUM)
        return total / xa.shape[0], correct / xa.shape[0]

    def predict_logits(self, x: Any) -> np.ndarray:
        """Class scores ``W_c u_T + b_c``, shape (n, classes), on every rank (collective)."""
        with _Agreed(self.comm, "predict() data"):
            xa, _ = self._check_data(x, None)
        _, _, logits = self._forward(xa, None)
        out = np.concatenate(logits) if logits else None
        if self.comm.Get_size() > 1:
            out = self.comm.bcast(out, root=self._classifier_rank)
        return out

    def predict(self, x: Any) -> np.ndarray:
        """Predicted class of each row of ``x`` (collective)."""
        return self.predict_logits(x).argmax(axis=1)

    # -- training ----------------------------------------------------------------------------
    def fit(self, x: Any, y: Any, *, epochs: int = 1, batch_size: int | None = None,
            validation: tuple[Any, Any] | None = None, shuffle: bool = True,
            callback: Callable[[int, History], None] | None = None) -> History:
        """Train (collective): ``epochs`` passes over ``(x, y)`` in seeded, shuffled mini-batches.

        Parameters
        ----------
        x : array, shape (n, in_features)
        y : array of int, shape (n,), or one-hot (n, classes)
        epochs : int
        batch_size : int or None
            None (or >= n): full batch -- every step sees all data, and the
            one-shot mode warm-restarts MGRIT across steps.
        validation : (x_val, y_val), optional
            Loss and accuracy measured after each epoch.
        shuffle : bool, default True
            Shuffle before each epoch (seeded by the trainer's ``seed``);
            needed for data sorted by class, like peaks.
        callback : callable(epoch, history), optional
            Called on every rank after each epoch.

        Returns
        -------
        History
        """
        with _Agreed(self.comm, "fit() arguments"):
            xa, ya = self._check_data(x, y)
            if isinstance(epochs, bool) or not isinstance(epochs, (numbers.Integral, np.integer)) or epochs < 1:
                raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
            n = xa.shape[0]
            if batch_size is None:
                batch_size = n
            if isinstance(batch_size, bool) or not isinstance(batch_size, (numbers.Integral, np.integer)) \
                    or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
            batch_size = min(int(batch_size), n)
            xv = yv = None
            if validation is not None:
                if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
                    raise TypeError("validation must be a pair (x_val, y_val)")
                xv, yv = self._check_data(validation[0], validation[1], name="validation")
        _agree(self.comm, "fit(x.shape, batch_size, epochs)", (xa.shape, batch_size, int(epochs)))

        rng = np.random.default_rng(self.seed)
        history = History()
        self.history = history
        steps_per_epoch = -(-n // batch_size)
        full_batch = batch_size == n
        bar = None
        if self.progress and self.comm.Get_rank() == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=int(epochs) * steps_per_epoch, desc=f"train ({self.mode})", unit="step",
                       dynamic_ncols=True, leave=True)
        start = time.perf_counter()
        params = self.net._values
        try:
            for epoch in range(int(epochs)):
                order = np.arange(n) if (full_batch or not shuffle) else rng.permutation(n)
                loss_sum, correct_sum = 0.0, 0.0
                for b in range(steps_per_epoch):
                    idx = order[b * batch_size: (b + 1) * batch_size]
                    xb, yb = (xa, ya) if full_batch else (np.ascontiguousarray(xa[idx]), np.ascontiguousarray(ya[idx]))
                    token = ("full", id(xa)) if full_batch else ("batch", epoch, b)
                    first: list[float] = []

                    def closure(xb=xb, yb=yb, token=token, first=first):
                        loss, grad = self._evaluate_batch(xb, yb, token)
                        if not first:
                            first.append(self.last_accuracy)
                        return loss, grad

                    loss = self.optimizer.step(params, closure, self._dot)
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"the training loss became {loss} at epoch {epoch}, step {b}; "
                                                 "lower the learning rate")
                    history.step_loss.append(loss)
                    loss_sum += loss * xb.shape[0]
                    correct_sum += first[0] * xb.shape[0]
                    if bar is not None:
                        bar.update(1)
                        post = {"loss": f"{loss:.4f}", "acc": f"{first[0]:.3f}"}
                        if history.val_accuracy:
                            post["val_acc"] = f"{history.val_accuracy[-1]:.3f}"
                        if self.mode != "serial" and self.last_solve is not None:
                            post["res"] = f"{self.last_solve.residual_norms[-1]:.1e}"
                            post["adj"] = f"{self.last_solve.adjoint_residual_norms[-1]:.1e}"
                        bar.set_postfix(post, refresh=False)
                history.epoch.append(epoch + 1)
                history.loss.append(loss_sum / n)
                history.train_accuracy.append(correct_sum / n)
                if xv is not None:
                    vl, va = self.evaluate(xv, yv)
                else:
                    vl = va = math.nan
                history.val_loss.append(vl)
                history.val_accuracy.append(va)
                res = self.last_solve
                serial = self.mode == "serial" or res is None
                history.residual.append(math.nan if serial else float(res.residual_norms[-1]))
                history.adjoint_residual.append(math.nan if serial else float(res.adjoint_residual_norms[-1]))
                history.mgrit_iterations.append(0 if serial else int(res.iterations))
                history.wall_seconds.append(time.perf_counter() - start)
                if callback is not None:
                    callback(epoch + 1, history)
        finally:
            if bar is not None:
                bar.close()
        return history

    # -- plots ---------------------------------------------------------------------------------
    def plot(self, history: History, path: str | Path) -> None:
        """Training curves (loss; training and validation accuracy) to an image file (rank 0 writes)."""
        if self.comm.Get_rank() == 0:
            from .plotting import plot_history
            plot_history(history, path, title=f"{self.net!r}, {self.mode}")

    def plot_decision_regions(self, path: str | Path, x: Any, y: Any, resolution: int = 200) -> None:
        """Predicted class over the bounding box of 2-D data, with the points on top (collective)."""
        with _Agreed(self.comm, "plot_decision_regions() arguments"):
            if self.net.config.in_features != 2:
                raise ValueError(f"decision regions need 2-D inputs, the network has "
                                 f"in_features={self.net.config.in_features}")
            xa, ya = self._check_data(x, y)
        lo, hi = xa.min(axis=0), xa.max(axis=0)
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
        labels = self.predict(np.column_stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
        if self.comm.Get_rank() == 0:
            from .plotting import plot_regions
            plot_regions(gx, gy, labels, xa, ya, self.net.config.classes, path)
