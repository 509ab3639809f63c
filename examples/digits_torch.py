"""Layer-parallel training of a convolutional ResNet on scikit-learn's 8x8 digits (pyxbraid.torch).

The network: an opening convolution (1 -> width channels), ``depth`` residual
blocks ``u + h * ReLU(BatchNorm(Conv3x3(u)))`` run by :class:`pyxbraid.torch.LayerParallel`
(layer k lives on one rank), then 2x2 average pooling and a linear classifier.
The opening and the head are ordinary torch modules replicated on every rank
(their gradients are identical everywhere: u(T) and u0.grad are).

Run on 2 ranks (98.9% validation accuracy after 10 epochs, 97.5% after 5; about 70 s here)::

    mpiexec -n 2 python -m mpi4py examples/digits_torch.py --metrics digits/metrics.json

Writes ``<out>/training.png`` (curves), ``<out>/predictions.png`` (validation
images with their predicted labels, mistakes in red), ``<out>/model.pt`` and,
with ``--metrics``, a JSON summary (accuracies, losses, wall time, ranks,
settings, history). Needs torch and scikit-learn (``pip install
"pyxbraid[torch]" scikit-learn``). ``main(argv)`` is the entry point, so a
command line can call it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid.nn import History
from pyxbraid.torch import LayerParallel

MODES = {"serial": "serial", "exact": "exact", "parallel": "exact", "one-shot": "one_shot", "one_shot": "one_shot"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digits_torch", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--mode",
        choices=sorted(MODES),
        default="exact",
        help="serial: plain backprop rank after rank; exact (= parallel): converged MGRIT forward and "
        "adjoint; one-shot: --max-iter iterations per pass with warm restarts (default exact)",
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default 5e-3)")
    p.add_argument("--width", type=int, default=8, help="channels of the residual state (default 8)")
    p.add_argument("--depth", type=int, default=16, help="residual blocks = MGRIT time steps (default 16)")
    p.add_argument("--T", type=float, default=2.0, help="final time; step h = T / depth (default 2)")
    p.add_argument("--max-levels", type=int, default=2)
    p.add_argument("--cfactor", type=int, default=4)
    p.add_argument("--max-iter", type=int, default=None, help="MGRIT iterations (exact: at most 100; one-shot: 2)")
    p.add_argument("--coarse", choices=["tstop", "mean"], default="tstop", help="weights on coarse levels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank (default 1)")
    p.add_argument("--out", default="pyxbraid-digits", help="folder for plots and the model")
    p.add_argument("--metrics", help="write a JSON summary to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="write no plots")
    return p


class Network:
    """Opening and head (replicated on every rank) around the layer-parallel blocks."""

    def __init__(self, args: argparse.Namespace, comm: Any) -> None:
        width, seed = args.width, args.seed

        def block(k: int) -> torch.nn.Module:  # built only on the rank that owns layer k
            torch.manual_seed(seed * 100_003 + k + 1)
            return torch.nn.Sequential(
                torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU()
            ).double()

        torch.manual_seed(seed * 100_003)  # the same opening and head on every rank
        self.opening = torch.nn.Sequential(torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU()).double()
        self.head = torch.nn.Sequential(
            torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(width * 16, 10)
        ).double()
        options: dict[str, Any] = dict(
            mode=MODES[args.mode], max_levels=args.max_levels, cfactor=args.cfactor, coarse=args.coarse
        )
        if args.max_iter is not None:
            options["max_iter"] = args.max_iter
        self.lp = LayerParallel(block, depth=args.depth, T=args.T, comm=comm, **options)
        self.modules = [self.opening, self.lp, self.head]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]

    def num_parameters(self, comm: Any) -> int:
        local = sum(p.numel() for p in self.lp.parameters())
        shared = sum(p.numel() for m in (self.opening, self.head) for p in m.parameters())
        return comm.allreduce(local) + shared

    def train(self, mode: bool = True) -> None:
        for m in self.modules:
            m.train(mode)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lp(self.opening(x)))

    def state_dict(self) -> dict[str, Any]:  # collective (the layers are gathered)
        return dict(opening=self.opening.state_dict(), layers=self.lp.state_dict(), head=self.head.state_dict())


def evaluate(net: Network, x: torch.Tensor, y: torch.Tensor, chunk: int = 512) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and predictions (exact forward, eval mode; collective)."""
    net.train(False)
    total, predictions = 0.0, []
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            logits = net(x[start : start + chunk])
            total += float(torch.nn.functional.cross_entropy(logits, y[start : start + chunk], reduction="sum"))
            predictions.append(logits.argmax(1))
    net.train(True)
    pred = torch.cat(predictions)
    return total / len(x), float((pred == y).double().mean()), pred.numpy()


def plot_predictions(
    images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, path: Path, count: int = 48
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    wrong = np.flatnonzero(predicted != labels)
    shown = np.concatenate([wrong, np.flatnonzero(predicted == labels)])[:count]  # mistakes first
    cols = 12
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(cols * 0.9, rows * 1.05), layout="constrained")
    FigureCanvasAgg(fig)
    for i, idx in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[idx, 0], cmap="gray_r", vmin=0, vmax=1)
        ok = predicted[idx] == labels[idx]
        ax.set_title(
            f"{predicted[idx]}" + ("" if ok else f" ({labels[idx]})"), fontsize=8, color="black" if ok else "red"
        )
        ax.set_axis_off()
    fig.suptitle(
        f"validation digits: predicted label (true label in red where wrong); {len(wrong)} mistakes of {len(labels)}",
        fontsize=9,
    )
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    torch.set_num_threads(args.threads)
    data = xb.datasets.digits(seed=args.seed)
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_val, y_val = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
    net = Network(args, comm)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    settings = dict(
        dataset="digits",
        mode=MODES[args.mode],
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        width=args.width,
        depth=args.depth,
        T=args.T,
        max_levels=args.max_levels,
        cfactor=args.cfactor,
        max_iter=args.max_iter,
        coarse=args.coarse,
        seed=args.seed,
        parameters=net.num_parameters(comm),
        optimizer="Adam",
    )
    if rank == 0:
        print(
            f"digits_torch: {len(x_train)} training / {len(x_val)} validation images on {size} rank(s), "
            f"mode {settings['mode']}; conv ResNet width {args.width}, {args.depth} blocks, T={args.T:g}, "
            f"{settings['parameters']} parameters; Adam lr {args.lr:g}, batch {args.batch_size}, "
            f"{args.epochs} epochs",
            flush=True,
        )

    history = History()
    rng = np.random.default_rng(args.seed)  # the same shuffling on every rank
    steps = math.ceil(len(x_train) / args.batch_size)
    bar = None
    if rank == 0 and not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.epochs * steps, desc=f"digits ({settings['mode']})", unit="step", dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for epoch in range(args.epochs):
            order = torch.from_numpy(rng.permutation(len(x_train)))
            loss_sum, correct = 0.0, 0
            for b in range(steps):
                idx = order[b * args.batch_size : (b + 1) * args.batch_size]
                xb_, yb = x_train[idx], y_train[idx]
                net.lp.reset()  # a new batch: no warm restart from the last one
                optimizer.zero_grad()
                logits = net(xb_)
                loss = torch.nn.functional.cross_entropy(logits, yb)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
                history.step_loss.append(loss.item())
                if bar is not None:
                    post = {"loss": f"{loss.item():.4f}"}
                    if history.val_accuracy:
                        post["val_acc"] = f"{history.val_accuracy[-1]:.3f}"
                    fwd, bwd = net.lp.last_forward, net.lp.last_backward
                    if fwd is not None and bwd is not None:  # MGRIT iterations, forward / backward
                        post["mgrit"] = f"{fwd.iterations}/{bwd.iterations}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
            val_loss, val_acc, _ = evaluate(net, x_val, y_val)
            history.epoch.append(epoch + 1)
            history.loss.append(loss_sum / len(x_train))
            history.train_accuracy.append(correct / len(x_train))
            history.val_loss.append(val_loss)
            history.val_accuracy.append(val_acc)
            history.wall_seconds.append(time.perf_counter() - start)
            fwd, bwd = net.lp.last_forward, net.lp.last_backward
            history.residual.append(
                float(fwd.residual_norms[-1]) if fwd is not None and fwd.residual_norms.size else math.nan
            )
            history.adjoint_residual.append(
                float(bwd.adjoint_residual_norms[-1])
                if bwd is not None and bwd.adjoint_residual_norms.size
                else math.nan
            )
            history.mgrit_iterations.append(int(bwd.iterations) if bwd is not None else 0)
            line = (
                f"epoch {epoch + 1}: loss {history.loss[-1]:.4f}, training accuracy "
                f"{history.train_accuracy[-1]:.4f}, validation accuracy {val_acc:.4f}, "
                f"{history.wall_seconds[-1]:.1f} s"
            )
            if bar is not None:
                bar.write(line)
            elif rank == 0:
                print(line, flush=True)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    train_loss, train_acc, _ = evaluate(net, x_train, y_train)
    val_loss, val_acc, predicted = evaluate(net, x_val, y_val)

    out = Path(args.out)
    state = net.state_dict()  # collective
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(state, out / "model.pt")
        written = [out / "model.pt"]
        if not args.no_plots:
            from pyxbraid.nn.plotting import plot_history

            plot_history(
                history,
                out / "training.png",
                title=f"digits, conv ResNet ({args.depth} blocks, width {args.width}), "
                f"{settings['mode']} on {size} rank(s)",
            )
            plot_predictions(data.x_val, data.y_val, predicted, out / "predictions.png")
            written += [out / "training.png", out / "predictions.png"]
        print(
            f"training accuracy {train_acc:.4f} (loss {train_loss:.4f}), validation accuracy {val_acc:.4f} "
            f"(loss {val_loss:.4f}); training took {wall:.2f} s on {size} rank(s)"
        )
        print("wrote " + ", ".join(map(str, written)))
        if args.metrics:
            metrics = dict(
                training_accuracy=train_acc,
                validation_accuracy=val_acc,
                training_loss=train_loss,
                validation_loss=val_loss,
                wall_seconds=wall,
                ranks=size,
                settings=settings,
                history=history.as_dict(),
            )
            Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
            Path(args.metrics).write_text(json.dumps(metrics, indent=2) + "\n")
            print(f"wrote {args.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
