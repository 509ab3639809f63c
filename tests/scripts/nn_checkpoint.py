"""Checkpointed training on N ranks, run by tests/test_checkpoint.py under mpiexec.

Argument: a JSON object {"cases": [...], "out": path}. Each case trains the
small network below and records, on rank 0, the parameters it ended with
(``<out>.<name>.npz``) and what every rank saw (one 'RESULT <json>' line):

    name, mode ("serial" | "exact" | "one_shot"), optimizer ("adam" | "sgd" | "lbfgs"),
    batch (int or null), epochs, checkpoint (path or null), resume (bool),
    signal_at: [rank, global step] -- that rank sends itself SIGTERM after that step (of the
    trainer's own optimizer: with a multilevel strategy, the fine network's),
    strategy ("nested": Nested(3, epochs=[2, 2]) | "mgopt": MGOpt(2); with depth 8),
    layer_parallel (overrides the mode's settings), depth (default 9; 8 with a strategy)

A case that raises reports ``error``: "<type>: <message>" on each rank.
"""

import json
import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import nn

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
spec = json.loads(sys.argv[1])
data = xb.datasets.make_peaks(60, 12, seed=5)
LAYER_PARALLEL = {
    "serial": None,
    "exact": dict(max_levels=3, cfactor=2),
    "one_shot": dict(max_levels=3, cfactor=2, max_iter=2, one_shot=True),
}
STRATEGIES = {"single": lambda: "single", "nested": lambda: nn.Nested(3, epochs=[2, 2]), "mgopt": lambda: nn.MGOpt(2)}
OPTIMIZERS = {"adam": lambda: nn.Adam(lr=0.02), "sgd": lambda: nn.SGD(lr=0.05), "lbfgs": lambda: nn.LBFGS()}


def optimizer_for(case):
    opt = OPTIMIZERS[case["optimizer"]]()
    if case.get("signal_at") is None:
        return opt
    who, when = case["signal_at"]
    step = opt.step
    count = [0]

    def signalling_step(*args):  # a SIGTERM arriving at one rank only, in the middle of an epoch
        loss = step(*args)
        count[0] += 1
        if rank == who and count[0] == when:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    opt.step = signalling_step
    return opt


results = []
for case in spec["cases"]:
    strategy = case.get("strategy", "single")
    depth = case.get("depth", 9 if strategy == "single" else 8)
    net = nn.ResNet(2, 4, depth, 5, activation="tanh", tikhonov=1e-4, smoothness=1e-4, seed=3)
    trainer = nn.Trainer(
        net,
        comm=comm,
        optimizer=optimizer_for(case),
        layer_parallel=case.get("layer_parallel", LAYER_PARALLEL[case["mode"]]),
        seed=11,
        progress=False,
        strategy=STRATEGIES[strategy](),
    )
    report = {"name": case["name"]}
    try:
        history = trainer.fit(
            data.x_train,
            data.y_train,
            epochs=case["epochs"],
            batch_size=case["batch"],
            validation=(data.x_val, data.y_val),
            checkpoint=case.get("checkpoint"),
            resume=case.get("resume", False),
        )
        report["history"] = {k: v for k, v in history.as_dict().items() if k != "wall_seconds"}
        report["gradient_evaluations"] = trainer.gradient_evaluations
    except nn.TrainingInterrupted as exc:
        report["interrupted"] = [exc.signum, exc.epoch, exc.step, exc.checkpoint]
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    reports = comm.gather(report)
    params = net.parameters()
    if rank == 0:
        np.savez(f"{spec['out']}.{case['name']}.npz", **params)
        results.append(reports)
if rank == 0:
    print("RESULT " + json.dumps(results), flush=True)
