"""Checkpoints and resume: Trainer.fit(checkpoint=..., resume=...), optimizer state, signals, the file format.

What is promised (Trainer.fit's Notes) and checked here: a run interrupted
and resumed in a new process ends with parameters bit-identical to an
uninterrupted run on the same rank count in layer-serial mode and in the
MGRIT modes (the full-batch ones warm-restart from MGRIT's iterate, which
the checkpoint keeps); across rank counts for SGD/Adam (L-BFGS: to
rounding, its dot products are sums over ranks).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile
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
    "exact": dict(max_levels=3, cfactor=2),
    "one_shot": dict(max_levels=3, cfactor=2, max_iter=2, one_shot=True),
}
OPTIMIZERS = {"adam": lambda: nn.Adam(lr=0.02), "sgd": lambda: nn.SGD(lr=0.05), "lbfgs": lambda: nn.LBFGS()}


def train(mode, optimizer, batch, epochs, checkpoint=None, resume=False, **kw):
    """The network and settings of scripts/nn_checkpoint.py, on this process alone."""
    net = nn.ResNet(2, 4, 9, 5, activation="tanh", tikhonov=1e-4, smoothness=1e-4, seed=3)
    trainer = nn.Trainer(
        net, optimizer=OPTIMIZERS[optimizer](), layer_parallel=LAYER_PARALLEL[mode], seed=11, progress=False
    )
    history = trainer.fit(
        DATA.x_train,
        DATA.y_train,
        epochs=epochs,
        batch_size=batch,
        validation=(DATA.x_val, DATA.y_val),
        checkpoint=checkpoint,
        resume=resume,
        **kw,
    )
    return net.parameters(), history, trainer


def same_history(a, b):
    """Equal entries, NaN equal to NaN (wall times aside)."""
    da = {k: v for k, v in (a if isinstance(a, dict) else a.as_dict()).items() if k != "wall_seconds"}
    db = {k: v for k, v in (b if isinstance(b, dict) else b.as_dict()).items() if k != "wall_seconds"}
    return da.keys() == db.keys() and all(
        len(da[k]) == len(db[k])
        and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(da[k], db[k], strict=True))
        for k in da
    )


def assert_bitwise(p, q):
    assert p.keys() == q.keys()
    for k in p:
        assert np.array_equal(p[k], q[k]), (k, np.abs(p[k] - q[k]).max())


def max_difference(p, q):
    return max(float(np.abs(p[k] - q[k]).max()) for k in p)


def script_results(job):
    """The reports of scripts/nn_checkpoint.py: per case, one per rank."""
    return json.loads(next(line for line in job.stdout.splitlines() if line.startswith("RESULT"))[7:])


def assert_same_count(resumed, straight):
    """A resumed fit reports the gradient evaluations of the uninterrupted one (the checkpoint keeps the count)."""
    assert resumed.gradient_evaluations == straight.gradient_evaluations
    assert resumed.gradient_evaluations["fine"] == resumed.gradient_evaluations["per_level"][0] > 0


# --- one rank: what a resumed run reproduces ------------------------------------------------------
@pytest.mark.parametrize(
    "mode, optimizer, batch",
    [
        ("serial", "sgd", 15),
        ("serial", "adam", 15),
        ("serial", "lbfgs", None),
        ("serial", "adam", None),
        ("exact", "adam", 15),
        ("exact", "sgd", 15),
        ("one_shot", "adam", 15),
    ],
)
def test_resume_is_bit_identical(tmp_path, mode, optimizer, batch):
    full, history, straight = train(mode, optimizer, batch, 4)
    c = tmp_path / "c.npz"
    half, first, interrupted = train(mode, optimizer, batch, 2, checkpoint=c)
    assert first.epoch == [1, 2] and c.is_file()
    assert max_difference(half, full) > 0  # the checkpoint is taken halfway, not at the end
    assert 0 < interrupted.gradient_evaluations["fine"] < straight.gradient_evaluations["fine"]
    resumed, second, trainer = train(mode, optimizer, batch, 4, checkpoint=c, resume=True)
    assert_bitwise(resumed, full)
    assert_same_count(trainer, straight)
    assert same_history(second, history) and second.epoch == [1, 2, 3, 4]
    assert second.wall_seconds[:2] == first.wall_seconds and second.wall_seconds[2] >= first.wall_seconds[1]


@pytest.mark.parametrize("mode", ["exact", "one_shot"])
def test_full_batch_mgrit_resume_is_bit_identical(tmp_path, mode):
    """Full batch: MGRIT warm-restarts from the previous step's iterate, which the checkpoint keeps."""
    steps = 6 if mode == "one_shot" else 5
    full, history, straight = train(mode, "lbfgs", None, 2 * steps)
    c = tmp_path / "c.npz"
    half, first, _ = train(mode, "lbfgs", None, steps, checkpoint=c)
    assert max_difference(half, full) > 0
    resumed, second, trainer = train(mode, "lbfgs", None, 2 * steps, checkpoint=c, resume=True)
    assert_bitwise(resumed, full)
    assert_same_count(trainer, straight)  # (L-BFGS: line-search evaluations too)
    assert same_history(second, history)


def test_a_checkpoint_keeps_the_mgrit_iterate_only_where_it_matters(tmp_path):
    for mode, batch, kept in (
        ("one_shot", None, True),
        ("exact", None, True),
        ("exact", 15, False),
        ("serial", None, False),
    ):
        c = tmp_path / f"{mode}{batch}.npz"
        train(mode, "adam", batch, 1, checkpoint=c)
        with np.load(c) as f:
            assert ("mgrit.states" in f.files) is kept, (mode, batch)
            meta = json.loads(str(f["meta"]))
            assert (meta["mgrit"] is not None) is kept


def test_resume_of_a_finished_run_returns_its_history(tmp_path):
    c = tmp_path / "c.npz"
    done, history, finished = train("serial", "adam", 15, 3, checkpoint=c)
    again, h2, trainer = train("serial", "adam", 15, 3, checkpoint=c, resume=True)
    assert_bitwise(again, done)
    assert same_history(h2, history) and trainer.history is h2
    assert_same_count(trainer, finished)  # no step taken: the finished run's count
    assert trainer.gradient_evaluations["fine"] == 3 * 4  # 60 points in batches of 15, one evaluation a step


def test_resume_in_a_new_process(tmp_path, mpirun):
    c = tmp_path / "c.npz"
    full, history, straight = train("exact", "adam", 20, 3)
    spec = {
        "out": str(tmp_path / "p"),
        "cases": [
            {"name": "first", "mode": "exact", "optimizer": "adam", "batch": 20, "epochs": 1, "checkpoint": str(c)}
        ],
    }
    mpirun(SCRIPT, 1, timeout=120, args=(json.dumps(spec),))
    spec["cases"] = [dict(spec["cases"][0], name="resumed", epochs=3, resume=True)]
    ((report,),) = script_results(mpirun(SCRIPT, 1, timeout=120, args=(json.dumps(spec),)))
    with np.load(tmp_path / "p.resumed.npz") as f:
        assert_bitwise({k: f[k] for k in f.files}, full)
    assert same_history(report["history"], history)
    assert report["gradient_evaluations"] == straight.gradient_evaluations


# --- several ranks ---------------------------------------------------------------------------------
def test_resume_on_two_ranks_and_from_two_ranks_on_one(tmp_path, mpirun):
    cases = [("serial", "adam", 15), ("exact", "adam", 15), ("serial", "lbfgs", None), ("one_shot", "adam", None)]
    first = [{"name": f"full-{m}-{o}", "mode": m, "optimizer": o, "batch": b, "epochs": 4} for m, o, b in cases] + [
        {
            "name": f"half-{m}-{o}",
            "mode": m,
            "optimizer": o,
            "batch": b,
            "epochs": 2,
            "checkpoint": str(tmp_path / f"{m}-{o}.npz"),
        }
        for m, o, b in cases
    ]
    spec = {"out": str(tmp_path / "p"), "cases": first}
    straight = script_results(mpirun(SCRIPT, 2, timeout=180, args=(json.dumps(spec),)))[: len(cases)]
    for m, o, _ in cases:  # keep a copy of the 2-rank checkpoint for the 1-rank resume below
        (tmp_path / f"{m}-{o}.copy.npz").write_bytes((tmp_path / f"{m}-{o}.npz").read_bytes())
    spec["cases"] = [
        {
            "name": f"resumed-{m}-{o}",
            "mode": m,
            "optimizer": o,
            "batch": b,
            "epochs": 4,
            "checkpoint": str(tmp_path / f"{m}-{o}.npz"),
            "resume": True,
        }
        for m, o, b in cases
    ]
    reports = script_results(mpirun(SCRIPT, 2, timeout=180, args=(json.dumps(spec),)))

    def load(name):
        with np.load(tmp_path / f"p.{name}.npz") as f:
            return {k: f[k] for k in f.files}

    for (m, o, b), report, full in zip(cases, reports, straight, strict=True):
        two_ranks = load(f"full-{m}-{o}")
        assert_bitwise(load(f"resumed-{m}-{o}"), two_ranks)  # 2 ranks -> 2 ranks: bit for bit
        assert report[0]["history"] == report[1]["history"]
        assert [r["gradient_evaluations"] for r in report] == [r["gradient_evaluations"] for r in full]
        one_rank, history, trainer = train(m, o, b, 4, checkpoint=tmp_path / f"{m}-{o}.copy.npz", resume=True)
        if o == "lbfgs":  # dot products summed over ranks: rounding differs, amplified by line searches
            assert 0 < max_difference(one_rank, two_ranks) < 1e-9
        else:  # SGD/Adam: elementwise updates of rank-independent gradients
            assert_bitwise(one_rank, two_ranks)
            assert trainer.gradient_evaluations == full[0]["gradient_evaluations"]
            uninterrupted_one_rank, _, _ = train(m, o, b, 4)
            assert_bitwise(uninterrupted_one_rank, two_ranks)


def test_a_rank_that_stores_no_time_point_keeps_the_iterate(tmp_path, mpirun):
    """Depth 3 on 2 ranks: rank 1 stores no time point of the iterate (and no adjoint piece)."""
    c = str(tmp_path / "c.npz")
    case = {"mode": "exact", "optimizer": "lbfgs", "batch": None, "depth": 3}
    spec = {
        "out": str(tmp_path / "p"),
        "cases": [dict(case, name="full", epochs=4), dict(case, name="half", epochs=2, checkpoint=c)],
    }
    mpirun(SCRIPT, 2, timeout=120, args=(json.dumps(spec),))
    with np.load(c) as f:
        assert json.loads(str(f["meta"]))["mgrit"]["adjoint"] and f["mgrit.indices"].tolist() == [0.0]
    spec["cases"] = [dict(case, name="resumed", epochs=4, checkpoint=c, resume=True)]
    mpirun(SCRIPT, 2, timeout=120, args=(json.dumps(spec),))
    with np.load(tmp_path / "p.full.npz") as f, np.load(tmp_path / "p.resumed.npz") as g:
        assert_bitwise({k: g[k] for k in g.files}, {k: f[k] for k in f.files})


def test_sigterm_on_one_rank_checkpoints_and_stops_every_rank(tmp_path, mpirun):
    c = tmp_path / "c.npz"
    case = {
        "name": "stopped",
        "mode": "exact",
        "optimizer": "adam",
        "batch": 15,
        "epochs": 4,
        "checkpoint": str(c),
        "signal_at": [1, 6],
    }  # rank 1 only, step 6 = epoch 2, step 2 of 4
    spec = {"out": str(tmp_path / "p"), "cases": [case]}
    (reports,) = script_results(mpirun(SCRIPT, 2, timeout=120, args=(json.dumps(spec),)))
    for report in reports:
        assert report["interrupted"] == [signal.SIGTERM, 1, 2, str(c)]
    with np.load(c) as f:  # epoch 2 stopped after its step 2: 4 + 2 steps, one gradient evaluation each
        assert json.loads(str(f["meta"]))["gradient_evaluations"] == 6
    full, history, straight = train("exact", "adam", 15, 4)
    resumed, h2, trainer = train("exact", "adam", 15, 4, checkpoint=c, resume=True)  # 2 ranks -> 1 rank
    assert_bitwise(resumed, full)
    assert same_history(h2, history)
    assert_same_count(trainer, straight)


def test_cli_sigterm_writes_the_checkpoint_and_resumes(tmp_path):
    from mpi_launch import find_mpiexec, mpi_env

    c = tmp_path / "c.npz"
    cmd = [
        *find_mpiexec(),
        "-n",
        "2",
        sys.executable,
        "-m",
        "pyxbraid.train",
        "peaks",
        "--mode",
        "serial",
        "--epochs",
        "500",
        "--no-progress",
        "--no-plots",
        "--out",
        str(tmp_path / "out"),
        "--checkpoint",
        str(c),
    ]
    job = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env(), start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not c.exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.05)
        assert c.exists(), "no checkpoint after the first epoch"
        job.send_signal(signal.SIGTERM)  # mpiexec forwards it to both ranks
        stdout, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
    assert job.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "stopped by SIGTERM" in stderr and "continue with --resume" in stderr
    with np.load(c) as f:
        meta = json.loads(str(f["meta"]))
    done = meta["progress"]["epoch"]
    assert 1 <= done < 500 and meta["ranks"] == 2
    resumed = subprocess.run(
        cmd[: cmd.index("500")] + [str(done + 1)] + cmd[cmd.index("500") + 1 :] + ["--resume"],
        capture_output=True,
        text=True,
        env=mpi_env(),
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "validation accuracy" in resumed.stdout


# --- checks when resuming ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    c = tmp_path_factory.mktemp("ckpt") / "c.npz"
    train("serial", "adam", 15, 2, checkpoint=c)
    return c


def fresh_copy(saved, tmp_path):
    c = tmp_path / "c.npz"
    c.write_bytes(saved.read_bytes())
    return c


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(net=dict(depth=8)), r"another network: depth=9 .*: 8\)"),
        (dict(net=dict(seed=4)), r"another network: seed=3"),
        (dict(data=DATA.x_train + 1e-9), r"another training data \(x, y\)"),
        (dict(batch=20), r"another batch_size: batch_size=15 there, 20 in this fit"),
        (dict(mode="exact"), r"another mode: mode='serial' there, 'exact'"),
        (dict(optimizer="sgd"), r"another optimizer: optimizer='Adam' there, 'SGD'"),
        (dict(trainer_seed=12), r"another seed: seed=11 there, 12"),
        (dict(epochs=1), r"already completed 2 epoch\(s\), more than epochs=1"),
        (dict(validation=None), r"another validation data"),
    ],
)
def test_a_checkpoint_of_another_run_is_rejected(saved, tmp_path, change, match):
    c = fresh_copy(saved, tmp_path)
    config = dict(
        in_features=2, width=4, depth=9, classes=5, activation="tanh", tikhonov=1e-4, smoothness=1e-4, seed=3
    ) | change.get("net", {})
    trainer = nn.Trainer(
        nn.ResNet(**config),
        optimizer=OPTIMIZERS[change.get("optimizer", "adam")](),
        layer_parallel=LAYER_PARALLEL[change.get("mode", "serial")],
        seed=change.get("trainer_seed", 11),
        progress=False,
    )
    before = trainer.net.parameters()
    validation = change["validation"] if "validation" in change else (DATA.x_val, DATA.y_val)
    with pytest.raises(ValueError, match=match):
        trainer.fit(
            change.get("data", DATA.x_train),
            DATA.y_train,
            epochs=change.get("epochs", 4),
            batch_size=change.get("batch", 15),
            validation=validation,
            checkpoint=c,
            resume=True,
        )
    assert_bitwise(trainer.net.parameters(), before)  # nothing was changed


def test_resume_needs_an_existing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="resume=True but there is no checkpoint file .*missing.npz"):
        train("serial", "adam", 15, 2, checkpoint=tmp_path / "missing.npz", resume=True)
    with pytest.raises(ValueError, match=r"resume=True needs checkpoint=PATH"):
        train("serial", "adam", 15, 2, resume=True)
    with pytest.raises(TypeError, match="checkpoint must be a path or None, got int"):
        train("serial", "adam", 15, 2, checkpoint=3)


def test_a_changed_learning_rate_is_announced_and_the_checkpoint_wins(saved, tmp_path):
    c = fresh_copy(saved, tmp_path)
    full, _, _ = train("serial", "adam", 15, 3)
    net = nn.ResNet(2, 4, 9, 5, activation="tanh", tikhonov=1e-4, smoothness=1e-4, seed=3)
    trainer = nn.Trainer(net, optimizer=nn.Adam(lr=0.5), seed=11, progress=False)
    with pytest.warns(UserWarning, match=r"continues with the checkpoint's hyperparameters .*'lr': 0.02"):
        trainer.fit(
            DATA.x_train,
            DATA.y_train,
            epochs=3,
            batch_size=15,
            validation=(DATA.x_val, DATA.y_val),
            checkpoint=c,
            resume=True,
        )
    assert trainer.optimizer.lr == 0.02
    assert_bitwise(net.parameters(), full)


def test_checkpoint_folder_is_checked_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    calls = []
    net = nn.ResNet(2, 4, 9, 5)
    trainer = nn.Trainer(net, progress=False)
    trainer._evaluate_batch = lambda *a: calls.append(a)
    with pytest.raises(NotADirectoryError, match=r"checkpoint '.*file/c.npz': '.*file' is not a directory"):
        trainer.fit(DATA.x_train, DATA.y_train, epochs=1, checkpoint=blocker / "c.npz")
    assert calls == []


def test_checkpoint_is_written_atomically_and_replaces_a_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "c.npz").symlink_to(victim)
    train("serial", "adam", 15, 1, checkpoint=tmp_path / "c.npz")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "c.npz").is_symlink() and zipfile.is_zipfile(tmp_path / "c.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "victim.txt"]  # no temporary files left


def _set(path, value):
    def apply(arrays, meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return apply


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a, m: a.update(format=np.array("pyxbraid.nn.Checkpoint/9")), r"format is 'pyxbraid.nn.Checkpoint/9'"),
        (lambda a, m: m.pop("gradient_evaluations"), "gradient_evaluations must be an integer, got None"),
        (_set(["gradient_evaluations"], -1), r"gradient_evaluations must be in \[0, None\], got -1"),
        (_set(["gradient_evaluations"], 2.5), "gradient_evaluations must be an integer, got 2.5"),
        (lambda a, m: m.pop("progress"), "meta must be a JSON object with the keys"),
        (_set(["progress", "step"], 99), r"progress.step must be in \[0, 4\], got 99"),
        (_set(["progress", "epoch"], -1), r"progress.epoch must be in \[0, None\], got -1"),
        (_set(["progress", "loss_sum"], "1"), "progress.loss_sum must be a number"),
        (_set(["progress", "rng"], {"bit_generator": "MT19937"}), "progress.rng is not a valid generator state"),
        (_set(["config", "depth"], "9"), r"config\['depth'\] must be an integer"),
        (_set(["optimizer", "t"], -2), r"optimizer state: state\['t'\] must be a non-negative integer"),
        (_set(["optimizer", "lr"], -2), r"optimizer state: lr must be > 0"),
        (_set(["optimizer_vectors", "m"], False), r"unexpected array\(s\) 'optimizer.m.classifier.bias'"),
        (
            lambda a, m: a.update({"param.layers.weight": a["param.layers.weight"][:3]}),
            r"array 'param.layers.weight' must have shape \(9, 4, 4\), got \(3, 4, 4\)",
        ),
        (
            lambda a, m: a.update({"param.layers.bias": a["param.layers.bias"].astype(complex)}),
            "array 'param.layers.bias' must be float64, got dtype complex128",
        ),
        (
            lambda a, m: a.update({"optimizer.v.layers.bias": np.full_like(a["optimizer.v.layers.bias"], np.nan)}),
            "array 'optimizer.v.layers.bias' contains NaN or infinite values",
        ),
        (
            lambda a, m: a.update({"history.step_loss": a["history.step_loss"][:-1]}),
            r"array 'history.step_loss' must have shape \(8,\), got \(7,\)",
        ),
        (lambda a, m: a.pop("history.loss"), r"missing array\(s\) 'history.loss'"),
        (lambda a, m: a.update(extra=np.zeros(2)), r"unexpected array\(s\) 'extra'"),
    ],
)
def test_a_damaged_checkpoint_is_a_clear_error(saved, tmp_path, change, match):
    c = fresh_copy(saved, tmp_path)
    rewrite(c, change)
    with pytest.raises(ValueError, match=match):
        train("serial", "adam", 15, 4, checkpoint=c, resume=True)


@pytest.mark.parametrize("version", [1, 2])
def test_a_checkpoint_of_an_earlier_format_is_refused_naming_it(saved, tmp_path, version):
    c = fresh_copy(saved, tmp_path)

    def earlier(arrays, meta):  # as versions 1 and 2 wrote it: no gradient-evaluation count
        arrays["format"] = np.array(f"pyxbraid.nn.Checkpoint/{version}")
        del meta["gradient_evaluations"]

    rewrite(c, earlier)
    with pytest.raises(
        ValueError,
        match=rf"checkpoint '.*c.npz' has the format 'pyxbraid.nn.Checkpoint/{version}' of an earlier pyxbraid "
        r"version, which this version cannot resume: it reads 'pyxbraid.nn.Checkpoint/3', .* start the training anew",
    ):
        train("serial", "adam", 15, 4, checkpoint=c, resume=True)


def test_a_truncated_checkpoint_is_a_clear_error(saved, tmp_path):
    c = fresh_copy(saved, tmp_path)
    data = c.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        c.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="is not a valid pyxbraid.nn checkpoint"):
            train("serial", "adam", 15, 4, checkpoint=c, resume=True)


def test_a_checkpoint_holds_no_pickle_and_documents_itself(saved):
    with zipfile.ZipFile(saved) as z:
        names = set(z.namelist())
    assert {
        "format.npy",
        "meta.npy",
        "param.layers.weight.npy",
        "optimizer.m.layers.weight.npy",
        "optimizer.v.opening.bias.npy",
        "history.step_loss.npy",
    } <= names
    with np.load(saved, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        assert str(f["format"]) == ckpt_module.FORMAT
    assert meta["progress"]["epoch"] == 2 and meta["progress"]["step"] == 0 and meta["ranks"] == 1
    assert meta["gradient_evaluations"] == 2 * 4  # 60 points in batches of 15: 4 steps an epoch
    assert meta["optimizer"] == {"optimizer": "Adam", "lr": 0.02, "betas": [0.9, 0.999], "eps": 1e-08, "t": 8}
    assert "warm-restarts from" in meta["note"] and meta["mgrit"] is None  # mini-batches: no iterate to keep


# --- optimizer state ---------------------------------------------------------------------------------
def quadratic(x):
    A = np.diag([1.0, 3.0, 10.0])
    return lambda: (0.5 * float(x @ A @ x), A @ x)


def dot(a, b):
    return float(a @ b)


@pytest.mark.parametrize(
    "make",
    [lambda: nn.SGD(lr=0.05), lambda: nn.Adam(lr=0.1), lambda: nn.LBFGS(history=2)],
    ids=["sgd", "adam", "lbfgs"],
)
def test_optimizer_state_dict_continues_exactly(make):
    x = np.array([1.0, -1.0, 0.5])
    opt = make()
    for _ in range(3):
        opt.step(x, quadratic(x), dot)
    y = x.copy()
    other = make()
    other.load_state_dict(opt.state_dict())
    for _ in range(4):
        opt.step(x, quadratic(x), dot)
        other.step(y, quadratic(y), dot)
    assert np.array_equal(x, y)
    fresh = make()
    z = x.copy()
    fresh.step(z, quadratic(z), dot)
    opt.step(x, quadratic(x), dot)
    assert not np.array_equal(x, z)  # the state mattered


def test_state_dict_is_a_copy():
    x = np.array([1.0, 2.0])
    opt = nn.Adam()
    opt.step(x, lambda: (float(x @ x), 2 * x), dot)
    state = opt.state_dict()
    state["m"][:] = 99
    assert opt.state_dict()["m"][0] != 99


@pytest.mark.parametrize(
    "make, change, exc, match",
    [
        (nn.Adam, dict(optimizer="SGD"), ValueError, "state is for optimizer 'SGD', not 'Adam'"),
        (nn.Adam, dict(t=-1), ValueError, r"state\['t'\] must be a non-negative integer"),
        (nn.Adam, dict(t=1), ValueError, r"must both be None \(t = 0\)"),
        (nn.Adam, dict(t=1, m=np.zeros(2), v=np.array([1.0, -1.0])), ValueError, r"state\['v'\] must be >= 0"),
        (nn.Adam, dict(t=1, m=np.zeros(2), v=np.zeros(3)), ValueError, r"state\['v'\] must have 2 entries"),
        (nn.Adam, dict(t=1, m=np.zeros(2, complex), v=np.zeros(2)), ValueError, r"state\['m'\] must be a 1-D float"),
        (nn.Adam, dict(lr=0), ValueError, "lr must be > 0"),
        (nn.SGD, dict(velocity=np.array([np.nan])), ValueError, r"state\['velocity'\] contains NaN"),
        (nn.SGD, dict(extra=1), ValueError, r"unknown keys \['extra'\]"),
        (nn.LBFGS, dict(s=[np.zeros(2)], y=[], rho=[]), ValueError, "must have the same length, got 1, 0, 0"),
        (nn.LBFGS, dict(s=[np.zeros(2)], y=[np.zeros(2)], rho=[-1.0]), ValueError, r"state\['rho'\]\[0\] must be"),
        (
            nn.LBFGS,
            dict(history=1, s=[np.zeros(2)] * 2, y=[np.zeros(2)] * 2, rho=[1.0] * 2),
            ValueError,
            "more than history=1",
        ),
        (nn.LBFGS, dict(cached_loss=1.0), ValueError, "must both be None or both be set"),
        (nn.LBFGS, dict(backtracks=50), ValueError, r"state\['backtracks'\] must be an integer in 0..max_backtracks"),
    ],
)
def test_load_state_dict_rejects_bad_state(make, change, exc, match):
    opt = make()
    with pytest.raises(exc, match=match):
        opt.load_state_dict(opt.state_dict() | change)
    assert opt.state_dict()["optimizer"] == type(opt).__name__
    with pytest.raises(TypeError, match="state must be a dict"):
        opt.load_state_dict([1])


class _InterruptingAdam(nn.Adam):
    """Adam that sends this process a signal after a given step (as a job scheduler would, mid-epoch)."""

    def __init__(self, signals_after, **kw):
        super().__init__(**kw)
        self.signals_after, self.steps = signals_after, 0

    def step(self, *args):
        loss = super().step(*args)
        self.steps += 1
        for sig in self.signals_after.get(self.steps, ()):
            os.kill(os.getpid(), sig)
        return loss


def test_sigint_stops_after_the_step_and_resumes_bit_identically(tmp_path, default_sigint):
    c = tmp_path / "c.npz"
    full, history, _ = train("serial", "adam", 15, 3)
    net = nn.ResNet(2, 4, 9, 5, activation="tanh", tikhonov=1e-4, smoothness=1e-4, seed=3)
    trainer = nn.Trainer(net, optimizer=_InterruptingAdam({7: [signal.SIGINT]}, lr=0.02), seed=11, progress=False)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(nn.TrainingInterrupted, match=r"stopped by SIGINT after 1 epoch\(s\) and 3 step\(s\)") as stop:
        trainer.fit(
            DATA.x_train, DATA.y_train, epochs=3, batch_size=15, validation=(DATA.x_val, DATA.y_val), checkpoint=c
        )
    assert isinstance(stop.value, KeyboardInterrupt) and (stop.value.epoch, stop.value.step) == (1, 3)
    assert signal.getsignal(signal.SIGINT) is handler  # the handlers are put back
    assert trainer.optimizer.steps == 7  # the step in progress was completed
    resumed, h2, _ = train("serial", "adam", 15, 3, checkpoint=c, resume=True)
    assert_bitwise(resumed, full)
    assert same_history(h2, history)


def test_a_second_signal_is_not_held_back(tmp_path, default_sigint):
    """Ctrl-C twice: the second one interrupts at once (the previous handler's KeyboardInterrupt)."""
    net = nn.ResNet(2, 4, 9, 5, seed=3)
    trainer = nn.Trainer(net, optimizer=_InterruptingAdam({2: [signal.SIGINT, signal.SIGINT]}), progress=False)
    with pytest.raises(KeyboardInterrupt) as stop:
        trainer.fit(DATA.x_train, DATA.y_train, epochs=3, batch_size=15, checkpoint=tmp_path / "c.npz")
    assert not isinstance(stop.value, nn.TrainingInterrupted) and trainer.optimizer.steps == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
