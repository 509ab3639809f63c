"""float32 native ResNets (``ResNet(..., dtype="float32")``) and the tiled layer kernels.

The kernels sum every element in a fixed order (per-sample order, whatever
the tiling), so float64 gradients keep matching the numpy backprop reference
to 1e-10 at every width specialisation and ragged batch size. float32 states
run the same layers in float32 while parameters, gradient, optimisers and
files stay float64: gradients agree with float64 to float32 accuracy.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nn_reference as ref
import numpy as np
import pytest

import pyxbraid as xb
from pyxbraid import nn

HERE = Path(__file__).resolve().parent
F32_TOL = 1e-4  # relative, gradients of a float32 forward/backward against float64 (measured ~2e-7)


def trainer_for(net, lp=None, **kw):
    return nn.Trainer(net, layer_parallel=lp, progress=False, **kw)


def data(batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-3, 3, (batch, 2)), rng.integers(0, 5, batch)


# widths: every fixed-width kernel (4 f64 only, 8, 16, 32, 64) and the generic loops (3, 5, 12);
# batches: a single sample, ragged register tiles, and more than one 64-sample block plus a tail
@pytest.mark.parametrize("width", [3, 4, 5, 8, 12, 16, 32, 64])
@pytest.mark.parametrize("batch", [1, 7, 133])
def test_float64_kernels_match_the_numpy_reference_at_every_width_and_batch(width, batch):
    x, y = data(batch, seed=width)
    for activation, bias in [("smooth_relu", "channel"), ("tanh", "scalar"), ("relu", "channel")]:
        net = nn.ResNet(2, width, 5, 5, seed=2, activation=activation, bias=bias)
        loss, grad = trainer_for(net).loss_and_gradient(x, y)
        ref_loss, ref_grad = ref.loss_and_gradient(net.parameters(), x, y, net.config)
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        assert ref.max_relative_error(net.full_dict(grad), ref_grad) < 1e-10, (activation, bias)


@pytest.mark.parametrize("width", [3, 8, 16, 32])
@pytest.mark.parametrize("activation", ["smooth_relu", "tanh", "relu"])
@pytest.mark.parametrize("bias", ["channel", "scalar"])
def test_float32_gradients_match_float64_and_the_reference(width, activation, bias):
    x, y = data(133, seed=width)
    kw = dict(seed=3, activation=activation, bias=bias)
    n64, n32 = nn.ResNet(2, width, 10, 5, **kw), nn.ResNet(2, width, 10, 5, dtype="float32", **kw)
    l64, g64 = trainer_for(n64).loss_and_gradient(x, y)
    l32, g32 = trainer_for(n32).loss_and_gradient(x, y)
    assert g32.dtype == np.float64 and n32.local_parameters.dtype == np.float64
    assert l32 == pytest.approx(l64, rel=F32_TOL)
    assert ref.max_relative_error(n32.full_dict(g32), n64.full_dict(g64)) < F32_TOL
    ref_loss, ref_grad = ref.loss_and_gradient(n32.parameters(), x, y, n32.config)
    assert l32 == pytest.approx(ref_loss, rel=F32_TOL)
    assert ref.max_relative_error(n32.full_dict(g32), ref_grad) < F32_TOL


def test_float32_is_deterministic_and_layer_parallel_converges_to_layer_serial():
    x, y = data(100)
    net = nn.ResNet(2, 8, 16, 5, seed=1, dtype="float32")
    serial = trainer_for(net)
    l1, g1 = serial.loss_and_gradient(x, y)
    l2, g2 = serial.loss_and_gradient(x, y)
    assert l1 == l2 and np.array_equal(g1, g2)
    lp = trainer_for(net, dict(max_levels=3, cfactor=2, abs_tol=1e-7, abs_tol_adjoint=1e-7))
    l3, g3 = lp.loss_and_gradient(x, y)
    assert lp.last_solve.iterations > 0
    assert l3 == pytest.approx(l1, rel=1e-6)
    assert ref.max_relative_error(net.full_dict(g3), net.full_dict(g1)) < F32_TOL


def test_float32_trains():
    d = xb.datasets.make_peaks(200, 50, seed=1)
    net = nn.ResNet(2, 8, 8, 5, seed=1, dtype="float32")
    history = trainer_for(net, optimizer=nn.Adam(lr=0.05)).fit(d.x_train, d.y_train, epochs=15, batch_size=50)
    assert history.loss[-1] < 0.8 * history.loss[0]


def test_save_and_load_keep_the_dtype(tmp_path):
    net = nn.ResNet(2, 4, 6, 5, seed=3, dtype="float32")
    net.save(tmp_path / "f32.npz")
    back = nn.ResNet.load(tmp_path / "f32.npz")
    assert back.config.dtype == "float32" and "dtype='float32'" in repr(back)
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v)
    x, y = data(20)
    assert trainer_for(back).evaluate(x, y) == trainer_for(net).evaluate(x, y)


def test_files_without_a_dtype_load_as_float64(tmp_path):
    """Models written before the dtype option have no 'dtype' in their config."""
    nn.ResNet(2, 4, 6, 3, seed=3).save(tmp_path / "new.npz")
    with zipfile.ZipFile(tmp_path / "new.npz") as z:
        arrays = {n[:-4]: np.load(z.open(n)) for n in z.namelist()}
    config = json.loads(str(arrays["config"]))
    del config["dtype"]
    arrays["config"] = np.array(json.dumps(config))
    np.savez(tmp_path / "old.npz", **arrays)
    assert nn.ResNet.load(tmp_path / "old.npz").config.dtype == "float64"


@pytest.mark.parametrize("dtype", ["float16", "int64", "complex128", 3, None, "bogus"])
def test_dtype_is_validated(dtype):
    with pytest.raises(ValueError, match=rf"dtype must be 'float64' or 'float32', got {dtype!r}"):
        nn.ResNet(2, 4, 4, 3, dtype=dtype)


def test_numpy_dtypes_are_accepted_and_numpy_layers_stay_float64():
    assert nn.ResNet(2, 4, 4, 3, dtype=np.float32).config.dtype == "float32"
    assert nn.ResNet(2, 4, 4, 3, dtype=np.dtype("float64")).config.dtype == "float64"
    with pytest.raises(ValueError, match=r"dtype='float32' needs the native dense layer"):
        nn.ResNet(2, 4, 4, 3, dtype="float32", layer=nn.Dense(4))


@pytest.mark.parametrize("nprocs", [2])
def test_float32_on_two_ranks_matches_one_rank(mpirun, tmp_path, nprocs):
    d = xb.datasets.make_peaks(60, 10, seed=4)
    config = dict(in_features=2, width=8, depth=9, classes=5, activation="tanh", seed=7)
    one = nn.ResNet(**config, dtype="float32")
    loss32, grad32 = trainer_for(one).loss_and_gradient(d.x_train, d.y_train)
    grad32 = one.full_dict(grad32)
    ref64 = nn.ResNet(**config)
    loss64, grad64 = trainer_for(ref64).loss_and_gradient(d.x_train, d.y_train)
    grad64 = ref64.full_dict(grad64)
    result = mpirun(str(HERE / "scripts" / "nn_float32.py"), nprocs, timeout=120, args=(str(tmp_path / "m.npz"),))
    out = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))[7:])
    assert out["ranks"] == nprocs
    for mode in ("serial", "exact"):
        grad = {k: np.array(v) for k, v in out[mode]["grad"].items()}
        # the same float32 arithmetic as on one rank (serial), or converged to it (exact)
        assert out[mode]["loss"] == pytest.approx(loss32, rel=1e-6), mode
        assert ref.max_relative_error(grad, grad32) < (1e-12 if mode == "serial" else F32_TOL), mode
        assert ref.max_relative_error(grad, grad64) < F32_TOL, mode
    assert out["loaded_dtype"] == "float32"
    assert out["loaded_loss"] == pytest.approx(loss32, rel=1e-6)
