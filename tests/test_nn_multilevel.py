"""pyxbraid.nn multilevel training in depth: the hierarchy's transfers, nested iteration and MG/Opt.

Transfers: exact for parameters constant (and linear) in t, P^T the adjoint of
P, 1 and 2 ranks bit-identical (a coarse layer's children straddling the rank
boundary). Strategies: first-order coherence of MG/Opt's coarse objective,
bitwise reproducibility, 1 against 2 ranks, lower training loss on peaks,
argument errors naming the argument.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import pyxbraid as xb
from pyxbraid import nn
from pyxbraid.nn.hierarchy import prolongation_stencil, restriction_stencil
from pyxbraid.nn.strategies import _Objective, level_trainers

HERE = Path(__file__).resolve().parent
LAYERS = {"native": None, "dense": nn.Dense(4), "conv": nn.Conv1d(2, 2)}


def _set_layers(net, fn):
    """Set every residual layer's parameters to fn(t_mid) * a fixed random pattern (+ an offset)."""
    full = net.parameters()
    rng = np.random.default_rng(1)
    depth, h = net.config.depth, net.h
    for name in full:
        if name.startswith("layers."):
            a, b = rng.standard_normal(full[name].shape[1:]), rng.standard_normal(full[name].shape[1:])
            full[name] = np.array([a + fn((k + 0.5) * h) * b for k in range(depth)])
    net.set_parameters(full)
    return full


@pytest.mark.parametrize("layer", list(LAYERS), ids=list(LAYERS))
@pytest.mark.parametrize(
    ("restriction", "prolongation", "linear"),
    [
        ("average", "linear", True),
        ("average", "constant", False),
        ("inject", "linear", False),
        ("inject", "constant", False),
    ],
)
def test_transfers_are_exact_for_constant_and_linear_parameters(layer, restriction, prolongation, linear):
    cases = [lambda t: 0.0] + ([lambda t: 3.0 * t - 1.0] if linear else [])
    for fn in cases:
        net = nn.ResNet(2, 4, 16, 3, T=2.0, seed=1, layer=LAYERS[layer])
        full = _set_layers(net, fn)
        hier = nn.Hierarchy(net, 3, restriction, prolongation)
        c1 = hier.restrict(0, net.local_parameters)
        c2 = hier.restrict(1, c1)
        for level, c in ((1, c1), (2, c2)):
            coarse = hier.nets[level]
            expected = _set_layers(coarse, fn)
            got = coarse.full_dict(c)
            for name in full:  # the opening and classifier are shared: copied from the fine network
                want = expected[name] if name.startswith("layers.") else full[name]
                np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-14, err_msg=name)
        # prolongation: back to the fine network exactly
        back = net.full_dict(hier.prolong(0, hier.prolong(1, c2)))
        for name in full:
            np.testing.assert_allclose(back[name], full[name], rtol=0, atol=1e-14, err_msg=name)


def test_averaging_and_injection_are_not_exact_for_linear_parameters_where_documented():
    # injection sits half a fine step off the coarse midpoint: a linear profile is shifted
    net = nn.ResNet(2, 4, 8, 3, seed=1)
    full = _set_layers(net, lambda t: t)
    hier = nn.Hierarchy(net, 2, "inject", "constant")
    coarse = hier.nets[1].full_dict(hier.restrict(0, net.local_parameters))
    expected = _set_layers(hier.nets[1], lambda t: t)
    assert not np.allclose(coarse["layers.weight"], expected["layers.weight"])
    assert full  # the fine profile itself was set


@pytest.mark.parametrize("prolongation", ["linear", "constant"])
@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_gradient_restriction_is_the_transpose_of_prolongation(prolongation, n):
    P = np.zeros((2 * n, n))
    for i, row in enumerate(prolongation_stencil(n, prolongation)):
        for j, w in row:
            P[i, j] += w
    net = nn.ResNet(2, 3, 2 * n, 2, seed=0)
    hier = nn.Hierarchy(net, 2, prolongation=prolongation)
    rng = np.random.default_rng(2)
    c = rng.standard_normal(hier.nets[1].local_num_parameters)
    f = rng.standard_normal(net.local_num_parameters)
    assert np.dot(hier.prolong(0, c), f) == pytest.approx(np.dot(c, hier.restrict_gradient(0, f)), rel=1e-13)
    # the stencils: rows of P sum to 1 (constants preserved), and so do R's
    assert np.allclose(P.sum(axis=1), 1.0)
    assert all(abs(sum(w for _, w in row) - 1.0) < 1e-15 for row in restriction_stencil(2 * n))


def test_first_order_coherence_of_the_mgopt_coarse_objective():
    d = xb.datasets.make_peaks(60, 10, seed=2)
    net = nn.ResNet(2, 4, 8, 5, T=2.0, tikhonov=1e-3, smoothness=1e-3, seed=3)
    trainer = nn.Trainer(net, strategy="mgopt", levels=2, progress=False)
    fine, coarse = level_trainers(trainer)
    hier = trainer._hierarchy
    _, g = fine.loss_and_gradient(d.x_train, d.y_train)
    coarse.net.local_parameters[...] = hier.restrict(0, net.local_parameters)
    _, gc = coarse.loss_and_gradient(d.x_train, d.y_train)
    v = gc - hier.restrict_gradient(0, g)
    _, model_grad = _Objective(coarse, d.x_train, d.y_train, None, v)()
    restricted = hier.restrict_gradient(0, g)
    np.testing.assert_allclose(model_grad, restricted, rtol=0, atol=1e-14 * np.abs(restricted).max())
    # and P^T g is the derivative of the fine loss along prolonged directions (central differences)
    rng = np.random.default_rng(4)
    direction = hier.prolong(0, rng.standard_normal(coarse.net.local_num_parameters))
    base = net.local_parameters.copy()
    eps = 1e-6
    values = []
    for s in (1, -1):
        net.local_parameters[...] = base + s * eps * direction
        values.append(fine.loss_and_gradient(d.x_train, d.y_train)[0])
    net.local_parameters[...] = base
    assert (values[0] - values[1]) / (2 * eps) == pytest.approx(np.dot(g, direction), rel=1e-6)


def _train(strategy, lp=None, epochs=3, seed=1, layer=None):
    d = xb.datasets.make_peaks(200, 50, seed=5)
    net = nn.ResNet(2, 8, 16, 5, T=3.0, tikhonov=1e-5, smoothness=1e-5, seed=seed, layer=layer)
    trainer = nn.Trainer(net, optimizer=nn.Adam(lr=0.02), layer_parallel=lp, strategy=strategy, progress=False)
    history = trainer.fit(d.x_train, d.y_train, epochs=epochs, batch_size=50, validation=(d.x_val, d.y_val))
    return trainer, history, net.local_parameters.copy()


ONE_SHOT = dict(max_levels=2, cfactor=2, max_iter=2, one_shot=True)
EXACT = dict(max_levels=2, cfactor=2, abs_tol=1e-12, abs_tol_adjoint=1e-12)


@pytest.mark.parametrize("strategy", ["nested", "mgopt"])
@pytest.mark.parametrize("lp", [None, EXACT, ONE_SHOT], ids=["serial", "exact", "one_shot"])
def test_strategies_reproduce_bitwise_and_lower_the_loss(strategy, lp):
    first, h1, p1 = _train(strategy, lp)
    second, h2, p2 = _train(strategy, lp)
    np.testing.assert_array_equal(p1, p2)
    assert h1.loss == h2.loss and h1.val_accuracy == h2.val_accuracy
    assert first.gradient_evaluations == second.gradient_evaluations
    assert h1.loss[-1] < h1.loss[0]
    assert first.gradient_evaluations["fine"] > 0 and first.gradient_evaluations["coarse_weighted"] > 0


def test_exact_mode_strategies_match_serial_mode():
    for strategy in ("nested", "mgopt"):
        _, hs, ps = _train(strategy, None, epochs=2)
        _, he, pe = _train(strategy, EXACT, epochs=2)
        np.testing.assert_allclose(pe, ps, rtol=1e-8, atol=1e-10)
        assert he.loss == pytest.approx(hs.loss, rel=1e-9)


def test_strategies_with_a_numpy_layer():
    _, history, _ = _train(nn.Nested(levels=2, epochs=[2]), layer=nn.Dense(8), epochs=2)
    assert history.loss[-1] < history.loss[0]
    _, history, _ = _train(nn.MGOpt(levels=2), layer=nn.Dense(8), epochs=2)
    assert history.loss[-1] < history.loss[0]


def test_single_strategy_is_the_plain_trainer():
    _, h1, p1 = _train("single")
    d = xb.datasets.make_peaks(200, 50, seed=5)
    net = nn.ResNet(2, 8, 16, 5, T=3.0, tikhonov=1e-5, smoothness=1e-5, seed=1)
    trainer = nn.Trainer(net, optimizer=nn.Adam(lr=0.02), progress=False)
    h2 = trainer.fit(d.x_train, d.y_train, epochs=3, batch_size=50, validation=(d.x_val, d.y_val))
    np.testing.assert_array_equal(p1, net.local_parameters)
    assert h1.loss == h2.loss
    assert trainer.gradient_evaluations == {"fine": 12, "per_level": [12], "coarse_weighted": 0.0}


def test_multilevel_training_lowers_the_loss_on_peaks():
    d = xb.datasets.peaks()
    losses = {}
    for strategy in ("single", nn.Nested(levels=3, epochs=[3, 3]), nn.MGOpt(levels=3)):
        net = nn.ResNet(2, 8, 32, 5, T=5.0, tikhonov=1e-5, smoothness=1e-5, seed=1)
        trainer = nn.Trainer(net, optimizer=nn.Adam(lr=0.01), strategy=strategy, progress=False)
        history = trainer.fit(d.x_train[:1000], d.y_train[:1000], epochs=3, batch_size=100)
        losses[trainer.strategy.name] = history.loss
        assert history.loss[-1] < history.loss[0], trainer.strategy
    # nested iteration starts the fine network from the trained coarse ones: lower from the first epoch
    assert losses["nested"][0] < losses["single"][0]


def test_callback_returning_true_stops_training():
    d = xb.datasets.make_peaks(100, 20, seed=1)
    for strategy in ("single", "nested", "mgopt"):
        trainer = nn.Trainer(
            nn.ResNet(2, 4, 8, 5, seed=1), strategy=strategy, levels=2 if strategy != "single" else None, progress=False
        )
        history = trainer.fit(d.x_train, d.y_train, epochs=5, batch_size=50, callback=lambda e, h: e == 2)
        assert history.epoch == [1, 2], strategy


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(strategy="multigrid"), "strategy must be one of 'single', 'nested', 'mgopt'.*got 'multigrid'"),
        (dict(strategy="nested", levels=0), "levels must be an integer >= 1, got 0"),
        (dict(strategy="nested", levels=4), r"levels=4 needs a depth divisible by 2\*\*\(levels - 1\) = 8.*depth=12"),
        (dict(strategy="single", levels=3), "levels must be 1 or None with strategy='single', got 3"),
        (dict(strategy=nn.Nested(2), levels=2), "levels=2 was given with strategy=Nested"),
    ],
)
def test_bad_strategy_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.Trainer(nn.ResNet(2, 4, 12, 3), progress=False, **kwargs)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: nn.Nested(3, epochs=[1]), r"epochs must have levels - 1 = 2 entries"),
        (lambda: nn.Nested(3, tol=2.0), r"tol must be a number in \(0, 1\), got 2.0"),
        (lambda: nn.MGOpt(2, pre=-1), "pre must be an integer >= 0, got -1"),
        (lambda: nn.MGOpt(2, c1=0), r"c1 must be a number in \(0, 1\), got 0"),
        (lambda: nn.MGOpt(2, prolongation="cubic"), "prolongation must be one of 'linear', 'constant', got 'cubic'"),
        (lambda: nn.Hierarchy(nn.ResNet(2, 4, 6, 3), 3), "levels=3 needs a depth divisible by"),
    ],
)
def test_bad_strategy_settings_name_the_setting(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_ranks_agree_on_the_results(mpirun):
    """1, 2 and 3 ranks: transfers bit-identical, serial and exact trajectories equal to round-off."""
    runs = {}
    for nprocs in (1, 2, 3):
        result = mpirun(str(HERE / "scripts" / "nn_multilevel.py"), nprocs, timeout=240)
        runs[nprocs] = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))[7:])
    one = runs[1]
    for two in (runs[2], runs[3]):
        _compare(one, two)


def _compare(one, two):
    # transfers: bit-identical, also where children straddle the rank boundary
    for key in one:
        if key.startswith(("native-", "dense-")):
            assert one[key] == two[key], key
    # serial mode: same trajectory (dot products summed over ranks: round-off only)
    for key in ("nested-serial-0", "mgopt-serial-0", "nested-exact-0", "mgopt-exact-0", "mgopt-serial_zero_pad-0"):
        for name, value in one[key]["params"].items():
            np.testing.assert_allclose(two[key]["params"][name], value, rtol=1e-9, atol=1e-11, err_msg=f"{key} {name}")
        assert two[key]["loss"] == pytest.approx(one[key]["loss"], rel=1e-10), key
        assert two[key]["evaluations"] == one[key]["evaluations"], key
    # one-shot: reproducible for a fixed rank count
    for run in (one, two):
        assert run["mgopt-one_shot-0"] == run["mgopt-one_shot-1"]
    assert two["ranks"] > 1


# --- the command line: --strategy, --levels, --coarse-epochs, --target-accuracy, and the metrics ---------
CLI = ["--mode", "serial", "--depth", "16", "--T", "3", "--epochs", "4", "--no-plots", "--no-progress"]


def _metrics(path):
    return json.loads(Path(path).read_text())


@pytest.mark.parametrize("strategy", ["single", "nested", "mgopt"])
def test_cli_strategy_target_and_metrics(tmp_path, strategy):
    from pyxbraid import train as cli

    extra = [] if strategy == "single" else ["--levels", "2"]
    out = tmp_path / "out"
    args = ["peaks", *CLI, "--strategy", strategy, *extra, "--target-accuracy", "0.6", "--out", str(out)]
    assert cli.main([*args, "--metrics", str(tmp_path / "m.json")]) == 0
    m = _metrics(tmp_path / "m.json")
    assert m["reached_target"] is True
    assert m["epochs_to_target"] == len(m["history"]["epoch"]) >= 1
    assert m["history"]["val_accuracy"][-1] >= 0.6
    assert all(a < 0.6 for a in m["history"]["val_accuracy"][:-1])
    assert 0 < m["wall_seconds_to_target"] <= m["wall_seconds"]
    assert m["fine_gradient_evaluations"] == m["gradient_evaluations_per_level"][0] > 0
    assert m["settings"]["strategy"]["strategy"] == strategy
    if strategy == "single":
        assert m["coarse_gradient_evaluations_weighted"] == 0.0
    else:  # the coarse network has half the depth: each of its evaluations counts half
        assert m["coarse_gradient_evaluations_weighted"] == m["gradient_evaluations_per_level"][1] / 2 > 0
    # an unreachable target: runs all epochs, says so
    assert (
        cli.main([*args[:-2], "--target-accuracy", "1", "--out", str(out), "--metrics", str(tmp_path / "n.json")]) == 0
    )
    n = _metrics(tmp_path / "n.json")
    assert n["reached_target"] is False and n["epochs_to_target"] is None and n["wall_seconds_to_target"] is None
    assert len(n["history"]["epoch"]) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "multigrid"], "argument --strategy: invalid choice: 'multigrid'"),
        (["--levels", "3"], "--levels 3 needs --strategy nested or mgopt"),
        (["--strategy", "nested", "--levels", "6"], "--levels: levels=6 needs a depth divisible by"),
        (["--strategy", "mgopt", "--coarse-epochs", "2"], "--coarse-epochs needs --strategy nested"),
        (["--target-accuracy", "1.5"], r"argument --target-accuracy: must be a number in \(0, 1\], got '1.5'"),
        (["--strategy", "mgopt", "--mgopt-pre", "-1"], r"argument --mgopt-pre: must be an integer in 0\.\.\d+, got -1"),
        (["--strategy", "mgopt", "--mgopt-post", "x"], r"argument --mgopt-post: must be an integer, got 'x'"),
        (
            ["--strategy", "mgopt", "--mgopt-coarse-steps", "0"],
            r"argument --mgopt-coarse-steps: must be an integer in 1\.\.\d+, got 0",
        ),
        (["--mgopt-pre", "2"], "--mgopt-pre needs --strategy mgopt"),
        (["--strategy", "nested", "--mgopt-post", "0"], "--mgopt-post needs --strategy mgopt"),
        (["--strategy", "nested", "--mgopt-coarse-steps", "2"], "--mgopt-coarse-steps needs --strategy mgopt"),
    ],
)
def test_cli_rejects_bad_strategy_arguments(capsys, args, message):
    from pyxbraid import train as cli

    with pytest.raises(SystemExit) as info:
        cli.main(["peaks", *CLI, *args])
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_cli_mgopt_step_defaults_are_the_apis():
    import inspect

    from pyxbraid import train as cli

    api = inspect.signature(nn.MGOpt).parameters
    defaults = {k: api[k].default for k in ("pre", "post", "coarse_steps")}
    assert defaults == {"pre": 1, "post": 1, "coarse_steps": 4}
    parser = cli.build_parser()
    for dataset in ("peaks", "digits"):
        assert cli._mgopt_steps(parser.parse_args([dataset, "--strategy", "mgopt"])) == defaults
        given = parser.parse_args([dataset, "--strategy", "mgopt", "--mgopt-post", "0", "--mgopt-coarse-steps", "7"])
        assert cli._mgopt_steps(given) == {"pre": 1, "post": 0, "coarse_steps": 7}
        shown = " ".join(parser.commands[dataset].format_help().split())
        for flag, default in (("pre", 1), ("post", 1), ("coarse-steps", 4)):
            assert f"--mgopt-{flag} MGOPT_{flag.upper().replace('-', '_')} --strategy mgopt:" in shown
            assert re.search(rf"--mgopt-{flag} .*?\(default {default}, as in the API\)", shown)


# Each rank says how it ended (an abort of one rank could cut the other's output short).
MPI_CLI = """
import sys
from mpi4py import MPI
from pyxbraid import train

try:
    code = train.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stderr.flush()
print(f"RANK {MPI.COMM_WORLD.Get_rank()} EXIT {code}", flush=True)
"""


@pytest.mark.parametrize(
    "args, message",
    [
        (["peaks", "--strategy", "mgopt", "--mgopt-pre", "-2"], "argument --mgopt-pre: must be an integer in 0..2"),
        (["digits", "--mgopt-coarse-steps", "2"], "--mgopt-coarse-steps needs --strategy mgopt"),
    ],
)
def test_cli_mgopt_step_errors_on_two_ranks_end_every_rank_with_status_2(mpirun, args, message):
    job = mpirun(MPI_CLI, 2, timeout=60, args=args)
    assert sorted(re.findall(r"RANK \d EXIT \d+", job.stdout)) == ["RANK 0 EXIT 2", "RANK 1 EXIT 2"], job.stdout
    lines = [line for line in job.stderr.splitlines() if line.strip()]  # rank 0 alone prints the one line
    assert len(lines) == 1 and lines[0].startswith("pyxbraid-train: error: ") and message in lines[0], job.stderr


def test_cli_multilevel_on_two_ranks_matches_one_rank(tmp_path, mpirun):
    from pyxbraid import train as cli

    args = ["peaks", *CLI, "--strategy", "nested", "--levels", "3", "--coarse-epochs", "1", "--target-accuracy", "0.7"]
    assert cli.main([*args, "--out", str(tmp_path / "a"), "--metrics", str(tmp_path / "one.json")]) == 0
    mpirun(
        "import sys; from pyxbraid import train; sys.exit(train.main(sys.argv[1:]))",
        2,
        timeout=180,
        args=(*args, "--out", str(tmp_path / "b"), "--metrics", str(tmp_path / "two.json")),
    )
    one, two = _metrics(tmp_path / "one.json"), _metrics(tmp_path / "two.json")
    assert two["ranks"] == 2
    for key in ("reached_target", "epochs_to_target", "fine_gradient_evaluations", "gradient_evaluations_per_level"):
        assert one[key] == two[key], key
    # serial mode with Adam: the gradients do not depend on the rank count
    assert two["history"]["loss"] == pytest.approx(one["history"]["loss"], rel=1e-12)


def test_a_bad_strategy_on_one_rank_raises_on_every_rank(mpirun):
    code = """
from mpi4py import MPI
import pyxbraid as xb
from pyxbraid import nn

comm = MPI.COMM_WORLD
for strategy, levels in ((["nested", "multigrid"][comm.Get_rank()], 2), ("nested", [2, 3][comm.Get_rank()])):
    try:
        nn.Trainer(nn.ResNet(2, 4, 8, 3), comm=comm, strategy=strategy, levels=levels, progress=False)
        print(f"RANK {comm.Get_rank()} no error", flush=True)
    except Exception as exc:
        print(f"RANK {comm.Get_rank()} {type(exc).__name__}: {exc}", flush=True)
"""
    out = mpirun(code, 2, timeout=60).stdout  # (two ranks' lines may run together in the shared stdout)
    assert out.count("RANK ") == 4 and "no error" not in out, out
    # the rank with the bad name says why; the other names it
    assert "RANK 1 ValueError: strategy must be one of 'single', 'nested', 'mgopt'" in out
    assert "RANK 0 RemoteRankError: rank 1 rejected its Trainer arguments: ValueError: strategy must be" in out
    # valid but different settings: every rank raises, naming the difference
    assert out.count("Trainer settings differs between ranks (rank(s) [1] differ from rank 0): strategy.levels") == 2


def test_nested_tolerance_leaves_coarse_levels_early_and_one_level_is_plain_training():
    d = xb.datasets.make_peaks(200, 50, seed=1)
    trainer = nn.Trainer(nn.ResNet(2, 8, 16, 5, T=2.0, seed=1), strategy=nn.Nested(3, tol=0.05), progress=False)
    trainer.fit(d.x_train, d.y_train, epochs=6, batch_size=50)
    coarse = trainer.level_histories[:-1]
    assert all(len(h.epoch) < 6 for h in coarse) and len(trainer.level_histories[-1].epoch) == 6
    for h in coarse:  # stopped at the first epoch whose loss fell by less than 5%
        assert h.loss[-2] - h.loss[-1] < 0.05 * h.loss[-2]
        assert all(a - b >= 0.05 * a for a, b in zip(h.loss[:-2], h.loss[1:-1], strict=True))
    # one level: the network alone, as strategy="single"
    _, h1, p1 = _train(nn.Nested(1))
    _, h2, p2 = _train("single")
    np.testing.assert_array_equal(p1, p2)


def test_a_second_nested_fit_continues_the_fine_network():
    d = xb.datasets.make_peaks(200, 50, seed=1)
    net = nn.ResNet(2, 8, 16, 5, T=2.0, seed=1)
    trainer = nn.Trainer(net, strategy=nn.Nested(3, epochs=[2, 2]), progress=False)
    trainer.fit(d.x_train, d.y_train, epochs=2, batch_size=50)
    after_first = net.local_parameters.copy()
    coarse = [t.net.local_parameters.copy() for t in trainer._level_trainers[1:]]
    history = trainer.fit(d.x_train, d.y_train, epochs=1, batch_size=50)
    assert len(trainer.level_histories) == 1 and history.epoch == [1]
    assert trainer.gradient_evaluations == {"fine": 4, "per_level": [4, 0, 0], "coarse_weighted": 0.0}
    # the coarse networks were neither trained nor prolonged into the fine one
    for t, before in zip(trainer._level_trainers[1:], coarse, strict=True):
        np.testing.assert_array_equal(t.net.local_parameters, before)
    assert not np.array_equal(net.local_parameters, after_first)
