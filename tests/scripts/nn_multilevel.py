"""Multi-rank checks of pyxbraid.nn's hierarchy and strategies, run by tests/test_nn_multilevel.py under mpiexec.

Prints one line 'RESULT <json>' on rank 0: the gathered transfers of a
hierarchy whose coarse layers' children straddle a rank boundary, and the
trained parameters and losses of nested and MG/Opt in serial, exact and
one-shot modes (one-shot twice, for reproducibility).
"""

import json

import numpy as np
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import nn

comm = MPI.COMM_WORLD
out: dict = {"ranks": comm.Get_size()}

# depth 20 -> 10 -> 5: on 2 ranks coarse layer 2 of level 2 has its children 4 and 5 on different ranks
for layer in (None, nn.Dense(4)):
    net = nn.ResNet(2, 4, 20, 3, seed=5, layer=layer)
    net.distribute(comm)
    full = net.parameters()
    rng = np.random.default_rng(0)
    for name in full:
        if name.startswith("layers."):
            full[name] = rng.standard_normal(full[name].shape)
    net.set_parameters(full)
    key = "native" if layer is None else "dense"
    for restriction, prolongation in (("average", "linear"), ("inject", "constant")):
        h = nn.Hierarchy(net, 3, restriction, prolongation)
        c1 = h.restrict(0, net.local_parameters)
        h.nets[1].local_parameters[...] = c1
        c2 = h.restrict(1, c1)
        h.nets[2].local_parameters[...] = c2
        p1 = h.prolong(1, c2)
        g1 = h.restrict_gradient(1, p1)
        res = {
            "c1": h.nets[1].full_dict(c1)["layers.weight"].tolist(),
            "c2": h.nets[2].full_dict(c2)["layers.weight"].tolist(),
            "p1": h.nets[1].full_dict(p1)["layers.weight"].tolist(),
            "g1": h.nets[2].full_dict(g1)["layers.weight"].tolist(),
        }
        out[f"{key}-{restriction}-{prolongation}"] = res

data = xb.datasets.make_peaks(80, 20, seed=3)
config = dict(in_features=2, width=4, depth=8, classes=5, T=2.0, tikhonov=1e-4, smoothness=1e-4, seed=2)
exact = dict(max_levels=2, cfactor=2, abs_tol=1e-13, abs_tol_adjoint=1e-13, max_iter=60)
one_shot = dict(max_levels=2, cfactor=2, max_iter=2, one_shot=True)
runs = [
    ("nested", "serial", None, 0),
    ("mgopt", "serial", None, 0),
    ("nested", "exact", exact, 0),
    ("mgopt", "exact", exact, 0),
    ("mgopt", "one_shot", one_shot, 0),
    ("mgopt", "one_shot", one_shot, 1),
    # zero padding: on 3 ranks, rank 0 holds no parameter at all of the coarsest network
    ("mgopt", "serial_zero_pad", None, 0),
]
for strategy, mode, lp, repeat in runs:
    net = nn.ResNet(**config, opening="zero_pad" if mode == "serial_zero_pad" else "dense")
    s = nn.Nested(levels=3, epochs=[2, 2]) if strategy == "nested" else nn.MGOpt(levels=3)
    trainer = nn.Trainer(net, comm=comm, optimizer=nn.Adam(lr=0.02), layer_parallel=lp, strategy=s, progress=False)
    history = trainer.fit(data.x_train, data.y_train, epochs=2, batch_size=40, validation=(data.x_val, data.y_val))
    out[f"{strategy}-{mode}-{repeat}"] = {
        "loss": history.loss,
        "val_accuracy": history.val_accuracy,
        "params": {k: v.tolist() for k, v in net.parameters().items()},
        "evaluations": trainer.gradient_evaluations,
    }
if comm.Get_rank() == 0:
    print("RESULT " + json.dumps(out), flush=True)
