"""The MGRIT solver: validation, results and printing around the C++ engine."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core
from ._mpi_guard import load_mpi
from ._options import OPTION_NAMES, as_int, core_options, describe_options
from ._options import as_finite as _finite
from .app import App, NativeApp, ShellState, _as_shape, _as_shell_shape, _as_state_dtype
from .errors import _Agreed

__all__ = ["SolveResult", "Solver"]

MPI = load_mpi()

_ADJOINT_METHODS = ("objective", "objective_adjoint", "step_adjoint", "reset_gradient")


def _checked_shape_at(app: App) -> Callable[[int], tuple[int, ...]]:
    """app.shape_at with its answer checked: a shape (tuple of ints >= 1), the error naming shape_at and the level."""

    def shape_at(level: int) -> tuple[int, ...]:
        value = app.shape_at(level)
        try:
            return _as_shape(value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{type(app).__name__}.shape_at({level}) returned {value!r}: {e}") from None

    return shape_at


@dataclass(frozen=True)
class SolveResult:
    """What one :meth:`Solver.solve` returns.

    Attributes
    ----------
    iterations : int
        MGRIT iterations of this solve (XBraid's braid_GetNumIter; the skipped
        iteration 0 counts). 0 for sequential marching (``max_levels=1``).
    residual_norms : numpy.ndarray
        ||r_k|| per iteration (XBraid's braid_GetRNorms), NaN where not
        available (the skipped iteration 0, ``residual_computation=False``).
    converged : bool
        True when the tolerance was met (always True for sequential marching).
    nlevels : int
        Levels of the time-grid hierarchy.
    level_sizes : tuple of int
        Global number of time points on each level.
    wall_time : float
        Seconds this rank spent in the solve.
    step_calls : int
        Step callbacks on this rank (the engine's own residual steps included).
    step_calls_all_ranks : int
        Step callbacks summed over all ranks.
    calls : dict
        Callback counts on this rank: init, step, residual, norm, access,
        objective, step_adjoint, objective_adjoint.
    objective : float or None
        J of the last iteration (XBraid's braid_GetObjective) with ``adjoint``
        or ``objective_only``, else None.
    adjoint_residual_norms : numpy.ndarray
        ||r_adj|| per iteration (NaN where not available: without the adjoint,
        or with ``objective_only``; empty for sequential marching, ``max_levels=1``).
    full_residual_norms : numpy.ndarray or None
        With ``full_residual_norm=True``: the full residual norm of each
        iteration (the app's residual at every fine point; NaN where not
        available, e.g. the skipped iteration 0); the convergence test used it.
        None otherwise.
    final_full_residual_norm : float or None
        With ``full_residual_norm=True``: the full residual norm of the
        returned solution (measured after the last iteration, as XBraid does,
        before the final sweep: with ``final_fc_relax=True`` that sweep's
        C-relaxation still moves the C-points); None otherwise.
    virtual_wall_time : float or None
        With ``virtual_time=True``: the predicted wall time in seconds of this
        solve on one dedicated core per rank and the modelled network (the
        latest rank's virtual clock at the end, the same on every rank); else
        None. See the options ``virtual_*``.
    ntime : int
        Number of fine time steps at the end (larger than the Solver's
        ``ntime`` after a temporal refinement, ``refine=True``).
    nrefine : int
        Temporal refinements done so far (``refine=True``; 0 otherwise).
    cycle_iterations : numpy.ndarray
        The iteration index of each cycle of this solve. A cycle that refines
        the grid does not count as an iteration, so its index appears twice (as
        XBraid prints it).
    cycle_residual_norms : numpy.ndarray
        ||r_k|| of each cycle, NaN where not available (``residual_norms``
        keeps the last cycle of each iteration).
    """

    iterations: int
    residual_norms: np.ndarray
    converged: bool
    nlevels: int
    level_sizes: tuple[int, ...]
    wall_time: float
    step_calls: int
    step_calls_all_ranks: int
    calls: dict[str, int] = field(default_factory=dict)
    objective: float | None = None
    adjoint_residual_norms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    full_residual_norms: np.ndarray | None = None
    final_full_residual_norm: float | None = None
    virtual_wall_time: float | None = None
    ntime: int = 0
    nrefine: int = 0
    cycle_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cycle_residual_norms: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _defer_delta(value: Any, level: int, iteration: int) -> tuple[int, int]:
    """``defer_delta=(level, iteration)`` checked, as the two options it stands for."""
    if level != 0 or iteration != 0:
        raise ValueError("give defer_delta=(level, iteration) or defer_delta_level / defer_delta_iter, not both")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"defer_delta must be a pair (level, iteration) of integers >= 0, got {value!r}")
    return value[0], value[1]


class Solver:
    """Parallel-in-time MGRIT solver with XBraid's semantics.

    Time points ``0..ntime`` are block-distributed over the ranks of ``comm``;
    all ranks must construct the solver and call :meth:`solve` together.

    Parameters
    ----------
    app : App or NativeApp
        The problem: a :class:`pyxbraid.App` subclass instance or a built-in
        app from :mod:`pyxbraid.apps`.
    tstart, tstop : float
        Time interval (both may be omitted when ``times`` is given).
    ntime : int
        Number of time steps; fine points are ``t_0 .. t_ntime``.
    comm : mpi4py.MPI.Comm, optional
        Communicator over which time is distributed (default ``MPI.COMM_WORLD``).
    times : array_like, optional
        A user time grid of ``ntime + 1`` strictly increasing values
        (XBraid's braid_SetTimeGrid).
    defer_delta : tuple of int, optional
        ``(level, iteration)``: XBraid's braid_SetDeferDelta in one argument,
        the same as ``defer_delta_level=level, defer_delta_iter=iteration``.
    {options}

    Examples
    --------
    >>> import pyxbraid as xb
    >>> solver = xb.Solver(xb.apps.LinearODE(), tstart=0.0, tstop=5.0, ntime=10,
    ...                    max_levels=2, abs_tol=1e-6)
    >>> result = solver.solve()
    >>> result.iterations, float(solver.state_at(10)[0])
    (4, 0.017341529915832606)
    """

    def __init__(
        self,
        app: App | NativeApp,
        tstart: float | None = None,
        tstop: float | None = None,
        ntime: int | None = None,
        *,
        comm: Any = None,
        times: Sequence[float] | np.ndarray | None = None,
        defer_delta: tuple[int, int] | None = None,
        # BEGIN GENERATED options-signature (codegen/generate.py from _vocabulary.py)
        max_levels: int = 30,
        min_coarse: int = 2,
        cfactor: int | Sequence[int] = 2,
        nrelax: int | Sequence[int] = 1,
        cwt: float | Sequence[float] = 1.0,
        abs_tol: float | None = None,
        rel_tol: float | None = None,
        max_iter: int = 100,
        tnorm: int = 2,
        fmg: bool = False,
        nfmg: int = -1,
        nfmg_vcyc: int = 1,
        skip: bool = True,
        storage: int = -1,
        seq_soln: bool = False,
        residual_computation: bool = True,
        relax_only_cg: bool = False,
        final_fc_relax: bool = False,
        periodic: bool = False,
        full_residual_norm: bool = False,
        richardson: bool = False,
        error_estimation: bool = False,
        refine: bool = False,
        max_refinements: int = 200,
        tpoints_cutoff: int = 2147483646,
        incr_max_levels: bool = False,
        local_order: int = 2,
        delta_rank: int = 0,
        defer_delta_level: int = 0,
        defer_delta_iter: int = 0,
        lyapunov: bool = False,
        lyapunov_relax: bool = False,
        batch_size: int = 0,
        access_level: int = 1,
        print_level: int = 0,
        adjoint: bool = False,
        abs_tol_adjoint: float | None = None,
        rel_tol_adjoint: float | None = None,
        tstart_objective: float | None = None,
        tstop_objective: float | None = None,
        objective_only: bool = False,
        virtual_time: bool = False,
        virtual_latency: float = 1.5e-06,
        virtual_bandwidth: float = 12000000000.0,
        virtual_step_cost: float | None = None,
        # END GENERATED options-signature
    ) -> None:
        if comm is None:
            comm = MPI.COMM_WORLD
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm must be an mpi4py.MPI.Comm (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
        if comm == MPI.COMM_NULL:
            raise ValueError("comm is MPI.COMM_NULL")
        self._comm = comm
        self._app = app
        args = dict(locals())
        del args["self"], args["comm"], args["app"], args["tstart"], args["tstop"], args["ntime"], args["times"]
        del args["defer_delta"]
        if defer_delta is not None:
            args["defer_delta_level"], args["defer_delta_iter"] = _defer_delta(
                defer_delta, defer_delta_level, defer_delta_iter
            )
        # Agree before any collective: a rank that rejects its arguments must
        # not leave the others waiting inside the engine's construction.
        with _Agreed(comm, "Solver arguments"):
            built = self._validate(
                app, tstart, tstop, ntime, times, comm, **{k: v for k, v in args.items() if k in OPTION_NAMES}
            )
        native, self._shape, grid, tstart_v, tstop_v, ntime_v, opt = built
        self._shell_shape: tuple[int, ...] | None = getattr(app, "shell_shape", None) if isinstance(app, App) else None
        self._options = opt
        try:
            self._engine = _core.Engine(native, comm, tstart_v, tstop_v, ntime_v, grid, opt)
        except MemoryError as exc:
            raise MemoryError(f"{exc} (app shape {self._shape}, ntime {ntime_v})") from None
        self._engine._set_view_owner()
        self._solves = 0
        self._last: SolveResult | None = None
        self._shown_ntime = ntime_v
        if opt.print_level >= 1 and comm.Get_rank() == 0:
            # A weak reference: the engine must not keep its solver alive.
            printer = weakref.WeakMethod(self._print_iteration)

            def progress(it: int, rnorm: float, full: float, wall: float) -> None:
                method = printer()
                if method is not None:
                    method(it, rnorm, full, wall)

            self._engine.set_progress(progress)

    def _validate(self, app, tstart, tstop, ntime, times, comm, **options):
        grid, tstart_v, tstop_v, ntime_v = self._time_grid(tstart, tstop, ntime, times)
        opt = core_options(options)
        points = ntime_v if opt.periodic else ntime_v + 1  # periodic: index ntime is index 0
        if points < comm.Get_size():
            raise ValueError(
                f"ntime={ntime_v} gives {points} time points{' (periodic)' if opt.periodic else ''}, fewer than "
                f"the {comm.Get_size()} ranks of comm; use more time steps or fewer ranks"
            )
        if opt.periodic and opt.seq_soln:
            raise ValueError("periodic=True cannot be combined with seq_soln=True (as in XBraid)")
        if opt.periodic and (opt.adjoint or opt.objective_only):
            flag = "adjoint=True" if opt.adjoint else "objective_only=True"
            raise ValueError(f"periodic=True cannot be combined with {flag}")
        if opt.periodic and opt.max_levels < 2:
            raise ValueError(
                f"periodic=True needs max_levels >= 2 (its coarsest level is relaxed, not solved), "
                f"got max_levels={opt.max_levels}"
            )
        tstart_objective, tstop_objective = options["tstart_objective"], options["tstop_objective"]
        if tstart_objective is not None and tstop_objective is not None and tstop_objective < tstart_objective:
            raise ValueError(
                f"tstop_objective must be >= tstart_objective, got tstart_objective={tstart_objective!r}, "
                f"tstop_objective={tstop_objective!r}"
            )
        if (tstart_objective is not None or tstop_objective is not None) and not (opt.adjoint or opt.objective_only):
            raise ValueError(
                "tstart_objective / tstop_objective need adjoint=True or objective_only=True "
                f"(got tstart_objective={tstart_objective!r}, tstop_objective={tstop_objective!r})"
            )
        if opt.adjoint and opt.objective_only:
            raise ValueError("give adjoint=True or objective_only=True, not both")
        if opt.full_residual_norm and opt.adjoint:
            raise ValueError(
                "full_residual_norm=True cannot be combined with adjoint=True (XBraid does not support a full "
                "residual with the adjoint either)"
            )
        native, shape = self._native_app(app, opt.adjoint, opt.objective_only, opt.full_residual_norm)
        return native, shape, grid, tstart_v, tstop_v, ntime_v, opt

    # -- construction helpers ------------------------------------------------------
    @staticmethod
    def _time_grid(tstart, tstop, ntime, times):
        if times is not None:
            try:
                raw = np.asarray(times)
                if raw.dtype.kind not in "fiu":
                    # complex values would lose their imaginary part, bools and
                    # strings are no times: refuse instead of converting
                    raise TypeError(f"got dtype {raw.dtype}")
                grid = raw.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"times must be a sequence of real numbers ({exc})") from None
            if grid.ndim != 1 or grid.size < 2:
                raise ValueError(f"times must be a 1-D sequence of at least 2 values, got shape {grid.shape}")
            if not np.all(np.isfinite(grid)):
                k = int(np.argmax(~np.isfinite(grid)))
                raise ValueError(f"times must be finite, got times[{k}]={float(grid[k])!r}")
            increasing = grid[1:] > grid[:-1]  # compared, not subtracted: no overflow
            if not np.all(increasing):
                k = int(np.argmax(~increasing))
                raise ValueError(
                    f"times must be strictly increasing; times[{k + 1}]={float(grid[k + 1])!r} "
                    f"<= times[{k}]={float(grid[k])!r}"
                )
            with np.errstate(over="ignore"):
                steps = grid[1:] - grid[:-1]
            if not np.all(np.isfinite(steps)):
                k = int(np.argmax(~np.isfinite(steps)))
                raise ValueError(
                    f"times must have finite steps; times[{k + 1}] - times[{k}] = "
                    f"{float(grid[k + 1])!r} - {float(grid[k])!r} overflows float64"
                )
            if ntime is not None and as_int("ntime", ntime, 1) != grid.size - 1:
                raise ValueError(f"times must hold ntime + 1 = {int(ntime) + 1} values, got {grid.size}")
            if tstart is not None and _finite("tstart", tstart) != grid[0]:
                raise ValueError(f"tstart={tstart!r} differs from times[0]={float(grid[0])!r}")
            if tstop is not None and _finite("tstop", tstop) != grid[-1]:
                raise ValueError(f"tstop={tstop!r} differs from times[-1]={float(grid[-1])!r}")
            return [float(x) for x in grid], float(grid[0]), float(grid[-1]), grid.size - 1
        if tstart is None or tstop is None or ntime is None:
            missing = [n for n, v in (("tstart", tstart), ("tstop", tstop), ("ntime", ntime)) if v is None]
            raise TypeError(f"Solver needs {', '.join(missing)} (or a times array)")
        t0, t1 = _finite("tstart", tstart), _finite("tstop", tstop)
        if not t1 > t0:
            raise ValueError(f"tstop must be > tstart, got tstart={tstart!r}, tstop={tstop!r}")
        if not math.isfinite(t1 - t0):
            raise ValueError(
                f"tstop - tstart must be finite, got tstart={tstart!r}, tstop={tstop!r} "
                "(the difference overflows float64)"
            )
        return [], t0, t1, as_int("ntime", ntime, 1)

    @staticmethod
    def _native_app(app: Any, adjoint: bool = False, objective_only: bool = False, full_residual_norm: bool = False):
        if isinstance(app, NativeApp):
            if full_residual_norm and not getattr(app, "residual", False):
                raise ValueError(
                    f"full_residual_norm=True needs the app's residual: build {type(app).__name__} with residual=True"
                )
            if (adjoint or objective_only) and getattr(app, "objective", None) is None:
                raise ValueError(
                    f"{type(app).__name__} has no objective: build it with objective='mean_square' "
                    "to use adjoint=True or objective_only=True"
                )
            return app._native(), tuple(app.shape)
        if not isinstance(app, App):
            raise TypeError(
                f"app must be a pyxbraid.App subclass instance or a pyxbraid.apps app, got {type(app).__name__}"
            )
        name = type(app).__name__
        if not hasattr(app, "shape"):
            raise TypeError(f"{name}.__init__ must call super().__init__(shape=...)")
        app.shape = _as_shape(app.shape)
        for required in ("init", "step"):
            if not app._overrides(required):
                raise TypeError(f"{name} must implement {required}() (see pyxbraid.App.{required})")
        optional = {m: (getattr(app, m) if app._overrides(m) else None) for m in ("residual", "spatial_norm", "access")}
        needed = _ADJOINT_METHODS if adjoint else ("objective",) if objective_only else ()
        missing = [m for m in needed if not app._overrides(m)]
        if missing:
            flag = "adjoint=True" if adjoint else "objective_only=True"
            raise TypeError(f"{flag} needs {name}.{', '.join(missing)}() (see pyxbraid.App)")
        if full_residual_norm and optional["residual"] is None:
            raise TypeError(f"full_residual_norm=True needs {name}.residual() (see pyxbraid.App.residual)")
        if adjoint and optional["residual"] is not None:
            raise ValueError(f"adjoint=True cannot be combined with a user residual ({name}.residual), as in XBraid")
        post = app._overrides("postprocess_objective"), app._overrides("postprocess_objective_adjoint")
        if adjoint and post[0] != post[1]:
            raise TypeError(
                f"{name} must define both postprocess_objective and postprocess_objective_adjoint, or neither"
            )
        dtype = _as_state_dtype(getattr(app, "dtype", np.float64))
        native = _core.PythonApp(
            app,
            list(app.shape),
            dtype.name,
            app.init,
            app.step,
            optional["residual"],
            optional["spatial_norm"],
            optional["access"],
        )
        if app._overrides("step_adjoint_batch") and not app._overrides("step_batch"):
            raise TypeError(
                f"{name} defines step_adjoint_batch but not step_batch: the adjoint groups the steps "
                "that step_batch grouped (define both, or neither)"
            )
        Solver._set_shell(native, app, adjoint)
        if app._overrides("init_basis") or app._overrides("inner_product"):
            native.set_basis(
                app.init_basis if app._overrides("init_basis") else None,
                app.inner_product if app._overrides("inner_product") else None,
            )
        if app._overrides("sync"):
            native.set_sync(app.sync)
        Solver._set_spatial(app, native, adjoint)
        if app._overrides("step_batch"):
            batched_adjoint = app._overrides("step_adjoint_batch") and adjoint
            native.set_step_batch(app.step_batch, app.step_adjoint_batch if batched_adjoint else None)
        if adjoint or objective_only:

            def get(m):
                return getattr(app, m) if app._overrides(m) else None

            native.set_adjoint(
                get("objective"),
                get("objective_adjoint"),
                get("step_adjoint"),
                get("reset_gradient"),
                get("postprocess_objective"),
                get("postprocess_objective_adjoint"),
                get("init_adjoint"),
            )
        return native, tuple(app.shape)

    @staticmethod
    def _set_shell(native: Any, app: App, adjoint: bool) -> None:
        """Shells (``App(shell_shape=...)``, XBraid's braid_SetShell) and what they exclude."""
        shell_shape = getattr(app, "shell_shape", None)
        if shell_shape is None:
            return
        name = type(app).__name__
        shell_shape = app.shell_shape = _as_shell_shape(shell_shape)  # checked, as app.shape
        if not app._overrides("init_shell"):
            raise TypeError(
                f"{name} has shell_shape={shell_shape} and must implement init_shell() (see pyxbraid.App.init_shell)"
            )
        if adjoint:
            raise ValueError(f"adjoint=True cannot be combined with shells ({name}.shell_shape), as in XBraid")
        if app._overrides("step_batch"):
            raise TypeError(
                f"{name} defines step_batch and has shell_shape={shell_shape}: grouped steps do not carry "
                "shells (define one or the other)"
            )
        if app._overrides("coarsen"):
            raise TypeError(
                f"{name} defines coarsen/refine and has shell_shape={shell_shape}: spatial coarsening cannot be "
                "combined with shells yet"
            )
        native.set_shell(list(shell_shape), app.init_shell, ShellState)

    @staticmethod
    def _set_spatial(app: App, native: Any, adjoint: bool) -> None:
        """Hand the app's shape_at, coarsen and refine (spatial coarsening) to the engine."""
        name = type(app).__name__
        coarsen, refine, shape_at = (app._overrides(m) for m in ("coarsen", "refine", "shape_at"))
        if coarsen != refine:
            raise TypeError(f"{name} must define both coarsen and refine, or neither (spatial coarsening)")
        if shape_at and not coarsen:
            raise TypeError(
                f"{name} defines shape_at but not coarsen and refine: states of another shape on a coarse "
                "level need them to move between the levels"
            )
        if not coarsen:
            return
        transposes: tuple[Any, Any] = (None, None)
        if adjoint:
            missing = [m for m in ("coarsen_adjoint", "refine_adjoint") if not app._overrides(m)]
            if missing:
                raise TypeError(
                    f"adjoint=True with spatial coarsening ({name}.coarsen and {name}.refine) needs "
                    f"{name}.{' and '.join(missing)}() (see pyxbraid.App)"
                )
            transposes = app.coarsen_adjoint, app.refine_adjoint
        checked = None
        if shape_at:
            checked = _checked_shape_at(app)
            if checked(0) != app.shape:
                raise ValueError(f"{name}.shape_at(0) must be the app's shape {app.shape}, got {app.shape_at(0)!r}")
        native.set_spatial(checked, app.coarsen, app.refine, *transposes)

    # -- running -------------------------------------------------------------------
    def solve(self) -> SolveResult:
        """Run MGRIT (collective over ``comm``).

        A second call continues from the current iterate (warm restart); the
        relative-tolerance reference ||r_0|| of the first solve is kept.

        Returns
        -------
        SolveResult

        Raises
        ------
        RemoteRankError
            Another rank failed (this rank stops instead of hanging).
        DivergenceError
            The residual norm became NaN or infinite.
        CallbackError
            A callback produced a non-finite state or an invalid norm.
        """
        summary = self._engine.solve()
        self._solves += 1
        norms = np.array([math.nan if r == -1.0 else r for r in summary.residual_norms], dtype=np.float64)
        full = None
        final_full = None
        if self._options.full_residual_norm:
            full = np.array([math.nan if r == -1.0 else r for r in summary.full_residual_norms], dtype=np.float64)
            final_full = float(summary.final_full_residual_norm)
        calls = summary.calls
        result = SolveResult(
            iterations=summary.iterations,
            residual_norms=norms,
            converged=summary.converged,
            nlevels=summary.nlevels,
            level_sizes=tuple(self._engine.level_sizes),
            wall_time=summary.wall_time,
            step_calls=calls.step,
            step_calls_all_ranks=summary.step_calls_all_ranks,
            calls=calls.as_dict(),
            objective=summary.objective if (self._options.adjoint or self._options.objective_only) else None,
            adjoint_residual_norms=np.array(
                [math.nan if r == -1.0 else r for r in summary.adjoint_residual_norms], dtype=np.float64
            ),
            full_residual_norms=full,
            final_full_residual_norm=final_full,
            virtual_wall_time=summary.virtual_wall_time if self._options.virtual_time else None,
            ntime=self._engine.ntime,
            nrefine=summary.nrefine,
            cycle_iterations=np.array(summary.cycle_iterations, dtype=np.int64),
            cycle_residual_norms=np.array(
                [math.nan if r == -1.0 else r for r in summary.cycle_residual_norms], dtype=np.float64
            ),
        )
        self._last = result
        if self._options.print_level >= 2 and self._comm.Get_rank() == 0:
            self._print_summary(result)
        return result

    def reset(self) -> None:
        """Forget the current iterate: the next :meth:`solve` starts from ``init`` again.

        Use it to reuse a solver (its memory, its setup) for a new problem of
        the same size, e.g. the next mini-batch of a training run. The
        tolerance references (``rel_tol``, ``rel_tol_adjoint``) and the adjoint
        iterate are forgotten as well. Local to this rank, no communication;
        call it on every rank.
        """
        self._engine.reset()

    def refresh_initial_condition(self) -> None:
        """Evaluate ``init(tstart)`` again before the next :meth:`solve`, keeping the rest of the iterate.

        For warm restarts after the design changed the initial condition (a
        ResNet's opening layer): the states at later times keep serving as the
        initial guess. Call it on every rank (only the rank owning index 0 works).
        """
        self._engine.refresh_initial_condition()

    def iterate(self) -> dict[str, Any]:
        """Return what a warm restart continues from, on this rank (no communication).

        The states at the fine level's stored time points (and, with
        ``adjoint=True``, the adjoint iterate there) and the references of the
        relative tolerances. Save it (e.g. in a checkpoint) and hand it to
        :meth:`set_iterate` of a solver built the same way -- on any number of
        ranks -- to continue exactly where this one stands.

        Returns
        -------
        dict
            ``indices`` (int array, global fine indices), ``states`` (shape
            ``(len(indices), *app.shape)``), ``adjoint`` (same shape, or
            None), ``rnorm0`` and ``rnorm0_adjoint`` (floats, -1 when not set).

        Examples
        --------
        >>> import numpy as np, pyxbraid as xb
        >>> a = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, max_levels=2, max_iter=2, abs_tol=0.0)
        >>> _ = a.solve()
        >>> b = xb.Solver(xb.apps.LinearODE(), 0.0, 1.0, 8, max_levels=2, max_iter=2, abs_tol=0.0)
        >>> b.set_iterate(a.iterate())
        >>> ra, rb = a.solve(), b.solve()          # both continue from the same iterate
        >>> bool(np.array_equal(ra.residual_norms, rb.residual_norms))
        True
        """
        self._refuse_shells("iterate()")
        indices, states, adjoint, rnorm0, rnorm0_adjoint = self._engine.iterate()
        shape = (-1, *self._shape)
        return {
            "indices": np.asarray(indices, dtype=np.int64),
            "states": states.reshape(shape),
            "adjoint": None if adjoint is None else adjoint.reshape(shape),
            "rnorm0": float(rnorm0),
            "rnorm0_adjoint": float(rnorm0_adjoint),
        }

    def set_iterate(self, iterate: dict[str, Any]) -> None:
        """Continue from ``iterate`` (:meth:`iterate`'s dict, this rank's or all ranks' concatenated).

        Entries of other ranks' time points are ignored; every stored time
        point of this rank must be there (a ValueError otherwise, e.g. for an
        iterate of a solver with another ``cfactor``). No communication: call
        it on every rank before the next :meth:`solve`.
        """
        self._refuse_shells("set_iterate()")
        try:
            indices = np.asarray(iterate["indices"])
            states = np.ascontiguousarray(iterate["states"], dtype=self._engine.dtype)
            adjoint = iterate.get("adjoint")
            if adjoint is not None:
                adjoint = np.ascontiguousarray(adjoint, dtype=self._engine.dtype)
            rnorm0, rnorm0_adjoint = float(iterate["rnorm0"]), float(iterate["rnorm0_adjoint"])
        except (KeyError, TypeError) as exc:
            raise TypeError(
                f"iterate must be a dict as Solver.iterate() returns, got {type(iterate).__name__} ({exc})"
            ) from None
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise ValueError(f"iterate['indices'] must be a 1-D integer array, got {indices.dtype} {indices.shape}")
        expected = (indices.size, *self._shape)
        for name, array in (("states", states), ("adjoint", adjoint)):
            if array is not None and array.shape != expected:
                raise ValueError(f"iterate[{name!r}] must have shape {expected}, got {array.shape}")
        flat = (indices.size, int(np.prod(self._shape)))
        self._engine.set_iterate(
            indices.tolist(),
            states.reshape(flat),
            None if adjoint is None else adjoint.reshape(flat),
            rnorm0,
            rnorm0_adjoint,
        )

    def state_at(self, index: int) -> np.ndarray:
        """Return the fine-grid state at time index ``index``, on every rank (collective).

        Parameters
        ----------
        index : int
            Fine time index in ``0 .. ntime`` (negative values count from the end).

        Returns
        -------
        numpy.ndarray
            A copy of shape ``app.shape``; for an app with ``shell_shape`` a
            :class:`ShellState` whose ``.shell`` is a copy of the point's shell.
        """
        i = self._fine_index(index)
        if self._shell_shape is None:
            return self._engine.state_at(i).reshape(self._shape)
        state, shell = self._engine.state_and_shell_at(i)
        out = state.reshape(self._shape).view(ShellState)
        out._shell = shell.reshape(self._shell_shape)
        return out

    def shell_at(self, index: int) -> np.ndarray:
        """Return the shell at fine time index ``index``, on every rank (apps with ``shell_shape``; collective).

        The same as ``state_at(index).shell``: a float64 copy of shape ``app.shell_shape``.
        """
        if self._shell_shape is None:
            raise ValueError(f"{type(self._app).__name__} has no shells (App(shell_shape=...) not given)")
        return self._engine.state_and_shell_at(self._fine_index(index))[1].reshape(self._shell_shape)

    def _fine_index(self, index: int) -> int:
        n = self._engine.ntime
        i = as_int("index", index)
        if i < 0:
            i += n + 1
        if not 0 <= i <= n:
            raise IndexError(f"index must be in [-{n + 1}, {n}], got {index}")
        return i

    def local_shells(self) -> np.ndarray:
        """Return this rank's fine-grid shells, indices ``ilower .. iupper`` (apps with ``shell_shape``; collective).

        Returns
        -------
        numpy.ndarray
            A float64 copy of shape ``(iupper - ilower + 1, *app.shell_shape)``,
            row ``k`` the shell of the state ``local_states()[k]``.
        """
        if self._shell_shape is None:
            raise ValueError(f"{type(self._app).__name__} has no shells (App(shell_shape=...) not given)")
        return self._engine.local_shells().reshape((-1, *self._shell_shape))

    def _refuse_shells(self, what: str) -> None:
        if self._shell_shape is not None:
            raise NotImplementedError(
                f"{what} is not available for apps with shells ({type(self._app).__name__}.shell_shape="
                f"{self._shell_shape}): an iterate would have to carry the shells of the unstored points"
            )
        if self._options.delta_rank > 0:
            raise NotImplementedError(
                f"{what} is not available with delta correction (delta_rank={self._options.delta_rank}): "
                "an iterate would have to carry the basis vectors of every point"
            )

    def gradient(self, reduce: bool = True) -> Any:
        """Return the gradient of the objective with respect to the design.

        During an adjoint solve each rank accumulates the contributions of its
        own time steps in the app (XBraid's semantics); this reads the app's
        accumulator (:meth:`App.gradient`).

        Parameters
        ----------
        reduce : bool, default True
            True: the full gradient, summed over all ranks of ``comm`` (collective).
            False: this rank's own contribution only (no communication), e.g.
            when each rank owns the design of its own time steps.

        Returns
        -------
        float or numpy.ndarray
            A float when the app's gradient is a scalar, else an array (a copy).
        """
        if not (self._options.adjoint):
            raise RuntimeError("gradient() needs a Solver built with adjoint=True")
        local = np.array(self._app.gradient(), dtype=np.float64, copy=True)
        if reduce and self._comm.Get_size() > 1:
            self._comm.Allreduce(MPI.IN_PLACE, local, op=MPI.SUM)
        return float(local) if local.ndim == 0 else local

    @property
    def adjoint_bytes(self) -> int:
        """Bytes this rank holds for the adjoint (bar vectors, tape, adjoint iterate)."""
        return self._engine.adjoint_bytes

    def local_states(self) -> np.ndarray:
        """Return this rank's fine-grid states, indices ``ilower .. iupper`` (collective).

        Returns
        -------
        numpy.ndarray
            A copy of shape ``(iupper - ilower + 1, *app.shape)``; row ``k`` is
            the state at time ``local_times[k]``.
        """
        return self._engine.local_states().reshape((-1, *self._shape))

    def local_error_estimates(self) -> np.ndarray:
        """Return this rank's Richardson error estimates, indices ``ilower .. iupper`` (no communication).

        The estimates of the last level-0 restriction (``error_estimation=True``): entry ``k``
        belongs to the point at ``local_times[k]``; -1.0 where none is available yet.

        Returns
        -------
        numpy.ndarray
            A float64 copy of length ``iupper - ilower + 1``.

        Raises
        ------
        ValueError
            When the solver was built without ``error_estimation=True``.
        """
        if not self._options.error_estimation:
            raise ValueError("local_error_estimates() needs error_estimation=True, got error_estimation=False")
        return self._engine.local_error_estimates()

    # -- properties ----------------------------------------------------------------
    @property
    def comm(self) -> Any:
        """The communicator the solver was built on."""
        return self._comm

    @property
    def ntime(self) -> int:
        """Number of fine time steps."""
        return self._engine.ntime

    @property
    def ilower(self) -> int:
        """First fine index owned by this rank."""
        return self._engine.ilower

    @property
    def iupper(self) -> int:
        """Last fine index owned by this rank."""
        return self._engine.iupper

    @property
    def times(self) -> np.ndarray:
        """All fine times ``t_0 .. t_ntime``."""
        return self._engine.times

    @property
    def local_times(self) -> np.ndarray:
        """Fine times owned by this rank."""
        return self.times[self.ilower : self.iupper + 1]

    @property
    def nlevels(self) -> int:
        """Levels of the time-grid hierarchy."""
        return self._engine.nlevels

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Global number of time points on each level."""
        return tuple(self._engine.level_sizes)

    @property
    def storage_bytes(self) -> int:
        """Bytes of state storage this rank holds (all levels)."""
        return self._engine.storage_bytes

    # -- printing (rank 0 only) --------------------------------------------------
    def _print_iteration(self, it: int, rnorm: float, full: float, wall: float) -> None:
        # Runs inside the engine: an exception here stops every rank cleanly.
        if it == 0 and self._solves == 0:
            print(f"  Braid: Begin simulation, {self._engine.ntime} time steps", flush=True)
        if rnorm == -1.0:
            print(f"  Braid: || r_{it} || not available, wall time = {wall:1.2e}", flush=True)
        else:
            print(f"  Braid: || r_{it} || = {rnorm:1.6e}, wall time = {wall:1.2e}", flush=True)
        if full != -1.0:
            print(f"  Braid: Full || r_{it} || = {full:1.6e}", flush=True)
        if self._engine.ntime != self._shown_ntime:  # this cycle refined the grid (refine=True)
            self._shown_ntime = self._engine.ntime
            print(f"  Braid: Temporal refinement occurred, {self._shown_ntime} time steps", flush=True)

    def _print_summary(self, r: SolveResult) -> None:
        print(
            f"  Braid: {'converged' if r.converged else 'stopped'} after {r.iterations} iterations, "
            f"{r.nlevels} levels {list(r.level_sizes)}, {r.step_calls_all_ranks} steps, "
            f"wall time {r.wall_time:.3e} s",
            flush=True,
        )


# The options' part of the docstring comes from the vocabulary (one declaration).
Solver.__doc__ = (Solver.__doc__ or "").replace("    {options}", describe_options())
