"""Multi-rank pyxbraid.nn checks, run by tests/test_nn.py under mpiexec.

Prints one line 'RESULT <json>' on rank 0 with, per mode, the loss and the
gathered full gradient, the per-rank parameter counts, a short one-shot
history and, after training, the saved model's path.
Arguments: <saved model from 1 rank to load> <path to save the trained model to>
"""

import json
import sys

from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import nn

comm = MPI.COMM_WORLD
load_path, save_path = sys.argv[1], sys.argv[2]
data = xb.datasets.make_peaks(60, 10, seed=4)
x, y = data.x_train, data.y_train
config = dict(
    in_features=2, width=4, depth=9, classes=5, T=1.0, activation="tanh", tikhonov=1e-3, smoothness=1e-3, seed=7
)
out = {"ranks": comm.Get_size()}
for mode, lp in [
    ("serial", None),
    ("exact", dict(max_levels=3, cfactor=2, abs_tol=1e-13, abs_tol_adjoint=1e-13, max_iter=60)),
]:
    net = nn.ResNet(**config)
    trainer = nn.Trainer(net, comm=comm, layer_parallel=lp, progress=False)
    loss, grad = trainer.loss_and_gradient(x, y)
    full = net.full_dict(grad)
    out[mode] = {"loss": loss, "grad": {k: v.tolist() for k, v in full.items()}}
    out["local_parameters"] = comm.allgather(net.local_num_parameters)
    out["num_parameters"] = net.num_parameters

# one-shot, full batch, warm restarts: a few Adam steps (reproducible for a fixed rank count)
net = nn.ResNet(**config)
trainer = nn.Trainer(
    net,
    comm=comm,
    optimizer=nn.Adam(lr=0.05),
    progress=False,
    layer_parallel=dict(max_levels=3, cfactor=2, max_iter=2, one_shot=True),
)
history = trainer.fit(x, y, epochs=5)
out["one_shot_loss"] = history.loss
net.save(save_path)

# step calls per rank of two one-shot cycles at depth 512 (benchmarks/README: the lean cycle's
# critical path is ~1.25 layer-serial sweeps on 2 ranks, the full hierarchy's ~3.2)
cycles = {
    "full": dict(max_levels=10, cfactor=4, max_iter=2, one_shot=True),
    "lean": dict(max_levels=2, cfactor=8, nrelax=0, max_iter=2, one_shot=True),
}
out["cycle_step_calls"] = {}
for name, lp in cycles.items():
    deep = nn.Trainer(nn.ResNet(2, 2, 512, 5, seed=1), comm=comm, layer_parallel=lp, progress=False)
    deep.loss_and_gradient(x[:4], y[:4])
    out["cycle_step_calls"][name] = comm.allgather(deep.last_solve.step_calls)

# a model saved on one rank, loaded on this many
loaded = nn.ResNet.load(load_path, comm=comm)
out["loaded_loss"] = nn.Trainer(loaded, comm=comm, progress=False).evaluate(x, y)[0]
out["loaded_predict"] = nn.Trainer(loaded, comm=comm, progress=False).predict(data.x_val).tolist()
if comm.Get_rank() == 0:
    print("RESULT " + json.dumps(out))
