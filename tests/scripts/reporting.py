"""report(value): a multi-rank test script's structured result for this rank (see tests/mpi_launch.py)."""

import json
import os


def report(value):
    """Write ``value`` (JSON-serialisable) as this rank's result; call it once per rank."""
    from mpi4py import MPI

    path = os.path.join(os.environ["PYXBRAID_TEST_RESULTS"], f"{MPI.COMM_WORLD.Get_rank()}.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(value, fh)
    os.replace(path + ".tmp", path)


def outcome(call):
    """What ``call()`` did: {"ok": result} or the exception's type, .rank and message."""
    try:
        return {"ok": call()}
    except Exception as exc:  # noqa: BLE001 - every failure is reported, not raised
        return {"type": type(exc).__name__, "rank": getattr(exc, "rank", None), "message": str(exc)}
