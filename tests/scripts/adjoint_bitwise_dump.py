"""Dump adjoint runs bit for bit, to compare two builds of the adjoint (a change meant to keep
every number, such as the tape's format): residual histories, adjoint residual histories,
objectives and every rank's gradient as hex floats.

Usage: ``mpiexec -n P python tests/scripts/adjoint_bitwise_dump.py OUT.json`` on each build
(P = 1, 2, 3), then ``cmp`` the files. Runs: the recorded XBraid_Adjoint cases of P ranks with
the native, Python and batched Python Apps; an option grid (levels, cfactor, nrelax, storage,
skip) over LinearODE, a 3-vector LinearODE, Cubic and the Python Apps; fmg and objective
windows; spatial coarsening; ResNet training gradients. About 2 s per rank count.
"""

import itertools
import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

import pyxbraid as xb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import adjoint_cases as ac  # noqa: E402
from advanced_apps import diffusion_class  # noqa: E402

comm = MPI.COMM_WORLD
P = comm.size
out = {}


def h(x):
    return [float(v).hex() for v in np.ravel(np.asarray(x, dtype=float))]


def dump(tag, res, grad):
    g = comm.gather(h(grad), root=0)
    out[tag] = dict(
        it=res.iterations, r=h(res.residual_norms), ra=h(res.adjoint_residual_norms), J=float(res.objective).hex(), g=g
    )


# 1. recorded XBraid_Adjoint cases
for case in ac.load_cases(P):
    if "optimization" in case["app_options"]:
        continue
    for kind in (False, True, "batched"):
        s, app = ac.make(case, comm, kind)
        for k in range(len(case["solves"])):
            res = s.solve()
            dump(f"case {case['name']} {kind} solve{k}", res, s.gradient())

# 2. option grid
grid = dict(max_levels=(1, 2, 3, 30), cfactor=(2, 4, 8), nrelax=(0, 1, 2), storage=(-1, 0), skip=(True, False))
apps = {
    "linode": lambda: xb.apps.LinearODE(lam=-1.0, objective="mean_square"),
    "linode3": lambda: xb.apps.LinearODE(lam=[-1.0, -0.5, -2.0], objective="mean_square"),
    "cubic": lambda: xb.apps.Cubic(p=0.5, size=2),
    "py": lambda: ac.DecayAdjoint(-1.0),
    "pybatched": lambda: ac.DecayAdjointBatched(-1.0),
}
for name, make in apps.items():
    for combo in itertools.product(*grid.values()):
        opts = dict(zip(grid.keys(), combo, strict=True))
        if name.startswith("py") and (opts["nrelax"] == 2 or opts["storage"] == 0):
            continue
        s = xb.Solver(
            make(), 0.0, 5.0, 64, comm=comm, adjoint=True, max_iter=6, abs_tol=0.0, abs_tol_adjoint=0.0, **opts
        )
        for k in range(2):
            res = s.solve()
            dump(f"grid {name} {opts} solve{k}", res, s.gradient())
    for extra in (dict(fmg=True), dict(tstart_objective=1.0, tstop_objective=3.0), dict(rel_tol_adjoint=1e-3)):
        s = xb.Solver(make(), 0.0, 5.0, 64, comm=comm, adjoint=True, max_iter=8, max_levels=3, **extra)
        res = s.solve()
        dump(f"extra {name} {extra}", res, s.gradient())

# 3. spatial coarsening adjoint
for ml in (2, 4):
    app = diffusion_class(True)(17)
    s = xb.Solver(
        app, 0.0, 0.25, 64, comm=comm, max_levels=ml, adjoint=True, abs_tol=0.0, abs_tol_adjoint=0.0, max_iter=7
    )
    res = s.solve()
    dump(f"diffusion ml{ml}", res, s.gradient())

# 4. native ResNet training gradients
d = xb.datasets.make_peaks(40, 20, seed=3)
for lp in (
    None,
    dict(max_levels=2, cfactor=2, max_iter=4),
    dict(max_levels=3, cfactor=2, max_iter=5, one_shot=True),
    dict(max_levels=4, cfactor=2, storage=0, max_iter=3),
    dict(max_levels=2, cfactor=4, nrelax=0, max_iter=3),
):
    net = xb.nn.ResNet(2, 4, 16, 5, activation="smooth_relu", smoothness=1e-3, seed=1)
    tr = xb.nn.Trainer(net, layer_parallel=lp, progress=False)
    loss, grad = tr.loss_and_gradient(d.x_train, d.y_train)
    g = comm.gather(h(grad), root=0)
    out[f"resnet {lp}"] = dict(loss=float(loss).hex(), g=g)

if comm.rank == 0:
    Path(sys.argv[1]).write_text(json.dumps(out, indent=0, sort_keys=True))
    print(len(out), "entries")
