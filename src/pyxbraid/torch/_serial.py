"""mode="serial": plain forward and backpropagation through the blocks, rank after rank.

Rank r runs its layers on the state it receives from rank r - 1 (rank 0 on
u0) and sends its last state on; the last rank broadcasts u(T). Backward runs
the other way, keeping each rank's autograd graph from the forward, and rank 0
broadcasts u0's gradient. Every message is preceded by a header that says
whether the ranks before succeeded, and the final broadcast carries the
outcome, so a failure on one rank raises on every rank (its own exception
there, RemoteRankError elsewhere) and nobody waits forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import RemoteRankError

if TYPE_CHECKING:
    from ._layer_parallel import LayerParallel

_TAG_HEAD, _TAG_DATA = 7101, 7102


def _receive(lp: LayerParallel, source: int, shape: tuple, dtype: torch.dtype) -> tuple[int, torch.Tensor | None]:
    header = np.zeros(2, dtype=np.int64)
    lp.comm.Recv(header, source=source, tag=_TAG_HEAD)
    if header[0] != 1:
        return int(header[1]), None
    buf = torch.empty(shape, dtype=dtype)
    lp.comm.Recv(buf.numpy(), source=source, tag=_TAG_DATA)
    return -1, buf


def _send(lp: LayerParallel, dest: int, failed: int, data: torch.Tensor | None) -> None:
    header = np.array([1, -1] if failed < 0 else [0, failed], dtype=np.int64)
    lp.comm.Send(header, dest=dest, tag=_TAG_HEAD)
    if failed < 0:
        assert data is not None
        lp.comm.Send(np.ascontiguousarray(data.detach().numpy()), dest=dest, tag=_TAG_DATA)


def _outcome(lp: LayerParallel, root: int, failed: int, failure: BaseException | None, what: str) -> None:
    """Everyone learns from ``root`` whether some rank failed; raise accordingly."""
    final = np.array([failed], dtype=np.int64)
    if lp._size > 1:
        lp.comm.Bcast(final, root=root)
    if failure is not None:
        raise failure
    if final[0] >= 0:
        raise RemoteRankError(f"rank {int(final[0])} failed in the {what} of its layers (mode='serial')", int(final[0]))


def serial_forward(lp: LayerParallel, u0: torch.Tensor, graph: bool) -> tuple[torch.Tensor, Any]:
    rank, size = lp._rank, lp._size
    shape, dtype = tuple(u0.shape), u0.dtype
    failed, failure = -1, None
    x_in: torch.Tensor | None = None
    out: torch.Tensor | None = None
    received: torch.Tensor | None
    if rank > 0:
        failed, received = _receive(lp, rank - 1, shape, dtype)
    else:
        received = u0.detach()
    if failed < 0:
        try:
            assert received is not None
            with torch.enable_grad() if graph else torch.no_grad():
                x_in = received.detach().requires_grad_(graph)
                out = x_in
                for k in lp._owned:
                    out = out + lp.h * lp.call_block(k, out)
        except BaseException as exc:  # noqa: BLE001 - re-raised after the others know
            failure, failed = exc, rank
    if rank < size - 1:
        _send(lp, rank + 1, failed, out)
    _outcome(lp, size - 1, failed, failure, "forward pass")
    uT = torch.empty(shape, dtype=dtype)
    if rank == size - 1:
        assert out is not None
        uT.copy_(out.detach())
    if size > 1:
        lp.comm.Bcast(uT.numpy(), root=size - 1)
    return uT, ((x_in, out, lp._pass_seed) if graph else None)


def serial_backward(lp: LayerParallel, saved: Any, g: torch.Tensor) -> tuple[torch.Tensor, list]:
    rank, size = lp._rank, lp._size
    x_in, out, _ = saved
    shape, dtype = tuple(g.shape), g.dtype
    params = lp._grad_params
    failed, failure = -1, None
    gx: torch.Tensor | None = None
    grads: list[torch.Tensor | None] = [None] * len(params)
    gout: torch.Tensor | None
    if rank < size - 1:
        failed, gout = _receive(lp, rank + 1, shape, dtype)
    else:
        gout = g
    if failed < 0:
        try:
            assert gout is not None
            if out is x_in or not out.requires_grad:  # no layer here (or nothing depends on u): pass through
                gx = gout if out is x_in else torch.zeros_like(gout)
            else:
                inputs = [x_in, *params]
                got = torch.autograd.grad(out, inputs, gout, allow_unused=True)
                gx = got[0] if got[0] is not None else torch.zeros_like(gout)
                grads = list(got[1:])
        except BaseException as exc:  # noqa: BLE001
            failure, failed = exc, rank
    if rank > 0:
        _send(lp, rank - 1, failed, gx)
    _outcome(lp, 0, failed, failure, "backward pass")
    gu0 = torch.empty(shape, dtype=dtype)
    if rank == 0:
        assert gx is not None
        gu0.copy_(gx)
    if size > 1:
        lp.comm.Bcast(gu0.numpy(), root=0)
    return gu0, grads
