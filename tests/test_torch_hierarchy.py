"""pyxbraid.torch.Hierarchy (LayerParallel networks in depth) and nested training of the digits network.

Restriction and prolongation are checked exactly on blocks whose tensors are
constant or linear in t (the cases the stencils are exact for), the buffers'
rules (convex, copies for counts) on their own, and the transfers on 1, 2 and
3 ranks against one another bit for bit.
"""

from __future__ import annotations

import doctest
import json
import re

import pytest

torch = pytest.importorskip("torch")

import pyxbraid.torch as xbt  # noqa: E402
from pyxbraid.torch import Hierarchy, LayerParallel  # noqa: E402

torch.set_num_threads(1)


def block(k):
    torch.manual_seed(k)
    return torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Tanh()).double()


def set_in_t(lp, slope):
    """Give every owned block the tensors ``A + slope * B * t_k`` (t_k = (k + 1/2) h, A and B fixed)."""
    with torch.no_grad():
        for k in lp.owned_layers:
            t = (k + 0.5) * lp.h
            for i, (_, v) in enumerate(lp.layer(k).state_dict(keep_vars=True).items()):
                if v.is_floating_point():
                    g = torch.Generator().manual_seed(i)
                    a = torch.rand(v.shape, generator=g, dtype=torch.float64) + 1.0
                    b = torch.rand(v.shape, generator=g, dtype=torch.float64) - 0.5
                    v.copy_(a + slope * b * t)
                else:
                    v.fill_(7)


def max_error(lp, other):
    """The largest difference between lp's tensors and those of ``other`` (a LayerParallel with exact values)."""
    return max(
        float((v - other.layer(k).state_dict()[n]).abs().max())
        for k in lp.owned_layers
        for n, v in lp.layer(k).state_dict().items()
    )


def reference(depth, slope):
    lp = LayerParallel(block, depth, T=2.0, mode="serial")
    set_in_t(lp, slope)
    return lp


@pytest.mark.parametrize("restriction", ["average", "inject"])
@pytest.mark.parametrize("prolongation", ["linear", "constant"])
def test_transfers_are_exact_for_constant_tensors(restriction, prolongation):
    lp = LayerParallel(block, 8, T=2.0, mode="serial")
    set_in_t(lp, 0.0)
    h = Hierarchy(lp, levels=3, restriction=restriction, prolongation=prolongation)
    h.restrict(0)
    h.restrict(1)
    assert max_error(h.lps[1], reference(4, 0.0)) == 0.0
    assert max_error(h.lps[2], reference(2, 0.0)) == 0.0
    with torch.no_grad():  # prolongation overwrites the fine blocks
        for k in lp.owned_layers:
            for p in lp.layer(k).parameters():
                p.zero_()
    h.prolong(1)
    h.prolong(0)
    assert max_error(lp, reference(8, 0.0)) < 1e-15  # (linear: 1.25 c - 0.25 c at the ends)


@pytest.mark.parametrize("prolongation", ["linear", "constant"])
def test_average_and_linear_are_exact_for_parameters_linear_in_t(prolongation):
    lp = LayerParallel(block, 8, T=2.0, mode="serial")
    set_in_t(lp, 1.0)
    h = Hierarchy(lp, levels=3, prolongation=prolongation)
    h.restrict(0)
    h.restrict(1)
    # restriction by averaging: every tensor (parameters and running statistics) linear in t is exact
    assert max_error(h.lps[1], reference(4, 1.0)) < 1e-15
    assert max_error(h.lps[2], reference(2, 1.0)) < 1e-15
    h.prolong(1)
    h.prolong(0)
    exact = reference(8, 1.0)
    for k in lp.owned_layers:
        for name, value in lp.layer(k).named_parameters():
            error = float((value - exact.layer(k).get_parameter(name)).detach().abs().max())
            # linear prolongation is exact for parameters linear in t; constant is off by O(h)
            assert (error < 1e-15) if prolongation == "linear" else (error > 1e-3), (k, name, error)
        # buffers are prolonged piecewise constant: fine 2j and 2j + 1 both get coarse j's
        j = k // 2
        coarse = h.lps[1].layer(j)
        assert torch.equal(lp.layer(k)[1].running_var, coarse[1].running_var)
        assert int(lp.layer(k)[1].num_batches_tracked) == 7


def test_buffers_stay_convex_where_linear_extrapolation_would_go_negative():
    lp = LayerParallel(block, 4, mode="serial")
    with torch.no_grad():
        for k in lp.owned_layers:
            lp.layer(k)[1].running_var.fill_(1.0 if k < 2 else 100.0)
            lp.layer(k)[1].num_batches_tracked.fill_(k)
    h = Hierarchy(lp, levels=2)
    h.restrict(0)
    assert [float(h.lps[1].layer(j)[1].running_var[0]) for j in range(2)] == [1.0, 100.0]
    assert [int(h.lps[1].layer(j)[1].num_batches_tracked) for j in range(2)] == [0, 2]  # injected
    h.prolong(0)
    assert [float(lp.layer(k)[1].running_var[0]) for k in range(4)] == [1.0, 1.0, 100.0, 100.0]
    assert [int(lp.layer(k)[1].num_batches_tracked) for k in range(4)] == [0, 0, 2, 2]


def test_levels_keep_the_settings_the_step_and_the_callers_random_stream():
    lp = LayerParallel(block, 16, T=3.0, mode="one_shot", max_levels=2, cfactor=2, max_iter=3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    h = Hierarchy(lp, levels=3)
    assert torch.equal(torch.rand(3), expected)  # block(k) seeded inside: the caller's stream untouched
    assert [m.depth for m in h.lps] == [16, 8, 4] and [m.h for m in h.lps] == [3 / 16, 3 / 8, 3 / 4]
    assert all(m.mode == "one_shot" and m._options == lp._options for m in h.lps)
    assert repr(h) == "Hierarchy(depths=[16, 8, 4], restriction='average', prolongation='linear')"
    # a gradient of the replaced tensors is dropped
    u0 = torch.rand(4, 3, dtype=torch.float64)
    h.lps[1](u0).sum().backward()
    assert h.lps[1].layer(0)[0].weight.grad is not None
    h.restrict(0)
    assert h.lps[1].layer(0)[0].weight.grad is None


def test_prolong_tensors_carries_per_parameter_values_and_leaves_the_blocks():
    """What an optimizer's moments need: the parameters' prolongation of other tensors, by parameter."""
    lp = LayerParallel(block, 8, T=2.0, mode="serial")
    h = Hierarchy(lp, levels=2)
    set_in_t(h.lps[1], 1.0)  # the coarse blocks' tensors: linear in t ...
    values = {p: p.detach().clone() for p in h.lps[1].parameters()}  # ... and the values to prolong
    before = {n: v.clone() for n, v in lp.state_dict().items()}
    weight = h.lps[1].layer(0)[0].weight
    del values[weight]  # left out: zeros
    out = h.prolong_tensors(0, values)
    assert all(torch.equal(v, lp.state_dict()[n]) for n, v in before.items())  # the blocks are untouched
    exact = reference(8, 1.0)
    assert set(out) == set(lp.parameters())
    for k in lp.owned_layers:
        for name, p in lp.layer(k).named_parameters():
            if name == "0.weight" and k < 2:  # fine 0 and 1 read coarse 0 (and 1): not exact any more
                continue
            if name == "0.weight" and k == 2:  # fine 2 = 3/4 coarse 1 + 1/4 coarse 0 (zeros)
                assert torch.equal(out[p], 0.75 * values[h.lps[1].layer(1)[0].weight])
                continue
            assert float((out[p] - exact.layer(k).get_parameter(name)).detach().abs().max()) < 1e-15, (k, name)
            assert not out[p].requires_grad
    with pytest.raises(
        ValueError, match=r"prolong_tensors: the value of a parameter of shape \(3, 3\) must be a tensor"
    ):
        h.prolong_tensors(0, {weight: torch.zeros(2)})


def test_docstring_examples():
    from pyxbraid.torch import _hierarchy

    failures, tried = doctest.testmod(_hierarchy)
    assert tried > 0 and failures == 0
    assert xbt.Hierarchy is _hierarchy.Hierarchy


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(levels=0), ValueError, r"levels must be an integer >= 1, got 0"),
        (dict(levels=4), ValueError, r"levels=4 needs a depth divisible by 2\*\*\(levels - 1\) = 8 .* got depth=12"),
        (dict(restriction="mean"), ValueError, r"restriction must be one of 'average', 'inject', got 'mean'"),
        (dict(prolongation="cubic"), ValueError, r"prolongation must be one of 'linear', 'constant', got 'cubic'"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, match):
    lp = LayerParallel(block, 12, mode="serial")
    with pytest.raises(exc, match=match):
        Hierarchy(lp, **kwargs)


def test_bad_lp_level_and_architectures_are_refused():
    with pytest.raises(TypeError, match=r"lp must be a pyxbraid.torch.LayerParallel, got Linear"):
        Hierarchy(torch.nn.Linear(2, 2))
    h = Hierarchy(LayerParallel(block, 4, mode="serial"), levels=2)
    with pytest.raises(ValueError, match=r"level must be an integer in 0 .. 0 .* got 1"):
        h.restrict(1)
    mixed = LayerParallel(
        lambda k: torch.nn.Linear(3, 3).double() if k else torch.nn.Sequential(torch.nn.Linear(3, 3)).double(),
        4,
        mode="serial",
    )
    with pytest.raises(TypeError, match=r"a Hierarchy needs blocks of one architecture"):
        Hierarchy(mixed)


# -- several ranks --------------------------------------------------------------------------------
TRANSFERS = """
import hashlib
import torch
from mpi4py import MPI
from pyxbraid.torch import Hierarchy, LayerParallel

torch.set_num_threads(1)


def block(k):
    torch.manual_seed(k)
    return torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Tanh()).double()


def digest(lp):
    state = lp.state_dict()  # collective: every layer, on every rank
    h = hashlib.sha256()
    for key, value in sorted(state.items()):  # (the order of the keys differs between rank counts)
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


out = {}
for restriction, prolongation in (("average", "linear"), ("inject", "constant")):
    lp = LayerParallel(block, 8, T=2.0, mode="exact", max_levels=2, cfactor=2)
    h = Hierarchy(lp, levels=3, restriction=restriction, prolongation=prolongation)
    h.restrict(0)
    h.restrict(1)
    with torch.no_grad():  # a change on the coarsest level, so that the prolongation carries information
        for k in h.lps[2].owned_layers:
            for p in h.lps[2].layer(k).parameters():
                p.mul_(1.5 + k)
    h.prolong(1)
    h.prolong(0)
    digests = [digest(m) for m in h.lps]
    # the prolonged network runs (its forward updates the running statistics, to MGRIT's tolerance)
    u0 = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)
    out[restriction] = digests + [float(lp(u0).sum())]
report(out)
"""


def test_transfers_are_identical_on_one_two_and_three_ranks(mpirun):
    runs = {n: mpirun.json(TRANSFERS, n, timeout=120) for n in (1, 2, 3)}
    for n, ranks in runs.items():
        for run in ranks:
            for key in ("average", "inject"):
                # bit for bit: the tensors of every level, whatever the rank count
                assert run[key][:3] == runs[1][0][key][:3], (n, key)
                # u(T) of exact MGRIT, to its tolerance (1e-12 relative)
                assert run[key][3] == pytest.approx(runs[1][0][key][3], rel=1e-10)


FAILURE = """
import torch
from mpi4py import MPI
from pyxbraid.errors import RemoteRankError
from pyxbraid.torch import Hierarchy, LayerParallel

lp = LayerParallel(lambda k: torch.nn.Linear(3, 3).double(), 8, mode="serial")
h = Hierarchy(lp, levels=2)
bad = {p: torch.zeros(1) for p in h.lps[1].parameters()} if MPI.COMM_WORLD.rank == 1 else {}
try:
    h.prolong_tensors(0, bad)
    report("no error")
except (ValueError, RemoteRankError) as exc:
    report(type(exc).__name__)
"""


def test_a_transfer_failing_on_one_rank_raises_on_every_rank(mpirun):
    assert mpirun.json(FAILURE, 2, timeout=60) == ["RemoteRankError", "ValueError"]


# -- nested training of the digits network ------------------------------------------------------------
def test_digits_nested_on_one_rank(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from pyxbraid import train

    metrics = tmp_path / "m.json"
    args = ["--mode", "serial", "--depth", "8", "--epochs", "2", "--strategy", "nested", "--levels", "3"]
    args += ["--coarse-epochs", "1", "--target-accuracy", "0.5", "--no-progress", "--no-plots"]
    assert train.main(["digits", *args, "--out", str(tmp_path / "out"), "--metrics", str(metrics)]) == 0
    printed = capsys.readouterr().out
    assert "level 2 (depth 2) epoch 1: loss" in printed and "level 1 (depth 4) epoch 1: loss" in printed
    assert "target validation accuracy 0.5: reached at epoch 1" in printed
    m = json.loads(metrics.read_text())
    # 1438 images in batches of 64: 23 steps an epoch; one epoch per coarse level, the fine one stops at 50%
    assert m["reached_target"] is True and m["epochs_to_target"] == 1
    assert m["gradient_evaluations_per_level"] == [23, 23, 23] and m["fine_gradient_evaluations"] == 23
    assert m["coarse_gradient_evaluations_weighted"] == 23 * (4 / 8 + 2 / 8)
    assert [h["epoch"] for h in m["level_histories"]] == [[1], [1], [1]]
    assert m["settings"]["strategy"] == dict(
        strategy="nested", levels=3, epochs=[1, 1], tol=None, restriction="average", prolongation="linear"
    )
    assert m["wall_seconds_to_target"] == m["history"]["wall_seconds"][0] > m["level_histories"][0]["wall_seconds"][0]
    # the nested start is better than a random one: the fine network's first epoch beats the coarsest's
    assert m["history"]["val_accuracy"][0] > m["level_histories"][0]["val_accuracy"][0]


NESTED = """
import json, sys
from pyxbraid.train import main
code = main(["digits", "--mode", sys.argv[1], "--depth", "8", "--epochs", "1", "--strategy", "nested", "--levels", "2",
             "--coarse-epochs", "1", "--batch-size", "256", "--no-progress", "--no-plots", "--out", sys.argv[2],
             "--metrics", sys.argv[3]])
report(code)
"""


def _nested_run(mpirun, n, mode, tmp_path, name):
    metrics = tmp_path / f"{name}.json"
    assert mpirun.json(NESTED, n, timeout=240, args=(mode, str(tmp_path / "out"), str(metrics))) == [0] * n
    m = json.loads(metrics.read_text())
    assert m["gradient_evaluations_per_level"] == [6, 6] and m["ranks"] == n
    return [h["step_loss"] for h in m["level_histories"]]


def test_digits_nested_in_exact_mode_is_rank_count_independent(mpirun, tmp_path):
    pytest.importorskip("sklearn")
    one, two = (_nested_run(mpirun, n, "parallel", tmp_path, f"exact-{n}") for n in (1, 2))
    for a, b in zip(one, two, strict=True):  # exact MGRIT (tolerance 1e-12): the same losses to round-off
        assert a == pytest.approx(b, rel=1e-8)


def test_digits_nested_in_one_shot_mode_is_reproducible(mpirun, tmp_path):
    pytest.importorskip("sklearn")
    first = _nested_run(mpirun, 2, "one-shot", tmp_path, "first")
    # same seed, same rank count: the identical run
    assert _nested_run(mpirun, 2, "one-shot", tmp_path, "again") == first


def test_digits_strategy_errors(capsys):
    from pyxbraid import train

    for args, message in (
        (["--strategy", "mgopt", "--levels", "1"], r"--levels 1: --strategy mgopt needs at least 2"),
        (["--levels", "2"], r"--levels 2 needs --strategy nested or mgopt"),
        (["--coarse-epochs", "2"], r"--coarse-epochs needs --strategy nested"),
        (["--strategy", "nested", "--depth", "6"], r"--levels: levels=3 needs a depth divisible by"),
        (["--target-accuracy", "1.5"], r"argument --target-accuracy: must be a number in \(0, 1\], got '1.5'"),
        (["--strategy", "mgopt", "--mgopt-pre", "-1"], r"argument --mgopt-pre: must be an integer in 0\.\.\d+, got -1"),
        (["--strategy", "mgopt", "--mgopt-coarse-steps", "0"], r"argument --mgopt-coarse-steps: must be an .* got 0"),
        (["--strategy", "nested", "--mgopt-post", "3"], r"--mgopt-post needs --strategy mgopt"),
        (["--mgopt-coarse-steps", "3"], r"--mgopt-coarse-steps needs --strategy mgopt"),
    ):
        with pytest.raises(SystemExit) as stop:
            train.main(["digits", *args])
        assert stop.value.code == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyxbraid-train: error: "), lines
        assert re.search(message, lines[0]), lines
