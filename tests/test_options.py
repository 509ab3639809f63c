"""Every option of pyxbraid.Solver is validated before any work is done.

Bad values raise ValueError or TypeError whose message names the option and
the offending value; valid per-level values are accepted and actually used;
the defaults are XBraid's (except print_level, documented).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from apps_python import Decay
from mpi4py import MPI

import pyxbraid as xb

SCRIPTS = Path(__file__).resolve().parent / "scripts"


def make(app=None, tstart=0.0, tstop=1.0, ntime=8, **kw):
    kw.setdefault("comm", MPI.COMM_SELF)
    if app is None:  # full_residual_norm needs the app's residual
        app = xb.apps.LinearODE(residual=kw.get("full_residual_norm") is True or kw.get("full_residual_norm") == 1)
    return xb.Solver(app, tstart, tstop, ntime, **kw)


def msg(text: str) -> str:
    """A match= pattern for a literal message fragment."""
    return re.escape(text)


# --------------------------------------------------------------------------------------
# Validation happens before any callback runs
# --------------------------------------------------------------------------------------
def test_bad_option_runs_no_callback():
    app = Decay()
    with pytest.raises(ValueError, match=msg("cfactor must be >= 2, got 1")):
        make(app, cfactor=1)
    with pytest.raises(ValueError, match=msg("max_iter must be >= 1, got 0")):
        make(app, max_iter=0)
    assert sum(app.calls.values()) == 0


# --------------------------------------------------------------------------------------
# Integer options
# --------------------------------------------------------------------------------------
INT_OPTIONS = [
    "max_levels",
    "min_coarse",
    "cfactor",
    "nrelax",
    "max_iter",
    "tnorm",
    "nfmg",
    "nfmg_vcyc",
    "storage",
    "access_level",
    "print_level",
    "delta_rank",
    "defer_delta_level",
    "defer_delta_iter",
]


@pytest.mark.parametrize("name", INT_OPTIONS)
@pytest.mark.parametrize("value", [True, False, np.True_], ids=["True", "False", "np.True_"])
def test_bool_where_int_expected_is_type_error(name, value):
    # (numpy bools are not numbers.Number: the per-level options say so.)
    pattern = rf"{name} must be (an int|a number or a sequence of numbers per level), got {msg(repr(value))}"
    with pytest.raises(TypeError, match=pattern):
        make(**{name: value})


@pytest.mark.parametrize("name", INT_OPTIONS)
@pytest.mark.parametrize("value", [2.0, 2.5, np.float64(3.0)], ids=["2.0", "2.5", "np.float64"])
def test_float_where_int_expected_is_type_error(name, value):
    with pytest.raises(TypeError, match=msg(f"{name} must be an int, got {value!r}")):
        make(**{name: value})


@pytest.mark.parametrize(
    "name",
    ["max_levels", "min_coarse", "max_iter", "tnorm", "nfmg", "nfmg_vcyc", "storage", "access_level", "print_level"],
)
@pytest.mark.parametrize("value", ["3", None, [3]], ids=["str", "None", "list"])
def test_non_number_where_int_expected_is_type_error(name, value):
    with pytest.raises(TypeError, match=msg(f"{name} must be an int, got {value!r}")):
        make(**{name: value})


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("max_levels", 0, "max_levels must be >= 1, got 0"),
        ("max_levels", -3, "max_levels must be >= 1, got -3"),
        ("min_coarse", 0, "min_coarse must be >= 1, got 0"),
        ("cfactor", 1, "cfactor must be >= 2, got 1"),
        ("cfactor", 0, "cfactor must be >= 2, got 0"),
        ("cfactor", -2, "cfactor must be >= 2, got -2"),
        ("nrelax", -1, "nrelax must be >= 0, got -1"),
        ("max_iter", 0, "max_iter must be >= 1, got 0"),
        ("tnorm", 0, "tnorm must be 1, 2 or 3, got 0"),
        ("tnorm", 4, "tnorm must be 1, 2 or 3, got 4"),
        ("nfmg", -2, "nfmg must be >= -1, got -2"),
        ("nfmg_vcyc", 0, "nfmg_vcyc must be >= 1, got 0"),
        ("storage", -2, "storage must be >= -1, got -2"),
        ("access_level", -1, "access_level must be 0, 1 or 2, got -1"),
        ("access_level", 3, "access_level must be 0, 1 or 2, got 3"),
        ("print_level", -1, "print_level must be 0, 1, 2 or 3, got -1"),
        ("print_level", 4, "print_level must be 0, 1, 2 or 3, got 4"),
    ],
)
def test_int_out_of_range_is_value_error(name, value, message):
    with pytest.raises(ValueError, match=msg(message)):
        make(**{name: value})


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_levels=np.int64(3)),
        dict(max_levels=np.uint8(3)),
        dict(min_coarse=np.int32(2)),
        dict(cfactor=np.int16(4)),
        dict(tnorm=np.int64(3)),
        dict(nfmg=-1, fmg=True),
        dict(storage=0),
        dict(access_level=0),
        dict(print_level=0),
    ],
    ids=repr,
)
def test_valid_integers_are_accepted(kw):
    solver = make(**kw)
    assert solver.solve().converged


def test_numpy_integer_max_levels_is_used():
    assert make(ntime=64, max_levels=np.int64(3)).level_sizes == (65, 33, 17)
    assert make(ntime=64, max_levels=np.uint8(1)).level_sizes == (65,)


# --------------------------------------------------------------------------------------
# Boolean options
# --------------------------------------------------------------------------------------
BOOL_OPTIONS = [
    "fmg",
    "skip",
    "seq_soln",
    "residual_computation",
    "relax_only_cg",
    "final_fc_relax",
    "full_residual_norm",
    "virtual_time",
]


@pytest.mark.parametrize("name", BOOL_OPTIONS)
@pytest.mark.parametrize(
    "value",
    [2, -1, 0.5, 1.0, "yes", "True", None, [True]],
    ids=["2", "-1", "0.5", "1.0", "yes", "True-str", "None", "list"],
)
def test_bad_bool_is_type_error(name, value):
    with pytest.raises(TypeError, match=msg(f"{name} must be True/False (or 0/1), got {value!r}")):
        make(**{name: value})


@pytest.mark.parametrize("name", BOOL_OPTIONS)
@pytest.mark.parametrize(
    "value",
    [True, False, 0, 1, np.True_, np.False_, np.int64(1)],
    ids=["True", "False", "0", "1", "np.True_", "np.False_", "np.int64(1)"],
)
def test_bool_like_values_are_accepted(name, value):
    solver = make(**{name: value})
    assert solver.solve().iterations >= 0


# --------------------------------------------------------------------------------------
# Per-level sequences: cfactor, nrelax, cwt
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cfactor", "nrelax", "cwt"])
@pytest.mark.parametrize("empty", [[], (), np.array([], dtype=np.int64)], ids=["list", "tuple", "ndarray"])
def test_empty_per_level_sequence_is_value_error(name, empty):
    with pytest.raises(ValueError, match=msg(f"{name} must not be an empty sequence")):
        make(**{name: empty})


@pytest.mark.parametrize(
    "name, value, exc, message",
    [
        ("cfactor", [2, 1], ValueError, "cfactor[1] must be >= 2, got 1"),
        ("cfactor", (4, 2, 0), ValueError, "cfactor[2] must be >= 2, got 0"),
        ("cfactor", [2, 2.5], TypeError, "cfactor[1] must be an int, got 2.5"),
        ("cfactor", [2, True], TypeError, "cfactor[1] must be an int, got True"),
        ("cfactor", [1, 2], ValueError, "cfactor[0] must be >= 2, got 1"),
        ("cfactor", np.array([2, 1]), ValueError, "cfactor[1] must be >= 2, got 1"),
        ("nrelax", [1, -1], ValueError, "nrelax[1] must be >= 0, got -1"),
        ("nrelax", [1, 1.0], TypeError, "nrelax[1] must be an int, got 1.0"),
        ("nrelax", [False, 1], TypeError, "nrelax[0] must be an int, got False"),
        ("cwt", [1.0, 0.0], ValueError, "cwt[1] must be > 0, got 0.0"),
        ("cwt", [1.0, -0.5], ValueError, "cwt[1] must be > 0, got -0.5"),
        ("cwt", [1.0, math.nan], ValueError, "cwt[1] must be finite, got nan"),
        ("cwt", [math.inf], ValueError, "cwt[0] must be finite, got inf"),
        ("cwt", [1.0, "a"], TypeError, "cwt[1] must be a real number, got 'a'"),
        ("cwt", [1.0, None], TypeError, "cwt[1] must be a real number, got None"),
    ],
)
def test_bad_per_level_entry_names_its_index(name, value, exc, message):
    with pytest.raises(exc, match=msg(message)):
        make(**{name: value})


@pytest.mark.parametrize("name", ["cfactor", "nrelax", "cwt"])
@pytest.mark.parametrize("value", ["2", b"2", None, object()], ids=["str", "bytes", "None", "object"])
def test_per_level_option_of_wrong_type(name, value):
    with pytest.raises(
        TypeError, match=msg(f"{name} must be a number or a sequence of numbers per level, got {value!r}")
    ):
        make(**{name: value})


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("cwt", 0.0, "cwt must be > 0, got 0.0"),
        ("cwt", -1.0, "cwt must be > 0, got -1.0"),
        ("cwt", math.nan, "cwt must be finite, got nan"),
        ("cwt", -math.inf, "cwt must be finite, got -inf"),
    ],
)
def test_bad_scalar_weight(name, value, message):
    with pytest.raises(ValueError, match=msg(message)):
        make(**{name: value})


def test_per_level_cfactor_is_used():
    # ntime = 64 intervals; level l coarsens by cfactor[l] (2 after the list):
    # 64 / 2 = 32, 32 / 4 = 8, 8 / 2 = 4, 4 / 2 = 2, then 2 / 2 = 1 < min_coarse = 2.
    assert make(ntime=64, cfactor=[2, 4]).level_sizes == (65, 33, 9, 5, 3)
    # 64 / 4 = 16, 16 / 2 = 8, 8 / 2 = 4, 4 / 2 = 2.
    assert make(ntime=64, cfactor=[4]).level_sizes == (65, 17, 9, 5, 3)
    # 64 / 8 = 8, then 8 / 8 = 1 < 2.
    assert make(ntime=64, cfactor=(8, 8)).level_sizes == (65, 9)
    # A per-level list equal to the global value is the same hierarchy.
    assert make(ntime=64, cfactor=[2] * 6).level_sizes == make(ntime=64).level_sizes == (65, 33, 17, 9, 5, 3)
    # cfactor=3: C-points 0, 3, ..., 63 (22 of them), then 0..21 -> 0..7 (8), then 0..2 (3).
    assert make(ntime=64, cfactor=3).level_sizes == (65, 22, 8, 3)


def test_per_level_cfactor_solves_correctly():
    solver = make(ntime=64, cfactor=[2, 4], abs_tol=1e-12)
    result = solver.solve()
    assert result.converged
    assert result.nlevels == 5
    assert solver.state_at(64)[0] == pytest.approx((1.0 / (1.0 + 1.0 / 64)) ** 64, rel=1e-10)


def _run(**kw):
    result = make(ntime=64, **kw).solve()
    return result.step_calls, result.iterations, result.residual_norms


def test_per_level_nrelax_is_used():
    default = _run()
    # A full list equal to the global value changes nothing.
    same = _run(nrelax=[1] * 6)
    assert same[:2] == default[:2]
    np.testing.assert_array_equal(same[2], default[2])
    # F-relaxation on level 0 only (other levels keep the default FCF) differs
    # both from FCF everywhere and from F-relaxation everywhere.
    level0_f = _run(nrelax=[0])
    all_f = _run(nrelax=0)
    assert level0_f[0] != default[0]
    assert level0_f[0] != all_f[0]
    assert level0_f[0] < default[0]  # F-relaxation on level 0 takes fewer steps than FCF
    # nrelax=[1, 0]: FCF on level 0, F on level 1.
    mixed = _run(nrelax=[1, 0])
    assert mixed[0] not in (default[0], level0_f[0], all_f[0])


def test_per_level_cwt_is_used():
    default = _run()
    over = _run(cwt=1.5)
    same = _run(cwt=[1.5] * 6)
    assert same[:2] == over[:2]
    np.testing.assert_array_equal(same[2], over[2])
    level1 = _run(cwt=[1.0, 1.5])
    # Weights change residuals, not the number of steps.
    assert level1[0] == default[0] == over[0]
    assert not np.array_equal(level1[2], default[2], equal_nan=True)
    assert not np.array_equal(level1[2], over[2], equal_nan=True)


def test_per_level_sequence_from_generator_and_ndarray():
    assert make(ntime=64, cfactor=(c for c in (2, 4))).level_sizes == (65, 33, 9, 5, 3)
    assert make(ntime=64, cfactor=np.array([2, 4])).level_sizes == (65, 33, 9, 5, 3)


# --------------------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["abs_tol", "rel_tol"])
@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, np.float64("nan")], ids=["nan", "inf", "-inf", "np.nan"]
)
def test_non_finite_tolerance(name, value):
    with pytest.raises(ValueError, match=msg(f"{name} must be finite, got {value!r}")):
        make(**{name: value})


@pytest.mark.parametrize("name", ["abs_tol", "rel_tol"])
def test_negative_tolerance(name):
    with pytest.raises(ValueError, match=msg(f"{name} must be >= 0, got -1e-06")):
        make(**{name: -1e-6})


@pytest.mark.parametrize("name", ["abs_tol", "rel_tol"])
@pytest.mark.parametrize("value", ["x", [1e-6], object()], ids=["str", "list", "object"])
def test_tolerance_of_wrong_type(name, value):
    with pytest.raises(TypeError, match=msg(f"{name} must be a real number, got {value!r}")):
        make(**{name: value})


def test_both_tolerances_is_value_error():
    with pytest.raises(
        ValueError, match=msg("give either abs_tol or rel_tol, not both (got abs_tol=1e-06, rel_tol=0.001)")
    ):
        make(abs_tol=1e-6, rel_tol=1e-3)


def test_zero_tolerances_are_valid():
    # abs_tol=0 can only stop at max_iter (unless the residual is exactly 0).
    result = make(ntime=64, abs_tol=0.0, max_iter=3).solve()
    assert result.iterations == 3 and not result.converged


def test_default_tolerance_is_relative_1e_9():
    # The LinearODE default problem (lam=-1, u0=1) on 64 steps: a default
    # solver converges, stopping at the first ||r_k|| < 1e-9 * ||r_1|| (||r_0||
    # is not available because skip is on, XBraid's reference is then ||r_1||).
    solver = make(ntime=64)
    result = solver.solve()
    assert result.converged is True
    norms = result.residual_norms
    assert math.isnan(norms[0])
    reference = norms[1]
    assert norms[-1] < 1e-9 * reference
    assert all(r >= 1e-9 * reference for r in norms[1:-1])
    # Same run as an explicit rel_tol=1e-9 ...
    explicit = make(ntime=64, rel_tol=1e-9).solve()
    assert explicit.iterations == result.iterations
    np.testing.assert_array_equal(explicit.residual_norms, norms)
    # ... but not an absolute 1e-9 that would have stopped earlier on a scaled
    # problem: u0 = 1e6 makes all residuals 1e6 times larger.
    big = xb.apps.LinearODE(u0=1e6, guess=0.456e6)
    assert make(big, ntime=64).solve().iterations == result.iterations
    assert make(big, ntime=64, abs_tol=1e-9).solve().iterations > result.iterations
    # A looser relative tolerance stops earlier.
    assert make(ntime=64, rel_tol=1e-6).solve().iterations < result.iterations


def test_other_defaults():
    app = Decay()

    class Counting(Decay):
        def access(self, u, status):
            self.calls["access"] += 1

    counting = Counting()
    solver = make(counting, ntime=64)
    result = solver.solve()
    # max_levels=30, min_coarse=2, cfactor=2: coarsen down to 3 points.
    assert solver.level_sizes == (65, 33, 17, 9, 5, 3)
    assert result.nlevels == solver.nlevels == 6
    # access_level=1: one access per fine point, after convergence.
    assert counting.calls["access"] == 65 == result.calls["access"]
    # max_iter=100: an unreachable tolerance stops at 100 iterations (this
    # problem's residual stalls at ~1e-17 and never becomes exactly 0, which
    # would count as converged).
    capped = make(app, tstop=5.0, ntime=64, abs_tol=0.0).solve()
    assert capped.iterations == 100 and not capped.converged


def test_default_print_level_is_silent(capsys):
    make(ntime=64).solve()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# --------------------------------------------------------------------------------------
# Time interval, ntime and user time grids
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tstart", "tstop"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_interval(name, value):
    kw = {"tstart": 0.0, "tstop": 1.0, name: value}
    with pytest.raises(ValueError, match=msg(f"{name} must be finite, got {value!r}")):
        make(**kw)


@pytest.mark.parametrize("name", ["tstart", "tstop"])
@pytest.mark.parametrize("value", ["abc", [0.0], object()], ids=["str", "list", "object"])
def test_interval_of_wrong_type(name, value):
    kw = {"tstart": 0.0, "tstop": 1.0, name: value}
    with pytest.raises(TypeError, match=msg(f"{name} must be a real number, got {value!r}")):
        make(**kw)


@pytest.mark.parametrize("tstart, tstop", [(1.0, 1.0), (1.0, 0.5), (0.0, -1e-300)])
def test_tstop_not_after_tstart(tstart, tstop):
    with pytest.raises(ValueError, match=msg(f"tstop must be > tstart, got tstart={tstart!r}, tstop={tstop!r}")):
        make(tstart=tstart, tstop=tstop)


@pytest.mark.parametrize(
    "value, exc, message",
    [
        (0, ValueError, "ntime must be >= 1, got 0"),
        (-4, ValueError, "ntime must be >= 1, got -4"),
        (8.0, TypeError, "ntime must be an int, got 8.0"),
        (True, TypeError, "ntime must be an int, got True"),
        ("8", TypeError, "ntime must be an int, got '8'"),
    ],
)
def test_bad_ntime(value, exc, message):
    with pytest.raises(exc, match=msg(message)):
        make(ntime=value)


@pytest.mark.parametrize(
    "missing, message",
    [
        (("tstart",), "Solver needs tstart (or a times array)"),
        (("tstop",), "Solver needs tstop (or a times array)"),
        (("ntime",), "Solver needs ntime (or a times array)"),
        (("tstart", "tstop", "ntime"), "Solver needs tstart, tstop, ntime (or a times array)"),
    ],
)
def test_missing_interval(missing, message):
    kw = {"tstart": 0.0, "tstop": 1.0, "ntime": 8}
    for name in missing:
        kw[name] = None
    with pytest.raises(TypeError, match=msg(message)):
        xb.Solver(xb.apps.LinearODE(), comm=MPI.COMM_SELF, **kw)


def grid_solver(times, **kw):
    return xb.Solver(xb.apps.LinearODE(), comm=MPI.COMM_SELF, times=times, **kw)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_times(bad):
    with pytest.raises(ValueError, match=msg("times must be finite")):
        grid_solver([0.0, 0.5, bad, 2.0])


@pytest.mark.parametrize(
    "times, k",
    [([0.0, 1.0, 1.0], 1), ([0.0, 2.0, 1.0, 3.0], 1), ([3.0, 2.0], 0), ([0.0, 0.1, 0.2, 0.2], 2)],
)
def test_non_increasing_times(times, k):
    pattern = rf"times must be strictly increasing; times\[{k + 1}\]=.*{times[k + 1]}.* <= times\[{k}\]=.*{times[k]}"
    with pytest.raises(ValueError, match=pattern):
        grid_solver(times)


@pytest.mark.parametrize("times", [[0.0], [], [[0.0, 1.0], [2.0, 3.0]], 5.0], ids=["one", "empty", "2-D", "scalar"])
def test_times_of_bad_shape(times):
    shape = np.asarray(times, dtype=float).shape
    with pytest.raises(ValueError, match=msg(f"times must be a 1-D sequence of at least 2 values, got shape {shape}")):
        grid_solver(times)


def test_times_length_must_match_ntime():
    with pytest.raises(ValueError, match=msg("times must hold ntime + 1 = 5 values, got 3")):
        grid_solver([0.0, 0.5, 1.0], ntime=4)
    with pytest.raises(ValueError, match=msg("times must hold ntime + 1 = 2 values, got 3")):
        grid_solver([0.0, 0.5, 1.0], ntime=1)
    with pytest.raises(TypeError, match=msg("ntime must be an int, got 2.0")):
        grid_solver([0.0, 0.5, 1.0], ntime=2.0)


def test_times_must_agree_with_tstart_tstop():
    with pytest.raises(ValueError, match=r"tstart=0\.5 differs from times\[0\]=.*0\.0"):
        grid_solver([0.0, 0.5, 1.0], tstart=0.5)
    with pytest.raises(ValueError, match=r"tstop=2\.0 differs from times\[-1\]=.*1\.0"):
        grid_solver([0.0, 0.5, 1.0], tstop=2.0)
    with pytest.raises(ValueError, match=msg("tstop must be finite, got nan")):
        grid_solver([0.0, 0.5, 1.0], tstop=math.nan)


def test_valid_times_are_used():
    times = [0.0, 0.1, 0.3, 0.6, 1.0]
    solver = grid_solver(times, ntime=4, tstart=0.0, tstop=1.0, max_levels=1)
    np.testing.assert_array_equal(solver.times, times)
    solver.solve()
    expected = 1.0
    for dt in np.diff(times):
        expected /= 1.0 + dt
    assert solver.state_at(4)[0] == pytest.approx(expected, rel=1e-14)


# --------------------------------------------------------------------------------------
# Keywords, communicator, app
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["foo", "maxlevels", "tol", "cf"])
def test_unknown_keyword(name):
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{name}'"):
        make(**{name: 1})


def test_options_are_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, MPI.COMM_SELF)


@pytest.mark.parametrize(
    "comm, name",
    [
        (5, "int"),
        ("world", "str"),
        (MPI.COMM_SELF.Get_group(), "Group"),
        (object(), "object"),
        ([MPI.COMM_SELF], "list"),
    ],
    ids=["int", "str", "Group", "object", "list"],
)
def test_wrong_comm_type(comm, name):
    try:
        with pytest.raises(TypeError, match=msg(f"comm must be an mpi4py.MPI.Comm (e.g. MPI.COMM_WORLD), got {name}")):
            make(comm=comm)
    finally:
        if isinstance(comm, MPI.Group):
            comm.Free()


def test_comm_null():
    with pytest.raises(ValueError, match=msg("comm is MPI.COMM_NULL")):
        make(comm=MPI.COMM_NULL)


def test_default_comm_is_world():
    solver = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8)
    assert solver.comm == MPI.COMM_WORLD


@pytest.mark.parametrize(
    "app, name",
    [(5, "int"), (None, "NoneType"), (Decay, "type"), ("LinearODE", "str")],
    ids=["int", "None", "class", "str"],
)
def test_app_must_be_an_app(app, name):
    with pytest.raises(
        TypeError, match=msg(f"app must be a pyxbraid.App subclass instance or a pyxbraid.apps app, got {name}")
    ):
        xb.Solver(app, 0.0, 1.0, 8, comm=MPI.COMM_SELF)


def test_app_without_super_init():
    class Forgetful(xb.App):
        def __init__(self):
            self.lam = -1.0

        def init(self, t, u):
            u[:] = 1.0

        def step(self, u, ustop, fstop, status):
            u *= 0.5

    with pytest.raises(TypeError, match=msg("Forgetful.__init__ must call super().__init__(shape=...)")):
        make(Forgetful())


@pytest.mark.parametrize("missing", ["init", "step"])
def test_app_missing_required_callback(missing):
    def init(self, t, u):
        u[:] = 1.0

    def step(self, u, ustop, fstop, status):
        u *= 0.5

    methods = {"init": init, "step": step}
    del methods[missing]
    cls = type("Partial", (xb.App,), {"__init__": lambda self: xb.App.__init__(self, shape=1), **methods})
    with pytest.raises(TypeError, match=msg(f"Partial must implement {missing}() (see pyxbraid.App.{missing})")):
        make(cls())


@pytest.mark.parametrize(
    "shape, exc, message",
    [
        (0, ValueError, "shape entries must be integers >= 1, got (0,)"),
        (-3, ValueError, "shape entries must be integers >= 1, got (-3,)"),
        ((), ValueError, "shape must have at least one dimension, got ()"),
        ((2, -1), ValueError, "shape entries must be integers >= 1, got (2, -1)"),
        ((2, 0), ValueError, "shape entries must be integers >= 1, got (2, 0)"),
        ((2, 2.0), ValueError, "shape entries must be integers >= 1, got (2, 2.0)"),
        ((2, True), ValueError, "shape entries must be integers >= 1, got (2, True)"),
        ("x", ValueError, "shape entries must be integers >= 1, got 'x'"),
        (2.0, TypeError, "shape must be an int or a tuple of ints, got 2.0"),
        (None, TypeError, "shape must be an int or a tuple of ints, got None"),
    ],
)
def test_app_shape_validation(shape, exc, message):
    with pytest.raises(exc, match=msg(message)):
        xb.App(shape=shape)


@pytest.mark.parametrize(
    "shape, expected", [(3, (3,)), ((2, 3), (2, 3)), ([4], (4,)), (np.int64(5), (5,)), ((np.int32(2), 2), (2, 2))]
)
def test_app_shape_accepted(shape, expected):
    assert xb.App(shape=shape).shape == expected


def test_app_shape_is_used():
    solver = make(Decay(shape=(2, 3)), ntime=4, max_levels=1)
    solver.solve()
    state = solver.state_at(4)
    assert state.shape == (2, 3)
    np.testing.assert_allclose(state, np.full((2, 3), 1.0 / 1.25**4), rtol=1e-14)
    assert solver.local_states().shape == (5, 2, 3)


# --------------------------------------------------------------------------------------
# Native apps
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, exc, message",
    [
        (dict(lam=math.nan), ValueError, "lam must be finite, got nan"),
        (dict(lam=math.inf), ValueError, "lam must be finite, got inf"),
        (dict(lam=[-1.0, math.nan]), ValueError, "lam must be finite, got [-1.0, nan]"),
        (dict(lam=[]), ValueError, "lam must be a number or a non-empty 1-D sequence, got []"),
        (dict(lam=[[1.0]]), ValueError, "lam must be a number or a non-empty 1-D sequence, got [[1.0]]"),
        (dict(lam=True), ValueError, "lam must be a number or a non-empty 1-D sequence, got True"),
        (dict(scheme="rk4"), ValueError, "scheme must be 'backward_euler' or 'forward_euler', got 'rk4'"),
        (dict(scheme=None), ValueError, "scheme must be 'backward_euler' or 'forward_euler', got None"),
        (dict(residual=1), TypeError, "residual must be True or False, got 1"),
        (dict(u0=math.nan), ValueError, "u0 must be finite, got nan"),
        (dict(u0="a"), TypeError, "u0 must be a real number, got 'a'"),
        (dict(guess=math.inf), ValueError, "guess must be finite, got inf"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_linear_ode_validation(kw, exc, message):
    with pytest.raises(exc, match=msg(message)):
        xb.apps.LinearODE(**kw)


@pytest.mark.parametrize(
    "kw, exc, message",
    [
        (dict(nspace=2), ValueError, "nspace must be >= 3, got 2"),
        (dict(nspace=0), ValueError, "nspace must be >= 3, got 0"),
        (dict(nspace=33.0), TypeError, "nspace must be an int, got 33.0"),
        (dict(nspace=True), TypeError, "nspace must be an int, got True"),
        (dict(guess="foo"), ValueError, "guess must be 'random', 'xbraid' or 'zero', got 'foo'"),
        (dict(residual="yes"), TypeError, "residual must be True or False, got 'yes'"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_heat1d_validation(kw, exc, message):
    with pytest.raises(exc, match=msg(message)):
        xb.apps.Heat1D(**kw)


def test_native_apps_valid_parameters_are_used():
    ode = xb.apps.LinearODE(lam=[-1.0, -2.0], u0=2.0, scheme="forward_euler")
    assert ode.shape == (2,)
    solver = make(ode, ntime=4, max_levels=1)
    solver.solve()
    np.testing.assert_allclose(solver.state_at(4), [2.0 * 0.75**4, 2.0 * 0.5**4], rtol=1e-14)
    heat = xb.apps.Heat1D(nspace=5, guess="zero")
    assert heat.shape == (5,)
    assert heat.dx == pytest.approx(math.pi / 4)
    solver = make(heat, ntime=4, max_levels=1)
    solver.solve()
    state = solver.state_at(0)
    np.testing.assert_allclose(state, heat.exact(0.0), atol=1e-15)
    assert state.shape == (5,)


# --------------------------------------------------------------------------------------
# Communicator size
# --------------------------------------------------------------------------------------
def test_fewer_time_points_than_ranks(mpirun):
    ranks = mpirun.json(str(SCRIPTS / "too_few_points.py"), 3, timeout=120)
    error = {
        "type": "ValueError",
        "rank": None,
        "message": "ntime=1 gives 2 time points, fewer than the 3 ranks of comm; use more time steps or fewer ranks",
    }
    # ntime=2: 3 points on 3 ranks is fine (sequential: 2 <= min_coarse),
    # backward Euler u / (1 + 0.5) twice.
    assert ranks == [{"1": error, "2": {"ok": 1.0 / 1.5 / 1.5}}] * 3


# --------------------------------------------------------------------------------------
# state_at index validation
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def solved():
    solver = make(ntime=8, max_levels=1)
    solver.solve()
    return solver


@pytest.mark.parametrize("index", [9, 100, -10, -1000])
def test_state_at_out_of_range(solved, index):
    with pytest.raises(IndexError, match=msg(f"index must be in [-9, 8], got {index}")):
        solved.state_at(index)


@pytest.mark.parametrize("index, expected", [(-1, 8), (-9, 0), (-2, 7), (0, 0), (8, 8), (np.int64(-3), 6)])
def test_state_at_negative_counts_from_end(solved, index, expected):
    exact = (1.0 / (1.0 + 1.0 / 8)) ** expected
    assert solved.state_at(index)[0] == pytest.approx(exact, rel=1e-14)
    np.testing.assert_array_equal(solved.state_at(index), solved.state_at(expected))


@pytest.mark.parametrize("index", [True, 1.0, "1", None])
def test_state_at_index_type(solved, index):
    with pytest.raises(TypeError, match=msg(f"index must be an int, got {index!r}")):
        solved.state_at(index)


def test_state_at_before_solve():
    solver = make()
    with pytest.raises(RuntimeError, match=msg("solve() has not been called yet")):
        solver.state_at(0)
    with pytest.raises(RuntimeError, match=msg("solve() has not been called yet")):
        solver.local_states()
