"""``pyxbraid-train digits``: a convolutional ResNet trained layer-parallel on scikit-learn's 8x8 digits.

The training pieces of the command line (:mod:`pyxbraid.train` parses and
checks the arguments, then calls :func:`run`); ``examples/digits_torch.py`` is
a thin script over the command line. Every rank runs the same loop on the same
data: the opening and the head are replicated, :class:`ConvResNet`'s blocks
are distributed.

A failure on one rank must end every rank, never leave the others waiting in
the next collective. LayerParallel's forward and backward see to that
themselves; everything else -- the replicated opening and head with their
backward passes and the optimiser step, and what only rank 0 does (progress
bar, printing, plots, files) -- runs inside ``_Agreed`` blocks, which hold no
collective. So a training step cuts the graph at u0 and u(T) (detached copies)
and chains the three backward passes by hand: the same gradients as one
``loss.backward()``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import datasets
from ..errors import _Agreed
from ..nn._files import atomic_write
from ..nn.trainer import History
from ._hierarchy import Hierarchy
from ._layer_parallel import LayerParallel
from ._models import ConvResNet

# The command line's mode names (those of the peaks network) -> LayerParallel's.
MODES = {"parallel": "exact", "one-shot": "one_shot", "serial": "serial"}


@dataclass
class Settings:
    """What the command line chose (see ``pyxbraid-train digits --help``)."""

    mode: str
    dtype: str
    epochs: int
    batch_size: int | None  # None: the whole training set
    lr: float
    width: int
    depth: int
    T: float
    max_levels: int
    cfactor: int
    max_iter: int | None
    coarse: str
    seed: int
    threads: int
    strategy: str = "single"  # "single" or "nested" (multilevel training in depth)
    levels: int = 1  # networks in the hierarchy of "nested": depth, depth / 2, ...
    # epochs of each coarse network (None: epochs), or one count per coarse network, coarsest first
    coarse_epochs: int | list[int] | None = None
    target_accuracy: float | None = None  # stop the fine network's training at this validation accuracy


def build(settings: Settings, comm: Any, image_shape: tuple[int, ...], classes: int) -> ConvResNet:
    """Return the network of these settings (collective)."""
    options: dict[str, Any] = dict(mode=MODES[settings.mode])
    if settings.mode != "serial":
        options.update(max_levels=settings.max_levels, cfactor=settings.cfactor, coarse=settings.coarse)
        if settings.max_iter is not None:
            options["max_iter"] = settings.max_iter
    return ConvResNet(
        image_shape,
        classes,
        width=settings.width,
        depth=settings.depth,
        T=settings.T,
        comm=comm,
        seed=settings.seed,
        dtype=getattr(torch, settings.dtype),
        **options,
    )


class Level(torch.nn.Module):
    """A coarse network of the hierarchy: the fine network's opening and head (shared) around a coarser ``lp``."""

    def __init__(self, fine: ConvResNet, lp: LayerParallel) -> None:
        super().__init__()
        self.opening, self.lp, self.head = fine.opening, lp, fine.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of images ``x`` (collective)."""
        return self.head(self.lp(self.opening(x)))


def train_step(
    net: ConvResNet | Level, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, comm: Any
) -> tuple[float, torch.Tensor]:
    """Take one optimisation step on the batch ``(x, y)``; return the loss and the logits (collective).

    The graph is cut at u0 and u(T) so that the replicated parts run in
    agreed blocks, outside LayerParallel's collectives (see the module
    docstring); the gradients are those of ``loss.backward()``.
    """
    net.lp.reset()  # a new batch: no warm restart from the last one (one-shot mode)
    with _Agreed(comm, "training step (opening)"):
        optimizer.zero_grad()
        u0 = net.opening(x)
        v0 = u0.detach().requires_grad_(True)
    uT = net.lp(v0)  # collective; a failure raises on every rank
    with _Agreed(comm, "training step (head, loss and their backward)"):
        vT = uT.detach().requires_grad_(True)
        logits = net.head(vT)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
    uT.backward(vT.grad)  # collective: the adjoint MGRIT solve
    with _Agreed(comm, "training step (opening's backward, optimizer step)"):
        u0.backward(v0.grad)
        optimizer.step()
    return loss.item(), logits.detach()


def evaluate(
    net: ConvResNet | Level, x: torch.Tensor, y: torch.Tensor, comm: Any, chunk: int = 512
) -> tuple[float, float, np.ndarray]:
    """Return the mean cross-entropy, the accuracy and the predictions (exact forward, eval mode; collective)."""
    net.train(False)
    total, predictions = 0.0, []
    try:
        with torch.no_grad():
            for start in range(0, len(x), chunk):
                with _Agreed(comm, "evaluation (opening)"):
                    u0 = net.opening(x[start : start + chunk])
                uT = net.lp(u0)  # collective
                with _Agreed(comm, "evaluation (head)"):
                    logits = net.head(uT)
                    labels = y[start : start + chunk]
                    total += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
                    predictions.append(logits.argmax(1))
    finally:
        net.train(True)
    pred = torch.cat(predictions)
    return total / len(x), float((pred == y).double().mean()), pred.numpy()


def plot_predictions(
    images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, path: Path, count: int = 48
) -> None:
    """Write validation images with their predicted labels (mistakes first, in red) to ``path``, atomically."""
    from ..nn.plotting import _figure, _save

    wrong = np.flatnonzero(predicted != labels)
    shown = np.concatenate([wrong, np.flatnonzero(predicted == labels)])[:count]
    cols = 12
    rows = max(1, math.ceil(len(shown) / cols))
    fig = _figure(cols * 0.9, rows * 1.05)
    for i, idx in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[idx, 0], cmap="gray_r", vmin=0, vmax=1)
        ok = predicted[idx] == labels[idx]
        title = f"{predicted[idx]}" + ("" if ok else f" ({labels[idx]})")
        ax.set_title(title, fontsize=8, color="black" if ok else "red")
        ax.set_axis_off()
    fig.suptitle(
        f"validation digits: predicted label (true label in red where wrong); {len(wrong)} mistakes of {len(labels)}",
        fontsize=9,
    )
    _save(fig, path)


class _Progress:
    """Rank 0's progress bar or epoch lines; every call is agreed (a failure raises on every rank)."""

    def __init__(self, comm: Any, show_bar: bool, total: int, desc: str) -> None:
        self.comm, self.bar = comm, None
        self.rank = comm.Get_rank()
        with _Agreed(comm, "progress bar"):
            if self.rank == 0 and show_bar:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)

    def step(self, loss: float, history: History, net: ConvResNet | Level) -> None:
        with _Agreed(self.comm, "progress bar"):
            if self.bar is not None:
                post = {"loss": f"{loss:.4f}"}
                if history.val_accuracy:
                    post["val_acc"] = f"{history.val_accuracy[-1]:.3f}"
                fwd, bwd = net.lp.last_forward, net.lp.last_backward
                if fwd is not None and bwd is not None:  # MGRIT iterations, forward / backward
                    post["mgrit"] = f"{fwd.iterations}/{bwd.iterations}"
                self.bar.set_postfix(post, refresh=False)
                self.bar.update(1)

    def line(self, text: str) -> None:
        with _Agreed(self.comm, "progress output"):
            if self.bar is not None:
                self.bar.write(text)
            elif self.rank == 0:
                print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(
    net: ConvResNet | Level,
    optimizer: torch.optim.Optimizer,
    settings: Settings,
    data: datasets.ImageDataset,
    comm: Any,
    progress: bool,
    *,
    epochs: int | None = None,
    target: float | None = None,
    start: float | None = None,
    label: str = "",
) -> History:
    """Train with Adam on shuffled mini-batches (the same order on every rank); validate after each epoch.

    ``epochs`` (default ``settings.epochs``) at most; with ``target``, stop after the first
    epoch whose validation accuracy is ``>= target``. ``wall_seconds`` count from ``start``
    (``time.perf_counter()``; default: now); ``label`` prefixes the epoch lines.
    """
    epochs = settings.epochs if epochs is None else epochs
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_val, y_val = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
    batch = settings.batch_size or len(x_train)
    steps = math.ceil(len(x_train) / batch)
    history = History()
    rng = np.random.default_rng(settings.seed)
    bar = _Progress(comm, progress, epochs * steps, f"digits ({settings.mode}){label}")
    start = time.perf_counter() if start is None else start
    try:
        for epoch in range(epochs):
            order = torch.from_numpy(rng.permutation(len(x_train)))
            loss_sum, correct = 0.0, 0
            for b in range(steps):
                idx = order[b * batch : (b + 1) * batch]
                loss, logits = train_step(net, optimizer, x_train[idx], y_train[idx], comm)
                loss_sum += loss * len(idx)
                correct += int((logits.argmax(1) == y_train[idx]).sum())
                history.step_loss.append(loss)
                bar.step(loss, history, net)
            val_loss, val_acc, _ = evaluate(net, x_val, y_val, comm)
            _record(history, net, epoch, loss_sum / len(x_train), correct / len(x_train), val_loss, val_acc, start)
            bar.line(
                f"{label.strip() + ' ' if label else ''}epoch {epoch + 1}: loss {history.loss[-1]:.4f}, training "
                f"accuracy {history.train_accuracy[-1]:.4f}, validation accuracy {val_acc:.4f}, "
                f"{history.wall_seconds[-1]:.1f} s"
            )
            if target is not None and val_acc >= target:  # the same value on every rank (an allgathered forward)
                break
    finally:
        bar.close()
    return history


def _record(
    history: History,
    net: ConvResNet | Level,
    epoch: int,
    loss: float,
    accuracy: float,
    val_loss: float,
    val_acc: float,
    start: float,
) -> None:
    """Append one epoch's figures (and the last MGRIT solves') to ``history``."""
    history.epoch.append(epoch + 1)
    history.loss.append(loss)
    history.train_accuracy.append(accuracy)
    history.val_loss.append(val_loss)
    history.val_accuracy.append(val_acc)
    history.wall_seconds.append(time.perf_counter() - start)
    fwd, bwd = net.lp.last_forward, net.lp.last_backward
    history.residual.append(float(fwd.residual_norms[-1]) if fwd is not None and fwd.residual_norms.size else math.nan)
    history.adjoint_residual.append(
        float(bwd.adjoint_residual_norms[-1]) if bwd is not None and bwd.adjoint_residual_norms.size else math.nan
    )
    history.mgrit_iterations.append(int(bwd.iterations) if bwd is not None else 0)


@dataclass
class Outcome:
    """What :func:`train` did: the fine network's history, every level's, the work, and the target."""

    history: History
    level_histories: list[History]  # coarsest first; the fine network's last
    evaluations: list[int]  # gradient evaluations (training steps) per level, fine first
    depths: list[int]  # fine first
    target_epoch: int | None  # the fine epoch that reached the target accuracy
    target_seconds: float | None

    @property
    def coarse_weighted(self) -> float:
        """The coarse levels' gradient evaluations weighted by their cost relative to the fine one's (depth ratio)."""
        return float(sum(n * d / self.depths[0] for n, d in zip(self.evaluations[1:], self.depths[1:], strict=True)))


def train(net: ConvResNet, settings: Settings, data: datasets.ImageDataset, comm: Any, progress: bool) -> Outcome:
    """Train the network alone (``single``) or by nested iteration over a hierarchy in depth (collective).

    ``nested``: the coarse networks (depth ``depth / 2**l``, the fine network's opening and
    head shared) are built by :class:`~pyxbraid.torch.Hierarchy`; the coarsest starts from
    the restriction of the fine network's initial blocks, is trained for ``coarse_epochs``
    epochs (one count for every coarse network, or a list, coarsest first), prolonged into the
    next finer one, and so on down to the fine network, trained for ``epochs`` (or until
    ``target_accuracy``). Each level's Adam continues the coarser one's (see
    ``_prolong_adam``).
    """
    levels: list[ConvResNet | Level] = [net]
    hierarchy = None
    if settings.strategy == "nested" and settings.levels > 1:
        hierarchy = Hierarchy(net.lp, settings.levels)
        for level in range(settings.levels - 1):
            hierarchy.restrict(level)
        levels += [Level(net, lp) for lp in hierarchy.lps[1:]]
    start = time.perf_counter()
    histories: list[History] = []
    carried: dict[torch.Tensor, dict[str, Any]] = {}  # Adam's state, continued from level to level
    for level in range(len(levels) - 1, -1, -1):
        m = levels[level]
        fine = level == 0
        epochs = settings.epochs if fine else _coarse_epochs(settings)[settings.levels - 1 - level]
        label = "" if len(levels) == 1 else f" level {level} (depth {m.lp.depth})"
        history = History()
        if epochs > 0:
            optimizer = torch.optim.Adam(m.parameters(), lr=settings.lr)  # (its first use imports for about 1 s)
            for p in m.parameters():
                if p in carried:
                    optimizer.state[p] = carried[p]
            history = fit(
                m,
                optimizer,
                settings,
                data,
                comm,
                progress,
                epochs=epochs,
                target=settings.target_accuracy if fine else None,
                start=start,
                label=label,
            )
            carried = {p: optimizer.state[p] for p in m.parameters() if p in optimizer.state}
        histories.append(history)
        if hierarchy is not None and not fine:
            hierarchy.prolong(level - 1)
            carried = _prolong_adam(hierarchy, level - 1, carried)
    fine_history = histories[-1]
    reached = [
        i
        for i, a in enumerate(fine_history.val_accuracy)
        if settings.target_accuracy is not None and a >= settings.target_accuracy
    ]
    return Outcome(
        history=fine_history,
        level_histories=histories,
        evaluations=[len(h.step_loss) for h in reversed(histories)],
        depths=[m.lp.depth for m in levels],
        target_epoch=reached[0] + 1 if reached else None,
        target_seconds=fine_history.wall_seconds[reached[0]] if reached else None,
    )


def _prolong_adam(
    hierarchy: Hierarchy, level: int, carried: dict[torch.Tensor, dict[str, Any]]
) -> dict[torch.Tensor, dict[str, Any]]:
    """Return Adam's state for level ``level`` continued from that of level ``level + 1`` (collective).

    The opening's and head's state (the same parameters on every level) is kept; the blocks'
    moments are prolonged like the blocks' parameters, the first ones times 1/2 and the second
    ones times 1/4 (a block's gradient scales with the step ``h``, halved by the prolongation),
    the second ones clipped at 0 (linear extrapolation at the ends); the step count is kept.
    A fresh Adam's first steps would move every parameter by about ``lr`` (bias-corrected
    ``m / sqrt(v)`` is then the gradient's sign), whatever the prolonged start; measured on
    digits, the difference in accuracy was within the noise (benchmarks/README.md).
    """
    if not carried:  # no level trained yet (the same on every rank: the opening is everywhere)
        return carried
    coarse = {id(p) for p in hierarchy.lps[level + 1].parameters()}
    out = {p: state for p, state in carried.items() if id(p) not in coarse}
    step = next(iter(out.values()))["step"]
    blocks = {p: state for p, state in carried.items() if id(p) in coarse}
    m = hierarchy.prolong_tensors(level, {p: state["exp_avg"] for p, state in blocks.items()})
    v = hierarchy.prolong_tensors(level, {p: state["exp_avg_sq"] for p, state in blocks.items()})
    for p in m:
        out[p] = {"step": step.clone(), "exp_avg": m[p].mul_(0.5), "exp_avg_sq": v[p].mul_(0.25).clamp_(min=0.0)}
    return out


def _coarse_epochs(settings: Settings) -> list[int]:
    """Return the epochs of the coarse networks, coarsest first."""
    epochs = settings.epochs if settings.coarse_epochs is None else settings.coarse_epochs
    if isinstance(epochs, int):
        return [epochs] * (settings.levels - 1)
    if len(epochs) != settings.levels - 1:
        raise ValueError(
            f"coarse_epochs must have levels - 1 = {settings.levels - 1} entries (coarsest first), got {epochs!r}"
        )
    return list(epochs)


_STRATEGY_FIELDS = ("batch_size", "strategy", "levels", "coarse_epochs")


def _strategy_settings(settings: Settings) -> dict[str, Any]:
    """Return the strategy's name and settings, as the peaks command line writes them."""
    if settings.strategy == "single":
        return {"strategy": "single", "levels": 1}
    return {
        "strategy": settings.strategy,
        "levels": settings.levels,
        "epochs": None if settings.coarse_epochs is None else _coarse_epochs(settings),
        "tol": None,
        "restriction": "average",
        "prolongation": "linear",
    }


def run(comm: Any, settings: Settings, out: Path, metrics_path: str | None, plots: bool, progress: bool) -> int:
    """Train and write the outputs; the outputs were checked by the caller (collective)."""
    from ..train import _write_metrics

    rank, size = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(settings.threads)
    dtype = np.float32 if settings.dtype == "float32" else np.float64
    data = datasets.digits(seed=settings.seed, dtype=dtype)
    net = build(settings, comm, data.image_shape, data.classes)
    parameters = net.num_parameters()
    with _Agreed(comm, "output"):
        if rank == 0:
            print(
                f"pyxbraid-train: digits on {size} rank(s), mode {settings.mode}; conv ResNet width "
                f"{settings.width}, {settings.depth} blocks, T={settings.T:g}, {settings.dtype}, {parameters} "
                f"parameters; Adam lr {settings.lr:g}, {settings.epochs} epochs, batch "
                f"{settings.batch_size or 'full'} ({len(data.x_train)} training / {len(data.x_val)} validation images)",
                flush=True,
            )
    start = time.perf_counter()
    outcome = train(net, settings, data, comm, progress)
    history = outcome.history
    wall = time.perf_counter() - start
    train_loss, train_acc, _ = evaluate(net, torch.from_numpy(data.x_train), torch.from_numpy(data.y_train), comm)
    val_loss, val_acc, predicted = evaluate(net, torch.from_numpy(data.x_val), torch.from_numpy(data.y_val), comm)

    state = net.state_dict()  # collective (every rank's blocks gathered)
    written = [out / "model.pt"]
    with _Agreed(comm, "model file"):
        if rank == 0:
            atomic_write(out / "model.pt", lambda fh: torch.save(state, fh))
    if plots:
        with _Agreed(comm, "plots"):
            if rank == 0:
                from ..nn.plotting import plot_history

                title = (
                    f"digits, conv ResNet ({settings.depth} blocks, width {settings.width}, {settings.dtype}), "
                    f"{settings.mode} on {size} rank(s)"
                )
                plot_history(history, out / "training.png", title=title)
                plot_predictions(data.x_val, data.y_val, predicted, out / "predictions.png")
        written += [out / "training.png", out / "predictions.png"]
    if metrics_path:
        layer_parallel = None
        if settings.mode != "serial":
            layer_parallel = dict(
                mode=MODES[settings.mode],
                max_levels=settings.max_levels,
                cfactor=settings.cfactor,
                max_iter=settings.max_iter,
                coarse=settings.coarse,
            )
        metrics = dict(
            training_accuracy=train_acc,
            validation_accuracy=val_acc,
            training_loss=train_loss,
            validation_loss=val_loss,
            wall_seconds=wall,
            reached_target=outcome.target_epoch is not None,
            epochs_to_target=outcome.target_epoch,
            wall_seconds_to_target=outcome.target_seconds,
            fine_gradient_evaluations=outcome.evaluations[0],
            coarse_gradient_evaluations_weighted=outcome.coarse_weighted,
            gradient_evaluations_per_level=outcome.evaluations,
            level_histories=[h.as_dict() for h in outcome.level_histories],
            ranks=size,
            settings=dict(
                dataset="digits",
                **{k: v for k, v in vars(settings).items() if k not in _STRATEGY_FIELDS},
                batch_size=settings.batch_size or "full",
                optimizer="Adam",
                network=f"ConvResNet(width={settings.width}, depth={settings.depth}, T={settings.T:g})",
                parameters=parameters,
                layer_parallel=layer_parallel,
                strategy=_strategy_settings(settings),
            ),
            history=history.as_dict(),
        )
        _write_metrics(comm, metrics_path, metrics)
        written.append(Path(metrics_path))
    with _Agreed(comm, "output"):
        if rank == 0:
            if settings.target_accuracy is not None:
                print(
                    f"target validation accuracy {settings.target_accuracy}: "
                    + (
                        f"reached at epoch {outcome.target_epoch} after {outcome.target_seconds:.2f} s"
                        if outcome.target_epoch is not None
                        else f"not reached in {settings.epochs} epochs"
                    )
                    + f"; {outcome.evaluations[0]} fine gradient evaluations, coarse ones worth "
                    f"{outcome.coarse_weighted:g} fine ({settings.strategy})"
                )
            print(
                f"training accuracy {train_acc:.4f} (loss {train_loss:.4f}), validation accuracy {val_acc:.4f} "
                f"(loss {val_loss:.4f}); training took {wall:.2f} s on {size} rank(s)"
            )
            print("wrote " + ", ".join(map(str, written)), flush=True)
    return 0
