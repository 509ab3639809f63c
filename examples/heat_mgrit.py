"""Main demo: the 1-D heat equation (XBraid's ex-02) solved parallel in time.

MGRIT on all ranks of MPI.COMM_WORLD against plain sequential time stepping:
same answer, residual history per iteration, discretization error, timings.

    mpiexec -n 2 python -m mpi4py examples/heat_mgrit.py [--ntime 4096] [--nspace 33]
"""

import argparse
import math

import numpy as np
from mpi4py import MPI

import pyxbraid as xb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ntime", type=int, default=4096)
    parser.add_argument("--nspace", type=int, default=33)
    parser.add_argument("--max-levels", type=int, default=30)
    parser.add_argument("--cfactor", type=int, default=4)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank0 = comm.rank == 0
    tstop = 2 * math.pi

    seq_app = xb.apps.Heat1D(nspace=args.nspace)
    seq = xb.Solver(seq_app, 0.0, tstop, args.ntime, comm=comm, max_levels=1)
    t0 = MPI.Wtime()
    seq.solve()
    u_seq = seq.state_at(args.ntime)
    t_seq = MPI.Wtime() - t0

    app = xb.apps.Heat1D(nspace=args.nspace)
    # ex-02's tolerance, scaled by the space-time mesh.
    tol = 1e-7 / (math.sqrt(tstop / (args.ntime - 1)) * math.sqrt(math.pi / (args.nspace - 1)))
    if rank0:
        print(f"heat equation, {args.nspace} points in space, {args.ntime} time steps, {comm.size} ranks")
    mgrit = xb.Solver(
        app,
        0.0,
        tstop,
        args.ntime,
        comm=comm,
        max_levels=args.max_levels,
        cfactor=args.cfactor,
        abs_tol=tol,
        print_level=1,
    )
    t0 = MPI.Wtime()
    result = mgrit.solve()
    u = mgrit.state_at(args.ntime)
    t_mgrit = MPI.Wtime() - t0

    if rank0:
        print(
            f"MGRIT: {result.iterations} iterations, {result.nlevels} levels {list(result.level_sizes)}, "
            f"converged={result.converged}"
        )
        print(
            f"discretization error at t=2pi: MGRIT {app.error(tstop, u):.6e}, "
            f"sequential {seq_app.error(tstop, u_seq):.6e}"
        )
        print(f"max |MGRIT - sequential| at t=2pi: {np.max(np.abs(u - u_seq)):.3e}")
        print(
            f"wall time: sequential {t_seq:.4f} s, MGRIT {t_mgrit:.4f} s "
            f"({result.step_calls_all_ranks / args.ntime:.1f} step calls per fine step in total)"
        )


if __name__ == "__main__":
    main()
