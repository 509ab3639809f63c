"""Command-line training of a layer-parallel ResNet: ``python -m pyxbraid.train peaks``.

Also installed as ``pyxbraid-train``. Runs unchanged under ``mpiexec -n P``
(the layers are distributed over the P ranks). Prints progress and the
accuracies, writes the training curves and (for 2-D data) the decision
regions, the trained model, and with ``--metrics`` a JSON summary.

Examples
--------
``python -m pyxbraid.train peaks`` (defaults: the paper's peaks network, width 8,
30 layers, T = 1, smooth ReLU; exact layer-parallel MGRIT; Adam, mini-batches of 100)

``mpiexec -n 4 python -m mpi4py -m pyxbraid.train peaks --mode one-shot --metrics out.json``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from mpi4py import MPI

from . import datasets, nn

MODES = ("parallel", "one-shot", "serial")
# Mode-dependent defaults: one-shot follows the paper (full batch, L-BFGS, warm restarts).
DEFAULTS = {
    "parallel": dict(optimizer="adam", epochs=20, batch_size="100", max_iter=100),
    "serial": dict(optimizer="adam", epochs=20, batch_size="100", max_iter=None),
    "one-shot": dict(optimizer="lbfgs", epochs=150, batch_size="full", max_iter=2),
}
LEARNING_RATES = {"adam": 0.01, "sgd": 0.01, "lbfgs": 1.0}   # L-BFGS: the line search's first step


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyxbraid-train",
        description="Train a ResNet layer-parallel (MGRIT forward, adjoint backward) on a built-in data set.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("dataset", choices=["peaks"], help="built-in data set (peaks: 5000 training / 200 validation "
                   "points, 5 classes; Günther et al. 2020)")
    p.add_argument("--mode", choices=MODES, default="parallel",
                   help="parallel: exact layer-parallel (MGRIT and adjoint converged); one-shot: max-iter MGRIT "
                        "iterations per step, warm-restarted (inexact gradients); serial: forward/backprop")
    p.add_argument("--optimizer", choices=["adam", "sgd", "lbfgs"], help="default: adam (lbfgs for one-shot)")
    p.add_argument("--epochs", type=int, help="passes over the data (default 20; 150 steps for one-shot)")
    p.add_argument("--batch-size", help="mini-batch size or 'full' (default 100; full for one-shot)")
    p.add_argument("--lr", type=float, help="learning rate (default: adam/sgd 0.01; lbfgs: 1.0, the "
                   "line search's first step)")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--depth", type=int, default=30, help="residual layers = time steps")
    p.add_argument("--T", type=float, default=1.0, help="final time (step h = T / depth)")
    p.add_argument("--activation", choices=["smooth_relu", "tanh", "relu"], default="smooth_relu")
    p.add_argument("--bias", choices=["channel", "scalar"], default="channel")
    p.add_argument("--tikhonov", type=float, default=1e-5)
    p.add_argument("--smoothness", type=float, default=1e-5, help="gamma_ddt")
    p.add_argument("--max-levels", type=int, default=3)
    p.add_argument("--cfactor", type=int, default=4)
    p.add_argument("--max-iter", type=int, help="MGRIT iterations (one-shot: per step, default 2; parallel: limit)")
    p.add_argument("--seed", type=int, default=1, help="initialisation and shuffling")
    p.add_argument("--out", default="pyxbraid-peaks", help="directory for plots and the model")
    p.add_argument("--metrics", help="write a JSON summary to this file")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    args = build_parser().parse_args(argv)
    defaults = DEFAULTS[args.mode]
    optimizer_name = args.optimizer or defaults["optimizer"]
    epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    batch_text = args.batch_size or defaults["batch_size"]
    lr = args.lr if args.lr is not None else LEARNING_RATES[optimizer_name]
    max_iter = args.max_iter if args.max_iter is not None else defaults["max_iter"]
    if batch_text == "full":
        batch_size = None
    else:
        try:
            batch_size = int(batch_text)
        except ValueError:
            print(f"pyxbraid-train: --batch-size must be an integer or 'full', got {batch_text!r}", file=sys.stderr)
            return 2

    data = datasets.peaks()
    net = nn.ResNet(data.in_features, args.width, args.depth, data.classes, args.T, activation=args.activation,
                    bias=args.bias, tikhonov=args.tikhonov, smoothness=args.smoothness, seed=args.seed)
    optimizer = {"adam": lambda: nn.Adam(lr=lr), "sgd": lambda: nn.SGD(lr=lr),
                 "lbfgs": lambda: nn.LBFGS(lr=lr)}[optimizer_name]()
    layer_parallel = None
    if args.mode != "serial":
        layer_parallel = dict(max_levels=args.max_levels, cfactor=args.cfactor, max_iter=max_iter,
                              one_shot=args.mode == "one-shot")
    trainer = nn.Trainer(net, comm=comm, optimizer=optimizer, layer_parallel=layer_parallel, seed=args.seed,
                         progress=not args.no_progress)
    settings = dict(dataset=args.dataset, mode=args.mode, optimizer=repr(optimizer), epochs=epochs,
                    batch_size=batch_size or "full", network=repr(net), parameters=net.num_parameters,
                    tikhonov=args.tikhonov, smoothness=args.smoothness, layer_parallel=layer_parallel, seed=args.seed)
    if rank == 0:
        print(f"pyxbraid-train: {args.dataset} on {comm.Get_size()} rank(s), mode {args.mode}; {net!r}, "
              f"{net.num_parameters} parameters; {optimizer!r}, {epochs} epochs, batch {batch_size or 'full'}",
              flush=True)

    start = time.perf_counter()
    history = trainer.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size,
                          validation=(data.x_val, data.y_val))
    wall = time.perf_counter() - start
    train_loss, train_acc = trainer.evaluate(data.x_train, data.y_train)
    val_loss, val_acc = trainer.evaluate(data.x_val, data.y_val)

    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    net.save(out / "model.npz")
    written = [out / "model.npz"]
    if not args.no_plots:
        trainer.plot(history, out / "training.png")
        trainer.plot_decision_regions(out / "decision_regions.png", data.x_train, data.y_train)
        written += [out / "training.png", out / "decision_regions.png"]
    if rank == 0:
        print(f"training accuracy {train_acc:.4f} (loss {train_loss:.4f}), validation accuracy {val_acc:.4f} "
              f"(loss {val_loss:.4f}); training took {wall:.2f} s on {comm.Get_size()} rank(s)")
        print("wrote " + ", ".join(map(str, written)))
        if args.metrics:
            metrics = dict(training_accuracy=train_acc, validation_accuracy=val_acc, training_loss=train_loss,
                           validation_loss=val_loss, wall_seconds=wall, ranks=comm.Get_size(), settings=settings,
                           history=history.as_dict())
            Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
            Path(args.metrics).write_text(json.dumps(metrics, indent=2) + "\n")
            print(f"wrote {args.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
