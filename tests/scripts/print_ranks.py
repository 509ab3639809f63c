"""print_level output per rank: each rank captures its own stdout.

Each rank reports ``{"iterations": n, "lines": [its captured lines]}``.
"""

import io
import sys

from reporting import report

import pyxbraid as xb

level = int(sys.argv[1]) if len(sys.argv) > 1 else 1
real = sys.stdout
sys.stdout = captured = io.StringIO()
try:
    solver = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 16, max_levels=3, print_level=level)
    result = solver.solve()
finally:
    sys.stdout = real
report(dict(iterations=result.iterations, lines=captured.getvalue().splitlines()))
