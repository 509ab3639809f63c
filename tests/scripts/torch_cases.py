"""Shared cases of the pyxbraid.torch tests (imported by tests/test_torch.py and its MPI jobs)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)


class Boom(RuntimeError):
    """Raised on purpose by a failing block."""


class _FailBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise Boom("backward of a block failed on purpose")


class FailingBlock(torch.nn.Module):
    """A block that raises in its forward or its backward (``when``)."""

    def __init__(self, when: str) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4).double()
        self.when = when

    def forward(self, x):
        if self.when == "forward":
            raise Boom("forward of a block failed on purpose")
        return torch.tanh(self.lin(_FailBackward.apply(x)))


def block_factory(kind: str, width: int = 3, dropout: float = 0.0, dtype=torch.float64):
    """``block(k)`` for the test networks: seeded by k, float64 unless ``dtype`` says otherwise."""

    def block(k: int) -> torch.nn.Module:
        torch.manual_seed(1000 + k)
        if kind == "conv":
            layers = [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.Tanh()]
        elif kind == "conv_relu":
            layers = [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU()]
        elif kind == "dense_tanh":  # one architecture, no buffers: batch_steps vmaps it
            layers = [torch.nn.Linear(width, width), torch.nn.Tanh()]
        elif kind == "mixed":  # one parameter layout, two activations: not one architecture
            layers = [torch.nn.Linear(width, width), torch.nn.Tanh() if k % 2 else torch.nn.Softsign()]
        elif kind == "dense":
            layers = [
                torch.nn.Linear(width, width),
                torch.nn.LayerNorm(width),
                torch.nn.Tanh(),
                torch.nn.Linear(width, width),
                torch.nn.BatchNorm1d(width),
            ]
        else:
            raise ValueError(kind)
        if dropout:
            layers.append(torch.nn.Dropout(dropout))
        return torch.nn.Sequential(*layers).to(dtype)

    return block


def inputs(kind: str, batch: int = 4, width: int = 3, seed: int = 7, dtype=torch.float64):
    """(u0, loss weight): drawn in float64 and rounded to ``dtype``, so every dtype sees the same values."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, width, 5, 5) if kind.startswith("conv") else (batch, width)
    u0 = torch.randn(shape, generator=g, dtype=torch.float64)
    weight = torch.randn(shape, generator=g, dtype=torch.float64)
    return u0.to(dtype), weight.to(dtype)


def loss_of(uT, weight):
    return (uT * weight).sum() + 0.5 * (uT**2).sum()


def reference(kind: str, depth: int, T: float = 1.0, mask_seeds=None, **kw):
    """Plain torch autograd through all blocks on one process: (uT, u0.grad, [per-layer param grads], blocks).

    ``mask_seeds=(base, pass)``: seed the generator before block k as LayerParallel
    does for dropout (``hash((base, pass, k)) % 2**63``), so the masks are the same.
    """
    block = block_factory(kind, **{k: v for k, v in kw.items() if k in ("width", "dropout", "dtype")})
    blocks = [block(k) for k in range(depth)]
    u0, weight = inputs(kind, **{k: v for k, v in kw.items() if k in ("batch", "width", "dtype")})
    x = u0.clone().requires_grad_(True)
    y = x
    for k in range(depth):
        if mask_seeds is not None:
            torch.default_generator.manual_seed(hash((*mask_seeds, k)) % (2**63))
        y = y + (T / depth) * blocks[k](y)
    loss_of(y, weight).backward()
    grads = [[p.grad.clone() for p in b.parameters()] for b in blocks]
    return y.detach(), x.grad.clone(), grads, blocks


def errors(kind: str, depth: int, nsteps: int = 1, T: float = 1.0, comm=None, dtype=torch.float64, **options):
    """Run LayerParallel(**options) and compare with :func:`reference`; the largest relative errors.

    Relative errors are taken against the norm of the whole reference quantity
    (for parameters: of all parameter gradients), so a gradient that is zero in
    exact arithmetic (a bias before a BatchNorm) is not divided by itself. The
    reference runs in the same ``dtype`` (errors are computed in float64).
    """
    from mpi4py import MPI

    from pyxbraid.torch import LayerParallel

    comm = MPI.COMM_WORLD if comm is None else comm
    dropout = options.pop("dropout", 0.0)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    lp = LayerParallel(block_factory(kind, dropout=dropout, dtype=dtype), depth=depth, T=T, comm=comm, **options)
    seeds = (lp._base_seed, 1) if dropout else None  # the masks of LayerParallel's first forward pass
    yref, gref, pref, blocks = reference(kind, depth, T, mask_seeds=seeds, dropout=dropout, dtype=dtype)
    u0, weight = inputs(kind, dtype=dtype)
    x = u0.clone().requires_grad_(True)
    for _ in range(nsteps):
        lp.zero_grad(set_to_none=True)
        x.grad = None
        uT = lp(x)
        loss_of(uT, weight).backward()
    assert uT.dtype == x.grad.dtype == dtype
    pnorm = float(sum(float(g.double().norm()) ** 2 for gs in pref for g in gs) ** 0.5)
    perr = 0.0
    for k in lp.owned_layers:
        for p, q in zip(lp.layer(k).parameters(), pref[k], strict=True):
            assert p.grad.dtype == dtype
            perr = max(perr, float((p.grad.double() - q.double()).norm()) / pnorm)
    perr = comm.allreduce(perr, op=MPI.MAX)
    berr = 0.0
    for k in lp.owned_layers:
        for b, c in zip(lp.layer(k).buffers(), blocks[k].buffers(), strict=True):
            berr = max(berr, float((b.double() - c.double()).abs().max()))
    berr = comm.allreduce(berr, op=MPI.MAX)
    out = dict(
        uT=float((uT.detach().double() - yref.double()).norm() / yref.double().norm()),
        u0_grad=float((x.grad.double() - gref.double()).norm() / gref.double().norm()),
        params=perr,
        buffers=berr,
        owned=list(lp.owned_layers),
    )
    if lp.last_backward is not None:
        out["iterations"] = [lp.last_forward.iterations, lp.last_backward.iterations]
    return out


def run_layer_parallel(kind: str, depth: int, nsteps: int = 1, T: float = 1.0, comm=None, eval_mode=False, **options):
    """LayerParallel(**options) trained ``nsteps`` passes on :func:`inputs`: (uT, u0.grad, {layer: grads}, app)."""
    from mpi4py import MPI

    from pyxbraid.torch import LayerParallel

    comm = MPI.COMM_WORLD if comm is None else comm
    dropout = options.pop("dropout", 0.0)
    lp = LayerParallel(block_factory(kind, dropout=dropout), depth=depth, T=T, comm=comm, **options)
    if eval_mode:
        lp.eval()
    u0, weight = inputs(kind)
    x = u0.clone().requires_grad_(True)
    for _ in range(nsteps):
        lp.zero_grad(set_to_none=True)
        x.grad = None
        uT = lp(x)
        loss_of(uT, weight).backward()
    grads = {k: [p.grad.clone() for p in lp.layer(k).parameters()] for k in lp.owned_layers}
    apps = [app for app, _ in lp._engines.values()]
    return uT.detach(), x.grad.clone(), grads, apps


def batch_vs_steps(kind: str, depth: int, nsteps: int = 1, T: float = 1.0, comm=None, **options):
    """batch_steps=True against the per-step path: the largest relative differences (over ranks) and call counts."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    eval_mode = options.pop("eval_mode", False)
    yb, gb, pb, apps = run_layer_parallel(kind, depth, nsteps, T, comm, eval_mode, batch_steps=True, **options)
    ys, gs, ps, _ = run_layer_parallel(kind, depth, nsteps, T, comm, eval_mode, **options)
    local = sum(float(g.norm()) ** 2 for gl in ps.values() for g in gl)
    pnorm = comm.allreduce(local) ** 0.5
    perr = max([float((a - b).norm()) for k in ps for a, b in zip(pb[k], ps[k], strict=True)], default=0.0)
    return dict(
        uT=float((yb - ys).norm() / ys.norm()),
        u0_grad=float((gb - gs).norm() / gs.norm()),
        params=comm.allreduce(perr, op=MPI.MAX) / pnorm,
        vmapped=comm.allreduce(sum(a.vmapped_calls for a in apps)),
        one_by_one=comm.allreduce(sum(a.one_by_one_calls for a in apps)),
    )
