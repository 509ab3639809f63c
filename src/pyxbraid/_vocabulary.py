"""pyxbraid's vocabulary, declared once: solver options, callbacks, phases, status fields.

Everything else is derived from these tables:

- by ``codegen/generate.py`` (run it after editing this file; a test fails
  while a generated file is out of date): the C++ ``Options`` struct, its
  checks and its cross-rank fingerprint (``src/cpp/core/options.{hpp,cpp}``),
  the bindings of options, call counters and status fields, the phase list of
  the engine, the ``Solver`` signature and its docstring, the type stub
  ``_core.pyi`` and the tables in README.md;
- at run time: the validation of ``Solver`` keywords (``pyxbraid._options``).

This module is plain data (no imports of pyxbraid): the generator loads it
without building the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CALLBACKS", "OPTIONS", "PHASES", "STATUS_FIELDS", "Callback", "Option", "Phase", "StatusField"]


@dataclass(frozen=True)
class Option:
    """One solver option.

    kind: ``int``, ``float``, ``bool`` or ``optional_float`` (absent unless given:
    a ``has_<name>`` flag in C++). ``minimum`` (``>=``), ``positive`` (``> 0``) and
    ``choices`` are the checks; ``per_level`` options also take a sequence
    indexed by level; options of one ``group`` exclude each other, and the one
    with ``group_default`` applies when none is given. An option that
    ``requires`` a bool option has no effect without it: giving it another
    value than its default while that option is off is an error.
    """

    name: str
    kind: str
    default: object
    doc: str
    xbraid: str = ""
    minimum: float | None = None
    positive: bool = False
    choices: tuple = ()
    per_level: bool = False
    group: str = ""
    group_default: bool = False
    section: str = "MGRIT"
    details: str = ""  # more docstring text (numpydoc), after ``doc``
    requires: str = ""  # bool option(s), "a|b" = any of them, without which this one has no effect

    @property
    def rule(self) -> str:
        """The check as the error messages state it."""
        if self.choices:
            *head, last = (str(c) for c in self.choices)
            return f"{', '.join(head)} or {last}"
        if self.positive:
            return "> 0"
        if self.minimum is not None:
            return f">= {self.minimum:g}" if self.kind != "int" else f">= {int(self.minimum)}"
        return ""


@dataclass(frozen=True)
class Callback:
    """One user callback of an App (the engine invokes it through one choke point)."""

    name: str
    signature: str
    doc: str
    xbraid: str = ""
    counter: str = ""  # key of SolveResult.calls ("" = not counted)
    optional: bool = True


@dataclass(frozen=True)
class Phase:
    """Which part of the algorithm invoked a callback (``status.phase``)."""

    name: str
    doc: str


@dataclass(frozen=True)
class StatusField:
    """A read-only attribute of the status object handed to callbacks."""

    name: str
    ctype: str  # the C++ member's type: double, int or bool
    doc: str
    member: str = ""  # the C++ member it reads (default: name)
    pytype: str = field(default="")

    @property
    def python_type(self) -> str:
        return self.pytype or {"double": "float", "int": "int", "bool": "bool"}[self.ctype]


OPTIONS: tuple[Option, ...] = (
    Option(
        "max_levels",
        "int",
        30,
        "levels in the time-grid hierarchy (1 = sequential stepping)",
        "braid_SetMaxLevels",
        minimum=1,
    ),
    Option(
        "min_coarse",
        "int",
        2,
        "stop coarsening before a level would have fewer intervals",
        "braid_SetMinCoarse",
        minimum=1,
    ),
    Option(
        "cfactor",
        "int",
        2,
        "coarsening factor, for all levels or a sequence indexed by level",
        "braid_SetCFactor",
        minimum=2,
        per_level=True,
    ),
    Option(
        "nrelax",
        "int",
        1,
        "FC sweeps before restriction: 0 = F-relaxation, 1 = FCF, 2 = FCFCF",
        "braid_SetNRelax",
        minimum=0,
        per_level=True,
        details="Per level as a sequence (missing levels take the global value); with ``relax_only_cg`` "
        "entry ``max_levels - 1`` is the coarsest level's.",
    ),
    Option(
        "cwt", "float", 1.0, "C-relaxation weight (weighted Jacobi)", "braid_SetCRelaxWt", positive=True, per_level=True
    ),
    Option(
        "abs_tol", "optional_float", None, "stop when ||r_k|| < abs_tol", "braid_SetAbsTol", minimum=0.0, group="tol"
    ),
    Option(
        "rel_tol",
        "optional_float",
        1e-9,
        "stop when ||r_k|| < rel_tol * ||r_0|| (the default)",
        "braid_SetRelTol",
        minimum=0.0,
        group="tol",
        group_default=True,
    ),
    Option("max_iter", "int", 100, "maximum number of iterations", "braid_SetMaxIter", minimum=1),
    Option(
        "tnorm",
        "int",
        2,
        "how C-point residual norms combine: 1 sum, 2 root of sum of squares, 3 max",
        "braid_SetTemporalNorm",
        choices=(1, 2, 3),
    ),
    Option(
        "fmg",
        "bool",
        False,
        "F-cycles (iteration j is an F-cycle iff fmg and j != nfmg, as XBraid's code)",
        "braid_SetFMG",
    ),
    Option("nfmg", "int", -1, "the iteration that is not an F-cycle (-1: all are)", "braid_SetNFMG", minimum=-1),
    Option("nfmg_vcyc", "int", 1, "V-cycles per intermediate level within an F-cycle", "braid_SetNFMGVcyc", minimum=1),
    Option(
        "skip", "bool", True, "no down-cycle in the first iteration (first solve only: a deviation)", "braid_SetSkip"
    ),
    Option(
        "storage",
        "int",
        -1,
        "-1: C-points only; 0: all points on all levels; s > 0: all points on levels >= s",
        "braid_SetStorage",
        minimum=-1,
    ),
    Option("seq_soln", "bool", False, "start from the sequential solution (no skip)", "braid_SetSeqSoln"),
    Option(
        "residual_computation",
        "bool",
        True,
        "compute residual norms (off: run max_iter iterations)",
        "braid_SetResidualComputation",
    ),
    Option("relax_only_cg", "bool", False, "relax the coarsest level instead of solving it", "braid_SetRelaxOnlyCG"),
    Option("final_fc_relax", "bool", False, "finish with an FC sweep instead of an F-sweep", "braid_SetFinalFCRelax"),
    Option(
        "periodic",
        "bool",
        False,
        "time-periodic problem: points 0..ntime-1, index ntime identified with 0",
        "braid_SetPeriodic",
        details="The step to index 0 starts at t[ntime-1] and ends at ``tstop`` (status.tstop; "
        "status.tindex is -1 there), so u(tstart) = u(tstop) is solved for, not imposed: ``init`` at "
        "tstart gives only an initial guess. The coarsest level is relaxed (``nrelax`` entry "
        "``max_levels - 1`` FC sweeps, then F-relaxation) instead of solved. Needs at least 2 levels; "
        "not with ``seq_soln`` or the adjoint.",
    ),
    Option(
        "full_residual_norm",
        "bool",
        False,
        "also measure the residual at every fine point with the app's residual, and stop on it",
        "braid_SetFullRNormRes",
        details="Each iteration, after the level-0 restriction, a sweep steps every F-point and "
        "evaluates the app's ``residual`` at all points (F-points: A(Phi(u_{i-1}), u_{i-1}); "
        "C-points: A(u_i, u_{i-1})); ``result.full_residual_norms`` holds the temporal norms and the "
        "convergence test uses them (the tolerances apply to it). The app's ``residual`` then serves "
        "only this norm: it does not switch on the user-residual mode. ``residual_computation=False`` "
        "does not switch it off (as in XBraid: the C-point norms are then not available, the full "
        "norm still stops the iteration).",
    ),
    Option(
        "richardson",
        "bool",
        False,
        "Richardson extrapolation at the fine C-points (one more step of the coarse length per C-point)",
        "braid_SetRichardsonEstimation",
        details="From the second iteration on, the level-0 C-relaxation also steps the C-point to its left "
        "over the whole coarse interval and replaces the fine value u_f by "
        "(DT^k u_f - dtk u_c) / (DT^k - dtk), DT = the coarse interval, dtk = the sum of its fine steps to "
        "the power k = ``local_order``; the FAS right-hand side of level 1 and the residual norms are "
        "scaled to match (XBraid's algorithm: the solution at C-points converges to an extrapolated, "
        "more accurate one). Needs at least 2 levels to act, ``cwt`` = 1 on every level; not with "
        "``periodic``, ``adjoint``, ``full_residual_norm`` or an app's ``residual`` (the user-residual "
        "mode), where XBraid's iteration does not converge.",
    ),
    Option(
        "error_estimation",
        "bool",
        False,
        "Richardson-based estimates of the local error at every fine point (status.error_estimate)",
        "braid_SetRichardsonEstimation",
        details="Computed in each level-0 restriction from the coarse-grid right-hand side of each "
        "coarse interval and given to every fine point of that interval: ``status.error_estimate`` in "
        "level-0 ``step`` (of the point stepped to) and ``access`` calls, ``status.error_estimates`` (this "
        "rank's points) in ``sync``, and :meth:`Solver.local_error_estimates`; -1.0 where none is available yet "
        "(before the first level-0 restriction, on coarse levels, with one level); index 0, where no "
        "interval ends, gets 0.0 (as in XBraid). Points after the last C-point share the last interval's. "
        "Needs ``cwt`` = 1 on every level; not with ``periodic``.",
    ),
    Option(
        "refine",
        "bool",
        False,
        "adaptive temporal refinement: level-0 steps ask for finer intervals (status.set_rfactor)",
        "braid_SetRefine",
        details="At the top of each cycle, after the sync, the factors the last level-0 steps asked for "
        "(``status.set_rfactor(r)``: r equal intervals; ``status.set_refinement_dts(dts)``: r - 1 given "
        "steps, then the rest of the interval) build a new fine grid when any factor is > 1. The current "
        "iterate is carried over: old points keep their values (F-points relaxed from the C-points first), "
        "new points are stepped from the old point to their left; the points are block-distributed anew and "
        "the hierarchy is rebuilt. That cycle does no convergence test and the iteration counter is not "
        "advanced (XBraid prints the same r_k twice). ``result.ntime``, :attr:`Solver.times` and the states "
        "then describe the refined grid; ``error_estimation``'s estimates are -1.0 again until the "
        "next level-0 restriction. Not with ``periodic``, ``adjoint``, ``objective_only``, "
        "``seq_soln``, ``richardson``, ``full_residual_norm``, ``relax_only_cg``, shells, spatial coarsening "
        "or ``step_batch``.",
    ),
    Option(
        "max_refinements",
        "int",
        200,
        "refinement stops after this many refinements",
        "braid_SetMaxRefinements",
        minimum=0,
        requires="refine",
    ),
    Option(
        "tpoints_cutoff",
        "int",
        2147483646,
        "refinement stops once the grid has this many intervals or more (default: no limit)",
        "braid_SetTPointsCutoff",
        minimum=1,
        requires="refine",
    ),
    Option(
        "incr_max_levels",
        "bool",
        False,
        "each refinement allows one more level (max_levels + 1)",
        "braid_SetIncrMaxLevels",
        requires="refine",
    ),
    Option(
        "local_order",
        "int",
        2,
        "order of the local truncation error of the app's step (backward Euler: 2; a p-th order method: p + 1)",
        "braid_SetRichardsonEstimation",
        minimum=2,
        requires="richardson|error_estimation",
    ),
    Option(
        "delta_rank",
        "int",
        0,
        "low-rank Delta correction of this rank on coarse levels (0: off)",
        "braid_SetDeltaCorrection",
        minimum=0,
        section="delta correction",
        details="Every state carries ``delta_rank`` basis vectors (``init_basis`` on level 0, orthonormalized "
        "with ``inner_product``) that ``step`` must propagate in place by the step's Jacobian "
        "(``status.basis_vectors``). On coarse levels the step becomes Phi_c(u) + tau + Delta(u) with "
        "Delta ~ (Phi_f^m - Phi_c) projected on the basis, as XBraid's ex-07. Not with the adjoint, "
        "``step_batch``, shells, ``periodic``, a user ``residual`` or ``full_residual_norm``, nor (not yet "
        "checked against XBraid) spatial coarsening, ``richardson`` or ``error_estimation``; float64 states only.",
    ),
    Option(
        "defer_delta_level",
        "int",
        0,
        "Delta correction only on levels above this one (basis vectors propagated from it on)",
        "braid_SetDeferDelta",
        minimum=0,
        section="delta correction",
    ),
    Option(
        "defer_delta_iter",
        "int",
        0,
        "Delta correction only from this iteration on",
        "braid_SetDeferDelta",
        minimum=0,
        section="delta correction",
    ),
    Option(
        "lyapunov",
        "bool",
        False,
        "estimate Lyapunov vectors on the coarsest level and in interpolation; local exponents in access",
        "braid_SetLyapunovEstimation",
        section="delta correction",
        details="Also computes local Lyapunov exponents in the final FC sweep (``status.lyapunov_exponents`` "
        "at level-0 C-points in ``access``), as XBraid's ex-07 (exponents = lyapunov or lyapunov_relax).",
    ),
    Option(
        "lyapunov_relax",
        "bool",
        False,
        "also propagate the basis vectors in FC-relaxation (XBraid's relax argument, ex-07's -fcfLyap)",
        "braid_SetLyapunovEstimation",
        section="delta correction",
    ),
    Option(
        "batch_size",
        "int",
        0,
        "most steps per step_batch call (0: as many as fit in about 8 MiB of states per batch array)",
        "",
        minimum=0,
        details="Only for apps that define ``step_batch``; it bounds the memory of the batch arrays.",
    ),
    Option(
        "access_level",
        "int",
        1,
        "0 none (states on demand), 1 after convergence, 2 also every iteration",
        "braid_SetAccessLevel",
        choices=(0, 1, 2),
    ),
    Option(
        "print_level",
        "int",
        0,
        "0 silent (XBraid: 2), 1 one line per iteration on rank 0, 2 plus a summary",
        "braid_SetPrintLevel",
        choices=(0, 1, 2, 3),
    ),
    Option(
        "adjoint",
        "bool",
        False,
        "XBraid_Adjoint: each iteration is a primal cycle and its reverse",
        "braid_InitAdjoint",
        section="adjoint",
        details="Gives the objective ``result.objective`` and the gradient (:meth:`gradient`). Needs the "
        "app's ``objective``, ``objective_adjoint``, ``step_adjoint`` and ``reset_gradient``. Forces "
        "``skip`` off. Converged when both residuals meet their tolerances. With ``max_levels=1`` "
        "the result is the exact discrete adjoint (backpropagation through time).",
    ),
    Option(
        "abs_tol_adjoint",
        "optional_float",
        None,
        "stop when ||r_adj|| < abs_tol_adjoint",
        "braid_SetAbsTolAdjoint",
        minimum=0.0,
        group="tol_adjoint",
        section="adjoint",
    ),
    Option(
        "rel_tol_adjoint",
        "optional_float",
        1e-6,
        "stop when ||r_adj|| < rel_tol_adjoint * ||r_adj|| of the first iteration (the default)",
        "braid_SetRelTolAdjoint",
        minimum=0.0,
        group="tol_adjoint",
        group_default=True,
        section="adjoint",
    ),
    Option(
        "tstart_objective",
        "optional_float",
        None,
        "start of the (closed) objective window (default: tstart)",
        "braid_SetTStartObjective",
        section="adjoint",
    ),
    Option(
        "tstop_objective",
        "optional_float",
        None,
        "end of the (closed) objective window (default: tstop)",
        "braid_SetTStopObjective",
        section="adjoint",
    ),
    Option(
        "objective_only",
        "bool",
        False,
        "evaluate the objective without the adjoint (line searches)",
        "braid_SetObjectiveOnly",
        section="adjoint",
    ),
    Option(
        "virtual_time",
        "bool",
        False,
        "predict the wall time on one dedicated core per rank: result.virtual_wall_time",
        section="virtual time",
        details="Each rank keeps a virtual clock: its own compute time (thread CPU time, Python callbacks "
        "included; time spent descheduled or waiting does not count) plus modelled communication: a "
        "message arrives ``virtual_latency + bytes / virtual_bandwidth`` after it was sent, a reduction "
        "ends ``ceil(log2 P)`` such messages after the last rank joined it. Run a job oversubscribed (more "
        "ranks than cores) and read the wall time it would take with a core per rank. Off by default, "
        "free when off; the numbers computed are the same either way.",
    ),
    Option(
        "virtual_latency",
        "float",
        1.5e-6,
        "modelled seconds per message, end to end (virtual_time; default: an InfiniBand EDR/HDR cluster)",
        section="virtual time",
        minimum=0.0,
        requires="virtual_time",
    ),
    Option(
        "virtual_bandwidth",
        "float",
        12.0e9,
        "modelled network bandwidth in bytes per second (virtual_time; default: InfiniBand EDR, 100 Gb/s)",
        section="virtual time",
        positive=True,
        requires="virtual_time",
    ),
    Option(
        "virtual_step_cost",
        "optional_float",
        None,
        "seconds of compute charged per step call instead of the measured CPU time (virtual_time)",
        section="virtual time",
        minimum=0.0,
        requires="virtual_time",
        details="A deterministic compute model (everything but ``step`` and ``step_adjoint`` calls is then "
        "free): the critical path of the algorithm in step calls, for tests and what-if studies.",
    ),
)

CALLBACKS: tuple[Callback, ...] = (
    Callback(
        "init",
        "init(t, u)",
        "fill u: the initial condition at tstart, a guess elsewhere",
        "braid_PtFcnInit",
        counter="init",
        optional=False,
    ),
    Callback(
        "init_shell",
        "init_shell(t, shell)",
        "fill the shell of a point that keeps only a shell (apps with shell_shape)",
        "braid_PtFcnSInit",
        counter="init_shell",
    ),
    Callback(
        "step",
        "step(u, ustop, fstop, status)",
        "advance u in place from status.tstart to status.tstop",
        "braid_PtFcnStep",
        counter="step",
        optional=False,
    ),
    Callback(
        "step_batch",
        "step_batch(u, ustop, fstop, tstart, tstop, status)",
        "advance k independent states in place: u[i] from tstart[i] to tstop[i] (u: (k, *shape))",
        "",
        counter="step_batch",
    ),
    Callback(
        "residual",
        "residual(ustop, r, status)",
        "user residual: r <- A(ustop, r) (switches on residual mode)",
        "braid_PtFcnResidual",
        counter="residual",
    ),
    Callback(
        "spatial_norm",
        "spatial_norm(u) -> float",
        "a norm of u (default: the Euclidean 2-norm)",
        "braid_PtFcnSpatialNorm",
        counter="norm",
    ),
    Callback(
        "init_basis",
        "init_basis(t, index, v)",
        "fill v with basis vector number index at time t (delta correction; linearly independent)",
        "braid_PtFcnInitBasis",
        counter="init_basis",
    ),
    Callback(
        "inner_product",
        "inner_product(u, v) -> float",
        "an inner product of u and v (delta correction; default: the Euclidean dot product)",
        "braid_PtFcnInnerProd",
        counter="inner_product",
    ),
    Callback("access", "access(u, status)", "look at a state (read-only)", "braid_PtFcnAccess", counter="access"),
    Callback(
        "sync",
        "sync(status)",
        "called on every rank at fixed points: after the initial guess and at the top of each cycle (status.caller)",
        "braid_PtFcnSync",
        counter="sync",
    ),
    Callback(
        "objective",
        "objective(u, status) -> float",
        "the objective term f(u_i) at one fine point",
        "objectiveT",
        counter="objective",
    ),
    Callback(
        "objective_adjoint",
        "objective_adjoint(u, u_bar, f_bar, status)",
        "u_bar = (df/du)^T f_bar; add (df/ddesign)^T f_bar to the gradient",
        "objectiveT_diff",
        counter="objective_adjoint",
    ),
    Callback(
        "step_adjoint",
        "step_adjoint(u, ustop, u_bar, ustop_bar, status)",
        "u_bar <- (dPhi/du)^T u_bar, ustop_bar = (dPhi/dustop)^T u_bar; add (dPhi/ddesign)^T u_bar to the gradient",
        "step_diff",
        counter="step_adjoint",
    ),
    Callback(
        "step_adjoint_batch",
        "step_adjoint_batch(u, ustop, u_bar, ustop_bar, tstart, tstop, status)",
        "the adjoints of k independent steps of one step_batch call, row by row as step_adjoint",
        "",
        counter="step_adjoint_batch",
    ),
    Callback(
        "shape_at",
        "shape_at(level) -> tuple",
        "the shape of a state on a level (default: the app's shape); needs coarsen and refine when it differs",
        "",
    ),
    Callback(
        "coarsen",
        "coarsen(fine, coarse, status)",
        "fill coarse (shape_at(status.level + 1)) from fine (shape_at(status.level)): spatial coarsening",
        "braid_PtFcnSCoarsen",
        counter="coarsen",
    ),
    Callback(
        "refine",
        "refine(coarse, fine, status)",
        "fill fine (shape_at(status.level)) from coarse (shape_at(status.level + 1)): spatial refinement",
        "braid_PtFcnSRefine",
        counter="refine",
    ),
    Callback(
        "coarsen_adjoint",
        "coarsen_adjoint(coarse_bar, fine_bar, status)",
        "fine_bar = C^T coarse_bar, the transpose of coarsen (adjoint=True with spatial coarsening)",
        "",
        counter="coarsen_adjoint",
    ),
    Callback(
        "refine_adjoint",
        "refine_adjoint(fine_bar, coarse_bar, status)",
        "coarse_bar = R^T fine_bar, the transpose of refine (adjoint=True with spatial coarsening)",
        "",
        counter="refine_adjoint",
    ),
    Callback("reset_gradient", "reset_gradient()", "set the gradient accumulator to zero", "reset_gradient"),
    Callback(
        "init_adjoint",
        "init_adjoint(t, u_bar, status)",
        "add (d init / d design)^T u_bar to the gradient (pyxbraid only: a design-dependent initial condition)",
        "",
        counter="init_adjoint",
    ),
    Callback(
        "postprocess_objective", "postprocess_objective(I) -> J", "J = F(I) from I = sum_i f(u_i)", "postprocess_obj"
    ),
    Callback(
        "postprocess_objective_adjoint",
        "postprocess_objective_adjoint(I) -> dJ/dI",
        "dF/dI; may assign the design part of dF/ddesign to the gradient",
        "postprocess_obj_diff",
    ),
)

PHASES: tuple[Phase, ...] = (
    Phase("init", "initial guess (braid_ASCaller_InitGuess / BaseInit)"),
    Phase("fc_relax", "F- and C-relaxation (braid_ASCaller_FCRelax)"),
    Phase("f_restrict", "F-sweep + FAS residual before restriction (braid_ASCaller_FRestrict)"),
    Phase("residual", "coarse-grid residual during restriction (braid_ASCaller_Residual)"),
    Phase("f_interp", "F-relaxation before interpolation / coarsest solve (braid_ASCaller_FInterp)"),
    Phase("access", "final (or per-iteration) access sweep (braid_ASCaller_FAccess)"),
    Phase("sequential", "sequential solution used as initial guess (seq_soln)"),
    Phase("state_query", "on-demand final sweep answering a state query (access_level=0)"),
    Phase("objective", "objective evaluation and its adjoint (XBraid's ObjectiveStatus)"),
    Phase("full_residual", "full residual norm at every fine point (braid_ASCaller_ComputeFullRNorm)"),
    Phase("after_init", "sync after the initial guess (braid_ASCaller_Drive_AfterInit)"),
    Phase("top_cycle", "sync at the top of each cycle (braid_ASCaller_Drive_TopCycle)"),
    Phase("refine", "level-0 steps of a temporal refinement (braid_ASCaller_FRefine)"),
    Phase("after_refine", "sync after a refinement rebuilt the hierarchy (braid_ASCaller_FRefine_AfterInitHier)"),
)

STATUS_FIELDS: tuple[StatusField, ...] = (
    StatusField("tstart", "double", "Time of the input state."),
    StatusField("t", "double", "Time of the accessed state (same as tstart).", member="tstart"),
    StatusField("tstop", "double", "Time the step advances to."),
    StatusField("tindex", "int", "Index of tstart on this level."),
    StatusField("level", "int", "Grid level (0 = finest)."),
    StatusField("nlevels", "int", "Levels in the hierarchy."),
    StatusField("iter", "int", "MGRIT iteration (0-based)."),
    StatusField("done", "bool", "True in the final sweep after convergence."),
    StatusField("residual_norm", "double", "Latest residual norm (-1.0 when not available)."),
    StatusField("ntime", "int", "Number of fine time steps."),
    StatusField("nrefine", "int", "Temporal refinements done so far (refine=True)."),
    StatusField(
        "error_estimate",
        "double",
        "Richardson error estimate of the level-0 point stepped to (step) or accessed (access); "
        "-1.0 when not available (error_estimation off, coarse levels, before the first level-0 restriction).",
    ),
)
