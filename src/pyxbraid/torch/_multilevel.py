"""Multilevel training in depth of a PyTorch network around a LayerParallel: nested iteration and MG/Opt.

:func:`train_multilevel` is the public loop (``pyxbraid-train digits`` runs on
it); the MG/Opt V-cycle lives in :mod:`pyxbraid.torch._mgopt`.

A network is split into three parts: the ``opening`` before the
:class:`LayerParallel`, the layer-parallel blocks ``lp``, and the ``head``
after them. Every level of the hierarchy in depth is the same opening and
head (the same modules and parameters, shared by all levels) around the
level's ``lp`` (:class:`Hierarchy`).

A failure on one rank must end every rank, never leave the others waiting
in the next collective. LayerParallel's forward and backward see to that
themselves; everything else -- the replicated opening and head with their
backward passes, the loss, the optimiser step, the data, the callbacks and
what only rank 0 does (progress) -- runs inside ``_Agreed`` blocks, which
hold no collective. So a gradient evaluation cuts the graph at u0 and u(T)
(detached copies) and chains the three backward passes by hand: the same
gradients as one ``loss.backward()``.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from mpi4py import MPI

from ..errors import _Agreed
from ..nn.hierarchy import PROLONGATIONS, RESTRICTIONS, _check_choice, check_levels
from ..nn.trainer import History
from ._hierarchy import Hierarchy
from ._layer_parallel import LayerParallel

__all__ = ["STRATEGIES", "MultilevelResult", "train_multilevel"]

STRATEGIES = ("single", "nested", "mgopt")
"""The values of ``train_multilevel(strategy=...)``."""

# An optimiser's per-parameter state entries that are second moments (they scale with the squared
# gradient): prolonged times 1/4 and clipped at 0; every other tensor entry of the parameter's shape
# (first moments, momentum) is prolonged times 1/2 (see _prolong_state).
_SECOND_MOMENTS = ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "acc_delta")


class Level(torch.nn.Module):
    """One network of the hierarchy: the shared ``opening`` and ``head`` around a level's ``lp``."""

    def __init__(self, opening: torch.nn.Module, lp: LayerParallel, head: torch.nn.Module) -> None:
        super().__init__()
        self.opening, self.lp, self.head = opening, lp, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``head(lp(opening(x)))`` (collective, as :class:`LayerParallel`)."""
        return self.head(self.lp(self.opening(x)))


def split(model: Any) -> Level:
    """Return ``model`` as (opening, lp, head): a module with those attributes, or a Sequential holding one lp.

    Raises ``TypeError`` naming ``model`` for anything else.
    """
    if isinstance(model, Level):
        return model
    if isinstance(model, torch.nn.Sequential):
        children = list(model)
        where = [i for i, m in enumerate(children) if isinstance(m, LayerParallel)]
        if len(where) == 1:
            i = where[0]
            lp = children[i]
            assert isinstance(lp, LayerParallel)
            return Level(torch.nn.Sequential(*children[:i]), lp, torch.nn.Sequential(*children[i + 1 :]))
        raise TypeError(
            f"model: a torch.nn.Sequential must hold exactly one pyxbraid.torch.LayerParallel as a direct child, "
            f"it holds {len(where)}"
        )
    parts = [getattr(model, name, None) for name in ("opening", "lp", "head")]
    if (
        isinstance(model, torch.nn.Module)
        and isinstance(parts[0], torch.nn.Module)
        and isinstance(parts[1], LayerParallel)
        and isinstance(parts[2], torch.nn.Module)
    ):
        return Level(parts[0], parts[1], parts[2])
    raise TypeError(
        "model must be a torch.nn.Sequential holding one pyxbraid.torch.LayerParallel (opening layers, the "
        "LayerParallel, head layers) or a module with attributes opening, lp (a LayerParallel) and head "
        f"(such as pyxbraid.torch.ConvResNet), got {type(model).__name__}"
    )


@dataclass
class MultilevelResult:
    """What :func:`train_multilevel` did.

    Attributes
    ----------
    history : History
        The finest network's epochs (``loss``, ``train_accuracy``, ``val_*``,
        ``wall_seconds`` from the start of training, all levels included,
        ``step_loss``, the last MGRIT solves' residuals and iterations).
    level_histories : list of History
        Coarsest first, the fine network's last (``history``); ``"mgopt"``
        trains the coarse networks inside its cycles: ``[history]``.
    gradient_evaluations : list of int
        Gradient evaluations (forward and backward passes) per level, the
        finest first.
    depths : list of int
        The levels' depths, the finest first.
    hierarchy : Hierarchy or None
        The networks' hierarchy (None for ``"single"``).
    """

    history: History
    level_histories: list[History]
    gradient_evaluations: list[int]
    depths: list[int]
    hierarchy: Hierarchy | None = field(default=None, repr=False)

    @property
    def fine_gradient_evaluations(self) -> int:
        """The finest network's gradient evaluations."""
        return self.gradient_evaluations[0]

    @property
    def coarse_weighted(self) -> float:
        """The coarse levels' gradient evaluations weighted by their cost relative to a fine one (depth ratio)."""
        pairs = zip(self.gradient_evaluations[1:], self.depths[1:], strict=True)
        return float(sum(n * d / self.depths[0] for n, d in pairs))


# -- one level: its parameters, optimizer, gradient evaluations ----------------------------------------
class _Trainee:
    """A level being trained: its network, parameters (shared ones first), optimizer and counters."""

    def __init__(self, index: int, net: Level, loss_fn: Callable[..., torch.Tensor], comm: Any) -> None:
        self.index, self.net, self.loss_fn, self.comm = index, net, loss_fn, comm
        seen: set[int] = set()
        self.shared: list[torch.Tensor] = []
        for p in [*net.opening.parameters(), *net.head.parameters()]:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                self.shared.append(p)
        self.blocks: list[torch.Tensor] = [p for p in net.lp.parameters() if p.requires_grad]
        self.params = self.shared + self.blocks
        self.optimizer: torch.optim.Optimizer | None = None
        self.evaluations = 0

    def label(self, levels: int) -> str:
        return "" if levels == 1 else f" level {self.index} (depth {self.net.lp.depth})"

    def gradient(self, x: torch.Tensor, y: torch.Tensor, finite: bool = True) -> tuple[float, torch.Tensor]:
        """Put the gradient of ``loss_fn(net(x), y)`` into the parameters' ``.grad``; return it and the output.

        Collective. A loss that is not finite raises ``FloatingPointError`` unless ``finite`` is
        False (a line-search trial, which such a loss rejects). The graph is cut at u0 and u(T) so
        that the replicated parts run in agreed blocks, outside LayerParallel's collectives (see
        the module docstring).
        """
        net, comm = self.net, self.comm
        net.lp.reset()  # every evaluation from the initial guess: a function of the parameters (one-shot mode)
        with _Agreed(comm, "training step (opening)"):
            for p in self.params:
                p.grad = None
            u0 = net.opening(x)
            v0 = u0.detach().requires_grad_(True)
        uT = net.lp(v0)  # collective; a failure raises on every rank
        with _Agreed(comm, "training step (head, loss and their backward)"):
            vT = uT.detach().requires_grad_(True)
            out = net.head(vT)
            loss = self.loss_fn(out, y)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError(
                    f"loss_fn must return a scalar tensor (the batch's mean loss), got {type(loss).__name__} "
                    f"{tuple(getattr(loss, 'shape', ()))}"
                )
            value = float(loss.detach())
            if finite and not math.isfinite(value):
                raise FloatingPointError(f"the training loss became {value} (level {self.index}); lower the lr")
            if math.isfinite(value):
                loss.backward()
        self.evaluations += 1
        if not math.isfinite(value):  # (the same on every rank: the head ran on the gathered u(T) everywhere)
            return value, out.detach()  # no gradient: the adjoint solve would not take a non-finite seed
        g = vT.grad if vT.grad is not None else torch.zeros_like(vT)
        uT.backward(g)  # collective: the adjoint MGRIT solve
        with _Agreed(comm, "training step (opening's backward)"):
            if u0.requires_grad and v0.grad is not None:
                u0.backward(v0.grad)
        return value, out.detach()

    def step(self) -> None:
        """Take the optimizer's step with the gradients in ``.grad`` (agreed)."""
        assert self.optimizer is not None
        with _Agreed(self.comm, "optimizer step"):
            self.optimizer.step()

    def dot(self, a: Mapping[torch.Tensor, torch.Tensor], b: Mapping[torch.Tensor, torch.Tensor]) -> float:
        """Return ``<a, b>`` over the level's parameters, every rank's blocks counted (collective).

        Each tensor's products are summed by torch, the per-tensor sums with ``math.fsum``
        (correctly rounded): the value is the same on any rank count, bit for bit.
        """
        shared = [float((a[p].double() * b[p].double()).sum()) for p in self.shared]
        local = [float((a[p].double() * b[p].double()).sum()) for p in self.blocks]
        if self.comm.Get_size() > 1:
            local = [s for part in self.comm.allgather(local) for s in part]
        return math.fsum(shared + local)

    def values(self) -> dict[torch.Tensor, torch.Tensor]:
        """Return copies of the parameters' values."""
        return {p: p.detach().clone() for p in self.params}

    def assign(self, values: Mapping[torch.Tensor, torch.Tensor]) -> None:
        with torch.no_grad():
            for p, v in values.items():
                p.copy_(v)


def buffers(*modules: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return a snapshot of the modules' buffers (BatchNorm's running statistics): (buffer, copy) pairs."""
    return [(b, b.detach().clone()) for m in modules for b in m.buffers()]


def restore(snapshot: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put back the buffers of a :func:`buffers` snapshot."""
    with torch.no_grad():
        for b, saved in snapshot:
            b.copy_(saved)


# -- data, validation and the record of an epoch -----------------------------------------------------------
def _batches(data: Iterable[Any], comm: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``data``'s ``(x, y)`` batches, every rank alike (a rank whose data ends early raises everywhere)."""
    with _Agreed(comm, "data (iter(data))"):
        it = iter(data)
    index = 0
    while True:
        batch = None
        with _Agreed(comm, "data (the next batch)"):
            item = next(it, None)
            if item is not None:
                if not isinstance(item, (tuple, list)) or len(item) != 2:
                    raise TypeError(
                        f"data must yield (inputs, targets) pairs, batch {index} is {type(item).__name__}"
                        + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
                    )
                batch = (item[0], item[1])
        if comm.Get_size() > 1:
            more = comm.allgather(batch is not None)
            if any(more) and not all(more):
                ended = [r for r, m in enumerate(more) if not m]
                raise ValueError(
                    f"data gave the ranks different numbers of batches: on rank(s) {ended} it ended after "
                    f"{index} batches, on the others not; every rank must see the same batches"
                )
        if batch is None:
            if index == 0:
                raise ValueError("data yielded no batch (an epoch needs at least one)")
            return
        index += 1
        yield batch


def _correct(out: torch.Tensor, y: Any) -> float:
    """Correct predictions of classification logits ``(n, classes)`` against labels ``(n,)``; NaN otherwise."""
    if (
        isinstance(y, torch.Tensor)
        and out.dim() == 2
        and y.dim() == 1
        and not y.is_floating_point()
        and len(y) == len(out)
    ):
        return float((out.argmax(1) == y).sum())
    return math.nan


def evaluate(
    net: Level, loss_fn: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor, comm: Any, chunk: int = 512
) -> tuple[float, float, torch.Tensor]:
    """Return the mean loss, the accuracy (NaN unless classification) and the outputs (eval mode; collective).

    ``loss_fn`` is taken to return the mean over its batch; chunks are weighted by their size.
    """
    net.train(False)
    total, outputs = 0.0, []
    try:
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                with _Agreed(comm, "evaluation (opening)"):
                    u0 = net.opening(x[start : start + chunk])
                uT = net.lp(u0)  # collective
                with _Agreed(comm, "evaluation (head and loss)"):
                    out = net.head(uT)
                    labels = y[start : start + chunk]
                    total += float(loss_fn(out, labels)) * len(labels)
                    outputs.append(out)
    finally:
        net.train(True)
    out = torch.cat(outputs)
    return total / len(x), _correct(out, y) / len(x), out


class _Progress:
    """Rank 0's progress bar and epoch lines; every call is agreed (a failure raises on every rank)."""

    def __init__(self, comm: Any, progress: bool | str, total: int | None, desc: str) -> None:
        self.comm, self.bar = comm, None
        self.lines = progress in (True, "lines") and comm.Get_rank() == 0
        with _Agreed(comm, "progress bar"):
            if comm.Get_rank() == 0 and progress is True:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)

    def step(self, loss: float, history: History, lp: LayerParallel) -> None:
        with _Agreed(self.comm, "progress bar"):
            if self.bar is not None:
                post = {"loss": f"{loss:.4f}"}
                if history.val_accuracy and not math.isnan(history.val_accuracy[-1]):
                    post["val_acc"] = f"{history.val_accuracy[-1]:.3f}"
                fwd, bwd = lp.last_forward, lp.last_backward
                if fwd is not None and bwd is not None:  # MGRIT iterations, forward / backward
                    post["mgrit"] = f"{fwd.iterations}/{bwd.iterations}"
                self.bar.set_postfix(post, refresh=False)
                self.bar.update(1)

    def line(self, text: str) -> None:
        with _Agreed(self.comm, "progress output"):
            if self.bar is not None:
                self.bar.write(text)
            elif self.lines:
                print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class _Run:
    """What every level's epochs share: the data, validation, callback, progress and the clock."""

    loss_fn: Callable[..., torch.Tensor]
    data: Iterable[Any]
    validation: tuple[torch.Tensor, torch.Tensor] | None
    callback: Callable[[int, int, History], Any] | None
    progress: bool | str
    levels: int
    comm: Any
    start: float = field(default_factory=time.perf_counter)

    def steps(self) -> int | None:
        try:
            return len(self.data)  # type: ignore[arg-type]
        except TypeError:
            return None

    def end_epoch(self, t: _Trainee, history: History, epoch: int, sums: tuple[float, float, int]) -> bool:
        """Record an epoch of level ``t``; return True when the callback asks to stop (every rank alike)."""
        loss_sum, correct, count = sums
        vl, va = math.nan, math.nan
        if self.validation is not None:
            vl, va, _ = evaluate(t.net, self.loss_fn, *self.validation, self.comm)
        history.epoch.append(epoch + 1)
        history.loss.append(loss_sum / count)
        history.train_accuracy.append(correct / count)
        history.val_loss.append(vl)
        history.val_accuracy.append(va)
        history.wall_seconds.append(time.perf_counter() - self.start)
        fwd, bwd = t.net.lp.last_forward, t.net.lp.last_backward
        residual = fwd.residual_norms if fwd is not None else np.zeros(0)
        adjoint = bwd.adjoint_residual_norms if bwd is not None else np.zeros(0)
        history.residual.append(float(residual[-1]) if residual.size else math.nan)
        history.adjoint_residual.append(float(adjoint[-1]) if adjoint.size else math.nan)
        history.mgrit_iterations.append(int(bwd.iterations) if bwd is not None else 0)
        stop = False
        if self.callback is not None:
            with _Agreed(self.comm, "train_multilevel callback"):
                stop = self.callback(t.index, epoch + 1, history) is True
            if self.comm.Get_size() > 1:
                stop = bool(self.comm.allreduce(stop, op=MPI.LOR))
        return stop

    def line(self, bar: _Progress, t: _Trainee, history: History) -> None:
        label = t.label(self.levels).strip()
        va = history.val_accuracy[-1]
        bar.line(
            f"{label + ' ' if label else ''}epoch {history.epoch[-1]}: loss {history.loss[-1]:.4f}, training "
            f"accuracy {history.train_accuracy[-1]:.4f}"
            + ("" if math.isnan(va) else f", validation accuracy {va:.4f}")
            + f", {history.wall_seconds[-1]:.1f} s"
        )


def _fit(run: _Run, t: _Trainee, epochs: int) -> History:
    """Train level ``t`` alone with its optimizer for ``epochs`` epochs (or until the callback stops it)."""

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss, out = t.gradient(x, y)
        t.step()
        return loss, out

    return _epochs(run, t, epochs, f"train{t.label(run.levels)}", step)


def _epochs(
    run: _Run,
    t: _Trainee,
    epochs: int,
    label: str,
    step: Callable[[torch.Tensor, torch.Tensor], tuple[float, torch.Tensor]],
) -> History:
    """Run ``step(x, y) -> (loss, output)`` on every batch for ``epochs`` epochs; ``t``'s history of them.

    ``t`` is the level whose network the epochs are recorded and validated on
    (the fine one for MG/Opt); the callback may stop after any epoch.
    """
    history = History()
    steps = run.steps()
    bar = _Progress(run.comm, run.progress, None if steps is None else epochs * steps, label)
    try:
        for epoch in range(epochs):
            loss_sum, correct, count = 0.0, 0.0, 0
            for x, y in _batches(run.data, run.comm):
                loss, out = step(x, y)
                n = len(x)
                loss_sum, correct, count = loss_sum + loss * n, correct + _correct(out, y), count + n
                history.step_loss.append(loss)
                bar.step(loss, history, t.net.lp)
            stop = run.end_epoch(t, history, epoch, (loss_sum, correct, count))
            run.line(bar, t, history)
            if stop:
                break
    finally:
        bar.close()
    return history


# -- the strategies ---------------------------------------------------------------------------------------
def _run_nested(run: _Run, trainees: list[_Trainee], hierarchy: Hierarchy | None, plan: Any) -> list[History]:
    """Nested iteration: coarsest level first, each trained level prolonged into the next finer one."""
    epochs, coarse_epochs, factory, carry = plan
    levels = len(trainees)
    if hierarchy is not None:
        for level in range(levels - 1):
            hierarchy.restrict(level)
    histories: list[History] = []
    carried: dict[torch.Tensor, dict[str, Any]] = {}  # the optimizer's state, continued from level to level
    for level in range(levels - 1, -1, -1):
        t = trainees[level]
        n = epochs if level == 0 else coarse_epochs[levels - 1 - level]
        history = History()
        if n > 0:
            t.optimizer = _optimizer(factory, t)
            for p in t.params:
                if p in carried:
                    t.optimizer.state[p] = carried[p]
            history = _fit(run, t, n)
            carried = {p: t.optimizer.state[p] for p in t.params if p in t.optimizer.state} if carry else {}
        histories.append(history)
        if hierarchy is not None and level > 0:
            hierarchy.prolong(level - 1)
            carried = _prolong_state(hierarchy, level - 1, trainees[level], carried)
    return histories


def _run_mgopt(run: _Run, trainees: list[_Trainee], hierarchy: Hierarchy, plan: Any) -> list[History]:
    """MG/Opt: one V-cycle per batch (see :mod:`pyxbraid.torch._mgopt`)."""
    from ._mgopt import cycle

    epochs, factory, settings = plan
    for t in trainees:
        t.optimizer = _optimizer(factory, t)
    label = f"train MG/Opt, {len(trainees)} levels"
    return [_epochs(run, trainees[0], epochs, label, lambda x, y: cycle(trainees, hierarchy, settings, 0, x, y, None))]


def _optimizer(factory: Callable[..., Any], t: _Trainee) -> torch.optim.Optimizer:
    """Return ``factory(t.params)``, checked (agreed: a factory failing on one rank raises on every rank)."""
    with _Agreed(t.comm, "optimizer(params)"):
        return _checked_optimizer(factory(t.params))


def _checked_optimizer(opt: Any) -> torch.optim.Optimizer:
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(
            "optimizer must be a callable params -> torch.optim.Optimizer (e.g. functools.partial(torch.optim.Adam, "
            f"lr=1e-3)), it returned {type(opt).__name__}"
        )
    if isinstance(opt, torch.optim.LBFGS):
        raise TypeError(
            "optimizer: torch.optim.LBFGS is not supported (its line search takes dot products over this rank's "
            "blocks only, and needs a closure); use an element-wise optimiser such as Adam or SGD"
        )
    return opt


def _prolong_state(
    hierarchy: Hierarchy, level: int, coarse: _Trainee, carried: dict[torch.Tensor, dict[str, Any]]
) -> dict[torch.Tensor, dict[str, Any]]:
    """Return the optimizer state for level ``level`` continued from that of level ``level + 1`` (collective).

    The shared parameters' state (the same parameters on every level) is kept. The blocks'
    tensor entries of the parameter's shape are prolonged like the parameters: times 1/2 (a
    block's gradient scales with the step ``h``, halved by the prolongation; Adam's first moment,
    SGD's momentum), second moments (``exp_avg_sq`` and the like) times 1/4 and clipped at 0
    (linear extrapolation at the ends); other entries (the step count) are copied from any
    coarse block's. Nothing to carry on any rank (every rank holds the shared parameters) gives
    an empty state.
    """
    comm = hierarchy.comm
    anything = bool(carried) if comm.Get_size() == 1 else bool(comm.allreduce(bool(carried), op=MPI.LOR))
    if not anything:  # (decided alike on every rank: what follows is collective)
        return {}
    blocks = {id(p) for p in coarse.blocks}
    out = {p: state for p, state in carried.items() if id(p) not in blocks}
    coarse_states = [(p, s) for p, s in carried.items() if id(p) in blocks]
    moments = sorted({k for p, s in coarse_states for k, v in s.items() if _is_moment(v, p)})
    # every rank must prolong the same entries (collective), also one holding no coarse block
    if comm.Get_size() > 1:
        moments = sorted(set().union(*comm.allgather(moments)))
    prolonged = {k: hierarchy.prolong_tensors(level, {p: s[k] for p, s in coarse_states if k in s}) for k in moments}
    # the other entries (the step count) are the same for every parameter: any one's
    other = {k: v for k, v in next(iter(carried.values()), {}).items() if k not in moments}
    for p in hierarchy.lps[level].parameters():
        state: dict[str, Any] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in other.items()}
        for k in moments:
            value = prolonged[k][p]
            state[k] = value.mul_(0.25).clamp_(min=0.0) if k in _SECOND_MOMENTS else value.mul_(0.5)
        out[p] = state
    return out


def _is_moment(value: Any, p: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == p.shape and value.is_floating_point()


# -- the public function ----------------------------------------------------------------------------------
def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _coarse_epochs(value: Any, epochs: int, levels: int) -> list[int]:
    if value is None:
        return [epochs] * (levels - 1)
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return [_int("coarse_epochs", value, 0)] * (levels - 1)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != levels - 1:
        raise ValueError(
            f"coarse_epochs must be an integer >= 0 or a sequence of levels - 1 = {levels - 1} of them (the coarse "
            f"levels, coarsest first), got {value!r}"
        )
    return [_int("coarse_epochs[]", e, 0) for e in value]


def _check(kwargs: dict[str, Any], lp: LayerParallel) -> dict[str, Any]:
    """Return the checked arguments of :func:`train_multilevel` (ValueError / TypeError naming the argument)."""
    k = dict(kwargs)
    strategy = k["strategy"]
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
    levels = k["levels"]
    if levels is None:
        levels = {"single": 1, "nested": 3, "mgopt": 2}[strategy]
    if strategy == "single" and levels != 1:
        raise ValueError(f"levels must be 1 (or None) with strategy='single', got {levels!r}")
    if strategy == "mgopt" and not (
        isinstance(levels, (numbers.Integral, np.integer)) and not isinstance(levels, bool) and int(levels) >= 2
    ):
        raise ValueError(
            f"levels must be an integer >= 2 with strategy='mgopt' (a V-cycle needs a coarse level), got {levels!r}"
        )
    k["levels"] = check_levels(levels, lp.depth, lp.comm.Get_size())
    k["epochs"] = _int("epochs", k["epochs"], 1)
    if k["coarse_epochs"] is not None and strategy != "nested":
        raise ValueError(
            f"coarse_epochs is for strategy='nested' (got {k['coarse_epochs']!r} with strategy={strategy!r}; MG/Opt "
            "trains the coarse levels inside its cycles)"
        )
    k["coarse_epochs"] = _coarse_epochs(k["coarse_epochs"], k["epochs"], k["levels"])
    for name, minimum in (("pre", 0), ("post", 0), ("coarse_steps", 1), ("max_backtracks", 0)):
        k[name] = _int(name, k[name], minimum)
    c1 = k["c1"]
    if isinstance(c1, (bool, np.bool_)) or not isinstance(c1, numbers.Real) or not 0.0 < float(c1) < 1.0:
        raise ValueError(f"c1 must be a number in (0, 1), got {c1!r}")
    k["restriction"] = _check_choice("restriction", k["restriction"], RESTRICTIONS)
    k["prolongation"] = _check_choice("prolongation", k["prolongation"], PROLONGATIONS)
    for name in ("loss_fn", "optimizer"):
        if not callable(k[name]):
            raise TypeError(f"{name} must be callable, got {type(k[name]).__name__}")
    if k["callback"] is not None and not callable(k["callback"]):
        raise TypeError(f"callback must be callable or None, got {type(k['callback']).__name__}")
    if isinstance(k["data"], Iterator) or not isinstance(k["data"], Iterable):
        raise TypeError(
            "data must be re-iterable: every epoch iterates it again (a list of (inputs, targets) batches or a "
            f"torch DataLoader), got {type(k['data']).__name__}"
        )
    validation = k["validation"]
    if validation is not None and not (
        isinstance(validation, (tuple, list))
        and len(validation) == 2
        and all(isinstance(v, torch.Tensor) for v in validation)
    ):
        raise TypeError(
            f"validation must be None or a pair of tensors (inputs, targets), got {type(validation).__name__}"
        )
    for name in ("carry_optimizer_state", "reset_coarse_optimizer"):
        if not isinstance(k[name], (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {k[name]!r}")
    if k["progress"] not in (True, False, "lines"):
        raise ValueError(f"progress must be True, False or 'lines', got {k['progress']!r}")
    return k


def train_multilevel(
    model: torch.nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: Iterable[Any],
    optimizer: Callable[..., torch.optim.Optimizer],
    *,
    strategy: str = "nested",
    levels: int | None = None,
    epochs: int = 1,
    coarse_epochs: int | Sequence[int] | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    callback: Callable[[int, int, History], Any] | None = None,
    progress: bool | str = False,
    restriction: str = "average",
    prolongation: str = "linear",
    carry_optimizer_state: bool = True,
    pre: int = 1,
    post: int = 1,
    coarse_steps: int = 4,
    max_backtracks: int = 4,
    c1: float = 1e-4,
    reset_coarse_optimizer: bool = False,
) -> MultilevelResult:
    r"""Train a network with a :class:`LayerParallel` over a hierarchy of networks in depth (collective).

    Level ``l`` of the hierarchy is the network with the LayerParallel of depth
    ``N / 2**l`` (step ``2**l h``, :class:`Hierarchy`) between the same opening
    and head (the same modules: their parameters are shared by all levels).
    Call it on every rank with the same arguments and data; an error on one
    rank (in a callback, the loss, the data, an optimizer) raises on every rank.

    Parameters
    ----------
    model : torch.nn.Module
        A ``torch.nn.Sequential`` holding one LayerParallel (the layers before
        it are the opening, those after it the head), or a module with
        attributes ``opening``, ``lp`` (the LayerParallel) and ``head``, such as
        :class:`ConvResNet`. Trained in place.
    loss_fn : callable
        ``loss_fn(outputs, targets)`` -> the batch's mean loss (a scalar
        tensor), e.g. ``torch.nn.functional.cross_entropy``.
    data : iterable
        Re-iterable (a list, a ``torch.utils.data.DataLoader`` with a seeded
        generator): every epoch of every level iterates it again and trains on
        its ``(inputs, targets)`` batches. Every rank must see the same batches.
    optimizer : callable
        ``optimizer(params)`` -> a ``torch.optim.Optimizer`` over ``params``,
        e.g. ``functools.partial(torch.optim.Adam, lr=1e-3)``; each level gets
        its own. Element-wise optimisers only (Adam, SGD, ...; not LBFGS).
    strategy : {"nested", "mgopt", "single"}, default "nested"
        ``"single"``: the network alone. ``"nested"`` (nested / cascadic
        iteration): the coarsest network starts from the restriction of the
        network's initial parameters and trains for its ``coarse_epochs``, is
        prolonged into the next finer one, which trains, and so on down to the
        network itself, trained for ``epochs``. ``"mgopt"`` (Nash's MG/Opt, see
        Notes): one V-cycle over the levels per batch, ``epochs`` passes.
    levels : int, optional
        Networks in the hierarchy (default 3 for nested, 2 for mgopt, 1 for
        single); the depth must be divisible by ``2**(levels - 1)``.
    epochs : int, default 1
        Epochs (passes over ``data``) of the finest network.
    coarse_epochs : int or sequence of int, optional
        ``"nested"``: epochs of each coarse level, one count for all or one per
        level, coarsest first (default: ``epochs``).
    validation : (Tensor, Tensor), optional
        Inputs and targets evaluated (eval mode, no gradient) after every epoch.
    callback : callable, optional
        ``callback(level, epoch, history)`` after every epoch of every level
        (``level`` 0 is the finest network; ``history`` that level's record so
        far). Returning ``True`` ends that level's training (on the finest:
        all training), on every rank.
    progress : bool or "lines", default False
        Rank 0 shows a progress bar and a line per epoch (``"lines"``: the
        lines only).
    restriction, prolongation : str
        The hierarchy's transfers (:class:`Hierarchy`): ``"average"`` /
        ``"inject"``, ``"linear"`` / ``"constant"``.
    carry_optimizer_state : bool, default True
        ``"nested"``: each level's optimizer continues the coarser one's
        state, its blocks' moments prolonged (first moments times 1/2, second
        moments times 1/4: a block's gradient scales with the step ``h``).
    pre, post, coarse_steps, max_backtracks, c1
        ``"mgopt"``: optimizer steps before and after the coarse correction on
        every level but the coarsest, optimizer steps on the coarsest level per
        cycle, step halvings of the line search at most, and its Armijo
        constant.
    reset_coarse_optimizer : bool, default False
        ``"mgopt"``: start the coarsest level's optimizer afresh every cycle
        (as :class:`pyxbraid.nn.MGOpt` does) instead of continuing its state.

    Returns
    -------
    MultilevelResult
        The finest network's ``history``, every level's, the gradient
        evaluations per level and the hierarchy.

    Notes
    -----
    *MG/Opt.* On level ``l`` the objective is ``F_l(x) = f_l(x) - <v_l, x>``
    (``f_l``: the level's loss on the batch; ``v_0 = 0``), ``x`` the level's
    parameters (shared ones and blocks). A cycle takes ``pre`` optimizer steps
    on ``F_l``, restricts the blocks (``x_c = R x``; the shared parameters are
    the same), sets ``v_{l+1} = grad f_{l+1}(x_c) - P^T grad F_l(x)`` with
    ``P^T`` the transpose of the blocks' prolongation (the identity on shared
    parameters), so that the coarse objective is first-order coherent -- its
    gradient at ``x_c`` is ``P^T grad F_l(x)`` -- runs a cycle on level
    ``l + 1`` (on the coarsest: ``coarse_steps`` optimizer steps), prolongs
    the correction ``e = P (x_c' - x_c)``, takes the largest ``alpha`` in
    ``1, 1/2, ...`` (at most ``max_backtracks`` halvings) with
    ``F_l(x + alpha e) <= F_l(x) + c1 alpha <grad F_l(x), e>`` (Armijo; no
    correction when ``e`` is no descent direction or no trial is accepted),
    then ``post`` optimizer steps. Dot products over the distributed blocks
    are correctly rounded sums, so every decision is the same on any rank
    count. Each level keeps its optimizer's state from cycle to cycle, the
    coarsest too (unlike :class:`pyxbraid.nn.MGOpt`, which starts it afresh:
    a fresh Adam's first steps move every parameter by about ``lr`` whatever
    its gradient; measured on digits, depth 32, seed 0, validation accuracy
    after 1, 2, 3 epochs: 80, 84, 93% afresh, 91, 96, 96% continued).
    Every gradient evaluation counts in ``gradient_evaluations``
    (smoothing steps, the point after pre-smoothing, the coarse gradient at
    ``x_c``, each line-search trial; a step at an evaluated point reuses it).

    *Running statistics* (BatchNorm) are those of the level's own training
    forward passes: restriction sets the coarse blocks' from the fine ones
    (:meth:`Hierarchy.restrict`); MG/Opt's coarse cycle leaves the finer
    level's (the shared modules' included) as they were, the correction acts
    on parameters only, and the forward passes of rejected line-search trials
    are undone. ``"nested"`` prolongs them with the blocks (piecewise constant).

    Examples
    --------
    >>> import functools, torch
    >>> from pyxbraid.torch import LayerParallel, train_multilevel
    >>> def block(k):
    ...     torch.manual_seed(k)
    ...     return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()).double()
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 4).double(), LayerParallel(block, depth=8, mode="serial"),
    ...                             torch.nn.Linear(4, 3).double())
    >>> x = torch.randn(64, 2, dtype=torch.float64)
    >>> y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    >>> batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    >>> result = train_multilevel(model, torch.nn.functional.cross_entropy, batches,
    ...                           functools.partial(torch.optim.Adam, lr=0.01), strategy="mgopt", epochs=5)
    >>> result.depths, result.history.epoch
    ([8, 4], [1, 2, 3, 4, 5])
    >>> result.history.loss[-1] < result.history.loss[0]
    True
    """
    net = split(model)
    lp = net.lp
    comm = lp.comm
    with _Agreed(comm, "train_multilevel arguments"):
        args = _check(dict(locals()), lp)
    levels = args["levels"]
    hierarchy = Hierarchy(lp, levels, args["restriction"], args["prolongation"]) if levels > 1 else None
    nets = [net] + ([Level(net.opening, m, net.head) for m in hierarchy.lps[1:]] if hierarchy is not None else [])
    trainees = [_Trainee(i, m, loss_fn, comm) for i, m in enumerate(nets)]
    run = _Run(loss_fn, data, validation, callback, args["progress"], levels, comm)
    if args["strategy"] == "mgopt":
        from ._mgopt import Settings

        assert hierarchy is not None
        settings = Settings(
            args["pre"],
            args["post"],
            args["coarse_steps"],
            args["max_backtracks"],
            float(c1),
            bool(reset_coarse_optimizer),
        )
        histories = _run_mgopt(run, trainees, hierarchy, (args["epochs"], optimizer, settings))
    else:
        plan = (args["epochs"], args["coarse_epochs"], optimizer, bool(carry_optimizer_state))
        histories = _run_nested(run, trainees, hierarchy, plan)
    return MultilevelResult(
        history=histories[-1],
        level_histories=histories,
        gradient_evaluations=[t.evaluations for t in trainees],
        depths=[t.net.lp.depth for t in trainees],
        hierarchy=hierarchy,
    )
