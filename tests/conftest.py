"""Shared pytest fixtures for the pyxbraid test suite."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpi_launch import run_mpi, run_mpi_code, run_mpi_json  # noqa: E402


class MPIRunner:
    """Run a script or code string on N MPI ranks (see ``tests/mpi_launch.py``).

    Call it as ``mpirun(script_or_code, nprocs, timeout=120, args=(), check=True)``;
    code strings are written to the test's ``tmp_path``.
    """

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path

    def __call__(self, script_path_or_code, nprocs, timeout=120, args=(), **kwargs):
        text = str(script_path_or_code)
        if "\n" in text or not Path(text).is_file():
            if "\n" not in text and text.endswith(".py"):
                raise FileNotFoundError(f"MPI test script not found: {text}")
            return run_mpi_code(text, nprocs, timeout, args, tmpdir=self._tmp_path, **kwargs)
        return run_mpi(text, nprocs, timeout, args, **kwargs)

    code = staticmethod(run_mpi_code)
    json = staticmethod(run_mpi_json)


@pytest.fixture
def mpirun(tmp_path: Path) -> MPIRunner:
    """Launch ``mpiexec -n N python -m mpi4py script`` with a timeout.

    Returns a callable ``mpirun(script_or_code, nprocs, timeout=120, args=(),
    check=True, env=None, cwd=None) -> subprocess.CompletedProcess``.
    """
    return MPIRunner(tmp_path)


@pytest.fixture
def default_sigint():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal: a job started in the background inherits SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
