"""Multi-rank checks of numpy layers (nn.Layer), run by tests/test_nn_layers.py under mpiexec.

Argument: a JSON object with ``folder`` (where the one-rank test left
``block_one_rank.npz``, a model, and ``conv_one_rank.ckpt.npz``, a checkpoint
after 2 of 4 epochs) and ``out`` (a file prefix for this job's outputs).
Prints one line 'RESULT <json>' on rank 0: per network and mode the loss and
the gathered gradient, the one-shot history, the loaded model's loss, and
writes ``<out>.trained.npz`` (a model saved from these ranks),
``<out>.half.ckpt.npz`` (a checkpoint after 2 of 4 epochs) and
``<out>.<name>.params.npz`` (final parameters of the resumed runs).
"""

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI
from nn_layer_cases import Block

import pyxbraid as xb
from pyxbraid import nn

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
spec = json.loads(sys.argv[1])
folder, out_prefix = Path(spec["folder"]), spec["out"]
data = xb.datasets.make_peaks(24, 8, seed=4)
x, y = data.x_train, data.y_train
EXACT = dict(max_levels=3, cfactor=2, abs_tol=1e-13, abs_tol_adjoint=1e-13, max_iter=60)


def conv_net():
    return nn.ResNet(2, 6, 8, 5, activation="tanh", tikhonov=1e-3, smoothness=1e-3, seed=7, layer=nn.Conv1d(2, 3))


def block_net():
    return nn.ResNet(2, 4, 8, 5, opening="zero_pad", tikhonov=1e-3, smoothness=1e-3, seed=2, layer=Block(4))


result = {"ranks": comm.Get_size()}
for name, make in (("conv", conv_net), ("block", block_net)):
    for mode, lp in (("serial", None), ("exact", EXACT)):
        net = make()
        trainer = nn.Trainer(net, comm=comm, layer_parallel=lp, progress=False)
        loss, grad = trainer.loss_and_gradient(x, y)
        full = net.full_dict(grad)
        result[f"{name}.{mode}"] = {"loss": loss, "grad": {k: v.tolist() for k, v in full.items()}}
    result[f"{name}.local_parameters"] = comm.allgather(net.local_num_parameters)

# one-shot, full batch, warm restarts: a few Adam steps (the same on every rank count)
net = conv_net()
trainer = nn.Trainer(
    net,
    comm=comm,
    optimizer=nn.Adam(lr=0.05),
    progress=False,
    layer_parallel=dict(max_levels=3, cfactor=2, max_iter=2, one_shot=True),
)
result["one_shot_loss"] = trainer.fit(x, y, epochs=4).loss
net.save(f"{out_prefix}.trained.npz")

# a model saved on one rank, loaded here (a user-defined layer: given to load)
loaded = nn.ResNet.load(folder / "block_one_rank.npz", comm=comm, layer=Block(4))
result["loaded_loss"] = nn.Trainer(loaded, comm=comm, progress=False).evaluate(x, y)[0]


# checkpoints: 2 of 4 epochs here; and the one-rank checkpoint resumed on these ranks
def fit(epochs, checkpoint, resume):
    net = conv_net()
    trainer = nn.Trainer(net, comm=comm, optimizer=nn.Adam(lr=0.02), layer_parallel=dict(max_levels=3, cfactor=2))
    trainer.progress = False
    history = trainer.fit(x, y, epochs=epochs, batch_size=8, checkpoint=checkpoint, resume=resume)
    return net.parameters(), history


fit(2, f"{out_prefix}.half.ckpt.npz", False)
params, history = fit(4, folder / "conv_one_rank.ckpt.npz", True)
result["resumed_history"] = {k: v for k, v in history.as_dict().items() if k != "wall_seconds"}
if rank == 0:
    np.savez(f"{out_prefix}.resumed.params.npz", **params)
    print("RESULT " + json.dumps(result), flush=True)
