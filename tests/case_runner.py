"""Multi-rank runner of recorded XBraid cases for this rank count.

Run as ``mpiexec -n P python -m mpi4py tests/case_runner.py <module>`` where
<module> is ``reference_cases`` (primal) or ``adjoint_cases``. Rank 0 prints one
``MISMATCH`` line per difference and ``CHECKED <n>`` at the end.
"""

import importlib
import sys
from pathlib import Path

from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))
cases_module = importlib.import_module(sys.argv[1])

comm = MPI.COMM_WORLD
cases = cases_module.load_cases(ranks=comm.Get_size())
problems = []
for case in cases:
    problems += cases_module.check_case(case, comm)
if comm.Get_rank() == 0:
    for p in problems:
        print("MISMATCH", p)
    print("CHECKED", len(cases), flush=True)
