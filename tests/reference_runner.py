"""Multi-rank runner: check every recorded primal XBraid case for this rank count.

Run as ``mpiexec -n P python -m mpi4py tests/reference_runner.py``. Rank 0 prints
one ``MISMATCH`` line per difference and ``CHECKED <n>`` at the end.
"""

import sys
from pathlib import Path

from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_cases import check_case, load_cases  # noqa: E402

comm = MPI.COMM_WORLD
cases = load_cases(ranks=comm.Get_size())
problems = []
for case in cases:
    problems += check_case(case, comm)
if comm.Get_rank() == 0:
    for p in problems:
        print("MISMATCH", p)
    print("CHECKED", len(cases), flush=True)
