"""MG/Opt (Nash) over a hierarchy in depth of PyTorch networks: the V-cycle of ``train_multilevel``.

The algorithm is that of :class:`pyxbraid.nn.MGOpt` (see
:func:`pyxbraid.torch.train_multilevel`'s Notes), on the parameters of a
level held as torch tensors: the shared opening and head (replicated on
every rank) and the rank's own blocks. Every quantity a decision depends on
(the objective, the slope ``<g, e>``) is the same on every rank: the loss is
computed from the allgathered ``u(T)`` on every rank, and dot products are
correctly rounded sums of per-tensor sums gathered from every rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from mpi4py import MPI

from ._hierarchy import Hierarchy
from ._multilevel import _Trainee, buffers, restore

__all__ = ["Objective", "Settings", "coarse_correction", "cycle"]

Values = dict[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Settings:
    """MG/Opt's settings (checked by ``train_multilevel``)."""

    pre: int = 1
    post: int = 1
    coarse_steps: int = 4
    max_backtracks: int = 4
    c1: float = 1e-4
    reset_coarse_optimizer: bool = False  # the coarsest level's optimizer starts afresh every cycle


class Objective:
    """``F(x) = f(x) - <v, x>`` of one level on one batch; remembers the last evaluation.

    ``f`` is the level's loss on the batch ``(x, y)``; ``v`` maps every
    parameter of the level (shared and own blocks) to a tensor, or is None
    (the finest level: ``F = f``).
    """

    def __init__(self, t: _Trainee, x: torch.Tensor, y: torch.Tensor, v: Values | None) -> None:
        self.t, self.x, self.y, self.v = t, x, y, v
        self.cached: tuple[Values, float, Values, torch.Tensor] | None = None

    def _linear(self, f: float, grads: Values) -> tuple[float, Values]:
        if self.v is None:
            return f, grads
        v = self.v
        current = {p: p.detach() for p in self.t.params}
        return f - self.t.dot(v, current), {p: grads[p] - v[p] for p in self.t.params}

    def seed(self, f: float, grads: Values, out: torch.Tensor) -> None:
        """Remember ``f``, its gradient and the outputs at the current parameters, evaluated already."""
        value, g = self._linear(f, grads)
        self.cached = (self.t.values(), value, {p: t.clone() for p, t in g.items()}, out)

    def __call__(self, finite: bool = True) -> tuple[float, Values, torch.Tensor]:
        """Return ``F``, its gradient (per parameter) and the outputs at the current parameters (collective).

        ``finite=False``: a loss that is not finite is returned (NaN or inf), not raised.
        """
        t = self.t
        same = self.cached is not None and all(torch.equal(self.cached[0][p], p) for p in t.params)
        if t.comm.Get_size() > 1:  # every rank decides alike (a rank may hold no block)
            same = bool(t.comm.allreduce(same, op=MPI.LAND))
        if same and self.cached is not None:
            return self.cached[1], self.cached[2], self.cached[3]
        f, out = t.gradient(self.x, self.y, finite)
        value, g = self._linear(f, gradients(t))
        self.cached = (t.values(), value, g, out)
        return value, g, out

    def step(self) -> float:
        """Take one optimizer step on ``F`` from the current parameters; return ``F`` there (collective)."""
        value, g, _ = self()
        for p in self.t.params:
            p.grad = g[p].clone()  # (an optimizer may change .grad in place)
        self.t.step()
        return value


def gradients(t: _Trainee) -> Values:
    """Return copies of the level's parameters' ``.grad`` (zeros where there is none)."""
    return {p: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in t.params}


def coarse_correction(
    trainees: list[_Trainee], hierarchy: Hierarchy, level: int, g: Values, x: torch.Tensor, y: torch.Tensor
) -> tuple[Values, Any]:
    """Restrict level ``level``'s parameters; return the coarse ``v`` and the coarse evaluation at ``R x``.

    Sets the blocks of level ``level + 1`` to ``R x`` (collective); returns ``v = grad f_c(R x) - P^T g``
    (the shared parameters' ``P^T`` is the identity; ``g``: the gradient of level ``level``'s objective)
    and ``(f_c, grad f_c, outputs)`` at ``R x``, on the batch ``(x, y)``.
    """
    t, c = trainees[level], trainees[level + 1]
    hierarchy.restrict(level)
    fc, out = c.gradient(x, y)
    gc = gradients(c)
    restricted = hierarchy.restrict_gradients(level, {p: g[p] for p in t.blocks})
    restricted.update({p: g[p] for p in t.shared})
    v = {p: gc[p] - restricted[p].to(gc[p].dtype) for p in c.params}
    return v, (fc, gc, out)


def cycle(
    trainees: list[_Trainee],
    hierarchy: Hierarchy,
    s: Settings,
    level: int,
    x: torch.Tensor,
    y: torch.Tensor,
    v: Values | None,
    known: tuple[float, Values, torch.Tensor] | None = None,
) -> tuple[float, torch.Tensor]:
    """One V-cycle from ``level`` on the batch ``(x, y)``; return ``F`` and the outputs at its start (collective).

    ``known``: ``f``, its gradient and the outputs at the current parameters, if evaluated already.
    """
    t = trainees[level]
    objective = Objective(t, x, y, v)
    if known is not None:
        objective.seed(*known)
    start, _, out = objective()
    assert t.optimizer is not None
    if level == len(trainees) - 1:
        if s.reset_coarse_optimizer:  # (as nn.MGOpt does; see train_multilevel's Notes for why not by default)
            t.optimizer.state.clear()
        for _ in range(s.coarse_steps):
            objective.step()
        return start, out
    for _ in range(s.pre):
        objective.step()
    f0, g, _ = objective()
    c = trainees[level + 1]
    # the coarse cycle moves the shared parameters (the same tensors on every level): the fine values are kept
    fine_shared = {p: p.detach().clone() for p in t.shared}
    shared_buffers = buffers(t.net.opening, t.net.head)
    vc, evaluated = coarse_correction(trainees, hierarchy, level, g, x, y)
    c0 = c.values()
    cycle(trainees, hierarchy, s, level + 1, x, y, vc, evaluated)
    e = hierarchy.prolong_tensors(level, {p: p.detach() - c0[p] for p in c.blocks})
    e.update({p: p.detach() - fine_shared[p] for p in t.shared})
    t.assign(fine_shared)
    restore(shared_buffers)
    line_search(t, objective, f0, g, e, s)
    for _ in range(s.post):
        objective.step()
    return start, out


def line_search(t: _Trainee, objective: Objective, f0: float, g: Values, e: Values, s: Settings) -> float:
    """Move the parameters to ``x + alpha e`` by Armijo backtracking; return ``alpha`` (0: not moved).

    Only a descent direction is tried; a trial whose loss is not finite is rejected. A
    rejected trial's forward pass leaves no trace in the running statistics (restored); the
    accepted trial's evaluation is the one the next optimizer step reuses.
    """
    slope = t.dot(g, e)
    if not slope < 0.0:
        return 0.0
    base, saved, before = t.values(), buffers(t.net), objective.cached
    alpha = 1.0
    for _ in range(s.max_backtracks + 1):
        restore(saved)
        t.assign({p: base[p] + alpha * e[p] for p in t.params})
        value = objective(finite=False)[0]
        if value <= f0 + s.c1 * alpha * slope:  # (False for NaN: a trial whose loss is not finite is rejected)
            return alpha
        alpha *= 0.5
    restore(saved)
    t.assign(base)
    objective.cached = before  # (the evaluation at base, if it was the last one before the trials)
    return 0.0
