"""Exceptions raised by pyxbraid.

An exception raised inside a user callback reaches the caller on its own rank
unchanged (same type, same traceback). Every *other* rank raises
:class:`RemoteRankError` instead of waiting forever for a message that will
never come.
"""

from __future__ import annotations

__all__ = [
    "CallbackError",
    "DivergenceError",
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
