"""Virtual time: the clock model's logic, identical numerics, the options and the result field.

The model's rules are checked deterministically with ``virtual_step_cost``
(every step call costs exactly that, everything else nothing), against
critical paths worked out by hand from the engine's order of operations;
with round numbers (cost 1, latency 0.5, bandwidth 8 bytes/s: a one-value
message takes 1.5) every sum is exact in binary, so the checks are equalities.
No test here times anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from apps_python import BatchedDecay
from mpi4py import MPI

import pyxbraid as xb

# A one-value state (8 bytes) or norm: latency 0.5 + 8 bytes / 8 bytes/s = 1.5 per message.
MODEL = dict(virtual_time=True, virtual_step_cost=1.0, virtual_latency=0.5, virtual_bandwidth=8.0)
MESSAGE = 1.5


def depth(ranks: int) -> int:
    """Rounds of a reduction over ``ranks`` ranks: ceil(log2 ranks)."""
    return (ranks - 1).bit_length()


def make(ntime=8, app=None, **kw):
    kw.setdefault("comm", MPI.COMM_SELF)
    return xb.Solver(xb.apps.LinearODE() if app is None else app, 0.0, 1.0, ntime, **kw)


# -- the result field -----------------------------------------------------------------------


def test_off_by_default_and_reported_as_none():
    assert make(max_levels=2).solve().virtual_wall_time is None


@pytest.mark.parametrize("batched", [False, True])
def test_one_rank_fixed_cost_is_the_number_of_steps(batched):
    # A step_batch call of k rows is k steps (the cost model counts steps, not calls).
    app = BatchedDecay() if batched else xb.apps.LinearODE()
    r = make(64, app=app, max_levels=3, abs_tol=1e-12, **MODEL).solve()
    assert r.iterations > 1
    assert (r.calls["step_batch"] > 0) == batched
    assert r.virtual_wall_time == float(r.step_calls)  # no message, no reduction round on one rank


def test_one_rank_fixed_cost_counts_adjoint_steps_too():
    s = make(32, app=xb.apps.LinearODE(objective="mean_square"), max_levels=2, adjoint=True, **MODEL)
    r = s.solve()
    assert r.calls["step_adjoint"] > 0
    assert r.virtual_wall_time == float(r.calls["step"] + r.calls["step_adjoint"])


def test_the_step_cost_scales_the_clock():
    one = make(32, max_levels=2, **MODEL).solve().virtual_wall_time
    quarter = make(32, max_levels=2, **{**MODEL, "virtual_step_cost": 0.25}).solve().virtual_wall_time
    assert quarter == one / 4


class Burner(xb.App):
    """u' = -u; each step burns ``cpu`` seconds of thread CPU time or sleeps ``sleep`` seconds."""

    def __init__(self, cpu=0.0, sleep=0.0):
        super().__init__(shape=(1,))
        self.cpu, self.sleep = cpu, sleep

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.5

    def step(self, u, ustop, fstop, status):
        import time

        if self.cpu:
            end = time.thread_time() + self.cpu
            while time.thread_time() < end:
                pass
        if self.sleep:
            time.sleep(self.sleep)
        u /= 1.0 + status.dt


def test_python_callbacks_cpu_time_counts_and_sleeping_does_not():
    # CPU time, not wall time: what a callback computes counts, time it spends
    # descheduled (here: asleep) does not. Bounds, not timings: 10 steps burn at
    # least 10 x 5 ms of CPU; 10 steps asleep for 30 ms each use almost none.
    busy = make(10, app=Burner(cpu=5e-3), max_levels=1, virtual_time=True).solve()
    assert busy.virtual_wall_time >= 10 * 5e-3
    asleep = make(10, app=Burner(sleep=30e-3), max_levels=1, virtual_time=True).solve()
    assert asleep.wall_time >= 10 * 30e-3
    assert asleep.virtual_wall_time < 0.1 * asleep.wall_time


# -- the model's rules on several ranks, against hand-computed critical paths -------------------

CRITICAL_PATHS = """
from mpi4py import MPI
import pyxbraid as xb
MODEL = dict(virtual_time=True, virtual_step_cost=1.0, virtual_latency=0.5, virtual_bandwidth=8.0)
out = {}
for n in (5, 8, 11):   # sequential marching: a pipeline through the ranks
    r = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, n, max_levels=1, **MODEL).solve()
    out[f"pipeline {n}"] = r.virtual_wall_time
for latency, bandwidth in ((0.5, 8.0), (3.0, 8.0), (0.0, 1e300)):   # one FC relaxation, then an F-sweep
    s = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, max_levels=1, relax_only_cg=True, skip=False, abs_tol=1e-10,
                  **{**MODEL, "virtual_latency": latency, "virtual_bandwidth": bandwidth})
    r = s.solve()
    out[f"fc {latency} {bandwidth}"] = [r.virtual_wall_time, r.iterations]
r = xb.Solver(xb.apps.LinearODE(objective="mean_square"), 0.0, 1.0, 5, max_levels=1, adjoint=True, **MODEL).solve()
out["adjoint"] = r.virtual_wall_time
r = xb.Solver(xb.apps.LinearODE(lam=[-1.0] * 4), 0.0, 1.0, 5, max_levels=1, **MODEL).solve()   # 32-byte states
out["bytes"] = r.virtual_wall_time
report(out)
"""


# The FC-relaxation case (9 points, C-points every 2nd, one FC relaxation then the final F-sweep),
# worked out by hand for each (latency, bandwidth), steps costing 1:
# - 1 rank: 8 relaxation steps and 4 F-sweep steps, nothing else: 12.
# - 2 ranks, rank 0 holding 0..4 and rank 1 5..8, a message taking m. FC relaxation: rank 0 sends the
#   OLD u4 at once (clock 0) and steps 3, 4, 1, 2 (clock 4); rank 1 steps 7, 8 (clock 2), then needs
#   u4: clock max(2, m), and steps 5, 6: max(2, m) + 2. F-sweep: rank 0 sends u4 at 4 and steps 3, 1
#   (clock 6); rank 1 steps 7 (max(2, m) + 3), needs u4: max(that, 4 + m), steps 5. The closing
#   reduction: the later clock + m. With m = 1.5 the receiver is ahead of the message in the
#   relaxation and behind it in the sweep; with m = 4 the message is late both times.
# - 3 ranks holding 0..2, 3..5, 6..8, m = 1.5. FC relaxation: rank 0 sends the old u2 at 0, steps 1, 2
#   (2); rank 1 steps 5 from its own u4 and sends u5 at 1, needs u2: max(1, m) = 1.5, steps 3, 4
#   (3.5); rank 2 steps 7, 8 (2), needs u5: max(2, 1 + m) = 2.5, steps 6 (3.5). F-sweep: rank 0 sends
#   u2 at 2, steps 1 (3); rank 1 steps 5 (4.5), needs u2: max(4.5, 2 + m), steps 3 (5.5); rank 2 steps
#   7 (4.5). Closing reduction over three ranks, two rounds: 5.5 + 2m = 8.5.
def fc_two_ranks(m):
    return max(6, max(max(2, m) + 3, 4 + m) + 1) + m


FC_EXPECTED = {
    1: {"fc 0.5 8.0": 12.0, "fc 3.0 8.0": 12.0, "fc 0.0 1e+300": 12.0},
    2: {"fc 0.5 8.0": fc_two_ranks(1.5), "fc 3.0 8.0": fc_two_ranks(4.0), "fc 0.0 1e+300": fc_two_ranks(0.0)},
    3: {"fc 0.5 8.0": 8.5},
}


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_critical_paths(mpirun, ranks):
    results = mpirun.json(CRITICAL_PATHS, ranks, timeout=120)
    for out in results:
        assert out == results[0]  # the same on every rank
    out = results[0]
    # Sequential marching is a pipeline: rank r steps its points once rank r-1 sent its last state;
    # all n steps lie on the critical path, with ranks - 1 messages, then the solve's closing
    # reduction (depth(ranks) rounds of a message).
    for n in (5, 8, 11):
        assert out[f"pipeline {n}"] == n + (ranks - 1) * MESSAGE + depth(ranks) * MESSAGE
    # LinearODE with 4 rates: 32-byte states, a state message takes 0.5 + 32/8 = 4.5; the reduction's 1.5.
    assert out["bytes"] == 5 + (ranks - 1) * 4.5 + depth(ranks) * MESSAGE
    # The sequential adjoint: the forward pipeline, the objective's reduction, the reverse pipeline
    # (bars travel back from the last rank), the closing reduction.
    assert out["adjoint"] == 2 * 5 + 2 * (ranks - 1) * MESSAGE + 2 * depth(ranks) * MESSAGE
    for case, value in FC_EXPECTED.get(ranks, {}).items():
        assert out[case] == [value, 1], case
    assert FC_EXPECTED[2] == {"fc 0.5 8.0": 8.0, "fc 3.0 8.0": 13.0, "fc 0.0 1e+300": 6.0}


# -- the numbers are the same with and without virtual time -------------------------------------

SAME_NUMBERS = """
import sys
import numpy as np
from mpi4py import MPI
import pyxbraid as xb
sys.path.insert(0, TESTS)
from apps_python import BatchedDecay, DecayWithResidual

def run(make_app, vt, **kw):
    s = xb.Solver(make_app(), 0.0, 2.0, 64, virtual_time=vt, **kw)
    r = s.solve()
    r2 = s.solve()   # a warm restart too
    out = dict(iterations=[r.iterations, r2.iterations],
               norms=[float(x).hex() for x in np.concatenate([r.residual_norms, r2.residual_norms])],
               states=s.local_states().tobytes().hex(), last=s.state_at(64).tobytes().hex(),
               virtual=[r.virtual_wall_time, r2.virtual_wall_time])
    if kw.get("full_residual_norm"):
        out["full"] = [float(x).hex() for x in np.concatenate([r.full_residual_norms, r2.full_residual_norms])]
        out["final_full"] = float(r2.final_full_residual_norm).hex()
    if kw.get("adjoint"):
        out["objective"] = float(r2.objective).hex()
        out["adjoint_norms"] = [float(x).hex() for x in r2.adjoint_residual_norms]
        out["gradient"] = [float(x).hex() for x in np.atleast_1d(s.gradient())]
    return out

cases = {
    "full ML FCF": (lambda: xb.apps.LinearODE(lam=[-1.0, -3.0]), dict(max_levels=30, abs_tol=1e-12)),
    "ml=3 cf4 F, tnorm 1": (lambda: xb.apps.LinearODE(), dict(max_levels=3, cfactor=4, nrelax=0, tnorm=1)),
    "fmg, storage 0, tnorm 3": (lambda: xb.apps.LinearODE(), dict(max_levels=4, fmg=True, storage=0, tnorm=3)),
    "Heat1D cwt": (lambda: xb.apps.Heat1D(nspace=17, guess="zero"), dict(max_levels=3, cwt=1.3, max_iter=6)),
    "Python App, residual": (lambda: DecayWithResidual(), dict(max_levels=3, abs_tol=1e-10)),
    "Python App, step_batch": (lambda: BatchedDecay(lam=[-1.0, -2.0], size=2), dict(max_levels=3, batch_size=5)),
    "periodic": (lambda: xb.apps.LinearODE(), dict(max_levels=3, nrelax=[1, 1, 5], periodic=True)),
    "full residual norm": (lambda: DecayWithResidual(), dict(max_levels=3, abs_tol=1e-10, full_residual_norm=True)),
    "adjoint": (lambda: xb.apps.LinearODE(objective="mean_square"),
                dict(max_levels=3, adjoint=True, abs_tol=1e-10, abs_tol_adjoint=1e-10)),
    "sequential adjoint": (lambda: xb.apps.Cubic(p=0.3, size=2), dict(max_levels=1, adjoint=True)),
}
report({name: [run(make_app, vt, **kw) for vt in (False, True)] for name, (make_app, kw) in cases.items()})
"""


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_numbers_are_bitwise_the_same_with_virtual_time(mpirun, ranks):
    code = SAME_NUMBERS.replace("TESTS", repr(str(Path(__file__).resolve().parent)))
    results = mpirun.json(code, ranks, timeout=180)
    clocks = {name: on.pop("virtual") for name, (_, on) in results[0].items()}
    for rank, out in enumerate(results):
        for name, (off, on) in out.items():
            assert off.pop("virtual") == [None, None], name
            # The prediction is the latest rank's clock: the same number on every rank.
            assert on.pop("virtual", clocks[name]) == clocks[name], (name, rank)
            assert all(isinstance(v, float) and v > 0.0 for v in clocks[name]), (name, clocks[name])
            assert on == off, (name, rank)


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, exc, message",
    [
        (dict(virtual_time=True, virtual_latency=-1e-6), ValueError, "virtual_latency must be >= 0, got -1e-06"),
        (dict(virtual_time=True, virtual_latency=float("nan")), ValueError, "virtual_latency must be finite, got nan"),
        (dict(virtual_time=True, virtual_latency="1us"), TypeError, "virtual_latency must be a real number, got '1us'"),
        (dict(virtual_time=True, virtual_bandwidth=0.0), ValueError, "virtual_bandwidth must be > 0, got 0.0"),
        (dict(virtual_time=True, virtual_bandwidth=float("inf")), ValueError, "virtual_bandwidth must be finite"),
        (dict(virtual_time=True, virtual_step_cost=-1.0), ValueError, "virtual_step_cost must be >= 0, got -1.0"),
        (dict(virtual_time="yes"), TypeError, "virtual_time must be True/False (or 0/1), got 'yes'"),
        (
            dict(virtual_latency=2e-6),
            ValueError,
            "virtual_latency=2e-06 has no effect without virtual_time=True (got virtual_time=False)",
        ),
        (
            dict(virtual_time=False, virtual_bandwidth=1e9),
            ValueError,
            "virtual_bandwidth=1000000000.0 has no effect without virtual_time=True (got virtual_time=False)",
        ),
        (
            dict(virtual_step_cost=1.0),
            ValueError,
            "virtual_step_cost=1.0 has no effect without virtual_time=True (got virtual_time=False)",
        ),
    ],
)
def test_bad_virtual_time_options(kw, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        make(**kw)


def test_network_options_at_their_defaults_need_no_virtual_time():
    # Passing the defaults through (a wrapper forwarding every option) is no mistake.
    make(virtual_latency=1.5e-6, virtual_bandwidth=12.0e9, virtual_step_cost=None).solve()


def test_the_defaults_are_the_documented_network():
    from pyxbraid._vocabulary import OPTIONS

    defaults = {o.name: o.default for o in OPTIONS if o.section == "virtual time"}
    assert defaults == dict(
        virtual_time=False, virtual_latency=1.5e-6, virtual_bandwidth=12.0e9, virtual_step_cost=None
    )


def test_ranks_must_agree_on_virtual_time(mpirun):
    code = """
import sys
from mpi4py import MPI
import pyxbraid as xb
sys.path.insert(0, TESTS)
from scripts.reporting import outcome
rank = MPI.COMM_WORLD.rank
out = [outcome(lambda: xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 16, virtual_time=rank == 1).solve().iterations),
       outcome(lambda: xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 16, virtual_time=True,
                                 virtual_latency=1e-6 * (1 + rank)).solve().iterations),
       outcome(lambda: xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 16, virtual_time=True).solve().iterations)]
report(out)
"""
    results = mpirun.json(code.replace("TESTS", repr(str(Path(__file__).resolve().parent))), 3, timeout=60)
    for out in results:
        assert out[0] == {
            "type": "ValueError",
            "rank": None,
            "message": "virtual_time differs between ranks (from 0 to 1): every rank must build the Solver "
            "with the same problem and options",
        }
        assert out[1]["type"] == "ValueError" and out[1]["message"].startswith("virtual_latency differs between ranks")
        assert out[2]["ok"] > 0  # and a solver built right after works


# -- failures still reach every rank and leak nothing ---------------------------------------------


def test_a_failure_with_virtual_time_on_raises_everywhere_and_frees_the_communicators(mpirun):
    code = """
from mpi4py import MPI
import pyxbraid as xb
from pyxbraid import _core

class Failing(xb.App):
    def __init__(self, fail_rank, fail_phase):
        super().__init__(shape=(3,))
        self.fail_rank, self.fail_phase = fail_rank, fail_phase
    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.5
    def step(self, u, ustop, fstop, status):
        if MPI.COMM_WORLD.rank == self.fail_rank and status.phase == self.fail_phase:
            raise ValueError("deliberate failure")
        u /= 1.0 + status.dt

errors = []
for k, phase in enumerate(["fc_relax", "f_restrict", "f_interp", "access"] * 5):
    s = xb.Solver(Failing(k % 3, phase), 0.0, 1.0, 32, max_levels=3, virtual_time=True)
    try:
        s.solve()
        errors.append(None)
    except Exception as exc:
        errors.append(type(exc).__name__)
    del s
ok = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 32, max_levels=3, virtual_time=True).solve()
report(dict(errors=errors, pending=_core._pending_failed_communicators(), virtual=ok.virtual_wall_time))
"""
    results = mpirun.json(code, 3, timeout=180)
    for rank, out in enumerate(results):
        expected = ["ValueError" if k % 3 == rank else "RemoteRankError" for k in range(20)]
        assert out["errors"] == expected
        assert out["pending"] <= 2  # drained and freed, the last ones possibly still in progress
        assert out["virtual"] > 0.0


# -- the hooks of pyxbraid.nn and pyxbraid.torch --------------------------------------------------


def test_trainer_reports_the_predicted_time_of_each_gradient():
    from pyxbraid import nn

    data = xb.datasets.make_peaks(40, 10)
    plain, predicted = (
        nn.Trainer(nn.ResNet(2, 4, 8, 5, seed=1), progress=False, layer_parallel=dict(max_levels=2, **extra))
        for extra in ({}, dict(virtual_time=True, virtual_latency=1e-6))
    )
    losses = [t.loss_and_gradient(data.x_train, data.y_train) for t in (plain, predicted)]
    assert predicted.last_solve.virtual_wall_time > 0.0 and plain.last_solve.virtual_wall_time is None
    assert losses[0][0] == losses[1][0] and np.array_equal(losses[0][1], losses[1][1])
    # Checkpoints do not depend on it: a run may resume with or without virtual time.
    assert predicted._fit_settings(40, 40, True, "d", None) == plain._fit_settings(40, 40, True, "d", None)


def test_layer_parallel_passes_virtual_time_through():
    torch = pytest.importorskip("torch")
    from pyxbraid.torch import LayerParallel

    def block(k):
        torch.manual_seed(k)
        return torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh()).double()

    lp = LayerParallel(
        block,
        depth=8,
        mode="exact",
        max_levels=2,
        cfactor=2,
        comm=MPI.COMM_SELF,
        solver_options=dict(virtual_time=True, virtual_step_cost=1e-3),
    )
    u0 = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    lp(u0).sum().backward()
    forward, backward = lp.last_forward, lp.last_backward
    assert forward.virtual_wall_time == 1e-3 * (forward.calls["step"] + forward.calls["step_adjoint"])
    assert backward.virtual_wall_time == 1e-3 * (backward.calls["step"] + backward.calls["step_adjoint"])
