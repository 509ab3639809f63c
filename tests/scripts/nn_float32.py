"""Multi-rank float32 ResNet checks, run by tests/test_nn_float32.py under mpiexec.

Prints 'RESULT <json>' on rank 0: per mode (layer-serial, exact
layer-parallel) the loss and gathered gradient of a float32 network, and
the dtype of the model saved on these ranks and loaded back on them.
Argument: <path to save the model to>
"""

import json
import sys

from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import nn

comm = MPI.COMM_WORLD
save_path = sys.argv[1]
data = xb.datasets.make_peaks(60, 10, seed=4)
x, y = data.x_train, data.y_train
config = dict(in_features=2, width=8, depth=9, classes=5, activation="tanh", seed=7, dtype="float32")
out = {"ranks": comm.Get_size()}
for mode, lp in [("serial", None), ("exact", dict(max_levels=3, cfactor=2, abs_tol=1e-7, abs_tol_adjoint=1e-7))]:
    net = nn.ResNet(**config)
    loss, grad = nn.Trainer(net, comm=comm, layer_parallel=lp, progress=False).loss_and_gradient(x, y)
    out[mode] = {"loss": loss, "grad": {k: v.tolist() for k, v in net.full_dict(grad).items()}}
net.save(save_path)
loaded = nn.ResNet.load(save_path, comm=comm)
out["loaded_dtype"] = loaded.config.dtype
out["loaded_loss"] = nn.Trainer(loaded, comm=comm, progress=False).evaluate(x, y)[0]
if comm.Get_rank() == 0:
    print("RESULT " + json.dumps(out))
