"""Layer-parallel training of a convolutional ResNet on scikit-learn's 8x8 digits (pyxbraid.torch).

The network (:class:`pyxbraid.torch.ConvResNet`): an opening convolution
(1 -> width channels), ``depth`` residual blocks ``u + h * ReLU(BatchNorm(Conv3x3(u)))``
run by :class:`pyxbraid.torch.LayerParallel` (block k lives on one rank), then
2x2 average pooling and a linear classifier. The opening and the head are
ordinary torch modules replicated on every rank (their gradients are identical
everywhere: u(T) and u0.grad are). Adam on shuffled mini-batches of 64.

This script is the command line ``pyxbraid-train digits`` (the training code
lives in the package, ``pyxbraid/torch/_digits.py``); it takes the same options.
Run on 2 ranks (98.9% validation accuracy after 10 epochs, 97.5% after 5)::

    mpiexec -n 2 python -m mpi4py examples/digits_torch.py --metrics digits/metrics.json
    mpiexec -n 2 python -m mpi4py examples/digits_torch.py --dtype float32 --mode one-shot

Writes ``<out>/training.png`` (curves), ``<out>/predictions.png`` (validation
images with their predicted labels, mistakes in red), ``<out>/model.pt`` and,
with ``--metrics``, a JSON summary (accuracies, losses, wall time, ranks,
settings, history). ``--help`` lists the options. Needs torch and
scikit-learn (``pip install "pyxbraid[torch]" scikit-learn``).

The heart of it, for a network of your own::

    net = ConvResNet((1, 8, 8), classes=10, width=8, depth=16, T=2.0, mode="exact", max_levels=2, cfactor=4)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)   # this rank's blocks + opening + head
    for x, y in batches:                                       # the same batches on every rank
        net.lp.reset()                                         # new data: no warm restart (one-shot mode)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()   # MGRIT forward, adjoint backward
        optimizer.step()
"""

from __future__ import annotations

import sys

from pyxbraid.train import main

if __name__ == "__main__":
    sys.exit(main(["digits", *sys.argv[1:]]))
