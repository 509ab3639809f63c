"""Layer-parallel training of any PyTorch residual network (``pip install "pyxbraid[torch]"``).

:class:`LayerParallel` runs the residual layers ``u_{k+1} = u_k + h F_k(u_k)``
(``h = T / depth``) of a network as the time steps of an ODE, distributed over
the ranks of an MPI communicator: forward with MGRIT on pyxbraid's engine,
backward with the engine's exact discrete adjoint (XBraid_Adjoint), and the
parameter gradients accumulated into the owned blocks' ``.grad`` as autograd
does. Everything around it (the opening layer, the head, the loss, the
optimiser) stays ordinary PyTorch.

Examples
--------
>>> import torch
>>> from pyxbraid.torch import LayerParallel
>>> def block(k):
...     torch.manual_seed(k)
...     return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()).double()
>>> lp = LayerParallel(block, depth=8, T=1.0, mode="exact", max_levels=2, cfactor=4)
>>> u0 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
>>> uT = lp(u0)
>>> uT.square().sum().backward()
>>> list(lp.owned_layers), u0.grad.shape
([0, 1, 2, 3, 4, 5, 6, 7], torch.Size([5, 4]))
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "pyxbraid.torch needs PyTorch, which is an optional dependency: "
        'pip install "pyxbraid[torch]" (or pip install torch)',
        name="torch",  # what is missing, for code that checks ImportError.name
    ) from exc

from ..nn.trainer import ConvergenceWarning
from ._hierarchy import Hierarchy
from ._layer_parallel import COARSE_POLICIES, DEFAULT_TOLERANCES, ENGINE_DTYPES, MODES, LayerParallel
from ._models import ConvResNet
from ._multilevel import STRATEGIES, MultilevelResult, train_multilevel

__all__ = [
    "COARSE_POLICIES",
    "DEFAULT_TOLERANCES",
    "ENGINE_DTYPES",
    "MODES",
    "STRATEGIES",
    "ConvResNet",
    "ConvergenceWarning",
    "Hierarchy",
    "LayerParallel",
    "MultilevelResult",
    "train_multilevel",
]
