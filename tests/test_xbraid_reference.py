"""pyxbraid reproduces recorded XBraid runs: iterations, residual histories, solutions.

The numbers in tests/data/xbraid_reference.json come from the real XBraid library
(see tests/data/xbraid_reference.md) on 1, 2, 3 and 4 ranks.
"""

from pathlib import Path

import pytest
from mpi4py import MPI
from reference_cases import check_case, load_cases

SINGLE = load_cases(ranks=1)


@pytest.mark.parametrize("case", SINGLE, ids=[c["name"] for c in SINGLE])
def test_case_one_rank(case):
    assert check_case(case, MPI.COMM_SELF) == []


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_cases_multi_rank(mpirun, nprocs):
    runner = Path(__file__).resolve().parent / "case_runner.py"
    out = mpirun(str(runner), nprocs, timeout=600, args=("reference_cases",)).stdout
    mismatches = [line for line in out.splitlines() if line.startswith("MISMATCH")]
    assert mismatches == []
    assert f"CHECKED {len(load_cases(ranks=nprocs))}" in out
