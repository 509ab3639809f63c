"""The adjoint reproduces recorded XBraid_Adjoint runs (ex-01-adjoint family):
objective, gradient, primal and adjoint residual histories, warm restarts and
the ex-01-optimization loop, on 1-4 ranks; a Python App gives the same numbers.
"""

from pathlib import Path

import pytest
from adjoint_cases import check_case, load_cases
from mpi4py import MPI

SINGLE = load_cases(ranks=1)


@pytest.mark.parametrize("case", SINGLE, ids=[c["name"] for c in SINGLE])
def test_adjoint_case_one_rank(case):
    assert check_case(case, MPI.COMM_SELF) == []


@pytest.mark.parametrize("case", SINGLE, ids=[c["name"] for c in SINGLE])
def test_adjoint_case_python_app(case):
    assert check_case(case, MPI.COMM_SELF, python_app=True) == []


@pytest.mark.parametrize("nprocs", [2, 3, 4])
def test_adjoint_cases_multi_rank(mpirun, nprocs):
    runner = Path(__file__).resolve().parent / "case_runner.py"
    out = mpirun(str(runner), nprocs, timeout=600, args=("adjoint_cases",)).stdout
    assert [line for line in out.splitlines() if line.startswith("MISMATCH")] == []
    assert f"CHECKED {len(load_cases(ranks=nprocs))}" in out


def test_issue_example_numbers():
    # tests/data/expected_numbers.md (ex-01-adjoint): max_levels=1 gives the closed-form J = 0.036 and
    # dJ/dlam = 0.0192 to 1e-14; objective window [5, 10] gives J = 1.082478474995241e-05,
    # dJ/dlam = 7.792783883970835e-05 (closed form; XBraid's case adj-tobj-5-10-ml1).
    import pyxbraid as xb

    s = xb.Solver(
        xb.apps.LinearODE(objective="mean_square"), 0.0, 25.0, 50, comm=MPI.COMM_SELF, max_levels=1, adjoint=True
    )
    r = s.solve()
    assert r.objective == pytest.approx(0.036, abs=1e-14)
    assert s.gradient() == pytest.approx(0.0192, abs=1e-14)
    s = xb.Solver(
        xb.apps.LinearODE(objective="mean_square"),
        0.0,
        25.0,
        50,
        comm=MPI.COMM_SELF,
        max_levels=1,
        adjoint=True,
        tstart_objective=5.0,
        tstop_objective=10.0,
    )
    r = s.solve()
    assert r.objective == pytest.approx(1.082478474995241e-05, rel=1e-13)
    assert s.gradient() == pytest.approx(7.792783883970835e-05, rel=1e-13)
