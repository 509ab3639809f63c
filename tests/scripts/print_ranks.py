"""print_level output per rank: each rank captures its own stdout.

Prints ``RANK r ITERATIONS n LINES k`` followed by rank r's captured lines
prefixed with ``RANK r OUT``.
"""

import io
import sys

from mpi4py import MPI

import pyxbraid as xb

rank = MPI.COMM_WORLD.Get_rank()


def say(text):
    """One line per event, written in one call so that ranks do not interleave."""
    sys.stdout.write(f"RANK {rank} " + str(text).replace("\n", "\\n") + "\n")
    sys.stdout.flush()
level = int(sys.argv[1]) if len(sys.argv) > 1 else 1
real = sys.stdout
sys.stdout = captured = io.StringIO()
try:
    solver = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 16, max_levels=3, print_level=level)
    result = solver.solve()
finally:
    sys.stdout = real
lines = captured.getvalue().splitlines()
say(f"ITERATIONS {result.iterations} LINES {len(lines)}")
for line in lines:
    say(f"OUT {line}")
