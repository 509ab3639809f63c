"""Validation that depends on the communicator size (run on 3 ranks).

Prints ``RANK r NTIME n TYPE <name> MSG <message>`` or ``RANK r NTIME n OK <value>``.
"""

import sys

from mpi4py import MPI

import pyxbraid as xb

rank = MPI.COMM_WORLD.Get_rank()


def say(text):
    """One line per event, written in one call so that ranks do not interleave."""
    sys.stdout.write(f"RANK {rank} " + str(text).replace("\n", "\\n") + "\n")
    sys.stdout.flush()
for ntime in (1, 2):
    try:
        solver = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, ntime)
        solver.solve()
        say(f"NTIME {ntime} OK {float(solver.state_at(ntime)[0])!r}")
    except Exception as exc:  # noqa: BLE001
        say(f"NTIME {ntime} TYPE {type(exc).__name__} MSG {exc}")
