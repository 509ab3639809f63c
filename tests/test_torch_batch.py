"""LayerParallel(batch_steps=True): the engine's groups of steps as one torch.func.vmap call.

batch_steps=True computes the same function as the per-step path with the
rows of a group evaluated together (batched matrix products sum in another
order), so u(T), u0.grad and every parameter gradient agree with the
per-step path to round-off: 1e-12 relative in float64 on 1 and 2 ranks, in
"exact" and "one_shot" mode, and with plain autograd to 1e-10 as the
per-step path does (tests/test_torch.py). Blocks that cannot be vmapped
(BatchNorm in training mode, dropout, blocks of different architectures) are
stepped one by one inside the grouped calls: checked by the app's counters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pyxbraid.torch import LayerParallel  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "scripts"))

import torch_cases as cases  # noqa: E402

torch.set_num_threads(1)
PRELUDE = f"import sys\nsys.path.insert(0, {str(HERE / 'scripts')!r})\nfrom torch_cases import *\n"

EXACT = dict(mode="exact", max_levels=3, cfactor=2)
# one_shot: 1 iteration per pass, 6 warm-restarted passes on the same data -> the exact gradient
ONE_SHOT = dict(mode="one_shot", max_levels=3, cfactor=2, max_iter=1, nsteps=6)
SAME = 1e-12  # batch_steps against the per-step path (round-off)
AUTOGRAD = 1e-10  # against plain autograd, as in tests/test_torch.py


def _check_same(d, vmapped=True):
    assert d["uT"] < SAME and d["u0_grad"] < SAME and d["params"] < SAME, d
    if vmapped:
        assert d["vmapped"] > 0 and d["one_by_one"] == 0, d
    else:
        assert d["vmapped"] == 0 and d["one_by_one"] > 0, d


# -- one rank ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dense_tanh", "conv_relu"])
@pytest.mark.parametrize("opts", [EXACT, ONE_SHOT], ids=["exact", "one_shot"])
def test_batch_steps_equals_the_per_step_path_and_autograd(kind, opts):
    _check_same(cases.batch_vs_steps(kind, 12, T=1.5, **opts))
    opts = dict(opts)
    e = cases.errors(kind, 12, T=1.5, batch_steps=True, **opts)
    assert e["uT"] < AUTOGRAD and e["u0_grad"] < AUTOGRAD and e["params"] < AUTOGRAD, e


def test_batch_steps_with_the_coarse_mean_policy():
    _check_same(cases.batch_vs_steps("conv_relu", 12, coarse="mean", **EXACT))
    e = cases.errors("conv_relu", 12, batch_steps=True, coarse="mean", **EXACT)
    assert e["uT"] < AUTOGRAD and e["u0_grad"] < AUTOGRAD and e["params"] < AUTOGRAD, e


def test_batch_steps_in_float32_agrees_with_the_per_step_path():
    # float32: both paths stop at the float32 tolerance, their difference is float32 round-off
    e = cases.errors("dense_tanh", 12, dtype="float32", batch_steps=True, **EXACT)
    assert e["uT"] < 4e-6 and e["u0_grad"] < 4e-6 and e["params"] < 4e-6, e


def test_batchnorm_in_training_mode_steps_one_by_one():
    # BatchNorm's running statistics are updated per block in place: no vmap, the rows one by one
    _check_same(cases.batch_vs_steps("conv", 9, T=1.5, **EXACT), vmapped=False)
    e = cases.errors("conv", 9, T=1.5, batch_steps=True, **EXACT)
    assert e["uT"] < AUTOGRAD and e["u0_grad"] < AUTOGRAD and e["params"] < AUTOGRAD, e
    assert e["buffers"] < 1e-12, e


def test_batchnorm_in_eval_mode_is_vmapped_with_its_buffers():
    _check_same(cases.batch_vs_steps("conv", 9, T=1.5, eval_mode=True, **EXACT))


def test_dropout_and_different_architectures_step_one_by_one():
    _check_same(cases.batch_vs_steps("dense_tanh", 9, dropout=0.3, **EXACT), vmapped=False)
    _check_same(cases.batch_vs_steps("mixed", 9, **EXACT), vmapped=False)
    e = cases.errors("mixed", 9, batch_steps=True, **EXACT)
    assert e["uT"] < AUTOGRAD and e["u0_grad"] < AUTOGRAD and e["params"] < AUTOGRAD, e


def test_hyperparameters_and_hooks_are_part_of_the_architecture():
    def conv(k):
        torch.manual_seed(k)
        return torch.nn.Conv2d(2, 2, 3, padding=1, dilation=1 + k % 2).double()  # same shapes, not one F

    assert not LayerParallel(conv, depth=4, batch_steps=True)._uniform

    def hooked(k):
        torch.manual_seed(k)
        m = torch.nn.Linear(2, 2).double()
        if k == 1:
            m.register_forward_hook(lambda mod, args, out: out * 2)
        return m

    assert not LayerParallel(hooked, depth=4, batch_steps=True)._uniform

    def backward_hooked(k):
        torch.manual_seed(k)
        m = torch.nn.Linear(2, 2).double()
        if k == 2:
            m.register_full_backward_hook(lambda mod, gin, gout: None)
        return m

    assert not LayerParallel(backward_hooked, depth=4, batch_steps=True)._uniform
    assert LayerParallel(cases.block_factory("dense_tanh"), depth=4, batch_steps=True)._uniform


def test_bad_batch_steps_arguments_are_named():
    block = cases.block_factory("dense_tanh")
    with pytest.raises(TypeError, match=r"batch_steps must be True or False, got 'yes'"):
        LayerParallel(block, depth=4, batch_steps="yes")
    with pytest.raises(TypeError, match=r"batch_steps must be True or False, got 1"):
        LayerParallel(block, depth=4, batch_steps=1)
    with pytest.raises(ValueError, match=r"batch_steps=True and keep_graph=True cannot be combined"):
        LayerParallel(block, depth=4, batch_steps=True, keep_graph=True)


# -- two ranks --------------------------------------------------------------------------------------
TWO_RANKS = (
    PRELUDE
    + """
out = {}
for kind in ("dense_tanh", "conv_relu"):
    out[kind + "-exact"] = batch_vs_steps(kind, 12, T=1.5, mode="exact", max_levels=3, cfactor=2)
    out[kind + "-oneshot"] = batch_vs_steps(kind, 12, nsteps=6, mode="one_shot", max_levels=3, cfactor=2, max_iter=1)
    out[kind + "-exact-autograd"] = errors(kind, 12, T=1.5, batch_steps=True, mode="exact", max_levels=3, cfactor=2)
    out[kind + "-oneshot-autograd"] = errors(
        kind, 12, nsteps=6, batch_steps=True, mode="one_shot", max_levels=3, cfactor=2, max_iter=1
    )
out["mean-exact"] = batch_vs_steps("conv_relu", 12, mode="exact", max_levels=3, cfactor=2, coarse="mean")
out["bn-exact"] = batch_vs_steps("conv", 9, mode="exact", max_levels=3, cfactor=2)
report(out)
"""
)

BAD_ON_ONE_RANK = (
    PRELUDE
    + """
import pyxbraid as xb
from mpi4py import MPI
from pyxbraid.torch import LayerParallel
try:
    LayerParallel(block_factory("dense_tanh"), depth=4, batch_steps="yes" if MPI.COMM_WORLD.rank == 1 else True)
    outcome = "no error"
except TypeError as exc:
    outcome = "own: " + str(exc)
except xb.RemoteRankError as exc:
    outcome = f"remote {exc.rank}"
report(outcome)
"""
)


def test_batch_steps_on_two_ranks(mpirun):
    runs = mpirun.json(TWO_RANKS, 2, timeout=300)
    for run in runs:
        for case, d in run.items():
            if case.endswith("autograd"):
                assert d["uT"] < AUTOGRAD and d["u0_grad"] < AUTOGRAD and d["params"] < AUTOGRAD, (case, d)
            else:
                _check_same(d, vmapped=not case.startswith("bn"))


def test_a_bad_batch_steps_on_one_rank_raises_on_every_rank(mpirun):
    runs = mpirun.json(BAD_ON_ONE_RANK, 2, timeout=120)
    assert runs[0] == "remote 1"
    assert runs[1] == "own: batch_steps must be True or False, got 'yes'"
