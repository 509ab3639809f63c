"""The residual network: architecture, parameters, their distribution over ranks, save/load."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from .. import _core
from ..errors import CallbackError, _Agreed
from ._apps import LayerBatch, NativeBatch
from ._files import NpzReader, atomic_write
from .layers import BUILTIN_LAYERS, Layer, LayerSpec, readonly, spec_of

__all__ = ["ResNet"]

_ACTIVATIONS = ("tanh", "relu", "smooth_relu")
_FORMAT = "pyxbraid.nn.ResNet/1"
_LAYER_KEYS = ("type", "config", "state_shape", "parameters")
# The engine indexes sizes with C ints; the depth + 1 time points must fit too.
INDEX_MAX = 2**31 - 1
DEPTH_MAX = 2**31 - 2
_TINY = float(np.finfo(np.float64).tiny)  # smallest normal double


def _positive_int(name: str, value: Any, minimum: int = 1, maximum: int = INDEX_MAX) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum} (the engine's index limit), got {value}")
    return value


def _available_memory() -> int | None:
    """Bytes of memory a new allocation can get without swapping (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _real(name: str, value: Any) -> float:
    """Return ``value`` as a float; TypeError naming ``name`` unless it is a real number (a bool is not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _nonnegative(name: str, value: Any) -> float:
    v = _real(name, value)
    if not (np.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


@dataclass(frozen=True)
class _Config:
    in_features: int
    width: int
    depth: int
    classes: int
    T: float
    activation: str
    opening: str
    bias: str
    tikhonov: float
    smoothness: float
    seed: int
    dtype: str = "float64"  # of the engine's states (the parameters are float64 either way)


def _validated_config(
    in_features: Any,
    width: Any,
    depth: Any,
    classes: Any,
    T: Any = 1.0,
    activation: Any = "smooth_relu",
    opening: Any = "dense",
    bias: Any = "channel",
    tikhonov: Any = 0.0,
    smoothness: Any = 0.0,
    seed: Any = 0,
    dtype: Any = "float64",
    layer: LayerSpec | None = None,
) -> _Config:
    """Check a network's arguments (no allocation): TypeError / ValueError naming the argument.

    ``layer``: the checked definition of a numpy layer (None: the native dense layer).
    """
    in_features = _positive_int("in_features", in_features)
    width = _positive_int("width", width)
    depth = _positive_int("depth", depth, maximum=DEPTH_MAX)
    classes = _positive_int("classes", classes, 2)
    t = _real("T", T)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"T must be finite and > 0, got {T!r}")
    if t / depth < _TINY:
        # A subnormal step loses the precision the engine needs to tell the
        # layers apart (layer k ends at time (k + 1) h).
        raise ValueError(
            f"T={T!r} is too small for depth={depth}: the step h = T / depth = {t / depth!r} "
            f"is subnormal or zero; T must be >= depth * {_TINY!r}"
        )
    if layer is not None and math.prod(layer.state_shape) != width:
        raise ValueError(
            f"width must be the size of the layer's state_shape {layer.state_shape}, "
            f"{math.prod(layer.state_shape)}, got width={width}"
        )
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, _ACTIVATIONS))}, got {activation!r}")
    if not isinstance(opening, str) or opening not in ("dense", "zero_pad"):
        raise ValueError(f"opening must be 'dense' or 'zero_pad', got {opening!r}")
    if opening == "zero_pad" and width < in_features:
        raise ValueError(f"opening='zero_pad' needs width >= in_features, got width={width}, in_features={in_features}")
    if not isinstance(bias, str) or bias not in ("channel", "scalar"):
        raise ValueError(f"bias must be 'channel' or 'scalar', got {bias!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    state_dtype = _state_dtype(dtype)
    if state_dtype != "float64" and layer is not None:
        raise ValueError(
            f"dtype={dtype!r} needs the native dense layer: a numpy layer runs in float64 (pass dtype='float64')"
        )
    config = _Config(
        in_features,
        width,
        depth,
        classes,
        t,
        activation,
        opening,
        bias,
        _nonnegative("tikhonov", tikhonov),
        _nonnegative("smoothness", smoothness),
        int(seed),
        state_dtype,
    )
    # The whole network is built on every rank before it is distributed: its
    # values and gradient must fit (a MemoryError deep in the engine, or the
    # kernel's OOM killer, would be the alternative).
    n = _num_parameters(config, layer)
    available = _available_memory()
    if available is not None and 16 * n > available:
        raise ValueError(
            f"a ResNet with in_features={in_features}, width={width}, depth={depth}, classes={classes} "
            f"has {n:,} parameters, whose values and gradient need {16 * n / 2**30:.3g} GiB, more than "
            f"the {available / 2**30:.3g} GiB of memory available"
        )
    return config


def _state_dtype(dtype: Any) -> str:
    """Return "float64" or "float32" for ``dtype`` (a name or a numpy dtype); ValueError naming it otherwise."""
    try:
        name = np.dtype(dtype).name if dtype is not None else None
    except (TypeError, ValueError):
        name = None
    if name not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return name


def _native_spec(c: _Config) -> LayerSpec:
    """Return the native dense layer's definition (``u W^T + b``: parameters ``weight``, ``bias``)."""
    return LayerSpec(
        (c.width,), {"weight": (c.width, c.width), "bias": (c.width,) if c.bias == "channel" else ()}, None
    )


def _opening_size(c: _Config) -> int:
    """Return the number of parameters of the opening layer (0 for zero padding)."""
    return c.width * c.in_features + (1 if c.bias == "scalar" else c.width) if c.opening == "dense" else 0


def _num_parameters(c: _Config, layer: LayerSpec | None = None) -> int:
    spec = _native_spec(c) if layer is None else layer
    return _opening_size(c) + c.depth * spec.size + c.classes * c.width + c.classes


def _config_from_json(data: Any, layer: LayerSpec | None = None) -> _Config:
    """Check a saved configuration (a JSON object): exactly the known keys, JSON types, then the usual checks."""
    fields = {f.name: f.type for f in dataclasses.fields(_Config)}
    if not isinstance(data, dict):
        raise ValueError(f"config must be a JSON object, got {type(data).__name__}")
    missing = [k for k in fields if k not in data and k != "dtype"]  # files before dtype: float64
    unknown = sorted(k for k in data if k not in fields)
    if missing:
        raise ValueError(f"config is missing {', '.join(map(repr, missing))}")
    if unknown:
        raise ValueError(f"config has unknown key(s) {', '.join(map(repr, unknown))}")
    for key, kind in fields.items():
        if key not in data:
            continue
        v = data[key]
        ok = (
            (isinstance(v, int) and not isinstance(v, bool))
            if kind == "int"
            else (isinstance(v, (int, float)) and not isinstance(v, bool))
            if kind == "float"
            else isinstance(v, str)
        )
        if not ok:
            expected = {"int": "an integer", "float": "a number"}.get(str(kind), "a string")
            raise ValueError(f"config[{key!r}] must be {expected}, got {v!r}")
    try:
        return _validated_config(**data, layer=layer)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config: {exc}") from None


@dataclass(frozen=True)
class _Layout:
    """What one rank stores: residual layers [lo, hi) and possibly the end layers.

    Residual layer k maps time index k to k + 1 and is stored by the rank that
    owns index k + 1 in the engine's block distribution of the depth + 1 time
    points; the opening layer lives with index 0, the classifier with index depth.
    """

    rank: int
    size: int
    lo: int
    hi: int
    has_opening: bool
    has_classifier: bool

    @staticmethod
    def of(depth: int, rank: int, size: int) -> _Layout:
        ilower, iupper = _core.block_interval(depth + 1, size, rank)
        return _Layout(rank, size, max(ilower, 1) - 1, iupper, ilower == 0, iupper == depth)


class ResNet:
    """A residual network whose hidden layers are forward-Euler steps of an ODE.

    ``u_0 = opening(x)``, ``u_{k+1} = u_k + h F(u_k; theta_k)`` for
    ``k = 0 .. depth-1`` with ``h = T / depth``, and class scores
    ``W_c u_depth + b_c`` trained with softmax cross-entropy (Günther,
    Ruthotto, Schroder, Cyr, Gauger, SIMODS 2020). The hidden layers are the
    time steps that :class:`pyxbraid.nn.Trainer` runs with MGRIT, layer-parallel
    over MPI ranks. The residual function is the native dense layer
    ``F(u; W, b) = sigma(W u + b)`` (C++ kernels), or any numpy
    :class:`~pyxbraid.nn.Layer` given as ``layer``.

    Parameters
    ----------
    in_features, width, depth, classes : int
        Input size, entries of the hidden state, number of residual layers
        (time steps) and number of classes (>= 2). With a ``layer``, ``width``
        is the size of its ``state_shape``.
    T : float, default 1.0
        Final time; the step size is ``h = T / depth``.
    activation : {"smooth_relu", "tanh", "relu"}
        ``smooth_relu`` is ``(z + 0.1)^2 / 0.4`` on ``(-0.1, 0.1)`` and ReLU
        outside (continuously differentiable), as in the paper. With a
        ``layer``: the opening layer's activation only.
    opening : {"dense", "zero_pad"}
        ``dense``: ``u_0 = sigma(W_o x + b_o)``; ``zero_pad``: ``x`` copied into
        the first ``in_features`` entries (needs ``width >= in_features``).
        With a ``layer``, the opening's output is reshaped to the layer's
        ``state_shape`` (and the classifier reads the state flattened).
    bias : {"channel", "scalar"}
        One bias per channel in the opening and each residual layer, or one
        scalar per layer (the paper's peaks network: 2012 parameters). With a
        ``layer``: the opening layer's bias only.
    tikhonov : float, default 0.0
        ``tikhonov / 2 * ||theta||^2`` over all weights and biases.
    smoothness : float, default 0.0
        ``gamma_ddt``: ``smoothness / 2 * sum_k ||(theta_k - theta_{k-1}) / h||^2``
        over consecutive residual layers (weights and biases): the time
        derivative of the controls.
    seed : int, default 0
        Initialisation: layer ``k`` draws from ``numpy.random.default_rng([seed, k + 1])``
        (opening: key 0, classifier: key depth + 1), so every rank count gives
        the same network. Weights are normal with standard deviation
        ``1/sqrt(fan_in)`` (opening, classifier) and ``1/width`` (residual
        layers, small so that the initial flow is close to the identity);
        biases start at zero. A ``layer`` initialises its own parameters
        (:meth:`Layer.init_parameters`, from the same generator).
    layer : Layer, optional
        The residual function in numpy (see :class:`~pyxbraid.nn.Layer`, and
        the built-in :class:`~pyxbraid.nn.Dense` and :class:`~pyxbraid.nn.Conv1d`):
        its parameters are ``layers.<name>`` of shape ``(depth, *shape)``, and
        the engine runs it through its Python-App path, with the same modes,
        distribution, optimisers, files and checkpoints as the native layer.
        None (default): the native dense layer.
    dtype : {"float64", "float32"}, default "float64"
        Element type of the hidden states the engine stores, sends and steps
        (native dense layer only). ``"float32"`` halves the memory and traffic
        of the states and runs the layer kernels in float32 (about twice as
        fast at large batches); the parameters, their gradient, the
        optimisers and files stay float64, and the opening layer, classifier
        and loss are evaluated in float64. Gradients then agree with the
        float64 network to float32 accuracy (relative ~1e-5), not to 1e-10.

    Attributes
    ----------
    config
        The architecture (without the layer): in_features, width, depth,
        classes, T, activation, opening, bias, tikhonov, smoothness, seed, dtype.
    layer : Layer or None
        The numpy layer, or None for the native dense layer.

    Examples
    --------
    >>> from pyxbraid import nn
    >>> net = nn.ResNet(in_features=2, width=8, depth=30, classes=5, bias="scalar")
    >>> net.num_parameters    # the paper's peaks network
    2012
    >>> net.parameters()["layers.weight"].shape
    (30, 8, 8)
    >>> conv = nn.ResNet(in_features=2, width=8, depth=30, classes=5, layer=nn.Conv1d(2, 4))
    >>> conv.state_shape, conv.parameters()["layers.weight"].shape
    ((2, 4), (30, 2, 2, 3))
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        classes: int,
        T: float = 1.0,
        *,
        activation: str = "smooth_relu",
        opening: str = "dense",
        bias: str = "channel",
        tikhonov: float = 0.0,
        smoothness: float = 0.0,
        seed: int = 0,
        layer: Layer | None = None,
        dtype: str = "float64",
    ) -> None:
        spec = None if layer is None else spec_of(layer)
        self.config = _validated_config(
            in_features, width, depth, classes, T, activation, opening, bias, tikhonov, smoothness, seed, dtype, spec
        )
        self.layer = layer
        self._layer_spec = _native_spec(self.config) if spec is None else spec
        self._comm: Any = None
        self._set_layout(_Layout.of(self.config.depth, 0, 1))
        self._initialise()

    # -- structure -----------------------------------------------------------------
    @property
    def h(self) -> float:
        """Step size ``T / depth``."""
        return self.config.T / self.config.depth

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters of the whole network."""
        return _num_parameters(self.config, self._layer_spec)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """One sample's hidden state: ``(width,)``, or the layer's ``state_shape``."""
        return self._layer_spec.state_shape

    @property
    def local_parameters(self) -> np.ndarray:
        """Flat vector of this rank's parameters (a view: optimisers update it in place)."""
        return self._values

    @property
    def local_gradient(self) -> np.ndarray:
        """Gradient of this rank's parameters (a view, filled by the engine's adjoint)."""
        return self._gradient

    def batch_app(self, batch: int) -> NativeBatch | LayerBatch:
        """Return the engine's app running this network on batches of ``batch`` samples.

        A :class:`pyxbraid.NativeApp` for the native layer, a :class:`pyxbraid.App`
        (the Python-App path) for a numpy ``layer``; the trainer builds its
        solvers on it.
        """
        return NativeBatch(self, batch) if self.layer is None else LayerBatch(self, batch)

    @property
    def local_num_parameters(self) -> int:
        """Number of parameters stored on this rank."""
        return int(self._values.size)

    @property
    def comm(self) -> Any:
        """Communicator the parameters are distributed over (None: all on every rank)."""
        return self._comm

    @property
    def owned_layers(self) -> range:
        """Residual layers stored and trained on this rank."""
        return range(self._layout.lo, self._layout.hi)

    def _set_layout(self, layout: _Layout) -> None:
        c = self.config
        self._layout = layout
        self._native: _core.ResNetParameters | None = None
        if self.layer is None:
            self._native = native = _core.ResNetParameters(
                c.in_features,
                c.width,
                c.depth,
                c.classes,
                c.T,
                c.activation,
                c.opening == "dense",
                c.bias == "scalar",
                layout.lo,
                layout.hi,
                layout.has_opening,
                layout.has_classifier,
            )
            self._values = native.values  # views on the native vectors: no copies
            self._gradient = native.gradient
            self._opening_replica = native.opening_replica
        else:  # the same layout, in numpy: the Python engine app reads and accumulates here
            self._values = np.zeros(self._local_size(layout))
            self._gradient = np.zeros_like(self._values)
            self._opening_replica = np.zeros(_opening_size(c))
        # views for the numpy layers' engine app, built on first use
        self._view_cache: dict[str, Any] = {}

    def _local_size(self, layout: _Layout) -> int:
        c = self.config
        opening = _opening_size(c) if layout.has_opening else 0
        classifier = c.classes * c.width + c.classes if layout.has_classifier else 0
        return opening + (layout.hi - layout.lo) * self._layer_spec.size + classifier

    def _local_views(self, flat: np.ndarray, layout: _Layout | None = None) -> dict[str, np.ndarray]:
        """Return named views of a flat vector laid out like the parameters of ``layout`` (default: this rank's)."""
        c, lay = self.config, self._layout if layout is None else layout
        w, pos = c.width, 0
        views: dict[str, np.ndarray] = {}
        if lay.has_opening and c.opening == "dense":
            nb = 1 if c.bias == "scalar" else w
            views["opening.weight"] = flat[: w * c.in_features].reshape(w, c.in_features)
            bias = flat[w * c.in_features : w * c.in_features + nb]
            views["opening.bias"] = bias.reshape(()) if c.bias == "scalar" else bias
            pos = w * c.in_features + nb
        nl, ls = lay.hi - lay.lo, self._layer_spec.size
        block = flat[pos : pos + nl * ls].reshape(nl, ls)
        offset = 0
        for name, shape in self._layer_spec.parameters.items():
            size = math.prod(shape)
            # splitting the last axis of a strided block: always a view, never a copy
            views[f"layers.{name}"] = block[:, offset : offset + size].reshape(nl, *shape)
            offset += size
        pos += nl * ls
        if lay.has_classifier:
            views["classifier.weight"] = flat[pos : pos + c.classes * w].reshape(c.classes, w)
            views["classifier.bias"] = flat[pos + c.classes * w : pos + c.classes * w + c.classes]
        return views

    # -- what the numpy layers' engine app reads (cached views; rebuilt with the layout) --------------
    def _views(self) -> dict[str, np.ndarray]:
        """Return the named views of this rank's parameters."""
        if "values" not in self._view_cache:
            self._view_cache["values"] = self._local_views(self._values)
        return self._view_cache["values"]

    def _gradient_views(self) -> dict[str, np.ndarray]:
        """Return the named views of this rank's gradient."""
        if "gradient" not in self._view_cache:
            self._view_cache["gradient"] = self._local_views(self._gradient)
        return self._view_cache["gradient"]

    def _per_layer(self, key: str, source: dict[str, np.ndarray], read_only: bool) -> list[dict[str, np.ndarray]]:
        if key not in self._view_cache:
            # [j, ...]: a 0-d array view for a scalar parameter (indexing [j] would copy it to a scalar)
            names = list(self._layer_spec.parameters)
            self._view_cache[key] = [
                {
                    n: readonly(source[f"layers.{n}"][j, ...]) if read_only else source[f"layers.{n}"][j, ...]
                    for n in names
                }
                for j in range(self._layout.hi - self._layout.lo)
            ]
        return self._view_cache[key]

    def _layer_parameters(self, k: int) -> dict[str, np.ndarray]:
        """Return layer ``k``'s parameters by name (read-only views; ``k`` owned by this rank)."""
        return self._per_layer("layer_values", self._views(), True)[self._owned_index(k)]

    def _layer_gradients(self, k: int) -> dict[str, np.ndarray]:
        """Return the gradient of layer ``k``'s parameters by name (writable views)."""
        return self._per_layer("layer_gradients", self._gradient_views(), False)[self._owned_index(k)]

    def _check_layer_gradient(self) -> None:
        """Raise CallbackError naming the layer and parameter if a numpy layer's gradient is not finite.

        The engine checks the states a layer's ``forward`` and ``vjp`` produce;
        the parameter gradients are only summed here, so they are checked once
        per gradient evaluation (local: call it inside an agreement).
        """
        for name, grad in self._gradient_views().items():
            if name.startswith("layers.") and not np.all(np.isfinite(grad)):
                j = int(np.argwhere(~np.isfinite(grad.reshape(len(grad), -1)))[0][0])
                raise CallbackError(
                    f"{type(self.layer).__name__}.vjp() gave a gradient of {name[len('layers.') :]!r} with NaN "
                    f"or infinite values in residual layer {self._layout.lo + j}"
                )

    def _owned_index(self, k: int) -> int:
        lay = self._layout
        if not lay.lo <= k < lay.hi:
            raise RuntimeError(
                f"residual layer {k} is not stored on this rank (it holds {lay.lo}..{lay.hi - 1}): "
                "a step of another rank's layer"
            )
        return k - lay.lo

    def _initial_layer(self, rng: np.random.Generator, k: int) -> dict[str, np.ndarray]:
        """Return layer ``k``'s initial parameters (the native rule, or the layer's, checked)."""
        c = self.config
        if self.layer is None:
            return {"weight": rng.standard_normal((c.width, c.width)) / c.width, "bias": np.zeros(())}
        name = type(self.layer).__name__
        params = self.layer.init_parameters(rng)
        if not isinstance(params, dict) or set(params) != set(self._layer_spec.parameters):
            got = sorted(map(str, params)) if isinstance(params, dict) else type(params).__name__
            raise TypeError(
                f"{name}.init_parameters() must return a dict with the parameters of parameter_shapes(), "
                f"{sorted(self._layer_spec.parameters)}, got {got}"
            )
        out = {}
        for key, shape in self._layer_spec.parameters.items():
            arr = np.asarray(params[key])
            if arr.dtype.kind not in "fiu" or arr.dtype.fields is not None:
                raise TypeError(f"{name}.init_parameters()[{key!r}] must be a real array, got dtype {arr.dtype}")
            if arr.shape != shape:
                raise ValueError(f"{name}.init_parameters()[{key!r}] must have shape {shape}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}.init_parameters()[{key!r}] (layer {k}) contains NaN or infinite values")
            out[key] = arr
        return out

    def _initialise(self) -> None:
        c, lay = self.config, self._layout
        views = self._local_views(self._values)
        if "opening.weight" in views:
            rng = np.random.default_rng([c.seed, 0])
            views["opening.weight"][:] = rng.standard_normal((c.width, c.in_features)) / np.sqrt(c.in_features)
            views["opening.bias"][...] = 0.0
        for j, k in enumerate(range(lay.lo, lay.hi)):
            params = self._initial_layer(np.random.default_rng([c.seed, k + 1]), k)
            # The weights of a block must not hold a reference to the block
            # (reshape of a strided view may copy): write through the view.
            for name in self._layer_spec.parameters:
                views[f"layers.{name}"][j] = params[name]
        if lay.has_classifier:
            rng = np.random.default_rng([c.seed, c.depth + 1])
            views["classifier.weight"][:] = rng.standard_normal((c.classes, c.width)) / np.sqrt(c.width)
            views["classifier.bias"][:] = 0.0

    # -- distribution -----------------------------------------------------------------
    def distribute(self, comm: Any) -> None:
        """Keep only this rank's part of the parameters (collective over ``comm``).

        Called by :class:`Trainer`. A network whose parameters are all present
        (built here, loaded, or distributed over one rank) can be distributed;
        a network distributed over another communicator must be gathered
        first (``ResNet.load`` of a saved model, or :meth:`parameters`).
        """
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py.MPI.Comm, got {type(comm).__name__}")
        if self._comm is not None:
            if self._comm == comm or MPI.Comm.Compare(self._comm, comm) in (MPI.IDENT, MPI.CONGRUENT):
                return
            raise ValueError(
                "this network is already distributed over another communicator; "
                "save it and load it, or build the Trainer on the same communicator"
            )
        if comm.Get_size() > self.config.depth + 1:
            raise ValueError(
                f"a network of depth {self.config.depth} has {self.config.depth + 1} time points, "
                f"fewer than the {comm.Get_size()} ranks of comm"
            )
        full = self.parameters()
        self._set_layout(_Layout.of(self.config.depth, comm.Get_rank(), comm.Get_size()))
        self._comm = comm
        self._set_local_from_full(full)

    def _set_local_from_full(self, full: dict[str, np.ndarray]) -> None:
        views = self._local_views(self._values)
        lay = self._layout
        for name, view in views.items():
            source = full[name][lay.lo : lay.hi] if name.startswith("layers.") else full[name]
            view[...] = source

    def _local_from_full(self, full: dict[str, np.ndarray], layout: _Layout) -> np.ndarray:
        """Return the flat vector of ``layout``'s part of a whole-network dict."""
        out = np.zeros(self._local_size(layout))
        for name, view in self._local_views(out, layout).items():
            view[...] = full[name][layout.lo : layout.hi] if name.startswith("layers.") else full[name]
        return out

    def scatter(self, full: dict[str, np.ndarray] | None, root: int = 0) -> np.ndarray:
        """Return each rank's flat part of a whole-network dict given on ``root`` (collective when distributed).

        ``full`` has the names and shapes of :meth:`parameters` (on ``root``;
        ignored elsewhere); the result is laid out like :attr:`local_parameters`.
        """
        if self._comm is None or self._comm.Get_size() == 1:
            if full is None:
                raise ValueError("full must be a dict of the network's parameters on the root rank, got None")
            return self._local_from_full(full, self._layout)
        pieces = None
        if self._comm.Get_rank() == root:
            if full is None:
                raise ValueError("full must be a dict of the network's parameters on the root rank, got None")
            size, depth = self._comm.Get_size(), self.config.depth
            pieces = [self._local_from_full(full, _Layout.of(depth, r, size)) for r in range(size)]
        return self._comm.scatter(pieces, root=root)

    def gather(self, local: np.ndarray, root: int = 0) -> dict[str, np.ndarray] | None:
        """Return the whole-network dict of a rank-local flat vector, on ``root`` only (None elsewhere; collective).

        The inverse of :meth:`scatter`; :meth:`full_dict` gives it on every rank.
        """
        local = np.asarray(local, dtype=np.float64)
        if local.shape != self._values.shape:
            raise ValueError(f"local must have shape {self._values.shape} (this rank's parameters), got {local.shape}")
        mine = {k: np.array(v, copy=True) for k, v in self._local_views(local).items()}
        if self._comm is None or self._comm.Get_size() == 1:
            return mine
        pieces = self._comm.gather(mine, root=root)
        return None if pieces is None else _assemble(pieces)

    def parameters(self) -> dict[str, np.ndarray]:
        """Return all parameters by name, on every rank (collective when distributed).

        Returns
        -------
        dict
            ``opening.weight`` (width, in_features) and ``opening.bias`` (width,
            or () for scalar biases) for a dense opening; for the native layer
            ``layers.weight`` (depth, width, width) and ``layers.bias`` (depth,
            width) or (depth,) for scalar biases; for a numpy ``layer``
            ``layers.<name>`` ``(depth, *shape)`` for each of its parameters;
            ``classifier.weight`` (classes, width); ``classifier.bias`` (classes).
            Copies.
        """
        return self.full_dict(self._values)

    def full_dict(self, local: np.ndarray) -> dict[str, np.ndarray]:
        """Assemble a rank-local flat vector into named arrays of the whole network (collective).

        ``local`` is laid out like this rank's parameters: e.g. the gradient
        returned by :meth:`Trainer.loss_and_gradient`. The result has the
        names and shapes of :meth:`parameters`, on every rank.
        """
        local = np.asarray(local, dtype=np.float64)
        if local.shape != self._values.shape:
            raise ValueError(f"local must have shape {self._values.shape} (this rank's parameters), got {local.shape}")
        mine = {k: np.array(v, copy=True) for k, v in self._local_views(local).items()}
        if self._comm is None or self._comm.Get_size() == 1:
            return mine
        return _assemble(self._comm.allgather(mine))

    def set_parameters(self, params: dict[str, np.ndarray]) -> None:
        """Set all parameters from a dict shaped like :meth:`parameters` (each rank keeps its part)."""
        expected = _full_shapes(self.config, self._layer_spec)
        for name, shape in expected.items():
            if name not in params:
                raise KeyError(f"params is missing {name!r}")
            arr = np.asarray(params[name])
            if arr.dtype.kind not in "fiu" or arr.dtype.fields is not None:
                raise TypeError(f"params[{name!r}] must be a real (float) array, got dtype {arr.dtype}")
            arr = arr.astype(np.float64, copy=False)
            if arr.shape != shape:
                raise ValueError(f"params[{name!r}] must have shape {shape}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"params[{name!r}] contains NaN or infinite values")
        self._set_local_from_full({k: np.asarray(params[k], dtype=np.float64) for k in expected})

    def sync_opening(self) -> None:
        """Copy the opening layer from its owner to every rank (collective).

        The engine's initial guess at every layer is the opening layer's
        output, so every rank needs it (read-only) before a fresh solve.
        """
        if self._comm is None or self._comm.Get_size() == 1 or self.config.opening != "dense":
            return
        n = self._opening_replica.size
        buf = self._values[:n] if self._layout.has_opening else self._opening_replica
        self._comm.Bcast(buf, root=0)

    # -- regularisation --------------------------------------------------------------
    def regularization(self, grad: np.ndarray) -> float:
        """Return this rank's share of R(theta) and add dR/dtheta of its parameters to ``grad`` (collective).

        ``grad`` is laid out like :attr:`local_parameters`; summing the return
        values over the ranks gives the network's regularisation.

        The smoothness term couples neighbouring layers; the layers next to
        this rank's first and last are exchanged with the neighbours.
        """
        c, lay = self.config, self._layout
        value = 0.0
        if c.tikhonov > 0.0:
            value += 0.5 * c.tikhonov * float(np.dot(self._values, self._values))
            grad += c.tikhonov * self._values
        if c.smoothness > 0.0 and c.depth > 1:
            ls = self._layer_spec.size
            start = _opening_size(c) if lay.has_opening else 0
            mine = self._values[start : start + (lay.hi - lay.lo) * ls].reshape(-1, ls)
            g = grad[start : start + (lay.hi - lay.lo) * ls].reshape(-1, ls)
            left = right = None
            if self._comm is not None and self._comm.Get_size() > 1:
                ends = self._comm.allgather(
                    (lay.lo, lay.hi, mine[0].copy() if len(mine) else None, mine[-1].copy() if len(mine) else None)
                )
                for lo, hi, first, last in ends:
                    if hi == lay.lo and hi > lo:
                        left = last
                    if lo == lay.hi and hi > lo:
                        right = first
            scale = c.smoothness / (self.h * self.h)
            if len(mine):
                # Whole-array form of the per-layer loop (a Python loop cost ~23 ms per gradient at
                # depth 1024). Row j of `diff` is theta_j - theta_{j-1} (the term belongs to layer j's
                # owner; row 0 uses the left neighbour's last layer, if any). Each gradient entry gets
                # the same two updates in the same order as before, so gradients are unchanged bit
                # for bit; the value's per-layer squares come from one einsum (last-bit differences
                # from np.dot per row are possible) and are summed in layer order.
                previous = np.vstack([left[None, :] if left is not None else mine[:1], mine[:-1]])
                diff = mine - previous
                owned = slice(0 if left is not None else 1, None)
                g[owned] += scale * diff[owned]
                if len(mine) > 1:
                    g[:-1] -= scale * diff[1:]
                if right is not None:
                    g[-1] -= scale * (right - mine[-1])
                for square in np.einsum("ij,ij->i", diff[owned], diff[owned]).tolist():
                    value += 0.5 * scale * square
        return value

    # -- files ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the whole network (configuration, layer and parameters) to an ``.npz`` file.

        Collective when distributed: parameters are gathered and rank 0 writes;
        a failure to write raises on every rank (``RemoteRankError`` on the
        others). The file is written to a temporary file in the same folder
        and renamed into place: readers never see half a file, and a symbolic
        link at ``path`` is replaced, not followed. A model saved from any
        number of ranks loads on any number of ranks. A numpy ``layer`` is
        saved as its description (type, :meth:`Layer.config`, state and
        parameter shapes), never as code or a pickle.
        """
        path = Path(path)
        full = self.gather(self._values)
        arrays: dict[str, Any] = {}
        if full is not None:
            arrays = {"format": np.array(_FORMAT), "config": np.array(json.dumps(asdict(self.config)))}
            if self._layer_spec.description is not None:
                arrays["layer"] = np.array(self._layer_spec.description)
            arrays.update({k.replace(".", "__"): v for k, v in full.items()})
        with _agreed(self._comm, f"ResNet.save({str(path)!r})"):
            if full is not None:
                atomic_write(path, lambda fh: np.savez(fh, **arrays))

    @classmethod
    def load(cls, path: str | Path, comm: Any = None, *, layer: Layer | None = None) -> ResNet:
        """Read a network written by :meth:`save`.

        The file is checked before its arrays are read: the format tag, the
        configuration (exactly the known keys, with valid values), the layer,
        and the name, shape and dtype (float64) of every array against what
        the configuration declares -- a damaged or crafted file is a
        ``ValueError`` naming the problem, never a giant allocation.

        Parameters
        ----------
        path : str or Path
            The ``.npz`` file (read on rank 0 of ``comm``).
        comm : mpi4py.MPI.Comm, optional
            Distribute the loaded network over ``comm`` (collective); None:
            every calling process reads the whole network. Any failure on
            rank 0 (missing file, damaged content) raises there and
            :class:`pyxbraid.RemoteRankError` on the other ranks.
        layer : Layer, optional
            The numpy layer of a network saved with a user-defined layer (its
            code is not in the file): it must have the saved type,
            :meth:`Layer.config`, state and parameter shapes. Built-in layers
            (:class:`~pyxbraid.nn.Dense`, :class:`~pyxbraid.nn.Conv1d`) are
            rebuilt from the file without it.

        Raises
        ------
        OSError
            The file cannot be opened.
        ValueError
            The file is not a valid model file, or ``layer`` is not the saved one.

        Examples
        --------
        >>> import tempfile, os
        >>> from pyxbraid import nn
        >>> net = nn.ResNet(2, 4, 6, 3, seed=3)
        >>> path = os.path.join(tempfile.mkdtemp(), "net.npz")
        >>> net.save(path)
        >>> back = nn.ResNet.load(path)
        >>> bool(np.array_equal(back.parameters()["layers.weight"], net.parameters()["layers.weight"]))
        True
        """
        if comm is not None and not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py.MPI.Comm or None, got {type(comm).__name__}")
        payload = None
        with _agreed(comm, f"ResNet.load({str(path)!r}) file"):
            if layer is not None:
                spec_of(layer)  # a broken layer object is this rank's error, named before any reading
            if comm is None or comm.Get_rank() == 0:
                payload = _read_model(path, layer)
        if comm is not None and comm.Get_size() > 1:
            payload = comm.bcast(payload, root=0)
        assert payload is not None
        config, description, params = payload
        with _agreed(comm, "ResNet.load() network"):
            # every rank resolves its own layer object (a user layer is never sent between ranks)
            net = cls(**asdict(config), layer=_layer_for(description, layer, repr(str(path))))
            net.set_parameters(params)
        if comm is not None:
            net.distribute(comm)
        return net

    def __repr__(self) -> str:
        c = self.config
        layer = "" if self.layer is None else f", layer={self.layer!r}"
        dtype = "" if c.dtype == "float64" else f", dtype={c.dtype!r}"
        return (
            f"ResNet(in_features={c.in_features}, width={c.width}, depth={c.depth}, classes={c.classes}, "
            f"T={c.T}, activation={c.activation!r}, opening={c.opening!r}, bias={c.bias!r}{layer}{dtype})"
        )


def _full_shapes(c: _Config, layer: LayerSpec | None = None) -> dict[str, tuple[int, ...]]:
    """Return the shapes of the whole network's named parameters (no allocation)."""
    spec = _native_spec(c) if layer is None else layer
    w = c.width
    shapes: dict[str, tuple[int, ...]] = {}
    if c.opening == "dense":
        shapes["opening.weight"] = (w, c.in_features)
        shapes["opening.bias"] = (w,) if c.bias == "channel" else ()
    for name, shape in spec.parameters.items():
        shapes[f"layers.{name}"] = (c.depth, *shape)
    shapes["classifier.weight"] = (c.classes, w)
    shapes["classifier.bias"] = (c.classes,)
    return shapes


def _assemble(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Return the whole-network dict from the per-rank dicts (in rank order)."""
    full: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(k for piece in pieces for k in piece):  # every name, in order
        if name.startswith("layers."):
            full[name] = np.concatenate([p[name] for p in pieces])
        else:
            full[name] = next(p[name] for p in pieces if name in p)
    return full


def _agreed(comm: Any, what: str) -> Any:
    """Return ``_Agreed`` over ``comm``, or nothing to agree on without one."""
    return contextlib.nullcontext() if comm is None else _Agreed(comm, what)


def _layer_for(description: str | None, given: Layer | None, where: str) -> Layer | None:
    """Return the layer object of a saved network: ``given`` (checked against ``description``) or a built-in.

    ``description`` is the saved canonical JSON (None: the native dense layer).
    Raises ValueError naming the difference.
    """
    if description is None:
        if given is not None:
            raise ValueError(
                f"{where} holds a network with the native dense layer, but layer={given!r} was given; "
                "load it without layer="
            )
        return None
    saved = json.loads(description)
    if given is None:
        cls = BUILTIN_LAYERS.get(saved["type"])
        if cls is None:
            short = str(saved["type"]).rsplit(".", 1)[-1]
            raise ValueError(
                f"{where} holds a network with the user-defined layer {saved['type']!r} (config "
                f"{saved['config']}); its code is not saved: pass layer={short}(...) to ResNet.load"
            )
        if not isinstance(saved["config"], dict):
            raise ValueError(f"{where}: layer config must be a JSON object, got {saved['config']!r}")
        try:
            given = cls(**saved["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: the saved {cls.__name__} layer is invalid ({exc})") from None
    text = spec_of(given).description or "null"
    if text != description:  # canonical JSON: 3 and 3.0, 1 and true differ too
        mine = json.loads(text)
        shown = _differences(saved, mine) or f"{description} saved, {text} given"
        raise ValueError(f"{where} was saved with another layer than layer={given!r}: {shown}")
    return given


def _differences(saved: dict[str, Any], given: dict[str, Any]) -> str:
    """Return the entries of two layer descriptions that differ (one level into dicts), as text."""
    out = []
    for key in _LAYER_KEYS:
        a, b = saved.get(key), given.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}: {a.get(k)!r} saved, {b.get(k)!r} given" for k in {**a, **b} if a.get(k) != b.get(k)]
        else:
            out.append(f"{key}: {a!r} saved, {b!r} given")
    return "; ".join(out)


def _layer_description(data: Any, error: Any) -> str:
    """Check a saved layer description's structure; return its canonical JSON."""
    if not isinstance(data, dict) or sorted(data) != sorted(_LAYER_KEYS):
        raise error(f"layer must be a JSON object with the keys {', '.join(_LAYER_KEYS)}")
    if not isinstance(data["type"], str):
        raise error(f"layer type must be a string, got {data['type']!r}")
    return json.dumps(data, sort_keys=True, allow_nan=False)


def _read_model(path: str | Path, layer: Layer | None) -> tuple[_Config, str | None, dict[str, np.ndarray]]:
    """Return the configuration, layer description and parameters of a model file, checked before data is read."""
    with NpzReader(path, "pyxbraid.nn.ResNet file") as r:
        if "format" not in r.members:
            raise r.error(f"no format tag (expected {_FORMAT!r})")
        tag = r.read_text("format", 256)
        if tag != _FORMAT:
            raise r.error(f"format is {tag!r}, expected {_FORMAT!r}")
        description = None
        spec = None
        if "layer" in r.members:
            description = _layer_description(r.read_json("layer", 1 << 16), r.error)
            obj = _layer_for(description, layer, repr(str(path)))
            spec = spec_of(obj)
        else:
            _layer_for(None, layer, repr(str(path)))
        data = r.read_json("config", 1 << 16)
        try:
            config = _config_from_json(data, spec)
        except ValueError as exc:
            raise r.error(str(exc)) from None
        shapes = _full_shapes(config, spec)
        members = {k.replace(".", "__"): k for k in shapes}
        r.require_members({"format", "config", *members} | ({"layer"} if description is not None else set()))
        for member, name in members.items():  # every header before any data
            shape, dtype = r.header(member)
            if tuple(shape) != shapes[name]:
                raise r.error(
                    f"array {member!r} must have shape {shapes[name]} for the declared configuration, "
                    f"got {tuple(shape)}"
                )
            if dtype.kind != "f" or dtype.itemsize != 8:
                raise r.error(f"array {member!r} must be float64, got dtype {dtype}")
        params = {name: r.read_float64(member, shapes[name]) for member, name in members.items()}
    for name, arr in params.items():
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"{str(path)!r} is not a valid pyxbraid.nn.ResNet file: {name} contains NaN or infinite values"
            )
    return config, description, params
