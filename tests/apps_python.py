"""Python versions of the native apps, for Python-App == native-App tests."""

import numpy as np

import pyxbraid as xb


class Decay(xb.App):
    """u' = lam*u with backward Euler: the same arithmetic as the native LinearODE."""

    def __init__(self, lam=-1.0, size=1, residual=False):
        super().__init__(shape=(size,))
        self.lam = np.full(size, lam) if np.isscalar(lam) else np.asarray(lam, dtype=float)
        if residual:
            self.residual = self._residual

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.456

    def step(self, u, ustop, fstop, status):
        dt = status.tstop - status.tstart
        v = u + fstop if fstop is not None else u.copy()
        u[:] = (1.0 / (1.0 - self.lam * dt)) * v

    def _residual(self, ustop, r, status):
        dt = status.tstop - status.tstart
        r[:] = (1.0 - self.lam * dt) * ustop - r


class DecayWithResidual(Decay):
    """Decay in XBraid's user-residual mode."""

    def residual(self, ustop, r, status):
        dt = status.tstop - status.tstart
        r[:] = (1.0 - self.lam * dt) * ustop - r
