"""Tests of the multi-rank launcher used by the rest of the suite."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


def _alive(pid: int) -> bool:
    """Return True if ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def test_two_ranks_report_size_two(mpirun):
    proc = mpirun(
        """
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        sizes = comm.allgather(comm.Get_size())
        if comm.rank == 0:
            print("sizes", sizes)
        """,
        2,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "sizes [2, 2]" in proc.stdout, proc.stdout + proc.stderr


def test_exception_on_one_rank_aborts_job(mpirun):
    proc = mpirun(
        """
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        if comm.rank == 1:
            raise ValueError("boom on rank 1")
        comm.Barrier()
        """,
        2,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "boom on rank 1" in proc.stderr


def test_hanging_job_times_out_and_all_ranks_die(mpirun, tmp_path: Path):
    piddir = tmp_path / "pids"
    piddir.mkdir()
    code = f"""
        import os, time
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        with open(os.path.join({str(piddir)!r}, str(comm.rank)), "w") as fh:
            fh.write(str(os.getpid()))
        print("rank", comm.rank, "started", flush=True)
        if comm.rank == 1:
            time.sleep(60)
        comm.Barrier()
        """
    # The job never ends by itself (rank 0 waits in a barrier for rank 1), so
    # the timeout must fire; whichever ranks had started by then must die.
    with pytest.raises(pytest.fail.Exception, match="timed out after 10 s") as info:
        mpirun(code, 2, timeout=10)
    assert "--- stdout ---" in str(info.value)  # the captured output is in the failure
    pids = [int(p.read_text()) for p in piddir.iterdir() if p.read_text()]
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "ranks survived the timeout kill"
