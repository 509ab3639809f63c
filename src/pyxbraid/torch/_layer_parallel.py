"""LayerParallel: residual layers of a PyTorch network as MGRIT time steps on MPI ranks."""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from mpi4py import MPI
from torch.autograd.function import once_differentiable

from .. import _core
from .._options import core_options
from ..errors import RemoteRankError, _Agreed
from ..nn.trainer import ConvergenceWarning
from ..solver import Solver, SolveResult
from ._engine_app import BatchedLayerParallelApp, LayerParallelApp
from ._serial import serial_backward, serial_forward

__all__ = ["COARSE_POLICIES", "DEFAULT_TOLERANCES", "ENGINE_DTYPES", "MODES", "LayerParallel"]

MODES = ("serial", "exact", "one_shot")
"""The values of ``LayerParallel(mode=...)``."""

COARSE_POLICIES = ("tstop", "mean")
"""The values of ``LayerParallel(coarse=...)``: which weights a coarse time step uses."""

# Solver options a user may pass through ``solver_options`` (the others are set by LayerParallel).
_PASS_THROUGH = (
    "min_coarse",
    "cwt",
    "fmg",
    "nfmg",
    "nfmg_vcyc",
    "storage",
    "tnorm",
    "relax_only_cg",
    "print_level",
    "virtual_time",
    "virtual_latency",
    "virtual_bandwidth",
    "virtual_step_cost",
)
# The state dtypes the engine stores (pyxbraid.App(dtype=...)): the blocks' dtype decides.
ENGINE_DTYPES = (torch.float64, torch.float32)
"""The state dtypes of ``"exact"`` and ``"one_shot"`` modes (the blocks' dtype decides)."""
# Default relative tolerances of "exact" mode, per state dtype. Measured (conv blocks, depth 16-256):
# a float32 residual stops falling at 2-3e-7 of the first one (a float64 one at 1e-15..1e-14), so
# float32 gets 1e-5, which MGRIT reaches in about the iterations float64 needs for 1e-6 and which
# leaves u(T) and the gradients at float32 round-off (tests/test_torch.py).
DEFAULT_TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5}
"""The default ``tol`` and ``adjoint_tol`` of ``"exact"`` mode per state dtype."""
_CACHE = 4  # solvers kept per kind (adjoint / primal-only), one per state shape

_readonly_warning_seen = False


def readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` of a read-only engine view (no copy; never written)."""
    global _readonly_warning_seen
    if _readonly_warning_seen:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        # PyTorch warns once per process that it has no read-only tensors;
        # the views it refers to are only read here.
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array)
    _readonly_warning_seen = True
    return tensor


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _compact(layers: set[int]) -> str:
    """``{0, 1, 2, 5, 7, 8}`` as ``"0..2, 5, 7, 8"``."""
    ordered, runs = sorted(layers), []
    start = prev = ordered[0]
    for k in [*ordered[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        runs.append(str(start) if start == prev else f"{start}, {prev}" if prev == start + 1 else f"{start}..{prev}")
        if k is not None:
            start = prev = k
    return ", ".join(runs)


def _tolerance(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _signature(module: torch.nn.Module) -> tuple | None:
    """Describe what must agree between two blocks for one to run with the other's tensors (None: unknowable).

    ``torch.func.functional_call`` runs one module's ``forward`` with another
    block's parameters, so the blocks must agree in everything but the tensor
    values: module classes and nesting, the public attributes a forward reads
    (Conv2d's stride and padding, a user's ``self.scale``; compared by value),
    parameter and buffer names, shapes and dtypes, and no module hooks, forward
    or backward (the template module's hooks would run in place of each
    block's own).
    """
    parts: list[Any] = []
    for name, m in module.named_modules():
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return None
        attrs = tuple(sorted((k, v) for k, v in vars(m).items() if not k.startswith("_") and k != "training"))
        parts.append((name, type(m), attrs))
    parts.extend((n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in module.named_parameters())
    parts.extend((n, tuple(b.shape), b.dtype) for n, b in module.named_buffers())
    return tuple(parts)


def _same_architecture(blocks: list[torch.nn.Module]) -> bool:
    """Whether every block has the first one's :func:`_signature` (one architecture, so vmap-able together)."""
    if not blocks:
        return False
    try:
        first = _signature(blocks[0])
        # (an attribute whose == is not a plain bool, an array say, raises here: not uniform)
        return first is not None and all(bool(_signature(b) == first) for b in blocks[1:])
    except Exception:
        return False


class _OwnedLayers(torch.nn.ModuleDict):
    """The residual blocks a rank holds, keyed by their layer index (``"0"`` .. ``str(depth - 1)``).

    Loading a full state dict (every layer, as :meth:`LayerParallel.state_dict`
    gathers it) takes this rank's layers and ignores the others instead of
    reporting them as unexpected keys, so a checkpoint loads on any rank count.
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        self._depth = depth

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # keys of layers held by other ranks are not unexpected
        foreign = []
        for key in unexpected_keys:
            if key.startswith(prefix):
                head = key[len(prefix) :].split(".", 1)[0]
                if head.isdigit() and int(head) < self._depth and head not in self._modules:
                    foreign.append(key)
        for key in foreign:
            unexpected_keys.remove(key)


class LayerParallel(torch.nn.Module):
    r"""Residual layers ``u_{k+1} = u_k + h F_k(u_k)`` run layer-parallel over MPI ranks.

    The ``depth`` residual layers of a network are the forward-Euler time steps
    of ``du/dt = F(u, t)`` on ``[0, T]`` with ``h = T / depth``. Layer ``k``
    lives on one rank only (the rank owning time point ``k + 1`` in pyxbraid's
    block distribution of the ``depth + 1`` time points; any rank count up to
    ``depth + 1``): ``block(k)`` is called there and nowhere else, and this
    module holds (``parameters()``, optimisers, ``.grad``) only the rank's own
    blocks. Call it on every rank with the same input: ``lp(u0)`` returns
    ``u(T)`` on every rank, and ``backward()`` puts the gradient of every owned
    parameter into its ``.grad`` and the gradient of ``u0`` into ``u0.grad`` on
    every rank (so an opening layer replicated on every rank gets identical
    gradients everywhere). The forward and the backward are collective: every
    rank must call both.

    Parameters
    ----------
    block : callable
        ``block(k) -> torch.nn.Module``: the residual function ``F_k`` of layer
        ``k`` (``k = 0 .. depth - 1``), mapping a state of shape
        ``(batch, *features)`` to one of the same shape. Seed it by ``k``
        (``torch.manual_seed(k)``) to get the same network on any rank count.
    depth : int
        Number of residual layers (time steps).
    T : float, default 1.0
        Final time; the step size is ``h = T / depth``.
    comm : mpi4py.MPI.Comm, default MPI.COMM_WORLD
        The ranks over which the layers are distributed.
    mode : {"exact", "serial", "one_shot"}, default "exact"
        ``"serial"``: plain forward and backpropagation through the blocks,
        rank after rank (the reference and the fallback; any floating dtype).
        ``"exact"``: forward MGRIT and the adjoint MGRIT (XBraid_Adjoint)
        iterate until their residuals are below ``tol`` / ``adjoint_tol`` (a
        :class:`ConvergenceWarning` when ``max_iter`` runs out): u(T) and the
        gradients are those of backpropagation to that tolerance.
        ``"one_shot"``: ``max_iter`` primal-and-adjoint iterations in the
        forward and again in the backward, warm-restarted from the previous
        iterate (the simultaneous method of Günther et al., SIMODS 2020); the
        forward's adjoint runs with the previous backward's seed, so the
        adjoint iterate stays warm too (zero after :meth:`reset`). Inexact,
        cheap, and exact in the limit of repeated passes on the same data; call
        :meth:`reset` when the data change.
    max_levels : int, default 3
        MGRIT levels (``"exact"``, ``"one_shot"``); 1 = sequential stepping
        through the engine.
    cfactor : int, default 4
        Coarsening factor.
    nrelax : int, default 1
        FC sweeps before restriction (1 = FCF relaxation).
    max_iter : int, optional
        MGRIT iterations at most (``"exact"``, default 100) or exactly
        (``"one_shot"``, default 2) per solve.
    tol, adjoint_tol : float, optional
        ``"exact"``: stop when the primal (adjoint) residual norm is below
        ``tol`` (``adjoint_tol``) times that of the solve's first iteration.
        Default by the states' dtype: 1e-12 for float64, 1e-5 for float32
        (``DEFAULT_TOLERANCES``). A float32 residual stops falling at about
        3e-7 of the first one (round-off; float64: about 1e-15), and 1e-5
        leaves u(T) and the gradients within float32 round-off of
        backpropagation's. Values below the dtype's machine epsilon
        (float32: 1.19e-7) are refused (``ValueError``) when the dtype is
        known: at construction from the blocks, else at the first forward.
    coarse : {"tstop", "mean"}, default "tstop"
        Weights of a coarse time step from ``t_a`` to ``t_b``: ``"tstop"`` uses
        the fine layer ending at ``t_b`` (it lives on the rank taking the step,
        so no rank needs another rank's weights); ``"mean"`` uses the average of
        the parameters of the fine layers in ``(t_a, t_b]`` that this rank holds
        (blocks of identical structure needed; better for weights that vary
        from layer to layer, see the README). Coarse levels change the
        convergence only, never the converged result.
    keep_graph : bool, default False
        Backward: keep each primal step's autograd graph for its adjoint step
        instead of recomputing ``F_k`` there. Measured (``benchmarks/README.md``):
        18-35% less backward time, but the graphs of all steps of an MGRIT
        iteration (about 3x plain autograd's activation memory for the rank's
        layers with FCF relaxation) instead of one step's graph at a time. A kept
        graph is used only when its input equals the step's recorded input,
        else the step is recomputed.
    solver_options : dict, optional
        More :class:`pyxbraid.Solver` options: ``min_coarse``, ``cwt``,
        ``fmg``, ``nfmg``, ``nfmg_vcyc``, ``storage``, ``tnorm``,
        ``relax_only_cg``, ``print_level`` and the ``virtual_*`` options
        (``last_forward.virtual_wall_time``: a prediction on one core per rank).
    check_inputs : bool, default True
        Check on every forward that ``u0`` is identical on every rank (a CRC of
        its bytes, one small collective). A ``u0`` that differs between ranks
        (an opening layer with unseeded dropout, say) raises ``ValueError`` on
        every rank instead of giving wrong results.
    batch_steps : bool, default False
        ``"exact"``, ``"one_shot"``: take the engine's groups of independent
        steps (its ``step_batch`` / ``step_adjoint_batch`` callbacks) in one
        call each: when this rank's blocks share one architecture (module
        classes, public attributes, parameter and buffer shapes; no hooks;
        checked at construction), ``F`` of a group is one
        ``torch.func.vmap`` of ``torch.func.functional_call`` over the rows'
        stacked parameters (each row those of the layer its step uses, as
        without batching, ``coarse="mean"`` included) and the adjoint one
        ``torch.func.vjp`` of it. Blocks that cannot be vmapped (BatchNorm in
        training mode updates its running statistics per block; dropout draws
        per-layer seeded masks; blocks of different architectures) are stepped
        row by row inside the grouped calls, as without batching. The results
        equal those without batching to round-off (tested to 1e-12 in
        float64). Measured on the CPU (``benchmarks/README.md``, depth 64, one
        thread): the adjoint of a small dense block costs about half per row,
        but the training step takes 0.9-1.1x the per-step speed for a
        width-32 dense block and 0.65-1.04x for a convolution (vmap over
        per-row kernels becomes a slower grouped convolution), so it is off by
        default. Cannot be combined with ``keep_graph``.

    Attributes
    ----------
    owned_layers : range
        The layer indices this rank holds (may be empty on rank 0).
    last_forward, last_backward : SolveResult or None
        The engine's results of the last forward and backward solves
        (``"exact"``, ``"one_shot"``): iterations, residual norms, step calls.

    Notes
    -----
    *Forward* (``"exact"``, ``"one_shot"``): the engine's Python-App path on
    states of shape ``(batch, *features)`` in the blocks' dtype (float64 or
    float32: the blocks' parameters and floating buffers must share one dtype,
    checked at construction on every rank, and ``u0`` must have it; the
    engine's norms and reductions are summed in float64, parameter gradients
    accumulated in float64 and rounded once); each step wraps the engine's
    memory with ``torch.from_numpy`` (no copies) and adds ``h F_k(u)`` in place
    under ``torch.no_grad()``. The objective of the adjoint solver is
    ``<g, u(T)>``, where ``g`` is the gradient arriving at ``u(T)`` in the
    backward pass; during the forward solve it is zero (``"exact"``) and the
    adjoint steps are skipped. *Backward*: a warm-restarted solve of the same
    solver with ``g`` as the seed at ``T`` (XBraid_Adjoint: every iteration is
    a primal cycle and its reverse); each adjoint step recomputes ``F_k(u)``
    with autograd from the step's recorded input and takes one
    vector-Jacobian product for ``u`` and the block's parameters. The
    gradient of ``u0`` comes from the engine's ``init_adjoint`` on rank 0 and
    is broadcast.

    *Normalisation layers*: a block may hold BatchNorm in training mode (it
    sees the whole batch, which is one state). MGRIT evaluates every block
    many times per forward pass, so the running statistics are restored after
    each solve and updated once per forward pass from the solution's states,
    as one plain forward pass would.

    *Randomness*: blocks with dropout (``torch.nn.Dropout*`` in training mode)
    draw from a generator seeded per forward pass and per layer, so that every
    evaluation of layer ``k`` within one pass (MGRIT iterations, coarse
    levels, recomputation in the backward) uses the same mask; the seed comes
    from rank 0's global torch generator, so results do not depend on the rank
    count. Other random operations inside a block are not supported (MGRIT
    needs ``F_k`` to be a function).

    Examples
    --------
    >>> import torch
    >>> from pyxbraid.torch import LayerParallel
    >>> def block(k):
    ...     torch.manual_seed(k)
    ...     return torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU()).double()
    >>> lp = LayerParallel(block, depth=8, mode="exact", max_levels=2, cfactor=4)
    >>> u0 = torch.randn(3, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    >>> reference = u0.detach().clone()
    >>> for k in range(8):                                 # the same layers, plain torch
    ...     reference = reference + (1.0 / 8) * lp.layer(k)(reference)
    >>> uT = lp(u0)
    >>> bool(torch.allclose(uT, reference, rtol=1e-10, atol=0))
    True
    >>> uT.sum().backward()
    >>> lp.layer(0)[0].weight.grad.shape
    torch.Size([2, 2, 3, 3])
    """

    comm: Any
    depth: int
    T: float
    h: float
    mode: str
    coarse: str
    check_inputs: bool
    keep_graph: bool
    batch_steps: bool
    layers: _OwnedLayers
    last_forward: SolveResult | None
    last_backward: SolveResult | None
    _rank: int
    _size: int
    _intervals: list[tuple[int, int]]
    _owned: range
    _options: dict[str, Any]
    _tol: float | None
    _adjoint_tol: float | None
    _dtype: torch.dtype | None
    _anchor: torch.Tensor
    _engines: OrderedDict[tuple, tuple[LayerParallelApp, Solver]]
    _passes: int
    _warm: tuple | None
    _base_seed: int
    _pass_seed: int
    _random: set[int]
    _block_params: list[torch.Tensor]
    _block_buffers: list[torch.Tensor]
    _any_stats: bool
    _local_stats: bool
    _uniform: bool
    _grad_params: list[torch.Tensor]
    _block_factory: Callable[[int], torch.nn.Module]
    _settings: dict[str, Any]

    def __init__(
        self,
        block: Callable[[int], torch.nn.Module],
        depth: int,
        T: float = 1.0,
        comm: Any = None,
        *,
        mode: str = "exact",
        max_levels: int = 3,
        cfactor: int = 4,
        nrelax: int = 1,
        max_iter: int | None = None,
        tol: float | None = None,
        adjoint_tol: float | None = None,
        coarse: str = "tstop",
        keep_graph: bool = False,
        solver_options: dict[str, Any] | None = None,
        check_inputs: bool = True,
        batch_steps: bool = False,
    ) -> None:
        super().__init__()
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py.MPI.Comm (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
        with _Agreed(comm, "LayerParallel arguments"):
            if not callable(block):
                raise TypeError(f"block must be a callable block(k) -> torch.nn.Module, got {type(block).__name__}")
            depth = _positive_int("depth", depth)
            if (
                isinstance(T, (bool, np.bool_))
                or not isinstance(T, numbers.Real)
                or not (math.isfinite(float(T)) and float(T) > 0)
            ):
                raise ValueError(f"T must be a finite number > 0, got {T!r}")
            if mode not in MODES:
                raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
            if coarse not in COARSE_POLICIES:
                raise ValueError(f"coarse must be one of {', '.join(map(repr, COARSE_POLICIES))}, got {coarse!r}")
            max_levels = _positive_int("max_levels", max_levels)
            cfactor = _positive_int("cfactor", cfactor, 2)
            nrelax = _positive_int("nrelax", nrelax, 0)
            if max_iter is None:
                max_iter = 2 if mode == "one_shot" else 100
            max_iter = _positive_int("max_iter", max_iter)
            tol = None if tol is None else _tolerance("tol", tol)
            adjoint_tol = None if adjoint_tol is None else _tolerance("adjoint_tol", adjoint_tol)
            if not isinstance(batch_steps, (bool, np.bool_)):
                raise TypeError(f"batch_steps must be True or False, got {batch_steps!r}")
            if batch_steps and keep_graph:
                # keep_graph files each step's graph under its time index, which a grouped call has not
                raise ValueError(
                    "batch_steps=True and keep_graph=True cannot be combined (a kept graph belongs to one step); "
                    "choose one"
                )
            if not isinstance(solver_options, (dict, type(None))):
                raise TypeError(f"solver_options must be a dict, got {type(solver_options).__name__}")
            extra = dict(solver_options or {})
            unknown = sorted(set(extra) - set(_PASS_THROUGH), key=repr)
            if unknown:
                raise ValueError(
                    f"solver_options got {', '.join(map(repr, unknown))}; allowed: "
                    f"{', '.join(_PASS_THROUGH)} (LayerParallel sets the others)"
                )
            try:  # checked here by the Solver's own rules, not first at the first forward pass
                core_options(extra)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"solver_options: {exc}") from None
            if depth + 1 < comm.Get_size():
                raise ValueError(
                    f"depth={depth} gives {depth + 1} time points, fewer than the {comm.Get_size()} "
                    "ranks of comm; use more layers or fewer ranks"
                )
        self.comm = comm
        self.depth, self.T, self.h = depth, float(T), float(T) / depth
        # what a coarser copy of this module (pyxbraid.torch.Hierarchy) is built from
        # (kept out of torch's attribute registry: a callable Module would become a submodule)
        self.__dict__["_block_factory"] = block
        self._settings = dict(
            mode=mode,
            max_levels=max_levels,
            cfactor=cfactor,
            nrelax=nrelax,
            max_iter=max_iter,
            tol=tol,
            adjoint_tol=adjoint_tol,
            coarse=coarse,
            keep_graph=bool(keep_graph),
            solver_options=dict(extra),
            check_inputs=bool(check_inputs),
            batch_steps=bool(batch_steps),
        )
        self.mode, self.coarse = mode, coarse
        self.check_inputs = bool(check_inputs)
        self.keep_graph = bool(keep_graph)
        self.batch_steps = bool(batch_steps)
        self._rank, self._size = comm.Get_rank(), comm.Get_size()
        self._intervals = [tuple(_core.block_interval(depth + 1, self._size, r)) for r in range(self._size)]
        ilower, iupper = self._intervals[self._rank]
        self._owned = range(max(ilower, 1) - 1, iupper)
        self._options = dict(max_levels=max_levels, cfactor=cfactor, nrelax=nrelax, max_iter=max_iter)
        self._options.update(extra)
        self._tol, self._adjoint_tol = tol, adjoint_tol
        self.layers = _OwnedLayers(depth)
        with _Agreed(comm, "blocks (block(k) for the owned layers)"):
            for k in self._owned:
                module = block(k)
                if not isinstance(module, torch.nn.Module):
                    raise TypeError(f"block({k}) must return a torch.nn.Module, got {type(module).__name__}")
                self.layers[str(k)] = module
        self._dtype = self._agreed_dtype()
        self._uniform = _same_architecture([self.layers[str(k)] for k in self._owned])
        if self._dtype is not None and mode != "serial":  # (serial mode runs no engine: no tolerance)
            self._check_engine_dtype(self._dtype, "the blocks are")
            self._tolerances(self._dtype)
        # An input of every autograd call, so that backward runs on every rank
        # (even one holding no layer and given a u0 that needs no gradient):
        # the backward solve is collective.
        self._anchor = torch.zeros(0, dtype=torch.float64, requires_grad=True)
        self._engines: OrderedDict[tuple, tuple[LayerParallelApp, Solver]] = OrderedDict()
        self._passes = 0  # forward passes so far (identifies the iterate a backward needs)
        # dropout masks: seeded per (rank 0's initial torch seed, forward pass, layer), on any rank count
        self._base_seed = comm.bcast(torch.initial_seed(), root=0) if self._size > 1 else torch.initial_seed()
        self._pass_seed = 0
        self._survey()
        self._any_stats = False
        self._grad_params: list[torch.Tensor] = []
        self._warm: tuple | None = None  # one_shot: (shape) of the iterate kept for a warm restart
        self.last_forward: SolveResult | None = None
        self.last_backward: SolveResult | None = None

    # -- layout -------------------------------------------------------------------------
    @property
    def owned_layers(self) -> range:
        """The indices of the layers this rank holds (``range``, possibly empty)."""
        return self._owned

    def layer(self, k: int) -> torch.nn.Module:
        """Return the module ``F_k`` of an owned layer ``k``.

        Raises
        ------
        IndexError
            ``k`` is not in ``0 .. depth - 1``.
        KeyError
            Layer ``k`` lives on another rank (the message names it).
        """
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (numbers.Integral, np.integer)):
            raise TypeError(f"layer index must be an integer, got {k!r}")
        if not 0 <= k < self.depth:
            raise IndexError(f"layer index must be in 0 .. {self.depth - 1}, got {k}")
        if k not in self._owned:
            raise KeyError(
                f"layer {k} lives on rank {self.owner(k)}, not on rank {self._rank} "
                f"(which holds layers {self._owned.start} .. {self._owned.stop - 1})"
            )
        return self.layers[str(int(k))]

    def owner(self, k: int) -> int:
        """Return the rank holding layer ``k`` (the owner of time point ``k + 1``)."""
        for r, (lo, hi) in enumerate(self._intervals):
            if lo <= k + 1 <= hi:
                return r
        raise IndexError(f"layer index must be in 0 .. {self.depth - 1}, got {k}")

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, T={self.T:g}, mode={self.mode!r}, ranks={self._size}, "
            f"owned_layers={self._owned.start}..{self._owned.stop - 1}"
        )

    # -- state dict across rank counts ---------------------------------------------------
    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        """Every layer's parameters and buffers, on every rank (collective over ``comm``).

        Keys are ``layers.<k>.<name>`` for all ``k`` in ``0 .. depth - 1`` in
        layer order, whichever rank holds layer ``k``; :meth:`load_state_dict`
        on any rank count takes each rank's own layers from it. Save it from
        one rank (``if comm.rank == 0: torch.save(lp.state_dict(), path)``) --
        but call it on all.
        """
        if args:  # torch's deprecated positional form (destination, prefix, keep_vars)
            destination = args[0] if len(args) > 0 else destination
            prefix = args[1] if len(args) > 1 else prefix
            keep_vars = args[2] if len(args) > 2 else keep_vars
        local = super().state_dict(prefix=prefix, keep_vars=keep_vars)
        if self._size > 1:
            mine = {k: v.detach().cpu() for k, v in local.items()}
            gathered = self.comm.allgather(mine)
            merged: dict[str, Any] = {}
            for part in gathered:
                merged.update(part)
            for key, value in local.items():  # own entries keep their identity (keep_vars)
                merged[key] = value

            def order(key: str) -> tuple:
                rest = key[len(prefix) :]
                if rest.startswith("layers."):
                    head = rest.split(".", 2)[1]
                    return (0, int(head) if head.isdigit() else -1, rest)
                return (1, 0, rest)

            local = OrderedDict((key, merged[key]) for key in sorted(merged, key=order))
        if destination is None:
            return local
        destination.update(local)
        return destination

    # -- running ------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the MGRIT iterates: the next forward starts from the initial guess.

        ``"one_shot"`` warm-restarts every forward from the previous iterate
        while the state shape stays the same; call this (on every rank) when
        the data change, e.g. at every new mini-batch. ``"exact"`` starts
        afresh on every forward anyway.
        """
        self._warm = None
        for app, _ in self._engines.values():
            app.seed = None

    def forward(self, u0: torch.Tensor) -> torch.Tensor:
        """``u(T)`` from ``u(0) = u0`` (collective: call it on every rank with the same ``u0``).

        Parameters
        ----------
        u0 : torch.Tensor
            Shape ``(batch, *features)``, on the CPU, in the blocks' dtype
            (float64 or float32 for ``"exact"`` and ``"one_shot"``, whose
            engine states have that dtype; any floating dtype for
            ``"serial"``).

        Returns
        -------
        torch.Tensor
            ``u(T)``, same shape and dtype, on every rank.
        """
        grad = torch.is_grad_enabled()
        self._check_input(u0, grad)
        if not grad:
            return self._run_forward(u0.detach(), graph=False)[0]
        params = [p for p in self._block_params if p.requires_grad]
        return _LayerParallelFunction.apply(self, u0, self._anchor, *params)

    # -- dtypes and tolerances ----------------------------------------------------------------
    def _agreed_dtype(self) -> torch.dtype | None:
        """Find the one floating dtype of all blocks' parameters and buffers, on every rank (collective)."""
        found: dict[str, set[int]] = {}
        for key, module in self.layers.items():
            for t in itertools.chain(module.parameters(), module.buffers()):
                if t.is_floating_point():
                    found.setdefault(str(t.dtype).removeprefix("torch."), set()).add(int(key))
        if self._size > 1:
            merged: dict[str, set[int]] = {}
            for part in self.comm.allgather(found):
                for name, layers in part.items():
                    merged.setdefault(name, set()).update(layers)
            found = merged
        if len(found) > 1:
            listing = " and ".join(
                f"torch.{name} in layer(s) {_compact(layers)}" for name, layers in sorted(found.items())
            )
            raise TypeError(
                f"the blocks must all have one dtype (it is the dtype of the states), got {listing}; "
                "convert them with .float() or .double()"
            )
        return getattr(torch, next(iter(found))) if found else None

    def _check_engine_dtype(self, dtype: torch.dtype, what: str) -> None:
        if self.mode != "serial" and dtype not in ENGINE_DTYPES:
            raise TypeError(
                f"mode={self.mode!r} runs on the engine's float32 or float64 states; {what} {dtype} "
                "(convert with .float() or .double(), or use mode='serial')"
            )

    def _tolerances(self, dtype: torch.dtype) -> tuple[float, float]:
        """(tol, adjoint_tol) for states of ``dtype``: the defaults of that dtype, or the given ones if resolvable."""
        eps = torch.finfo(dtype).eps
        out = []
        for name, value in (("tol", self._tol), ("adjoint_tol", self._adjoint_tol)):
            if value is None:
                value = DEFAULT_TOLERANCES[dtype]
            elif value < eps:
                raise ValueError(
                    f"{name}={value:g} is below the machine epsilon of {dtype} states ({eps:.3g}): their residual "
                    f"cannot get that small relative to the first; use {name} >= {eps:.3g} (default for {dtype}: "
                    f"{DEFAULT_TOLERANCES[dtype]:g})" + (" or float64 blocks" if dtype == torch.float32 else "")
                )
            out.append(value)
        return out[0], out[1]

    # -- checks ---------------------------------------------------------------------------
    def _check_input(self, u0: Any, grad: bool) -> None:
        error = None
        info: tuple = ()
        stats = self._survey()
        try:
            if not isinstance(u0, torch.Tensor):
                raise TypeError(f"u0 must be a torch.Tensor of shape (batch, *features), got {type(u0).__name__}")
            if u0.dim() < 1 or u0.numel() == 0:
                raise ValueError(
                    f"u0 must have shape (batch, *features) with no empty dimension, got {tuple(u0.shape)}"
                )
            self._check_engine_dtype(u0.dtype, "u0 is")
            if u0.device.type != "cpu":
                raise TypeError(
                    f"LayerParallel needs u0 on the CPU (the engine's memory and MPI messages), got device {u0.device}"
                )
            if any(p.dtype != u0.dtype or p.device != u0.device for p in self._block_params):
                name, p = next(
                    (n, p) for n, p in self.named_parameters() if p.dtype != u0.dtype or p.device != u0.device
                )
                raise TypeError(
                    f"parameter {name} is {p.dtype} on {p.device}, u0 is {u0.dtype} on "
                    f"{u0.device}; the blocks and u0 must agree (the blocks' dtype is that of the states)"
                )
            if self.check_inputs and self._size > 1:
                crc = zlib.crc32(np.ascontiguousarray(u0.detach().numpy()).view(np.uint8).reshape(-1).data)
            else:
                crc = 0
            info = (tuple(u0.shape), str(u0.dtype), crc, grad)
        except Exception as exc:  # reported to every rank below
            error = exc
        if self._size == 1:
            if error is not None:
                raise error
            self._any_stats = stats
            return
        reports = self.comm.allgather((None if error is None else f"{type(error).__name__}: {error}", info, stats))
        if error is not None:
            raise error
        for r, (report, _, _) in enumerate(reports):
            if report is not None:
                raise RemoteRankError(f"rank {r} rejected its LayerParallel input: {report}", r)
        infos = [rep[1] for rep in reports]
        if any(i[:2] != infos[0][:2] for i in infos):
            raise ValueError(
                f"u0 differs between ranks (shape, dtype): {[i[:2] for i in infos]}; call the layer "
                "on every rank with the same u0"
            )
        if any(i[3] != infos[0][3] for i in infos):
            raise ValueError(
                "autograd is enabled on some ranks and disabled (torch.no_grad) on others; "
                "every rank must run the same forward"
            )
        if self.check_inputs and any(i[2] != infos[0][2] for i in infos):
            differ = [r for r, i in enumerate(infos) if i[2] != infos[0][2]]
            raise ValueError(
                f"u0 differs between ranks (its values on rank(s) {differ} are not those of rank 0); "
                "every rank must pass the same u0 (seed any randomness in the opening layer)"
            )
        self._any_stats = any(rep[2] for rep in reports)

    def _survey(self) -> bool:
        """Walk the blocks once per forward pass; return whether a block updates buffers (BatchNorm statistics).

        Sets ``_block_params`` (every parameter, in ``parameters()`` order),
        ``_block_buffers`` and ``_random`` (the layers with active dropout).
        """
        params: dict[int, torch.Tensor] = {}
        buffers: dict[int, torch.Tensor] = {}
        random: set[int] = set()
        stats = False
        for key, block in self.layers.items():
            for m in block.modules():
                if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
                    random.add(int(key))
                own = [b for b in m._buffers.values() if b is not None]
                stats = stats or (m.training and bool(own))
                buffers.update((id(b), b) for b in own)
                params.update((id(p), p) for p in m._parameters.values() if p is not None)
        self._block_params, self._block_buffers, self._random = list(params.values()), list(buffers.values()), random
        self._local_stats = stats
        return stats

    def vmappable(self) -> bool:
        """Whether batch_steps may evaluate this rank's blocks under one ``torch.func.vmap`` (this pass).

        Needs one architecture for all owned blocks (checked at construction)
        and no block that updates buffers (BatchNorm in training mode: its
        running statistics are written in place, per block) or draws random
        numbers (active dropout: each layer's mask comes from its own seeded
        generator); otherwise the grouped steps are taken one by one.
        """
        return self._uniform and not self._local_stats and not self._random

    # -- blocks ---------------------------------------------------------------------------

    def call_block(self, k: int, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """F_k(x) with this pass's dropout seed for layer k (and ``params`` replacing the parameters)."""
        module = self.layers[str(k)]
        if k in self._random:
            state = torch.get_rng_state()
            torch.default_generator.manual_seed(hash((self._base_seed, self._pass_seed, k)) % (2**63))
            try:
                return self._call(module, x, params)
            finally:
                torch.set_rng_state(state)
        return self._call(module, x, params)

    @staticmethod
    def _call(module: torch.nn.Module, x: torch.Tensor, params: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if params is None:
            return module(x)
        return torch.func.functional_call(module, params, (x,))

    # -- forward / backward -----------------------------------------------------------------
    def _run_forward(self, u0: torch.Tensor, graph: bool) -> tuple[torch.Tensor, Any]:
        """u(T) and what the backward needs (mode-specific)."""
        self._passes += 1
        self._pass_seed = self._passes
        if self.mode == "serial":
            return serial_forward(self, u0, graph)
        snapshot = self._snapshot_buffers()
        shape, dtype = tuple(u0.shape), u0.dtype
        u0_np = np.ascontiguousarray(u0.detach().numpy())
        if not graph:
            app, solver = self._engine(shape, dtype, adjoint=False)
            app.begin(u0_np, None)
            solver.reset()
            result = self._solve(solver, "forward (no grad)", snapshot)
            self.last_forward = result
            uT = torch.from_numpy(solver.state_at(self.depth))  # may step (state_query): restore again
            self._restore_buffers(snapshot)
            self._update_statistics(solver, snapshot)
            return uT, None
        app, solver = self._engine(shape, dtype, adjoint=True)
        warm = self.mode == "one_shot" and self._warm == (shape, dtype) and app.loaded is not None
        app.begin(u0_np, app.seed if warm else None)
        if warm:
            solver.refresh_initial_condition()
        else:
            solver.reset()
        result = self._solve(solver, "forward", snapshot)
        self.last_forward = result
        self._warm = (shape, dtype)
        app.loaded = self._passes
        uT = torch.from_numpy(solver.state_at(self.depth))  # may step (state_query): restore again
        self._restore_buffers(snapshot)
        self._update_statistics(solver, snapshot)
        return uT, (shape, dtype, self._passes, u0_np, self._pass_seed)

    def _run_backward(self, saved: Any, g: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        if self.mode == "serial":
            return serial_backward(self, saved, g)
        shape, dtype, token, u0_np, self._pass_seed = saved
        app, solver = self._engine(shape, dtype, adjoint=True)
        snapshot = self._snapshot_buffers()
        if app.loaded != token:
            # Another forward ran on this solver since (or it was rebuilt): solve
            # this pass's forward again, so that the adjoint linearises about it.
            app.begin(u0_np, None)
            solver.reset()
            self._solve(solver, "forward (again, for backward)", snapshot)
            app.loaded = token
        app.seed = np.ascontiguousarray(g.detach().to(dtype).numpy()).reshape(shape)
        params = app.begin_gradient()
        result = self._solve(solver, "backward", snapshot)
        self.last_backward = result
        grads = app.end_gradient()
        gu0 = torch.empty(shape, dtype=dtype)
        if self._rank == 0:
            assert app.u0_bar is not None, "the engine gave no init_adjoint"
            gu0.copy_(app.u0_bar)
        if self._size > 1:
            self.comm.Bcast(gu0.numpy(), root=0)
        # (accumulated in float64: a float32 parameter gets its gradient rounded once, at the end)
        by_param = {id(p): gr.to(p.dtype) for p, gr in zip(params, grads, strict=True)}
        return gu0, [by_param.get(id(p)) for p in self._grad_params]

    def _solve(self, solver: Solver, what: str, snapshot: list) -> SolveResult:
        app = solver._app
        assert isinstance(app, LayerParallelApp)
        try:
            result = solver.solve()
        except BaseException:
            # a failed solver cannot be reused: build a new one next time
            self._engines.clear()
            self._warm = None
            raise
        finally:
            self._restore_buffers(snapshot)
            app.end_solve()
        if self.mode == "exact" and not result.converged:
            adj = result.adjoint_residual_norms
            dtype = app.torch_dtype
            tol, adjoint_tol = self._tolerances(dtype)
            hint = "raise max_iter or loosen the tolerances"
            if dtype == torch.float32:
                hint += " (float32 states: round-off stops the relative residual near 1e-7..1e-6; or use float64)"
            warnings.warn(
                f"LayerParallel {what}: MGRIT did not reach tol={tol:g} / adjoint_tol={adjoint_tol:g} "
                f"(relative) in max_iter={self._options['max_iter']} iterations (residual "
                f"{result.residual_norms[-1]:.3g}" + (f", adjoint {adj[-1]:.3g}" if adj.size else "") + f"); {hint}",
                ConvergenceWarning,
                stacklevel=4,
            )
        return result

    def _engine(self, shape: tuple, dtype: torch.dtype, adjoint: bool) -> tuple[LayerParallelApp, Solver]:
        key = (shape, dtype, adjoint)
        if key in self._engines:
            self._engines.move_to_end(key)
            return self._engines[key]
        tol, adjoint_tol = self._tolerances(dtype)
        # (the engine groups steps only for an App class that defines step_batch)
        app = (BatchedLayerParallelApp if self.batch_steps else LayerParallelApp)(self, shape, dtype)
        opts = dict(self._options)
        if self.mode == "one_shot" and adjoint:  # a fixed number of iterations
            opts.update(abs_tol=0.0, abs_tol_adjoint=0.0)
        else:  # converged (no-grad forwards are exact in every mode)
            opts["rel_tol"] = tol
            if adjoint:
                opts["rel_tol_adjoint"] = adjoint_tol
            if self.mode == "one_shot":
                opts["max_iter"] = 100
        if adjoint:
            opts.update(adjoint=True, tstart_objective=self.T, tstop_objective=self.T)
        if opts["max_levels"] > 1:
            opts["skip"] = False
        solver = Solver(app, 0.0, self.T, self.depth, comm=self.comm, access_level=0, **opts)
        same_kind = [k for k in self._engines if k[2] == adjoint]
        if len(same_kind) >= _CACHE:  # least recently used first (a backward rebuilds what it needs)
            del self._engines[same_kind[0]]
        self._engines[key] = (app, solver)
        return app, solver

    # -- buffers (BatchNorm running statistics) -------------------------------------------------
    def _snapshot_buffers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(b, b.clone()) for b in self._block_buffers]

    @staticmethod
    def _restore_buffers(snapshot: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        with torch.no_grad():
            for b, saved in snapshot:
                b.copy_(saved)

    def _update_statistics(self, solver: Solver, snapshot: list) -> None:
        """One plain forward of every owned layer on the solution's states (buffers like BatchNorm's)."""
        if not self._any_stats:
            return
        states = solver.local_states()  # collective; may step
        self._restore_buffers(snapshot)
        ilower, iupper = self._intervals[self._rank]
        halo = None
        if self._size > 1:
            send = states[-1] if self._rank < self._size - 1 else None
            left = self._rank - 1 if self._rank > 0 else MPI.PROC_NULL
            right = self._rank + 1 if self._rank < self._size - 1 else MPI.PROC_NULL
            halo = np.empty(states.shape[1:], dtype=states.dtype)
            self.comm.Sendrecv(
                send if send is not None else np.empty(0),
                dest=right,
                sendtag=77,
                recvbuf=halo if left != MPI.PROC_NULL else np.empty(0),
                source=left,
                recvtag=77,
            )
        # agreed: a block failing here on one rank must not leave the others in the next solve
        with _Agreed(self.comm, "forward pass (running statistics of the blocks)"), torch.no_grad():
            for k in self._owned:
                x = states[k - ilower] if k >= ilower else halo
                self.call_block(k, torch.from_numpy(np.ascontiguousarray(x)))


class _LayerParallelFunction(torch.autograd.Function):
    """Autograd node of one LayerParallel forward: inputs (lp, u0, anchor, *owned parameters)."""

    @staticmethod
    def forward(
        ctx: Any, lp: LayerParallel, u0: torch.Tensor, anchor: torch.Tensor, *params: torch.Tensor
    ) -> torch.Tensor:
        lp._grad_params = list(params)
        uT, saved = lp._run_forward(u0.detach(), graph=True)
        ctx.lp, ctx.saved, ctx.params = lp, saved, list(params)
        return uT

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        lp = ctx.lp
        if ctx.saved is None:
            raise RuntimeError(
                "LayerParallel: this forward pass's saved state was freed (backward called twice without retain_graph?)"
            )
        lp._grad_params = ctx.params
        gu0, grads = lp._run_backward(ctx.saved, g.contiguous())
        return (None, gu0.to(g.dtype), None, *grads)
