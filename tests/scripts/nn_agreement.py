"""Failures on one rank reach every rank: ResNet.load errors (rank 0 reads) and data that differ between ranks.

Run by tests/test_nn_hardening.py under mpiexec (without a hang: each case
ends on every rank, and rank 0 prints one 'RESULT <json>' line mapping each
case to the per-rank reports 'Type: message' or 'ok').
Argument: a folder with the files the load cases read (see the test).
"""

import json
import sys
from pathlib import Path

from mpi4py import MPI

import pyxbraid as xb
import pyxbraid.nn.network
from pyxbraid import nn

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
folder = Path(sys.argv[1])
data = xb.datasets.make_peaks(40, 10, seed=2)
x, y = data.x_train, data.y_train
results = {}


def case(name, action):
    try:
        action()
        report = "ok"
    except Exception as exc:  # noqa: BLE001 - what every rank saw is the result
        report = f"{type(exc).__name__}: {exc}"
    results[name] = comm.gather(report)


# -- ResNet.load: whatever goes wrong on rank 0 ------------------------------------------------
for file in ("truncated.npz", "array.npy", "empty.npz", "missing.npz", "huge_depth.npz", "good.npz"):
    case(f"load {file}", lambda file=file: nn.ResNet.load(folder / file, comm=comm))


def memory_error(*args):
    raise MemoryError("simulated: no memory left")


original = pyxbraid.nn.network._read_model
if rank == 0:
    pyxbraid.nn.network._read_model = memory_error
case("load MemoryError", lambda: nn.ResNet.load(folder / "good.npz", comm=comm))
pyxbraid.nn.network._read_model = original

# -- data that differ between ranks ----------------------------------------------------------------
mine = x.copy()
if rank == comm.Get_size() - 1:
    mine[7, 1] += 1e-12  # one value, in the last bit or so: still different data
net = nn.ResNet(2, 4, 6, 5, seed=1)
trainer = nn.Trainer(net, comm=comm, progress=False, layer_parallel=dict(max_levels=2, cfactor=2))
labels = y.copy()
if rank == 0:
    labels[3] = (labels[3] + 1) % 5
case("fit x", lambda: trainer.fit(mine, y, epochs=1))
case("fit y", lambda: trainer.fit(x, labels, epochs=1))
case("fit validation", lambda: trainer.fit(x, y, epochs=1, validation=(mine, y)))
case("evaluate", lambda: trainer.evaluate(mine, y))
case("loss_and_gradient", lambda: trainer.loss_and_gradient(x, labels))
case("predict", lambda: trainer.predict(mine))
case("same data", lambda: trainer.fit(x, y, epochs=1, validation=(x, y)))
if rank == 0:
    print("RESULT " + json.dumps(results), flush=True)
