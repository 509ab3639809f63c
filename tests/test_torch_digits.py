"""pyxbraid.datasets.digits() and examples/digits_torch.py (layer-parallel conv ResNet on 2 ranks)."""

from __future__ import annotations

import builtins
import doctest
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    metrics = tmp_path / "m.json"
    out = mpirun(
        str(ROOT / "examples" / "digits_torch.py"),
        2,
        timeout=300,
        args=(
            "--epochs",
            "2",
            "--depth",
            "8",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
            "--metrics",
            str(metrics),
        ),
    ).stdout
    assert "epoch 2: loss" in out and "validation accuracy" in out
    m = json.loads(metrics.read_text())
    assert m["ranks"] == 2 and m["settings"]["mode"] == "exact" and m["settings"]["depth"] == 8
    assert m["validation_accuracy"] > 0.8  # 2 epochs; 10 epochs of the defaults reach about 98%
    assert len(m["history"]["val_accuracy"]) == 2 and m["history"]["mgrit_iterations"][-1] >= 1
    for name in ("training.png", "predictions.png", "model.pt"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    import torch

    state = torch.load(tmp_path / "out" / "model.pt")
    assert sorted(state) == ["head", "layers", "opening"] and len(state["layers"]) == 8 * 7
