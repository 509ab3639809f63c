"""The tests' common Python Apps.

``Decay`` is XBraid's ex-01 (u' = lam u, backward Euler) with the same
arithmetic as the native ``LinearODE`` (bitwise equal results), call counters
and a hook to remember where a callback ran; tests subclass it to break one
callback. ``DecayWithResidual`` runs it in XBraid's user-residual mode.
``BatchedDecay`` adds ``step_batch``, row by row the arithmetic of ``step``.
"""

from collections import Counter

import numpy as np

import pyxbraid as xb


class Decay(xb.App):
    """u' = lam*u with backward Euler: the same arithmetic as the native LinearODE.

    Parameters
    ----------
    lam : float or array
        Decay rate (per component).
    size : int
        State size (shape ``(size,)``) unless ``shape`` is given.
    shape : tuple of int, optional
    guess : float
        Initial guess at t > tstart (ex-01: 0.456).
    tstart : float
        Where the initial condition 1.0 is (the solver's tstart).
    """

    def __init__(self, lam=-1.0, size=1, *, shape=None, guess=0.456, tstart=0.0):
        super().__init__(shape=(size,) if shape is None else shape)
        self.lam = np.broadcast_to(np.asarray(lam, dtype=float), self.shape).copy()
        self.guess = guess
        self.tstart = tstart
        self.calls = Counter()  # callback -> number of calls
        self.where = None  # (phase, level, iter, tstart, tstop) of a remembered call

    def remember(self, status):
        self.where = (status.phase, status.level, status.iter, status.tstart, status.tstop)

    def init(self, t, u):
        self.calls["init"] += 1
        u[...] = 1.0 if t == self.tstart else self.guess

    def step(self, u, ustop, fstop, status):
        self.calls["step"] += 1
        dt = status.tstop - status.tstart
        v = u + fstop if fstop is not None else u.copy()
        u[...] = (1.0 / (1.0 - self.lam * dt)) * v

    def _residual(self, ustop, r, status):
        self.calls["residual"] += 1
        dt = status.tstop - status.tstart
        r[...] = (1.0 - self.lam * dt) * ustop - r


class DecayWithResidual(Decay):
    """Decay in XBraid's user-residual mode."""

    def residual(self, ustop, r, status):
        self._residual(ustop, r, status)


class BatchedDecay(Decay):
    """Decay with ``step_batch``: each row is exactly what ``step`` does (bitwise)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows = []  # rows of each step_batch call

    def step_batch(self, u, ustop, fstop, tstart, tstop, status):
        self.calls["step_batch"] += 1
        self.rows.append(len(u))
        dt = (tstop - tstart).reshape((-1,) + (1,) * len(self.shape))
        v = u + fstop if fstop is not None else u.copy()
        u[...] = (1.0 / (1.0 - self.lam * dt)) * v


class BatchedDecayWithResidual(BatchedDecay, DecayWithResidual):
    """BatchedDecay in XBraid's user-residual mode (step_batch gets fstop)."""


def decay_class(batched=False, residual=False):
    """The Decay variant: one by one or batched, with or without the user residual."""
    return {
        (False, False): Decay,
        (False, True): DecayWithResidual,
        (True, False): BatchedDecay,
        (True, True): BatchedDecayWithResidual,
    }[batched, residual]
