"""pyxbraid.nn and pyxbraid-train against bad input, bad files, hostile paths and disagreeing ranks.

Each test names the hardening item it covers (the project's hardening issue).
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pyxbraid as xb
from pyxbraid import nn
from pyxbraid import train as cli

HERE = Path(__file__).resolve().parent
DATA = xb.datasets.make_peaks(40, 10, seed=1)


def trainer_for(net, lp=None, **kw):
    return nn.Trainer(net, layer_parallel=lp, progress=False, **kw)


def rewrite_npz(path, arrays):
    np.savez(path, **arrays)


def model_arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def model(tmp_path):
    net = nn.ResNet(2, 4, 6, 5, seed=2)
    path = tmp_path / "model.npz"
    net.save(path)
    return net, path


# --- item 11: labels are required -------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.evaluate(DATA.x_train, None),
        lambda t: t.fit(DATA.x_train, None),
        lambda t: t.loss_and_gradient(DATA.x_train, None),
        lambda t: t.fit(DATA.x_train, DATA.y_train, validation=(DATA.x_val, None)),
    ],
    ids=["evaluate", "fit", "loss_and_gradient", "validation"],
)
def test_missing_labels_are_an_error_not_a_zero_loss(call):
    with pytest.raises(TypeError, match=r"(y|validation labels) must be given: the class labels of the \d+ rows"):
        call(trainer_for(nn.ResNet(2, 4, 4, 5)))


def test_labels_are_range_checked_before_any_cast():
    t = trainer_for(nn.ResNet(2, 4, 4, 5))
    with pytest.raises(ValueError, match=r"y must be in 0..4, got 1e\+300"):
        t.evaluate(np.zeros((2, 2)), np.array([0.0, 1e300]))


# --- item 12: networks too shallow for the hierarchy ---------------------------------------------------
@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("one_shot", [False, True], ids=["exact", "one_shot"])
def test_shallow_networks_train_by_sequential_marching(depth, one_shot):
    serial_net, net = nn.ResNet(2, 4, depth, 5, seed=1), nn.ResNet(2, 4, depth, 5, seed=1)
    serial = trainer_for(serial_net, optimizer=nn.Adam(lr=0.05)).fit(
        DATA.x_train, DATA.y_train, epochs=3, batch_size=20
    )
    trainer = trainer_for(net, dict(one_shot=one_shot), optimizer=nn.Adam(lr=0.05))
    history = trainer.fit(DATA.x_train, DATA.y_train, epochs=3, batch_size=20, validation=(DATA.x_val, DATA.y_val))
    assert trainer.last_solve.nlevels == 1 and trainer.last_solve.iterations == 0
    assert history.loss == serial.loss  # the exact gradient: the same training
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(v, serial_net.parameters()[k])
    assert all(math.isnan(r) for r in history.residual + history.adjoint_residual)
    assert history.mgrit_iterations == [0, 0, 0] and len(history.val_accuracy) == 3


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("mode", ["parallel", "one-shot"])
def test_cli_trains_shallow_networks(tmp_path, capsys, depth, mode):
    code = cli.main(
        [
            "peaks",
            "--mode",
            mode,
            "--depth",
            str(depth),
            "--epochs",
            "2",
            "--no-plots",
            "--no-progress",
            "--out",
            str(tmp_path),
            "--metrics",
            str(tmp_path / "m.json"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["history"]["mgrit_iterations"] == [0, 0] and m["history"]["residual"] == [None, None]
    assert 0.2 < m["validation_accuracy"] <= 1


# --- item 15: Trainer and ResNet arguments checked at construction -------------------------------------
@pytest.mark.parametrize(
    "lp, exc, match",
    [
        # The Solver's rules (its vocabulary), under the keys the user wrote.
        (dict(abs_tol=-1), ValueError, r"layer_parallel\['abs_tol'\] must be >= 0, got -1"),
        (dict(abs_tol_adjoint=float("nan")), ValueError, r"layer_parallel\['abs_tol_adjoint'\] must be finite"),
        (dict(cfactor=[2, 1]), ValueError, r"layer_parallel\['cfactor'\]\[1\] must be >= 2, got 1"),
        (dict(cfactor=[]), ValueError, r"layer_parallel\['cfactor'\] must not be an empty sequence"),
        (
            dict(cfactor="4"),
            TypeError,
            r"layer_parallel\['cfactor'\] must be a number or a sequence of numbers per "
            r"level, got '4'",
        ),
        (dict(max_levels=0), ValueError, r"layer_parallel\['max_levels'\] must be >= 1, got 0"),
        (dict(max_levels=1), ValueError, r"layer_parallel\['max_levels'\] must be >= 2 \(use layer_parallel=None"),
        (dict(max_levels=2**31), ValueError, r"layer_parallel\['max_levels'\] must be <= 2147483646, got 2147483648"),
        (dict(max_iter=0), ValueError, r"layer_parallel\['max_iter'\] must be >= 1, got 0"),
        (dict(nrelax=-1), ValueError, r"layer_parallel\['nrelax'\] must be >= 0"),
        (dict(cwt=0.0), ValueError, r"layer_parallel\['cwt'\] must be > 0, got 0.0"),
        (dict(tnorm=4), ValueError, r"layer_parallel\['tnorm'\] must be 1, 2 or 3, got 4"),
        (dict(storage=-2), ValueError, r"layer_parallel\['storage'\] must be >= -1"),
        (dict(fmg="no"), TypeError, r"layer_parallel\['fmg'\] must be True/False \(or 0/1\), got 'no'"),
        (dict(min_coarse=1.5), TypeError, r"layer_parallel\['min_coarse'\] must be an int, got 1.5"),
        (dict(tol=1e-8, abs_tol=1e-8), ValueError, r"layer_parallel got both 'tol' and 'abs_tol': give 'abs_tol' only"),
    ],
)
def test_layer_parallel_is_checked_when_the_trainer_is_built(lp, exc, match):
    with pytest.raises(exc, match=match):
        nn.Trainer(nn.ResNet(2, 4, 8, 5), progress=False, layer_parallel=lp)


def test_old_tolerance_spellings_are_deprecated():
    with pytest.warns(DeprecationWarning, match=r"layer_parallel\['tol'\] is deprecated: use 'abs_tol'"):
        t = nn.Trainer(nn.ResNet(2, 4, 8, 5), progress=False, layer_parallel=dict(tol=1e-7))
    assert t._options["abs_tol"] == 1e-7
    with pytest.warns(
        DeprecationWarning,
        match=r"layer_parallel\['adjoint_tol'\] is deprecated: use "
        r"'abs_tol_adjoint'",
    ):
        t = nn.Trainer(nn.ResNet(2, 4, 8, 5), progress=False, layer_parallel=dict(adjoint_tol=1e-7))
    assert t._options["abs_tol_adjoint"] == 1e-7


def test_valid_layer_parallel_values_reach_the_solver():
    t = trainer_for(nn.ResNet(2, 4, 16, 5), dict(cfactor=[2, 4], nrelax=[1, 0], cwt=1.5, abs_tol=1, fmg=1, tnorm=3))
    assert (
        t._options["cfactor"] == [2, 4]
        and t._options["abs_tol"] == 1.0
        and type(t._options["abs_tol"]) is float
        and t._options["fmg"] is True
    )
    loss, _ = t.loss_and_gradient(DATA.x_train, DATA.y_train)
    assert math.isfinite(loss)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(width=2**31), r"width must be <= 2147483647 \(the engine's index limit\), got 2147483648"),
        (dict(depth=2**31 - 1), r"depth must be <= 2147483646 \(the engine's index limit\), got 2147483647"),
        (dict(in_features=2**40), r"in_features must be <= 2147483647"),
        (dict(classes=2**31), r"classes must be <= 2147483647"),
        (dict(T=5e-324), r"T=5e-324 is too small for depth=4: the step h = T / depth = 0.0 is subnormal or zero"),
        (dict(T=1e-310, depth=1), r"T=1e-310 is too small for depth=1"),
        (dict(width=2**20), r"width=1048576, depth=4, classes=5 has 4,398,059,094,021 parameters, .* more than the"),
    ],
)
def test_resnet_sizes_the_engine_cannot_handle_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.ResNet(**(dict(in_features=2, width=4, depth=4, classes=5) | kwargs))


def test_smallest_normal_step_is_accepted():
    tiny = float(np.finfo(float).tiny)
    net = nn.ResNet(2, 4, 3, 5, T=3 * tiny)
    assert net.h == tiny
    loss, _ = trainer_for(net).loss_and_gradient(DATA.x_train, DATA.y_train)
    assert math.isfinite(loss)


def test_batch_size_beyond_the_engines_index_is_named(monkeypatch):
    import pyxbraid.nn.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "INDEX_MAX", 30)  # stands for 2**31 - 1 rows without 16 GB of data
    with pytest.raises(ValueError, match=r"batch_size must be <= 30 \(the engine's index limit\), got 40"):
        trainer_for(nn.ResNet(2, 4, 4, 5)).fit(DATA.x_train, DATA.y_train)


# --- items 7 and 17: ResNet.load ------------------------------------------------------------------------
def test_load_round_trips_fortran_order_and_big_endian(model, tmp_path):
    net, path = model
    arrays = model_arrays(path)
    arrays["layers__weight"] = np.asfortranarray(arrays["layers__weight"])
    arrays["classifier__weight"] = arrays["classifier__weight"].astype(">f8")
    rewrite_npz(tmp_path / "other.npz", arrays)
    back = nn.ResNet.load(tmp_path / "other.npz")
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v)
        assert back.parameters()[k].dtype == np.float64


def crafted_config(path, **changes):
    arrays = model_arrays(path)
    config = json.loads(str(arrays["config"]))
    for k, v in changes.items():
        if v is KeyError:
            config.pop(k)
        else:
            config[k] = v
    arrays["config"] = np.array(json.dumps(config))
    rewrite_npz(path, arrays)


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(depth=3_000_000), r"array 'layers__weight' must have shape \(3000000, 4, 4\) for the declared config"),
        (dict(depth="6"), r"config\['depth'\] must be an integer, got '6'"),
        (dict(depth=6.0), r"config\['depth'\] must be an integer, got 6.0"),
        (dict(T=True), r"config\['T'\] must be a number, got True"),
        (dict(activation=3), r"config\['activation'\] must be a string"),
        (dict(width=0), r"config: width must be >= 1, got 0"),
        (dict(depth=2**40), r"config: depth must be <= 2147483646"),
        (dict(T=1e-320), r"config: T=1e-320 is too small"),
        (dict(activation="gelu"), r"config: activation must be one of"),
        (dict(extra=1), r"config has unknown key\(s\) 'extra'"),
        (dict(seed=KeyError), r"config is missing 'seed'"),
    ],
)
def test_load_checks_the_config(model, changes, match):
    _, path = model
    crafted_config(path, **changes)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        nn.ResNet.load(path)
    assert time.perf_counter() - start < 1.0  # no network of the declared size is built


@pytest.mark.parametrize(
    "config, match",
    [
        ("[1, 2]", "config must be a JSON object, got list"),
        ("{not json", "array 'config' is not valid JSON"),
        ("[" * 100000 + "]" * 100000, "array 'config' is longer than 65536 characters"),
        ("[" * 30000 + "]" * 30000, "array 'config' is not valid JSON"),
    ],
)
def test_load_checks_the_config_json(model, config, match):
    _, path = model
    arrays = model_arrays(path)
    arrays["config"] = np.array(config)
    rewrite_npz(path, arrays)
    with pytest.raises(ValueError, match=match):
        nn.ResNet.load(path)


@pytest.mark.parametrize(
    "value, match",
    [
        (lambda a: a.astype(complex), "must be float64, got dtype complex128"),
        (lambda a: a.astype(np.float32), "must be float64, got dtype float32"),
        (lambda a: a.astype(str), "must be float64, got dtype <U"),
        (lambda a: np.zeros(a.shape, dtype=[("a", "f8")]), r"must be float64, got dtype \[\('a', '<f8'\)\]"),
        (lambda a: a.astype(object), "holds Python objects .*pickles are never loaded"),
        (lambda a: np.full_like(a, np.nan), "layers.bias contains NaN or infinite values"),
        (
            lambda a: a[:2],
            r"array 'layers__bias' must have shape \(6, 4\) for the declared configuration, got \(2, 4\)",
        ),
    ],
)
def test_load_rejects_wrong_parameter_arrays(model, value, match):
    _, path = model
    arrays = model_arrays(path)
    arrays["layers__bias"] = value(arrays["layers__bias"])
    np.savez(path, **arrays) if arrays["layers__bias"].dtype != object else _save_with_pickle(path, arrays)
    with pytest.raises(ValueError, match=match):
        nn.ResNet.load(path)


def _save_with_pickle(path, arrays):
    with zipfile.ZipFile(path, "w") as z:
        for k, v in arrays.items():
            with z.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, np.asanyarray(v), allow_pickle=True)


def _bomb(path, arrays, member, header_shape, n_zeros):
    """Replace ``member`` by a deflated .npy whose header declares ``header_shape``, followed by n zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for k, v in arrays.items():
            if k != member:
                with z.open(k + ".npy", "w") as f:
                    np.lib.format.write_array(f, v)
        with z.open(member + ".npy", "w", force_zip64=True) as f:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f8", "fortran_order": False, "shape": header_shape}
            )
            f.write(header.getvalue())
            chunk = bytes(1 << 22)
            for _ in range(n_zeros * 8 // len(chunk)):
                f.write(chunk)


@pytest.mark.parametrize("header_shape", [(1_562_500, 4, 4), (6, 4, 4)], ids=["declared-huge", "data-longer"])
def test_load_rejects_a_deflated_bomb_without_decompressing_it(model, tmp_path, header_shape):
    _, path = model
    bomb = tmp_path / "bomb.npz"
    _bomb(bomb, model_arrays(path), "layers__weight", header_shape, 25_000_000)  # 200 MB of zeros
    assert bomb.stat().st_size < 1_000_000
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ValueError, match="array 'layers__weight' (must have shape|declares shape)"):
        nn.ResNet.load(bomb)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20_000_000


def test_load_rejects_sizes_deflate_cannot_produce(model, tmp_path):
    _, path = model
    arrays = model_arrays(path)
    forged = tmp_path / "forged.npz"
    with zipfile.ZipFile(forged, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in arrays.items():
            with z.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, v)
    raw = bytearray(forged.read_bytes())
    # the central directory's uncompressed size of the last member -> 2 GB
    with zipfile.ZipFile(forged) as z:
        info = z.infolist()[-1]
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (2_000_000_000).to_bytes(4, "little")
    forged.write_bytes(bytes(raw))
    with pytest.raises(
        ValueError,
        match=f"array '{info.filename[:-4]}' declares 2000000000 bytes from "
        f"{info.compress_size} compressed bytes, more than deflate can produce",
    ):
        nn.ResNet.load(forged)


@pytest.mark.parametrize(
    "content, exc, match",
    [
        (b"", ValueError, "not a zip archive"),
        (b"PK\x03\x04" + bytes(40), ValueError, "not a zip archive"),
        (None, ValueError, "not a zip archive"),  # a .npy file
    ],
)
def test_load_rejects_files_that_are_no_archive(tmp_path, content, exc, match):
    path = tmp_path / "x.npz"
    if content is None:
        np.save(path, np.zeros(3))
        path = tmp_path / "x.npz.npy"
    else:
        path.write_bytes(content)
    with pytest.raises(exc, match=match):
        nn.ResNet.load(path)


def test_load_of_a_truncated_file_names_it(model):
    _, path = model
    data = path.read_bytes()
    for cut in range(0, len(data), max(1, len(data) // 40)):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"is not a valid pyxbraid.nn.ResNet file"):
            nn.ResNet.load(path)


def test_load_failures_reach_every_rank(mpirun, tmp_path):
    """Item 7 (load) and item 14 (data that differ between ranks) on 2 ranks; nothing may hang."""
    net = nn.ResNet(2, 4, 6, 5, seed=2)
    net.save(tmp_path / "good.npz")
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    np.save(tmp_path / "array.npy", np.zeros(4))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "huge_depth.npz").write_bytes(data)
    crafted_config(tmp_path / "huge_depth.npz", depth=3_000_000)
    out = mpirun(str(HERE / "scripts" / "nn_agreement.py"), 2, timeout=120, args=(str(tmp_path),)).stdout
    results = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])
    own = {
        "truncated.npz": "ValueError: ",
        "array.npy": "ValueError: ",
        "empty.npz": "ValueError: ",
        "missing.npz": "FileNotFoundError: ",
        "huge_depth.npz": "ValueError: ",
    }
    for file, start in own.items():
        rank0, rank1 = results[f"load {file}"]
        assert rank0.startswith(start), rank0
        assert rank1.startswith("RemoteRankError: rank 0 rejected its ResNet.load(") and rank0 in rank1
    assert results["load good.npz"] == ["ok", "ok"]
    rank0, rank1 = results["load MemoryError"]
    assert rank0 == "MemoryError: simulated: no memory left"
    assert rank1.startswith("RemoteRankError: rank 0") and "MemoryError" in rank1
    # item 14: every rank raises the same error naming what differs
    for name, what in [
        ("fit x", "fit() data and settings"),
        ("fit y", "fit() data and settings"),
        ("fit validation", "fit() data and settings"),
        ("evaluate", "evaluate() data (x, y)"),
        ("loss_and_gradient", "loss_and_gradient() data (x, y)"),
        ("predict", "predict() data (x)"),
    ]:
        rank0, rank1 = results[name]
        assert rank0 == rank1 and rank0.startswith(f"ValueError: {what} differs between ranks (rank(s) [1] differ")
    assert results["same data"] == ["ok", "ok"]


# --- items 10, 9: outputs --------------------------------------------------------------------------------
def test_save_writes_through_no_link(model, tmp_path):
    net, _ = model
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "saved.npz"
    link.symlink_to(victim)
    net.save(link)
    assert victim.read_text() == "precious" and not link.is_symlink()
    assert nn.ResNet.load(link).config == net.config
    with pytest.raises(IsADirectoryError):
        net.save(tmp_path)


def test_cli_writes_through_no_planted_link(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    victims = {}
    for name in ("model.npz", "training.png", "decision_regions.png", "m.json", "c.npz"):
        victims[name] = tmp_path / f"victim-{name}.txt"
        victims[name].write_text("precious")
        (out / name).symlink_to(Path("..") / victims[name].name)
    code = cli.main(
        [
            "peaks",
            "--mode",
            "serial",
            "--depth",
            "4",
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            str(out),
            "--metrics",
            str(out / "m.json"),
            "--checkpoint",
            str(out / "c.npz"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    for name, victim in victims.items():
        assert victim.read_text() == "precious"
        assert (out / name).is_file() and not (out / name).is_symlink() and (out / name).stat().st_size > 100
    assert json.loads((out / "m.json").read_text())["ranks"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(victims)  # no temporary files left


def run_cli_on_two_ranks(args, with_mpi4py, timeout=60):
    from mpi_launch import find_mpiexec, mpi_env

    launcher = ["-m", "mpi4py"] if with_mpi4py else []
    cmd = [*find_mpiexec(), "-n", "2", sys.executable, *launcher, "-m", "pyxbraid.train", "peaks", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=mpi_env(), timeout=timeout)


@pytest.mark.parametrize("with_mpi4py", [False, True], ids=["plain", "m-mpi4py"])
@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda d: ["--out", str(d / "file")], "--out '.*file' exists and is not a directory"),
        (lambda d: ["--metrics", str(d / "file" / "m.json")], "--metrics '.*file/m.json': '.*file' is not a directory"),
        (
            lambda d: ["--metrics", "/proc/pyxbraid/m.json"],
            "--metrics '/proc/pyxbraid/m.json': cannot write in '/proc/pyxbraid'",
        ),
        (lambda d: ["--checkpoint", str(d / "file" / "c.npz")], "--checkpoint '.*file/c.npz': '.*file' is not a dir"),
        (lambda d: ["--checkpoint", str(d / "c.npz"), "--resume"], "--resume: there is no checkpoint file"),
    ],
    ids=["out", "metrics", "metrics-unwritable", "checkpoint", "resume"],
)
def test_cli_checks_outputs_before_any_work_on_every_rank(tmp_path, bad, message, with_mpi4py):
    (tmp_path / "file").write_text("x")
    start = time.perf_counter()
    job = run_cli_on_two_ranks(["--no-progress", "--out", str(tmp_path / "out"), *bad(tmp_path)], with_mpi4py)
    assert job.returncode == 1, job.stdout + job.stderr
    assert "pyxbraid-train: peaks on" not in job.stdout  # no training started
    # (-m mpi4py turns the exit status 1 into MPI_Abort, which MPICH reports per rank)
    lines = [line for line in job.stderr.splitlines() if line.strip() and not line.startswith("Abort(1)")]
    assert len(lines) == 1 and lines[0].startswith("pyxbraid-train: error (rank 0): ")
    import re

    assert re.search(message, lines[0]), lines[0]
    assert time.perf_counter() - start < 30


# --- item 19: the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "argument --batch-size: must be a positive integer or 'full', got 0"),
        (["--batch-size", "ten"], "argument --batch-size: must be a positive integer or 'full', got 'ten'"),
        (["--lr", "-1"], "argument --lr: must be a finite number > 0, got '-1'"),
        (["--lr", "inf"], "argument --lr: must be a finite number > 0, got 'inf'"),
        (["--cfactor", "1"], "argument --cfactor: must be an integer in 2..2147483647, got 1"),
        (["--epochs", "0"], "argument --epochs: must be an integer in 1..2147483647, got 0"),
        (["--depth", "0"], "argument --depth: must be an integer in 1..2147483646, got 0"),
        (["--width", "-3"], "argument --width: must be an integer in 1..2147483647, got -3"),
        (["--max-levels", "1"], "argument --max-levels: must be an integer in 2..2147483646, got 1"),
        (["--max-iter", "0"], "argument --max-iter: must be an integer in 1..2147483647, got 0"),
        (["--tikhonov=-1e-3"], "argument --tikhonov: must be a finite number >= 0, got '-1e-3'"),
        (["--seed", "-1"], "argument --seed: must be an integer in 0..2147483647, got -1"),
        (["--T", "nan"], "argument --T: must be a finite number > 0, got 'nan'"),
        (["--T", "1e-310"], "T=1e-310 is too small for depth=30"),
        (["--width", "1000000", "--depth", "100000"], "has 100,000,[0-9,]+ parameters"),
        (["--resume"], "--resume needs --checkpoint PATH"),
    ],
)
def test_cli_rejects_bad_values_in_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as stop:
        cli.main(["peaks", *args])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    import re

    assert lines[0].startswith("pyxbraid-train: error: ") and re.search(message, lines[0]), lines[0]


def test_cli_help_is_complete_and_states_defaults_once(capsys):
    parser = cli.build_parser()
    texts = {}
    for name, sub in [("", parser), *parser.commands.items()]:  # pyxbraid-train --help, peaks --help, ...
        with pytest.raises(SystemExit) as stop:
            cli.main([name, "--help"] if name else ["--help"])
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert "(default: None)" not in text and "default: False" not in text
        formatter = sub._get_formatter()
        for action in sub._actions:
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
            shown = formatter._get_help_string(action)
            appended = shown.endswith("(default: %(default)s)")
            if "default" in action.help:  # states its own default: nothing appended
                assert not appended, shown
            else:  # a default is shown exactly when there is one
                assert appended == (action.default not in (None, False, "==SUPPRESS==")), shown
        texts[name] = " ".join(text.split())
    assert "DATASET the data set peaks the paper's dense ResNet" in texts[""] and "DATASET --help" in texts[""]
    flat = texts["peaks"]
    assert "nn.ResNet's own default is 0" in flat and "(default: 8)" in flat and "(default: parallel)" in flat
    assert "--dtype {float64,float32}" in texts["digits"] and "(default: 16)" in texts["digits"]


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"pyxbraid-train {xb.__version__}"


def test_progress_bar_ends_with_the_last_epochs_validation_accuracy(monkeypatch):
    import tqdm.auto

    bars = []

    class Recorder:
        def __init__(self, **kw):
            self.postfixes, self.n = [], 0
            bars.append(self)

        def update(self, k):
            self.n += k

        def set_postfix(self, post, refresh=True):
            self.postfixes.append(dict(post))

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    d = xb.datasets.make_peaks(100, 200, seed=3)
    trainer = nn.Trainer(nn.ResNet(2, 4, 4, 5, seed=1), progress=True, optimizer=nn.Adam(lr=0.05))
    history = trainer.fit(d.x_train, d.y_train, epochs=3, batch_size=50, validation=(d.x_val, d.y_val))
    shown_last = [f"{a:.3f}" for a in history.val_accuracy[-2:]]
    assert shown_last[0] != shown_last[1]  # the bar could show the wrong one
    (bar,) = bars
    assert bar.n == 6 and bar.postfixes[-1]["val_acc"] == shown_last[1]
    # after each epoch's validation, the bar shows that epoch's accuracy
    shown = [p["val_acc"] for p in bar.postfixes if "val_acc" in p]
    for acc in history.val_accuracy:
        assert f"{acc:.3f}" in shown


# --- item 18: L-BFGS whose line search fails -------------------------------------------------------------------
def test_lbfgs_undoes_a_failed_line_search_and_warns():
    A = np.diag([1.0, 4.0])
    x = np.array([1.0, 1.0])
    calls = []

    def wrong_gradient():  # the negated gradient: no step along -g decreases f
        calls.append(x.copy())
        return 0.5 * float(x @ A @ x), -(A @ x)

    opt = nn.LBFGS(max_backtracks=3)
    opt._pairs.append((np.array([0.1, 0.0]), np.array([0.1, 0.0]), 100.0))  # some history to be dropped
    with pytest.warns(
        nn.LineSearchWarning,
        match=r"line search failed: none of the steps 1 \* 0.5\^k, k = 0..3, "
        r"decreased the loss 2.5 enough .* step was undone",
    ):
        f0 = opt.step(x, wrong_gradient, lambda a, b: float(a @ b))
    assert f0 == 2.5
    np.testing.assert_array_equal(x, [1.0, 1.0])  # the iterate is restored
    assert len(calls) == 1 + 4 and opt.last_step_size == 0.0 and len(opt._pairs) == 0
    assert opt.backtracks == 3
    # the next step starts from the cached loss at the restored point: no extra evaluation there
    with pytest.warns(nn.LineSearchWarning):
        opt.step(x, wrong_gradient, lambda a, b: float(a @ b))
    assert len(calls) == 5 + 4


def test_lbfgs_reports_the_step_it_took():
    A = np.diag([1.0, 100.0])
    x = np.array([1.0, 1.0])
    opt = nn.LBFGS(lr=1.0, shrink=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(x, lambda: (0.5 * float(x @ A @ x), A @ x), lambda a, b: float(a @ b))
    assert opt.last_step_size == 0.5**opt.backtracks
    np.testing.assert_allclose(x, np.array([1.0, 1.0]) - opt.last_step_size * np.array([1.0, 100.0]))


def test_files_module_examples():
    import doctest

    import pyxbraid.nn._files

    failures, tried = doctest.testmod(pyxbraid.nn._files)
    assert tried > 0 and failures == 0


def test_atomic_write_leaves_the_destination_intact_when_writing_fails(tmp_path):
    from pyxbraid.nn._files import atomic_write

    target = tmp_path / "m.json"
    target.write_text("old")

    def fail(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_full_batch_data_changed_in_place_is_reloaded():
    """The training engine keeps the loaded batch between fit() calls only while its content is the same
    (it used to be identified by id(x): data changed in place, or a new array at a recycled address, was
    silently ignored).
    """
    x, y = DATA.x_train.copy(), DATA.y_train
    net = nn.ResNet(2, 4, 6, 5, seed=1)
    trainer = trainer_for(net, optimizer=nn.SGD(lr=0.1))
    trainer.fit(x, y, epochs=1)
    x[:] = DATA.x_train[::-1] * 0.5
    twin = nn.ResNet(2, 4, 6, 5, seed=1)
    twin.set_parameters(net.parameters())
    expected, _ = trainer_for(twin).loss_and_gradient(x, y)
    history = trainer.fit(x, y, epochs=1)
    assert history.step_loss[0] == expected
