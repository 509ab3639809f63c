"""State queries (state_at / local_states) and failures on several ranks.

Usage: ``state_query_failure.py CASE`` with CASE

* ``ondemand``: access_level=0, so state_at runs the final sweep on demand;
  rank 1's step raises during that sweep (after a delay, when the other
  ranks are done with their part). Every rank must raise.
* ``after_failure``: rank 1's step raises during solve(); afterwards every
  rank calls state_at, which must raise SolverStateError (not hang).

Each rank reports ``{"solve": outcome, "state_at": outcome}``.
"""

import sys
import time

from mpi4py import MPI
from reporting import outcome, report

import pyxbraid as xb

CASE = sys.argv[1]
rank = MPI.COMM_WORLD.Get_rank()


class Decay(xb.App):
    def __init__(self):
        super().__init__(shape=(1,))

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.5

    def step(self, u, ustop, fstop, status):
        if rank == 1:
            if CASE == "ondemand" and status.phase == "state_query":
                # Late, so that the other ranks have finished their part of the
                # sweep (and could return) before the failure is announced.
                time.sleep(1.0)
                raise ValueError("boom in the on-demand sweep")
            if CASE == "after_failure" and status.iter == 1:
                raise ValueError("boom in solve")
        u /= 1.0 + status.dt


solver = xb.Solver(Decay(), 0.0, 1.0, 12, max_levels=2, access_level=0 if CASE == "ondemand" else 1)
solved = outcome(lambda: solver.solve().iterations)
report(dict(solve=solved, state_at=outcome(lambda: float(solver.state_at(12)[0]))))
