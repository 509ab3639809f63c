"""``python -m pyxbraid --config``: which core, MPI, mpi4py and compiler are in use.

Also ``python -m pyxbraid --version``. Under a launcher each rank prints, so
run it as a single process (it initialises MPI as a singleton).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m pyxbraid",
        description="pyxbraid: parallel-in-time multigrid. Training: python -m pyxbraid.train.",
    )
    parser.add_argument(
        "--config",
        action="store_true",
        help="print the core variant in use, the MPI library and version, "
        "mpi4py's, and the compiler (pyxbraid.show_config())",
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    args = parser.parse_args(argv)
    import pyxbraid

    if args.version:
        print(pyxbraid.__version__)
    if args.config:
        pyxbraid.show_config()
    if not (args.version or args.config):
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
