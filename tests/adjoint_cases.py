"""Run the recorded XBraid_Adjoint cases (ex-01-adjoint family) with pyxbraid.

Shared by the single-rank pytest cases and the multi-rank runner. Each case is
run with the native LinearODE and, for the Python-App check, with a Python App
doing the same arithmetic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

import pyxbraid as xb

DATA = Path(__file__).resolve().parent / "data" / "xbraid_reference.json"


class DecayAdjoint(xb.App):
    """XBraid's ex-01-adjoint as a Python App (same operation order as the C example)."""

    def __init__(self, lam=-1.0, target=None, gamma=0.0):
        super().__init__(shape=(1,))
        self.lam, self.grad, self.target, self.gamma = lam, 0.0, target, gamma

    def init(self, t, u):
        u[:] = 1.0 if t == 0.0 else 0.456

    def step(self, u, ustop, fstop, status):
        dt = status.tstop - status.tstart
        u[0] = (1.0 / (1.0 - self.lam * dt)) * u[0]

    def objective(self, u, status):
        return 1.0 / status.ntime * u[0] * u[0]

    def objective_adjoint(self, u, u_bar, f_bar, status):
        u_bar[0] = 2.0 / status.ntime * u[0] * f_bar

    def step_adjoint(self, u, ustop, u_bar, ustop_bar, status):
        dt = status.tstop - status.tstart
        ddu = 1.0 / (1.0 - self.lam * dt) * u_bar[0]
        one_minus = 1.0 - dt * self.lam
        self.grad += (dt * u[0]) / (one_minus * one_minus) * u_bar[0]
        u_bar[0] = ddu

    def reset_gradient(self):
        self.grad = 0.0


class DecayAdjointPost(DecayAdjoint):
    """ex-01-optimization's tracking post-process."""

    def postprocess_objective(self, integral):
        J = 1.0 / 2.0 * ((integral - self.target) * (integral - self.target))
        J += self.gamma / 2.0 * (self.lam * self.lam)
        return J

    def postprocess_objective_adjoint(self, integral):
        self.grad = self.gamma * self.lam
        return integral - self.target


class DecayAdjointBatched(DecayAdjoint):
    """DecayAdjoint with step_batch and step_adjoint_batch (row by row the same arithmetic)."""

    def step_batch(self, u, ustop, fstop, tstart, tstop, status):
        dt = tstop - tstart
        u[:, 0] = (1.0 / (1.0 - self.lam * dt)) * u[:, 0]

    def step_adjoint_batch(self, u, ustop, u_bar, ustop_bar, tstart, tstop, status):
        dt = tstop - tstart
        ddu = 1.0 / (1.0 - self.lam * dt) * u_bar[:, 0]
        one_minus = 1.0 - dt * self.lam
        self.grad += float(np.sum((dt * u[:, 0]) / (one_minus * one_minus) * u_bar[:, 0]))
        u_bar[:, 0] = ddu


class DecayAdjointPostBatched(DecayAdjointBatched, DecayAdjointPost):
    """DecayAdjointPost, batched."""


def load_cases(ranks=None):
    cases = json.loads(DATA.read_text())["cases"]
    return [c for c in cases if c["app"] == "ex01_adjoint" and (ranks is None or c["ranks"] == ranks)]


def _post(case):
    a = case["app_options"]
    if "optimization" in a:
        return a["optimization"]["target"], a["optimization"]["gamma"]
    if "postprocess" in a:
        return a["postprocess_target"], 0.0
    return None, 0.0


def make(case, comm, python_app=False):
    """The case's solver: native, a Python App (True), or a batched Python App ("batched")."""
    a = case["app_options"]
    target, gamma = _post(case)
    if python_app == "batched":
        app = DecayAdjointPostBatched(a["lam"], target, gamma) if target is not None else DecayAdjointBatched(a["lam"])
    elif python_app:
        app = DecayAdjointPost(a["lam"], target, gamma) if target is not None else DecayAdjoint(a["lam"])
    else:
        app = xb.apps.LinearODE(lam=a["lam"], objective="mean_square", target=target, regularization=gamma)
    kwargs = dict(case["options"])
    return xb.Solver(app, a["tstart"], a["tstop"], a["ntime"], comm=comm, adjoint=True, **kwargs), app


def _close(x, y, rtol, atol=0.0):
    return abs(x - y) <= atol + rtol * abs(y)


def check_solve(tag, res, grad, ref, problems):
    if res.iterations != ref["iterations"]:
        problems.append(f"{tag}: iterations {res.iterations} != XBraid {ref['iterations']}")
        return
    for it, (mine, theirs) in enumerate(zip(res.residual_norms, ref["residual_norms"], strict=True)):
        if theirs is None:
            if not math.isnan(mine):
                problems.append(f"{tag}: ||r_{it}|| = {mine!r}, XBraid: not available")
        elif not _close(mine, theirs, 1e-12, 1e-15):
            problems.append(f"{tag}: ||r_{it}|| = {mine!r} != XBraid {theirs!r}")
    for it, (mine, theirs) in enumerate(zip(res.adjoint_residual_norms, ref["adjoint_residual_norms"], strict=True)):
        if not _close(mine, theirs, 1e-9, 1e-18):
            problems.append(f"{tag}: ||r_adj_{it}|| = {mine!r} != XBraid {theirs!r}")
    if not _close(res.objective, ref["objective"], 1e-12):
        problems.append(f"{tag}: J = {res.objective!r} != XBraid {ref['objective']!r}")
    if not _close(grad, ref["gradient"], 1e-11, 1e-17):
        problems.append(f"{tag}: dJ/dlam = {grad!r} != XBraid {ref['gradient']!r}")


def check_case(case, comm, python_app=False) -> list[str]:
    problems: list[str] = []
    solver, app = make(case, comm, python_app)
    base = f"{case['name']} ranks={case['ranks']}{' (Python App)' if python_app else ''}"
    if "optimization" in case["app_options"]:
        opt = case["app_options"]["optimization"]
        result = case["optimization_result"]
        for k in range(opt["max_optim_iter"]):
            res = solver.solve()
            grad = solver.gradient()
            if k < len(case["solves"]):
                check_solve(f"{base} optimisation step {k}", res, grad, case["solves"][k], problems)
            if abs(grad) < opt["gtol"]:
                break
            app.lam = app.lam - opt["stepsize"] * grad
        if k != result["optim_iterations"]:
            problems.append(f"{base}: {k} optimisation steps != XBraid {result['optim_iterations']}")
        if not _close(app.lam, result["final_design"], 1e-9):
            problems.append(f"{base}: final lam {app.lam!r} != XBraid {result['final_design']!r}")
        return problems
    for k, ref in enumerate(case["solves"]):
        res = solver.solve()
        check_solve(f"{base} solve {k}", res, solver.gradient(), ref, problems)
    return problems
