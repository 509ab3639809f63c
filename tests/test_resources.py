"""No memory grows with repeated solves (Python and native apps, failures included)."""

import gc
import resource

from apps_python import Decay
from mpi4py import MPI

import pyxbraid as xb


class Watched(Decay):
    """Decay of 4 values with an access callback (its views are recycled too)."""

    def __init__(self):
        super().__init__(size=4)

    def access(self, u, status):
        pass


class Failing(Watched):
    def step(self, u, ustop, fstop, status):
        raise ValueError("deliberate")


def _round():
    for app in (Watched(), xb.apps.LinearODE(lam=[-1.0] * 4), xb.apps.Heat1D(nspace=9)):
        s = xb.Solver(app, 0.0, 1.0, 64, comm=MPI.COMM_SELF, max_levels=3, abs_tol=1e-9)
        s.solve()
        s.solve()
        s.state_at(64)
        s.local_states()
    try:
        xb.Solver(Failing(), 0.0, 1.0, 64, comm=MPI.COMM_SELF, max_levels=3).solve()
    except ValueError:
        pass


def test_repeated_solves_do_not_grow_memory():
    for _ in range(100):
        _round()
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(600):
        _round()
    gc.collect()
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    # A leaked solver costs ~14 KiB; 600 rounds would grow by > 8 MiB.
    assert growth_kib < 1024
