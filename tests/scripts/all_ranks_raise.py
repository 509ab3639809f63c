"""Divergence / non-finite steps of an explicit scheme on every rank.

Usage: ``all_ranks_raise.py divergence|nonfinite``. Runs solve() twice; each
rank reports ``{"first": outcome, "again": outcome}``.
"""

import sys

from reporting import outcome, report

import pyxbraid as xb

# Forward Euler with lam*dt = -0.9 on the fine grid (stable) and 4x / 2x larger
# coarse steps (|1 + lam*dt_coarse| > 1): see tests/test_errors.py.
lam, cfactor = {"divergence": (-1843.2, 4), "nonfinite": (-3072.0, 2)}[sys.argv[1]]
app = xb.apps.LinearODE(lam=lam, scheme="forward_euler")
solver = xb.Solver(app, 0.0, 1.0, 2048, max_levels=2, cfactor=cfactor, max_iter=30)
first = outcome(lambda: solver.solve().iterations)
report(dict(first=first, again=outcome(lambda: solver.solve().iterations)))
