"""The network and data of tests/test_torch_multilevel.py (imported by its scripts on several ranks too)."""

from __future__ import annotations

import functools
import hashlib

import torch

from pyxbraid.torch import LayerParallel

torch.set_num_threads(1)


def block(k):
    torch.manual_seed(k)
    return torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Tanh()).double()


def model(mode="serial", depth=8, **options):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000)
        opening, head = torch.nn.Linear(2, 3).double(), torch.nn.Linear(3, 3).double()
    if mode != "serial":
        options = dict(max_levels=2, cfactor=2, **options)
    return torch.nn.Sequential(opening, LayerParallel(block, depth, T=2.0, mode=mode, **options), head)


def data(n=48, batch=16):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.3).long()
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)], (x, y)


def digest(net):
    state = net.state_dict()  # collective: every block, on every rank
    h = hashlib.sha256()
    for key, value in sorted(state.items()):
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


__all__ = ["ADAM", "LOSS", "block", "data", "digest", "model"]

ADAM = functools.partial(torch.optim.Adam, lr=0.02)
LOSS = torch.nn.functional.cross_entropy
