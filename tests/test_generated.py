"""The vocabulary is declared once (src/pyxbraid/_vocabulary.py); every derived copy is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pyxbraid as xb
from pyxbraid import _core, _vocabulary

ROOT = Path(__file__).resolve().parent.parent


def test_generated_files_are_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "codegen" / "generate.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_engine_knows_every_declared_option():
    opt = _core.Options()
    for o in _vocabulary.OPTIONS:
        assert hasattr(opt, o.name), o.name
        if o.kind == "optional_float":
            assert getattr(opt, f"has_{o.name}") == o.group_default
        if o.default is not None:
            assert getattr(opt, o.name) == o.default, o.name


def test_phases_and_counters_come_from_the_vocabulary():
    assert _core.PHASES == tuple(p.name for p in _vocabulary.PHASES)
    counters = [c.counter for c in _vocabulary.CALLBACKS if c.counter]
    result = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 4, max_levels=1).solve()
    assert list(result.calls) == counters


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: _core.LinearODE([1.0], 1.0, 0.0, "euler", False),
            "scheme must be one of 'backward_euler', 'forward_euler', got 'euler'",
        ),
        (lambda: _core.Heat1D(9, "rand", False), "guess must be one of 'random', 'xbraid', 'zero', got 'rand'"),
        (
            lambda: _core.ResNetParameters(2, 4, 3, 2, 1.0, "softplus", True, False, 0, 3, True, True),
            "activation must be one of 'tanh', 'relu', 'smooth_relu', got 'softplus'",
        ),
    ],
)
def test_bindings_reject_unknown_names(make, message):
    with pytest.raises(ValueError, match=message):
        make()
