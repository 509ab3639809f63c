"""Layer-parallel training of deep residual networks (Günther, Ruthotto, Schroder, Cyr, Gauger, SIMODS 2020).

A ResNet's hidden layers ``u_{k+1} = u_k + h F(u_k; theta_k)`` are
forward-Euler steps on ``[0, T]``: :class:`Trainer` runs them with MGRIT
(forward) and its adjoint (backward), with the layers distributed over MPI
ranks, in three modes -- layer-serial, exact layer-parallel and one-shot.
``F`` is the native dense layer ``sigma(W u + b)`` (C++ kernels) or any numpy
:class:`Layer` (``ResNet(..., layer=...)``; built in: :class:`Dense`,
:class:`Conv1d`), run through the engine's Python-App path. ``Trainer(...,
strategy=...)`` trains over a hierarchy of networks in depth
(:class:`Hierarchy`): nested iteration (:class:`Nested`) or MG/Opt
(:class:`MGOpt`).
"""

from .hierarchy import Hierarchy
from .layers import Conv1d, Dense, Layer
from .network import ResNet
from .optim import LBFGS, SGD, Adam, LineSearchWarning, Optimizer
from .strategies import MGOpt, Nested, Single, Strategy
from .trainer import ConvergenceWarning, History, Trainer, TrainingInterrupted

__all__ = [
    "LBFGS",
    "SGD",
    "Adam",
    "ConvergenceWarning",
    "Conv1d",
    "Dense",
    "Hierarchy",
    "History",
    "Layer",
    "LineSearchWarning",
    "MGOpt",
    "Nested",
    "Optimizer",
    "ResNet",
    "Single",
    "Strategy",
    "Trainer",
    "TrainingInterrupted",
]
