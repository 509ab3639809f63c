"""Rank 0's progress output (print_level=1) raises: every rank must raise.

Each rank prints ``RANK r TYPE <name> MSG <message>`` (or ``RANK r OK``).
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


class ClosedAfterFirstLine(io.StringIO):
    """A stdout whose reader went away after the first line (like `| head -1`)."""

    def write(self, text):
        if "Braid: ||" in text:
            raise BrokenPipeError("stdout closed")
        return super().write(text)


real = sys.stdout
sys.stdout = ClosedAfterFirstLine()
try:
    solver = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 16, max_levels=3, print_level=1)
    solver.solve()
    outcome = "OK"
except Exception as exc:  # noqa: BLE001
    outcome = f"TYPE {type(exc).__name__} MSG {exc}"
finally:
    sys.stdout = real
say(outcome)
