"""Command-line training of a layer-parallel ResNet: ``python -m pyxbraid.train peaks``.

Also installed as ``pyxbraid-train``. Runs unchanged under ``mpiexec -n P``
(the layers are distributed over the P ranks). Prints progress and the
accuracies, writes the training curves and (for 2-D data) the decision
regions, the trained model, and with ``--metrics`` a JSON summary.

Every argument is checked before any work (an invalid value is a usage
error: one line, exit status 2), and so are the output paths (created, and
proven writable, before training starts). A failure on one rank ends every
rank with exit status 1, with or without ``python -m mpi4py``. Outputs are
written atomically (a temporary file renamed into place; a link at the
destination is replaced, never followed). With ``--checkpoint`` the run
saves its state after every epoch and on SIGTERM/SIGINT (then it exits with
status 128 + the signal number); ``--resume`` continues from it.

Examples
--------
``python -m pyxbraid.train peaks`` (defaults: the paper's peaks network, width 8,
30 layers, T = 1, smooth ReLU; exact layer-parallel MGRIT; Adam, mini-batches of 100)

``mpiexec -n 4 python -m mpi4py -m pyxbraid.train peaks --mode one-shot --metrics out.json``

``srun python -m pyxbraid.train peaks --checkpoint ckpt.npz $( [ -f ckpt.npz ] && echo --resume )``
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mpi4py import MPI

from . import __version__, datasets, nn
from .errors import PyxbraidError, RemoteRankError, _Agreed
from .nn._files import atomic_write, check_writable
from .nn.network import DEPTH_MAX, INDEX_MAX, _validated_config

MODES = ("parallel", "one-shot", "serial")
# Mode-dependent defaults: one-shot follows the paper (full batch, L-BFGS, warm restarts).
DEFAULTS = {
    "parallel": dict(optimizer="adam", epochs=20, batch_size="100", max_iter=100),
    "serial": dict(optimizer="adam", epochs=20, batch_size="100", max_iter=None),
    "one-shot": dict(optimizer="lbfgs", epochs=150, batch_size="full", max_iter=2),
}
LEARNING_RATES = {"adam": 0.01, "sgd": 0.01, "lbfgs": 1.0}  # L-BFGS: the line search's first step


class _Parser(argparse.ArgumentParser):
    """Prints (usage, errors, --help, --version) on rank 0 only; every rank exits alike."""

    def _print_message(self, message: str, file: Any = None) -> None:
        if MPI.COMM_WORLD.Get_rank() == 0:
            super()._print_message(message, file)

    def error(self, message: str) -> Any:
        """One line (the usage is long; ``--help`` shows it), exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` only where there is a default and the help does not state it itself."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


def _integer(minimum: int, maximum: int = INDEX_MAX) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be an integer in {minimum}..{maximum}, got {value}")
        return value

    return parse


def _real(positive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(f"must be a finite number {'> 0' if positive else '>= 0'}, got {text!r}")
        return value

    return parse


def _batch_size(text: str) -> str | int:
    if text == "full":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full', got {text!r}") from None
    if not 1 <= value <= INDEX_MAX:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full', got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pyxbraid-train",
        description="Train a ResNet layer-parallel (MGRIT forward, adjoint backward) on a built-in data set.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "dataset",
        choices=["peaks"],
        help="built-in data set (peaks: 5000 training / 200 validation points, 5 classes; Günther et al. 2020)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="parallel",
        help="parallel: exact layer-parallel (MGRIT and adjoint converged); one-shot: max-iter MGRIT "
        "iterations per step, warm-restarted (inexact gradients); serial: forward/backprop",
    )
    p.add_argument("--optimizer", choices=["adam", "sgd", "lbfgs"], help="default: adam (lbfgs for one-shot)")
    p.add_argument(
        "--epochs",
        type=_integer(1),
        help="passes over the data (default 20; 150 for one-shot, where an epoch is one full-batch step)",
    )
    p.add_argument("--batch-size", type=_batch_size, help="mini-batch size or 'full' (default 100; full for one-shot)")
    p.add_argument(
        "--lr",
        type=_real(positive=True),
        help="learning rate (default: adam/sgd 0.01; lbfgs 1.0, the line search's first step)",
    )
    p.add_argument("--width", type=_integer(1), default=8, help="channels of the hidden state")
    p.add_argument("--depth", type=_integer(1, DEPTH_MAX), default=30, help="residual layers = time steps")
    p.add_argument("--T", type=_real(positive=True), default=1.0, help="final time (step h = T / depth)")
    p.add_argument(
        "--activation",
        choices=["smooth_relu", "tanh", "relu"],
        default="smooth_relu",
        help="activation of the residual layers",
    )
    p.add_argument(
        "--bias",
        choices=["channel", "scalar"],
        default="channel",
        help="one bias per channel, or one per layer (the paper's network)",
    )
    p.add_argument(
        "--tikhonov",
        type=_real(positive=False),
        default=1e-5,
        help="Tikhonov regularisation alpha/2 ||theta||^2 (default here 1e-5, as in the paper; "
        "nn.ResNet's own default is 0)",
    )
    p.add_argument(
        "--smoothness",
        type=_real(positive=False),
        default=1e-5,
        help="gamma_ddt: penalty on the change of the weights from layer to layer (default here 1e-5; "
        "nn.ResNet's own default is 0)",
    )
    p.add_argument(
        "--max-levels", type=_integer(2, DEPTH_MAX), default=3, help="MGRIT levels (parallel and one-shot modes)"
    )
    p.add_argument("--cfactor", type=_integer(2), default=4, help="MGRIT coarsening factor (parallel and one-shot)")
    p.add_argument(
        "--max-iter",
        type=_integer(1),
        help="MGRIT iterations (one-shot: per step, default 2; parallel: the limit, default 100)",
    )
    p.add_argument("--seed", type=_integer(0), default=1, help="initialisation and shuffling")
    p.add_argument("--out", default="pyxbraid-peaks", help="directory for plots and the model")
    p.add_argument("--metrics", help="write a JSON summary to this file (default: none)")
    p.add_argument(
        "--checkpoint",
        help="save the training state to this file after every epoch and on SIGTERM/SIGINT (default: none)",
    )
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint (which must exist)")
    p.add_argument("--no-plots", action="store_true", help="do not write the plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _json_safe(value: Any) -> Any:
    """NaN/inf as null: the metrics file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = DEFAULTS[args.mode]
    optimizer_name = args.optimizer or defaults["optimizer"]
    epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    batch = args.batch_size if args.batch_size is not None else defaults["batch_size"]
    batch_size = None if batch == "full" else int(batch)
    lr = args.lr if args.lr is not None else LEARNING_RATES[optimizer_name]
    max_iter = args.max_iter if args.max_iter is not None else defaults["max_iter"]
    if args.resume and not args.checkpoint:
        parser.error("--resume needs --checkpoint PATH")
    data = datasets.peaks()
    try:  # combinations (T against depth, the network's size against memory): usage errors too
        _validated_config(
            data.in_features,
            args.width,
            args.depth,
            data.classes,
            args.T,
            bias=args.bias,
            tikhonov=args.tikhonov,
            smoothness=args.smoothness,
            seed=args.seed,
        )
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        return _run(comm, args, data, optimizer_name, epochs, batch_size, lr, max_iter)
    except nn.TrainingInterrupted as exc:
        if rank == 0:
            print(
                f"pyxbraid-train: stopped by {signal.Signals(exc.signum).name} after {exc.epoch} epoch(s) and "
                f"{exc.step} step(s) of the next; the checkpoint {exc.checkpoint!r} has the last completed step: "
                "continue with --resume",
                file=sys.stderr,
                flush=True,
            )
        return 128 + exc.signum
    except RemoteRankError:
        return 1  # the rank that failed says why
    except (PyxbraidError, OSError, ValueError, TypeError, FloatingPointError) as exc:
        print(f"pyxbraid-train: error (rank {rank}): {exc}", file=sys.stderr, flush=True)
        return 1


def _run(
    comm: Any,
    args: argparse.Namespace,
    data: Any,
    optimizer_name: str,
    epochs: int,
    batch_size: int | None,
    lr: float,
    max_iter: int | None,
) -> int:
    rank = comm.Get_rank()
    out = Path(args.out)
    # Before any work: a bad output path must not throw a training run away.
    with _Agreed(comm, "output paths"):
        if rank == 0:
            check_writable(out, "--out", folder=True)
            if args.metrics:
                check_writable(args.metrics, "--metrics")
            if args.checkpoint:
                if args.resume and not Path(args.checkpoint).is_file():
                    raise FileNotFoundError(f"--resume: there is no checkpoint file {args.checkpoint!r}")
                check_writable(args.checkpoint, "--checkpoint")

    net = nn.ResNet(
        data.in_features,
        args.width,
        args.depth,
        data.classes,
        args.T,
        activation=args.activation,
        bias=args.bias,
        tikhonov=args.tikhonov,
        smoothness=args.smoothness,
        seed=args.seed,
    )
    optimizer = {"adam": lambda: nn.Adam(lr=lr), "sgd": lambda: nn.SGD(lr=lr), "lbfgs": lambda: nn.LBFGS(lr=lr)}[
        optimizer_name
    ]()
    layer_parallel = None
    if args.mode != "serial":
        layer_parallel = dict(
            max_levels=args.max_levels, cfactor=args.cfactor, max_iter=max_iter, one_shot=args.mode == "one-shot"
        )
    trainer = nn.Trainer(
        net,
        comm=comm,
        optimizer=optimizer,
        layer_parallel=layer_parallel,
        seed=args.seed,
        progress=not args.no_progress,
    )
    settings = dict(
        dataset=args.dataset,
        mode=args.mode,
        optimizer=repr(optimizer),
        epochs=epochs,
        batch_size=batch_size or "full",
        network=repr(net),
        parameters=net.num_parameters,
        tikhonov=args.tikhonov,
        smoothness=args.smoothness,
        layer_parallel=layer_parallel,
        seed=args.seed,
        checkpoint=args.checkpoint,
        resumed=args.resume,
    )
    if rank == 0:
        print(
            f"pyxbraid-train: {args.dataset} on {comm.Get_size()} rank(s), mode {args.mode}; {net!r}, "
            f"{net.num_parameters} parameters; {optimizer!r}, {epochs} epochs, batch {batch_size or 'full'}",
            flush=True,
        )

    start = time.perf_counter()
    history = trainer.fit(
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation=(data.x_val, data.y_val),
        checkpoint=args.checkpoint,
        resume=args.resume,
    )
    wall = time.perf_counter() - start
    train_loss, train_acc = trainer.evaluate(data.x_train, data.y_train)
    val_loss, val_acc = trainer.evaluate(data.x_val, data.y_val)

    net.save(out / "model.npz")
    written = [out / "model.npz"]
    if not args.no_plots:
        trainer.plot(history, out / "training.png")
        trainer.plot_decision_regions(out / "decision_regions.png", data.x_train, data.y_train)
        written += [out / "training.png", out / "decision_regions.png"]
    if args.metrics:
        metrics = dict(
            training_accuracy=train_acc,
            validation_accuracy=val_acc,
            training_loss=train_loss,
            validation_loss=val_loss,
            wall_seconds=wall,
            ranks=comm.Get_size(),
            settings=settings,
            history=history.as_dict(),
        )
        with _Agreed(comm, "--metrics file"):
            if rank == 0:
                text = json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n"
                atomic_write(args.metrics, lambda fh: fh.write(text.encode()))
        written.append(Path(args.metrics))
    if rank == 0:
        print(
            f"training accuracy {train_acc:.4f} (loss {train_loss:.4f}), validation accuracy {val_acc:.4f} "
            f"(loss {val_loss:.4f}); training took {wall:.2f} s on {comm.Get_size()} rank(s)"
        )
        print("wrote " + ", ".join(map(str, written)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
