"""Run a benchmark's measurements on this process or on P ranks, and hand rank 0's rows back.

The benchmarks whose ``--ranks P`` runs them under ``mpiexec -n P python -m
mpi4py`` share this: the script relaunches itself with its own arguments plus
``--worker``; the workers measure, and rank 0 prints its rows as one ``ROWS
<json>`` line, which the launching process reads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def rows_on_ranks(args: Any, worker: Callable[[Any], list[dict]], script: str) -> list[dict] | None:
    """Return ``worker(args)``'s rows measured on ``args.ranks`` ranks; None in a ``--worker`` process.

    ``args`` needs ``ranks`` and ``worker``; the script must accept the
    (hidden) ``--worker`` flag.
    """
    if args.worker:
        rows = worker(args)
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == 0:
            print("ROWS " + json.dumps(rows), flush=True)
        return None
    if args.ranks == 1:
        return worker(args)
    sys.path.insert(0, str(HERE.parent / "tests"))
    from mpi_launch import find_mpiexec, mpi_env

    cmd = [*find_mpiexec(), "-n", str(args.ranks), sys.executable, "-m", "mpi4py", script, *sys.argv[1:], "--worker"]
    job = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=mpi_env(), check=True)
    return json.loads(next(line for line in job.stdout.splitlines() if line.startswith("ROWS "))[5:])


def add_rank_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options every such benchmark takes: --ranks, --json and the hidden --worker."""
    p.add_argument("--ranks", type=int, default=1)
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def measure_and_report(
    args: Any, worker: Callable[[Any], list[dict]], script: str, table: Callable[[list[dict]], str]
) -> None:
    """Measure on ``args.ranks`` ranks, print ``table(rows)`` and write the rows to ``args.json`` if given.

    In a ``--worker`` process only measure (rank 0 hands its rows back).
    """
    rows = rows_on_ranks(args, worker, script)
    if rows is None:  # a worker process
        return
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
