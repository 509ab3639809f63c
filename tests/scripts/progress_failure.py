"""Rank 0's progress output (print_level=1) raises: every rank must raise.

Each rank reports the outcome of the solve.
"""

import io
import sys

from reporting import outcome, report

import pyxbraid as xb


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
    result = outcome(lambda: solver.solve().iterations)
finally:
    sys.stdout = real
report(result)
