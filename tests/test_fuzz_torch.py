"""Property-based fuzz of pyxbraid.torch.LayerParallel: construction and a forward/backward pass.

Any combination of arguments either builds a module whose forward pass equals the
layer-serial one (and whose backward pass gives finite gradients), or raises
TypeError/ValueError naming the culprit parameter. Nothing crashes, hangs or is
accepted silently. One process (COMM_SELF); the multi-rank failure paths are in
tests/test_torch.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpi4py import MPI

torch = pytest.importorskip("torch")

from pyxbraid.torch import ConvergenceWarning, LayerParallel  # noqa: E402

torch.set_num_threads(1)
FUZZ = settings(
    derandomize=True, deadline=None, database=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
WIDTH = 3

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-2, 4), max_size=3),
    st.just(np.int64(3)),
    st.just(object()),
)

ARGUMENTS = {
    "depth": st.integers(-1, 9),
    "T": st.floats(-1.0, 3.0),
    "mode": st.sampled_from(["serial", "exact", "one_shot", "fast"]),
    "max_levels": st.integers(-1, 5),
    "cfactor": st.integers(0, 5),
    "nrelax": st.integers(-1, 3),
    "max_iter": st.one_of(st.none(), st.integers(-1, 8)),
    "tol": st.one_of(st.none(), st.floats(-1e-3, 1e-2)),
    "adjoint_tol": st.one_of(st.none(), st.floats(-1e-3, 1e-2)),
    "coarse": st.sampled_from(["tstop", "mean", "first"]),
    "keep_graph": st.booleans(),
    "batch_steps": st.booleans(),
    "solver_options": st.one_of(
        st.none(),
        st.fixed_dictionaries({}, optional={"storage": st.integers(-2, 2), "cwt": st.floats(-1.0, 2.0)}),
        st.just({"adjoint": True}),
        st.just({"no_such_option": 1}),
    ),
}


def make_block(k: int) -> torch.nn.Module:
    torch.manual_seed(1000 + k)
    return torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.Tanh()).double()


@st.composite
def argument_sets(draw):
    names = draw(st.lists(st.sampled_from(sorted(ARGUMENTS)), unique=True, max_size=5))
    # mostly plausible values of the right type, sometimes anything at all
    return {name: draw(st.one_of(ARGUMENTS[name], ARGUMENTS[name], junk)) for name in names}


def serial_forward(depth: int, T: float, u0: torch.Tensor) -> torch.Tensor:
    h, u = T / depth, u0
    with torch.no_grad():
        for k in range(depth):
            u = u + h * make_block(k)(u)
    return u


@FUZZ
@given(argument_sets())
def test_layer_parallel_arguments(kwargs):
    try:
        lp = LayerParallel(make_block, comm=MPI.COMM_SELF, **{"depth": 4, **kwargs})
    except (TypeError, ValueError) as exc:
        text = str(exc)
        assert any(name in text for name in kwargs), f"{type(exc).__name__}: {exc} (given {kwargs})"
        return
    depth, T = kwargs.get("depth", 4), kwargs.get("T", 1.0)
    u0 = torch.linspace(-1.0, 1.0, 2 * WIDTH, dtype=torch.float64).reshape(2, WIDTH).requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        # a tiny max_iter legitimately runs out: a ConvergenceWarning, and the result is inexact
        warnings.simplefilter("always", ConvergenceWarning)
        uT = lp(u0)
        uT.square().sum().backward()
    ran_out = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    assert uT.shape == u0.shape and bool(torch.isfinite(uT).all())
    assert u0.grad is not None and bool(torch.isfinite(u0.grad).all())
    for p in lp.parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())
    reference = serial_forward(depth, float(T), u0.detach())
    if lp.mode == "serial" or (lp.mode == "exact" and not ran_out):
        # serial mode is plain stepping; exact mode converged to its relative tolerance (default 1e-12)
        tol = kwargs.get("tol") or 1e-12
        bound = 1e-12 if lp.mode == "serial" else max(1e-9, 1e3 * tol)
        error = float((uT.detach() - reference).abs().max())
        assert error <= bound * max(1.0, float(reference.abs().max())), (error, kwargs)


HIERARCHY_ARGUMENTS = {
    "levels": st.integers(-1, 5),
    "restriction": st.sampled_from(["average", "inject", "mean"]),
    "prolongation": st.sampled_from(["linear", "constant", "cubic"]),
}


@FUZZ
@given(
    st.sampled_from([4, 6, 8]),
    st.fixed_dictionaries(
        {}, optional={name: st.one_of(value, value, junk) for name, value in HIERARCHY_ARGUMENTS.items()}
    ),
    st.one_of(st.integers(-1, 3), junk),
)
def test_hierarchy_arguments(depth, kwargs, level):
    """pyxbraid.torch.Hierarchy: builds and transfers exactly (constant blocks), or names what it refuses."""
    from pyxbraid.torch import Hierarchy

    lp = LayerParallel(lambda k: make_block(0), depth, comm=MPI.COMM_SELF, mode="serial")  # every block alike
    try:
        h = Hierarchy(lp, **kwargs)
    except (TypeError, ValueError) as exc:
        assert any(name in str(exc) for name in kwargs), f"{type(exc).__name__}: {exc} (given {kwargs})"
        return
    assert [m.depth for m in h.lps] == [depth // 2**i for i in range(h.levels)]
    try:
        h.restrict(level)
        h.prolong(level)
    except ValueError as exc:
        assert "level must be an integer" in str(exc), exc
        return
    # blocks constant in t: both transfers give them back exactly (linear: 1.25 c - 0.25 c at the ends)
    expected = make_block(0).state_dict()
    for k in range(depth):
        for name, value in lp.layer(k).state_dict().items():
            assert torch.allclose(value, expected[name], rtol=1e-15, atol=1e-15), (k, name)
