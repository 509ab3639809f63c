"""Layer-parallel training of deep residual networks (Günther, Ruthotto, Schroder, Cyr, Gauger, SIMODS 2020).

A ResNet's hidden layers ``u_{k+1} = u_k + h sigma(W_k u_k + b_k)`` are
forward-Euler steps on ``[0, T]``: :class:`Trainer` runs them with MGRIT
(forward) and its adjoint (backward) on native kernels, with the layers
distributed over MPI ranks, in three modes -- layer-serial, exact
layer-parallel and one-shot.
"""

from .network import ResNet
from .optim import LBFGS, SGD, Adam, LineSearchWarning, Optimizer
from .trainer import ConvergenceWarning, History, Trainer, TrainingInterrupted

__all__ = [
    "LBFGS",
    "SGD",
    "Adam",
    "ConvergenceWarning",
    "History",
    "LineSearchWarning",
    "Optimizer",
    "ResNet",
    "Trainer",
    "TrainingInterrupted",
]
