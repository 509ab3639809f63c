"""Multi-rank runner of the recorded XBraid_Adjoint cases (see adjoint_cases.py)."""

import sys
from pathlib import Path

from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adjoint_cases import check_case, load_cases  # noqa: E402

comm = MPI.COMM_WORLD
cases = load_cases(ranks=comm.Get_size())
problems = []
for case in cases:
    problems += check_case(case, comm)
if comm.Get_rank() == 0:
    for p in problems:
        print("MISMATCH", p)
    print("CHECKED", len(cases), flush=True)
