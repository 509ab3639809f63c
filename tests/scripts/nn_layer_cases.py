"""Shared numpy layers of the nn.Layer tests (imported by tests/test_nn_layers.py and its MPI jobs).

``Block`` is a nontrivial user-defined layer (a two-layer perceptron with a
scalar gain: F(u) = g * W2 tanh(W1 u + b1)), written against the documented
protocol only; ``Failing`` raises in forward or vjp of one layer index on
purpose; the ``Broken*`` layers break the protocol in one way each.
"""

from __future__ import annotations

import numpy as np

from pyxbraid import nn


class Boom(RuntimeError):
    """Raised on purpose by a failing layer."""


class Block(nn.Layer):
    """F(u) = g * W2 tanh(W1 u + b1): parameters w1 (hidden, width), b1 (hidden,), w2 (width, hidden), g ()."""

    def __init__(self, width, hidden=3):
        super().__init__(state_shape=(width,))
        self.width, self.hidden = width, hidden

    def parameter_shapes(self):
        return {"w1": (self.hidden, self.width), "b1": (self.hidden,), "w2": (self.width, self.hidden), "g": ()}

    def init_parameters(self, rng):
        return {
            "w1": rng.standard_normal((self.hidden, self.width)) / self.width,
            "b1": 0.1 * rng.standard_normal(self.hidden),
            "w2": rng.standard_normal((self.width, self.hidden)) / self.hidden,
            "g": np.array(1.0),
        }

    def forward(self, u, params):
        return params["g"] * np.tanh(u @ params["w1"].T + params["b1"]) @ params["w2"].T

    def vjp(self, u, params, v):
        a = np.tanh(u @ params["w1"].T + params["b1"])
        y = a @ params["w2"].T
        da = params["g"] * (v @ params["w2"])
        s = (1.0 - a * a) * da
        return s @ params["w1"], {
            "w1": s.T @ u,
            "b1": s.sum(axis=0),
            "w2": params["g"] * (v.T @ a),
            "g": np.array(np.sum(v * y)),
        }

    def config(self):
        return {"width": self.width, "hidden": self.hidden}


class Failing(nn.Dense):
    """A Dense layer that fails where its bias[0] is ``marker``.

    It raises Boom in forward or vjp (``when``), or (``when="nangrad"``) returns an infinite bias gradient.
    """

    def __init__(self, width, when, marker):
        super().__init__(width, activation="tanh")
        self.when, self.marker = when, marker

    def _check(self, params, what):
        if self.when == what and params["bias"][0] == self.marker:
            raise Boom(f"{what} of a layer failed on purpose")

    def forward(self, u, params):
        self._check(params, "forward")
        return super().forward(u, params)

    def vjp(self, u, params, v):
        self._check(params, "vjp")
        du, grads = super().vjp(u, params, v)
        if self.when == "nangrad" and params["bias"][0] == self.marker:
            grads = {**grads, "bias": np.full_like(grads["bias"], np.inf)}
        return du, grads


def broken(kind):
    """A Dense(3) layer that breaks the protocol: ``kind`` names how."""

    class Broken(nn.Dense):
        def forward(self, u, params):
            y = super().forward(u, params)
            if kind == "forward_shape":
                return y[:, :2]
            if kind == "forward_float32":
                return y.astype(np.float32)
            if kind == "forward_none":
                return None
            if kind == "forward_list":
                return y.tolist()
            if kind == "forward_writes_u":
                u[...] = 0.0
            return y

        def vjp(self, u, params, v):
            du, grads = super().vjp(u, params, v)
            if kind == "vjp_not_pair":
                return du
            if kind == "vjp_state_shape":
                return du[:1], grads
            if kind == "vjp_int":
                return du.astype(np.int64), grads
            if kind == "vjp_missing":
                return du, {"weight": grads["weight"]}
            if kind == "vjp_unknown":
                return du, {**grads, "extra": grads["bias"]}
            if kind == "vjp_param_shape":
                return du, {**grads, "weight": grads["weight"].ravel()}
            if kind == "vjp_list":
                return du, [grads["weight"], grads["bias"]]
            return du, grads

    Broken.__name__ = Broken.__qualname__ = f"Broken_{kind}"
    return Broken(3, activation="tanh")
