"""The tests' common Python Apps.

``Decay`` is XBraid's ex-01 (u' = lam u, backward Euler) with the same
arithmetic as the native ``LinearODE`` (bitwise equal results), call counters
and a hook to remember where a callback ran; tests subclass it to break one
callback. ``DecayWithResidual`` runs it in XBraid's user-residual mode.
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
    residual : bool
        XBraid's user-residual mode.
    """

    def __init__(self, lam=-1.0, size=1, *, shape=None, guess=0.456, residual=False):
        super().__init__(shape=(size,) if shape is None else shape)
        self.lam = np.broadcast_to(np.asarray(lam, dtype=float), self.shape).copy()
        self.guess = guess
        self.calls = Counter()  # callback -> number of calls
        self.where = None  # (phase, level, iter, tstart, tstop) of a remembered call
        if residual:
            self.residual = self._residual

    def remember(self, status):
        self.where = (status.phase, status.level, status.iter, status.tstart, status.tstop)

    def init(self, t, u):
        self.calls["init"] += 1
        u[...] = 1.0 if t == 0.0 else self.guess

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
