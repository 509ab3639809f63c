"""pyxbraid.datasets.digits(), pyxbraid-train digits and examples/digits_torch.py (layer-parallel conv ResNet)."""

from __future__ import annotations

import builtins
import doctest
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def test_digits_shapes_split_and_seed():
    pytest.importorskip("sklearn")
    from pyxbraid import datasets

    data = datasets.digits()
    assert data.x_train.shape == (1438, 1, 8, 8) and data.x_val.shape == (359, 1, 8, 8)
    assert data.x_train.dtype == np.float64 and data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert data.classes == 10 and data.image_shape == (1, 8, 8)
    # stratified: every class in both parts, in proportion
    assert np.bincount(data.y_val).min() >= 35 and np.bincount(data.y_train).min() >= 139
    again, other = datasets.digits(), datasets.digits(seed=1)
    assert np.array_equal(again.x_val, data.x_val) and np.array_equal(again.y_train, data.y_train)
    assert not np.array_equal(other.y_val, data.y_val)
    assert len(datasets.digits(0.5).x_val) == 898  # per class round(n_c / 2), half to even
    assert datasets.digits(dtype=np.float32).x_train.dtype == np.float32
    failures, tried = doctest.testmod(sys.modules["pyxbraid.datasets.digits"])
    assert tried > 0 and failures == 0


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(val_fraction=1.0), ValueError, r"val_fraction must be in \(0, 1\), got 1.0"),
        (dict(val_fraction="half"), TypeError, "val_fraction must be a number"),
        (dict(seed=-1), ValueError, "seed must be a non-negative integer, got -1"),
    ],
)
def test_digits_rejects_bad_arguments(kwargs, exc, match):
    from pyxbraid import datasets

    with pytest.raises(exc, match=match):
        datasets.digits(**kwargs)


def test_digits_without_scikit_learn_says_how_to_install_it(monkeypatch):
    from pyxbraid import datasets

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match=r"scikit-learn, which is not installed: pip install scikit-learn"):
        datasets.digits()


def test_digits_example_on_two_ranks(mpirun, tmp_path):
    """examples/digits_torch.py is the command line pyxbraid-train digits (default mode: exact MGRIT)."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    metrics = tmp_path / "m.json"
    args = ("--epochs", "2", "--depth", "8", "--no-progress", "--out", str(tmp_path / "out"), "--metrics", str(metrics))
    out = mpirun(str(ROOT / "examples" / "digits_torch.py"), 2, timeout=300, args=args).stdout
    assert "pyxbraid-train: digits on 2 rank(s), mode parallel" in out
    assert "epoch 2: loss" in out and "validation accuracy" in out
    m = json.loads(metrics.read_text())
    assert m["ranks"] == 2 and m["settings"]["mode"] == "parallel" and m["settings"]["depth"] == 8
    assert m["settings"]["layer_parallel"] == dict(mode="exact", max_levels=2, cfactor=4, max_iter=None, coarse="tstop")
    assert m["settings"]["dtype"] == "float64" and m["settings"]["parameters"] == 6170
    assert m["validation_accuracy"] > 0.8  # 2 epochs; 10 epochs of the defaults reach about 98%
    assert len(m["history"]["val_accuracy"]) == 2 and m["history"]["mgrit_iterations"][-1] >= 1
    for name in ("training.png", "predictions.png", "model.pt"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    import torch

    state = torch.load(tmp_path / "out" / "model.pt")
    layers = [k for k in state if k.startswith("lp.layers.")]
    assert len(layers) == 8 * 7 and {k.split(".")[0] for k in state} == {"opening", "lp", "head"}


def test_digits_command_line_float32_on_one_rank(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from pyxbraid import train

    out, metrics = tmp_path / "out", tmp_path / "m.json"
    args = ["--epochs", "1", "--depth", "4", "--cfactor", "2", "--dtype", "float32", "--no-progress", "--out", str(out)]
    assert train.main(["digits", *args, "--metrics", str(metrics)]) == 0
    printed = capsys.readouterr().out
    assert "mode parallel; conv ResNet width 8, 4 blocks, T=2, float32, 3770 parameters" in printed
    m = json.loads(metrics.read_text())
    assert m["ranks"] == 1 and m["settings"]["dtype"] == "float32" and m["settings"]["batch_size"] == 64
    # one epoch (23 Adam steps): 84% measured, float32 and float64 alike
    assert 0.75 < m["validation_accuracy"] <= 1 and 0.75 < m["training_accuracy"] <= 1
    assert m["history"]["epoch"] == [1] and len(m["history"]["step_loss"]) == 23
    assert m["history"]["mgrit_iterations"][0] >= 2 and m["history"]["residual"][0] is not None
    import torch

    state = torch.load(out / "model.pt")
    assert all(v.dtype == torch.float32 for k, v in state.items() if not k.endswith("num_batches_tracked"))


def test_digits_command_line_modes_on_two_ranks(tmp_path):
    """The command line on two ranks without -m mpi4py: one-shot and serial modes, float32."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import subprocess

    from mpi_launch import find_mpiexec, mpi_env

    losses = {}
    for mode in ("one-shot", "serial"):
        metrics = tmp_path / f"{mode}.json"
        cmd = [*find_mpiexec(), "-n", "2", sys.executable, "-m", "pyxbraid.train", "digits", "--mode", mode]
        cmd += ["--epochs", "1", "--depth", "4", "--cfactor", "2", "--batch-size", "256", "--dtype", "float32"]
        cmd += ["--no-plots"]
        cmd += ["--no-progress", "--out", str(tmp_path / mode), "--metrics", str(metrics)]
        job = subprocess.run(cmd, capture_output=True, text=True, env=mpi_env(), timeout=120)
        assert job.returncode == 0, job.stdout + job.stderr
        m = json.loads(metrics.read_text())
        assert m["ranks"] == 2 and m["settings"]["mode"] == mode and len(m["history"]["step_loss"]) == 6
        assert m["history"]["mgrit_iterations"] == ([0] if mode == "serial" else [2])
        losses[mode] = m["history"]["step_loss"]
        assert losses[mode][-1] < 0.8 * losses[mode][0]  # measured: 2.52 -> 1.91 in 6 steps
    # 2 one-shot iterations on this 2-level hierarchy (5 time points) give nearly exact gradients:
    # the same training as serial backpropagation up to 1e-3 (measured 3e-5)
    assert losses["one-shot"] == pytest.approx(losses["serial"], rel=1e-3)


FAILING_HEAD = """
import sys
from mpi4py import MPI
from pyxbraid.torch import _digits
from pyxbraid.train import main

rank = MPI.COMM_WORLD.rank
build = _digits.build


def failing_build(*args, **kwargs):
    net = build(*args, **kwargs)
    if rank == 1:  # the replicated head fails on one rank only, in the third training step
        calls, forward = [0], net.head.forward

        def head(x):
            calls[0] += 1
            if calls[0] == 3:
                raise ValueError("the head failed on purpose")
            return forward(x)

        net.head.forward = head
    return net


_digits.build = failing_build
code = main(["digits", "--epochs", "1", "--depth", "4", "--no-progress", "--out", sys.argv[1]])
print(f"EXIT {rank} {code}", flush=True)
"""


def test_digits_failure_on_one_rank_ends_every_rank(mpirun, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    job = mpirun(FAILING_HEAD, 2, timeout=120, args=(str(tmp_path / "out"),))
    # The ranks share one stdout pipe: their lines may run together ("EXIT 0 1EXIT 1 1"), so match, not split.
    assert sorted(re.findall(r"EXIT \d+ \d+", job.stdout)) == ["EXIT 0 1", "EXIT 1 1"], job.stdout
    errors = [line for line in job.stderr.splitlines() if line.strip()]
    assert errors == ["pyxbraid-train: error (rank 1): the head failed on purpose"], job.stderr
    assert not (tmp_path / "out" / "model.pt").exists()


def test_digits_command_line_errors(tmp_path, capsys, monkeypatch):
    from pyxbraid import train

    for args, message in (
        (["--dtype", "float16"], r"argument --dtype: invalid choice: 'float16'"),
        (["--depth", "0"], "argument --depth: must be an integer in 1..2147483646, got 0"),
        (["--checkpoint", "c.npz"], "unrecognized arguments: --checkpoint c.npz"),
        (["--threads", "0"], "argument --threads: must be an integer in 1..1024, got 0"),
    ):
        with pytest.raises(SystemExit) as stop:
            train.main(["digits", *args])
        assert stop.value.code == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyxbraid-train: error: "), lines
        assert re.search(message, lines[0]) and lines[0].endswith("(see pyxbraid-train digits --help)"), lines
    # without PyTorch / scikit-learn: one line naming what to install, exit status 1, no training
    import importlib
    import types

    for missing, name in (("torch", "PyTorch"), ("sklearn", "scikit-learn")):

        def import_module(module, missing=missing):
            if module == missing:
                raise ModuleNotFoundError(f"No module named {module!r}", name=module)
            return importlib.import_module(module)

        with monkeypatch.context() as m:
            m.setattr(train, "importlib", types.SimpleNamespace(import_module=import_module))
            assert train.main(["digits", "--out", str(tmp_path / "never")]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and not (tmp_path / "never").exists()
        assert captured.err == (
            f"pyxbraid-train: error (rank 0): pyxbraid-train digits needs {name}, not installed here (optional "
            'dependencies): pip install "pyxbraid[torch]" scikit-learn\n'
        )
