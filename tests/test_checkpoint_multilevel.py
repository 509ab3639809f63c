"""Checkpoints and resume of the multilevel strategies (nested iteration, MG/Opt).

What is promised (Trainer.fit's Notes) and checked here: resuming from any
checkpoint a nested or MG/Opt run wrote -- after any epoch of any level, or
on a signal in the middle of an epoch -- ends with the parameters, every
level's history, the gradient-evaluation counts and ``switched_to_exact_at``
of the uninterrupted run, bit for bit, in layer-serial, exact and one-shot
modes (full batch: each level's MGRIT iterate is kept; mini-batches; the
adaptive one-shot mode with switch_to_exact). Several ranks:
tests/scripts/nn_checkpoint.py.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from checkpoint_files import rewrite

import pyxbraid as xb
from pyxbraid import nn
from pyxbraid.nn import checkpoint as ckpt_module

HERE = Path(__file__).resolve().parent
SCRIPT = str(HERE / "scripts" / "nn_checkpoint.py")
DATA = xb.datasets.make_peaks(60, 12, seed=5)  # as in scripts/nn_checkpoint.py
LAYER_PARALLEL = {
    "serial": None,
    "exact": dict(max_levels=2, cfactor=2),
    "one_shot": dict(max_levels=2, cfactor=2, max_iter=2, one_shot=True),
    # the adaptive mini-batch one-shot mode; a patience of 1 epoch makes it switch to exact early
    "adaptive": dict(max_levels=2, cfactor=2, max_iter=3, one_shot=True, rel_tol=0.5, switch_to_exact=1),
}
STRATEGIES = {
    "nested": lambda: nn.Nested(3, epochs=[2, 2]),
    "nested_long": lambda: nn.Nested(3, epochs=[4, 4]),
    "nested_tol": lambda: nn.Nested(3, tol=0.3),  # coarse levels stop on a plateau; their epochs follow fit()'s
    "mgopt": lambda: nn.MGOpt(2),
    "mgopt3": lambda: nn.MGOpt(3, pre=1, post=1, coarse_steps=2),
}
OPTIMIZERS = {"adam": lambda: nn.Adam(lr=0.02), "sgd": lambda: nn.SGD(lr=0.05), "lbfgs": lambda: nn.LBFGS()}


def make(strategy, mode="serial", optimizer="adam"):
    net = nn.ResNet(2, 4, 8, 5, activation="tanh", tikhonov=1e-4, smoothness=1e-4, seed=3)
    return nn.Trainer(
        net,
        optimizer=OPTIMIZERS[optimizer](),
        layer_parallel=LAYER_PARALLEL[mode],
        seed=11,
        progress=False,
        strategy=STRATEGIES[strategy](),
    )


def fit(trainer, batch, epochs, **kw):
    return trainer.fit(
        DATA.x_train, DATA.y_train, epochs=epochs, batch_size=batch, validation=(DATA.x_val, DATA.y_val), **kw
    )


def outcome(trainer):
    """Everything a resumed run must reproduce (wall times aside)."""
    return {
        "params": trainer.net.parameters(),
        "histories": [{k: v for k, v in h.as_dict().items() if k != "wall_seconds"} for h in trainer.level_histories],
        "evaluations": trainer.gradient_evaluations,
        "switched": [t.switched_to_exact_at for t in trainer._level_trainers],
    }


def same_values(a, b):
    """Equal, NaN equal to NaN, arrays bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


STALLING = pytest.mark.filterwarnings("ignore::pyxbraid.nn.optim.LineSearchWarning")


@pytest.fixture
def keep_every_checkpoint(monkeypatch):
    """Copy each multilevel checkpoint written to ``<path>.<i>`` (the run's states after each epoch)."""
    written: list[Path] = []
    save = ckpt_module.save_levels

    def saving(trainers, path, *args):
        save(trainers, path, *args)
        copy = Path(f"{path}.{len(written)}")
        shutil.copyfile(path, copy)
        written.append(copy)

    monkeypatch.setattr(ckpt_module, "save_levels", saving)
    return written


@pytest.mark.parametrize(
    "strategy, mode, optimizer, batch, epochs",
    [
        ("nested", "serial", "adam", 15, 3),
        ("nested", "exact", "lbfgs", None, 3),  # full batch: each level warm-restarts MGRIT from its iterate
        ("nested", "one_shot", "sgd", None, 3),
        ("nested_tol", "serial", "adam", 20, 4),
        # the adaptive mode stalls with L-BFGS on mini-batches (failed line searches: the inexact gradients)
        pytest.param("nested", "adaptive", "lbfgs", 20, 4, marks=STALLING),  # the fine network switches after epoch 3
        pytest.param("nested_long", "adaptive", "lbfgs", 20, 2, marks=STALLING),  # level 1 switches after epoch 3
        ("mgopt", "serial", "adam", 15, 3),
        ("mgopt", "one_shot", "adam", None, 4),
        ("mgopt3", "exact", "adam", 20, 3),
        pytest.param("mgopt", "adaptive", "lbfgs", 20, 7, marks=STALLING),  # every level switches after epoch 6
    ],
)
def test_resume_from_every_checkpoint_is_bit_identical(
    keep_every_checkpoint, tmp_path, strategy, mode, optimizer, batch, epochs
):
    straight = make(strategy, mode, optimizer)
    fit(straight, batch, epochs)
    expected = outcome(straight)
    c = tmp_path / "c.npz"
    written = make(strategy, mode, optimizer)
    fit(written, batch, epochs, checkpoint=c)
    assert same_values(outcome(written), expected)  # writing checkpoints changes nothing
    copies = list(keep_every_checkpoint)
    levels = [json.loads(str(np.load(p)["meta"]))["phase"].get("level", 0) for p in copies]
    if strategy.startswith("nested"):  # after every epoch of every level, coarsest first
        assert set(levels) == {0, 1, 2} and levels == sorted(levels, reverse=True)
    assert len(copies) == sum(len(h["epoch"]) for h in expected["histories"])
    for i, copy in enumerate(copies[:-1]):
        resumed = make(strategy, mode, optimizer)
        fit(resumed, batch, epochs, checkpoint=copy, resume=True)
        assert same_values(outcome(resumed), expected), (i, levels[i])
    if mode == "adaptive":
        # a level switched before its last epoch (a resume reproduces it, and what follows)
        switched = {level: e for level, e in enumerate(expected["switched"]) if e is not None}
        done = [len(h["epoch"]) for h in expected["histories"][::-1]]  # each level's epochs, finest first
        done += [done[0]] * (len(expected["switched"]) - len(done))  # MG/Opt: the coarse levels follow the fine one
        assert switched and all(e < done[level] for level, e in switched.items())
        if strategy == "mgopt":  # every level switches with the fine network
            assert expected["switched"] == [expected["switched"][0]] * 2


class _SignallingAdam(nn.Adam):
    """Adam that sends this process SIGINT after the given optimizer step, counted over every level's Adam."""

    steps = 0
    signal_after = -1

    def step(self, *args):
        loss = super().step(*args)
        type(self).steps += 1
        if type(self).steps == type(self).signal_after:
            import os

            os.kill(os.getpid(), signal.SIGINT)
        return loss


@pytest.mark.parametrize(
    "strategy, batch, signal_after, level",
    [
        ("nested", 15, 5, 2),  # the coarsest level, epoch 2, after its first step
        ("nested", 15, 12, 1),  # level 1 in the middle of its second epoch
        ("nested", 15, 16, 1),  # level 1 after its last step (the epoch's end is recorded on resume)
        ("nested", None, 7, 0),  # the fine network, full batch
        ("mgopt", 15, 9, None),  # MG/Opt: after the cycle in progress
    ],
)
def test_a_signal_in_any_level_checkpoints_and_resumes_bit_identically(
    tmp_path, default_sigint, monkeypatch, strategy, batch, signal_after, level
):
    monkeypatch.setitem(OPTIMIZERS, "signalling", lambda: _SignallingAdam(lr=0.02))
    monkeypatch.setattr(_SignallingAdam, "steps", 0)
    straight = make(strategy, "serial", "signalling")
    fit(straight, batch, 3)
    expected = outcome(straight)
    c = tmp_path / "c.npz"
    monkeypatch.setattr(_SignallingAdam, "steps", 0)
    monkeypatch.setattr(_SignallingAdam, "signal_after", signal_after)
    stopped = make(strategy, "serial", "signalling")
    with pytest.raises(nn.TrainingInterrupted, match="stopped by SIGINT") as stop:
        fit(stopped, batch, 3, checkpoint=c)
    assert stop.value.level == level
    meta = json.loads(str(np.load(c)["meta"]))
    assert meta["phase"].get("level") == level
    monkeypatch.setattr(_SignallingAdam, "signal_after", -1)
    resumed = make(strategy, "serial", "signalling")
    fit(resumed, batch, 3, checkpoint=c, resume=True)
    assert same_values(outcome(resumed), expected)


def test_a_multilevel_checkpoint_documents_itself(tmp_path):
    c = tmp_path / "c.npz"
    trainer = make("mgopt3", "exact")
    fit(trainer, None, 2, checkpoint=c)
    with np.load(c, allow_pickle=False) as f:
        assert str(f["format"]) == ckpt_module.MULTILEVEL_FORMAT
        meta = json.loads(str(f["meta"]))
        names = set(f.files)
    assert meta["strategy"] == nn.MGOpt(3, pre=1, post=1, coarse_steps=2).settings()
    assert meta["phase"] == {"cycles": 2} and meta["ranks"] == 1 and "level i's part" in meta["note"]
    assert [m["config"]["depth"] for m in meta["levels"]] == [8, 4, 2]
    assert meta["gradient_evaluations"] == trainer.gradient_evaluations["per_level"] == [6, 6, 4]
    # each level: its parameters, Adam's moments and (full batch, exact mode) its MGRIT iterate
    for level in range(3):
        assert {f"level.{level}.param.layers.weight", f"level.{level}.optimizer.m.layers.weight"} <= names
        assert f"level.{level}.mgrit.states" in names and meta["levels"][level]["mgrit"] is not None
    assert meta["levels"][0]["progress"]["epoch"] == 2 and meta["levels"][1]["progress"]["epoch"] == 0


# --- what a resume must share with the run that wrote the checkpoint ------------------------------------
@pytest.fixture(scope="module")
def nested_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ml")
    c = folder / "nested.npz"
    trainer = make("nested")
    trainer.fit(DATA.x_train, DATA.y_train, epochs=2, batch_size=15, checkpoint=c)
    single = folder / "single.npz"
    net = nn.ResNet(2, 4, 8, 5, activation="tanh", tikhonov=1e-4, smoothness=1e-4, seed=3)
    nn.Trainer(net, optimizer=nn.Adam(lr=0.02), seed=11, progress=False).fit(
        DATA.x_train, DATA.y_train, epochs=1, batch_size=15, checkpoint=single
    )
    return c, single


@pytest.mark.parametrize(
    "strategy, match",
    [
        (lambda: nn.MGOpt(3), r"another strategy: strategy='nested' there, 'mgopt' in this trainer"),
        (lambda: nn.Nested(2, epochs=[2]), r"another strategy setting: levels=3 there, 2 in this trainer"),
        (lambda: nn.Nested(3, epochs=[2, 3]), r"another strategy setting: epochs=\[2, 2\] there, \[2, 3\]"),
        (lambda: nn.Nested(3, epochs=[2, 2], prolongation="constant"), r"prolongation='linear' there, 'constant'"),
        (lambda: "single", r"written by a multilevel run .*MultilevelCheckpoint/1"),
    ],
)
def test_another_strategy_or_setting_is_rejected(nested_checkpoint, tmp_path, strategy, match):
    c = tmp_path / "c.npz"
    shutil.copyfile(nested_checkpoint[0], c)
    net = nn.ResNet(2, 4, 8, 5, activation="tanh", tikhonov=1e-4, smoothness=1e-4, seed=3)
    trainer = nn.Trainer(net, optimizer=nn.Adam(lr=0.02), seed=11, progress=False, strategy=strategy())
    before = net.parameters()
    with pytest.raises(ValueError, match=match):
        trainer.fit(DATA.x_train, DATA.y_train, epochs=3, batch_size=15, checkpoint=c, resume=True)
    assert same_values(net.parameters(), before)  # nothing was changed


def test_a_single_level_checkpoint_is_rejected_by_a_multilevel_trainer(nested_checkpoint):
    with pytest.raises(ValueError, match=r"another strategy: strategy='single' there, 'nested' in this trainer"):
        make("nested").fit(
            DATA.x_train, DATA.y_train, epochs=3, batch_size=15, checkpoint=nested_checkpoint[1], resume=True
        )


def test_other_fit_settings_are_rejected_naming_the_level(nested_checkpoint, tmp_path):
    c = tmp_path / "c.npz"
    shutil.copyfile(nested_checkpoint[0], c)
    with pytest.raises(ValueError, match=r"another batch_size: batch_size=15 there, 20 in this fit"):
        make("nested").fit(DATA.x_train, DATA.y_train, epochs=3, batch_size=20, checkpoint=c, resume=True)
    with pytest.raises(ValueError, match=r"already completed 2 epoch\(s\) on level 0, more than epochs=1"):
        make("nested").fit(DATA.x_train, DATA.y_train, epochs=1, batch_size=15, checkpoint=c, resume=True)


def test_a_nested_cascade_resumes_only_with_its_coarse_epochs(tmp_path, keep_every_checkpoint):
    """Nested(epochs=None): the coarse levels train for fit()'s epochs, which a resume mid-cascade must keep."""
    trainer = nn.Trainer(nn.ResNet(2, 4, 8, 5, seed=3), strategy=nn.Nested(2), seed=11, progress=False)
    trainer.fit(DATA.x_train, DATA.y_train, epochs=2, batch_size=30, checkpoint=tmp_path / "c.npz")
    coarse = keep_every_checkpoint[0]  # after the coarse level's first epoch
    again = nn.Trainer(nn.ResNet(2, 4, 8, 5, seed=3), strategy=nn.Nested(2), seed=11, progress=False)
    with pytest.raises(ValueError, match=r"level 1 of a nested cascade whose coarse levels train for \[2\] epochs"):
        again.fit(DATA.x_train, DATA.y_train, epochs=3, batch_size=30, checkpoint=coarse, resume=True)
    # once the cascade is done, more epochs continue the fine network (as with strategy='single')
    history = again.fit(DATA.x_train, DATA.y_train, epochs=3, batch_size=30, checkpoint=tmp_path / "c.npz", resume=True)
    assert history.epoch == [1, 2, 3] and [len(h.epoch) for h in again.level_histories] == [2, 3]
    # the checkpoints it writes keep the coarse epochs the cascade had, and resume alike
    assert json.loads(str(np.load(tmp_path / "c.npz")["meta"]))["phase"]["coarse_epochs"] == [2]
    third = nn.Trainer(nn.ResNet(2, 4, 8, 5, seed=3), strategy=nn.Nested(2), seed=11, progress=False)
    third.fit(DATA.x_train, DATA.y_train, epochs=4, batch_size=30, checkpoint=tmp_path / "c.npz", resume=True)
    assert [len(h.epoch) for h in third.level_histories] == [2, 4]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a, m: a.update(format=np.array("pyxbraid.nn.MultilevelCheckpoint/7")), "format is 'pyxbraid.nn.Mul"),
        (lambda a, m: m.pop("phase"), "meta must be a JSON object with the keys strategy, phase"),
        (lambda a, m: m["phase"].update(level=3), r"phase.level must be an integer in \[0, 2\], got 3"),
        (lambda a, m: m["phase"].update(level=True), r"phase.level must be an integer in \[0, 2\], got True"),
        (lambda a, m: m["phase"].update(cascade="yes"), "phase.cascade must be true or false"),
        (lambda a, m: m["phase"].update(offset=-1.0), r"phase.offset must be a finite number >= 0"),
        (lambda a, m: m["phase"].update(coarse_epochs=[2]), "phase.coarse_epochs must be a list of 2"),
        (lambda a, m: m["gradient_evaluations"].pop(), "gradient_evaluations must be a list of 3 counts"),
        (lambda a, m: m["gradient_evaluations"].__setitem__(1, -1), r"gradient_evaluations\[1\] must be in"),
        (lambda a, m: m["levels"].pop(), "levels must be a list of 3 level descriptions"),
        (lambda a, m: m["strategy"].pop("tol"), "strategy must be a JSON object with the keys"),
        (lambda a, m: m["levels"][1]["progress"].update(epoch=1), r"array 'level.1.history.epoch' must have shape"),
        (
            lambda a, m: m["levels"][2]["progress"].update(epoch=3),
            r"already completed 3 epoch\(s\) on level 2, more than epochs=2",
        ),
        (lambda a, m: m["levels"][1]["progress"].update(rng=1), r"level.1.progress.rng is not a valid generator"),
        (lambda a, m: a.pop("level.2.param.layers.bias"), r"missing array\(s\) 'level.2.param.layers.bias'"),
        (
            lambda a, m: a.update(
                {"level.1.optimizer.v.layers.bias": -np.ones_like(a["level.1.optimizer.v.layers.bias"])}
            ),
            r"level.1.optimizer state: state\['v'\] must be >= 0",
        ),
        (
            lambda a, m: a.update(
                {"level.0.param.opening.bias": np.full_like(a["level.0.param.opening.bias"], np.inf)}
            ),
            "array 'level.0.param.opening.bias' contains NaN or infinite values",
        ),
    ],
)
def test_a_damaged_multilevel_checkpoint_is_a_clear_error(nested_checkpoint, tmp_path, change, match):
    c = tmp_path / "c.npz"
    shutil.copyfile(nested_checkpoint[0], c)
    rewrite(c, change)
    trainer = make("nested")
    before = trainer.net.parameters()
    with pytest.raises(ValueError, match=match):
        trainer.fit(DATA.x_train, DATA.y_train, epochs=3, batch_size=15, checkpoint=c, resume=True)
    assert same_values(trainer.net.parameters(), before)


# --- several ranks ---------------------------------------------------------------------------------------
def test_multilevel_resume_on_two_ranks_and_from_two_ranks_on_one(tmp_path, mpirun):
    # strategy, mode, optimizer, batch, and the fine network's optimizer step after which rank 1 gets SIGTERM
    cases = [
        ("nested", "serial", "adam", 15, 6),
        ("nested", "exact", "adam", None, 2),
        ("mgopt", "one_shot", "adam", 20, 4),
    ]

    def case(name, s, m, o, b, epochs, **kw):
        return {
            "name": name,
            "strategy": s,
            "mode": m,
            "layer_parallel": LAYER_PARALLEL[m],
            "optimizer": o,
            "batch": b,
            "epochs": epochs,
            **kw,
        }

    first = [case(f"full-{s}-{m}", s, m, o, b, 3) for s, m, o, b, _ in cases]
    # a SIGTERM on rank 1 only, while the fine network trains
    first += [
        case(f"half-{s}-{m}", s, m, o, b, 3, checkpoint=str(tmp_path / f"{s}-{m}.npz"), signal_at=[1, at])
        for s, m, o, b, at in cases
    ]
    spec = {"out": str(tmp_path / "p"), "cases": first}
    out = mpirun(SCRIPT, 2, timeout=240, args=(json.dumps(spec),)).stdout
    reports = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])
    for reports_of_case in reports[len(cases) :]:
        for report in reports_of_case:  # every rank stopped, after the same step
            assert (
                report["interrupted"][0] == signal.SIGTERM
                and report["interrupted"][1:] == reports_of_case[0]["interrupted"][1:]
            )
    for s, m, *_ in cases:
        shutil.copyfile(tmp_path / f"{s}-{m}.npz", tmp_path / f"{s}-{m}.copy.npz")
    # resumed on 2 ranks; a damaged checkpoint: a clear error on every rank, no hang
    damaged = tmp_path / "damaged.npz"
    shutil.copyfile(tmp_path / "nested-serial.npz", damaged)
    rewrite(damaged, lambda a, m: m["phase"].update(level=7))
    spec["cases"] = [
        case(f"resumed-{s}-{m}", s, m, o, b, 3, checkpoint=str(tmp_path / f"{s}-{m}.npz"), resume=True)
        for s, m, o, b, _ in cases
    ] + [case("damaged", "nested", "serial", "adam", 15, 3, checkpoint=str(damaged), resume=True)]
    out = mpirun(SCRIPT, 2, timeout=240, args=(json.dumps(spec),)).stdout
    reports = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])

    def load(name):
        with np.load(tmp_path / f"p.{name}.npz") as f:
            return {k: f[k] for k in f.files}

    for (s, m, o, b, _), report in zip(cases, reports, strict=False):
        two_ranks = load(f"full-{s}-{m}")
        assert same_values(load(f"resumed-{s}-{m}"), two_ranks), (s, m)  # 2 ranks -> 2 ranks: bit for bit
        assert report[0]["history"] == report[1]["history"]
        # 2 ranks -> 1 rank
        trainer = make(s, m, o)
        fit(trainer, b, 3, checkpoint=tmp_path / f"{s}-{m}.copy.npz", resume=True)
        one_rank = trainer.net.parameters()
        if s == "nested":  # Adam's elementwise updates of rank-independent gradients: bit for bit
            assert same_values(one_rank, two_ranks), (s, m)
        else:  # MG/Opt's line search and coarse objective sum dot products over the ranks: rounding
            assert max(float(np.abs(one_rank[k] - two_ranks[k]).max()) for k in one_rank) < 1e-9
    for report in reports[-1]:
        assert report["error"].startswith(("ValueError", "RemoteRankError")), report
    assert any("phase.level must be an integer in [0, 2], got 7" in r["error"] for r in reports[-1])
    # 2 ranks -> 3 ranks (the coarsest network, depth 2, has 3 time points): nested iteration bit for bit
    shutil.copyfile(tmp_path / "nested-serial.copy.npz", tmp_path / "three.npz")
    spec["cases"] = [
        case("three", "nested", "serial", "adam", 15, 3, checkpoint=str(tmp_path / "three.npz"), resume=True)
    ]
    mpirun(SCRIPT, 3, timeout=240, args=(json.dumps(spec),))
    assert same_values(load("three"), load("full-nested-serial"))


def test_a_multilevel_checkpoint_is_written_atomically_and_replaces_a_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "c.npz").symlink_to(victim)
    fit(make("mgopt"), 20, 1, checkpoint=tmp_path / "c.npz")
    assert victim.read_text() == "precious" and not (tmp_path / "c.npz").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "victim.txt"]  # no temporary files left


# --- the command line -------------------------------------------------------------------------------------
CLI = ["--mode", "serial", "--depth", "8", "--T", "3", "--width", "4", "--no-plots", "--no-progress"]


def run_cli(tmp_path, strategy, name, epochs, *extra):
    """Run pyxbraid-train peaks with ``strategy`` (its flags); return the metrics."""
    from pyxbraid import train as cli

    args = ["peaks", *CLI, "--strategy", *strategy, "--epochs", str(epochs), "--out", str(tmp_path / name)]
    assert cli.main([*args, "--metrics", str(tmp_path / f"{name}.json"), *extra]) == 0
    return json.loads((tmp_path / f"{name}.json").read_text())


def without_times(history):
    return {k: v for k, v in history.items() if k != "wall_seconds"}


def assert_resumed_is_straight(resumed, straight):
    assert resumed["settings"]["resumed"] is True
    assert without_times(resumed["history"]) == without_times(straight["history"])
    assert [without_times(h) for h in resumed["level_histories"]] == [
        without_times(h) for h in straight["level_histories"]
    ]
    for key in ("fine_gradient_evaluations", "gradient_evaluations_per_level", "validation_accuracy", "training_loss"):
        assert resumed[key] == straight[key], key


MGOPT_STEP_FLAGS = ["--mgopt-pre", "2", "--mgopt-post", "0", "--mgopt-coarse-steps", "3"]


@pytest.mark.parametrize(
    "strategy",
    [
        ["single"],  # (the single-level checkpoint: it keeps the gradient-evaluation count too)
        ["nested", "--levels", "3", "--coarse-epochs", "1"],
        ["mgopt", "--levels", "2"],
        ["mgopt", *MGOPT_STEP_FLAGS],
    ],
    ids=["single", "nested", "mgopt", "mgopt-steps"],
)
def test_cli_checkpoint_and_resume_with_every_strategy(tmp_path, strategy):
    straight = run_cli(tmp_path, strategy, "straight", 3)
    c = str(tmp_path / "c.npz")
    run_cli(tmp_path, strategy, "first", 2, "--checkpoint", c)
    assert_resumed_is_straight(run_cli(tmp_path, strategy, "resumed", 3, "--checkpoint", c, "--resume"), straight)


def test_cli_mgopt_step_counts_reach_the_strategy_and_its_checkpoint(tmp_path, capsys):
    from pyxbraid import train as cli

    c = tmp_path / "c.npz"
    first = run_cli(tmp_path, ["mgopt", *MGOPT_STEP_FLAGS], "first", 1, "--checkpoint", str(c))
    expected = {"pre": 2, "post": 0, "coarse_steps": 3}
    assert {k: first["settings"]["strategy"][k] for k in expected} == expected
    with np.load(c) as f:
        assert {k: json.loads(str(f["meta"]))["strategy"][k] for k in expected} == expected
    # 5000 points in batches of 100: 50 V-cycles, each with 3 coarse steps (the first one reuses the
    # coarse gradient the coarse objective needs, at the restricted point)
    assert first["gradient_evaluations_per_level"][1] == 50 * 3
    # the defaults are the API's (nn.MGOpt(): pre 1, post 1, coarse_steps 4)
    default = run_cli(tmp_path, ["mgopt"], "default", 1)
    assert {k: default["settings"]["strategy"][k] for k in expected} == {"pre": 1, "post": 1, "coarse_steps": 4}
    assert default["gradient_evaluations_per_level"][1] == 50 * 4
    # a resume with another step count is refused, naming the setting and both values; nothing is trained
    capsys.readouterr()
    written = c.read_bytes()
    other_pre = ["--mgopt-pre", "1", *MGOPT_STEP_FLAGS[2:]]
    args = ["peaks", *CLI, "--strategy", "mgopt", *other_pre, "--epochs", "2", "--out", str(tmp_path / "o")]
    assert cli.main([*args, "--checkpoint", str(c), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "was written for another strategy setting: pre=2 there, 1 in this trainer" in err, err
    assert c.read_bytes() == written
