"""Replay the recorded XBraid runs of the advanced features on this job's ranks.

Usage: ``advanced_runner.py FEATURE [FEATURE ...] [--python]``: every run of those
features recorded with as many ranks as this job has; ``public=FEATURE`` adds the public
runs (../shared/data) of that feature, whatever their rank count (the numbers do not depend
on it for these problems); ``onerank=FEATURE`` adds the runs of that feature recorded on 1 rank
whose numbers do not depend on the rank count (not ex-02: its random initial guesses are per
rank); ``--python``: ex-02 as the Python App of advanced_apps instead
of the native Heat1D; ``--native``: ex-07 as the native ``pyxbraid.apps.Lorenz``
instead of the Python App. Each rank reports the mismatches
(rank 0 compares; the others report an empty list) and the ids it checked.
"""

import sys
from pathlib import Path

from mpi4py import MPI
from reporting import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import advanced_cases as ac  # noqa: E402

comm = MPI.COMM_WORLD
features = [a for a in sys.argv[1:] if not a.startswith(("--", "public=", "onerank="))]
python_app = "--python" in sys.argv[1:]
native = "--native" in sys.argv[1:]
runs = [r for r in ac.load_runs(nprocs=comm.Get_size()) if r["feature"] in features]
for arg in sys.argv[1:]:
    if arg.startswith("public="):
        runs += [ac.as_recorded(r) for r in ac.public_runs(arg.removeprefix("public="))]
    if arg.startswith("onerank="):
        feature = arg.removeprefix("onerank=")
        runs += [r for r in ac.load_runs(nprocs=1) if r["feature"] == feature and r["program"] != "ex-02"]
bad = []
for run in runs:
    got = ac.execute(run, comm, python_app=python_app, native=native)
    if comm.Get_rank() == 0:
        bad += ac.compare(run, got)
report({"checked": [r["id"] for r in runs], "mismatches": bad})
