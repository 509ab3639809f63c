"""A hierarchy of residual networks in depth: restriction and prolongation of layer parameters.

From a network of depth ``N`` (step ``h = T / N``), level ``l`` of the
hierarchy is the same architecture with depth ``N / 2**l`` (step
``2**l h``) on the same interval ``[0, T]``. Layer ``k`` of a level with
step ``h`` acts on ``[k h, (k + 1) h]``; its parameters are taken to sit at
the midpoint ``(k + 1/2) h`` of that interval (a cell-centred grid in t).
The operators act on the residual layers only; the opening layer and the
classifier are shared by all levels (copied unchanged).

Restriction (fine -> coarse, parameters):

* ``"average"``: coarse layer ``j`` is the mean of fine layers ``2j`` and
  ``2j + 1`` -- exact for parameters constant or linear in t;
* ``"inject"``: coarse layer ``j`` is fine layer ``2j`` -- exact for
  parameters constant in t.

Prolongation (coarse -> fine):

* ``"linear"``: linear interpolation in t between the coarse midpoints (and
  linear extrapolation at the two ends): fine ``2j`` is
  ``3/4 c_j + 1/4 c_{j-1}``, fine ``2j + 1`` is ``3/4 c_j + 1/4 c_{j+1}`` --
  exact for parameters constant or linear in t;
* ``"constant"``: fine layers ``2j`` and ``2j + 1`` both get coarse layer
  ``j`` -- exact for parameters constant in t.

Gradients go from fine to coarse with the transpose of the prolongation
(:meth:`Hierarchy.restrict_gradient`): the gradient of ``theta_c ->
f(theta + P theta_c)`` is ``P^T grad f``, which is what MG/Opt's
first-order coherence needs.

Distribution: every level is distributed over the same communicator with
the usual block distribution of its time points, so a coarse layer's fine
children live on the same rank, or -- where a rank boundary falls between
them -- on the neighbouring rank. Each transfer first exchanges exactly the
layers a rank needs from the others (one ``alltoall``; only neighbours send
anything), then applies the stencil locally, in a fixed order: the result
does not depend on the number of ranks, bit for bit.

The operators work on a ``(layers, layer_size)`` block of parameters, so
any model whose residual blocks are stored as one flat vector per layer
(e.g. a torch block's parameters flattened) can use the same stencils.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from .network import ResNet, _Layout, _opening_size

__all__ = ["PROLONGATIONS", "RESTRICTIONS", "Hierarchy", "prolongation_stencil", "restriction_stencil"]

RESTRICTIONS = ("average", "inject")
PROLONGATIONS = ("linear", "constant")

Stencil = list[list[tuple[int, float]]]  # row i: [(input index, weight), ...], summed in this order


def restriction_stencil(fine: int, kind: str = "average") -> Stencil:
    """Return the stencil of the restriction from ``fine`` layers to ``fine // 2`` (``fine`` even)."""
    if kind == "average":
        return [[(2 * j, 0.5), (2 * j + 1, 0.5)] for j in range(fine // 2)]
    return [[(2 * j, 1.0)] for j in range(fine // 2)]


def prolongation_stencil(coarse: int, kind: str = "linear") -> Stencil:
    """Return the stencil of the prolongation from ``coarse`` layers to ``2 * coarse``."""
    rows: Stencil = []
    for j in range(coarse):
        if kind == "constant" or coarse == 1:
            rows += [[(j, 1.0)], [(j, 1.0)]]
            continue
        # fine 2j sits a quarter coarse step left of coarse j's midpoint, fine 2j + 1 a quarter right
        rows.append([(j, 0.75), (j - 1, 0.25)] if j > 0 else [(0, 1.25), (1, -0.25)])
        rows.append([(j, 0.75), (j + 1, 0.25)] if j + 1 < coarse else [(j, 1.25), (j - 1, -0.25)])
    return rows


def _transpose(stencil: Stencil, n_in: int) -> Stencil:
    rows: Stencil = [[] for _ in range(n_in)]
    for i, row in enumerate(stencil):
        for j, w in row:
            rows[j].append((i, w))
    return rows


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_levels(levels: Any, depth: int, ranks: int) -> int:
    """Return ``levels`` checked against a network of ``depth`` layers on ``ranks`` ranks (ValueError naming it)."""
    if isinstance(levels, (bool, np.bool_)) or not isinstance(levels, (numbers.Integral, np.integer)) or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    levels = int(levels)
    if levels - 1 > int(depth).bit_length():  # (before 2**(levels - 1), which may be astronomically large)
        raise ValueError(
            f"levels={levels} needs a depth divisible by 2**(levels - 1) (each level halves it), more than "
            f"depth={depth}"
        )
    factor = 2 ** (levels - 1)
    if depth % factor:
        raise ValueError(
            f"levels={levels} needs a depth divisible by 2**(levels - 1) = {factor} (each level halves it), "
            f"got depth={depth}"
        )
    if depth // factor + 1 < ranks:
        raise ValueError(
            f"levels={levels}: the coarsest network has depth {depth // factor}, {depth // factor + 1} time "
            f"points, fewer than the {ranks} ranks; use fewer levels or fewer ranks"
        )
    return levels


class Hierarchy:
    """Networks of depth ``N, N/2, ..., N/2**(levels-1)`` and the transfers between them (collective).

    Parameters
    ----------
    net : ResNet
        The finest network (level 0), distributed or not; the coarse
        networks are built with the same architecture (and ``layer``) and
        distributed over the same communicator.
    levels : int
        Number of levels (1: the network alone). The depth must be divisible
        by ``2**(levels - 1)``.
    restriction : {"average", "inject"}
    prolongation : {"linear", "constant"}

    Attributes
    ----------
    nets : list of ResNet
        ``nets[0]`` is ``net``; ``nets[l]`` has depth ``depth / 2**l``.

    Examples
    --------
    >>> import numpy as np
    >>> from pyxbraid import nn
    >>> from pyxbraid.nn.hierarchy import Hierarchy
    >>> net = nn.ResNet(2, 4, 8, 3, seed=1)
    >>> h = Hierarchy(net, levels=3)
    >>> [n.config.depth for n in h.nets]
    [8, 4, 2]
    >>> coarse = h.restrict(0, net.local_parameters)     # level 0 -> level 1, this rank's part
    >>> h.nets[1].local_parameters[...] = coarse
    >>> fine = h.prolong(0, coarse)                       # level 1 -> level 0
    >>> fine.shape == net.local_parameters.shape
    True
    """

    def __init__(self, net: ResNet, levels: int, restriction: str = "average", prolongation: str = "linear") -> None:
        if not isinstance(net, ResNet):
            raise TypeError(f"net must be a pyxbraid.nn.ResNet, got {type(net).__name__}")
        comm = net.comm
        self.levels = check_levels(levels, net.config.depth, 1 if comm is None else comm.Get_size())
        self.restriction = _check_choice("restriction", restriction, RESTRICTIONS)
        self.prolongation = _check_choice("prolongation", prolongation, PROLONGATIONS)
        self.comm = comm
        self.nets: list[ResNet] = [net]
        for level in range(1, self.levels):
            config = asdict(net.config)
            config["depth"] = net.config.depth // 2**level
            coarse = ResNet(**config, layer=net.layer)
            if comm is not None:
                coarse.distribute(comm)
            self.nets.append(coarse)
        self._stencils: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def depth(self, level: int) -> int:
        """Return the depth of level ``level``."""
        return self.nets[level].config.depth

    # -- the three transfers (level -> level + 1 and back), on this rank's flat parameter vectors --
    def restrict(self, level: int, fine: np.ndarray) -> np.ndarray:
        """Return the parameters of level ``level + 1`` restricted from those of ``level`` (flat, this rank's)."""
        return self._transfer(level, level + 1, fine, self._stencil("R", level))

    def prolong(self, level: int, coarse: np.ndarray) -> np.ndarray:
        """Return the parameters of level ``level`` prolonged from those of ``level + 1`` (flat, this rank's)."""
        return self._transfer(level + 1, level, coarse, self._stencil("P", level))

    def restrict_gradient(self, level: int, fine: np.ndarray) -> np.ndarray:
        """Return ``P^T g``: a gradient of level ``level`` taken to level ``level + 1`` (flat, this rank's)."""
        return self._transfer(level, level + 1, fine, self._stencil("PT", level))

    def _stencil(self, which: str, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the stencil as arrays (indices, weights), each (outputs, entries), padded with weight 0."""
        key = (which, level)
        if key not in self._stencils:
            nf = self.depth(level)
            if which == "R":
                rows = restriction_stencil(nf, self.restriction)
            elif which == "P":
                rows = prolongation_stencil(nf // 2, self.prolongation)
            else:
                rows = _transpose(prolongation_stencil(nf // 2, self.prolongation), nf // 2)
            width = max(len(r) for r in rows)
            # padding: weight 0 on the row's first input (adds +-0, which changes no finite sum)
            index = np.array([[j for j, _ in r] + [r[0][0]] * (width - len(r)) for r in rows], dtype=np.int64)
            weight = np.array([[w for _, w in r] + [0.0] * (width - len(r)) for r in rows])
            self._stencils[key] = (index, weight)
        return self._stencils[key]

    def _transfer(self, src: int, dst: int, flat: np.ndarray, stencil: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        a, b = self.nets[src], self.nets[dst]
        flat = np.asarray(flat, dtype=np.float64)
        if flat.shape != a.local_parameters.shape:
            raise ValueError(
                f"the vector must be laid out like level {src}'s parameters on this rank, shape "
                f"{a.local_parameters.shape}, got {flat.shape}"
            )
        head_a, block_a, tail_a = _split(a, flat)
        out = np.zeros_like(b.local_parameters)
        head_b, block_b, tail_b = _split(b, out)
        head_b[...] = head_a  # the opening and the classifier live on the same ranks at every level
        tail_b[...] = tail_a
        lay_a, lay_b = a._layout, b._layout
        # collective: also on a rank that holds no layer of this level (it may still send some)
        known, table = _exchange(self.comm, stencil[0], lay_a, b.config.depth, block_a)
        index, weight = stencil[0][lay_b.lo : lay_b.hi], stencil[1][lay_b.lo : lay_b.hi]
        if len(index) == 0:
            return out
        pos = np.searchsorted(known, index)
        # the entries of a row are summed in the stencil's order, whatever the distribution
        acc = weight[:, 0, None] * table[pos[:, 0]]
        for m in range(1, index.shape[1]):
            acc += weight[:, m, None] * table[pos[:, m]]
        block_b[...] = acc
        return out


def _split(net: ResNet, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the views (opening, residual layers as (layers, layer_size), classifier) of a flat local vector."""
    lay, size = net._layout, net._layer_spec.size
    start = _opening_size(net.config) if lay.has_opening else 0
    stop = start + (lay.hi - lay.lo) * size
    return flat[:start], flat[start:stop].reshape(lay.hi - lay.lo, size), flat[stop:]


def _exchange(
    comm: Any, index: np.ndarray, lay_in: _Layout, depth_out: int, block: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the input layers this rank's outputs need (sorted indices, rows), fetched from their owners.

    ``index`` is the stencil's (outputs, entries) index array of the whole level; each rank
    sends every other rank the rows it owns that the other's outputs read.
    """
    mine = np.arange(lay_in.lo, lay_in.hi)
    if comm is None or comm.Get_size() == 1:
        return mine, block
    size, rank = comm.Get_size(), comm.Get_rank()
    sends: list[Any] = []
    for q in range(size):
        out_q = _Layout.of(depth_out, q, size)
        need = np.unique(index[out_q.lo : out_q.hi])
        have = need[(need >= lay_in.lo) & (need < lay_in.hi)]
        sends.append(None if q == rank or len(have) == 0 else (have, block[have - lay_in.lo]))
    indices, rows = [mine], [block]
    for got in comm.alltoall(sends):
        if got is not None:
            indices.append(got[0])
            rows.append(got[1])
    known = np.concatenate(indices)
    order = np.argsort(known, kind="stable")
    return known[order], np.concatenate(rows)[order]
