"""The refinement of test_refinement's Decay app on this job's ranks: rank 0 reports the numbers."""

import sys
from pathlib import Path

from mpi4py import MPI
from reporting import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_refinement import Decay, middle_once, solve  # noqa: E402

solver, result = solve(Decay(factor=middle_once), refine=True)
states = MPI.COMM_WORLD.gather(solver.local_states()[:, 0].tolist(), root=0)
report(
    dict(
        ntime=result.ntime,
        iters=result.iterations,
        norms=[float(x) for x in result.residual_norms[1:]],
        states=sum(states, []) if states else None,
    )
)
