"""How fast a failure on one rank reaches the others, and what waiting costs.

Run without mpiexec: ``python benchmarks/bench_failures.py [--ranks 2,3,4] [--trials 30]``.
It starts ``mpiexec -n P python -m mpi4py benchmarks/bench_failures.py --worker`` for
each P and prints one table:

- notice latency: the last rank raises ValueError in a step of iteration 1;
  the time from that raise to RemoteRankError on the slowest other rank
  (wall clock of one machine; median and maximum over the trials);
- waiting CPU: one rank sleeps 3 s inside a step; the CPU time the other
  ranks use meanwhile, as a share of the wait.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(trials: int) -> None:
    from mpi4py import MPI

    import pyxbraid as xb

    comm = MPI.COMM_WORLD
    last = comm.Get_size() - 1

    class Failing(xb.App):
        def __init__(self):
            super().__init__(shape=(2,))
            self.failed_at = None

        def init(self, t, u):
            u[:] = 1.0

        def step(self, u, ustop, fstop, status):
            if comm.rank == last and status.iter == 1 and status.phase == "fc_relax":
                self.failed_at = time.time()
                raise ValueError("deliberate")
            u /= 1.0 + status.dt

    latencies = []
    for _ in range(trials):
        app = Failing()
        solver = xb.Solver(app, 0.0, 1.0, 64, comm=comm, max_levels=3)
        comm.Barrier()
        seen = None
        try:
            solver.solve()
        except xb.RemoteRankError:
            seen = time.time()
        except ValueError:
            seen = app.failed_at
        times = comm.gather(seen, root=0)
        if comm.rank == 0:
            latencies.append(max(t - times[-1] for t in times[:-1]))

    class Sleeping(xb.App):
        def __init__(self):
            super().__init__(shape=(2,))
            self.slept = False

        def init(self, t, u):
            u[:] = 1.0

        def step(self, u, ustop, fstop, status):
            if comm.rank == last and not self.slept and status.phase == "f_interp":
                self.slept = True
                time.sleep(3.0)
            u /= 1.0 + status.dt

    solver = xb.Solver(Sleeping(), 0.0, 1.0, 64, comm=comm, max_levels=3, max_iter=2)
    comm.Barrier()
    cpu, wall = time.process_time(), time.perf_counter()
    solver.solve()
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    shares = comm.gather(share, root=0)
    if comm.rank == 0:
        print("RESULT " + json.dumps(dict(latencies=latencies, waiting_cpu=shares[:-1])), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="2,3,4")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.trials)
        return
    mpiexec = os.environ.get("PYXBRAID_MPIEXEC") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    print(f"{'ranks':>5}  {'notice latency median':>22}  {'max':>9}  {'waiting CPU (share of the wait)':>32}")
    for p in (int(x) for x in args.ranks.split(",")):
        out = subprocess.run(
            [mpiexec, "-n", str(p), sys.executable, "-m", "mpi4py", __file__, "--worker", "--trials", str(args.trials)],
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(text for text in out.stdout.splitlines() if text.startswith("RESULT "))
        r = json.loads(line[7:])
        lat = r["latencies"]
        cpu = ", ".join(f"{100 * s:.1f}%" for s in r["waiting_cpu"])
        print(f"{p:>5}  {1e3 * statistics.median(lat):>19.2f} ms  {1e3 * max(lat):>6.2f} ms  {cpu:>32}")


if __name__ == "__main__":
    main()
