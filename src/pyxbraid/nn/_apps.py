"""The engine apps of a ResNet for one batch size: native kernels, or numpy layers through the Python-App path.

Both give the :class:`~pyxbraid.nn.Trainer` the same interface -- ``shape``,
``set_batch(x, y)``, ``correct``, ``logits``, ``gradient()`` -- so the trainer
has one code path for both kinds of network:

* :class:`NativeBatch`: the native ``ResNetBatch`` (dense layers in C++, no
  Python per layer).
* :class:`LayerBatch`: a :class:`pyxbraid.App` whose ``step`` and
  ``step_adjoint`` call the network's :class:`~pyxbraid.nn.Layer`
  (``forward``, ``vjp``), and whose ``init`` / ``init_adjoint`` (opening
  layer) and ``objective`` / ``objective_adjoint`` (classifier, softmax
  cross-entropy at the final time) are the native app's arithmetic in numpy.
  Parameters and gradient are the network's flat vectors; a layer's
  parameters are read-only views of them, so an optimiser's in-place update
  is seen by the next step without copies.

Weights of coarse steps: as in the native app, a step from ``t_a`` to ``t_b``
on any level uses the fine layer ending at ``t_b``, which lives on the rank
taking the step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._core import ResNetBatch, ResNetBatch32
from ..app import App, NativeApp
from .layers import activate, activate_derivative, checked_forward, checked_vjp

if TYPE_CHECKING:  # pragma: no cover
    from .network import ResNet

__all__ = ["LayerBatch", "NativeBatch"]


class NativeBatch(NativeApp):
    """A native ResNet on batches of ``batch`` samples (the engine's ``ResNetBatch``)."""

    objective = "cross_entropy"

    def __init__(self, net: ResNet, batch: int) -> None:
        if net._native is None:
            raise TypeError(f"{net!r} has a numpy layer: its engine app is LayerBatch, not NativeBatch")
        self.shape = (batch, net.config.width)
        self.net = net
        # float32 states: the same layers with float32 kernels (parameters stay float64)
        kind = ResNetBatch32 if net.config.dtype == "float32" else ResNetBatch
        self.cpp = kind(net._native, batch)

    def _native(self) -> Any:
        return self.cpp

    def gradient(self) -> np.ndarray:
        """Return this rank's gradient (the network's, filled by the engine)."""
        return self.net.local_gradient

    def set_batch(self, x: np.ndarray, y: np.ndarray | None) -> None:
        """Load inputs (batch, in_features) and labels (batch,) or None (no loss)."""
        self.cpp.set_batch(x, y)

    @property
    def correct(self) -> int:
        """Return the correct predictions of the last objective evaluation (classifier's rank)."""
        return int(self.cpp.correct)

    @property
    def logits(self) -> np.ndarray:
        """Return the class scores of the last objective evaluation, (batch, classes) (classifier's rank)."""
        return np.asarray(self.cpp.logits).reshape(self.shape[0], self.net.config.classes)


class LayerBatch(App):
    """A ResNet with a numpy :class:`~pyxbraid.nn.Layer` on batches of ``batch`` samples (see the module)."""

    def __init__(self, net: ResNet, batch: int) -> None:
        super().__init__(shape=(batch, *net.state_shape))
        if net.layer is None:
            raise TypeError(f"{net!r} has the native layer: its engine app is NativeBatch, not LayerBatch")
        c = net.config
        self.net = net
        self.layer = net.layer
        self.batch = batch
        self._tstart, self._h = 0.0, c.T / c.depth
        self._x = np.zeros((batch, c.in_features))
        self._labels = np.zeros(batch, dtype=np.int64)
        self._has_labels = False
        self._logits = np.zeros((batch, c.classes))
        self._correct = 0
        self.loss = 0.0

    # -- the trainer's interface ----------------------------------------------------------
    def set_batch(self, x: np.ndarray, y: np.ndarray | None) -> None:
        """Load inputs (batch, in_features) and labels (batch,) or None (no loss)."""
        self._x[...] = x
        self._has_labels = y is not None
        if y is not None:
            self._labels[...] = y

    @property
    def correct(self) -> int:
        """Return the correct predictions of the last objective evaluation (classifier's rank)."""
        return self._correct

    @property
    def logits(self) -> np.ndarray:
        """Return the class scores of the last objective evaluation, (batch, classes) (classifier's rank)."""
        return self._logits.copy()

    def gradient(self) -> np.ndarray:
        """Return this rank's gradient (the network's flat vector, accumulated here)."""
        return self.net.local_gradient

    # -- helpers -------------------------------------------------------------------------------
    def _layer_of(self, status: Any) -> int:
        """Return the fine layer ending at the step's tstop (the weights of a step on any level)."""
        return round((status.tstop - self._tstart) / self._h) - 1

    def _opening(self, replica: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the opening's pre-activation z = x W^T + b and its W, b (own values or the replica)."""
        c, net = self.net.config, self.net
        if replica:
            flat = net._opening_replica
            nw = c.width * c.in_features
            W, b = flat[:nw].reshape(c.width, c.in_features), flat[nw:]
            b = b.reshape(()) if c.bias == "scalar" else b
        else:
            views = net._views()
            W, b = views["opening.weight"], views["opening.bias"]
        return self._x @ W.T + b, W, b

    def _at_final_time(self, t: float) -> bool:
        T = self.net.config.T
        return abs(t - T) <= 1e-9 * max(1.0, abs(T))

    # -- callbacks --------------------------------------------------------------------------------
    def init(self, t: float, u: np.ndarray) -> None:
        """Fill ``u`` with the opening layer's output (the initial condition, and the guess elsewhere)."""
        c, net = self.net.config, self.net
        flat = u.reshape(self.batch, c.width)
        if c.opening == "zero_pad":
            flat[...] = 0.0
            flat[:, : c.in_features] = self._x
            return
        # Ranks without the opening layer use the replica the trainer broadcasts
        # (as the native app), so the iterate does not depend on the rank count.
        z, _, _ = self._opening(replica=not (t == self._tstart or net._layout.has_opening))
        flat[...] = activate(c.activation, z)

    def init_adjoint(self, t: float, u_bar: np.ndarray, status: Any) -> None:
        """Add the opening layer's parameter gradient for ``u_bar = dJ/du_0``."""
        c = self.net.config
        if t != self._tstart or c.opening != "dense":
            return
        z, _, _ = self._opening(replica=False)
        s = activate_derivative(c.activation, z) * u_bar.reshape(self.batch, c.width)
        grads = self.net._gradient_views()
        grads["opening.weight"] += s.T @ self._x
        grads["opening.bias"] += s.sum(axis=0) if c.bias == "channel" else s.sum()

    def step(self, u: np.ndarray, ustop: np.ndarray, fstop: np.ndarray | None, status: Any) -> None:
        """Advance ``u`` by ``h F_k(u)`` with the layer's :meth:`~pyxbraid.nn.Layer.forward`."""
        net = self.net
        k = self._layer_of(status)
        y = checked_forward(self.layer, u, net._layer_parameters(k))
        u += (status.tstop - status.tstart) * y

    def step_adjoint(
        self, u: np.ndarray, ustop: np.ndarray, u_bar: np.ndarray, ustop_bar: np.ndarray, status: Any
    ) -> None:
        """Backpropagate ``u_bar`` through one step with the layer's :meth:`~pyxbraid.nn.Layer.vjp`."""
        net = self.net
        k = self._layer_of(status)
        h = status.tstop - status.tstart
        g_u, g_params = checked_vjp(self.layer, net._layer_spec, u, net._layer_parameters(k), u_bar)
        for name, grad in net._layer_gradients(k).items():
            grad += h * g_params[name]
        u_bar += h * g_u

    def objective(self, u: np.ndarray, status: Any) -> float:
        """Return the mean softmax cross-entropy at the final time (classifier's rank); count correct predictions."""
        net = self.net
        if not self._at_final_time(status.tstart) or not net._layout.has_classifier:
            return 0.0
        views = net._views()
        flat = u.reshape(self.batch, net.config.width)
        logits = flat @ views["classifier.weight"].T + views["classifier.bias"]
        self._logits[...] = logits
        if not self._has_labels:
            self._correct, self.loss = 0, 0.0
            return 0.0
        best = logits.max(axis=1)
        rows = np.arange(self.batch)
        self._correct = int(np.count_nonzero(logits.argmax(axis=1) == self._labels))
        lse = np.log(np.exp(logits - best[:, None]).sum(axis=1)) + best  # no overflow for large logits
        self.loss = float(np.sum(lse - logits[rows, self._labels])) / self.batch
        return self.loss

    def objective_adjoint(self, u: np.ndarray, u_bar: np.ndarray, f_bar: float, status: Any) -> None:
        """Set ``u_bar`` to the cross-entropy's gradient times ``f_bar``; add the classifier's gradient."""
        net = self.net
        if not self._at_final_time(status.tstart) or not net._layout.has_classifier or not self._has_labels:
            return
        views, grads = net._views(), net._gradient_views()
        W = views["classifier.weight"]
        flat = u.reshape(self.batch, net.config.width)
        logits = flat @ W.T + views["classifier.bias"]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        g = e / e.sum(axis=1, keepdims=True)
        g[np.arange(self.batch), self._labels] -= 1.0
        g *= f_bar / self.batch
        u_bar.reshape(self.batch, net.config.width)[...] += g @ W
        grads["classifier.weight"] += g.T @ flat
        grads["classifier.bias"] += g.sum(axis=0)

    def reset_gradient(self) -> None:
        """Set this rank's gradient to zero."""
        self.net.local_gradient[...] = 0.0
