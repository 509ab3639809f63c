"""One rank raises inside a callback; every rank reports what it caught.

Usage: ``remote_failure.py WHERE [BAD_RANK]`` with WHERE one of init, step,
access, spatial_norm. Each rank prints one line per event, e.g.::

    RANK 1 TYPE ValueError RANKATTR None MSG boom in step ...
    RANK 1 RAISED phase=fc_relax level=0 iter=1 tstart=0.5 tstop=0.583...
    RANK 0 AGAIN SolverStateError this solver stopped ...
    RANK 0 ELAPSED 0.004

Messages are printed with newlines escaped (``\\n``) so that one rank's line
stays one line.
"""

import sys
import time

import numpy as np
from mpi4py import MPI

import pyxbraid as xb

WHERE = sys.argv[1]
BAD = int(sys.argv[2]) if len(sys.argv) > 2 else 1
comm = MPI.COMM_WORLD
rank = comm.Get_rank()


def say(text):
    """One line per event, written in one call so that ranks do not interleave."""
    sys.stdout.write(f"RANK {rank} " + str(text).replace("\n", "\\n") + "\n")
    sys.stdout.flush()


class Boom(xb.App):
    """Backward Euler for u' = -u; rank BAD raises in the callback WHERE."""

    def __init__(self):
        super().__init__(shape=(2,))

    def init(self, t, u):
        if WHERE == "init" and rank == BAD and t > 0.0:
            say(f"RAISED phase=init t={t!r}")
            raise ValueError(f"boom in init at t={t!r}")
        u[:] = 1.0 if t == 0.0 else 0.5

    def step(self, u, ustop, fstop, status):
        if WHERE == "step" and rank == BAD and status.iter == 1 and status.level == 0:
            say(
                f"RAISED phase={status.phase} level={status.level} iter={status.iter} "
                f"tstart={status.tstart!r} tstop={status.tstop!r}"
            )
            raise ValueError(f"boom in step at t={status.tstart!r}")
        u /= 1.0 + (status.tstop - status.tstart)

    def access(self, u, status):
        if WHERE == "access" and rank == BAD and status.done:
            say(f"RAISED phase={status.phase} level={status.level} t={status.t!r}")
            raise ValueError(f"boom in access at t={status.t!r}")

    def spatial_norm(self, u):
        if WHERE == "spatial_norm" and rank == BAD:
            say("RAISED phase=spatial_norm")
            raise ValueError("boom in spatial_norm")
        return float(np.sqrt(np.sum(u * u)))


solver = xb.Solver(Boom(), 0.0, 1.0, 12, max_levels=2, abs_tol=1e-12)
t0 = time.monotonic()
try:
    result = solver.solve()
    say(f"OK iterations={result.iterations}")
except Exception as exc:  # noqa: BLE001 - report whatever arrives
    say(f"TYPE {type(exc).__name__} RANKATTR {getattr(exc, 'rank', None)} MSG {exc}")
say(f"ELAPSED {time.monotonic() - t0:.3f}")
try:
    solver.solve()
    say("AGAIN OK")
except Exception as exc:  # noqa: BLE001
    say(f"AGAIN {type(exc).__name__} {exc}")
