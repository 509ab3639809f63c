"""The documented examples run: docstring examples and the scripts in examples/."""

import doctest
from pathlib import Path

import pytest

import pyxbraid
import pyxbraid._mpi_guard
import pyxbraid.app
import pyxbraid.apps
import pyxbraid.solver

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", [pyxbraid.app, pyxbraid.apps, pyxbraid.solver, pyxbraid._mpi_guard])
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


def test_ex01_example_on_three_ranks(mpirun):
    out = mpirun(str(ROOT / "examples" / "ex01_decay.py"), 3, timeout=120).stdout
    assert "iterations: 4 (XBraid: 4)" in out
    assert "u(5) = 0.017341529915833, exact discrete (2/3)^10 = 0.017341529915833" in out


def test_heat_demo_on_two_ranks(mpirun):
    out = mpirun(str(ROOT / "examples" / "heat_mgrit.py"), 2, args=("--ntime", "256"), timeout=120).stdout
    assert "converged=True" in out
    line = next(l for l in out.splitlines() if l.startswith("discretization error"))
    assert "sequential 7.110" in line  # xbraid-semantics.md: 7.1103e-03 for ntime 256


def test_optimization_example_matches_xbraid(mpirun):
    out = mpirun(str(ROOT / "examples" / "ex01_optimization.py"), 2, timeout=120).stdout
    line = next(l for l in out.splitlines() if l.startswith("converged after"))
    assert line.startswith("converged after 47 design updates: lam = -0.199613213918")


def test_readme_code_blocks_run_and_give_the_documented_numbers():
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    tour, adjoint = {}, {}
    exec(compile(blocks[0], "README tour", "exec"), tour)
    assert tour["result"].iterations == 4
    exec(compile("from mpi4py import MPI\nimport pyxbraid as xb\n" + blocks[1], "README adjoint", "exec"), adjoint)
    assert adjoint["res"].objective == 0.03599999999998741
    assert abs(adjoint["solver"].gradient() - 0.019200079996322887) < 1e-15
