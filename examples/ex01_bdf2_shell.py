"""XBraid's ex-01-expanded-bdf2 as a Python App: u' = lam*u by variable-step BDF2 through shell vectors.

Each XBraid time point holds two solution values, ``[y(t_n + dt/2), y(t_n)]``, and
their times as its *shell* (``App(shell_shape=...)``, XBraid's braid_SetShell): the
step reads the target times from ``ustop.shell``, also at the F-points, where the
default ``storage=-1`` keeps only the shell. Run on any number of ranks (same numbers):
    mpiexec -n 2 python -m mpi4py examples/ex01_bdf2_shell.py
"""

import math

from mpi4py import MPI

import pyxbraid as xb


class Bdf2(xb.App):
    """u' = lam*u, variable-step BDF2; state [y(t_n + dt/2), y(t_n)], shell [t_n + dt/2, t_n]."""

    def __init__(self, tstart, tstop, ntime, lam=-1.0):
        super().__init__(shape=(2,), shell_shape=(2,))
        self.lam, self.dt = lam, (tstop - tstart) / ntime

    def bdf2(self, t0, t1, t2, y1, y2):  # y(t0) from y(t1) and y(t2)
        h0 = t0 - t1
        rho = h0 / (t1 - t2)
        c0 = (2 * rho + 1) / (rho + 1) - self.lam * h0
        return (rho + 1) / c0 * y1 - (rho * rho / (rho + 1)) / c0 * y2

    def init(self, t, u):  # a full point: the state and its shell
        self.init_shell(t, u.shell)
        u[:] = [math.exp(self.lam * 0.5 * self.dt), 1.0] if t == 0.0 else 0.456

    def init_shell(self, t, shell):  # a point that keeps only its shell
        shell[:] = [t + 0.5 * self.dt, t]

    def step(self, u, ustop, fstop, status):  # the target times come from ustop's shell
        ts, tu = ustop.shell, u.shell
        y2 = self.bdf2(ts[1], tu[0], tu[1], u[0], u[1])
        y1 = self.bdf2(ts[0], ts[1], tu[0], y2, u[0])
        u.shell = ts
        u[:] = [y1, y2]

    def spatial_norm(self, u):
        return math.sqrt(u[0] ** 2 + u[1] ** 2)


def main():
    comm = MPI.COMM_WORLD
    solver = xb.Solver(Bdf2(0.0, 5.0, 5), 0.0, 5.0, 5, comm=comm, max_levels=2, abs_tol=1e-6, print_level=1)
    result = solver.solve()
    pairs = [(solver.shell_at(i), solver.state_at(i)) for i in range(6)]
    if comm.rank == 0:
        print(f"iterations: {result.iterations} (XBraid: 3)")
        for shell, state in pairs:
            print(f"{shell[1]:.14e} {state[1]:.14e}\n{shell[0]:.14e} {state[0]:.14e}")


if __name__ == "__main__":
    main()
