"""Multi-rank runner of recorded XBraid cases for this rank count.

Run as ``mpiexec -n P python -m mpi4py tests/case_runner.py <module> [<python_app>]``
where <module> is ``reference_cases`` (primal) or ``adjoint_cases`` and
<python_app> (optional) names the Python App variant to run instead of the native
app (``plain`` or ``batched``). Rank 0 prints one ``MISMATCH`` line per difference
and ``CHECKED <n>`` at the end.
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
python_app = sys.argv[2] if len(sys.argv) > 2 else None
if python_app is not None:
    cases = [c for c in cases if c["app"] in ("ex01", "ex01_adjoint")]
for case in cases:
    problems += cases_module.check_case(case, comm, python_app) if python_app else cases_module.check_case(case, comm)
if comm.Get_rank() == 0:
    for p in problems:
        print("MISMATCH", p)
    print("CHECKED", len(cases), flush=True)
