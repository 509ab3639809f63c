"""A hierarchy in depth of LayerParallel modules: restriction and prolongation of the blocks' tensors.

From a :class:`LayerParallel` of depth ``N`` (step ``h = T / N``), level ``l``
is a LayerParallel of the same blocks' architecture with depth ``N / 2**l``
(step ``2**l h``) on the same ``[0, T]``, built with the fine module's
``block`` callable and settings (mode, MGRIT options, communicator). Block
``k`` of a level with step ``h`` acts on ``[k h, (k + 1) h]``; its tensors
sit at the midpoint ``(k + 1/2) h``. The stencils are those of
:mod:`pyxbraid.nn.hierarchy`:

* parameters: restriction ``"average"`` (mean of fine blocks ``2j``,
  ``2j + 1``; exact for parameters constant or linear in t) or ``"inject"``
  (fine block ``2j``; exact for constant ones); prolongation ``"linear"``
  (linear in t between the coarse midpoints, linear extrapolation at the two
  ends; exact for constant or linear parameters) or ``"constant"``;
* floating buffers (BatchNorm's running mean and variance): restricted like
  the parameters, but always prolonged piecewise constant. Both are then
  convex combinations, so a running variance stays positive (linear
  extrapolation at the ends, ``5/4 c_0 - 1/4 c_1``, need not). They matter
  for evaluation only (a block in training mode normalises with the batch's
  statistics), and the next training epoch on the level overwrites them;
* integer buffers (BatchNorm's ``num_batches_tracked``): injected and
  prolonged piecewise constant (a copy, never a mean of counts);
* gradients (:meth:`Hierarchy.restrict_gradients`, what MG/Opt's coarse
  objective needs): ``P^T``, the transpose of the parameters' prolongation,
  so that ``<P x, g> = <x, P^T g>``.

Distribution: each level is distributed over the fine module's communicator
with the usual block distribution of its ``depth + 1`` time points (block
``k`` on the owner of point ``k + 1``). Coarse block ``j`` lives with coarse
point ``j + 1`` = fine point ``2j + 2``, the owner of fine block ``2j + 1``;
its other fine neighbours (block ``2j``, and ``2j - 1 .. 2j + 2`` for the
linear prolongation) sit on the same rank except where a rank boundary falls
between them, and then on the neighbouring rank. A transfer sends exactly
those blocks' tensors (one ``alltoall`` over the communicator, in which only
neighbours send anything; nothing at all on one rank), then every rank
applies the stencil to its own blocks, summing each row's terms in the
stencil's order in float64: the transferred tensors are the same on any
rank count, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import _Agreed
from ..nn.hierarchy import (
    PROLONGATIONS,
    RESTRICTIONS,
    Stencil,
    _check_choice,
    _exchange,
    _transpose,
    check_levels,
    prolongation_stencil,
    restriction_stencil,
)
from ..nn.network import _Layout
from ._layer_parallel import LayerParallel

__all__ = ["Hierarchy"]

# the three kinds of a block's tensors, each with its own stencils (see the module docstring)
_PARAMETER, _BUFFER, _COUNT = "parameter", "buffer", "count"


def _entries(block: torch.nn.Module) -> list[tuple[str, torch.Tensor, str]]:
    """Return a block's tensors in a fixed order: (name, tensor, kind), parameters first."""
    out: list[tuple[str, torch.Tensor, str]] = [(n, p, _PARAMETER) for n, p in block.named_parameters()]
    out += [(n, b, _BUFFER if b.is_floating_point() else _COUNT) for n, b in block.named_buffers()]
    return out


def _describe(block: torch.nn.Module) -> tuple:
    return tuple((n, tuple(t.shape), str(t.dtype), kind) for n, t, kind in _entries(block))


def _padded(rows: Stencil) -> tuple[np.ndarray, np.ndarray]:
    """Return a stencil as (indices, weights) arrays of shape (outputs, entries); padding has weight 0."""
    width = max(len(r) for r in rows)
    index = np.array([[j for j, _ in r] + [r[0][0]] * (width - len(r)) for r in rows], dtype=np.int64)
    weight = np.array([[w for _, w in r] + [0.0] * (width - len(r)) for r in rows])
    return index, weight


class Hierarchy:
    """LayerParallel modules of depth ``N, N/2, ..., N/2**(levels-1)`` and the transfers between them.

    Construction and the transfers are collective over the fine module's
    communicator (call them on every rank).

    Parameters
    ----------
    lp : LayerParallel
        The finest module (level 0). Its blocks must share one architecture
        (parameter and buffer names, shapes and dtypes): level ``l`` holds
        ``block(j)`` of the fine module's ``block`` callable for its own
        ``j = 0 .. N/2**l - 1``, whose values the transfers overwrite. The
        global torch generator is left as it was (a ``block`` that seeds it
        does not change the caller's random stream).
    levels : int, default 2
        Number of levels; the depth must be divisible by ``2**(levels - 1)``
        and the coarsest level needs at least as many time points
        (``depth + 1``) as there are ranks.
    restriction : {"average", "inject"}
    prolongation : {"linear", "constant"}
        See :mod:`pyxbraid.torch._hierarchy` (the stencils, and how buffers
        are treated).

    Attributes
    ----------
    lps : list of LayerParallel
        ``lps[0]`` is ``lp``; ``lps[l]`` has depth ``N / 2**l`` and step ``2**l h``.

    Examples
    --------
    >>> import torch
    >>> from pyxbraid.torch import Hierarchy, LayerParallel
    >>> def block(k):
    ...     torch.manual_seed(k)
    ...     return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()).double()
    >>> lp = LayerParallel(block, depth=8, mode="serial")
    >>> h = Hierarchy(lp, levels=3)
    >>> [m.depth for m in h.lps], [m.h for m in h.lps]
    ([8, 4, 2], [0.125, 0.25, 0.5])
    >>> h.restrict(0)          # level 0 -> 1: coarse block j = mean of fine blocks 2j, 2j + 1
    >>> w = lambda m, k: m.layer(k)[0].weight
    >>> bool(torch.equal(w(h.lps[1], 1), 0.5 * w(lp, 2) + 0.5 * w(lp, 3)))
    True
    >>> h.prolong(0)           # level 1 -> 0: linear in t between the coarse midpoints
    >>> bool(torch.allclose(w(lp, 3), 0.75 * w(h.lps[1], 1) + 0.25 * w(h.lps[1], 2)))
    True
    """

    lps: list[LayerParallel]

    def __init__(
        self, lp: LayerParallel, levels: int = 2, restriction: str = "average", prolongation: str = "linear"
    ) -> None:
        if not isinstance(lp, LayerParallel):
            raise TypeError(f"lp must be a pyxbraid.torch.LayerParallel, got {type(lp).__name__}")
        comm = lp.comm
        with _Agreed(comm, "Hierarchy arguments"):
            self.levels = check_levels(levels, lp.depth, comm.Get_size())
            self.restriction = _check_choice("restriction", restriction, RESTRICTIONS)
            self.prolongation = _check_choice("prolongation", prolongation, PROLONGATIONS)
        self.comm = comm
        self.lps = [lp]
        with torch.random.fork_rng(devices=[]):  # a block(k) that seeds must not move the caller's stream
            for level in range(1, self.levels):
                self.lps.append(LayerParallel(lp._block_factory, lp.depth // 2**level, lp.T, comm, **lp._settings))
        self._entries = self._agreed_entries()
        self._stencils: dict[tuple[str, int], dict[str, tuple[np.ndarray, np.ndarray]]] = {}

    def __repr__(self) -> str:
        return (
            f"Hierarchy(depths={[m.depth for m in self.lps]}, restriction={self.restriction!r}, "
            f"prolongation={self.prolongation!r})"
        )

    def _agreed_entries(self) -> tuple:
        """Return the blocks' common tensor layout, checked over every level's blocks on every rank (TypeError)."""
        error = None
        found: tuple | None = None
        try:
            for level, m in enumerate(self.lps):
                for k in m.owned_layers:
                    d = _describe(m.layer(k))
                    if found is None:
                        found = d
                    elif d != found:
                        raise TypeError(
                            f"a Hierarchy needs blocks of one architecture (the same parameter and buffer names, "
                            f"shapes and dtypes); level {level}'s block {k} has {list(d)}, another has {list(found)}"
                        )
        except TypeError as exc:
            error = exc
        with _Agreed(self.comm, "Hierarchy blocks"):
            if error is not None:
                raise error
        layouts = self.comm.allgather(found) if self.comm.Get_size() > 1 else [found]
        known = [d for d in layouts if d is not None]
        if any(d != known[0] for d in known):
            raise TypeError(
                "a Hierarchy needs blocks of one architecture (the same parameter and buffer names, shapes and "
                f"dtypes); the ranks' blocks differ: {[list(d) if d else None for d in layouts]}"
            )
        return known[0] if known else ()

    # -- the transfers ----------------------------------------------------------------------
    def restrict(self, level: int = 0) -> None:
        """Set the blocks of level ``level + 1`` to the restriction of those of ``level`` (collective)."""
        self._transfer(self._level(level), level, level + 1, "R")

    def prolong(self, level: int = 0) -> None:
        """Set the blocks of level ``level`` to the prolongation of those of ``level + 1`` (collective)."""
        self._transfer(self._level(level), level + 1, level, "P")

    def _level(self, level: Any) -> int:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level < self.levels - 1:
            raise ValueError(
                f"level must be an integer in 0 .. {self.levels - 2} (a transfer between level and level + 1 of "
                f"{self.levels} levels), got {level!r}"
            )
        return int(level)

    def _stencil(self, which: str, level: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Return the stencils of one transfer, per kind of tensor (see the module docstring)."""
        key = (which, level)
        if key not in self._stencils:
            nf = self.lps[level].depth
            if which == "R":
                own = restriction_stencil(nf, self.restriction)
                rows = {_PARAMETER: own, _BUFFER: own, _COUNT: restriction_stencil(nf, "inject")}
            elif which == "PT":  # gradients (parameters only; the buffers' rows are carried and dropped)
                transpose = _transpose(prolongation_stencil(nf // 2, self.prolongation), nf // 2)
                inject = restriction_stencil(nf, "inject")
                rows = {_PARAMETER: transpose, _BUFFER: inject, _COUNT: inject}
            else:
                constant = prolongation_stencil(nf // 2, "constant")
                rows = {_PARAMETER: prolongation_stencil(nf // 2, self.prolongation), _BUFFER: constant}
                rows[_COUNT] = constant
            self._stencils[key] = {kind: _padded(r) for kind, r in rows.items()}
        return self._stencils[key]

    def prolong_tensors(
        self, level: int, coarse: Mapping[torch.Tensor, torch.Tensor]
    ) -> dict[torch.Tensor, torch.Tensor]:
        """Return per-parameter tensors of level ``level`` prolonged from those of ``level + 1`` (collective).

        For what goes with the parameters: an optimizer's moments, a correction. ``coarse`` maps
        parameters of level ``level + 1``'s owned blocks to tensors of their shapes (a parameter
        left out counts as zeros); the result maps every parameter of level ``level``'s owned
        blocks to a new tensor, prolonged with the parameters' stencil ``P``. The blocks are left
        as they are.
        """
        return self._map_tensors(self._level(level), level + 1, level, "P", coarse)

    def restrict_gradients(
        self, level: int, fine: Mapping[torch.Tensor, torch.Tensor]
    ) -> dict[torch.Tensor, torch.Tensor]:
        """Return ``P^T g``: per-parameter gradients of level ``level`` taken to level ``level + 1`` (collective).

        The transpose of :meth:`prolong_tensors`' stencil, so that ``<P x, g> = <x, P^T g>``: the
        gradient of ``x_c -> f(x + P x_c)`` at ``x_c = 0`` is ``P^T grad f(x)`` (what MG/Opt's
        first-order coherent coarse objective needs). ``fine`` maps parameters of level
        ``level``'s owned blocks to tensors of their shapes (missing: zeros); the result maps every
        parameter of level ``level + 1``'s owned blocks to a new tensor.
        """
        return self._map_tensors(self._level(level), level, level + 1, "PT", fine)

    def _map_tensors(
        self, level: int, src: int, dst: int, which: str, given: Mapping[torch.Tensor, torch.Tensor]
    ) -> dict[torch.Tensor, torch.Tensor]:
        """Transfer per-parameter tensors of level ``src`` to level ``dst`` with stencil ``which``."""
        out: dict[torch.Tensor, torch.Tensor] = {}
        what = "prolong_tensors" if which == "P" else "restrict_gradients"

        def source(t: torch.Tensor) -> torch.Tensor:
            value = given.get(t)
            if value is None:
                return torch.zeros_like(t)
            if not isinstance(value, torch.Tensor) or value.shape != t.shape:
                raise ValueError(
                    f"{what}: the value of a parameter of shape {tuple(t.shape)} must be a tensor of that shape, "
                    f"got {type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
                )
            return value

        def sink(t: torch.Tensor) -> torch.Tensor:
            if isinstance(t, torch.nn.Parameter):
                out[t] = torch.empty_like(t, requires_grad=False)
                return out[t]
            return t.detach().clone()  # (buffers are carried along and dropped)

        self._transfer(level, src, dst, which, source, sink)
        return out

    def _transfer(
        self,
        fine: int,
        src: int,
        dst: int,
        which: str,
        source: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sink: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """Transfer level ``src`` to ``dst``: the blocks' tensors, or ``source(t)`` into ``sink(t)``."""
        a, b = self.lps[src], self.lps[dst]
        stencils = self._stencil(which, fine)
        sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape, _, _ in self._entries]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        width = int(offsets[-1])
        rank, size = self.comm.Get_rank(), self.comm.Get_size()
        # agreed: a rank failing here (a tensor of the wrong shape, say) must not leave the others in the exchange
        with _Agreed(self.comm, "Hierarchy transfer (the tensors sent)"):
            rows = [self._flat(a.layer(k), width, source) for k in a.owned_layers]
        block = np.stack(rows) if rows else np.zeros((0, width))
        # one exchange for all kinds: every stencil's inputs
        union = np.concatenate([s[0] for s in stencils.values()], axis=1)
        known, table = _exchange(self.comm, union, _Layout.of(a.depth, rank, size), b.depth, block)
        out = b.owned_layers
        targets = [[t if sink is None else sink(t) for _, t, _ in _entries(b.layer(k))] for k in out]
        with torch.no_grad():
            for entry, ((_, _, _, kind), lo, hi) in enumerate(
                zip(self._entries, offsets[:-1], offsets[1:], strict=True)
            ):
                index, weight = stencils[kind][0][out.start : out.stop], stencils[kind][1][out.start : out.stop]
                if len(index) == 0:
                    continue
                pos = np.searchsorted(known, index)
                cols = table[:, lo:hi]
                # the entries of a row are summed in the stencil's order, whatever the distribution
                acc = weight[:, 0, None] * cols[pos[:, 0]]
                for m in range(1, index.shape[1]):
                    acc += weight[:, m, None] * cols[pos[:, m]]
                for row, tensors in zip(acc, targets, strict=True):
                    t = tensors[entry]
                    t.copy_(torch.from_numpy(np.ascontiguousarray(row)).reshape(t.shape))
        if sink is None:
            for p in b.parameters():
                p.grad = None  # a gradient of the tensors just replaced
            b.reset()  # (one_shot's warm iterate belongs to the old blocks)

    @staticmethod
    def _flat(block: torch.nn.Module, width: int, source: Callable[[torch.Tensor], torch.Tensor] | None) -> np.ndarray:
        flat = np.empty(width)
        start = 0
        for _, t, _ in _entries(block):
            n = t.numel()
            value = t if source is None else source(t)
            flat[start : start + n] = value.detach().reshape(-1).to(torch.float64).numpy()
            start += n
        return flat
