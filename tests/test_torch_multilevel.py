"""pyxbraid.torch.train_multilevel: nested iteration and MG/Opt over a hierarchy in depth of torch blocks.

The gradient transfer ``P^T`` is checked against ``P`` (``<P x, y> = <x, P^T y>``) on 1, 2 and 3
ranks, the MG/Opt coarse objective's first-order coherence to round-off (float64), a cycle's
descent, the public loop on 1 and 2 ranks (bit for bit between rank counts in the serial and
exact modes, and between two runs of one seed), the command line's ``--strategy mgopt`` and the
errors.
"""

from __future__ import annotations

import doctest
import functools
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch_multilevel_cases import ADAM, LOSS, data, model  # noqa: E402

from pyxbraid.torch import _mgopt, _multilevel, train_multilevel  # noqa: E402

torch.set_num_threads(1)

# The network and data of these tests, and the prelude of the scripts run on several ranks.
COMMON = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import torch
from pyxbraid.torch import train_multilevel
from torch_multilevel_cases import ADAM, LOSS, data, digest, model
torch.set_num_threads(1)
"""


def _trainees(net, levels=2, restriction="average", prolongation="linear"):
    from pyxbraid.torch import Hierarchy

    level = _multilevel.split(net)
    h = Hierarchy(level.lp, levels, restriction, prolongation)
    nets = [level] + [_multilevel.Level(level.opening, m, level.head) for m in h.lps[1:]]
    return h, [_multilevel._Trainee(i, m, LOSS, level.lp.comm) for i, m in enumerate(nets)]


def _norm(values):
    return math.sqrt(sum(float(v.double().square().sum()) for v in values))


# -- the transfers ------------------------------------------------------------------------------------
TRANSPOSE = (
    COMMON
    + """
from pyxbraid.torch import Hierarchy
from pyxbraid.torch._multilevel import _Trainee, Level


def values(trainee, salt):
    # random tensors for the owned blocks' parameters, drawn by block index: the same on any rank count
    lp = trainee.net.lp
    return {p: torch.randn(p.shape, generator=torch.Generator().manual_seed(1000 * salt + 10 * k + i),
                           dtype=torch.float64)
            for k in lp.owned_layers for i, p in enumerate(lp.layer(k).parameters())}


out = {}
for prolongation in ("linear", "constant"):
    net = model("exact", depth=16)
    h = Hierarchy(net[1], 3, "average", prolongation)
    for level in (0, 1):
        fine, coarse = (_Trainee(0, Level(net[0], m, net[2]), LOSS, net[1].comm) for m in h.lps[level : level + 2])
        x, y = values(coarse, 1), values(fine, 2)
        px = h.prolong_tensors(level, x)
        pty = h.restrict_gradients(level, y)
        fine.shared, coarse.shared = [], []  # (dot over the blocks only)
        out[f"{prolongation}{level}"] = [fine.dot(px, y), coarse.dot(x, pty)]
report(out)
"""
)


def test_gradient_transfer_is_the_transpose_of_the_prolongation(mpirun):
    runs = {n: mpirun.json(TRANSPOSE, n, timeout=120) for n in (1, 2, 3)}
    for n, ranks in runs.items():
        for run in ranks:
            for key, (pxy, xpty) in run.items():
                assert pxy == pytest.approx(xpty, rel=1e-12, abs=0), (n, key)
                # correctly rounded dot products: the same on any rank count, bit for bit
                assert [pxy, xpty] == runs[1][0][key], (n, key)


def test_restrict_gradients_stencils_by_hand():
    """P^T of the linear prolongation from 2 coarse blocks: rows (1.25, 0.75, 0.25, -0.25) and mirrored."""
    from pyxbraid.torch import Hierarchy, LayerParallel

    lp = LayerParallel(lambda k: torch.nn.Linear(1, 1, bias=False).double(), 4, mode="serial")
    h = Hierarchy(lp, 2)
    fine = {lp.layer(k).weight: torch.full((1, 1), float(10**k), dtype=torch.float64) for k in range(4)}
    got = h.restrict_gradients(0, fine)
    c = [float(got[h.lps[1].layer(j).weight]) for j in range(2)]
    assert c == [1.25 * 1 + 0.75 * 10 + 0.25 * 100 - 0.25 * 1000, -0.25 * 1 + 0.25 * 10 + 0.75 * 100 + 1.25 * 1000]
    h2 = Hierarchy(lp, 2, prolongation="constant")
    got = h2.restrict_gradients(0, fine)
    assert [float(got[h2.lps[1].layer(j).weight]) for j in range(2)] == [11.0, 1100.0]


# -- MG/Opt's pieces -----------------------------------------------------------------------------------
@pytest.mark.parametrize("restriction, prolongation", [("average", "linear"), ("inject", "constant")])
def test_coarse_objective_is_first_order_coherent(restriction, prolongation):
    """At R x the corrected coarse gradient grad f_c - v equals P^T g (the identity on shared parameters)."""
    net = model("exact")
    h, (t, c) = _trainees(net, 2, restriction, prolongation)
    batches, _ = data()
    x, y = batches[0]
    f, _ = t.gradient(x, y)
    g = _mgopt.gradients(t)
    v, _ = _mgopt.coarse_correction([t, c], h, 0, g, x, y)
    restricted = h.restrict_gradients(0, {p: g[p] for p in t.blocks})
    restricted.update({p: g[p] for p in t.shared})
    # a fresh evaluation of the coarse objective F_c = f_c - <v, .> at R x (the coarse blocks hold R x)
    value, grad, _ = _mgopt.Objective(c, x, y, v)()
    diff = _norm(grad[p] - restricted[p] for p in c.params)
    scale = _norm(restricted[p] for p in c.params)
    assert scale > 1e-3 and diff <= 1e-12 * scale, (diff, scale)
    # the coarse blocks are the restriction of the fine ones
    for j in h.lps[1].owned_layers:
        fine = [h.lps[0].layer(k)[0].weight for k in (2 * j, 2 * j + 1)]
        expect = 0.5 * fine[0] + 0.5 * fine[1] if restriction == "average" else fine[0]
        assert torch.equal(h.lps[1].layer(j)[0].weight, expect)
    # first order along a prolonged direction: d/da F(x + a P d) = d/da F_c(R x + a d) at a = 0
    d = {
        p: torch.randn(p.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        for i, p in enumerate(c.params)
    }
    pd = h.prolong_tensors(0, {p: d[p] for p in c.blocks})
    pd.update({p: d[p] for p in t.shared})
    assert t.dot(g, pd) == pytest.approx(c.dot(grad, d), rel=1e-12)
    assert math.isfinite(value) and math.isfinite(f)


def test_an_mgopt_cycle_with_exact_settings_reduces_the_loss():
    """Full batch, exact MGRIT, plain gradient steps: the cycle's coarse correction is accepted and descends."""
    net = model("exact")
    h, trainees = _trainees(net, 3)
    _, (x, y) = data()
    for t in trainees:
        t.optimizer = torch.optim.SGD(t.params, lr=0.05)
    settings = _mgopt.Settings(pre=1, post=1, coarse_steps=8, max_backtracks=6)
    before, _ = trainees[0].gradient(x, y)
    accepted = []
    real = _mgopt.line_search

    def spy(*args):
        accepted.append(real(*args))
        return accepted[-1]

    _mgopt.line_search = spy
    try:
        losses = [_mgopt.cycle(trainees, h, settings, 0, x, y, None)[0] for _ in range(3)]
    finally:
        _mgopt.line_search = real
    after, _ = trainees[0].gradient(x, y)
    assert losses[0] == pytest.approx(before, rel=1e-12)  # the cycle reports the loss at its start
    assert losses[2] < losses[1] < losses[0] and after < losses[2]
    assert accepted[0] > 0  # level 0's first correction was a descent direction and was taken
    # the work: per cycle 3 fine evaluations (start, after pre-smoothing, the accepted trial), the level-1
    # cycle 3 (at R x, after pre-smoothing, its trial) if accepted, the coarsest coarse_steps
    assert trainees[2].evaluations == 3 * 8


def test_a_rejected_line_search_leaves_parameters_and_running_statistics_as_they_were():
    net = model("exact")
    h, trainees = _trainees(net, 2)
    t = trainees[0]
    batches, _ = data()
    x, y = batches[0]
    objective = _mgopt.Objective(t, x, y, None)
    f0, g, _ = objective()
    params = t.values()
    stats = [b.clone() for b in net.buffers()]
    huge = {p: -1e4 * g[p] for p in t.params}  # a descent direction, far too long: every trial rejected
    settings = _mgopt.Settings(max_backtracks=1)
    # (an infinite loss at the trials is a rejection, not a FloatingPointError as in a smoothing step)
    t.loss_fn = lambda out, y: LOSS(out, y) * (math.inf if out.abs().max() > 100 else 1.0)
    assert _mgopt.line_search(t, objective, f0, g, huge, settings) == 0.0
    t.loss_fn = LOSS
    assert all(torch.equal(p, params[p]) for p in t.params)
    assert all(torch.equal(b, s) for b, s in zip(net.buffers(), stats, strict=True))
    assert objective()[0] == f0 and t.evaluations == 3  # (the evaluation at the start is the cached one again)
    # an ascent direction is not tried at all
    assert _mgopt.line_search(t, objective, f0, g, {p: -v for p, v in huge.items()}, settings) == 0.0
    assert t.evaluations == 3
    # a short step along -g is taken at once, and the running statistics are those of its forward pass
    small = {p: -1e-3 * g[p] for p in t.params}
    assert _mgopt.line_search(t, objective, f0, g, small, settings) == 1.0
    assert objective()[0] < f0 and t.evaluations == 4
    assert any(not torch.equal(b, s) for b, s in zip(net.buffers(), stats, strict=True) if b.is_floating_point())


# -- the public loop --------------------------------------------------------------------------------------
def test_docstring_example():
    failures, tried = doctest.testmod(_multilevel, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


@pytest.mark.parametrize("mode", ["serial", "exact", "one_shot"])
def test_nested_and_mgopt_train_in_every_mode(mode):
    batches, (x, y) = data()
    start = None
    for strategy, levels in (("single", 1), ("nested", 3), ("mgopt", 2)):
        net = model(mode)
        r = train_multilevel(net, LOSS, batches, ADAM, strategy=strategy, levels=levels, epochs=4, validation=(x, y))
        assert r.depths == [8, 4, 2][:levels] and r.history.epoch == [1, 2, 3, 4]
        assert len(r.history.step_loss) == 12 and 0 <= r.history.val_accuracy[-1] <= 1
        assert r.history.loss[-1] < r.history.loss[0]
        if strategy == "single":
            start = r.history.loss[0]
            assert r.gradient_evaluations == [12] and r.coarse_weighted == 0
        elif strategy == "nested":
            assert r.gradient_evaluations == [12, 12, 12] and r.coarse_weighted == 12 * (4 / 8 + 2 / 8)
            assert [h.epoch[-1] for h in r.level_histories] == [4, 4, 4]
            assert r.history.loss[0] < start  # the prolonged start beats the random one
        else:
            # per cycle: 3 fine evaluations if the correction is accepted at once (4+ when it backtracks, 2
            # without descent); 4 on the coarse level (at R x, reused by the first of 4 steps)
            assert r.gradient_evaluations[1] == 12 * 4 and 12 * 2 <= r.gradient_evaluations[0] <= 12 * 8
            assert r.level_histories == [r.history]
        if mode == "serial":
            assert math.isnan(r.history.residual[-1])


RUN = (
    COMMON
    + """
import sys
batches, val = data()
out = {}
for strategy, mode in [(s, m) for s in ("nested", "mgopt") for m in sys.argv[1:]]:
    net = model(mode)
    coarse = [1, 1] if strategy == "nested" else None
    r = train_multilevel(net, LOSS, batches, ADAM, strategy=strategy, levels=3, epochs=2, coarse_epochs=coarse,
                         validation=val)
    out[f"{strategy} {mode}"] = [digest(net), r.history.step_loss, r.gradient_evaluations, r.history.val_accuracy]
report(out)
"""
)


def test_serial_and_exact_modes_are_rank_count_independent(mpirun):
    """Bit for bit on 1, 2 and 3 ranks: the trained network's state dict (hashed), losses, work, accuracies.

    Exact MGRIT computes every state with the same operations on any rank count, and the transfers and
    MG/Opt's dot products are distribution-independent by construction. (The coarsest network, depth 2,
    has 3 time points: one per rank.)
    """
    one = mpirun.json(RUN, 1, timeout=120, args=("serial", "exact"))
    # 3 batches an epoch, 2 epochs; mgopt: 4 evaluations a cycle on the coarsest level
    assert len(one[0]) == 4 and one[0]["mgopt exact"][2][2] == 2 * 3 * 4
    assert one[0]["nested exact"][2] == [6, 3, 3]
    assert mpirun.json(RUN, 2, timeout=180, args=("serial", "exact")) == one * 2
    assert mpirun.json(RUN, 3, timeout=240, args=("serial", "exact")) == one * 3


def test_one_shot_runs_are_reproducible(mpirun):
    first = mpirun.json(RUN, 2, timeout=120, args=("one_shot",))
    assert first[0] == first[1] and mpirun.json(RUN, 2, timeout=120, args=("one_shot",)) == first


def test_carried_adam_state_and_the_callback():
    batches, (x, y) = data()
    seen = []

    def callback(level, epoch, history):
        seen.append((level, epoch, len(history.epoch)))
        return level == 1 and epoch == 2  # level 1 ends after 2 of its 3 epochs

    net = model()
    r = train_multilevel(
        net, LOSS, batches, ADAM, strategy="nested", levels=3, epochs=2, coarse_epochs=[1, 3], callback=callback
    )
    assert seen == [(2, 1, 1), (1, 1, 1), (1, 2, 2), (0, 1, 1), (0, 2, 2)]
    assert r.gradient_evaluations == [6, 6, 3] and [len(h.epoch) for h in r.level_histories] == [1, 2, 2]


def test_mgopt_continues_or_resets_the_coarse_optimizer():
    batches, _ = data()
    for reset, steps in ((False, 2 * 3 * 4), (True, 4)):  # 2 epochs of 3 batches, 4 coarse steps a cycle
        made = []

        def adam(params, made=made):
            made.append(ADAM(params))
            return made[-1]

        r = train_multilevel(model(), LOSS, batches, adam, strategy="mgopt", epochs=2, reset_coarse_optimizer=reset)
        coarse = made[1]
        assert {int(s["step"]) for s in coarse.state.values()} == {steps}
        assert r.history.loss[-1] < r.history.loss[0]


# -- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (
            dict(strategy="multigrid"),
            ValueError,
            r"strategy must be one of 'single', 'nested', 'mgopt', got 'multigrid'",
        ),
        (
            dict(strategy="nested", levels=5),
            ValueError,
            r"levels=5 needs a depth divisible by 2\*\*\(levels - 1\) = 16",
        ),
        (dict(strategy="nested", levels=0), ValueError, r"levels must be an integer >= 1, got 0"),
        (dict(strategy="mgopt", levels=1), ValueError, r"levels must be an integer >= 2 with strategy='mgopt'"),
        (dict(strategy="single", levels=2), ValueError, r"levels must be 1 \(or None\) with strategy='single', got 2"),
        (dict(epochs=0), ValueError, r"epochs must be an integer >= 1, got 0"),
        (dict(epochs=1.5), ValueError, r"epochs must be an integer >= 1, got 1.5"),
        (dict(coarse_epochs=[1]), ValueError, r"coarse_epochs must be an integer >= 0 or a sequence of levels - 1 = 2"),
        (dict(strategy="mgopt", coarse_epochs=2), ValueError, r"coarse_epochs is for strategy='nested'"),
        (dict(strategy="mgopt", coarse_steps=0), ValueError, r"coarse_steps must be an integer >= 1, got 0"),
        (dict(strategy="mgopt", c1=1.0), ValueError, r"c1 must be a number in \(0, 1\), got 1.0"),
        (dict(restriction="mean"), ValueError, r"restriction must be one of 'average', 'inject', got 'mean'"),
        (dict(progress="yes"), ValueError, r"progress must be True, False or 'lines', got 'yes'"),
        (dict(validation=[1, 2]), TypeError, r"validation must be None or a pair of tensors"),
        (dict(callback=3), TypeError, r"callback must be callable or None, got int"),
        (dict(reset_coarse_optimizer=1), TypeError, r"reset_coarse_optimizer must be True or False, got 1"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, match):
    batches, _ = data()
    with pytest.raises(exc, match=match):
        train_multilevel(model(), LOSS, batches, ADAM, **kwargs)


def test_bad_model_data_optimizer_and_loss():
    batches, _ = data()
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Sequential holding one .*got Linear"):
        train_multilevel(torch.nn.Linear(2, 2), LOSS, batches, ADAM)
    with pytest.raises(TypeError, match=r"a torch.nn.Sequential must hold exactly one .* it holds 0"):
        train_multilevel(torch.nn.Sequential(torch.nn.Linear(2, 2)), LOSS, batches, ADAM)
    with pytest.raises(TypeError, match=r"data must be re-iterable: .* got list_iterator"):
        train_multilevel(model(), LOSS, iter(batches), ADAM)
    with pytest.raises(ValueError, match=r"data yielded no batch"):
        train_multilevel(model(), LOSS, [], ADAM)
    with pytest.raises(TypeError, match=r"data must yield \(inputs, targets\) pairs, batch 0 is Tensor"):
        train_multilevel(model(), LOSS, [batches[0][0]], ADAM)
    with pytest.raises(TypeError, match=r"optimizer: torch.optim.LBFGS is not supported"):
        train_multilevel(model(), LOSS, batches, torch.optim.LBFGS)
    with pytest.raises(TypeError, match=r"optimizer must be a callable params -> torch.optim.Optimizer"):
        train_multilevel(model(), LOSS, batches, lambda params: None)
    with pytest.raises(TypeError, match=r"loss_fn must return a scalar tensor .* got Tensor \(16,\)"):
        train_multilevel(model(), functools.partial(LOSS, reduction="none"), batches, ADAM)


FAILING = (
    COMMON
    + """
from mpi4py import MPI
from pyxbraid.errors import RemoteRankError

batches, val = data()
out = []
for where in ("callback", "loss"):
    def callback(level, epoch, history):
        if where == "callback" and MPI.COMM_WORLD.rank == 1 and level == 0:
            raise KeyError("the callback failed on purpose")

    calls = [0]

    def loss(out, y):
        calls[0] += 1
        if where == "loss" and MPI.COMM_WORLD.rank == 0 and calls[0] == 5:
            raise ArithmeticError("the loss failed on purpose")
        return LOSS(out, y)

    try:
        train_multilevel(model("exact"), loss, batches, ADAM, strategy="mgopt", epochs=1, callback=callback)
        out.append("no error")
    except (KeyError, ArithmeticError, RemoteRankError) as exc:
        out.append(type(exc).__name__)
report(out)
"""
)


def test_a_failure_on_one_rank_raises_on_every_rank(mpirun):
    assert mpirun.json(FAILING, 2, timeout=120) == [
        ["RemoteRankError", "ArithmeticError"],
        ["KeyError", "RemoteRankError"],
    ]


# -- the command line ----------------------------------------------------------------------------------
def test_digits_mgopt_step_defaults_are_train_multilevels():
    import inspect

    from pyxbraid import train
    from pyxbraid.torch import _digits

    api = inspect.signature(train_multilevel).parameters
    defaults = {k: api[k].default for k in ("pre", "post", "coarse_steps")}
    assert train._mgopt_steps(train.build_parser().parse_args(["digits", "--strategy", "mgopt"])) == defaults
    settings = inspect.signature(_digits.Settings).parameters["mgopt"].default
    assert settings == (defaults["pre"], defaults["post"], defaults["coarse_steps"])


@pytest.mark.parametrize(
    "flags, steps",
    [
        ([], dict(pre=1, post=1, coarse_steps=4)),  # train_multilevel's defaults
        (["--mgopt-pre", "0", "--mgopt-post", "2", "--mgopt-coarse-steps", "2"], dict(pre=0, post=2, coarse_steps=2)),
    ],
    ids=["defaults", "flags"],
)
def test_digits_mgopt_on_one_rank(tmp_path, capsys, flags, steps):
    pytest.importorskip("sklearn")
    from pyxbraid import train

    metrics = tmp_path / "m.json"
    args = ["--mode", "serial", "--depth", "4", "--epochs", "1", "--strategy", "mgopt", "--batch-size", "256", *flags]
    args += ["--target-accuracy", "0.3", "--no-progress", "--no-plots"]
    assert train.main(["digits", *args, "--out", str(tmp_path / "out"), "--metrics", str(metrics)]) == 0
    printed = capsys.readouterr().out
    assert (
        "level 0 (depth 4) epoch 1: loss" in printed and "target validation accuracy 0.3: reached at epoch 1" in printed
    )
    m = json.loads(metrics.read_text())
    # 1438 images in batches of 256: 6 cycles; per cycle coarse_steps coarse evaluations (the first reuses the
    # gradient at the restricted point) and, on the fine level, pre + post smoothing steps, the point after
    # pre-smoothing and 0..5 line-search trials (none if the correction is no descent direction), less the
    # post-smoothing step that reuses an accepted trial's gradient
    coarse = 6 * steps["coarse_steps"]
    fine_per_cycle = steps["pre"] + steps["post"] + 1
    assert m["gradient_evaluations_per_level"][1] == coarse
    assert 6 * fine_per_cycle <= m["fine_gradient_evaluations"] <= 6 * (fine_per_cycle + 5)
    assert m["coarse_gradient_evaluations_weighted"] == coarse * 2 / 4
    assert m["reached_target"] is True and m["epochs_to_target"] == 1 and len(m["history"]["step_loss"]) == 6
    assert m["settings"]["strategy"] == dict(
        strategy="mgopt",
        levels=2,
        **steps,
        max_backtracks=4,
        c1=1e-4,
        reset_coarse_optimizer=False,
        restriction="average",
        prolongation="linear",
    )
    assert m["history"]["step_loss"][-1] < m["history"]["step_loss"][0]
    assert [h["epoch"] for h in m["level_histories"]] == [[1]]
