"""The documented examples run: docstring examples and the scripts in examples/."""

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import pyxbraid

ROOT = Path(__file__).resolve().parents[1]
# Every module of the package: none can be forgotten (runnable examples are the docs).
# (The compiled core variants, _core_<mpi>, are loaded as pyxbraid._core, never by their file names.)
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(pyxbraid.__path__, "pyxbraid.")
    if not m.name.endswith("__main__") and not m.name.startswith("pyxbraid._core_")
)
OPTIONAL = {"torch", "sklearn"}  # extras: their modules are skipped where the extra is not installed
# Modules whose examples need an extra even where the module itself imports without it.
NEEDS = {"pyxbraid.torch": "torch", "pyxbraid.datasets.digits": "sklearn"}


def missing_extra(name: str) -> str | None:
    """Return the optional package that module ``name``'s examples need and that is not installed."""
    for prefix, package in NEEDS.items():
        if (name == prefix or name.startswith(prefix + ".")) and importlib.util.find_spec(package) is None:
            return package
    return None


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if missing_extra(name):
        pytest.skip(f"{name} needs the optional {missing_extra(name)}")
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional {exc.name}")
        raise
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0, f"{failures} of {tried} examples failed in {name}"


def test_public_modules_have_examples():
    finder = doctest.DocTestFinder()
    documented = {
        name
        for name in MODULES
        if not missing_extra(name) and any(t.examples for t in finder.find(importlib.import_module(name)))
    }
    for name in (
        "pyxbraid.app",
        "pyxbraid.apps",
        "pyxbraid.solver",
        "pyxbraid.testing",
        "pyxbraid.nn.network",
        "pyxbraid.nn.layers",
        "pyxbraid.nn.optim",
        "pyxbraid.nn.trainer",
    ):
        assert name in documented, f"{name} has no runnable example"


def test_ex01_example_on_three_ranks(mpirun):
    out = mpirun(str(ROOT / "examples" / "ex01_decay.py"), 3, timeout=120).stdout
    assert "iterations: 4 (XBraid: 4)" in out
    assert "u(5) = 0.017341529915833, exact discrete (2/3)^10 = 0.017341529915833" in out


def test_heat_demo_on_two_ranks(mpirun):
    out = mpirun(str(ROOT / "examples" / "heat_mgrit.py"), 2, args=("--ntime", "256"), timeout=120).stdout
    assert "converged=True" in out
    line = next(line for line in out.splitlines() if line.startswith("discretization error"))
    assert "sequential 7.110" in line  # tests/data/expected_numbers.md (ex-02): 7.1103e-03 for ntime 256


def test_optimization_example_matches_xbraid(mpirun):
    out = mpirun(str(ROOT / "examples" / "ex01_optimization.py"), 2, timeout=120).stdout
    line = next(line for line in out.splitlines() if line.startswith("converged after"))
    assert line.startswith("converged after 47 design updates: lam = -0.199613213918")


def test_readme_code_blocks_run_and_give_the_documented_numbers():
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    tour, adjoint = {}, {}
    exec(compile(blocks[0], "README tour", "exec"), tour)
    assert tour["result"].iterations == 4
    # the step_batch block: bitwise the tour's run
    exec(compile(blocks[1], "README step_batch", "exec"), tour)
    batched = tour["xb"].Solver(
        tour["BatchedDecay"](),
        tstart=0.0,
        tstop=5.0,
        ntime=10,
        comm=tour["MPI"].COMM_WORLD,
        max_levels=2,
        cfactor=2,
        abs_tol=1e-6,
        storage=0,
    )
    plain = tour["xb"].Solver(
        tour["Decay"](),
        tstart=0.0,
        tstop=5.0,
        ntime=10,
        comm=tour["MPI"].COMM_WORLD,
        max_levels=2,
        cfactor=2,
        abs_tol=1e-6,
        storage=0,
    )
    rb, rp = batched.solve(), plain.solve()
    assert rb.calls["step_batch"] > 0 and list(rb.residual_norms[1:]) == list(rp.residual_norms[1:])
    exec(compile("from mpi4py import MPI\nimport pyxbraid as xb\n" + blocks[2], "README adjoint", "exec"), adjoint)
    assert adjoint["res"].objective == 0.03599999999998741
    assert abs(adjoint["solver"].gradient() - 0.019200079996322887) < 1e-15


def test_readme_nn_block_trains_to_the_documented_accuracy(tmp_path, monkeypatch):
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    monkeypatch.chdir(tmp_path)  # the block saves peaks.npz
    ns = {}
    exec(compile(blocks[3], "README nn", "exec"), ns)
    assert ns["history"].val_accuracy[-1] == 0.92
    assert ns["accuracy"] == 0.92 and (tmp_path / "peaks.npz").exists()


def test_train_command_line_on_two_ranks(mpirun, tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import sys\nfrom pyxbraid.train import main\nsys.exit(main(sys.argv[1:]))\n")
    metrics = tmp_path / "m.json"
    out = mpirun(
        str(script),
        2,
        timeout=240,
        args=("peaks", "--epochs", "2", "--no-progress", "--out", str(tmp_path / "out"), "--metrics", str(metrics)),
    ).stdout
    assert "validation accuracy" in out
    import json

    m = json.loads(metrics.read_text())
    assert {"training_accuracy", "validation_accuracy", "wall_seconds", "ranks", "settings"} <= set(m)
    assert m["ranks"] == 2 and 0.5 < m["validation_accuracy"] <= 1 and 0.5 < m["training_accuracy"] <= 1
    assert m["settings"]["mode"] == "parallel" and m["settings"]["epochs"] == 2
    for name in ("model.npz", "training.png", "decision_regions.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000


def test_train_entry_point_is_installed():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "pyxbraid-train"]
    assert ep.value == "pyxbraid.train:main"


def test_numpy_layers_example_on_two_ranks(mpirun, tmp_path):
    """The user-defined layer passes check_layer, and exact layer-parallel training repeats layer-serial training."""
    args = ("--epochs", "2", "--train", "300", "--depth", "8")
    runs = {}
    for mode in ("exact", "serial"):
        out = mpirun(
            str(ROOT / "examples" / "peaks_numpy_layers.py"),
            2,
            timeout=180,
            args=(*args, "--mode", mode, "--save", str(tmp_path / f"{mode}.npz")),
        ).stdout
        assert "check_layer(AntiSymmetric(width=8, gamma=0.1)): ok" in out
        runs[mode] = [line for line in out.splitlines() if line.startswith("epoch")]
        assert len(runs[mode]) == 2 and "validation accuracy" in out
    assert runs["exact"] == runs["serial"]
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    from peaks_numpy_layers import AntiSymmetric

    from pyxbraid import nn

    exact, serial = (nn.ResNet.load(tmp_path / f"{m}.npz", layer=AntiSymmetric(8)) for m in ("exact", "serial"))
    for k, v in serial.parameters().items():
        np.testing.assert_allclose(exact.parameters()[k], v, rtol=1e-7, atol=1e-9)
