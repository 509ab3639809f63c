"""Property-based tests of pyxbraid.nn's entry points (hypothesis, derandomized, small fixed budgets).

The property everywhere: generated arguments give either a correct result
(checked against an independent computation) or a clear exception of the
documented type -- TypeError/ValueError (OSError for unreadable paths) --
whose message names the argument; never a crash, a hang, a giant allocation,
or a silently wrong value.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import nn_reference as ref
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyxbraid as xb
from pyxbraid import nn

HERE = Path(__file__).resolve().parent
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# values that are never valid for the argument they are given to, by kind
NOT_A_NUMBER = st.sampled_from([None, "3", b"3", [3], {"a": 1}, 1j, object()])
BAD_INT = st.one_of(
    NOT_A_NUMBER,
    st.booleans(),
    st.floats(allow_nan=True),
    st.integers(max_value=0),
    st.integers(min_value=2**31 + 1, max_value=2**70),
)
BAD_REAL = st.one_of(NOT_A_NUMBER, st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf]))


def tagged(good, bad):
    """(value, is_valid) pairs: mostly valid values, some invalid ones."""
    return st.one_of(good.map(lambda v: (v, True)), bad.map(lambda v: (v, False)))


# --- ResNet(...) --------------------------------------------------------------------------------------
RESNET_ARGS = {
    "in_features": tagged(st.integers(1, 4) | st.integers(1, 4).map(np.int64), BAD_INT),
    "width": tagged(st.integers(1, 6), BAD_INT | st.integers(2**20, 2**30)),
    "depth": tagged(st.integers(1, 10), BAD_INT),
    "classes": tagged(st.integers(2, 5), BAD_INT | st.just(1)),
    "T": tagged(st.floats(0.01, 100) | st.integers(1, 5), BAD_REAL | st.floats(max_value=0) | st.just(5e-324)),
    "activation": tagged(st.sampled_from(["tanh", "relu", "smooth_relu"]), st.sampled_from(["sigmoid", None, 1, ""])),
    "opening": tagged(st.sampled_from(["dense", "zero_pad"]), st.sampled_from(["conv", None, 0])),
    "bias": tagged(st.sampled_from(["channel", "scalar"]), st.sampled_from(["none", None, True])),
    "tikhonov": tagged(st.floats(0, 1), BAD_REAL | st.floats(max_value=-1e-300)),
    "smoothness": tagged(st.floats(0, 1), BAD_REAL | st.floats(max_value=-1e-300)),
    "seed": tagged(st.integers(0, 2**64), st.sampled_from([-1, 1.5, "1", None, True])),
}


def _resnet_example(**bad):
    good = dict(
        in_features=(2, True),
        width=(4, True),
        depth=(4, True),
        classes=(3, True),
        T=(1.0, True),
        activation=("tanh", True),
        opening=("dense", True),
        bias=("channel", True),
        tikhonov=(0.0, True),
        smoothness=(0.0, True),
        seed=(0, True),
    )
    return good | {k: (v, False) for k, v in bad.items()}


@FUZZ
@given(st.fixed_dictionaries(RESNET_ARGS))
@example(_resnet_example(T=5e-324))  # the cases: h underflows ...
@example(_resnet_example(width=2**31))  # ... sizes the engine cannot index ...
@example(_resnet_example(depth=2**31))
@example(_resnet_example(width=2**20))  # ... and a network no memory holds
def test_resnet_arguments(args):
    values = {k: v for k, (v, _) in args.items()}
    invalid = [k for k, (_, ok) in args.items() if not ok]
    combination = (
        values["opening"] == "zero_pad"
        and args["width"][1]
        and args["in_features"][1]
        and values["width"] < values["in_features"]
    )
    try:
        net = nn.ResNet(**values)
    except (TypeError, ValueError) as exc:
        named = invalid + (["width", "in_features"] if combination else [])
        assert named, f"valid arguments rejected: {exc}"
        assert any(re.search(rf"\b{k}(=| must)", str(exc)) for k in named), (named, str(exc))
        return
    assert not invalid and not combination, f"accepted invalid {invalid}"
    params = net.parameters()
    assert sum(v.size for v in params.values()) == net.num_parameters == net.local_num_parameters
    assert net.config.T == float(values["T"]) and net.h == float(values["T"]) / values["depth"]
    assert all(np.all(np.isfinite(v)) for v in params.values())


# --- Trainer(...), layer_parallel: checked as the Solver checks, under the user's names ----------------
PER_LEVEL_INT = lambda lo: st.one_of(
    st.integers(lo - 2, 6),
    st.lists(st.integers(lo - 1, 5), max_size=3),  # noqa: E731
    NOT_A_NUMBER,
    st.booleans(),
    st.floats(0, 5),
)
LP_VALUES = {
    "max_levels": st.one_of(st.integers(-1, 5), st.just(2**31), NOT_A_NUMBER, st.floats(1, 4)),
    "min_coarse": st.one_of(st.integers(-1, 4), NOT_A_NUMBER),
    "cfactor": PER_LEVEL_INT(2),
    "nrelax": PER_LEVEL_INT(0),
    "cwt": st.one_of(st.floats(-1, 3), st.just(math.nan), st.lists(st.floats(0.5, 2), max_size=2), NOT_A_NUMBER),
    "fmg": st.one_of(st.booleans(), st.integers(-1, 2), NOT_A_NUMBER),
    "storage": st.one_of(st.integers(-3, 3), NOT_A_NUMBER),
    "tnorm": st.one_of(st.integers(0, 4), NOT_A_NUMBER),
    "max_iter": st.one_of(st.integers(-1, 6), NOT_A_NUMBER, st.just(2**31)),
    "abs_tol": st.one_of(st.floats(-1, 1e-3), st.sampled_from([math.nan, math.inf]), NOT_A_NUMBER),
    "abs_tol_adjoint": st.one_of(st.floats(-1, 1e-3), NOT_A_NUMBER, st.booleans()),
    "one_shot": st.one_of(st.booleans(), st.sampled_from([0, "yes", None])),
    "unknown_key": st.integers(),
}
NET = nn.ResNet(2, 3, 8, 5, seed=1)
DATA = xb.datasets.make_peaks(16, 8, seed=1)


def solver_accepts(options):
    app = NET.batch_app(4)
    try:
        xb.Solver(
            app,
            0.0,
            1.0,
            8,
            adjoint=True,
            access_level=0,
            skip=False,
            tstart_objective=1.0,
            tstop_objective=1.0,
            **options,
        )
    except (TypeError, ValueError) as exc:
        return exc
    return None


@FUZZ
@given(
    st.dictionaries(st.sampled_from(sorted(LP_VALUES)), st.none(), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: LP_VALUES[k] for k in keys})
    )
)
def test_trainer_layer_parallel(lp):
    assume(lp.get("max_levels") != 1)  # 1 is the Trainer's own rule: layer_parallel=None instead
    try:
        trainer = nn.Trainer(NET, progress=False, layer_parallel=lp)
    except (TypeError, ValueError) as exc:
        text = str(exc)
        assert "layer_parallel" in text and (any(f"'{k}'" in text for k in lp) or "unknown key" in text), text
        if (
            "unknown_key" in lp or not isinstance(lp.get("one_shot", False), (bool, np.bool_)) or None in lp.values()
        ):  # None: "not given" to the Solver, meaningless to the Trainer
            return
        from pyxbraid.nn.trainer import _LAYER_PARALLEL_KEYS

        options = {_LAYER_PARALLEL_KEYS[k][0]: v for k, v in lp.items() if k != "one_shot"}
        assert solver_accepts(options) is not None, f"the Solver takes {lp} that Trainer() rejected: {text}"
        return
    assert solver_accepts(trainer._options) is None, lp  # accepted here: accepted by the Solver too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nn.ConvergenceWarning)  # few iterations with a tight tolerance
        loss, grad = trainer.loss_and_gradient(DATA.x_train, DATA.y_train)
    assert math.isfinite(loss) and np.all(np.isfinite(grad))


TRAINER_ARGS = st.fixed_dictionaries(
    {
        "seed": tagged(st.integers(0, 2**40), st.sampled_from([-1, 0.5, "0", None])),
        "optimizer": tagged(st.sampled_from([None, "sgd", "adam", "lbfgs"]), st.sampled_from(["adam", nn.Adam, 3])),
        "comm": tagged(st.just(None), st.sampled_from([0, "world"])),
        "progress": tagged(st.booleans(), st.nothing()),
    }
)


@FUZZ
@given(TRAINER_ARGS)
def test_trainer_arguments(args):
    values = {k: v for k, (v, _) in args.items()}
    make = {"sgd": nn.SGD, "adam": nn.Adam, "lbfgs": nn.LBFGS}
    if args["optimizer"][1] and values["optimizer"] is not None:
        values["optimizer"] = make[values["optimizer"]]()
    invalid = [k for k, (_, ok) in args.items() if not ok]
    try:
        trainer = nn.Trainer(nn.ResNet(2, 3, 4, 5), **values)
    except (TypeError, ValueError) as exc:
        assert invalid and any(k in str(exc) for k in invalid), (invalid, str(exc))
        return
    assert not invalid and trainer.seed == values["seed"]


# --- data for fit / evaluate / predict / loss_and_gradient ------------------------------------------------
TRAINER = nn.Trainer(
    nn.ResNet(2, 3, 5, 4, activation="tanh", seed=2),
    progress=False,
    layer_parallel=dict(max_levels=2, cfactor=2, abs_tol=1e-13, abs_tol_adjoint=1e-13),
)
FINITE = st.floats(-1e3, 1e3)
X = st.one_of(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.just(2)), elements=FINITE),  # valid
    hnp.arrays(
        st.sampled_from([np.float32, np.int16, np.uint8]),
        st.tuples(st.integers(1, 6), st.just(2)),
        elements=st.integers(0, 50),
    ),  # valid
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), elements=FINITE),  # shapes
    hnp.arrays(
        np.float64, st.tuples(st.integers(1, 6), st.just(2)), elements=st.floats(allow_nan=True, allow_infinity=True)
    ),  # NaN, inf
    hnp.arrays(st.sampled_from([np.complex128, np.bool_, "U3", "O"]), (3, 2)),  # dtypes
    st.sampled_from([None, "x", [[1.0, 2.0], [3.0]]]),
)


def labels_for(n):
    return st.one_of(
        hnp.arrays(np.int64, n, elements=st.integers(0, 3)),  # valid
        hnp.arrays(np.int64, n, elements=st.integers(-3, 8)),  # range
        hnp.arrays(np.float64, n, elements=st.floats(-1, 5) | st.just(math.nan)),  # floats
        hnp.arrays(np.int64, st.integers(0, n + 2), elements=st.integers(0, 3)),  # lengths
        st.integers(0, 3).map(lambda k: np.eye(4, dtype=int)[np.full(n, k)]),  # one-hot
        hnp.arrays(np.float64, (n, 4), elements=st.floats(0, 1)),  # not one-hot
        st.sampled_from([None, "labels", np.array(["a"] * n)]),
    )


@st.composite
def x_and_y(draw):
    x = draw(X)
    n = np.shape(x)[0] if isinstance(x, np.ndarray) and x.ndim >= 1 else 3
    return x, draw(labels_for(n))


def reference(x, y):
    """Plain numpy (tests/nn_reference.py); huge inputs overflow to inf there as in the engine, quietly."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _reference(x, y)


def _reference(x, y):
    params = TRAINER.net.parameters()
    logits = ref.forward_logits(params, x, TRAINER.net.config)
    loss = None
    if y is not None:
        loss, _ = ref.loss_and_gradient(params, x, y, TRAINER.net.config)
    return logits, loss


def clean(x, y):
    """What the data mean when they are valid (None when they are not)."""
    try:
        xa = np.asarray(x)
        if (
            xa.dtype.kind not in "fiu"
            or xa.ndim != 2
            or xa.shape[1] != 2
            or xa.shape[0] == 0
            or not np.all(np.isfinite(xa))
        ):
            return None
        xa = xa.astype(np.float64)
        ya = np.asarray(y)
        if (
            ya.ndim == 2
            and ya.shape == (xa.shape[0], 4)
            and np.all((ya == 0) | (ya == 1))
            and np.all(ya.sum(axis=1) == 1)
        ):
            ya = ya.argmax(axis=1)
        if (
            ya.shape != (xa.shape[0],)
            or ya.dtype.kind not in "iuf"
            or not np.all(np.isfinite(ya))
            or not np.all(ya == np.round(ya))
            or np.any(ya < 0)
            or np.any(ya > 3)
        ):
            return None
        return xa, ya.astype(np.int64)
    except Exception:
        return None


def check(call, x, y, message_names):
    valid = clean(x, y)
    try:
        result = call(x, y)
    except (TypeError, ValueError) as exc:
        assert valid is None, f"valid data rejected: {exc}"
        assert str(exc).startswith(message_names), str(exc)
        return None, None
    assert valid is not None, "invalid data accepted"
    return result, valid


@FUZZ
@given(x_and_y())
@example((DATA.x_train, None))  # loss 0 before: labels are required
@example(([[1.0, 2.0], [3.0]], np.zeros(2, int)))  # ragged input
@example((DATA.x_train, np.full(16, 1e300)))  # a label that wraps around when cast
def test_evaluate_data(xy):
    x, y = xy
    result, valid = check(TRAINER.evaluate, x, y, ("x ", "y "))
    if result is not None:
        logits, loss = reference(*valid)
        assert result[0] == pytest.approx(loss, rel=1e-10)
        assert result[1] == np.mean(logits.argmax(axis=1) == valid[1])


@FUZZ
@given(x_and_y())
@example((DATA.x_train, None))
@example(([[1.0, 2.0], [3.0]], np.zeros(2, int)))
def test_loss_and_gradient_data(xy):
    x, y = xy
    result, valid = check(TRAINER.loss_and_gradient, x, y, ("x ", "y "))
    if result is not None:
        _, loss = reference(*valid)
        params = TRAINER.net.parameters()
        with np.errstate(over="ignore", invalid="ignore"):
            _, grad = ref.loss_and_gradient(params, *valid, TRAINER.net.config)
        assert result[0] == pytest.approx(loss, rel=1e-10)
        mine = TRAINER.net.full_dict(result[1])
        a, b = (np.concatenate([d[k].ravel() for k in sorted(grad)]) for d in (mine, grad))
        assert np.linalg.norm(a - b) <= 1e-9 * np.linalg.norm(b)  # exact mode to tol=1e-13


@FUZZ
@given(X)
def test_predict_data(x):
    result, valid = check(
        lambda x, y: TRAINER.predict(x),
        x,
        np.zeros(np.shape(x)[0] if np.ndim(x) else 0, int) if isinstance(x, np.ndarray) and x.ndim >= 1 else None,
        ("x ",),
    )
    if result is not None:
        logits, _ = reference(valid[0], None)
        np.testing.assert_array_equal(result, logits.argmax(axis=1))


FIT_KW = st.fixed_dictionaries(
    {
        "epochs": tagged(st.integers(1, 2), st.sampled_from([0, -1, 1.0, "1", None, True])),
        "batch_size": tagged(st.sampled_from([None, 1, 3, 100]), st.sampled_from([0, -2, 2.5, "3", True])),
        "shuffle": tagged(st.booleans(), st.sampled_from([None, 1, "yes"])),
        "validation": tagged(st.sampled_from([None, "pair"]), st.sampled_from(["x only", 5, "nan pair", "triple"])),
        "callback": tagged(st.sampled_from([None, "fn"]), st.sampled_from([3, "print"])),
    }
)


@FUZZ
@given(x_and_y(), FIT_KW)
def test_fit_arguments(xy, kw):
    x, y = xy
    values = {k: v for k, (v, _) in kw.items()}
    invalid = [k for k, (_, ok) in kw.items() if not ok]
    pair = (DATA.x_val, DATA.y_val % 4)
    values["validation"] = {
        None: None,
        "pair": pair,
        "x only": DATA.x_val,
        5: 5,
        "triple": (*pair, 1),
        "nan pair": (np.full((2, 2), np.nan), [0, 1]),
    }[values["validation"]]
    seen = []
    values["callback"] = (lambda e, h: seen.append(e)) if values["callback"] == "fn" else values["callback"]
    net = nn.ResNet(2, 3, 5, 4, activation="tanh", seed=2)
    trainer = nn.Trainer(net, optimizer=nn.SGD(lr=0.01), progress=False)
    valid = clean(x, y)
    try:
        history = trainer.fit(x, y, **values)
    except (TypeError, ValueError) as exc:
        text = str(exc)
        assert valid is None or invalid, f"valid arguments rejected: {text}"
        assert text.startswith(("x ", "y ")) or any(k in text for k in invalid), (invalid, text)
        return
    assert valid is not None and not invalid
    n = valid[0].shape[0]
    batch = n if values["batch_size"] is None else min(values["batch_size"], n)
    assert history.epoch == list(range(1, values["epochs"] + 1))
    assert len(history.step_loss) == values["epochs"] * -(-n // batch)
    assert all(math.isfinite(v) for v in history.loss + history.step_loss)
    assert seen == ([] if values["callback"] is None else history.epoch)


# --- optimizer constructors ----------------------------------------------------------------------------------
FRACTION = tagged(st.floats(0, 0.999), BAD_REAL | st.floats(1, 10) | st.floats(max_value=-1e-9))
OPTIMIZER_ARGS = {
    nn.SGD: {"lr": tagged(st.floats(1e-6, 10), BAD_REAL | st.floats(max_value=0)), "momentum": FRACTION},
    nn.Adam: {
        "lr": tagged(st.floats(1e-6, 10), BAD_REAL | st.just(0)),
        "betas": tagged(
            st.tuples(st.floats(0, 0.99), st.floats(0, 0.999)),
            st.sampled_from([(0.9,), (1.0, 0.9), (0.9, math.nan), "ab", None, (0.9, 0.9, 0.9)]),
        ),
        "eps": tagged(st.floats(1e-12, 1), BAD_REAL | st.just(0.0)),
    },
    nn.LBFGS: {
        "lr": tagged(st.floats(1e-3, 10), BAD_REAL | st.just(-1)),
        "history": tagged(st.integers(1, 20), BAD_INT),
        "c1": tagged(st.floats(1e-6, 0.5), BAD_REAL | st.just(0.0) | st.just(1.0)),
        "shrink": tagged(st.floats(0.1, 0.9), BAD_REAL | st.just(0.0) | st.just(1.5)),
        "max_backtracks": tagged(st.integers(1, 30), BAD_INT),
    },
}


@FUZZ
@given(
    st.sampled_from(list(OPTIMIZER_ARGS)).flatmap(
        lambda cls: st.tuples(st.just(cls), st.fixed_dictionaries(OPTIMIZER_ARGS[cls]))
    )
)
def test_optimizer_arguments(case):
    cls, args = case
    values = {k: v for k, (v, _) in args.items()}
    invalid = [k for k, (_, ok) in args.items() if not ok]
    try:
        opt = cls(**values)
    except (TypeError, ValueError) as exc:
        assert invalid and any(k in str(exc) for k in invalid), (invalid, str(exc))
        return
    assert not invalid, f"accepted invalid {invalid}"
    assert opt.hyperparameters() == {
        k: (list(map(float, v)) if k == "betas" else type(getattr(opt, k))(v)) for k, v in values.items()
    }
    x = np.array([1.0, -1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nn.LineSearchWarning)  # a huge first step with few backtracks
        loss = opt.step(x, lambda: (float(x @ x), 2 * x), lambda a, b: float(a @ b))
    assert loss == 2.0 and np.all(np.isfinite(x))


# --- ResNet.load on mutated files ---------------------------------------------------------------------------
ORIGINAL = nn.ResNet(2, 3, 4, 5, bias="scalar", seed=4)
_buffer = io.BytesIO()
np.savez(
    _buffer,
    format=np.array("pyxbraid.nn.ResNet/1"),
    config=np.array(json.dumps(ORIGINAL.config.__dict__)),
    **{k.replace(".", "__"): v for k, v in ORIGINAL.parameters().items()},
)
ORIGINAL_BYTES = _buffer.getvalue()


def load_property(path, tmp_dir):
    """ResNet.load(path): the original network, a network matching what the file declares, or a clear error."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        net = nn.ResNet.load(path)
    except (ValueError, OSError) as exc:
        assert str(path) in str(exc), str(exc)
        return None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert time.perf_counter() - start < 5 and peak < 50_000_000, "too slow or too much memory"
    return net


@FUZZ
@given(
    st.integers(0, len(ORIGINAL_BYTES) - 1) | st.just(len(ORIGINAL_BYTES)),
    st.lists(st.tuples(st.integers(0, len(ORIGINAL_BYTES) - 1), st.integers(0, 7)), max_size=6),
)
def test_load_of_truncated_and_bit_flipped_files(tmp_path_factory, cut, flips):
    data = bytearray(ORIGINAL_BYTES[:cut])
    for pos, bit in flips:
        if pos < len(data):
            data[pos] ^= 1 << bit
    path = tmp_path_factory.mktemp("load") / "m.npz"
    path.write_bytes(bytes(data))
    net = load_property(path, path.parent)
    if net is not None:  # only a harmless change (a time stamp, a flag) may load, and loads the original
        assert net.config == ORIGINAL.config
        for k, v in ORIGINAL.parameters().items():
            np.testing.assert_array_equal(net.parameters()[k], v)


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 2**70) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(sorted(ORIGINAL.config.__dict__) + ["extra"]),
        JSON_VALUE | st.just("__delete__") | st.sampled_from([1, 2, 3, 8, 0.5, "tanh", "dense"]),
        max_size=3,
    )
)
def test_load_of_crafted_configs(tmp_path_factory, changes):
    config = dict(ORIGINAL.config.__dict__)
    for k, v in changes.items():
        if v == "__delete__":
            config.pop(k, None)
        else:
            config[k] = v
    path = tmp_path_factory.mktemp("load") / "m.npz"
    np.savez(
        path,
        format=np.array("pyxbraid.nn.ResNet/1"),
        config=np.array(json.dumps(config)),
        **{k.replace(".", "__"): v for k, v in ORIGINAL.parameters().items()},
    )
    net = load_property(path, path.parent)
    if net is not None:
        assert net.config.__dict__ == {
            "dtype": "float64",  # files written before the dtype option: float64
            **{k: (float(v) if k in ("T", "tikhonov", "smoothness") else v) for k, v in config.items()},
        }
        for k, v in ORIGINAL.parameters().items():
            np.testing.assert_array_equal(net.parameters()[k], v)


HEADER_DTYPES = st.sampled_from(
    ["<f8", ">f8", "<f4", "<c16", "|u1", "<i8", "<U5", "|O", "|b1", "|V8", [("a", "<f8")], [("a", "<f8", (2,))]]
)
SHAPES = st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
    st.tuples(st.integers(0, 2**62), st.integers(1, 4)),
    st.just((4, 3, 3)),
)


@FUZZ
@given(
    st.sampled_from(sorted(k.replace(".", "__") for k in ORIGINAL.parameters())),
    HEADER_DTYPES,
    SHAPES,
    st.integers(0, 300),
    st.booleans(),
    st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
)
def test_load_of_crafted_array_headers(tmp_path_factory, member, dtype, shape, nbytes, fortran, method):
    """One member gets any header (dtype, shape, order) and any number of data bytes."""
    path = tmp_path_factory.mktemp("load") / "m.npz"
    arrays = {"format": np.array("pyxbraid.nn.ResNet/1"), "config": np.array(json.dumps(ORIGINAL.config.__dict__))}
    arrays.update({k.replace(".", "__"): v for k, v in ORIGINAL.parameters().items()})
    with zipfile.ZipFile(path, "w", method) as z:
        for k, v in arrays.items():
            with z.open(k + ".npy", "w", force_zip64=True) as f:
                if k != member:
                    np.lib.format.write_array(f, v)
                    continue
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    header,
                    {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": fortran, "shape": shape},
                )
                f.write(header.getvalue())
                f.write(np.random.default_rng(nbytes).bytes(nbytes))
    net = load_property(path, path.parent)
    if net is not None:  # the member happened to be exactly right: a network with those values
        assert net.config == ORIGINAL.config
        name = member.replace("__", ".")
        assert net.parameters()[name].shape == ORIGINAL.parameters()[name].shape


# --- several ranks: a bad input on one rank raises on every rank ---------------------------------------------
CASES = st.fixed_dictionaries(
    {
        "call": st.sampled_from(
            ["fit", "evaluate", "loss_and_gradient", "predict", "trainer", "load", "save", "checkpoint"]
        ),
        "bad": st.sampled_from(["nan", "shape", "dtype", "labels", "none", "other_data", "value"]),
        "rank": st.integers(0, 1),
    }
)


@settings(
    derandomize=True, deadline=None, database=None, max_examples=3, phases=[Phase.explicit, Phase.generate]
)  # no shrinking: each example is an MPI job
@given(st.lists(CASES, min_size=8, max_size=8))
def test_a_bad_input_on_one_rank_raises_on_every_rank(tmp_path_factory, cases):
    from mpi_launch import run_mpi

    folder = tmp_path_factory.mktemp("ranks")
    ORIGINAL.save(folder / "good.npz")
    out = run_mpi(
        str(HERE / "scripts" / "nn_bad_rank.py"), 2, timeout=120, args=(json.dumps(cases), str(folder))
    ).stdout
    results = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT"))[7:])
    for case, reports in zip(cases, results, strict=True):
        # load, save and a checkpoint's path: rank 0 reads and writes, its input is the one that counts
        bad = (
            0
            if case["call"] in ("load", "save") or (case["call"] == "checkpoint" and case["bad"] != "other_data")
            else case["rank"]
        )
        culprit, other = reports[bad], reports[1 - bad]
        assert culprit.split(":")[0] in (
            "TypeError",
            "ValueError",
            "FileNotFoundError",
            "NotADirectoryError",
            "IsADirectoryError",
        ), (case, reports)
        assert other == culprit or (other.startswith("RemoteRankError: rank ") and culprit.split(":")[0] in other), (
            case,
            reports,
        )


# --- multilevel strategies ----------------------------------------------------------------------------
STRATEGY_ARGS = st.fixed_dictionaries(
    {
        "strategy": st.one_of(st.sampled_from(["single", "nested", "mgopt"]), st.sampled_from(["fast", 3, None, ""])),
        "levels": st.one_of(st.none(), st.integers(-1, 6), st.sampled_from([2.0, True, "2", np.int64(2)])),
        "depth": st.sampled_from([1, 2, 4, 6, 8]),
        "mode": st.sampled_from(["serial", "exact", "one_shot"]),
    }
)


@FUZZ
@given(STRATEGY_ARGS)
def test_strategy_arguments(args):
    """Any strategy/levels either trains (finite loss, every level's history) or names the culprit."""
    modes = {
        "serial": None,
        "exact": dict(max_levels=2, cfactor=2),
        "one_shot": dict(max_levels=2, cfactor=2, one_shot=True, max_iter=2),
    }
    net = nn.ResNet(2, 3, args["depth"], 5, activation="tanh", seed=2)
    kwargs = {"strategy": args["strategy"], "levels": args["levels"]}
    try:
        trainer = nn.Trainer(net, progress=False, layer_parallel=modes[args["mode"]], **kwargs)
        history = trainer.fit(DATA.x_train[:8], DATA.y_train[:8], epochs=1, batch_size=4)
    except (TypeError, ValueError) as exc:
        text = str(exc)
        assert "strategy" in text or "levels" in text or "depth" in text, (kwargs, args["depth"], text)
        return
    assert args["strategy"] in ("single", "nested", "mgopt")
    assert history.loss and all(np.isfinite(history.loss)), history.loss
    assert all(np.isfinite(p).all() for p in net.parameters().values())


# --- multilevel checkpoints: the loader of what nested / MG/Opt runs write -----------------------------------
def _multilevel_checkpoint(strategy, folder):
    """A checkpoint of 2 epochs of a small nested or MG/Opt run (exact mode, full batch: MGRIT iterates too)."""
    net = nn.ResNet(2, 3, 4, 5, activation="tanh", seed=2)
    s = nn.Nested(2, epochs=[1]) if strategy == "nested" else nn.MGOpt(2)
    trainer = nn.Trainer(net, layer_parallel=dict(max_levels=2, cfactor=2), strategy=s, progress=False)
    trainer.fit(DATA.x_train[:8], DATA.y_train[:8], epochs=2, checkpoint=folder / f"{strategy}.npz")
    return (folder / f"{strategy}.npz").read_bytes()


@pytest.fixture(scope="module")
def multilevel_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multilevel")
    return {s: _multilevel_checkpoint(s, folder) for s in ("nested", "mgopt")}


def _resume_property(strategy, path):
    """fit(resume=True) from a damaged file: continues (finite parameters) or a ValueError/OSError naming it."""
    net = nn.ResNet(2, 3, 4, 5, activation="tanh", seed=2)
    s = nn.Nested(2, epochs=[1]) if strategy == "nested" else nn.MGOpt(2)
    trainer = nn.Trainer(net, layer_parallel=dict(max_levels=2, cfactor=2), strategy=s, progress=False)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged learning rate is announced, and may stall MGRIT
            trainer.fit(DATA.x_train[:8], DATA.y_train[:8], epochs=3, checkpoint=path, resume=True)
    except (ValueError, OSError) as exc:
        assert str(path) in str(exc), str(exc)
        return
    finally:
        assert time.perf_counter() - start < 10, "too slow"
    assert all(np.isfinite(p).all() for p in net.parameters().values())


ML_PATHS = [
    ("phase",),
    ("phase", "level"),
    ("phase", "cascade"),
    ("phase", "offset"),
    ("phase", "coarse_epochs"),
    ("phase", "cycles"),
    ("strategy",),
    ("strategy", "levels"),
    ("strategy", "epochs"),
    ("strategy", "c1"),
    ("gradient_evaluations",),
    ("gradient_evaluations", 0),
    ("levels",),
    ("levels", 1),
    ("levels", 0, "progress", "epoch"),
    ("levels", 1, "progress", "step"),
    ("levels", 1, "progress", "rng"),
    ("levels", 0, "mgrit"),
    ("levels", 0, "mgrit", "count"),
    ("levels", 1, "optimizer", "t"),
    ("levels", 1, "settings", "batch_size"),
    ("ranks",),
    ("extra",),
]


@FUZZ
@given(
    st.sampled_from(["nested", "mgopt"]),
    st.lists(
        st.tuples(st.sampled_from(ML_PATHS), JSON_VALUE | st.just("__delete__") | st.sampled_from([0, 1, 2, -1, 1.5])),
        min_size=1,
        max_size=3,
    ),
)
def test_load_of_crafted_multilevel_checkpoints(tmp_path_factory, multilevel_checkpoints, strategy, changes):
    """Any value at any place of a multilevel checkpoint's metadata: resumes, or a clear error naming the file."""
    path = tmp_path_factory.mktemp("ml") / "c.npz"
    path.write_bytes(multilevel_checkpoints[strategy])
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    for where, value in changes:
        target = meta
        for key in where[:-1]:
            if isinstance(target, dict) and key in target or isinstance(target, list) and key < len(target):
                target = target[key]
            else:
                break
        else:
            if isinstance(target, dict):
                if value == "__delete__":
                    target.pop(where[-1], None)
                else:
                    target[where[-1]] = value
            elif isinstance(target, list) and where[-1] < len(target) and value != "__delete__":
                target[where[-1]] = value
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    _resume_property(strategy, path)


@FUZZ
@given(
    st.sampled_from(["nested", "mgopt"]),
    st.floats(0, 1),
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), max_size=6),
)
def test_load_of_truncated_and_bit_flipped_multilevel_checkpoints(
    tmp_path_factory, multilevel_checkpoints, strategy, cut, flips
):
    original = multilevel_checkpoints[strategy]
    data = bytearray(original[: int(cut * len(original))] if cut < 1 else original)
    for pos, bit in flips:
        if data:
            data[int(pos * (len(data) - 1))] ^= 1 << bit
    path = tmp_path_factory.mktemp("ml") / "c.npz"
    path.write_bytes(bytes(data))
    _resume_property(strategy, path)
