"""Validation that depends on the communicator size (run on 3 ranks).

Each rank reports ``{ntime: outcome}`` for ntime 1 and 2.
"""

from reporting import outcome, report

import pyxbraid as xb


def run(ntime):
    solver = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, ntime)
    solver.solve()
    return float(solver.state_at(ntime)[0])


report({str(ntime): outcome(lambda ntime=ntime: run(ntime)) for ntime in (1, 2)})
