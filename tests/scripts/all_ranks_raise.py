"""Divergence / non-finite steps of an explicit scheme on every rank.

Usage: ``all_ranks_raise.py divergence|nonfinite``. Runs solve() twice and
prints, per rank and attempt, ``RANK r FIRST|AGAIN TYPE <name> RANKATTR
<rank or None> MSG <message>`` (or ``RANK r FIRST|AGAIN OK iterations=n``).
"""

import sys

from mpi4py import MPI

import pyxbraid as xb

rank = MPI.COMM_WORLD.Get_rank()


def say(text):
    """One line per event, written in one call so that ranks do not interleave."""
    sys.stdout.write(f"RANK {rank} " + str(text).replace("\n", "\\n") + "\n")
    sys.stdout.flush()


# Forward Euler with lam*dt = -0.9 on the fine grid (stable) and 4x / 2x larger
# coarse steps (|1 + lam*dt_coarse| > 1): see tests/test_errors.py.
lam, cfactor = {"divergence": (-1843.2, 4), "nonfinite": (-3072.0, 2)}[sys.argv[1]]
app = xb.apps.LinearODE(lam=lam, scheme="forward_euler")
solver = xb.Solver(app, 0.0, 1.0, 2048, max_levels=2, cfactor=cfactor, max_iter=30)
for label in ("FIRST", "AGAIN"):
    try:
        result = solver.solve()
        say(f"{label} OK iterations={result.iterations}")
    except Exception as exc:  # noqa: BLE001
        say(f"{label} TYPE {type(exc).__name__} RANKATTR {getattr(exc, 'rank', None)} MSG {exc}")
