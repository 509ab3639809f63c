"""Numpy residual layers (nn.Layer): the protocol through the engine's Python-App path, in every mode.

Checked against an independent numpy backpropagation that uses only the
documented protocol (tests/nn_reference.py: loss_and_gradient_with_layer),
against the native ResNet (nn.Dense is the native layer in numpy: equal to
round-off), against loop-by-loop references (Conv1d), and on 2 and 3 ranks
(tests/scripts/nn_layers.py). Also: the layer checker of pyxbraid.testing,
the errors of broken layers, failures on one rank, files and checkpoints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nn_reference as ref
import numpy as np
import pytest

import pyxbraid as xb
from pyxbraid import nn
from pyxbraid.testing import LayerCheckResult, check_layer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "scripts"))

from nn_layer_cases import Block, Boom, broken  # noqa: E402

DATA = xb.datasets.make_peaks(24, 8, seed=4)  # as in scripts/nn_layers.py
EXACT = dict(max_levels=3, cfactor=2, abs_tol=1e-13, abs_tol_adjoint=1e-13, max_iter=60)


def conv_net(**kw):
    """The Conv1d network of scripts/nn_layers.py."""
    args = dict(depth=8, activation="tanh", tikhonov=1e-3, smoothness=1e-3, seed=7, layer=nn.Conv1d(2, 3)) | kw
    return nn.ResNet(2, 6, classes=5, **args)


def block_net(**kw):
    """The user-defined layer's network of scripts/nn_layers.py."""
    args = dict(depth=8, opening="zero_pad", tikhonov=1e-3, smoothness=1e-3, seed=2, layer=Block(4)) | kw
    return nn.ResNet(2, 4, classes=5, **args)


def trainer_for(net, lp=None, **kw):
    return nn.Trainer(net, layer_parallel=lp, progress=False, **kw)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --- the built-in layers against loop-by-loop references ----------------------------------------
@pytest.mark.parametrize("activation", ["tanh", "smooth_relu", "relu"])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_conv1d_equals_a_loop_reference(activation, kernel_size):
    rng = np.random.default_rng(kernel_size)
    layer = nn.Conv1d(3, 4, kernel_size=kernel_size, activation=activation)
    u = rng.standard_normal((2, 3, 4))
    W, b = 0.4 * rng.standard_normal((3, 3, kernel_size)), 0.1 * rng.standard_normal(3)
    v = rng.standard_normal(u.shape)
    y_ref, _ = ref.conv1d_reference(u, W, b, activation)
    np.testing.assert_allclose(layer.forward(u, {"weight": W, "bias": b}), y_ref, rtol=1e-14, atol=1e-15)
    du, grads = layer.vjp(u, {"weight": W, "bias": b}, v)
    du_ref, grads_ref = ref.conv1d_vjp_reference(u, W, b, v, activation)
    np.testing.assert_allclose(du, du_ref, rtol=1e-13, atol=1e-14)
    for k in ("weight", "bias"):
        np.testing.assert_allclose(grads[k], grads_ref[k], rtol=1e-13, atol=1e-14)


def test_dense_layer_equals_the_reference_formulas():
    rng = np.random.default_rng(1)
    u, W, b, v = (
        rng.standard_normal((5, 4)),
        rng.standard_normal((4, 4)),
        rng.standard_normal(4),
        rng.standard_normal((5, 4)),
    )
    layer = nn.Dense(4, activation="smooth_relu")
    z = u @ W.T + b
    np.testing.assert_allclose(layer.forward(u, {"weight": W, "bias": b}), ref.act(z, "smooth_relu"), rtol=1e-15)
    du, g = layer.vjp(u, {"weight": W, "bias": b}, v)
    s = ref.dact(z, "smooth_relu") * v
    np.testing.assert_allclose(du, s @ W, rtol=1e-14)
    np.testing.assert_allclose(g["weight"], s.T @ u, rtol=1e-14)
    np.testing.assert_allclose(g["bias"], s.sum(axis=0), rtol=1e-14)


# --- the protocol through the engine, against numpy backpropagation -------------------------------
MODES = {
    "serial": None,
    "exact": EXACT,
    "one_shot": dict(max_levels=3, cfactor=2, max_iter=40, one_shot=True),  # converged: then exact
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("make", [conv_net, block_net], ids=["conv1d", "user_layer"])
def test_gradient_equals_numpy_backprop(make, mode):
    net = make()
    trainer = trainer_for(net, MODES[mode])
    loss, grad = trainer.loss_and_gradient(DATA.x_train, DATA.y_train)
    ref_loss, ref_grad = ref.loss_and_gradient_with_layer(
        net.parameters(), DATA.x_train, DATA.y_train, net.config, net.layer
    )
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert ref.max_relative_error(net.full_dict(grad), ref_grad) < 1e-10
    if mode == "serial":  # backpropagation itself: round-off only
        assert ref.max_relative_error(net.full_dict(grad), ref_grad) < 1e-13
    else:
        assert trainer.last_solve.iterations > 1
        if mode == "one_shot":
            assert trainer.last_solve.adjoint_residual_norms[-1] < 1e-12


def test_gradient_equals_finite_differences():
    net = block_net(T=2.0)
    trainer = trainer_for(net)
    _, grad = trainer.loss_and_gradient(DATA.x_train, DATA.y_train)
    rng = np.random.default_rng(0)
    params, eps = net.local_parameters, 1e-6
    for k in rng.choice(params.size, 20, replace=False):
        old = params[k]
        params[k] = old + eps
        plus, _ = trainer.loss_and_gradient(DATA.x_train, DATA.y_train)
        params[k] = old - eps
        minus, _ = trainer.loss_and_gradient(DATA.x_train, DATA.y_train)
        params[k] = old
        assert grad[k] == pytest.approx((plus - minus) / (2 * eps), rel=1e-6, abs=1e-9), k


def test_one_shot_is_inexact_with_few_iterations_and_warm_restarts_converge():
    x, y = DATA.x_train, DATA.y_train
    _, exact = trainer_for(conv_net(depth=16)).loss_and_gradient(x, y)
    trainer = trainer_for(conv_net(depth=16), dict(max_levels=3, cfactor=4, max_iter=1, one_shot=True))
    errors = []
    for _ in range(6):  # same batch, same parameters: each evaluation continues the iteration
        _, grad = trainer.loss_and_gradient(x, y) if not errors else trainer._evaluate_batch(x, y, "same")
        errors.append(rel(grad, exact))
    assert errors[0] > 1e-3
    assert errors[-1] < 1e-3 * errors[0]


# --- nn.Dense is the native ResNet ------------------------------------------------------------------
NATIVE_VARIANTS = [
    dict(activation="tanh", bias="channel", opening="dense"),
    dict(activation="smooth_relu", bias="scalar", opening="dense", tikhonov=1e-3, smoothness=1e-3),
    dict(activation="relu", bias="channel", opening="zero_pad", smoothness=1e-2),
]


def twins(variant, depth=12):
    native = nn.ResNet(2, 4, depth, 5, 1.5, seed=3, **variant)
    layer = nn.Dense(4, activation=variant["activation"], bias=variant["bias"])
    return native, nn.ResNet(2, 4, depth, 5, 1.5, seed=3, layer=layer, **variant)


@pytest.mark.parametrize("variant", NATIVE_VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_dense_numpy_layer_equals_the_native_resnet(variant):
    native, numpy_net = twins(variant)
    P, Q = native.parameters(), numpy_net.parameters()
    assert P.keys() == Q.keys() and all(np.array_equal(P[k], Q[k]) for k in P)  # the same initialisation
    assert numpy_net.num_parameters == native.num_parameters
    x, y = DATA.x_train, DATA.y_train
    np.testing.assert_allclose(
        trainer_for(numpy_net).predict_logits(x), trainer_for(native).predict_logits(x), rtol=1e-13, atol=1e-14
    )
    for mode, lp in MODES.items():
        a, b = trainer_for(native, lp), trainer_for(numpy_net, lp)
        la, ga = a.loss_and_gradient(x, y)
        lb, gb = b.loss_and_gradient(x, y)
        assert lb == pytest.approx(la, rel=1e-13), mode
        assert rel(gb, ga) < 1e-13, mode
        if lp is not None:
            assert b.last_solve.iterations == a.last_solve.iterations, mode


@pytest.mark.parametrize(
    "lp, optimizer, batch",
    [
        (None, lambda: nn.Adam(lr=0.02), 8),
        (dict(max_levels=3, cfactor=2), lambda: nn.SGD(lr=0.05), 8),
        (dict(max_levels=3, cfactor=2, max_iter=2, one_shot=True), nn.LBFGS, None),
    ],
    ids=["serial-adam", "exact-sgd", "one_shot-lbfgs"],
)
def test_training_with_the_dense_numpy_layer_follows_the_native_one(lp, optimizer, batch):
    native, numpy_net = twins(NATIVE_VARIANTS[1])
    h = [
        trainer_for(net, lp, optimizer=optimizer(), seed=5).fit(DATA.x_train, DATA.y_train, epochs=3, batch_size=batch)
        for net in (native, numpy_net)
    ]
    np.testing.assert_allclose(h[1].step_loss, h[0].step_loss, rtol=1e-11)
    assert h[0].loss[-1] < h[0].loss[0]
    P, Q = native.parameters(), numpy_net.parameters()
    assert ref.max_relative_error(Q, P) < 1e-11


# --- the layer checker (pyxbraid.testing.check_layer) ------------------------------------------------
class WrongState(nn.Conv1d):
    """The state part of the vjp lacks the activation's derivative."""

    def vjp(self, u, params, v):
        _, grads = super().vjp(u, params, v)
        du, _ = super().vjp(u, params, np.ones_like(v))
        return du * v, grads


class WrongWeight(Block):
    """The gradient of w2 is 1% too large."""

    def vjp(self, u, params, v):
        du, grads = super().vjp(u, params, v)
        return du, {**grads, "w2": 1.01 * grads["w2"]}


@pytest.mark.parametrize(
    "layer", [nn.Dense(4), nn.Dense(3, "tanh", "scalar"), nn.Conv1d(2, 5, 3, "smooth_relu"), Block(4)], ids=repr
)
def test_check_layer_passes_correct_layers(layer):
    result = check_layer(layer, directions=2)
    assert isinstance(result, LayerCheckResult) and result and not result.failed
    assert set(result.errors) == {"state", *(f"parameter {k}" for k in layer.parameter_shapes())}
    assert result.max_rel_error < 1e-7
    result.assert_ok()


def test_check_layer_catches_a_wrong_state_gradient():
    result = check_layer(WrongState(2, 4))
    assert not result and result.failed == ["state"]
    assert result.errors["state"] > 1e-2
    assert result.errors["parameter weight"] < 1e-8 and result.errors["parameter bias"] < 1e-8
    with pytest.raises(AssertionError, match=r"the vjp's state \(relative error [0-9.]+e[+-]\d+\) disagree"):
        result.assert_ok()
    assert "WRONG" in result.summary() and "state, direction 0" in "\n".join(result.details)


def test_check_layer_catches_a_wrong_parameter_gradient_and_says_by_how_much():
    result = check_layer(WrongWeight(4), directions=4)
    assert result.failed == ["parameter w2"]
    assert result.errors["parameter w2"] == pytest.approx(0.01 / 1.01, rel=1e-4)  # 1% too large
    assert all(result.errors[p] < 1e-8 for p in ("state", "parameter w1", "parameter b1", "parameter g"))
    with pytest.raises(AssertionError, match=r"parameter w2 \(relative error 9.9"):
        result.assert_ok()


def test_check_layer_at_given_points_and_its_errors():
    layer = nn.Dense(3, "tanh")
    params = {"weight": np.eye(3), "bias": np.zeros(3)}
    assert check_layer(layer, u=np.ones((2, 3)), params=params)
    with pytest.raises(ValueError, match=r"u must have shape \(n, \*Dense.state_shape\)"):
        check_layer(layer, u=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"params must be a dict with the parameters \['bias', 'weight'\]"):
        check_layer(layer, params={"weight": np.eye(3)})
    with pytest.raises(ValueError, match=r"params\['bias'\] must have shape \(3,\), got \(2,\)"):
        check_layer(layer, params={"weight": np.eye(3), "bias": np.zeros(2)})
    with pytest.raises(ValueError, match="eps must be finite and > 0, got -1"):
        check_layer(layer, eps=-1)
    with pytest.raises(TypeError, match="batch must be an integer >= 1, got 1.5"):
        check_layer(layer, batch=1.5)
    with pytest.raises(TypeError, match="layer must be a pyxbraid.nn.Layer"):
        check_layer(lambda u: u)

    class Noisy(nn.Dense):
        def forward(self, u, params):
            return super().forward(u, params) + 1e-9 * np.random.default_rng().standard_normal(u.shape)

    with pytest.raises(ValueError, match="Noisy.forward is not deterministic"):
        check_layer(Noisy(3))


# --- broken layers: clear errors ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, exc, match",
    [
        (
            "forward_shape",
            ValueError,
            r"Broken_forward_shape.forward\(\) result must have shape \(8, 3\) \(the shape of u\), got shape \(8, 2\)",
        ),
        (
            "forward_float32",
            TypeError,
            r"forward\(\) result must be a float64 array \(the shape of u\), got dtype float32",
        ),
        ("forward_none", TypeError, r"forward\(\) result must be a float64 array .*got dtype object \(NoneType\)"),
        ("forward_writes_u", ValueError, "read-only"),
        (
            "vjp_not_pair",
            TypeError,
            r"vjp\(\) must return a pair \(state gradient, dict of parameter gradients\), got ndarray",
        ),
        (
            "vjp_state_shape",
            ValueError,
            r"vjp\(\) state gradient must have shape \(8, 3\) \(the shape of u\), got shape \(1, 3\)",
        ),
        ("vjp_int", TypeError, r"vjp\(\) state gradient must be a float64 array .*got dtype int64"),
        ("vjp_missing", ValueError, r"vjp\(\) must return a gradient for each parameter .*missing \['bias'\]"),
        ("vjp_unknown", ValueError, r"unknown \['extra'\]"),
        (
            "vjp_param_shape",
            ValueError,
            r"vjp\(\) gradient of 'weight' must have shape \(3, 3\) \(the shape of parameter 'weight'\), got shape \(9,\)",
        ),
        ("vjp_list", TypeError, r"parameter gradients as a dict of name -> array, got list"),
    ],
)
@pytest.mark.parametrize("mode", ["serial", "exact"])
def test_a_broken_layer_is_a_clear_error_in_training_and_in_the_checker(kind, exc, match, mode):
    net = nn.ResNet(2, 3, 4, 5, activation="tanh", layer=broken(kind))
    trainer = trainer_for(net, None if mode == "serial" else dict(max_levels=2, cfactor=2))
    with pytest.raises(exc, match=match):
        trainer.loss_and_gradient(DATA.x_train[:8], DATA.y_train[:8])
    with pytest.raises(exc, match=match.replace(r"\(8, ", r"\(3, ")):  # the checker's batch: 3
        check_layer(broken(kind))
    if kind.startswith("vjp"):  # the trainer stays usable: its failed solver is replaced
        assert trainer.evaluate(DATA.x_train[:8], DATA.y_train[:8])[0] > 0


class NoSuper(nn.Layer):
    def __init__(self):
        pass

    def parameter_shapes(self):
        return {}

    def forward(self, u, params):
        return u

    def vjp(self, u, params, v):
        return v, {}


class Shapes(nn.Layer):
    def __init__(self, shapes, config=None, state_shape=(3,)):
        super().__init__(state_shape=state_shape)
        self.shapes, self._config = shapes, config or {}

    def parameter_shapes(self):
        return self.shapes

    def forward(self, u, params):
        return np.tanh(u)

    def vjp(self, u, params, v):
        return (1 - np.tanh(u) ** 2) * v, {k: np.zeros(s) for k, s in self.shapes.items()}

    def config(self):
        return self._config


class OnlyForward(nn.Layer):
    def __init__(self):
        super().__init__(state_shape=3)

    def forward(self, u, params):
        return u


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: 3, TypeError, "layer must be a pyxbraid.nn.Layer .* got int"),
        (NoSuper, TypeError, r"NoSuper.__init__ must call super\(\).__init__\(state_shape=...\)"),
        (OnlyForward, TypeError, r"OnlyForward must define parameter_shapes\(\), vjp\(\) \(see pyxbraid.nn.Layer\)"),
        (lambda: Shapes([("w", (3,))]), TypeError, r"parameter_shapes\(\) must return a dict"),
        (
            lambda: Shapes({"layers.w": (3,)}),
            ValueError,
            "parameter names must be letters, digits and single underscores",
        ),
        (lambda: Shapes({"a__b": (3,)}), ValueError, "got 'a__b'"),
        (
            lambda: Shapes({"w": (3, 0)}),
            ValueError,
            r"parameter_shapes\(\)\['w'\] must hold integers >= 1, got \(3, 0\)",
        ),
        (lambda: Shapes({"w": "3"}), TypeError, r"parameter_shapes\(\)\['w'\] must be a tuple of integers"),
        (lambda: Shapes({}, config={"a": (1, 2)}), TypeError, r"config\(\) must hold JSON values only"),
        (lambda: Shapes({}, config={"a": object()}), TypeError, r"config\(\) must be JSON-serialisable"),
        (lambda: Shapes({}, config=[1]), TypeError, r"config\(\) must return a dict, got list"),
        (lambda: Shapes({}, state_shape=(3, 0)), ValueError, r"state_shape must hold integers >= 1, got \(3, 0\)"),
        (
            lambda: Shapes({}, state_shape=(2,)),
            ValueError,
            r"width must be the size of the layer's state_shape \(2,\), 2, got width=3",
        ),
    ],
)
def test_a_bad_layer_definition_is_named_when_the_network_is_built(make, exc, match):
    with pytest.raises(exc, match=match):
        nn.ResNet(2, 3, 4, 5, layer=make())


@pytest.mark.parametrize(
    "params, exc, match",
    [
        ({"w": np.zeros(2)}, ValueError, r"init_parameters\(\)\['w'\] must have shape \(3,\), got \(2,\)"),
        (
            {"w": np.zeros(3, complex)},
            TypeError,
            r"init_parameters\(\)\['w'\] must be a real array, got dtype complex128",
        ),
        ({"w": np.full(3, np.nan)}, ValueError, r"init_parameters\(\)\['w'\] \(layer 0\) contains NaN"),
        (
            {},
            TypeError,
            r"init_parameters\(\) must return a dict with the parameters of parameter_shapes\(\), \['w'\], got \[\]",
        ),
    ],
)
def test_bad_initial_parameters_are_named(params, exc, match):
    layer = Shapes({"w": (3,)})
    layer.init_parameters = lambda rng: params
    with pytest.raises(exc, match=match):
        nn.ResNet(2, 3, 4, 5, layer=layer)


def test_default_initialisation_is_the_native_rule_and_seeded_per_layer():
    layer = Shapes({"w": (3, 3), "b": (3,), "s": ()})
    net = nn.ResNet(2, 3, 4, 5, seed=9, layer=layer)
    P = net.parameters()
    np.testing.assert_array_equal(P["layers.w"][2], np.random.default_rng([9, 3]).standard_normal((3, 3)) / 3)
    assert not P["layers.b"].any() and P["layers.s"].shape == (4,)


# --- failures on one rank --------------------------------------------------------------------------
FAILURE_ON_ONE_RANK = """
import json, sys
import numpy as np
from mpi4py import MPI
sys.path.insert(0, sys.argv[2])
from nn_layer_cases import Boom, Failing
import pyxbraid as xb
from pyxbraid import nn
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
d = xb.datasets.make_peaks(24, 8, seed=1)
when, mode = sys.argv[1].split("-")
net = nn.ResNet(2, 3, 8, 5, activation="tanh", layer=Failing(3, when, marker=0.5))
P = net.parameters()
P["layers.bias"][4, 0] = 0.5           # layer 4 lives on rank 1 of 3
net.set_parameters(P)
lp = None if mode == "serial" else dict(max_levels=2, cfactor=2)
trainer = nn.Trainer(net, comm=comm, progress=False, layer_parallel=lp)
reports = []
for attempt in range(2):               # and again: the next call fails the same way, nothing hangs
    try:
        trainer.loss_and_gradient(d.x_train, d.y_train)
        reports.append("no error")
    except Exception as e:
        reports.append(f"{type(e).__name__}: {e}")
reports = comm.gather(reports)
if rank == 0:
    print("RESULT " + json.dumps(reports), flush=True)
"""


@pytest.mark.parametrize("case", ["forward-serial", "forward-exact", "vjp-exact", "nangrad-exact"])
def test_a_failing_layer_on_one_rank_raises_on_every_rank(mpirun, case):
    out = mpirun(FAILURE_ON_ONE_RANK, 3, timeout=90, args=(case, str(HERE / "scripts"))).stdout
    reports = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])
    when = case.split("-")[0]
    own = (
        "CallbackError: Failing.vjp() gave a gradient of 'bias' with NaN or infinite values in residual layer 4"
        if when == "nangrad"
        else f"Boom: {when} of a layer failed on purpose"
    )
    for attempt in range(2):
        assert reports[1][attempt] == own
        for rank in (0, 2):
            assert reports[rank][attempt].startswith("RemoteRankError: rank 1"), reports[rank][attempt]
            assert own.split(":")[0] in reports[rank][attempt]


def test_a_failing_layer_keeps_its_exception_type_on_one_rank():
    net = nn.ResNet(2, 3, 4, 5, activation="tanh", layer=__import__("nn_layer_cases").Failing(3, "vjp", 0.5))
    P = net.parameters()
    P["layers.bias"][2, 0] = 0.5
    net.set_parameters(P)
    trainer = trainer_for(net)
    assert trainer.evaluate(DATA.x_train, DATA.y_train)[0] > 0  # the forward pass is fine
    with pytest.raises(Boom, match="vjp of a layer failed on purpose"):
        trainer.loss_and_gradient(DATA.x_train, DATA.y_train)


# --- files --------------------------------------------------------------------------------------------
def test_save_and_load_built_in_and_user_layers(tmp_path):
    for net, layer in ((conv_net(), None), (block_net(), Block(4))):
        path = tmp_path / "m.npz"
        net.save(path)
        with np.load(path) as f:
            assert "layer" in f.files and f["layer"].dtype.kind == "U"  # a description, not a pickle
        back = nn.ResNet.load(path, layer=layer)  # a built-in layer is rebuilt from the file
        assert type(back.layer) is type(net.layer) and back.layer.config() == net.layer.config()
        assert back.config == net.config
        for k, v in net.parameters().items():
            np.testing.assert_array_equal(back.parameters()[k], v)
        x, y = DATA.x_train, DATA.y_train
        assert trainer_for(back).evaluate(x, y) == trainer_for(net).evaluate(x, y)


def test_load_names_a_missing_or_different_layer(tmp_path):
    path = tmp_path / "m.npz"
    block_net().save(path)
    with pytest.raises(ValueError, match=r"user-defined layer 'Block' .*pass layer=Block\(...\)"):
        nn.ResNet.load(path)
    with pytest.raises(
        ValueError,
        match=r"saved with another layer than layer=Block\(width=4, hidden=2\): config.hidden: 3 saved, 2 given",
    ):
        nn.ResNet.load(path, layer=Block(4, hidden=2))
    with pytest.raises(ValueError, match="saved with another layer .*type: 'Block' saved, 'pyxbraid.nn.Dense' given"):
        nn.ResNet.load(path, layer=nn.Dense(4))
    native = tmp_path / "native.npz"
    nn.ResNet(2, 4, 8, 5).save(native)
    with pytest.raises(ValueError, match="holds a network with the native dense layer, but layer=Block"):
        nn.ResNet.load(native, layer=Block(4))
    conv = tmp_path / "conv.npz"
    conv_net().save(conv)
    with pytest.raises(ValueError, match=r"another layer than layer=Conv1d\(.*config.kernel_size: 3 saved, 5 given"):
        nn.ResNet.load(conv, layer=nn.Conv1d(2, 3, kernel_size=5))


def test_a_native_model_file_is_unchanged(tmp_path):
    """No layer member for the native layer: its files read as before."""
    path = tmp_path / "m.npz"
    nn.ResNet(2, 4, 8, 5).save(path)
    with np.load(path) as f:
        assert sorted(f.files) == sorted(
            [
                "format",
                "config",
                "opening__weight",
                "opening__bias",
                "layers__weight",
                "layers__bias",
                "classifier__weight",
                "classifier__bias",
            ]
        )


def test_a_damaged_layer_description_is_named(tmp_path):
    path = tmp_path / "m.npz"
    conv_net().save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    for change, match in (
        (lambda d: d.pop("config"), "layer must be a JSON object with the keys type, config, state_shape, parameters"),
        (lambda d: d.update(type=3), "layer type must be a string, got 3"),
        (
            lambda d: d.update(config={"channels": 2, "length": 3, "kernel_size": 4, "activation": "tanh"}),
            "kernel_size must be odd",
        ),
        (lambda d: d.update(parameters={"weight": [2, 2, 3]}), r"parameters.bias: None saved, \[2\] given"),
    ):
        description = json.loads(str(arrays["layer"]))
        change(description)
        bad = tmp_path / "bad.npz"
        np.savez(bad, **(arrays | {"layer": np.array(json.dumps(description))}))
        with pytest.raises(ValueError, match=match):
            nn.ResNet.load(bad)


def test_checkpoint_resume_is_bit_identical_with_a_numpy_layer(tmp_path):
    def fit(epochs, checkpoint=None, resume=False, *, lp, batch):
        net = conv_net()
        trainer = trainer_for(net, lp, optimizer=nn.Adam(lr=0.02))
        trainer.fit(DATA.x_train, DATA.y_train, epochs=epochs, batch_size=batch, checkpoint=checkpoint, resume=resume)
        return net.parameters()

    for lp, batch in (
        (dict(max_levels=3, cfactor=2), 8),
        (dict(max_levels=3, cfactor=2, max_iter=2, one_shot=True), None),
    ):
        full = fit(4, lp=lp, batch=batch)
        c = tmp_path / f"c{batch}.npz"
        fit(2, c, lp=lp, batch=batch)
        with np.load(c) as f:
            meta = json.loads(str(f["meta"]))
            assert meta["layer"]["type"] == "pyxbraid.nn.Conv1d"
            assert ("mgrit.states" in f.files) == (batch is None)
            if batch is None:
                assert f["mgrit.states"].shape[1:] == (24, 2, 3)  # (batch, channels, length) states
        resumed = fit(4, c, True, lp=lp, batch=batch)
        assert all(np.array_equal(resumed[k], full[k]) for k in full)


def test_a_checkpoint_of_another_layer_is_rejected(tmp_path):
    c = tmp_path / "c.npz"
    trainer_for(conv_net(), optimizer=nn.Adam()).fit(DATA.x_train, DATA.y_train, epochs=1, checkpoint=c)
    other = conv_net(layer=nn.Conv1d(2, 3, kernel_size=5))
    with pytest.raises(
        ValueError,
        match=r"written for another network: layer=.*'kernel_size': 3.*the trainer's network: .*'kernel_size': 5",
    ):
        trainer_for(other, optimizer=nn.Adam()).fit(DATA.x_train, DATA.y_train, epochs=2, checkpoint=c, resume=True)
    native = nn.ResNet(2, 6, 8, 5, activation="tanh", tikhonov=1e-3, smoothness=1e-3, seed=7)
    with pytest.raises(ValueError, match=r"written for another network: layer=\{.*\(the trainer's network: None\)"):
        trainer_for(native, optimizer=nn.Adam()).fit(DATA.x_train, DATA.y_train, epochs=2, checkpoint=c, resume=True)


# --- several ranks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("nprocs", [2, 3])
def test_ranks_give_the_same_gradients_models_and_checkpoints(mpirun, tmp_path, nprocs):
    x, y = DATA.x_train, DATA.y_train
    # what the job loads: a model and a checkpoint written on one rank
    trained = block_net()
    trainer_for(trained, optimizer=nn.Adam(lr=0.05)).fit(x, y, epochs=2)
    trained.save(tmp_path / "block_one_rank.npz")

    def fit(epochs, checkpoint=None, resume=False):
        net = conv_net()
        trainer_for(net, dict(max_levels=3, cfactor=2), optimizer=nn.Adam(lr=0.02)).fit(
            x, y, epochs=epochs, batch_size=8, checkpoint=checkpoint, resume=resume
        )
        return net.parameters()

    fit(2, tmp_path / "conv_one_rank.ckpt.npz")
    uninterrupted = fit(4)
    spec = {"folder": str(tmp_path), "out": str(tmp_path / "job")}
    out = mpirun(str(HERE / "scripts" / "nn_layers.py"), nprocs, timeout=240, args=(json.dumps(spec),)).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])
    assert result["ranks"] == nprocs
    for name, make in (("conv", conv_net), ("block", block_net)):
        net = make()
        ref_loss, ref_grad = ref.loss_and_gradient_with_layer(net.parameters(), x, y, net.config, net.layer)
        for mode in ("serial", "exact"):
            got = result[f"{name}.{mode}"]
            assert got["loss"] == pytest.approx(ref_loss, rel=1e-12), (name, mode)
            grad = {k: np.array(v) for k, v in got["grad"].items()}
            assert ref.max_relative_error(grad, ref_grad) < (1e-13 if mode == "serial" else 1e-10), (name, mode)
        local = result[f"{name}.local_parameters"]
        assert sum(local) == net.num_parameters and max(local) < net.num_parameters
    # one-shot: the trajectory of one rank
    one_rank = conv_net()
    history = trainer_for(
        one_rank, dict(max_levels=3, cfactor=2, max_iter=2, one_shot=True), optimizer=nn.Adam(lr=0.05)
    ).fit(x, y, epochs=4)
    np.testing.assert_allclose(result["one_shot_loss"], history.loss, rtol=1e-12)
    # the model trained on nprocs ranks loads on one; the one-rank model loaded there
    back = nn.ResNet.load(tmp_path / "job.trained.npz")
    assert ref.max_relative_error(back.parameters(), one_rank.parameters()) < 1e-10
    assert result["loaded_loss"] == pytest.approx(trainer_for(trained).evaluate(x, y)[0], rel=1e-12)
    # a checkpoint of one rank resumed on nprocs ranks, and one of nprocs ranks on one rank: bit for bit (Adam)
    with np.load(tmp_path / "job.resumed.params.npz") as f:
        assert all(np.array_equal(f[k], uninterrupted[k]) for k in uninterrupted)
    resumed_here = fit(4, tmp_path / "job.half.ckpt.npz", True)
    assert all(np.array_equal(resumed_here[k], uninterrupted[k]) for k in uninterrupted)


def test_readme_numpy_layer_block_runs_and_gives_the_documented_accuracy(tmp_path, monkeypatch):
    import re

    text = (HERE.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "(nn.Layer):" in b)
    monkeypatch.chdir(tmp_path)  # the block saves antisymmetric.npz
    ns: dict = {}
    exec(compile(block, "README numpy layer", "exec"), ns)
    # 0.855 here; numpy's matrix products may round differently on another CPU: one point of 200
    assert abs(ns["history"].val_accuracy[-1] - 0.855) <= 0.005 + 1e-12
    assert ns["history"].loss[-1] < 0.5 * ns["history"].loss[0]
    for k, v in ns["net"].parameters().items():
        np.testing.assert_array_equal(ns["back"].parameters()[k], v)


def test_a_non_finite_parameter_gradient_is_named():
    class NaNBias(nn.Dense):
        def vjp(self, u, params, v):
            du, grads = super().vjp(u, params, v)
            if params["weight"][0, 0] == 0.25:  # layer 2 only
                grads = {**grads, "bias": np.full_like(grads["bias"], np.nan)}
            return du, grads

    net = nn.ResNet(2, 3, 4, 5, activation="tanh", layer=NaNBias(3, activation="tanh"))
    P = net.parameters()
    P["layers.weight"][2, 0, 0] = 0.25
    net.set_parameters(P)
    for lp in (None, dict(max_levels=2, cfactor=2)):
        trainer = trainer_for(net, lp)
        with pytest.raises(
            xb.CallbackError,
            match="NaNBias.vjp.. gave a gradient of 'bias' with NaN or infinite values in residual layer 2",
        ):
            trainer.loss_and_gradient(DATA.x_train, DATA.y_train)
