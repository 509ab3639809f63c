"""Layer-parallel training of a ResNet whose residual layers are your own numpy code.

Defines a residual layer in numpy -- the antisymmetric layer of Haber and
Ruthotto (Inverse Problems, 2017), F(u) = tanh(u (W - W^T - gamma I)^T + b),
whose Jacobian has eigenvalues with non-positive real part, so the forward
flow is stable -- checks its vector-Jacobian product against finite
differences (pyxbraid.testing.check_layer), and trains it on the peaks data
with nn.Trainer: MGRIT forward and adjoint, the layers distributed over the
ranks, exactly as the native ResNet. ``--layer conv1d`` trains the built-in
nn.Conv1d instead, ``--layer dense`` the built-in nn.Dense (the native layer
in numpy).

    mpiexec -n 2 python -m mpi4py examples/peaks_numpy_layers.py [--layer antisymmetric|conv1d|dense]
        [--mode exact|one-shot|serial] [--epochs 8] [--depth 16] [--train 2000] [--save model.npz]

The exact mode gives the layer-serial mode's training, epoch for epoch (its
gradients are those of backpropagation to 1e-10). One-shot trains full-batch
with warm restarts: one step per epoch, so give it more epochs (``--epochs 150``).
"""

import argparse
import time

import numpy as np
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import nn
from pyxbraid.testing import check_layer


class AntiSymmetric(nn.Layer):
    """F(u) = tanh(u A^T + b) with A = W - W^T - gamma I (Haber and Ruthotto's antisymmetric layer)."""

    def __init__(self, width, gamma=0.1):
        super().__init__(state_shape=(width,))  # one sample's state: (width,)
        self.width, self.gamma = width, gamma

    def parameter_shapes(self):
        return {"weight": (self.width, self.width), "bias": (self.width,)}

    def init_parameters(self, rng):
        return {"weight": rng.standard_normal((self.width, self.width)) / self.width, "bias": np.zeros(self.width)}

    def _matrix(self, params):
        W = params["weight"]
        return W - W.T - self.gamma * np.eye(self.width)

    def forward(self, u, params):  # u: (batch, width), read-only; return F(u), float64, same shape
        return np.tanh(u @ self._matrix(params).T + params["bias"])

    def vjp(self, u, params, v):  # return (dF/du)^T v and, per parameter, (dF/dtheta)^T v summed over the batch
        s = (1.0 - np.tanh(u @ self._matrix(params).T + params["bias"]) ** 2) * v
        grad_a = s.T @ u  # dA; A depends on W through W - W^T
        return s @ self._matrix(params), {"weight": grad_a - grad_a.T, "bias": s.sum(axis=0)}

    def config(self):  # what identifies the layer in saved models and checkpoints
        return {"width": self.width, "gamma": self.gamma}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", choices=["antisymmetric", "conv1d", "dense"], default="antisymmetric")
    parser.add_argument("--mode", choices=["exact", "one-shot", "serial"], default="exact")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--train", type=int, default=2000, help="training points (and 200 validation points)")
    parser.add_argument("--save", default=None, help="write the trained model to this .npz file")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank0 = comm.rank == 0

    width = 8
    layer = {
        "antisymmetric": lambda: AntiSymmetric(width),
        "conv1d": lambda: nn.Conv1d(channels=2, length=4, kernel_size=3, activation="tanh"),
        "dense": lambda: nn.Dense(width, activation="tanh"),
    }[args.layer]()
    check = check_layer(layer)  # the vjp against finite differences of forward, part by part
    if rank0:
        print(f"check_layer({layer!r}): {'ok' if check else 'FAILED'}")
        print("  " + check.summary().replace("\n", "\n  "))
    check.assert_ok()

    data = xb.datasets.make_peaks(args.train, 200, seed=1)
    x, y = data.x_train, data.y_train
    net = nn.ResNet(2, width, args.depth, 5, T=2.0, activation="tanh", seed=1, layer=layer)
    layer_parallel = {
        "exact": dict(max_levels=2, cfactor=4),
        "one-shot": dict(max_levels=2, cfactor=4, max_iter=2, one_shot=True),
        "serial": None,
    }[args.mode]
    trainer = nn.Trainer(
        net, comm=comm, optimizer=nn.Adam(lr=0.02), layer_parallel=layer_parallel, progress=False, seed=1
    )
    if rank0:
        print(
            f"{net!r}: {net.num_parameters} parameters, {comm.size} rank(s), mode {args.mode}; "
            f"this rank holds layers {list(net.owned_layers)}"
        )
    start = time.perf_counter()
    batch = None if args.mode == "one-shot" else 50  # one-shot warm-restarts on a full batch
    history = trainer.fit(x, y, epochs=args.epochs, batch_size=batch, validation=(data.x_val, data.y_val))
    seconds = time.perf_counter() - start
    if rank0:
        for e, loss, acc in zip(history.epoch, history.loss, history.val_accuracy, strict=True):
            print(f"epoch {e:3d}: loss {loss:.4f}, validation accuracy {acc:.3f}")
        print(f"validation accuracy {history.val_accuracy[-1]:.3f} after {args.epochs} epochs in {seconds:.1f} s")
    if args.save:
        net.save(args.save)  # collective; load with nn.ResNet.load(path, layer=AntiSymmetric(8))


if __name__ == "__main__":
    main()
