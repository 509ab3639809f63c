"""pyxbraid.torch: LayerParallel against plain torch autograd, modes, ranks, failures, checkpoints.

Gradients are compared with autograd through the same blocks on one process
(tests/scripts/torch_cases.py): "exact" to 1e-10 and "serial" to 1e-13
relative, for convolutional blocks with BatchNorm and dense blocks with
LayerNorm and BatchNorm, float64, on 1, 2 and 3 ranks; in float32 against
float32 autograd, to the bounds FLOAT32_EXACT and FLOAT32_SERIAL explained below.
"""

from __future__ import annotations

import doctest
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyxbraid.torch as xbt  # noqa: E402
from pyxbraid.torch import ConvergenceWarning, LayerParallel  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "scripts"))

import torch_cases as cases  # noqa: E402

torch.set_num_threads(1)
PRELUDE = f"import sys\nsys.path.insert(0, {str(HERE / 'scripts')!r})\nfrom torch_cases import *\n"

EXACT = dict(mode="exact", max_levels=3, cfactor=2)

# float32 states. eps32 = 1.19e-7. Plain float32 autograd through the 9 test blocks is itself
# up to 1.2e-7 (conv) and 9.5e-7 (dense: LayerNorm and BatchNorm divide by batch statistics, which
# amplifies round-off) away from float64 autograd, relative: float32's own round-off. "exact" mode
# computes the same function in float32 in another order (FCF relaxation, coarse-grid corrections,
# sums over ranks) and stops at the float32 default tolerance (relative residual 1e-5,
# DEFAULT_TOLERANCES), so it lands at that same distance from float32 autograd: measured
# 0.7-1.8e-7 (conv) and 1.4-4.7e-7 (dense), the same values on 1, 2 and 3 ranks. FLOAT32_EXACT = 4e-6 (about 34 eps32) bounds
# it with a margin of 4x over float32 autograd's own error; a wrong gradient (an iteration too
# few, a missing coarse correction) is off by 1e-4 or more. The test also checks the error against
# float32 autograd's own distance from float64 (at most 10x). "serial" runs autograd's operations in
# autograd's order, so it differs by less than one rounding (measured: bitwise equal):
# FLOAT32_SERIAL = 1e-7 < eps32.
FLOAT32_EXACT = 4e-6
FLOAT32_SERIAL = 1e-7


def test_docstring_examples():
    for module in (xbt, sys.modules["pyxbraid.torch._layer_parallel"]):
        failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert tried > 0 and failures == 0


# -- numbers against autograd, one rank ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["conv", "dense"])
@pytest.mark.parametrize("mode", ["serial", "exact"])
def test_matches_autograd_on_one_rank(kind, mode):
    opts = EXACT if mode == "exact" else dict(mode="serial")
    e = cases.errors(kind, 9, T=1.5, **opts)
    tol = 1e-10 if mode == "exact" else 1e-13
    assert e["uT"] < tol and e["u0_grad"] < tol and e["params"] < tol, e
    assert e["buffers"] < 1e-12, e  # BatchNorm running statistics: one update per forward pass
    if mode == "exact":
        assert e["iterations"][0] >= 2  # MGRIT really iterated


def test_max_levels_one_runs_the_engine_serially():
    e = cases.errors("dense", 6, mode="exact", max_levels=1)
    assert max(e["uT"], e["u0_grad"], e["params"]) < 1e-13, e


def test_coarse_mean_policy_gives_the_same_converged_result():
    e = cases.errors("conv", 12, mode="exact", max_levels=3, cfactor=2, coarse="mean")
    assert max(e["uT"], e["u0_grad"], e["params"]) < 1e-10, e


def test_dropout_masks_are_those_of_autograd_seeded_per_pass_and_layer():
    for mode in ("exact", "serial"):
        e = cases.errors("conv", 9, mode=mode, max_levels=3, cfactor=2, dropout=0.3)
        assert max(e["uT"], e["u0_grad"], e["params"]) < 1e-10, (mode, e)


def test_serial_equals_exact_with_dropout():
    """Dropout masks are seeded per pass and layer: MGRIT sees a function, serial the same masks."""

    def run(mode):
        torch.manual_seed(0)
        lp = LayerParallel(cases.block_factory("dense", dropout=0.3), depth=8, mode=mode, max_levels=2, cfactor=2)
        u0, w = cases.inputs("dense")
        outs = []
        for _ in range(2):
            x = u0.clone().requires_grad_(True)
            lp.zero_grad()
            cases.loss_of(lp(x), w).backward()
            outs.append((x.grad.clone(), [p.grad.clone() for p in lp.parameters()]))
        return outs

    serial, exact = run("serial"), run("exact")
    for (gs, ps), (ge, pe) in zip(serial, exact, strict=True):
        assert torch.allclose(ge, gs, rtol=1e-10, atol=1e-13)
        assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-13) for a, b in zip(pe, ps, strict=True))
    assert not torch.equal(serial[0][0], serial[1][0])  # a new mask in every forward pass


def test_one_shot_converges_to_exact_under_warm_restarts():
    u0, w = cases.inputs("dense")
    exact = LayerParallel(cases.block_factory("dense"), depth=16, mode="exact", max_levels=3, cfactor=2)
    one_shot = LayerParallel(
        cases.block_factory("dense"), depth=16, mode="one_shot", max_levels=3, cfactor=2, max_iter=1
    )
    xe = u0.clone().requires_grad_(True)
    cases.loss_of(exact(xe), w).backward()
    errors = []
    for _ in range(8):
        xo = u0.clone().requires_grad_(True)
        one_shot.zero_grad()
        cases.loss_of(one_shot(xo), w).backward()
        errors.append(float((xo.grad - xe.grad).norm() / xe.grad.norm()))
    assert errors[1] > 1e-6  # inexact at first ...
    assert errors[-1] < 1e-10, errors  # ... converged by warm restarts
    for p, q in zip(one_shot.parameters(), exact.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-12)
    one_shot.reset()  # forgets the iterate: inexact again
    xo = u0.clone().requires_grad_(True)
    cases.loss_of(one_shot(xo), w).backward()
    assert float((xo.grad - xe.grad).norm() / xe.grad.norm()) > 1e-6


def test_no_grad_forward_is_exact_and_needs_no_backward():
    u0, _ = cases.inputs("conv")
    for mode in ("serial", "exact", "one_shot"):
        lp = LayerParallel(cases.block_factory("conv"), depth=8, mode=mode, max_levels=2, cfactor=2)
        lp.eval()
        with torch.no_grad():
            uT = lp(u0)
        ref = u0.clone()
        for k in range(8):
            ref = ref + (1 / 8) * lp.layer(k)(ref)
        assert not uT.requires_grad
        assert torch.allclose(uT, ref.detach(), rtol=1e-10, atol=0), mode


def test_training_with_an_optimizer_decreases_the_loss():
    torch.manual_seed(0)
    opening = torch.nn.Linear(3, 4).double()
    head = torch.nn.Linear(4, 2).double()
    lp = LayerParallel(
        lambda k: torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()).double(),
        depth=8,
        mode="exact",
        max_levels=2,
        cfactor=4,
    )
    opt = torch.optim.Adam([*opening.parameters(), *lp.parameters(), *head.parameters()], lr=0.05)
    x = torch.randn(32, 3, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(lp(opening(x))), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert opening.weight.grad is not None and all(p.grad is not None for p in lp.parameters())


def test_state_dict_round_trip_and_module_api(tmp_path):
    lp = LayerParallel(cases.block_factory("conv"), depth=5, mode="serial")
    sd = lp.state_dict()
    assert list(sd)[:2] == ["layers.0.0.weight", "layers.0.0.bias"]
    assert "layers.4.1.running_mean" in sd
    other = LayerParallel(lambda k: cases.block_factory("conv")(k + 50), depth=5, mode="exact")
    torch.save(sd, tmp_path / "lp.pt")
    assert other.load_state_dict(torch.load(tmp_path / "lp.pt")) is not None
    u0, _ = cases.inputs("conv")
    lp.eval(), other.eval()
    with torch.no_grad():
        assert torch.allclose(lp(u0), other(u0), rtol=1e-10, atol=0)
    with pytest.raises(RuntimeError, match="Missing key"):
        other.load_state_dict({k: v for k, v in sd.items() if not k.startswith("layers.3.")})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        other.load_state_dict({**sd, "layers.9.0.weight": sd["layers.0.0.weight"]})
    assert "mode='exact'" in repr(other) and "owned_layers=0..4" in repr(other)


# -- argument and input errors ------------------------------------------------------------------
def _block(k):
    return torch.nn.Linear(2, 2).double()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(mode="fast"), ValueError, "mode must be one of 'serial', 'exact', 'one_shot', got 'fast'"),
        (dict(depth=0), ValueError, "depth must be an integer >= 1, got 0"),
        (dict(depth=2.5), TypeError, "depth must be an integer"),
        (dict(T=-1.0), ValueError, "T must be a finite number > 0, got -1.0"),
        (dict(cfactor=1), ValueError, "cfactor must be an integer >= 2, got 1"),
        (dict(max_iter=0), ValueError, "max_iter must be an integer >= 1, got 0"),
        (dict(tol=-1), ValueError, "tol must be a finite number >= 0, got -1.0"),
        (dict(coarse="first"), ValueError, "coarse must be one of 'tstop', 'mean', got 'first'"),
        (dict(solver_options=dict(adjoint=True)), ValueError, "solver_options got 'adjoint'"),
        (dict(solver_options=True), TypeError, "solver_options must be a dict, got bool"),
        (dict(solver_options=dict(storage=-2)), ValueError, "solver_options: storage must be >= -1, got -2"),
        (
            dict(solver_options=dict(virtual_latency=1e-6)),
            ValueError,
            "solver_options: virtual_latency=1e-06 has no effect without virtual_time=True",
        ),
        (dict(block=3), TypeError, "block must be a callable"),
        (dict(block=lambda k: "layer"), TypeError, r"block\(0\) must return a torch.nn.Module, got str"),
        (dict(comm="world"), TypeError, "comm must be an mpi4py.MPI.Comm"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, match):
    args = dict(block=_block, depth=4)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        LayerParallel(**args)


def test_bad_inputs_are_named():
    lp = LayerParallel(_block, depth=4, mode="exact")
    with pytest.raises(
        TypeError,
        match=r"parameter layers.0.weight is torch.float64 on cpu, u0 is torch.float32 on "
        r"cpu; the blocks and u0 must agree \(the blocks' dtype is that of the states\)",
    ):
        lp(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="u0 must be a torch.Tensor"):
        lp([[0.0, 0.0]])
    with pytest.raises(IndexError, match=r"layer index must be in 0 .. 3, got 4"):
        lp.layer(4)
    lp32 = LayerParallel(lambda k: torch.nn.Linear(2, 2), depth=4, mode="serial")
    with pytest.raises(TypeError, match="parameter layers.0.weight is torch.float32 on cpu, u0 is torch.float64"):
        lp32(torch.zeros(3, 2, dtype=torch.float64))
    assert lp32(torch.zeros(3, 2)).dtype == torch.float32  # serial mode: any dtype


def test_a_block_that_changes_its_input_in_place_is_refused():
    lp = LayerParallel(lambda k: torch.nn.ReLU(inplace=True), depth=4, mode="exact", max_levels=2, cfactor=2)
    with pytest.raises(RuntimeError, match=r"block\(\d\) modified its input in place"):
        lp(torch.randn(2, 3, dtype=torch.float64))


def test_unconverged_exact_mode_warns():
    lp = LayerParallel(cases.block_factory("dense"), depth=16, mode="exact", max_levels=3, cfactor=2, max_iter=2)
    u0, w = cases.inputs("dense")
    with pytest.warns(ConvergenceWarning, match=r"LayerParallel forward: MGRIT did not reach tol=1e-12"):
        uT = lp(u0.requires_grad_(True))
    with pytest.warns(ConvergenceWarning, match=r"LayerParallel backward"):
        cases.loss_of(uT, w).backward()


def test_failure_in_a_block_leaves_the_layer_usable():
    state = {"fail": True}

    class Flaky(torch.nn.Module):
        def forward(self, x):
            if state["fail"]:
                raise cases.Boom("flaky")
            return torch.tanh(x)

    lp = LayerParallel(lambda k: Flaky(), depth=4, mode="exact", max_levels=2, cfactor=2)
    with pytest.raises(cases.Boom):
        lp(torch.ones(2, 2, dtype=torch.float64, requires_grad=True))
    state["fail"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lp(torch.ones(2, 2, dtype=torch.float64, requires_grad=True)).sum().backward()


# -- float32 states ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_float32_exact_matches_float32_autograd(kind):
    e = cases.errors(kind, 9, T=1.5, dtype=torch.float32, **EXACT)
    assert max(e["uT"], e["u0_grad"], e["params"]) < FLOAT32_EXACT, e
    assert e["buffers"] < FLOAT32_EXACT, e  # running statistics from float32 states
    assert e["iterations"][0] >= 2, e  # MGRIT really iterated
    # the scale is float32's own round-off: float32 autograd's distance from float64 autograd
    y32, g32, p32, _ = cases.reference(kind, 9, 1.5, dtype=torch.float32)
    y64, g64, p64, _ = cases.reference(kind, 9, 1.5)
    pnorm = sum(float(g.norm()) ** 2 for gs in p64 for g in gs) ** 0.5
    own = max(
        float((y32.double() - y64).norm() / y64.norm()),
        float((g32.double() - g64).norm() / g64.norm()),
        max(float((a.double() - b).norm()) for x, y in zip(p32, p64, strict=True) for a, b in zip(x, y, strict=True))
        / pnorm,
    )
    assert 1e-8 < own < FLOAT32_EXACT and max(e["uT"], e["u0_grad"], e["params"]) < 10 * own, (own, e)


def test_float32_serial_is_float32_autograd():
    e = cases.errors("conv", 9, T=1.5, dtype=torch.float32, mode="serial")
    assert max(e["uT"], e["u0_grad"], e["params"], e["buffers"]) < FLOAT32_SERIAL, e


def test_float32_states_live_in_the_engine_as_float32():
    lp = LayerParallel(
        cases.block_factory("dense", dtype=torch.float32), depth=8, mode="exact", max_levels=2, cfactor=2
    )
    u0, w = cases.inputs("dense", dtype=torch.float32)
    x = u0.clone().requires_grad_(True)
    uT = lp(x)
    cases.loss_of(uT, w).backward()
    ((app, solver),) = lp._engines.values()
    assert app.dtype == np.float32 and solver.state_at(8).dtype == np.float32
    assert uT.dtype == x.grad.dtype == torch.float32
    assert all(p.grad.dtype == torch.float32 for p in lp.parameters())
    # the float32 default tolerance: converged to 1e-5 relative, not run to max_iter
    for result, norms in (
        (lp.last_forward, lp.last_forward.residual_norms),
        (lp.last_backward, lp.last_backward.adjoint_residual_norms),
    ):
        assert result.converged and result.iterations < 100
        assert norms[-1] < xbt.DEFAULT_TOLERANCES[torch.float32] * norms[0]
    assert xbt.DEFAULT_TOLERANCES == {torch.float64: 1e-12, torch.float32: 1e-5}


def test_float32_tolerances_below_epsilon_are_refused():
    block32 = cases.block_factory("dense", dtype=torch.float32)
    with pytest.raises(
        ValueError,
        match=r"tol=1e-12 is below the machine epsilon of torch.float32 states "
        r"\(1.19e-07\): .* use tol >= 1.19e-07 \(default for torch.float32: 1e-05\) or float64",
    ):
        LayerParallel(block32, depth=4, tol=1e-12)
    with pytest.raises(ValueError, match=r"adjoint_tol=1e-09 is below the machine epsilon of torch.float32"):
        LayerParallel(block32, depth=4, adjoint_tol=1e-9)
    LayerParallel(block32, depth=4, tol=1e-12, mode="serial")  # serial mode runs no MGRIT: tol is not used
    # blocks without tensors: u0's dtype decides, at the first forward
    lp = LayerParallel(lambda k: torch.nn.Tanh(), depth=4, tol=1e-10, max_levels=2, cfactor=2)
    assert lp(torch.ones(2, 3, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match=r"tol=1e-10 is below the machine epsilon of torch.float32 states"):
        lp(torch.ones(2, 3))


def test_float32_convergence_warning_names_the_round_off():
    lp = LayerParallel(
        cases.block_factory("dense", dtype=torch.float32), depth=16, mode="exact", max_levels=3, cfactor=2, max_iter=2
    )
    u0, w = cases.inputs("dense", dtype=torch.float32)
    with pytest.warns(
        ConvergenceWarning,
        match=r"did not reach tol=1e-05 / adjoint_tol=1e-05 .*float32 states: "
        r"round-off stops the relative residual near 1e-7..1e-6; or use float64",
    ):
        lp(u0.requires_grad_(True))


def test_mixed_dtypes_are_refused():
    def block(k):
        return torch.nn.Linear(2, 2).to(torch.float32 if k % 2 == 0 else torch.float64)

    with pytest.raises(
        TypeError,
        match=r"the blocks must all have one dtype \(it is the dtype of the states\), got "
        r"torch.float32 in layer\(s\) 0, 2, 4..6 and torch.float64 in layer\(s\) 1, 3, 7; convert",
    ):
        LayerParallel(lambda k: block(k if k < 4 else 4 + (k == 7)), depth=8, mode="serial")
    with pytest.raises(
        TypeError,
        match=r"mode='one_shot' runs on the engine's float32 or float64 states; the blocks "
        r"are torch.float16 \(convert with .float\(\) or .double\(\), or use mode='serial'\)",
    ):
        LayerParallel(lambda k: torch.nn.Linear(2, 2).half(), depth=4, mode="one_shot")
    lp = LayerParallel(cases.block_factory("dense", dtype=torch.float32), depth=4, max_levels=2, cfactor=2)
    with pytest.raises(TypeError, match=r"parameter layers.0.0.weight is torch.float32 on cpu, u0 is torch.float64"):
        lp(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(
        TypeError,
        match=r"mode='exact' runs on the engine's float32 or float64 states; u0 is "
        r"torch.float16",
    ):
        lp(torch.zeros(2, 3, dtype=torch.float16))


# -- several ranks --------------------------------------------------------------------------------
GRADIENTS = (
    PRELUDE
    + """
out = {}
for kind in ("conv", "dense"):
    for mode in ("serial", "exact"):
        opts = dict(mode=mode, max_levels=3, cfactor=2) if mode == "exact" else dict(mode=mode)
        out[kind + "-" + mode] = errors(kind, 9, T=1.5, **opts)
out["uneven-exact"] = errors("dense", 4, mode="exact", max_levels=2, cfactor=2)
# depth = ranks - 1: rank 0 holds time point 0 only, no layer
from mpi4py import MPI
out["empty-exact"] = errors("dense", MPI.COMM_WORLD.size - 1, mode="exact", max_levels=2, cfactor=2)
out["empty-serial"] = errors("dense", MPI.COMM_WORLD.size - 1, mode="serial")
out["mean-exact"] = errors("conv", 12, mode="exact", max_levels=3, cfactor=2, coarse="mean")
out["dropout-exact"] = errors("dense", 9, mode="exact", max_levels=3, cfactor=2, dropout=0.3)
out["dropout-serial"] = errors("dense", 9, mode="serial", dropout=0.3)
# one-shot: 1 iteration per pass, 6 warm-restarted passes on the same data -> the exact gradient
out["oneshot-exact"] = errors("dense", 12, nsteps=6, mode="one_shot", max_levels=3, cfactor=2, max_iter=1)
# float32 states (messages between ranks are float32 too)
for kind in ("conv", "dense"):
    out[kind + "-exact-float32"] = errors(kind, 9, T=1.5, dtype="float32", mode="exact", max_levels=3, cfactor=2)
out["conv-serial-float32"] = errors("conv", 9, T=1.5, dtype="float32", mode="serial")
report(out)
"""
)


@pytest.mark.parametrize("nprocs", [2, 3])
def test_matches_autograd_on_several_ranks(mpirun, nprocs):
    runs = mpirun.json(GRADIENTS, nprocs, timeout=240)
    owned = sorted(k for run in runs for k in run["conv-exact"]["owned"])
    assert owned == list(range(9))  # every layer on exactly one rank
    for run in runs:
        for case, e in run.items():
            if case.endswith("float32"):
                tol = FLOAT32_SERIAL if "serial" in case else FLOAT32_EXACT
                assert e["buffers"] < tol, (case, e)
            else:
                tol = 1e-13 if case.endswith("serial") else 1e-10
                if not case.startswith("oneshot"):  # (6 passes: 6 running-statistics updates)
                    assert e["buffers"] < 1e-12, (case, e)
            assert e["uT"] < tol and e["u0_grad"] < tol and e["params"] < tol, (case, e)
    if nprocs == 3:
        assert [run["uneven-exact"]["owned"] for run in runs] == [[0], [1, 2], [3]]
    assert runs[0]["empty-exact"]["owned"] == []


FAILURES = (
    PRELUDE
    + """
import pyxbraid as xb
from pyxbraid.torch import LayerParallel
outcomes = {}
for mode in ("serial", "exact", "one_shot"):
    for when in ("forward", "backward"):
        def block(k):
            if k == 2:
                return FailingBlock(when)
            torch.manual_seed(k)
            return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()).double()
        lp = LayerParallel(block, depth=6, mode=mode, max_levels=2, cfactor=2)
        try:
            lp(torch.ones(2, 4, dtype=torch.float64, requires_grad=True)).sum().backward()
            outcome = "no error"
        except Boom as exc:
            outcome = "own: " + str(exc)
        except xb.RemoteRankError as exc:
            outcome = f"remote {exc.rank}"
        outcomes[mode + "-" + when] = outcome
report(outcomes)
"""
)


def test_failure_in_a_block_on_one_rank_raises_on_every_rank(mpirun):
    runs = mpirun.json(FAILURES, 3, timeout=180)
    # layer 2 lives with time point 3: rank 1 of 3 (points 0-2, 3-4, 5-6)
    for case in runs[0]:
        when = case.split("-")[1]
        assert runs[1][case] == f"own: {when} of a block failed on purpose", (case, runs)
        assert runs[0][case] == runs[2][case] == "remote 1", (case, runs)


CHECKPOINT = (
    PRELUDE
    + """
from mpi4py import MPI
from pyxbraid.torch import LayerParallel
path, step = sys.argv[1], sys.argv[2]
comm = MPI.COMM_WORLD
lp = LayerParallel(block_factory("conv"), depth=7, mode="exact", max_levels=2, cfactor=2)
u0, w = inputs("conv")
if step == "save":
    # one optimisation step so that the parameters and BatchNorm statistics differ from block(k)
    opt = torch.optim.SGD(lp.parameters(), lr=0.1)
    loss_of(lp(u0.clone().requires_grad_(True)), w).backward()
    opt.step()
    state = lp.state_dict()
    if comm.rank == 0:
        torch.save(state, path)
    comm.Barrier()
else:
    lp.load_state_dict(torch.load(path))
lp.eval()
with torch.no_grad():
    uT = lp(u0)
report(dict(uT=uT.flatten()[:20].tolist(), norm=float(uT.norm()), keys=len(lp.state_dict())))
"""
)


def test_state_dict_saved_on_two_ranks_loads_on_one_and_three(mpirun, tmp_path):
    path = str(tmp_path / "lp.pt")
    saved = mpirun.json(CHECKPOINT, 2, timeout=120, args=(path, "save"))
    for nprocs in (1, 3):
        loaded = mpirun.json(CHECKPOINT, nprocs, timeout=120, args=(path, "load"))
        for run in loaded:
            assert run["keys"] == saved[0]["keys"] == 7 * 7  # conv w, b; BatchNorm w, b, mean, var, count
            assert run["norm"] == pytest.approx(saved[0]["norm"], rel=1e-10)
            assert run["uT"] == pytest.approx(saved[0]["uT"], rel=1e-10, abs=1e-13)


DIFFERENT_INPUTS = (
    PRELUDE
    + """
from mpi4py import MPI
from pyxbraid.torch import LayerParallel
rank = MPI.COMM_WORLD.rank
lp = LayerParallel(block_factory("dense"), depth=4, mode="exact", max_levels=2, cfactor=2)
out = {}
for case in ("values", "shape", "dtype"):
    u0 = torch.zeros(3, 3, dtype=torch.float64)
    if rank == 1 and case == "values":
        u0[0, 0] = 1.0
    if rank == 1 and case == "shape":
        u0 = torch.zeros(2, 3, dtype=torch.float64)
    if rank == 1 and case == "dtype":
        u0 = u0.float()
    try:
        lp(u0)
        out[case] = "no error"
    except Exception as exc:
        out[case] = f"{type(exc).__name__}: {exc}"
try:
    lp.layer(3 if rank == 0 else 0)
except KeyError as exc:
    out["layer"] = str(exc)
out["owners"] = [lp.owner(k) for k in range(4)]
# blocks of one dtype on each rank, but not the same on both: refused on every rank
try:
    LayerParallel(block_factory("dense", dtype=torch.float32 if rank == 0 else torch.float64), depth=4)
    out["mixed"] = "no error"
except Exception as exc:
    out["mixed"] = f"{type(exc).__name__}: {exc}"
report(out)
"""
)


def test_inputs_that_differ_between_ranks_raise_on_every_rank(mpirun):
    runs = mpirun.json(DIFFERENT_INPUTS, 2, timeout=120)
    assert runs[0]["values"] == runs[1]["values"]
    assert runs[0]["values"].startswith("ValueError: u0 differs between ranks (its values on rank(s) [1]")
    assert runs[0]["shape"].startswith("ValueError: u0 differs between ranks (shape, dtype)")
    assert runs[1]["dtype"].startswith(
        "TypeError: parameter layers.2.0.weight is torch.float64 on cpu, u0 is torch.float32 on cpu"
    )
    assert runs[0]["dtype"].startswith("RemoteRankError: rank 1 rejected its LayerParallel input")
    assert runs[0]["layer"] == "'layer 3 lives on rank 1, not on rank 0 (which holds layers 0 .. 1)'"
    assert runs[1]["layer"] == "'layer 0 lives on rank 0, not on rank 1 (which holds layers 2 .. 3)'"
    assert runs[0]["owners"] == runs[1]["owners"] == [0, 0, 1, 1]
    assert (
        runs[0]["mixed"]
        == runs[1]["mixed"]
        == (
            "TypeError: the blocks must all have one dtype (it is the dtype of the states), got torch.float32 in "
            "layer(s) 0, 1 and torch.float64 in layer(s) 2, 3; convert them with .float() or .double()"
        )
    )


def test_keep_graph_gives_the_same_gradients_and_uses_the_kept_graphs():
    for coarse in ("tstop", "mean"):
        e = cases.errors("conv", 12, mode="exact", max_levels=3, cfactor=2, coarse=coarse, keep_graph=True)
        assert max(e["uT"], e["u0_grad"], e["params"]) < 1e-10, (coarse, e)
    lp = LayerParallel(cases.block_factory("dense"), depth=12, mode="exact", max_levels=3, cfactor=2, keep_graph=True)
    u0, w = cases.inputs("dense")
    cases.loss_of(lp(u0.requires_grad_(True)), w).backward()
    app = next(iter(lp._engines.values()))[0]
    # every adjoint step with a nonzero adjoint used its kept graph (the others need none)
    assert app.kept_graph_hits > 0 and app.kept_graph_misses == 0
    assert not app._graphs  # nothing left behind after the solve


def test_readme_block_runs():
    import re

    text = (HERE.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "pyxbraid.torch import" in b)
    ns: dict = {}
    exec(compile(block, "README pyxbraid.torch", "exec"), ns)
    assert ns["opening"].weight.grad is not None
    assert list(ns["lp"].owned_layers) == list(range(32))
    assert all(p.grad is not None for p in ns["lp"].parameters())


def test_layer_parallel_inside_a_parent_module_saves_and_loads():
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 3).double(),
        LayerParallel(cases.block_factory("dense"), depth=3, mode="exact"),
        torch.nn.Linear(3, 1).double(),
    )
    sd = model.state_dict()
    assert "1.layers.2.4.running_var" in sd and "0.weight" in sd
    model.load_state_dict(sd)


def test_backward_of_an_earlier_forward_and_retain_graph():
    _, gref, _, _ = cases.reference("dense", 8)
    lp = LayerParallel(cases.block_factory("dense"), depth=8, mode="exact", max_levels=2, cfactor=2)
    u0, w = cases.inputs("dense")
    x1 = u0.clone().requires_grad_(True)
    y1 = lp(x1)
    x2 = (2 * u0).requires_grad_(True)
    y2 = lp(x2)  # the solver now holds the second pass ...
    cases.loss_of(y1, w).backward()  # ... so the first pass's backward solves it again
    assert float((x1.grad - gref).norm() / gref.norm()) < 1e-10
    loss = cases.loss_of(y2, w)
    loss.backward(retain_graph=True)
    first = x2.grad.clone()
    loss.backward()
    assert torch.allclose(x2.grad, 2 * first, rtol=1e-10, atol=0)
    with pytest.raises(RuntimeError, match="marked with @once_differentiable|double backward"):
        x3 = u0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(cases.loss_of(lp(x3), w), x3, create_graph=True)
        g.sum().backward()
