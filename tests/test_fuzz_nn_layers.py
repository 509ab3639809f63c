"""Property-based tests of the numpy-layer entry points (hypothesis, derandomized, small fixed budgets).

nn.Dense, nn.Conv1d, nn.Layer definitions given to nn.ResNet, what a layer's
forward and vjp return (through the trainer and through
pyxbraid.testing.check_layer), check_layer's own arguments, and model files
whose layer description was tampered with. The property: a correct result
(checked independently) or a TypeError / ValueError whose message names the
culprit; never a crash, a hang or a silently wrong value.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import nn_reference as ref
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pyxbraid as xb
from pyxbraid import nn
from pyxbraid.testing import check_layer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "scripts"))

from nn_layer_cases import Block  # noqa: E402

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
NOT_A_NUMBER = st.sampled_from([None, "3", b"3", [3], {"a": 1}, 1j, object()])
BAD_INT = st.one_of(NOT_A_NUMBER, st.booleans(), st.floats(allow_nan=True), st.integers(max_value=0))
DATA = xb.datasets.make_peaks(6, 4, seed=2)


def tagged(good, bad):
    """(value, is_valid) pairs: mostly valid values, some invalid ones."""
    return st.one_of(good.map(lambda v: (v, True)), bad.map(lambda v: (v, False)))


def names_one_of(exc, names):
    return any(re.search(rf"\b{re.escape(n)}\b", str(exc)) for n in names)


# --- the built-in layers' arguments ----------------------------------------------------------------
ACTIVATION = tagged(st.sampled_from(["tanh", "relu", "smooth_relu"]), st.sampled_from(["sigmoid", None, 1, ""]))


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "width": tagged(st.integers(1, 5), BAD_INT),
            "activation": ACTIVATION,
            "bias": tagged(st.sampled_from(["channel", "scalar"]), st.sampled_from(["none", None, True])),
        }
    )
)
def test_dense_arguments(args):
    values = {k: v for k, (v, _) in args.items()}
    invalid = [k for k, (_, ok) in args.items() if not ok]
    try:
        layer = nn.Dense(**values)
    except (TypeError, ValueError) as exc:
        assert invalid and names_one_of(exc, invalid), (invalid, str(exc))
        return
    assert not invalid
    assert check_layer(layer, batch=2, directions=1)


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "channels": tagged(st.integers(1, 3), BAD_INT),
            "length": tagged(st.integers(1, 5), BAD_INT),
            "kernel_size": tagged(st.sampled_from([1, 3, 5, 7]), BAD_INT | st.sampled_from([2, 4])),
            "activation": ACTIVATION,
        }
    )
)
@example({"channels": (2, True), "length": (1, True), "kernel_size": (7, True), "activation": ("relu", True)})
def test_conv1d_arguments_and_results(args):
    values = {k: v for k, (v, _) in args.items()}
    invalid = [k for k, (_, ok) in args.items() if not ok]
    try:
        layer = nn.Conv1d(**values)
    except (TypeError, ValueError) as exc:
        assert invalid and names_one_of(exc, invalid), (invalid, str(exc))
        return
    assert not invalid
    # forward and vjp against the loop-by-loop reference, any size (kernel longer than the state too)
    rng = np.random.default_rng(values["channels"] * 100 + values["length"])
    u = rng.standard_normal((2, values["channels"], values["length"]))
    W = rng.standard_normal(layer.parameter_shapes()["weight"])
    b, v = rng.standard_normal(values["channels"]), rng.standard_normal(u.shape)
    np.testing.assert_allclose(
        layer.forward(u, {"weight": W, "bias": b}), ref.conv1d_reference(u, W, b, values["activation"])[0], atol=1e-13
    )
    du, grads = layer.vjp(u, {"weight": W, "bias": b}, v)
    du_ref, grads_ref = ref.conv1d_vjp_reference(u, W, b, v, values["activation"])
    np.testing.assert_allclose(du, du_ref, atol=1e-12)
    np.testing.assert_allclose(grads["weight"], grads_ref["weight"], atol=1e-12)


# --- layer definitions given to ResNet ----------------------------------------------------------------
NAME = st.one_of(
    st.from_regex(r"[a-z][a-z0-9]{0,3}(_[a-z0-9]{1,2})?", fullmatch=True).map(lambda n: (n, True)),
    st.sampled_from(["", "1a", "a.b", "a__b", "_a", "a_", "layers.w", 3, None]).map(lambda n: (n, False)),
)
SHAPE = st.one_of(
    st.lists(st.integers(1, 3), max_size=3).map(lambda s: (tuple(s), True)),
    st.sampled_from([(0,), (2, -1), "3", (1.5,), None, (True,)]).map(lambda s: (s, False)),
)
STATE_SHAPE = st.one_of(
    st.lists(st.integers(1, 3), min_size=1, max_size=3).map(lambda s: (tuple(s), True)),
    st.sampled_from([(), (0,), (2, -1), "3", None, (2**31,)]).map(lambda s: (s, False)),
)
CONFIG = st.one_of(
    st.dictionaries(st.text(max_size=3), st.integers(-5, 5) | st.text(max_size=3) | st.none(), max_size=2).map(
        lambda c: (c, True)
    ),
    st.sampled_from([[1], {"a": (1, 2)}, {"a": math.nan}, {1: 2}, "x"]).map(lambda c: (c, False)),
)


class Generated(nn.Layer):
    """F(u) = tanh(u) * (1 + sum of all parameters): any parameter shapes, a correct vjp."""

    def __init__(self, state_shape, shapes, config):
        super().__init__(state_shape=state_shape)
        self.shapes, self._config = shapes, config

    def parameter_shapes(self):
        return self.shapes

    def config(self):
        return self._config

    def forward(self, u, params):
        return np.tanh(u) * (1.0 + sum(float(np.sum(p)) for p in params.values()))

    def vjp(self, u, params, v):
        scale = 1.0 + sum(float(np.sum(p)) for p in params.values())
        total = float(np.sum(np.tanh(u) * v))
        return (1.0 - np.tanh(u) ** 2) * v * scale, {k: np.full(s, total) for k, s in self.shapes.items()}


@FUZZ
@given(STATE_SHAPE, st.lists(st.tuples(NAME, SHAPE), max_size=3), CONFIG, st.integers(1, 3))
def test_layer_definitions(state_shape, parameters, config, depth):
    (shape, shape_ok), (cfg, cfg_ok) = state_shape, config
    names = [n for (n, _), _ in parameters]
    shapes = {n: s for (n, _), (s, _) in parameters}
    ok = shape_ok and cfg_ok and all(n_ok and s_ok for (_, n_ok), (_, s_ok) in parameters)
    width = math.prod(shape) if shape_ok else 3
    try:
        layer = Generated(shape, shapes, cfg)
        net = nn.ResNet(2, width, depth, 5, opening="dense", layer=layer)
    except (TypeError, ValueError) as exc:
        assert not ok, f"valid layer rejected: {exc}"
        assert re.search(r"state_shape|parameter_shapes|config\(\)", str(exc)), str(exc)
        return
    assert ok or len(set(names)) < len(names), "invalid layer accepted"  # (a repeated name is one dict key)
    P = net.parameters()
    assert net.num_parameters == sum(v.size for v in P.values())
    assert {k: v.shape for k, v in P.items() if k.startswith("layers.")} == {
        f"layers.{n}": (depth, *s) for n, s in shapes.items()
    }
    loss, grad = nn.Trainer(net, progress=False).loss_and_gradient(DATA.x_train, DATA.y_train)
    ref_loss, ref_grad = ref.loss_and_gradient_with_layer(P, DATA.x_train, DATA.y_train, net.config, layer)
    assert math.isclose(loss, ref_loss, rel_tol=1e-12)
    assert ref.max_relative_error(net.full_dict(grad), ref_grad) < 1e-12


# --- what forward and vjp return ----------------------------------------------------------------------
def mangled(value, how):
    """``value`` (a float64 array) changed as ``how`` says; None: unchanged."""
    kind, arg = how
    if kind == "same":
        return value
    if kind == "dtype":
        return np.asarray(value).astype(arg)
    if kind == "drop_axis":
        return np.asarray(value).reshape(-1)[: max(np.asarray(value).size - arg, 0)]
    if kind == "add_axis":
        return np.asarray(value)[..., None]
    if kind == "transpose":
        return np.asarray(value).T
    if kind == "list":
        return np.asarray(value).tolist()
    return arg  # "other": a replacement value


HOW = st.one_of(
    st.just(("same", None)),
    st.tuples(st.just("dtype"), st.sampled_from([np.float32, np.int64, np.complex128, bool, object])),
    st.tuples(st.just("drop_axis"), st.integers(1, 3)),
    st.just(("add_axis", None)),
    st.just(("transpose", None)),
    st.just(("list", None)),
    st.tuples(st.just("other"), st.sampled_from([None, 1.0, "x", np.zeros(0)])),
)


def is_unchanged(value, how, shape):
    """Whether the mangled value is still a float64 array of ``shape`` (then it must be accepted)."""
    try:
        arr = np.asarray(mangled(value, how))
    except Exception:  # noqa: BLE001
        return False
    return arr.dtype == np.float64 and arr.shape == shape


@FUZZ
@given(st.sampled_from(["forward", "state", "weight", "bias"]), HOW, st.sampled_from(["serial", "exact", "check"]))
@example("weight", ("transpose", None), "check")  # a valid array that is not the gradient: the checker says so
@example("forward", ("dtype", np.float32), "exact")
@example("state", ("list", None), "serial")  # nested lists of floats are arrays of float64: accepted
@example("bias", ("other", 1.0), "exact")
def test_what_a_layer_returns_is_checked(part, how, where):
    class Mangling(nn.Dense):
        def forward(self, u, params):
            y = super().forward(u, params)
            return mangled(y, how) if part == "forward" else y

        def vjp(self, u, params, v):
            du, grads = super().vjp(u, params, v)
            if part == "state":
                return mangled(du, how), grads
            if part in grads:
                grads = {**grads, part: mangled(grads[part], how)}
            return du, grads

    layer = Mangling(3, activation="tanh")
    shape = {"forward": (6, 3), "state": (6, 3), "weight": (3, 3), "bias": (3,)}[part]
    if where == "check":
        shape = {"forward": (2, 3), "state": (2, 3)}.get(part, shape)
    probe = np.arange(math.prod(shape), dtype=np.float64).reshape(shape) + 0.5
    accepted = is_unchanged(probe, how, shape)
    wrong_values = how[0] == "transpose" and part == "weight"  # a valid array, but not the gradient
    try:
        if where == "check":
            result = check_layer(layer, batch=2, directions=1)
            assert result.failed == (["parameter weight"] if wrong_values else []), result.summary()
        else:
            net = nn.ResNet(2, 3, 4, 5, activation="tanh", layer=layer)
            lp = None if where == "serial" else dict(max_levels=2, cfactor=2)
            loss, _ = nn.Trainer(net, layer_parallel=lp, progress=False).loss_and_gradient(DATA.x_train, DATA.y_train)
            assert math.isfinite(loss)
    except (TypeError, ValueError) as exc:
        assert not accepted, f"a valid result was rejected: {exc}"
        what = "forward() result" if part == "forward" else "vjp() state gradient" if part == "state" else part
        assert "Mangling" in str(exc) and what in str(exc), str(exc)
        assert re.search(r"float64|shape", str(exc)), str(exc)
        return
    assert accepted, f"a bad result was accepted: {part} {how}"


# --- check_layer's arguments ------------------------------------------------------------------------
@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "batch": tagged(st.integers(1, 4), BAD_INT),
            "directions": tagged(st.integers(1, 2), BAD_INT),
            "seed": tagged(st.integers(0, 2**32), st.sampled_from([-1, 1.5, None, True])),
            "eps": tagged(st.floats(1e-7, 1e-5), st.sampled_from([0.0, -1e-6, math.nan, math.inf, "1e-6", None])),
            "rtol": tagged(st.floats(1e-6, 1e-3), st.sampled_from([0.0, math.nan, None])),
            "atol": tagged(st.floats(1e-14, 1e-10), st.sampled_from([-1.0, math.inf, [1e-12]])),
            "u": tagged(
                st.integers(1, 3).map(lambda n: np.random.default_rng(n).standard_normal((n, 3))),
                st.sampled_from([np.zeros((2, 4)), np.zeros(3), np.full((1, 3), np.nan), "u", np.zeros((0, 3))]),
            ),
            "params": tagged(
                st.just({"weight": 0.3 * np.eye(3), "bias": np.ones(3)}),
                st.sampled_from([{"weight": np.eye(3)}, {"weight": np.eye(2), "bias": np.ones(3)}, [1], {}]),
            ),
        },
    )
)
def test_check_layer_arguments(args):
    values = {k: v for k, (v, _) in args.items()}
    invalid = [k for k, (_, ok) in args.items() if not ok]
    try:
        result = check_layer(nn.Dense(3, activation="tanh"), **values)
    except (TypeError, ValueError) as exc:
        assert invalid, f"valid arguments rejected: {exc}"
        assert names_one_of(exc, invalid), (invalid, str(exc))
        return
    assert not invalid, f"accepted invalid {invalid}"
    assert result and result.max_rel_error < 1e-5  # rtol >= 1e-6 and eps in 1e-7..1e-5


# --- model files with a tampered layer description ------------------------------------------------------
ORIGINAL = nn.ResNet(2, 6, 4, 3, seed=1, layer=nn.Conv1d(2, 3))
DESCRIPTION = json.loads(ORIGINAL._layer_spec.description)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 2**40) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
FIELDS = ["type", "config", "state_shape", "parameters", "config.channels", "config.length", "config.kernel_size"]


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([*FIELDS, "extra"]),
        JSON_VALUE
        | st.just("__delete__")
        | st.sampled_from([1, 2, 3, 5, 2**31, "tanh", "pyxbraid.nn.Dense", "pyxbraid.nn.Conv1d", [2, 3], [6]]),
        max_size=3,
    ),
    st.sampled_from([None, "conv", "block"]),
)
@example({}, None)  # the original loads, without and with its layer
@example({}, "conv")
@example({"config.kernel_size": 3.0}, "conv")  # 3.0 is not 3 in a description
@example({"config.kernel_size": 5}, None)
@example({"type": "mymodule.MyLayer"}, None)
@example({"state_shape": [6]}, "conv")
def test_load_of_crafted_layer_descriptions(tmp_path_factory, changes, given_layer):
    folder = tmp_path_factory.mktemp("layer")
    good = folder / "good.npz"
    ORIGINAL.save(good)
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    description = json.loads(json.dumps(DESCRIPTION))
    for key, value in changes.items():
        target, name = (description.get("config"), key[7:]) if key.startswith("config.") else (description, key)
        if not isinstance(target, dict):
            continue
        if value == "__delete__":
            target.pop(name, None)
        else:
            target[name] = value
    path = folder / "m.npz"
    np.savez(path, **(arrays | {"layer": np.array(json.dumps(description))}))
    layer = {None: None, "conv": nn.Conv1d(2, 3), "block": Block(6)}[given_layer]
    changed = json.dumps(description, sort_keys=True) != json.dumps(DESCRIPTION, sort_keys=True)
    try:
        net = nn.ResNet.load(path, layer=layer)
    except (TypeError, ValueError) as exc:
        assert str(path) in str(exc), str(exc)
        assert changed or given_layer == "block", f"the original was rejected: {exc}"
        return
    # only the original description loads, and loads the original network
    assert not changed and given_layer != "block"
    for k, v in ORIGINAL.parameters().items():
        np.testing.assert_array_equal(net.parameters()[k], v)
