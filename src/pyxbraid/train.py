"""Command-line training of a layer-parallel ResNet: ``python -m pyxbraid.train peaks|digits``.

Also installed as ``pyxbraid-train``. One subcommand per data set, each with
its own options (``pyxbraid-train peaks --help``):

- ``peaks``: the dense ResNet of Günther et al. (SIMODS 2020) on 2-D points,
  native layers (:mod:`pyxbraid.nn`);
- ``digits``: a convolutional ResNet (:class:`pyxbraid.torch.ConvResNet`) on
  scikit-learn's 8x8 digits, trained with Adam through
  :class:`pyxbraid.torch.LayerParallel` (needs PyTorch and scikit-learn; float64
  or float32).

Runs unchanged under ``mpiexec -n P`` (the layers are distributed over the P
ranks). Prints progress and the accuracies, writes the training curves, the
decision regions (peaks) or the predicted validation images (digits), the
trained model, and with ``--metrics`` a JSON summary.

Every argument is checked before any work (an invalid value is a usage
error: one line, exit status 2), and so are the output paths (created, and
proven writable, before training starts). A failure on one rank ends every
rank with exit status 1, with or without ``python -m mpi4py``. Outputs are
written atomically (a temporary file renamed into place; a link at the
destination is replaced, never followed). With ``--checkpoint`` (peaks) the
run saves its state after every epoch and on SIGTERM/SIGINT (then it exits
with status 128 + the signal number); ``--resume`` continues from it -- also
with ``--strategy nested`` / ``mgopt`` (every level's state; see
:meth:`pyxbraid.nn.Trainer.fit`).

Examples
--------
``python -m pyxbraid.train peaks`` (defaults: the paper's peaks network, width 8,
30 layers, T = 1, smooth ReLU; exact layer-parallel MGRIT; Adam, mini-batches of 100)

``mpiexec -n 4 python -m mpi4py -m pyxbraid.train peaks --mode one-shot --metrics out.json``

``python -m pyxbraid.train peaks --mode serial --depth 64 --strategy nested --levels 3 --target-accuracy 0.9``
(multilevel training in depth: :mod:`pyxbraid.nn.strategies`; the metrics then hold
``reached_target``, ``epochs_to_target``, ``wall_seconds_to_target``, ``fine_gradient_evaluations`` and
``coarse_gradient_evaluations_weighted``: the coarse levels' evaluations times their depth over the fine depth)

``srun python -m pyxbraid.train peaks --checkpoint ckpt.npz $( [ -f ckpt.npz ] && echo --resume )``

``mpiexec -n 2 python -m mpi4py -m pyxbraid.train digits --metrics digits.json`` (defaults: 16 blocks,
width 8, T = 2, float64, exact layer-parallel MGRIT with 2 levels and cfactor 4; Adam, batch 64, 10 epochs)

``python -m pyxbraid.train digits --depth 32 --strategy nested --levels 4 --coarse-epochs 2 --target-accuracy 0.97``
(nested iteration over the torch blocks, :func:`pyxbraid.torch.train_multilevel`; the same metrics as peaks;
``--strategy mgopt`` runs MG/Opt V-cycles, one per mini-batch)

``python -m pyxbraid.train peaks --strategy mgopt --mgopt-pre 2 --mgopt-post 0 --mgopt-coarse-steps 8``
(MG/Opt's step counts, for peaks and digits: ``pre``, ``post`` and ``coarse_steps`` of
:class:`pyxbraid.nn.MGOpt` / :func:`pyxbraid.torch.train_multilevel`)
"""

from __future__ import annotations

import argparse
import importlib
import inspect
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
from .nn.hierarchy import check_levels
from .nn.network import DEPTH_MAX, INDEX_MAX, _validated_config

MODES = ("parallel", "one-shot", "serial")
# Mode-dependent defaults: one-shot follows the paper (full batch, L-BFGS, warm restarts).
DEFAULTS: dict[str, dict[str, Any]] = {
    "parallel": dict(optimizer="adam", epochs=20, batch_size="100", max_iter=100),
    "serial": dict(optimizer="adam", epochs=20, batch_size="100", max_iter=None),
    "one-shot": dict(optimizer="lbfgs", epochs=150, batch_size="full", max_iter=2),
}
# One-shot with mini-batches: residual-driven iterations and a switch to exact solves when training stalls.
ADAPTIVE: dict[str, Any] = dict(rel_tol=1e-2, max_iter=20, switch_to_exact=2)
# What a rank reports in one line (exit status 1); anything else raises with its traceback.
_FAILURES = (PyxbraidError, OSError, ValueError, TypeError, FloatingPointError)
LEARNING_RATES = {"adam": 0.01, "sgd": 0.01, "lbfgs": 1.0}  # L-BFGS: the line search's first step
# MG/Opt's step counts on the command line: the flag, the keyword of nn.MGOpt and train_multilevel
# (the value is stored as args.mgopt_<keyword>), the fewest steps the API accepts, the help.
MGOPT_STEPS = (
    ("--mgopt-pre", "pre", 0, "pre-smoothing optimizer steps of a V-cycle on each level but the coarsest"),
    ("--mgopt-post", "post", 0, "post-smoothing optimizer steps of a V-cycle on each level but the coarsest"),
    ("--mgopt-coarse-steps", "coarse_steps", 1, "optimizer steps of a V-cycle on the coarsest level"),
)


class _Parser(argparse.ArgumentParser):
    """Prints (usage, errors, --help, --version) on rank 0 only; every rank exits alike."""

    commands: dict[str, argparse.ArgumentParser]

    def _print_message(self, message: str, file: Any = None) -> None:
        if MPI.COMM_WORLD.Get_rank() == 0:
            super()._print_message(message, file)

    def error(self, message: str) -> Any:
        """Print one line (the usage is long; ``--help`` shows it) and exit with status 2."""
        root = self.prog.split()[0]  # "pyxbraid-train", also for a subcommand's parser
        self.exit(2, f"{root}: error: {message} (see {self.prog} --help)\n")


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


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


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


def build_parser() -> _Parser:
    """Return the command line's parser: one subcommand per data set, ``peaks`` and ``digits``."""
    p = _Parser(
        prog="pyxbraid-train",
        description="Train a ResNet layer-parallel (MGRIT forward, adjoint backward) on a built-in data set.",
        epilog="Each data set has its own options: DATASET --help lists them.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True, parser_class=_Parser, help="the data set")
    p.commands = {
        "peaks": sub.add_parser(
            "peaks",
            help="the paper's dense ResNet (native layers, pyxbraid.nn) on 2-D points: 5000 training / 200 "
            "validation points, 5 classes (Günther et al. 2020)",
            description="The peaks ResNet of Günther et al. (SIMODS 2020), native layers (pyxbraid.nn).",
            formatter_class=_HelpFormatter,
        ),
        "digits": sub.add_parser(
            "digits",
            help="a convolutional ResNet (PyTorch, pyxbraid.torch) on scikit-learn's 8x8 handwritten digits: "
            "1438 training / 359 validation images, 10 classes (needs PyTorch and scikit-learn)",
            description="A convolutional ResNet (opening conv, residual ReLU(BatchNorm(Conv3x3)) blocks, pooling "
            "+ linear head; pyxbraid.torch.ConvResNet) on scikit-learn's 8x8 digits (1438 training / 359 "
            "validation images), Adam on mini-batches. Needs PyTorch and scikit-learn.",
            formatter_class=_HelpFormatter,
        ),
    }
    _peaks_arguments(p.commands["peaks"])
    _digits_arguments(p.commands["digits"])
    return p


def _peaks_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode",
        choices=MODES,
        default="parallel",
        help="parallel: exact layer-parallel (MGRIT and adjoint converged); one-shot: max-iter MGRIT "
        "iterations per step, warm-restarted (inexact gradients; with a mini-batch --batch-size: adaptive, "
        "see --rel-tol); serial: forward/backprop",
    )
    p.add_argument(
        "--optimizer", choices=["adam", "sgd", "lbfgs"], help="default: adam (lbfgs for full-batch one-shot)"
    )
    p.add_argument(
        "--epochs",
        type=_integer(1),
        help="passes over the data (default 20; 150 for full-batch one-shot, where an epoch is one step)",
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
        help="MGRIT iterations (one-shot: per step, default 2; parallel, and one-shot with mini-batches: the "
        "limit, default 100 / 20)",
    )
    p.add_argument(
        "--rel-tol",
        type=_fraction,
        help="one-shot with mini-batches (adaptive): MGRIT and its adjoint iterate until their residuals are "
        f"below this fraction of the first iteration's, at most --max-iter (default {ADAPTIVE['rel_tol']:g}; "
        f"--max-iter {ADAPTIVE['max_iter']})",
    )
    p.add_argument(
        "--switch-to-exact",
        type=_integer(1),
        help="one-shot with mini-batches: continue in the exact mode once this many epochs in a row brought no "
        f"better training loss (default {ADAPTIVE['switch_to_exact']})",
    )
    _add_strategy_arguments(p, "V-cycles over them (pyxbraid.nn.Nested, pyxbraid.nn.MGOpt)")
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


def _digits_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode",
        choices=MODES,
        default="parallel",
        help="parallel: exact layer-parallel (MGRIT forward and adjoint converged; LayerParallel mode 'exact'); "
        "one-shot: max-iter MGRIT iterations per pass (inexact gradients); serial: forward/backprop rank "
        "after rank",
    )
    p.add_argument(
        "--dtype",
        choices=["float64", "float32"],
        default="float64",
        help="dtype of the network and of the engine's states",
    )
    p.add_argument("--epochs", type=_integer(1), default=10, help="passes over the training images")
    p.add_argument("--batch-size", type=_batch_size, default=64, help="mini-batch size or 'full'")
    p.add_argument("--lr", type=_real(positive=True), default=5e-3, help="Adam's learning rate")
    p.add_argument("--width", type=_integer(1), default=8, help="channels of the residual state")
    p.add_argument("--depth", type=_integer(1, DEPTH_MAX), default=16, help="residual blocks = time steps")
    p.add_argument("--T", type=_real(positive=True), default=2.0, help="final time (step h = T / depth)")
    p.add_argument(
        "--max-levels", type=_integer(1, DEPTH_MAX), default=2, help="MGRIT levels (parallel and one-shot modes)"
    )
    p.add_argument("--cfactor", type=_integer(2), default=4, help="MGRIT coarsening factor (parallel and one-shot)")
    p.add_argument(
        "--max-iter",
        type=_integer(1),
        help="MGRIT iterations (one-shot: per pass, default 2; parallel: the limit, default 100)",
    )
    p.add_argument(
        "--coarse",
        choices=["tstop", "mean"],
        default="tstop",
        help="weights of coarse MGRIT steps: the fine layer ending there, or the mean of the layers spanned",
    )
    _add_strategy_arguments(p, "V-cycles over them, one per mini-batch (pyxbraid.torch.train_multilevel)")
    p.add_argument("--seed", type=_integer(0), default=0, help="initialisation, data split and shuffling (default 0)")
    p.add_argument("--threads", type=_integer(1, 1024), default=1, help="torch threads per rank")
    p.add_argument("--out", default="pyxbraid-digits", help="directory for plots and the model (model.pt)")
    p.add_argument("--metrics", help="write a JSON summary to this file (default: none)")
    p.add_argument("--no-plots", action="store_true", help="do not write the plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _json_safe(value: Any) -> Any:
    """NaN/inf as null: the metrics file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_metrics(comm: Any, path: str | Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics`` as strict JSON to ``path`` from rank 0, atomically (collective: failures raise everywhere)."""
    text = json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n"

    def write(fh: Any) -> None:
        fh.write(text.encode())

    with _Agreed(comm, "--metrics file"):
        if comm.Get_rank() == 0:
            atomic_write(path, write)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyxbraid-train`` with the arguments ``argv`` (default: the command line's); return the exit status.

    0 on success, 1 when a rank failed (every rank returns 1; the rank that
    failed prints why), 2 for a usage error (printed by rank 0), 128 + the
    signal number when a peaks run with ``--checkpoint`` was stopped.
    """
    comm = MPI.COMM_WORLD
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the data set's parser, whose --help lists what it takes
        parser.commands[args.dataset].error(f"unrecognized arguments: {' '.join(extra)}")
    if args.dataset == "digits":
        return _main_digits(comm, parser.commands["digits"], args)
    return _main_peaks(comm, parser.commands["peaks"], args)


def _main_peaks(comm: Any, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    rank = comm.Get_rank()
    defaults = DEFAULTS[args.mode]
    batch = args.batch_size if args.batch_size is not None else defaults["batch_size"]
    batch_size = None if batch == "full" else int(batch)
    adaptive = args.mode == "one-shot" and batch_size is not None
    if adaptive:  # mini-batch one-shot trains like the exact mode: Adam, epochs over mini-batches
        defaults = {**defaults, **{k: DEFAULTS["parallel"][k] for k in ("optimizer", "epochs")}}
    optimizer_name: str = args.optimizer or defaults["optimizer"]
    epochs: int = args.epochs if args.epochs is not None else defaults["epochs"]
    lr = args.lr if args.lr is not None else LEARNING_RATES[optimizer_name]
    max_iter: int | None = args.max_iter if args.max_iter is not None else defaults["max_iter"]
    if not adaptive:
        for flag, value in (("--rel-tol", args.rel_tol), ("--switch-to-exact", args.switch_to_exact)):
            if value is not None:
                parser.error(f"{flag} needs --mode one-shot with a mini-batch --batch-size")
    else:
        max_iter = args.max_iter if args.max_iter is not None else ADAPTIVE["max_iter"]
        for key in ("rel_tol", "switch_to_exact"):
            if getattr(args, key) is None:
                setattr(args, key, ADAPTIVE[key])
    if args.resume and not args.checkpoint:
        parser.error("--resume needs --checkpoint PATH")
    _strategy_levels(comm, parser, args, mgopt_min=1)
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
                f"{exc.step} step(s) of the next" + ("" if exc.level is None else f" on level {exc.level}") + "; "
                f"the checkpoint {exc.checkpoint!r} has the last completed step: "
                "continue with --resume",
                file=sys.stderr,
                flush=True,
            )
        return 128 + exc.signum
    except RemoteRankError:
        return 1  # the rank that failed says why
    except _FAILURES as exc:
        print(f"pyxbraid-train: error (rank {rank}): {exc}", file=sys.stderr, flush=True)
        return 1


def _main_digits(comm: Any, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    rank, size = comm.Get_rank(), comm.Get_size()
    if args.depth + 1 < size:
        parser.error(
            f"--depth {args.depth} gives {args.depth + 1} time points, fewer than the {size} ranks; use more "
            "residual blocks or fewer ranks"
        )
    levels = _strategy_levels(comm, parser, args, mgopt_min=2)
    steps = _mgopt_steps(args)
    digits = _import_digits(comm)
    if digits is None:
        return 1
    settings = digits.Settings(
        mode=args.mode,
        dtype=args.dtype,
        epochs=args.epochs,
        batch_size=None if args.batch_size == "full" else int(args.batch_size),
        lr=args.lr,
        width=args.width,
        depth=args.depth,
        T=args.T,
        max_levels=args.max_levels,
        cfactor=args.cfactor,
        max_iter=args.max_iter,
        coarse=args.coarse,
        seed=args.seed,
        threads=args.threads,
        strategy=args.strategy,
        levels=levels,
        coarse_epochs=args.coarse_epochs,
        target_accuracy=args.target_accuracy,
        mgopt=(steps["pre"], steps["post"], steps["coarse_steps"]),
    )
    out = Path(args.out)
    try:
        # Before any work: a bad output path must not throw a training run away.
        with _Agreed(comm, "output paths"):
            if rank == 0:
                check_writable(out, "--out", folder=True)
                if args.metrics:
                    check_writable(args.metrics, "--metrics")
        return digits.run(comm, settings, out, args.metrics, plots=not args.no_plots, progress=not args.no_progress)
    except RemoteRankError:
        return 1  # the rank that failed says why
    except _FAILURES as exc:
        print(f"pyxbraid-train: error (rank {rank}): {exc}", file=sys.stderr, flush=True)
        return 1


def _add_strategy_arguments(p: argparse.ArgumentParser, mgopt_help: str) -> None:
    """Add the multilevel options both networks share.

    --strategy, --levels, --coarse-epochs, MG/Opt's step counts (--mgopt-pre, --mgopt-post,
    --mgopt-coarse-steps) and --target-accuracy.
    """
    p.add_argument(
        "--strategy",
        choices=["single", "nested", "mgopt"],
        default="single",
        help="single: the network alone; nested: nested iteration over networks of depth depth, depth/2, ... "
        f"(coarsest first); mgopt: MG/Opt {mgopt_help}",
    )
    p.add_argument(
        "--levels",
        type=_integer(1, 31),
        help="networks in the hierarchy of --strategy nested/mgopt (default 3 / 2); --depth must be divisible by "
        "2**(levels - 1)",
    )
    p.add_argument(
        "--coarse-epochs",
        type=_integer(0),
        help="--strategy nested: epochs on each coarse network (default: --epochs)",
    )
    for flag, keyword, minimum, text in MGOPT_STEPS:
        p.add_argument(
            flag,
            type=_integer(minimum),
            help=f"--strategy mgopt: {text} (default {_mgopt_default(keyword)}, as in the API)",
        )
    p.add_argument(
        "--target-accuracy",
        type=_fraction,
        help="stop at the first epoch whose validation accuracy is >= this (a number in (0, 1]; default: none)",
    )


def _strategy_levels(comm: Any, parser: argparse.ArgumentParser, args: argparse.Namespace, mgopt_min: int) -> int:
    """Return the hierarchy's levels of a run (1 for single); a usage error for what does not fit.

    ``mgopt_min``: the fewest levels --strategy mgopt accepts (the torch V-cycle needs a coarse network).
    """
    if args.strategy == "single" and args.levels not in (None, 1):
        parser.error(f"--levels {args.levels} needs --strategy nested or mgopt")
    if args.coarse_epochs is not None and args.strategy != "nested":
        parser.error("--coarse-epochs needs --strategy nested")
    for flag, keyword, _, _ in MGOPT_STEPS:
        if getattr(args, f"mgopt_{keyword}") is not None and args.strategy != "mgopt":
            parser.error(f"{flag} needs --strategy mgopt")
    if args.strategy == "single":
        return 1
    levels = (3 if args.strategy == "nested" else 2) if args.levels is None else args.levels
    if args.strategy == "mgopt" and levels < mgopt_min:
        parser.error(
            f"--levels {levels}: --strategy mgopt needs at least {mgopt_min} (a V-cycle needs a coarse network)"
        )
    try:
        check_levels(levels, args.depth, comm.Get_size())
    except ValueError as exc:
        parser.error(f"--levels: {exc}")
    return levels


def _mgopt_default(keyword: str) -> int:
    """Return ``nn.MGOpt``'s default for its step count ``keyword`` (``train_multilevel`` has the same)."""
    default: int = inspect.signature(nn.MGOpt).parameters[keyword].default
    return default


def _mgopt_steps(args: argparse.Namespace) -> dict[str, int]:
    """Return MG/Opt's step counts of a run: ``pre``, ``post``, ``coarse_steps`` (the defaults where not given)."""
    steps = {}
    for _, keyword, _, _ in MGOPT_STEPS:
        given = getattr(args, f"mgopt_{keyword}")
        steps[keyword] = _mgopt_default(keyword) if given is None else given
    return steps


def _import_digits(comm: Any) -> Any:
    """Return pyxbraid.torch._digits, or None on every rank (one of them says why) when a rank lacks torch/sklearn."""
    missing = []
    for module, name in (("torch", "PyTorch"), ("sklearn", "scikit-learn")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(name)
    failure = None
    if missing:
        failure = (
            f"pyxbraid-train digits needs {' and '.join(missing)}, not installed here "
            '(optional dependencies): pip install "pyxbraid[torch]" scikit-learn'
        )
    else:
        try:
            from .torch import _digits
        except ImportError as exc:
            failure = f"pyxbraid-train digits cannot import pyxbraid.torch: {exc}"
    failures = comm.allgather(failure) if comm.Get_size() > 1 else [failure]
    reported = [r for r, f in enumerate(failures) if f is not None]
    if not reported:
        return _digits
    if comm.Get_rank() == reported[0]:
        print(f"pyxbraid-train: error (rank {reported[0]}): {failure}", file=sys.stderr, flush=True)
    return None


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
        if args.rel_tol is not None:  # adaptive one-shot (mini-batches)
            layer_parallel.update(
                rel_tol=args.rel_tol, rel_tol_adjoint=args.rel_tol, switch_to_exact=args.switch_to_exact
            )
    strategy: Any = args.strategy
    if args.strategy == "nested":
        levels = 3 if args.levels is None else args.levels
        coarse = None if args.coarse_epochs is None else [args.coarse_epochs] * (levels - 1)
        strategy = nn.Nested(levels, epochs=coarse)
    elif args.strategy == "mgopt":
        steps = _mgopt_steps(args)
        strategy = nn.MGOpt(
            2 if args.levels is None else args.levels,
            pre=steps["pre"],
            post=steps["post"],
            coarse_steps=steps["coarse_steps"],
        )
    trainer = nn.Trainer(
        net,
        comm=comm,
        optimizer=optimizer,
        layer_parallel=layer_parallel,
        seed=args.seed,
        progress=not args.no_progress,
        strategy=strategy,
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
        strategy=trainer.strategy.settings(),
        target_accuracy=args.target_accuracy,
    )
    if rank == 0:
        print(
            f"pyxbraid-train: {args.dataset} on {comm.Get_size()} rank(s), mode {args.mode}"
            + (
                f" (adaptive: rel-tol {args.rel_tol:g}, switch to exact after {args.switch_to_exact})"
                if args.rel_tol is not None
                else ""
            )
            + f"; {net!r}, "
            f"{net.num_parameters} parameters; {optimizer!r}, {epochs} epochs, batch {batch_size or 'full'}",
            flush=True,
        )

    start = time.perf_counter()
    target: dict[str, Any] = {"epoch": None, "seconds": None}

    def reached(epoch: int, history: nn.History) -> bool:
        if args.target_accuracy is None or history.val_accuracy[-1] < args.target_accuracy:
            return False
        target.update(epoch=epoch, seconds=time.perf_counter() - start)
        return True

    history = trainer.fit(
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation=(data.x_val, data.y_val),
        checkpoint=args.checkpoint,
        resume=args.resume,
        callback=reached,
    )
    wall = time.perf_counter() - start
    evaluations = trainer.gradient_evaluations
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
            reached_target=target["epoch"] is not None,
            epochs_to_target=target["epoch"],
            wall_seconds_to_target=target["seconds"],
            fine_gradient_evaluations=evaluations["fine"],
            coarse_gradient_evaluations_weighted=evaluations["coarse_weighted"],
            gradient_evaluations_per_level=evaluations["per_level"],
            level_histories=[h.as_dict() for h in trainer.level_histories],
            switched_to_exact_at=trainer.switched_to_exact_at,
            ranks=comm.Get_size(),
            settings=settings,
            history=history.as_dict(),
        )
        _write_metrics(comm, args.metrics, metrics)
        written.append(Path(args.metrics))
    if rank == 0:
        if args.target_accuracy is not None:
            print(
                f"target validation accuracy {args.target_accuracy}: "
                + (
                    f"reached at epoch {target['epoch']} after {target['seconds']:.2f} s"
                    if target["epoch"] is not None
                    else f"not reached in {epochs} epochs"
                )
                + f"; {evaluations['fine']} fine gradient evaluations, coarse ones worth "
                f"{evaluations['coarse_weighted']:g} fine ({trainer.strategy.name})"
            )
        if trainer.switched_to_exact_at is not None:
            print(f"one-shot training stalled after epoch {trainer.switched_to_exact_at}: continued in the exact mode")
        print(
            f"training accuracy {train_acc:.4f} (loss {train_loss:.4f}), validation accuracy {val_acc:.4f} "
            f"(loss {val_loss:.4f}); training took {wall:.2f} s on {comm.Get_size()} rank(s)"
        )
        print("wrote " + ", ".join(map(str, written)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
