"""Residual layers written in numpy: the :class:`Layer` protocol and two built-in layers.

A residual network's hidden layers are the forward-Euler steps
``u_{k+1} = u_k + h F(u_k; theta_k)`` of an ODE. :class:`pyxbraid.nn.ResNet`
runs its own dense layer natively; give it ``layer=`` a :class:`Layer` and the
residual function ``F`` is yours, in numpy, trained by the same
:class:`~pyxbraid.nn.Trainer` -- the same three modes, the distribution over
ranks, the optimisers, save/load and checkpoints. A layer defines

* ``state_shape`` (given to ``super().__init__``): one sample's state, e.g.
  ``(width,)`` or ``(channels, length)``; states are ``(batch, *state_shape)``;
* :meth:`Layer.parameter_shapes`: the parameters of one layer, by name;
* :meth:`Layer.forward`: ``F(u; theta)`` for a batch of states;
* :meth:`Layer.vjp`: its vector-Jacobian product, ``(dF/du)^T v`` and, per
  parameter, ``(dF/dtheta)^T v`` summed over the batch;

and optionally :meth:`Layer.init_parameters` (seeded initialisation) and
:meth:`Layer.config` (the settings that identify it in saved files).
:func:`pyxbraid.testing.check_layer` tests a ``vjp`` against finite
differences of ``forward``.

Built in: :class:`Dense` (the native ResNet's layer, ``sigma(u W^T + b)``) and
:class:`Conv1d` (``sigma(conv(u, W) + b)`` over ``(channels, length)`` states).
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ACTIVATIONS", "Conv1d", "Dense", "Layer"]

ACTIVATIONS = ("smooth_relu", "tanh", "relu")
"""The activations of the built-in layers (and of the network's opening layer)."""

_SMOOTH_RELU_EPS = 0.1  # smooth_relu's quadratic piece spans (-eps, eps), as in the native kernels
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*")  # no '.', no '__': file member names use them
_INDEX_MAX = 2**31 - 1  # the engine's index limit (states are indexed with C ints)
_FLOAT64 = np.dtype(np.float64)


def activate(kind: str, z: np.ndarray) -> np.ndarray:
    """Return ``sigma(z)`` elementwise for an activation of :data:`ACTIVATIONS`.

    ``smooth_relu`` is ``(z + 0.1)^2 / 0.4`` on ``(-0.1, 0.1)`` and ReLU outside
    (the native ResNet's formulas).

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid.nn.layers import activate
    >>> activate("smooth_relu", np.array([-1.0, 0.0, 0.5]))
    array([0.   , 0.025, 0.5  ])
    """
    if kind == "tanh":
        return np.tanh(z)
    if kind == "relu":
        return np.maximum(z, 0.0)
    e = _SMOOTH_RELU_EPS
    return np.where(z <= -e, 0.0, np.where(z >= e, z, (z + e) * (z + e) / (4.0 * e)))


def activate_derivative(kind: str, z: np.ndarray) -> np.ndarray:
    """Return ``sigma'(z)`` elementwise (see :func:`activate`).

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid.nn.layers import activate_derivative
    >>> activate_derivative("smooth_relu", np.array([-1.0, 0.0, 0.5]))
    array([0. , 0.5, 1. ])
    """
    if kind == "tanh":
        t = np.tanh(z)
        return 1.0 - t * t
    if kind == "relu":
        return (z > 0.0).astype(np.float64)
    e = _SMOOTH_RELU_EPS
    return np.where(z <= -e, 0.0, np.where(z >= e, 1.0, (z + e) / (2.0 * e)))


def _int_at_least(name: str, value: Any, minimum: int, maximum: int = _INDEX_MAX) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise ValueError(f"{name} must be an integer in {minimum}..{maximum}, got {value!r}")
    return number


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _shape(name: str, value: Any, *, empty: bool = False) -> tuple[int, ...]:
    """Check a shape: a tuple (or list) of integers >= 1; return it as a tuple of ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of integers, got {value!r}")
    if not value and not empty:
        raise ValueError(f"{name} must have at least one dimension, got {tuple(value)!r}")
    dims = []
    for d in value:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (numbers.Integral, np.integer)) or d < 1:
            raise ValueError(f"{name} must hold integers >= 1, got {tuple(value)!r}")
        dims.append(int(d))
    if math.prod(dims) > _INDEX_MAX:
        raise ValueError(
            f"{name} {tuple(dims)!r} has {math.prod(dims):,} entries, more than the engine's index limit {_INDEX_MAX}"
        )
    return tuple(dims)


class Layer:
    """A residual function ``F(u; theta)`` in numpy, for ``pyxbraid.nn.ResNet(layer=...)``.

    Layer ``k`` of the network is the step ``u_{k+1} = u_k + h F(u_k; theta_k)``:
    one :class:`Layer` object describes ``F``, and every residual layer has
    its own parameters ``theta_k`` (a dict of arrays named by
    :meth:`parameter_shapes`), stored and trained by the network on the rank
    that owns the layer. Subclass it, call ``super().__init__(state_shape=...)``
    and define :meth:`parameter_shapes`, :meth:`forward` and :meth:`vjp`.

    The arrays a layer receives are float64; ``u``, ``params`` and ``v`` are
    read-only (``F`` must not change its input); the arrays it returns must be
    float64 of exactly the documented shapes, else the trainer raises a
    ``TypeError`` / ``ValueError`` naming the layer, the method and the shape.
    An exception in a layer on one rank reaches the caller with its own type
    on that rank, and every other rank raises :class:`pyxbraid.RemoteRankError`.

    Check a new layer with :func:`pyxbraid.testing.check_layer` (its ``vjp``
    against finite differences of ``forward``).

    Parameters
    ----------
    state_shape : int or tuple of int
        One sample's state: the states are arrays of shape
        ``(batch, *state_shape)``. The network's ``width`` is its size.

    Examples
    --------
    A layer ``F(u) = tanh(u * a + c)`` with one scale and one shift per channel:

    >>> import numpy as np
    >>> from pyxbraid import nn
    >>> class Scale(nn.Layer):
    ...     def __init__(self, width):
    ...         super().__init__(state_shape=(width,))
    ...     def parameter_shapes(self):
    ...         return {"a": self.state_shape, "c": self.state_shape}
    ...     def forward(self, u, params):
    ...         return np.tanh(u * params["a"] + params["c"])
    ...     def vjp(self, u, params, v):
    ...         s = (1.0 - np.tanh(u * params["a"] + params["c"]) ** 2) * v
    ...         return s * params["a"], {"a": (s * u).sum(axis=0), "c": s.sum(axis=0)}
    >>> from pyxbraid.testing import check_layer
    >>> bool(check_layer(Scale(4)))
    True
    >>> net = nn.ResNet(2, 4, 6, 3, layer=Scale(4))
    >>> net.parameters()["layers.a"].shape
    (6, 4)
    """

    state_shape: tuple[int, ...]

    def __init__(self, state_shape: int | tuple[int, ...]) -> None:
        self.state_shape = _shape("state_shape", state_shape)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Return the shapes of one layer's parameters, by name.

        Names are letters, digits and single underscores, starting with a
        letter (``"weight"``, ``"bias"``, ``"w_1"``); the network names them
        ``"layers.<name>"`` with shape ``(depth, *shape)``. A shape ``()`` is a
        scalar parameter. An empty dict: a layer without parameters.
        """
        raise NotImplementedError

    def forward(self, u: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Return ``F(u; theta)``.

        Parameters
        ----------
        u : numpy.ndarray
            float64 states, shape ``(batch, *state_shape)`` (read-only).
        params : mapping of str to numpy.ndarray
            This layer's parameters, shapes as :meth:`parameter_shapes` (read-only).

        Returns
        -------
        numpy.ndarray
            float64, the shape of ``u``.
        """
        raise NotImplementedError

    def vjp(
        self, u: np.ndarray, params: Mapping[str, np.ndarray], v: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Return the vector-Jacobian products of :meth:`forward` with ``v``.

        Parameters
        ----------
        u : numpy.ndarray
            The states :meth:`forward` was evaluated at (read-only).
        params : mapping of str to numpy.ndarray
            The layer's parameters (read-only).
        v : numpy.ndarray
            A cotangent of ``F(u)``, the shape of ``u`` (read-only).

        Returns
        -------
        (numpy.ndarray, dict of str to numpy.ndarray)
            ``(dF/du)^T v`` (float64, the shape of ``u``) and, for every
            parameter, ``(dF/dtheta)^T v`` summed over the batch (float64, the
            parameter's shape). The network scales both by the step ``h``.
        """
        raise NotImplementedError

    def init_parameters(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Return one layer's initial parameters, drawn from ``rng``.

        The network calls it with ``numpy.random.default_rng([seed, k + 1])``
        for layer ``k`` (on the rank that owns the layer), so every rank count
        builds the same network. Default, the native ResNet's rule: parameters
        with two or more dimensions are normal with standard deviation
        ``1 / prod(state_shape)`` (small, so that the initial flow is close to
        the identity), the others zero.
        """
        size = math.prod(self.state_shape)
        return {
            name: rng.standard_normal(shape) / size if len(shape) >= 2 else np.zeros(shape)
            for name, shape in self.parameter_shapes().items()
        }

    def config(self) -> dict[str, Any]:
        """Return the settings that identify this layer (JSON-serialisable; default: none).

        Saved with the network and compared when a model or checkpoint is
        loaded, and between ranks: ``ResNet.load(path, layer=...)`` accepts
        only a layer of the same class name whose ``config()``, ``state_shape``
        and parameter shapes equal the saved ones.
        """
        return {}

    def __repr__(self) -> str:
        try:
            settings = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        except Exception:  # a broken config() must not break repr
            settings = "..."
        return f"{type(self).__name__}({settings})"


def _type_name(layer: Layer) -> str:
    """Return the saved name of a layer's type: ``pyxbraid.nn.<name>`` for the built-ins, else the class name.

    Not the module of a user-defined class: a script's module is ``__main__``
    when it runs and its file name when it is imported, and a model saved by
    one must load in the other.
    """
    cls = type(layer)
    return _BUILTIN_NAMES.get(cls, cls.__qualname__)


@dataclass(frozen=True)
class LayerSpec:
    """What the network needs to know of a layer: checked once, when the network is built.

    ``description`` is the canonical JSON of type, config, state shape and
    parameter shapes that identifies a numpy layer in files and between
    ranks; None for the native dense layer.
    """

    state_shape: tuple[int, ...]
    parameters: dict[str, tuple[int, ...]]
    description: str | None

    @property
    def size(self) -> int:
        """Return the number of parameters of one layer."""
        return sum(math.prod(s) for s in self.parameters.values())


def spec_of(layer: Any) -> LayerSpec:
    """Check a layer's definition (not its numbers) and describe it; TypeError/ValueError naming the problem."""
    if not isinstance(layer, Layer):
        raise TypeError(
            f"layer must be a pyxbraid.nn.Layer (or None for the native dense layer), got {type(layer).__name__}"
        )
    name = type(layer).__name__
    if "state_shape" not in vars(layer):
        raise TypeError(f"{name}.__init__ must call super().__init__(state_shape=...)")
    state_shape = _shape(f"{name}.state_shape", layer.state_shape)
    missing = [m for m in ("parameter_shapes", "forward", "vjp") if getattr(type(layer), m) is getattr(Layer, m)]
    if missing:
        raise TypeError(f"{name} must define {', '.join(m + '()' for m in missing)} (see pyxbraid.nn.Layer)")
    shapes = layer.parameter_shapes()
    if not isinstance(shapes, dict):
        raise TypeError(f"{name}.parameter_shapes() must return a dict of name -> shape, got {type(shapes).__name__}")
    parameters: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key):
            raise ValueError(
                f"{name}.parameter_shapes(): parameter names must be letters, digits and single underscores "
                f"starting with a letter, got {key!r}"
            )
        parameters[key] = _shape(f"{name}.parameter_shapes()[{key!r}]", shape, empty=True)
    config = layer.config()
    if not isinstance(config, dict):
        raise TypeError(f"{name}.config() must return a dict, got {type(config).__name__}")
    description = {
        "type": _type_name(layer),
        "config": config,
        "state_shape": list(state_shape),
        "parameters": {k: list(v) for k, v in parameters.items()},
    }
    try:
        text = json.dumps(description, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}.config() must be JSON-serialisable ({exc}), got {config!r}") from None
    if json.loads(text)["config"] != config:  # e.g. tuples or non-string keys would not come back
        raise TypeError(f"{name}.config() must hold JSON values only (lists, not tuples; string keys), got {config!r}")
    return LayerSpec(state_shape, parameters, text)


def _array(layer: Layer, what: str, value: Any, shape: tuple[int, ...], of: str) -> np.ndarray:
    """Check one returned array: float64, exactly ``shape``."""
    name = type(layer).__name__
    try:
        arr = value if type(value) is np.ndarray else np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{name}.{what} must be a float64 array, got {type(value).__name__} ({exc})") from None
    if arr.dtype != _FLOAT64:
        raise TypeError(
            f"{name}.{what} must be a float64 array ({of}), got dtype {arr.dtype}"
            + (f" ({type(value).__name__})" if not isinstance(value, np.ndarray) else "")
        )
    if arr.shape != shape:
        raise ValueError(f"{name}.{what} must have shape {shape} ({of}), got shape {arr.shape}")
    return arr


def readonly(a: Any) -> np.ndarray:
    """Return a read-only view of ``a`` (no copy of an array; a 0-d array for a scalar)."""
    if type(a) is np.ndarray and not a.flags.writeable:
        return a  # the engine's views of a step's inputs are read-only already
    v = np.asarray(a).view()
    v.flags.writeable = False
    return v


def checked_forward(layer: Layer, u: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """Call ``layer.forward`` with a read-only ``u`` and check what it returns."""
    return _array(layer, "forward() result", layer.forward(readonly(u), params), u.shape, "the shape of u")


def checked_vjp(
    layer: Layer, spec: LayerSpec, u: np.ndarray, params: Mapping[str, np.ndarray], v: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Call ``layer.vjp`` with read-only arguments and check what it returns."""
    name = type(layer).__name__
    out = layer.vjp(readonly(u), params, readonly(v))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(
            f"{name}.vjp() must return a pair (state gradient, dict of parameter gradients), "
            f"got {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        )
    u_bar = _array(layer, "vjp() state gradient", out[0], u.shape, "the shape of u")
    grads = out[1]
    if not isinstance(grads, Mapping):
        raise TypeError(
            f"{name}.vjp() must return the parameter gradients as a dict of name -> array, got {type(grads).__name__}"
        )
    if set(grads) != set(spec.parameters):
        missing = sorted(set(spec.parameters) - set(grads))
        unknown = sorted(map(str, set(grads) - set(spec.parameters)))
        raise ValueError(
            f"{name}.vjp() must return a gradient for each parameter of parameter_shapes(): "
            + "; ".join(
                p for p in (f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "") if p
            )
        )
    checked = {
        key: _array(layer, f"vjp() gradient of {key!r}", grads[key], shape, f"the shape of parameter {key!r}")
        for key, shape in spec.parameters.items()
    }
    return u_bar, checked


# --- built-in layers -----------------------------------------------------------------------------
class Dense(Layer):
    """``F(u) = sigma(u W^T + b)`` on ``(batch, width)`` states: the native ResNet's layer in numpy.

    With the same ``activation``, ``bias`` and seed, ``ResNet(..., layer=Dense(width, ...))``
    is the native ``ResNet`` (same parameters, names and initialisation), computed in numpy
    through the engine's Python path instead of the native kernels: the reference for
    the protocol, and a template for your own layers.

    Parameters
    ----------
    width : int
        Channels of the state.
    activation : {"smooth_relu", "tanh", "relu"}, default "smooth_relu"
    bias : {"channel", "scalar"}, default "channel"
        One bias per channel (``bias`` has shape ``(width,)``) or one scalar.

    Examples
    --------
    >>> from pyxbraid import nn
    >>> layer = nn.Dense(8, activation="tanh")
    >>> layer.parameter_shapes()
    {'weight': (8, 8), 'bias': (8,)}
    >>> net = nn.ResNet(2, 8, 30, 5, activation="tanh", layer=layer, seed=1)
    >>> native = nn.ResNet(2, 8, 30, 5, activation="tanh", seed=1)
    >>> import numpy as np
    >>> bool(np.array_equal(net.parameters()["layers.weight"], native.parameters()["layers.weight"]))
    True
    """

    def __init__(self, width: int, activation: str = "smooth_relu", bias: str = "channel") -> None:
        width = _int_at_least("width", width, 1)
        super().__init__(state_shape=(width,))
        self.width = width
        self.activation = _choice("activation", activation, ACTIVATIONS)
        self.bias = _choice("bias", bias, ("channel", "scalar"))

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Return ``{"weight": (width, width), "bias": (width,) or ()}``."""
        return {"weight": (self.width, self.width), "bias": (self.width,) if self.bias == "channel" else ()}

    def init_parameters(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Return the native ResNet's initialisation: weights normal with standard deviation ``1/width``, zero bias."""
        w = self.width
        return {"weight": rng.standard_normal((w, w)) / w, "bias": np.zeros(self.parameter_shapes()["bias"])}

    def forward(self, u: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Return ``sigma(u W^T + b)``."""
        return activate(self.activation, u @ params["weight"].T + params["bias"])

    def vjp(
        self, u: np.ndarray, params: Mapping[str, np.ndarray], v: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Return ``(s W, {"weight": s^T u, "bias": sum of s})`` with ``s = sigma'(u W^T + b) * v``."""
        W = params["weight"]
        s = activate_derivative(self.activation, u @ W.T + params["bias"]) * v
        bias = s.sum(axis=0) if self.bias == "channel" else np.array(s.sum())
        return s @ W, {"weight": s.T @ u, "bias": bias}

    def config(self) -> dict[str, Any]:
        """Return ``{"width", "activation", "bias"}``."""
        return {"width": self.width, "activation": self.activation, "bias": self.bias}


class Conv1d(Layer):
    """``F(u) = sigma(conv(u, W) + b)`` on ``(batch, channels, length)`` states.

    A one-dimensional convolution with ``channels`` input and output channels,
    an odd ``kernel_size`` and zero padding that keeps the length ("same"):
    ``z[n, o, i] = b[o] + sum_{c, j} W[o, c, j] u[n, c, i + j - kernel_size // 2]``
    (cross-correlation, as in PyTorch's ``Conv1d``), ``u`` read as zero outside
    ``0 .. length - 1``.

    Parameters
    ----------
    channels, length : int
        The state of one sample is ``(channels, length)``: the network's
        ``width`` is ``channels * length`` (its opening layer's output and its
        classifier's input are the flattened state).
    kernel_size : int, default 3
        Odd, >= 1.
    activation : {"smooth_relu", "tanh", "relu"}, default "tanh"

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid import nn
    >>> from pyxbraid.testing import check_layer
    >>> layer = nn.Conv1d(channels=2, length=5, kernel_size=3)
    >>> layer.parameter_shapes()
    {'weight': (2, 2, 3), 'bias': (2,)}
    >>> bool(check_layer(layer))            # vjp against finite differences of forward
    True
    >>> net = nn.ResNet(in_features=2, width=10, depth=8, classes=5, layer=layer)
    >>> net.num_parameters                  # opening 10x2+10, 8 x (12 + 2), classifier 5x10+5
    197
    """

    def __init__(self, channels: int, length: int, kernel_size: int = 3, activation: str = "tanh") -> None:
        channels = _int_at_least("channels", channels, 1)
        length = _int_at_least("length", length, 1)
        super().__init__(state_shape=(channels, length))
        kernel_size = _int_at_least("kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (zero padding that keeps the length), got {kernel_size}")
        self.channels, self.length, self.kernel_size = channels, length, kernel_size
        self.activation = _choice("activation", activation, ACTIVATIONS)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Return ``{"weight": (channels, channels, kernel_size), "bias": (channels,)}``."""
        c, k = self.channels, self.kernel_size
        return {"weight": (c, c, k), "bias": (c,)}

    def init_parameters(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Return weights normal with standard deviation ``1 / (channels * kernel_size)`` and zero bias."""
        c, k = self.channels, self.kernel_size
        return {"weight": rng.standard_normal((c, c, k)) / (c * k), "bias": np.zeros(c)}

    def _padded(self, u: np.ndarray) -> np.ndarray:
        """Return ``u`` with ``kernel_size // 2`` zeros on both ends of its length axis."""
        p = self.kernel_size // 2
        out = np.zeros((u.shape[0], self.channels, self.length + 2 * p))
        out[:, :, p : p + self.length] = u
        return out

    def _preactivation(self, padded: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
        # z[n] = b + sum_j W[:, :, j] @ padded[n, :, j : j + length]: one batched matrix product per tap
        W, length = params["weight"], self.length
        z = np.matmul(W[:, :, 0], padded[:, :, 0:length])
        for j in range(1, self.kernel_size):
            z += np.matmul(W[:, :, j], padded[:, :, j : j + length])
        z += params["bias"][None, :, None]
        return z

    def forward(self, u: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
        """Return ``sigma(conv(u, W) + b)``."""
        return activate(self.activation, self._preactivation(self._padded(u), params))

    def vjp(
        self, u: np.ndarray, params: Mapping[str, np.ndarray], v: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Return the transposed convolution of ``s = sigma'(z) * v`` and the weight and bias gradients."""
        padded = self._padded(u)
        s = activate_derivative(self.activation, self._preactivation(padded, params)) * v  # (n, o, i)
        W, length, p = params["weight"], self.length, self.kernel_size // 2
        grad_w = np.empty_like(W)
        grad_padded = np.zeros_like(padded)
        for j in range(self.kernel_size):  # tap j: z[n, o, i] += W[o, c, j] padded[n, c, i + j]
            window = padded[:, :, j : j + length]
            # sum over samples of (o, i) @ (i, c): batched small products (a BLAS GEMM over n * length
            # is slower here, and multi-threaded BLAS fights the MPI ranks for the cores)
            grad_w[:, :, j] = np.matmul(s, window.transpose(0, 2, 1)).sum(axis=0)
            grad_padded[:, :, j : j + length] += np.matmul(W[:, :, j].T, s)
        return grad_padded[:, :, p : p + length], {"weight": grad_w, "bias": s.sum(axis=(0, 2))}

    def config(self) -> dict[str, Any]:
        """Return ``{"channels", "length", "kernel_size", "activation"}``."""
        return {
            "channels": self.channels,
            "length": self.length,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
        }


# Built-in layers are saved under their public names and rebuilt by ResNet.load
# from the saved config; a user-defined layer must be handed to load().
_BUILTIN_NAMES: dict[type, str] = {Dense: "pyxbraid.nn.Dense", Conv1d: "pyxbraid.nn.Conv1d"}
BUILTIN_LAYERS: dict[str, type[Layer]] = {name: cls for cls, name in _BUILTIN_NAMES.items()}
