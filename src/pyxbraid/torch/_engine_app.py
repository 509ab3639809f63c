"""The engine app behind LayerParallel's "exact" and "one_shot" modes (pyxbraid's Python-App path).

The engine owns float64 states of shape ``(batch, *features)`` and hands the
callbacks numpy views of its memory; ``torch.from_numpy`` wraps them without
copying. A step is ``u += dt * F_k(u)`` under ``torch.no_grad()``; an adjoint
step recomputes ``F_k`` with autograd from the step's recorded input and takes
one vector-Jacobian product.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..app import App

if TYPE_CHECKING:
    from ._layer_parallel import LayerParallel


class LayerParallelApp(App):
    """One batch shape of a LayerParallel as a pyxbraid App (see the module docstring)."""

    def __init__(self, lp: LayerParallel, shape: tuple[int, ...]) -> None:
        super().__init__(shape=shape)
        self.lp = lp
        self.scale = lp.depth / lp.T       # time -> fine index
        self.u0: np.ndarray | None = None
        self.seed: np.ndarray | None = None   # the gradient arriving at u(T): the objective is <seed, u(T)>
        self.u0_bar: torch.Tensor | None = None
        self.loaded: Any = None           # which forward pass the iterate belongs to
        self.params: dict[int, list[torch.Tensor]] = {}
        self.names: dict[int, list[str]] = {}
        self.acc: dict[int, list[torch.Tensor]] | None = None
        self.accumulate = False
        self._coarse: dict[tuple[int, int], tuple[list[int], dict[str, torch.Tensor]]] = {}
        self.grad = 0.0                   # unused; the gradients live in self.acc

    # -- driving ----------------------------------------------------------------------------
    def begin(self, u0: np.ndarray, seed: np.ndarray | None) -> None:
        self.u0, self.seed, self.acc = u0, seed, None
        self._coarse.clear()

    def begin_gradient(self) -> list[torch.Tensor]:
        """Fresh gradient accumulators for the owned parameters; returns the parameters, flat."""
        self._coarse.clear()
        self.params, self.names, self.acc, flat = {}, {}, {}, []
        for k in self.lp.owned_layers:
            named = [(n, p) for n, p in self.lp.layers[str(k)].named_parameters() if p.requires_grad]
            ps = [p for _, p in named]
            self.params[k], self.names[k] = ps, [n for n, _ in named]
            self.acc[k] = [torch.zeros_like(p, dtype=torch.float64) for p in ps]
            flat.extend(ps)
        return flat

    def end_gradient(self) -> list[torch.Tensor]:
        assert self.acc is not None
        flat = [g for k in self.lp.owned_layers for g in self.acc[k]]
        self.acc = None
        return flat

    # -- which weights a step uses -------------------------------------------------------------
    def _index(self, t: float) -> int:
        return int(round(t * self.scale))

    def _coarse_params(self, a: int, b: int) -> tuple[list[int], dict[str, torch.Tensor]]:
        """coarse="mean": the owned layers in (t_a, t_b] and the average of their parameters."""
        key = (a, b)
        if key not in self._coarse:
            owned = self.lp.owned_layers
            ks = [k for k in range(a, b) if k in owned]
            named = [dict(self.lp.layers[str(k)].named_parameters()) for k in ks]
            with torch.no_grad():
                avg = {n: torch.stack([d[n] for d in named]).mean(0) for n in named[-1]}
            self._coarse[key] = (ks, avg)
        return self._coarse[key]

    # -- callbacks -------------------------------------------------------------------------------
    def init(self, t: float, u: np.ndarray) -> None:
        # u0 at t = 0; elsewhere the initial guess: u0 again (the identity flow)
        u[...] = self.u0

    def step(self, u: np.ndarray, ustop: np.ndarray, fstop: Any, status: Any) -> None:
        b = self._index(status.tstop)
        x = torch.from_numpy(u)
        version = x._version
        with torch.no_grad():
            if status.level > 0 and self.lp.coarse == "mean":
                _, avg = self._coarse_params(self._index(status.tstart), b)
                y = self.lp.call_block(b - 1, x, avg)
            else:
                y = self.lp.call_block(b - 1, x)
            if x._version != version:
                raise RuntimeError(f"block({b - 1}) modified its input in place (an in-place operation such as "
                                   "ReLU(inplace=True) applied to the block's input); F_k must not change u_k")
            x.add_(y, alpha=status.tstop - status.tstart)

    def step_adjoint(self, u: np.ndarray, ustop: np.ndarray, u_bar: np.ndarray, ustop_bar: np.ndarray,
                     status: Any) -> None:
        if not u_bar.any():     # a zero adjoint (the forward solve's): nothing to do
            return
        from ._layer_parallel import readonly_tensor

        b = self._index(status.tstop)
        dt = status.tstop - status.tstart
        x = readonly_tensor(u).detach().requires_grad_(True)
        bar = torch.from_numpy(u_bar)
        mean = status.level > 0 and self.lp.coarse == "mean"
        want_params = self.acc is not None
        with torch.enable_grad():
            if mean:
                ks, avg = self._coarse_params(self._index(status.tstart), b)
                leaves = {n: v.detach().requires_grad_(True) for n, v in avg.items()} if want_params else avg
                y = self.lp.call_block(b - 1, x, leaves)
                targets = list(leaves.values()) if want_params else []
            else:
                y = self.lp.call_block(b - 1, x)
                targets = self.params.get(b - 1, []) if want_params else []
            if not y.requires_grad:    # F_k does not depend on u nor on a parameter
                return
            got = torch.autograd.grad(y, [x, *targets], grad_outputs=bar, allow_unused=True)
        if want_params:
            assert self.acc is not None
            if mean:
                share = dt / len(ks)
                names = list(leaves)
                mine = dict(zip(names, got[1:]))
                for k in ks:
                    for n, acc in zip(self.names[k], self.acc[k]):
                        if mine.get(n) is not None:
                            acc.add_(mine[n], alpha=share)
            else:
                for acc, g in zip(self.acc[b - 1], got[1:]):
                    if g is not None:
                        acc.add_(g, alpha=dt)
        if got[0] is not None:
            bar.add_(got[0], alpha=dt)

    def objective(self, u: np.ndarray, status: Any) -> float:
        return float(np.vdot(self.seed, u)) if self.seed is not None else 0.0

    def objective_adjoint(self, u: np.ndarray, u_bar: np.ndarray, f_bar: float, status: Any) -> None:
        if self.seed is not None:
            np.multiply(self.seed, f_bar, out=u_bar)

    def reset_gradient(self) -> None:
        if self.acc is not None:
            for accs in self.acc.values():
                for a in accs:
                    a.zero_()

    def init_adjoint(self, t: float, u_bar: np.ndarray, status: Any) -> None:
        self.u0_bar = torch.from_numpy(np.array(u_bar, dtype=np.float64))
