"""The engine app behind LayerParallel's "exact" and "one_shot" modes (pyxbraid's Python-App path).

The engine owns states of shape ``(batch, *features)`` in the blocks' dtype
(float64 or float32) and hands the callbacks numpy views of its memory; ``torch.from_numpy`` wraps them without
copying. A step is ``u += dt * F_k(u)`` under ``torch.no_grad()``; an adjoint
step recomputes ``F_k`` with autograd from the step's recorded input and takes
one vector-Jacobian product.
"""

from __future__ import annotations

import itertools
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
        self._adjoint(u, u_bar, status.tstart, status.tstop, status.level, entry)

    def _adjoint(
        self, u: np.ndarray, u_bar: np.ndarray, tstart: float, tstop: float, level: int, entry: tuple | None
    ) -> None:
        """One step's adjoint: ``u_bar += dt (dF/du)^T u_bar``, its parameters' part to the accumulators."""
        if not u_bar.any():  # a zero adjoint (the forward solve's): nothing to do
            return
        from ._layer_parallel import readonly_tensor

        b, a = self._index(tstop), self._index(tstart)
        dt = tstop - tstart
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
                y, targets, ks = self._evaluate(b, a, level, x, leaves=want_params)
        if not want_params:
            targets = []
        if not y.requires_grad:  # F_k depends neither on u nor on a parameter
            return
        got = torch.autograd.grad(y, [x, *targets], grad_outputs=bar, allow_unused=True)
        if want_params:
            # the names of the targets: mean's averaged tensors (all parameters) or the layer's trainable ones
            names = list(self._coarse[(a, b)][1]) if ks is not None else self.names[b - 1]
            self._add_gradients(b, dt, ks, dict(zip(names, got[1:], strict=True)))
        if got[0] is not None:
            bar.add_(got[0], alpha=dt)

    def _add_gradients(self, b: int, dt: float, ks: list[int] | None, mine: dict[str, torch.Tensor | None]) -> None:
        """Add the parameter gradients ``mine`` (by name) of the step ending at fine index b, times dt."""
        assert self.acc is not None
        if ks is not None:  # coarse="mean": d(average)/d(theta_k) = 1 / len(ks)
            share = dt / len(ks)
            for k in ks:
                for n, acc in zip(self.names[k], self.acc[k], strict=True):
                    g = mine.get(n)
                    if g is not None:
                        acc.add_(g, alpha=share)
        else:
            for n, acc in zip(self.names[b - 1], self.acc[b - 1], strict=True):
                g = mine.get(n)
                if g is not None:
                    acc.add_(g, alpha=dt)

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


class BatchedLayerParallelApp(LayerParallelApp):
    """LayerParallel(batch_steps=True): the engine's groups of independent steps in one call each.

    When this rank's blocks share one architecture (``LayerParallel.vmappable``),
    a group's ``F`` is one ``torch.func.vmap`` of ``torch.func.functional_call``
    over the rows' parameters, stacked (row ``i`` gets the parameters of the
    layer that :meth:`LayerParallelApp._evaluate` would give its step: the
    fine layer ending at its ``tstop``, or coarse="mean"'s average), and its
    adjoint is one ``torch.func.vjp`` of that function; the parameter
    gradients of the rows go to their layers as the per-step adjoint puts them.
    Otherwise (BatchNorm in training mode, dropout, different blocks) the
    rows are stepped one by one with the per-step code.
    """

    def __init__(self, lp: LayerParallel, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        super().__init__(lp, shape, dtype)
        self._stack: dict[str, torch.Tensor] | None = None  # every owned layer's tensors, stacked by layer
        self._template: torch.nn.Module | None = None
        self.vmapped_calls = self.one_by_one_calls = 0  # grouped calls taken each way (primal and adjoint)

    def begin(self, u0: np.ndarray, seed: np.ndarray | None) -> None:
        super().begin(u0, seed)
        self._stack = None  # the parameters may have changed since the last pass (an optimiser step)

    def begin_gradient(self) -> list[torch.Tensor]:
        self._stack = None
        return super().begin_gradient()

    # -- the rows' tensors -------------------------------------------------------------------------
    def _stacked(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers of the owned layers, each stacked along a new first axis (layer order)."""
        if self._stack is None:
            owned = self.lp.owned_layers
            tensors = [
                dict(itertools.chain(m.named_parameters(), m.named_buffers()))
                for m in (self.lp.layers[str(k)] for k in owned)
            ]
            with torch.no_grad():
                self._stack = {n: torch.stack([t[n] for t in tensors]) for n in tensors[0]}
            self._template = self.lp.layers[str(owned[0])]
        return self._stack

    def _row_tensors(self, bs: list[int], as_: list[int], level: int) -> dict[str, torch.Tensor]:
        """Return the tensors each row's F uses, stacked by row (detached)."""
        stack = self._stacked()
        if level > 0 and self.lp.coarse == "mean":
            avgs = [self._coarse_params(a, b)[1] for a, b in zip(as_, bs, strict=True)]
            with torch.no_grad():
                out = {n: torch.stack([avg[n] for avg in avgs]) for n in avgs[0]}
            # buffers are not averaged (coarse="mean" replaces the parameters only): the tstop layer's
            rows = torch.tensor([b - 1 - self.lp.owned_layers.start for b in bs])
            out.update((n, v.index_select(0, rows)) for n, v in stack.items() if n not in out)
            return out
        rows = torch.tensor([b - 1 - self.lp.owned_layers.start for b in bs])
        return {n: v.index_select(0, rows) for n, v in stack.items()}

    def _batched_f(self) -> Any:
        """F of one row as a function of (its parameters, its buffers, its state), vmapped over rows."""
        self._stacked()  # (sets the template)
        template = self._template
        assert template is not None

        def f(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(template, (params, buffers), (x,))

        return torch.func.vmap(f)

    def _split(self, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(parameters, buffers): only the parameters are differentiated (a buffer may be an integer counter)."""
        assert self._template is not None
        names = {n for n, _ in self._template.named_parameters()}
        params = {n: v for n, v in tensors.items() if n in names}
        return params, {n: v for n, v in tensors.items() if n not in names}

    def _times(self, tstart: np.ndarray, tstop: np.ndarray) -> tuple[list[int], list[int], np.ndarray, torch.Tensor]:
        """Per row: the fine indices b (tstop) and a (tstart), dt in float64, and dt as a tensor to scale rows by."""
        bs = [self._index(t) for t in tstop.tolist()]
        as_ = [self._index(t) for t in tstart.tolist()]
        dt = tstop - tstart
        # broadcast over the state's axes, in the states' dtype (add_ applies its alpha in that dtype too)
        scale = torch.from_numpy(dt).to(self.torch_dtype).reshape(-1, *([1] * len(self.shape)))
        return bs, as_, dt, scale

    # -- callbacks -------------------------------------------------------------------------------
    def step_batch(
        self, u: np.ndarray, ustop: np.ndarray, fstop: Any, tstart: np.ndarray, tstop: np.ndarray, status: Any
    ) -> None:
        if not self.lp.vmappable():
            self.one_by_one_calls += 1
            self._rows_one_by_one(u, tstart, tstop, status.level)
            return
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.step_batch(u, ustop, fstop, tstart, tstop, status)
        self.vmapped_calls += 1
        bs, as_, _, scale = self._times(tstart, tstop)
        x = torch.from_numpy(u)
        version = x._version
        f = self._batched_f()
        y = f(*self._split(self._row_tensors(bs, as_, status.level)), x)
        if x._version != version:
            raise RuntimeError(
                "a block modified its input in place (an in-place operation such as ReLU(inplace=True) "
                "applied to the block's input); F_k must not change u_k"
            )
        x.add_(y * scale)  # (not y.mul_: a block returning its input would get y is x)
        return None

    def _rows_one_by_one(self, u: np.ndarray, tstart: np.ndarray, tstop: np.ndarray, level: int) -> None:
        """Take the rows' steps one by one as step does (keep_graph is refused with batch_steps: no graph kept)."""
        with torch.no_grad():
            for i in range(u.shape[0]):
                b, a = self._index(float(tstop[i])), self._index(float(tstart[i]))
                x = torch.from_numpy(u[i])
                version = x._version
                y = self._evaluate(b, a, level, x, leaves=False)[0]
                if x._version != version:
                    raise RuntimeError(
                        f"block({b - 1}) modified its input in place (an in-place operation such as "
                        "ReLU(inplace=True) applied to the block's input); F_k must not change u_k"
                    )
                x.add_(y, alpha=float(tstop[i] - tstart[i]))

    def step_adjoint_batch(
        self,
        u: np.ndarray,
        ustop: np.ndarray,
        u_bar: np.ndarray,
        ustop_bar: np.ndarray,
        tstart: np.ndarray,
        tstop: np.ndarray,
        status: Any,
    ) -> None:
        # ustop_bar stays zero (as in step_adjoint): a step's result does not feed its own F
        if not u_bar.any():  # the forward solve's zero adjoint: nothing to do
            return
        if not self.lp.vmappable():
            self.one_by_one_calls += 1
            for i in range(u.shape[0]):
                self._adjoint(u[i], u_bar[i], float(tstart[i]), float(tstop[i]), status.level, None)
            return
        from ._layer_parallel import readonly_tensor

        self.vmapped_calls += 1
        bs, as_, dt, scale = self._times(tstart, tstop)
        bar = torch.from_numpy(u_bar)
        x = readonly_tensor(u).detach()
        f = self._batched_f()
        params, buffers = self._split(self._row_tensors(bs, as_, status.level))
        if self.acc is not None:
            pullback = torch.func.vjp(lambda p_, x_: f(p_, buffers, x_), params, x)[1]
            g_params, g_x = pullback(bar)
            self._accumulate(bs, as_, dt, status.level, g_params)
        else:  # the state's adjoint only: the parameters are constants here
            pullback = torch.func.vjp(lambda x_: f(params, buffers, x_), x)[1]
            (g_x,) = pullback(bar)
        bar.add_(g_x * scale)  # (not g_x.mul_: the pullback of an identity may hand back bar itself)

    def _accumulate(
        self, bs: list[int], as_: list[int], dt: np.ndarray, level: int, grads: dict[str, torch.Tensor]
    ) -> None:
        """Add each row's parameter gradients (times its dt) to its layer(s), as the per-step adjoint does."""
        mean = level > 0 and self.lp.coarse == "mean"
        for i, (b, a) in enumerate(zip(bs, as_, strict=True)):
            ks = self._coarse_params(a, b)[0] if mean else None
            # dt as the per-step path applies it: a float64 Python float as add_'s alpha
            self._add_gradients(b, float(dt[i]), ks, {n: g[i] for n, g in grads.items()})
