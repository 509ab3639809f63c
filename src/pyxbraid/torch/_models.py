"""Ready-made networks around LayerParallel."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._layer_parallel import LayerParallel

__all__ = ["ConvResNet"]


def _positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class ConvResNet(torch.nn.Module):
    r"""A convolutional ResNet for images whose residual blocks run layer-parallel.

    ``opening`` (a 3x3 convolution from the image's channels to ``width``
    channels, then ReLU) and ``head`` (2x2 average pooling, flattening, a linear
    classifier) are ordinary modules, replicated on every rank; between them
    ``lp``, a :class:`LayerParallel` of ``depth`` blocks
    ``F_k = ReLU(BatchNorm2d(Conv3x3(u)))``, ``u_{k+1} = u_k + (T / depth) F_k(u_k)``,
    each held by one rank. This is the network of ``pyxbraid-train digits``
    and of ``benchmarks/bench_torch.py``.

    Parameters
    ----------
    image_shape : (int, int, int)
        ``(channels, height, width)`` of one image (height and width >= 2).
    classes : int
        Number of classes (>= 2): the head's outputs (logits).
    width : int, default 8
        Channels of the residual state.
    depth : int, default 16
        Residual blocks (MGRIT time steps).
    T : float, default 2.0
        Final time of the residual flow (step ``h = T / depth``).
    comm : mpi4py.MPI.Comm, default MPI.COMM_WORLD
        The ranks over which the blocks are distributed.
    seed : int, default 0
        Seeds the opening and head (``torch.manual_seed(100003 * seed)``) and
        block ``k`` (``100003 * seed + k + 1``), so the network is the same on
        any rank count. The global torch generator is left as it was.
    dtype : torch.dtype, default torch.float64
        dtype of every parameter, hence of the states (float32 or float64 for
        the MGRIT modes).
    **options
        Keyword arguments of :class:`LayerParallel` (``mode``, ``max_levels``,
        ``cfactor``, ``max_iter``, ``coarse``, ``tol``, ...).

    Examples
    --------
    >>> import torch
    >>> from pyxbraid.torch import ConvResNet
    >>> net = ConvResNet((1, 8, 8), classes=10, width=4, depth=8, mode="exact", max_levels=2, cfactor=4)
    >>> x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    >>> logits = net(x)
    >>> logits.shape
    torch.Size([5, 10])
    >>> torch.nn.functional.cross_entropy(logits, torch.arange(5)).backward()
    >>> net.opening[0].weight.grad.shape, net.num_parameters()
    (torch.Size([4, 1, 3, 3]), 1938)
    """

    opening: torch.nn.Sequential
    lp: LayerParallel
    head: torch.nn.Sequential

    def __init__(
        self,
        image_shape: Sequence[int],
        classes: int,
        width: int = 8,
        depth: int = 16,
        T: float = 2.0,
        comm: Any = None,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        **options: Any,
    ) -> None:
        super().__init__()
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
        if shape is None or len(shape) != 3:
            raise TypeError(f"image_shape must be (channels, height, width), got {image_shape!r}")
        channels = _positive("image_shape[0] (channels)", shape[0])
        height = _positive("image_shape[1] (height)", shape[1], 2)
        cols = _positive("image_shape[2] (width)", shape[2], 2)
        classes = _positive("classes", classes, 2)
        width = _positive("width", width)
        seed = _positive("seed", seed, 0)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
        base = 100_003 * seed

        def block(k: int) -> torch.nn.Module:  # built only on the rank that owns layer k
            torch.manual_seed(base + k + 1)
            conv = torch.nn.Conv2d(width, width, 3, padding=1)
            return torch.nn.Sequential(conv, torch.nn.BatchNorm2d(width), torch.nn.ReLU()).to(dtype)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(base)  # the same opening and head on every rank
            self.opening = torch.nn.Sequential(torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU())
            self.head = torch.nn.Sequential(
                torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(width * (height // 2) * (cols // 2), classes)
            )
            self.opening.to(dtype)
            self.head.to(dtype)
            self.lp = LayerParallel(block, depth=depth, T=T, comm=comm, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of images ``x`` of shape ``(n, *image_shape)`` (collective, as :class:`LayerParallel`)."""
        return self.head(self.lp(self.opening(x)))

    def num_parameters(self) -> int:
        """Return the number of parameters of the whole network, every rank's blocks counted (collective)."""
        local = sum(p.numel() for p in self.lp.parameters())
        shared = sum(p.numel() for m in (self.opening, self.head) for p in m.parameters())
        total = self.lp.comm.allreduce(local) if self.lp.comm.Get_size() > 1 else local
        return int(total) + shared
