"""One rank raises inside a callback; every rank reports what it caught.

Usage: ``remote_failure.py WHERE [BAD_RANK]`` with WHERE one of init, step,
access, spatial_norm, sync. Each rank reports ``{"first": outcome of solve(),
"again": outcome of a second solve(), "raised": where the failing rank raised}``.
"""

import sys

import numpy as np
from mpi4py import MPI
from reporting import outcome, report

import pyxbraid as xb

WHERE = sys.argv[1]
BAD = int(sys.argv[2]) if len(sys.argv) > 2 else 1
comm = MPI.COMM_WORLD
rank = comm.Get_rank()


raised = {}


class Boom(xb.App):
    """Backward Euler for u' = -u; rank BAD raises in the callback WHERE."""

    def __init__(self):
        super().__init__(shape=(2,))

    def init(self, t, u):
        if WHERE == "init" and rank == BAD and t > 0.0:
            raised.update(phase="init", t=t)
            raise ValueError(f"boom in init at t={t!r}")
        u[:] = 1.0 if t == 0.0 else 0.5

    def step(self, u, ustop, fstop, status):
        if WHERE == "step" and rank == BAD and status.iter == 1 and status.level == 0:
            raised.update(
                phase=status.phase, level=status.level, iter=status.iter, tstart=status.tstart, tstop=status.tstop
            )
            raise ValueError(f"boom in step at t={status.tstart!r}")
        u /= 1.0 + (status.tstop - status.tstart)

    def access(self, u, status):
        if WHERE == "access" and rank == BAD and status.done:
            raised.update(phase=status.phase, level=status.level, t=status.t)
            raise ValueError(f"boom in access at t={status.t!r}")

    def sync(self, status):
        if WHERE == "sync" and rank == BAD and status.caller == "top_cycle" and status.iter == 1:
            raised.update(phase=status.caller, iter=status.iter)
            raise ValueError("boom in sync")

    def spatial_norm(self, u):
        if WHERE == "spatial_norm" and rank == BAD:
            raised.update(phase="spatial_norm")
            raise ValueError("boom in spatial_norm")
        return float(np.sqrt(np.sum(u * u)))


solver = xb.Solver(Boom(), 0.0, 1.0, 12, max_levels=2, abs_tol=1e-12)
first = outcome(lambda: solver.solve().iterations)
report(dict(first=first, again=outcome(lambda: solver.solve().iterations), raised=raised))
