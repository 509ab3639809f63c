"""XBraid's ex-01 as a Python App: u' = lam*u, backward Euler, two-level MGRIT.

Run on any number of ranks (same numbers):
    mpiexec -n 3 python -m mpi4py examples/ex01_decay.py
"""

from mpi4py import MPI

import pyxbraid as xb


class Decay(xb.App):
    """u' = lam*u with backward Euler (XBraid's ex-01)."""

    def __init__(self, lam=-1.0):
        super().__init__(shape=(1,))  # state shape; the engine owns float64 storage
        self.lam = lam

    def init(self, t, u):  # initial condition at tstart, guess elsewhere
        u[:] = 1.0 if t == 0.0 else 0.456

    def step(self, u, ustop, fstop, status):  # advance u in place
        if fstop is not None:
            u += fstop
        u /= 1.0 - self.lam * (status.tstop - status.tstart)


def main():
    comm = MPI.COMM_WORLD
    solver = xb.Solver(
        Decay(), tstart=0.0, tstop=5.0, ntime=10, comm=comm, max_levels=2, cfactor=2, abs_tol=1e-6, print_level=1
    )
    result = solver.solve()
    u10 = solver.state_at(10)
    if comm.rank == 0:
        print(f"iterations: {result.iterations} (XBraid: 4)")
        print(f"residual norms: {result.residual_norms}")
        print(f"u(5) = {u10[0]:.15f}, exact discrete (2/3)^10 = {(2 / 3) ** 10:.15f}")


if __name__ == "__main__":
    main()
