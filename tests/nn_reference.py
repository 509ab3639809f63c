"""Plain numpy forward propagation and backpropagation of pyxbraid.nn.ResNet.

Written independently of the package (only its documented parameter names and
formulas), as the reference the native layers and the MGRIT/adjoint training
modes are checked against.
"""

from __future__ import annotations

import numpy as np

EPS = 0.1  # smooth_relu's quadratic piece spans (-EPS, EPS)


def act(z, kind):
    if kind == "tanh":
        return np.tanh(z)
    if kind == "relu":
        return np.maximum(z, 0.0)
    return np.where(z <= -EPS, 0.0, np.where(z >= EPS, z, (z + EPS) ** 2 / (4 * EPS)))


def dact(z, kind):
    if kind == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if kind == "relu":
        return (z > 0).astype(float)
    return np.where(z <= -EPS, 0.0, np.where(z >= EPS, 1.0, (z + EPS) / (2 * EPS)))


def _bias(b, k, scalar):
    return b[k] if scalar else b[k][None, :]


def loss_and_gradient(P, x, y, config):
    """Mean softmax cross-entropy + regularisation, and its gradient by backpropagation."""
    c = config
    h = c.T / c.depth
    scalar = c.bias == "scalar"
    W, b = P["layers.weight"], P["layers.bias"]
    if c.opening == "dense":
        z0 = x @ P["opening.weight"].T + P["opening.bias"]
        u = act(z0, c.activation)
    else:
        u = np.zeros((x.shape[0], c.width))
        u[:, : x.shape[1]] = x
    states, pre = [u], []
    for k in range(c.depth):
        z = u @ W[k].T + _bias(b, k, scalar)
        pre.append(z)
        u = u + h * act(z, c.activation)
        states.append(u)
    logits = u @ P["classifier.weight"].T + P["classifier.bias"]
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    n = x.shape[0]
    loss = float(np.mean(lse - logits[np.arange(n), y]))

    G = {k: np.zeros_like(v) for k, v in P.items()}
    g = np.exp(logits - m) / np.exp(logits - m).sum(axis=1, keepdims=True)
    g[np.arange(n), y] -= 1.0
    g /= n
    G["classifier.weight"] = g.T @ u
    G["classifier.bias"] = g.sum(axis=0)
    lam = g @ P["classifier.weight"]
    for k in reversed(range(c.depth)):
        s = h * dact(pre[k], c.activation) * lam
        G["layers.weight"][k] = s.T @ states[k]
        G["layers.bias"][k] = s.sum() if scalar else s.sum(axis=0)
        lam = lam + s @ W[k]
    if c.opening == "dense":
        s = dact(z0, c.activation) * lam
        G["opening.weight"] = s.T @ x
        G["opening.bias"] = np.array(s.sum()) if scalar else s.sum(axis=0)

    # Regularisation: Tikhonov on everything, smoothness on consecutive residual layers.
    if c.tikhonov:
        for k in P:
            loss += 0.5 * c.tikhonov * float(np.sum(P[k] ** 2))
            G[k] = G[k] + c.tikhonov * P[k]
    if c.smoothness and c.depth > 1:
        dW, db = np.diff(W, axis=0) / h, np.diff(b, axis=0) / h
        loss += 0.5 * c.smoothness * (float(np.sum(dW**2)) + float(np.sum(db**2)))
        gW, gb = np.zeros_like(W), np.zeros_like(b)
        gW[1:] += dW / h
        gW[:-1] -= dW / h
        gb[1:] += db / h
        gb[:-1] -= db / h
        G["layers.weight"] = G["layers.weight"] + c.smoothness * gW
        G["layers.bias"] = G["layers.bias"] + c.smoothness * gb
    return loss, G


def forward_logits(P, x, config):
    c = config
    h = c.T / c.depth
    if c.opening == "dense":
        u = act(x @ P["opening.weight"].T + P["opening.bias"], c.activation)
    else:
        u = np.zeros((x.shape[0], c.width))
        u[:, : x.shape[1]] = x
    for k in range(c.depth):
        u = u + h * act(u @ P["layers.weight"][k].T + _bias(P["layers.bias"], k, c.bias == "scalar"), c.activation)
    return u @ P["classifier.weight"].T + P["classifier.bias"]


def max_relative_error(A, B):
    """Max over names of ||A - B|| / ||B|| (B the reference)."""
    return max(float(np.linalg.norm(A[k] - B[k]) / max(np.linalg.norm(B[k]), 1e-300)) for k in B)


def loss_and_gradient_with_layer(P, x, y, config, layer):
    """Backpropagation through a ResNet whose residual function is a numpy layer (the nn.Layer protocol).

    The residual layers use only the documented protocol -- ``layer.forward(u, params)``
    and ``layer.vjp(u, params, v)`` on states of shape ``(n, *layer.state_shape)``,
    with ``params`` taken from ``P["layers.<name>"][k]`` -- and the opening layer,
    classifier and regularisation are the formulas of ``loss_and_gradient``:
    the reference for the engine's Python-App path in every training mode.
    """
    c = config
    h = c.T / c.depth
    n = x.shape[0]
    shape = (n, *layer.state_shape)
    names = [k[len("layers.") :] for k in P if k.startswith("layers.")]
    theta = lambda k: {name: P[f"layers.{name}"][k] for name in names}
    if c.opening == "dense":
        z0 = x @ P["opening.weight"].T + P["opening.bias"]
        u = act(z0, c.activation).reshape(shape)
    else:
        u = np.zeros((n, c.width))
        u[:, : x.shape[1]] = x
        u = u.reshape(shape)
    states = [u]
    for k in range(c.depth):
        u = u + h * layer.forward(u, theta(k))
        states.append(u)
    flat = u.reshape(n, c.width)
    logits = flat @ P["classifier.weight"].T + P["classifier.bias"]
    m = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=1)) + m[:, 0]
    loss = float(np.mean(lse - logits[np.arange(n), y]))

    G = {k: np.zeros_like(v) for k, v in P.items()}
    g = np.exp(logits - m) / np.exp(logits - m).sum(axis=1, keepdims=True)
    g[np.arange(n), y] -= 1.0
    g /= n
    G["classifier.weight"] = g.T @ flat
    G["classifier.bias"] = g.sum(axis=0)
    lam = (g @ P["classifier.weight"]).reshape(shape)
    for k in reversed(range(c.depth)):
        du, dp = layer.vjp(states[k], theta(k), lam)
        for name in names:
            G[f"layers.{name}"][k] = h * dp[name]
        lam = lam + h * du
    if c.opening == "dense":
        s = dact(z0, c.activation) * lam.reshape(n, c.width)
        G["opening.weight"] = s.T @ x
        G["opening.bias"] = np.array(s.sum()) if c.bias == "scalar" else s.sum(axis=0)

    if c.tikhonov:
        for k in P:
            loss += 0.5 * c.tikhonov * float(np.sum(P[k] ** 2))
            G[k] = G[k] + c.tikhonov * P[k]
    if c.smoothness and c.depth > 1:
        for name in names:
            d = np.diff(P[f"layers.{name}"], axis=0) / h
            loss += 0.5 * c.smoothness * float(np.sum(d**2))
            gd = np.zeros_like(P[f"layers.{name}"])
            gd[1:] += d / h
            gd[:-1] -= d / h
            G[f"layers.{name}"] = G[f"layers.{name}"] + c.smoothness * gd
    return loss, G


def conv1d_reference(u, W, b, activation):
    """``sigma(conv(u, W) + b)`` with 'same' zero padding, by explicit loops (no numpy vectorisation tricks)."""
    n, C, L = u.shape
    K = W.shape[2]
    p = K // 2
    z = np.zeros((n, C, L))
    for i in range(n):
        for o in range(C):
            for t in range(L):
                total = b[o]
                for c in range(C):
                    for j in range(K):
                        s = t + j - p
                        if 0 <= s < L:
                            total += W[o, c, j] * u[i, c, s]
                z[i, o, t] = total
    return act(z, activation), z


def conv1d_vjp_reference(u, W, b, v, activation):
    """The vector-Jacobian products of conv1d_reference, by explicit loops."""
    _, z = conv1d_reference(u, W, b, activation)
    s = dact(z, activation) * v
    n, C, L = u.shape
    K = W.shape[2]
    p = K // 2
    gu, gW = np.zeros_like(u), np.zeros_like(W)
    for i in range(n):
        for o in range(C):
            for t in range(L):
                for c in range(C):
                    for j in range(K):
                        q = t + j - p
                        if 0 <= q < L:
                            gu[i, c, q] += W[o, c, j] * s[i, o, t]
                            gW[o, c, j] += s[i, o, t] * u[i, c, q]
    return gu, {"weight": gW, "bias": s.sum(axis=(0, 2))}
