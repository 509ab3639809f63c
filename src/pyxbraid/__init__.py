"""pyxbraid: parallel-in-time multigrid (MGRIT) with XBraid's semantics.

A C++17/MPI engine with a typed Python facade. Subclass :class:`App` (or use a
built-in app from :mod:`pyxbraid.apps`), build a :class:`Solver` on an mpi4py
communicator, and call :meth:`Solver.solve`.
"""

from __future__ import annotations

from ._mpi_guard import import_core, load_mpi, show_config
from ._version import __version__ as __version__

load_mpi()  # before the compiled module: it must bind to mpi4py's libmpi
_core = import_core()  # the core variant that fits that MPI (see _mpi_guard)

from . import (  # noqa: E402
    apps,
    datasets,
    errors,
    nn,  # noqa: E402  (after Solver: nn builds on it)
    testing,
)
from .app import App, NativeApp, ShellState  # noqa: E402
from .errors import (  # noqa: E402
    CallbackError,
    DivergenceError,
    MPIError,
    PyxbraidError,
    RemoteRankError,
    SolverStateError,
)
from .solver import Solver, SolveResult  # noqa: E402

Status = _core.Status

__all__ = [
    "App",
    "CallbackError",
    "DivergenceError",
    "MPIError",
    "NativeApp",
    "PyxbraidError",
    "RemoteRankError",
    "SolveResult",
    "Solver",
    "ShellState",
    "SolverStateError",
    "Status",
    "apps",
    "datasets",
    "errors",
    "nn",
    "show_config",
    "testing",
]
