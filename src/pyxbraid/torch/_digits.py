"""``pyxbraid-train digits``: a convolutional ResNet trained layer-parallel on scikit-learn's 8x8 digits.

The training pieces of the command line (:mod:`pyxbraid.train` parses and
checks the arguments, then calls :func:`run`); ``examples/digits_torch.py`` is
a thin script over the command line. Every rank runs the same loop on the same
data: the opening and the head are replicated, :class:`ConvResNet`'s blocks
are distributed.

The training loop is :func:`pyxbraid.torch.train_multilevel` (every
strategy: single, nested, mgopt). A failure on one rank must end every rank,
never leave the others waiting in the next collective: that loop sees to it
in training (see :mod:`pyxbraid.torch._multilevel`), and here what only rank
0 does (printing, plots, files) runs inside ``_Agreed`` blocks, which hold no
collective.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import datasets
from ..errors import _Agreed
from ..nn._files import atomic_write
from ..nn.trainer import History
from . import _multilevel
from ._models import ConvResNet
from ._multilevel import split, train_multilevel

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
    strategy: str = "single"  # "single", "nested" or "mgopt" (multilevel training in depth)
    levels: int = 1  # networks in the hierarchy of "nested" / "mgopt": depth, depth / 2, ...
    # epochs of each coarse network (None: epochs), or one count per coarse network, coarsest first
    coarse_epochs: int | list[int] | None = None
    target_accuracy: float | None = None  # stop the fine network's training at this validation accuracy
    mgopt: tuple[int, int, int] = (1, 1, 4)  # "mgopt": pre, post and coarse_steps (train_multilevel's defaults)


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


def evaluate(net: ConvResNet, x: torch.Tensor, y: torch.Tensor, comm: Any) -> tuple[float, float, np.ndarray]:
    """Return the mean cross-entropy, the accuracy and the predictions (exact forward, eval mode; collective)."""
    loss, accuracy, out = _multilevel.evaluate(split(net), torch.nn.functional.cross_entropy, x, y, comm)
    return loss, accuracy, out.argmax(1).numpy()


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


class Batches:
    """The training set in mini-batches, shuffled anew at every pass (the same order on every rank)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int | None, seed: int) -> None:
        self.x, self.y = x, y
        self.batch = batch or len(x)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.from_numpy(self.rng.permutation(len(self.x)))
        for b in range(len(self)):
            idx = order[b * self.batch : (b + 1) * self.batch]
            yield self.x[idx], self.y[idx]


@dataclass
class Outcome:
    """What :func:`train` did: the fine network's history, every level's, the work, and the target."""

    history: History
    level_histories: list[History]  # coarsest first; the fine network's last
    evaluations: list[int]  # gradient evaluations per level, fine first
    depths: list[int]  # fine first
    target_epoch: int | None  # the fine epoch that reached the target accuracy
    target_seconds: float | None

    @property
    def coarse_weighted(self) -> float:
        """The coarse levels' gradient evaluations weighted by their cost relative to the fine one's (depth ratio)."""
        return float(sum(n * d / self.depths[0] for n, d in zip(self.evaluations[1:], self.depths[1:], strict=True)))


def train(net: ConvResNet, settings: Settings, data: datasets.ImageDataset, comm: Any, progress: bool) -> Outcome:
    """Train with Adam by :func:`~pyxbraid.torch.train_multilevel` with the settings' strategy (collective).

    ``single``: the network alone; ``nested``: the coarse networks (depth ``depth / 2**l``, the
    fine network's opening and head shared, :class:`~pyxbraid.torch.Hierarchy`) are trained
    coarsest first for ``coarse_epochs`` epochs each (one count for all, or a list, coarsest
    first), each prolonged into the next finer one, whose Adam continues the coarser one's;
    ``mgopt``: one MG/Opt V-cycle over ``levels`` networks per mini-batch. The fine network
    trains for ``epochs`` epochs, or until the first whose validation accuracy is
    ``>= target_accuracy``. Rank 0 prints a line per epoch (and a bar with ``progress``).
    """
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    target = settings.target_accuracy

    def reached(level: int, epoch: int, history: History) -> bool:
        # (the same value on every rank: an allgathered forward)
        return level == 0 and target is not None and history.val_accuracy[-1] >= target

    result = train_multilevel(
        net,
        torch.nn.functional.cross_entropy,
        Batches(x_train, y_train, settings.batch_size, settings.seed),
        functools.partial(torch.optim.Adam, lr=settings.lr),  # (its first use imports for about 1 s)
        strategy=settings.strategy,
        levels=settings.levels,
        epochs=settings.epochs,
        coarse_epochs=settings.coarse_epochs if settings.strategy == "nested" else None,
        validation=(torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)),
        callback=reached,
        progress=True if progress else "lines",
        pre=settings.mgopt[0],
        post=settings.mgopt[1],
        coarse_steps=settings.mgopt[2],
    )
    fine = result.history
    hits = [i for i, a in enumerate(fine.val_accuracy) if target is not None and a >= target]
    return Outcome(
        history=fine,
        level_histories=result.level_histories,
        evaluations=result.gradient_evaluations,
        depths=result.depths,
        target_epoch=hits[0] + 1 if hits else None,
        target_seconds=fine.wall_seconds[hits[0]] if hits else None,
    )


_STRATEGY_FIELDS = ("batch_size", "strategy", "levels", "coarse_epochs", "mgopt")


def _strategy_settings(settings: Settings) -> dict[str, Any]:
    """Return the strategy's name and settings, as the peaks command line writes them."""
    if settings.strategy == "single":
        return {"strategy": "single", "levels": 1}
    if settings.strategy == "mgopt":  # (train_multilevel's defaults)
        return {
            "strategy": "mgopt",
            "levels": settings.levels,
            "pre": settings.mgopt[0],
            "post": settings.mgopt[1],
            "coarse_steps": settings.mgopt[2],
            "max_backtracks": 4,
            "c1": 1e-4,
            "reset_coarse_optimizer": False,
            "restriction": "average",
            "prolongation": "linear",
        }
    coarse = settings.coarse_epochs
    return {
        "strategy": settings.strategy,
        "levels": settings.levels,
        "epochs": None if coarse is None else [coarse] * (settings.levels - 1) if isinstance(coarse, int) else coarse,
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
