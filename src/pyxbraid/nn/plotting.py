"""Figures written to files (matplotlib's Agg canvas: no display, no pyplot global state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> None:
    """Write the figure atomically, in the format its suffix names (png, pdf, svg, ...)."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"cannot write a figure to {str(path)!r}: unknown format {fmt!r} "
            f"(supported: {', '.join(sorted(supported))})"
        )
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=120))


def plot_history(history: Any, path: str | Path, title: str = "") -> None:
    """Loss and accuracies per epoch, side by side."""
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.semilogy(history.epoch, history.loss, label="training")
    if not np.all(np.isnan(history.val_loss)):
        ax_loss.semilogy(history.epoch, history.val_loss, label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_acc.plot(history.epoch, history.train_accuracy, label="training")
    if not np.all(np.isnan(history.val_accuracy)):
        ax_acc.plot(history.epoch, history.val_accuracy, label="validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, path)


def plot_regions(
    gx: np.ndarray, gy: np.ndarray, labels: np.ndarray, x: np.ndarray, y: np.ndarray, classes: int, path: str | Path
) -> None:
    """Draw filled decision regions with the data points coloured by their true class."""
    fig = _figure(6, 5.5)
    ax = fig.subplots()
    levels = np.arange(classes + 1) - 0.5
    ax.contourf(gx, gy, labels, levels=levels, cmap="viridis", alpha=0.45)
    scatter = ax.scatter(x[:, 0], x[:, 1], c=y, cmap="viridis", vmin=0, vmax=classes - 1, s=6, edgecolors="none")
    fig.colorbar(scatter, ax=ax, ticks=range(classes), label="class")
    ax.set_aspect("equal")
    ax.set_title("decision regions (fill) and data (points)")
    _save(fig, path)
