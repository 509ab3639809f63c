"""A callback of a temporal refinement raises on one rank; every rank reports what it caught.

Usage: ``refine_failure.py WHERE [BAD_RANK]``: WHERE ``refine_step`` (a step that carries the
iterate onto the refined grid raises), ``rfactor`` (a level-0 step asks for factor 0) or
``after_refine`` (the sync after the refinement raises). Each rank reports
``{"first": outcome of solve(), "again": outcome of a second solve()}``.
"""

import sys

from mpi4py import MPI
from reporting import outcome, report

import pyxbraid as xb

WHERE = sys.argv[1]
BAD = int(sys.argv[2]) if len(sys.argv) > 2 else 1
rank = MPI.COMM_WORLD.Get_rank()


class Refining(xb.App):
    """Backward Euler for u' = -u; level-0 steps in iteration 1 ask for factor 2."""

    def __init__(self):
        super().__init__(shape=(1,))

    def init(self, t, u):
        u[0] = 1.0 if t == 0.0 else 0.5

    def step(self, u, ustop, fstop, status):
        u /= 1.0 + (status.tstop - status.tstart)
        if WHERE == "refine_step" and rank == BAD and status.phase == "refine":
            raise ValueError("boom in a refinement step")
        if status.level == 0 and status.nrefine == 0:
            bad = WHERE == "rfactor" and rank == BAD and status.iter == 1
            status.set_rfactor(0 if bad else 2)

    def sync(self, status):
        if WHERE == "after_refine" and rank == BAD and status.caller == "after_refine":
            raise ValueError("boom in sync after the refinement")


solver = xb.Solver(Refining(), 0.0, 1.0, 16, max_levels=3, abs_tol=1e-10, refine=True)
first = outcome(lambda: solver.solve().iterations)
report(dict(first=first, again=outcome(lambda: solver.solve().iterations)))
