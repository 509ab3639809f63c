"""pyxbraid reproduces recorded XBraid runs of the advanced features, on 1 and 2 ranks.

The runs (tests/data/xbraid_advanced_reference.json, recorded as
tests/data/xbraid_advanced_reference.md describes) are replayed by
``advanced_cases``: same iterations and levels, residual histories (and full
residual norms) to the precision ``advanced_cases.RTOL`` states, solutions,
and the callbacks' view (sync calls). The public runs of
``../shared/data/xbraid-advanced`` are checked too where that file exists.
"""

from pathlib import Path

import advanced_cases as ac
import pytest
from mpi4py import MPI

RUNNER = Path(__file__).resolve().parent / "scripts" / "advanced_runner.py"
FEATURES = {
    "full_rnorm_sync": ["full_rnorm", "full_rnorm_sync", "sync"],
    "periodic": ["periodic"],
    "refine": ["refine"],
    "richardson": ["richardson"],
    "shell": ["shell"],
    "delta": ["delta"],
}
ONE_RANK = [r for r in ac.load_runs(nprocs=1) if r["feature"] in sum(FEATURES.values(), [])]


@pytest.mark.parametrize("run", ONE_RANK, ids=[r["id"] for r in ONE_RANK])
def test_run_one_rank(run):
    assert ac.compare(run, ac.execute(run, MPI.COMM_SELF)) == []


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_runs_two_ranks(mpirun, feature):
    ranks = mpirun.json(str(RUNNER), 2, timeout=300, args=FEATURES[feature])
    expected = [r["id"] for r in ac.load_runs(nprocs=2) if r["feature"] in FEATURES[feature]]
    assert ranks[0]["checked"] == expected and expected
    assert ranks[0]["mismatches"] == []


PUBLIC = {
    "f_full_rnorm_and_sync": "ex-03",
    "c_periodic": "ex-01-expanded",
    "e_frefine": "ex-01-refinement",
    "b_richardson": "ex-06",
    "g_bdf2_shell": "ex-01-expanded-bdf2",
    "d_delta_correction": "ex-07",
}


@pytest.mark.parametrize("feature", sorted(PUBLIC))
def test_public_runs(feature):
    runs = ac.public_runs(feature)
    if not runs:
        pytest.skip("../shared/data/xbraid-advanced/public_runs.json is not here")
    for run in runs:
        run = ac.as_recorded(run)
        assert ac.compare(run, ac.execute(run, MPI.COMM_SELF)) == []


def test_public_shell_run_two_ranks(mpirun):
    # The public run 47 (recorded on 1 rank) replayed on 2 ranks: the same numbers.
    runs = ac.public_runs("g_bdf2_shell")
    if not runs:
        pytest.skip("../shared/data/xbraid-advanced/public_runs.json is not here")
    ranks = mpirun.json(str(RUNNER), 2, timeout=300, args=["public=g_bdf2_shell"])
    assert ranks[0]["checked"] == [r["id"] for r in runs]
    assert ranks[0]["mismatches"] == []


@pytest.mark.parametrize("nprocs", [2, 3])
def test_public_delta_run_several_ranks(mpirun, nprocs):
    # The public run 23 (ex-07, recorded on 1 rank) replayed on 2 and 3 ranks: the basis
    # vectors travel with the states; the same numbers (residuals to 1e-10, states, exponents).
    runs = ac.public_runs("d_delta_correction")
    if not runs:
        pytest.skip("../shared/data/xbraid-advanced/public_runs.json is not here")
    ranks = mpirun.json(str(RUNNER), nprocs, timeout=300, args=["public=d_delta_correction"])
    assert ranks[0]["checked"] == [r["id"] for r in runs]
    assert ranks[0]["mismatches"] == []


def test_delta_runs_three_ranks(mpirun):
    # ex-07 recorded on 3 ranks (XBraid's own 3-rank runs): the Python App Lorenz
    ranks = mpirun.json(str(RUNNER), 3, timeout=300, args=["delta"])
    expected = [r["id"] for r in ac.load_runs(nprocs=3) if r["feature"] == "delta"]
    assert ranks[0]["checked"] == expected and len(expected) == 11
    assert ranks[0]["mismatches"] == []


def test_public_richardson_run_numbers():
    # public run 08 (ex-06 -richardson): what the comparison above holds pyxbraid to
    runs = ac.public_runs("b_richardson")
    if not runs:
        pytest.skip("../shared/data/xbraid-advanced/public_runs.json is not here")
    run = ac.as_recorded(runs[0])
    got = ac.execute(run, MPI.COMM_SELF)
    assert (got["iterations"], got["nlevels"]) == (7, 6)
    assert got["rnorms"][-1] == pytest.approx(7.269388834161434e-13, rel=1e-12)
    assert got["printed_final"] == pytest.approx([0.5, 0.2805504051820713, 7.39795690007927e-06], abs=1e-15)
    assert set(got["estimate"]) == {-1.0}  # richardson without error estimation: none


def test_periodic_odd_level_deviation():
    # XBraid's stock build, for a periodic problem with a level of odd size that is not the
    # coarsest (ex-01-refinement -periodic: 100, 50, 25, 13, 7, 4 points), sends a ghost value
    # no rank receives; every later message then arrives one late (13 iterations). With that
    # one decision fixed (the point after a level's last point is index 0), XBraid gives
    # pyxbraid's numbers exactly (the "-fixed" run, checked above); the stock run differs.
    stock = ac.load_runs(nprocs=1, ids=["ex01-refinement-periodic"], deviations=True)[0]
    fixed = ac.load_runs(nprocs=1, ids=["ex01-refinement-periodic-fixed"])[0]
    got = ac.execute(stock, MPI.COMM_SELF)
    assert ac.compare(fixed, got) == []
    assert (stock["iterations"], got["iterations"]) == (13, 3)


def test_public_refinement_run_two_ranks(mpirun):
    # The public run 31 (ex-01-refinement -refine 1, recorded on 1 rank) replayed on 2 ranks.
    runs = ac.public_runs("e_frefine")
    if not runs:
        pytest.skip("../shared/data/xbraid-advanced/public_runs.json is not here")
    ranks = mpirun.json(str(RUNNER), 2, timeout=300, args=["public=e_frefine"])
    assert ranks[0]["checked"] == [r["id"] for r in runs]
    assert ranks[0]["mismatches"] == []


def test_public_refinement_run_numbers():
    # public run 31: 5 iterations, 8 levels, r_1 printed twice (the refining cycle), 298 steps
    runs = ac.public_runs("e_frefine")
    if not runs:
        pytest.skip("../shared/data/xbraid-advanced/public_runs.json is not here")
    run = ac.as_recorded(runs[0])
    got = ac.execute(run, MPI.COMM_SELF)
    assert (got["iterations"], got["nlevels"], got["nrefine"]) == (5, 8, 1)
    assert got["cycle_iters"] == [0, 1, 1, 2, 3, 4]
    assert got["cycle_rnorms"][1:3] == pytest.approx([0.1310742133542689, 0.006789719930884322], rel=1e-12)
    assert len(got["t"]) == 299 and got["t"][-1] == 5.0
    assert got["solution"][-1] == pytest.approx(0.0075862890746359, rel=1e-13)


def test_refinement_runs_three_ranks(mpirun):
    # The 1-rank ex-01-refinement and ex-06 -refinet runs on 3 ranks: the same numbers
    # (a new block distribution after each refinement; ex-02's random guesses are per rank).
    ranks = mpirun.json(str(RUNNER), 3, timeout=300, args=["onerank=refine"])
    expected = [r["id"] for r in ac.load_runs(nprocs=1) if r["feature"] == "refine" and r["program"] != "ex-02"]
    assert ranks[0]["checked"] == expected and len(expected) == 13
    assert ranks[0]["mismatches"] == []
