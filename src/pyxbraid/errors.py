"""Exceptions raised by pyxbraid.

An exception raised inside a user callback reaches the caller on its own rank
unchanged (same type, same traceback). Every *other* rank raises
:class:`RemoteRankError` instead of waiting forever for a message that will
never come.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CallbackError",
    "DivergenceError",
    "MPIError",
    "PyxbraidError",
    "RemoteRankError",
    "SolverStateError",
]


class PyxbraidError(Exception):
    """Base class of pyxbraid's own errors."""


class RemoteRankError(PyxbraidError, RuntimeError):
    """Another rank failed during a collective solve.

    Attributes
    ----------
    rank : int
        The rank whose failure stopped this one.
    """

    def __init__(self, message: str, rank: int) -> None:
        super().__init__(message)
        self.rank = rank

    def __reduce__(self):  # keep picklable (mpi4py may pickle exceptions)
        return (type(self), (str(self), self.rank))


class CallbackError(PyxbraidError, ValueError):
    """A callback produced an unusable result (non-finite state, bad norm, ...)."""


class DivergenceError(PyxbraidError, FloatingPointError):
    """The MGRIT residual norm became NaN or infinite."""


class SolverStateError(PyxbraidError, RuntimeError):
    """A solver was used after an earlier failure left it unusable."""


class MPIError(PyxbraidError, RuntimeError):
    """An MPI call failed (e.g. MPI ran out of communicators); the message names the call.

    pyxbraid never falls back to another communicator: a solver runs on the
    one it was given, or raises this.
    """


class _Agreed:
    """``with _Agreed(comm, "Solver arguments"):`` -- argument checks every rank agrees on.

    Collective over ``comm`` (one allgather when it has several ranks): an
    exception inside the block is re-raised on its rank, and every other rank
    raises :class:`RemoteRankError` naming it, instead of walking into the next
    collective and waiting forever for the rank that stopped.
    """

    def __init__(self, comm, what: str) -> None:
        self.comm, self.what = comm, what

    def __enter__(self) -> _Agreed:
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if exc is not None and not isinstance(exc, Exception):
            return False  # KeyboardInterrupt and the like: just go
        if self.comm.Get_size() == 1:
            return False
        reports = self.comm.allgather(None if exc is None else f"{type(exc).__name__}: {exc}")
        if exc is not None:
            return False  # this rank's own error, with its traceback
        for rank, report in enumerate(reports):
            if report is not None:
                raise RemoteRankError(f"rank {rank} rejected its {self.what}: {report}", rank)
        return False
