"""One rank gets a bad input, the others a good one; every rank reports what it raised.

Run by tests/test_fuzz_nn.py under mpiexec with the generated cases (JSON:
a list of {"call", "bad", "rank"}) and a folder holding ``good.npz``.
Prints one 'RESULT <json>' line on rank 0: per case, the per-rank reports
'Type: message' (or 'no error').
"""

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import nn

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
cases = json.loads(sys.argv[1])
folder = Path(sys.argv[2])
data = xb.datasets.make_peaks(30, 10, seed=3)
X, Y = data.x_train, data.y_train
(folder / "file").write_text("x") if rank == 0 else None
comm.Barrier()

good = folder / "good.npz"
if rank == 0:
    raw = good.read_bytes()
    (folder / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (folder / "empty.npz").write_bytes(b"")
    np.save(folder / "array.npy", np.zeros(3))
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["layers__bias"] = arrays["layers__bias"].astype(complex)
    np.savez(folder / "complex.npz", **arrays)
comm.Barrier()

BAD_X = {
    "nan": np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X),
    "shape": np.zeros((30, 3)),
    "dtype": X.astype(complex),
    "none": None,
    "other_data": X + 1e-3,
    "value": [[1.0, 2.0], [3.0]],
    "labels": X,
}
BAD_Y = {"labels": np.where(np.arange(30) == 4, 9, Y), "none": None, "value": np.full((30, 5), 0.5)}
BAD_LP = {
    "nan": dict(abs_tol=float("nan")),
    "shape": dict(cfactor=[2, 1]),
    "none": dict(max_levels=0),
    "other_data": dict(cfactor=2),
    "value": dict(abs_tol=-1),
}
BAD_PATH = {
    "nan": "truncated.npz",
    "shape": "empty.npz",
    "dtype": "complex.npz",
    "labels": "array.npy",
    "none": "missing.npz",
    "other_data": "empty.npz",
    "value": ".",
}


def run(case):
    call, bad = case["call"], case["bad"]
    is_bad = rank == case["rank"]
    net = nn.ResNet(2, 4, 6, 5, seed=1)
    if call == "trainer":
        kw = {}
        if is_bad:
            kw = {"dtype": dict(seed=-1), "labels": dict(optimizer="adam")}.get(bad, {})
            lp = BAD_LP.get(bad, dict(cfactor=4))
        else:
            lp = dict(cfactor=4)
        nn.Trainer(net, comm=comm, progress=False, layer_parallel=lp, **kw)
        return
    if call == "load":  # rank 0 reads the file: its path is the one that matters
        nn.ResNet.load(folder / (BAD_PATH[bad] if rank == 0 else "good.npz"), comm=comm)
        return
    trainer = nn.Trainer(net, comm=comm, progress=False, layer_parallel=dict(max_levels=2, cfactor=2))
    if call == "save":  # rank 0 writes
        target = {"nan": "file/m.npz", "shape": ".", "none": "no/such/folder/m.npz"}.get(bad, "file/x/m.npz")
        net.save(folder / (target if rank == 0 else "ignored.npz"))
        return
    if call == "checkpoint":
        if bad == "other_data":  # a checkpoint on one rank only
            trainer.fit(X, Y, epochs=1, checkpoint=folder / "c.npz" if is_bad else None)
        else:
            path = folder / ("missing.npz" if bad == "none" else "file/c.npz")
            trainer.fit(X, Y, epochs=1, checkpoint=path if rank == 0 else folder / "c.npz", resume=bad == "none")
        return
    x = BAD_X[bad] if is_bad and bad not in BAD_Y else X
    y = BAD_Y[bad] if is_bad and bad in BAD_Y else Y
    if call == "fit":
        trainer.fit(x, y, epochs=1, batch_size=0 if is_bad and bad == "value" else 10)
    elif call == "evaluate":
        trainer.evaluate(x, y)
    elif call == "loss_and_gradient":
        trainer.loss_and_gradient(x, y)
    else:
        trainer.predict(BAD_X[bad] if is_bad and bad != "labels" else (X * 2 if is_bad else X))


results = []
for case in cases:
    try:
        run(case)
        report = "no error"
    except Exception as exc:  # noqa: BLE001 - the report is the result
        report = f"{type(exc).__name__}: {exc}"
    results.append(comm.gather(report))
if rank == 0:
    print("RESULT " + json.dumps(results), flush=True)
