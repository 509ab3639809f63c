"""The engine app behind LayerParallel's "exact" and "one_shot" modes (pyxbraid's Python-App path).

The engine owns states of shape ``(batch, *features)`` in the blocks' dtype
(float64 or float32) and hands the callbacks numpy views of its memory; ``torch.from_numpy`` wraps them without
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

    def __init__(self, lp: LayerParallel, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        super().__init__(shape=shape, dtype=np.float32 if dtype == torch.float32 else np.float64)
        self.lp = lp
        self.torch_dtype = dtype
        self.scale = lp.depth / lp.T  # time -> fine index
        self.u0: np.ndarray | None = None
        self.seed: np.ndarray | None = None  # the gradient arriving at u(T): the objective is <seed, u(T)>
        self.u0_bar: torch.Tensor | None = None
        self.loaded: Any = None  # which forward pass the iterate belongs to
        self.params: dict[int, list[torch.Tensor]] = {}
        self.names: dict[int, list[str]] = {}
        self.acc: dict[int, list[torch.Tensor]] | None = None
        self._coarse: dict[tuple[int, int], tuple[list[int], dict[str, torch.Tensor]]] = {}
        self.grad = 0.0  # unused; the gradients live in self.acc
        # keep_graph: the graphs of this iteration's steps, by (level, tindex), last step on top
        self._graphs: dict[tuple[int, int], list[tuple]] = {}
        self._graph_iter = -1
        self.kept_graph_hits = self.kept_graph_misses = 0

    # -- driving ----------------------------------------------------------------------------
    def begin(self, u0: np.ndarray, seed: np.ndarray | None) -> None:
        self.u0, self.seed, self.acc = u0, seed, None
        self._coarse.clear()

    def end_solve(self) -> None:
        """Drop kept graphs (steps whose adjoint did not run, e.g. the on-demand sweeps)."""
        self._graphs.clear()
        self._graph_iter = -1

    def begin_gradient(self) -> list[torch.Tensor]:
        """Fresh gradient accumulators for the owned parameters; returns the parameters, flat."""
        self._coarse.clear()
        self.params, self.names, self.acc = {}, {}, {}
        flat: list[torch.Tensor] = []
        for k in self.lp.owned_layers:
            named = [(n, p) for n, p in self.lp.layers[str(k)].named_parameters() if p.requires_grad]
            ps: list[torch.Tensor] = [p for _, p in named]
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

    def _evaluate(
        self, b: int, a: int, level: int, x: torch.Tensor, leaves: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[int] | None]:
        """F(x) of the step from fine index a to b: (y, the parameter tensors it used, mean's layers or None).

        ``leaves``: give the "mean" policy's averaged parameters as fresh leaves
        (for their gradient); the fine policy's parameters are the modules' own.
        """
        if level > 0 and self.lp.coarse == "mean":
            ks, avg = self._coarse_params(a, b)
            if leaves:
                avg = {n: v.detach().requires_grad_(True) for n, v in avg.items()}
            return self.lp.call_block(b - 1, x, avg), list(avg.values()), ks
        return self.lp.call_block(b - 1, x), self.params.get(b - 1, []), None

    def step(self, u: np.ndarray, ustop: np.ndarray, fstop: Any, status: Any) -> None:
        if torch.is_grad_enabled():  # (LayerParallel's solves run without grad: this is for other callers)
            with torch.no_grad():
                return self.step(u, ustop, fstop, status)
        tstart, tstop, level = status.tstart, status.tstop, status.level
        b = int(round(tstop * self.scale))
        x = torch.from_numpy(u)
        version = x._version
        if self.lp.keep_graph and self.seed is not None:
            # keep this step's graph for its adjoint step (the reverse sweep of this iteration)
            if status.iter != self._graph_iter:
                self._graphs.clear()
                self._graph_iter = status.iter
            x_in = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                y, targets, ks = self._evaluate(b, self._index(tstart), level, x_in, leaves=self.acc is not None)
            self._graphs.setdefault((level, status.tindex), []).append((x_in, y, targets, ks))
            y = y.detach()
        elif level > 0 and self.lp.coarse == "mean":
            y = self._evaluate(b, self._index(tstart), level, x, leaves=False)[0]
        else:
            y = self.lp.call_block(b - 1, x)
        if x._version != version:
            raise RuntimeError(
                f"block({b - 1}) modified its input in place (an in-place operation such as "
                "ReLU(inplace=True) applied to the block's input); F_k must not change u_k"
            )
        x.add_(y, alpha=tstop - tstart)
        return None

    def step_adjoint(
        self, u: np.ndarray, ustop: np.ndarray, u_bar: np.ndarray, ustop_bar: np.ndarray, status: Any
    ) -> None:
        kept = self._graphs.get((status.level, status.tindex)) if self.lp.keep_graph else None
        entry = kept.pop() if kept else None  # this step's graph, if kept (popped even when unused)
        if not u_bar.any():  # a zero adjoint (the forward solve's): nothing to do
            return
        from ._layer_parallel import readonly_tensor

        b, a = self._index(status.tstop), self._index(status.tstart)
        dt = status.tstop - status.tstart
        bar = torch.from_numpy(u_bar)
        want_params = self.acc is not None
        u_t = readonly_tensor(u)
        if entry is not None and torch.equal(entry[0].detach(), u_t):
            x, y, targets, ks = entry
            self.kept_graph_hits += 1
        else:  # recompute F(u) with autograd from the step's recorded input
            if entry is not None:
                self.kept_graph_misses += 1
            x = u_t.detach().requires_grad_(True)
            with torch.enable_grad():
                y, targets, ks = self._evaluate(b, a, status.level, x, leaves=want_params)
        if not want_params:
            targets = []
        if not y.requires_grad:  # F_k depends neither on u nor on a parameter
            return
        got = torch.autograd.grad(y, [x, *targets], grad_outputs=bar, allow_unused=True)
        if want_params:
            assert self.acc is not None
            if ks is not None:  # coarse="mean": d(average)/d(theta_k) = 1 / len(ks)
                share = dt / len(ks)
                mine = dict(zip(self._coarse[(a, b)][1], got[1:], strict=True))
                for k in ks:
                    for n, acc in zip(self.names[k], self.acc[k], strict=True):
                        if mine.get(n) is not None:
                            acc.add_(mine[n], alpha=share)
            else:
                for acc, g in zip(self.acc[b - 1], got[1:], strict=True):
                    if g is not None:
                        acc.add_(g, alpha=dt)
        if got[0] is not None:
            bar.add_(got[0], alpha=dt)

    def objective(self, u: np.ndarray, status: Any) -> float:
        # J = <g, u(T)> (reported as SolveResult.objective; the adjoint needs only its seed g).
        # torch's dot: numpy's would go through a multi-threaded BLAS.
        if self.seed is None:
            return 0.0
        from ._layer_parallel import readonly_tensor

        return float(torch.dot(torch.from_numpy(self.seed).reshape(-1), readonly_tensor(u).reshape(-1)))

    def objective_adjoint(self, u: np.ndarray, u_bar: np.ndarray, f_bar: float, status: Any) -> None:
        if self.seed is not None:
            np.multiply(self.seed, f_bar, out=u_bar)

    def reset_gradient(self) -> None:
        if self.acc is not None:
            for accs in self.acc.values():
                for a in accs:
                    a.zero_()

    def init_adjoint(self, t: float, u_bar: np.ndarray, status: Any) -> None:
        self.u0_bar = torch.from_numpy(np.array(u_bar))  # a copy: u_bar is engine memory
