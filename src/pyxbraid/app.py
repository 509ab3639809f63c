"""The base class of user-defined problems (XBraid's user callbacks)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._core import Status

__all__ = ["App", "NativeApp", "ShellState"]


def _as_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (bool, np.bool_)):
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}")
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}") from None
    if not dims:
        raise ValueError("shape must have at least one dimension, got ()")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ValueError(f"shape entries must be integers >= 1, got {shape!r}")
    if math.prod(int(d) for d in dims) > 2**40:
        raise ValueError(f"shape {shape!r} is too large for one state ({math.prod(int(d) for d in dims)} values)")
    return tuple(int(d) for d in dims)


def _as_state_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be numpy.float64 or numpy.float32, got {dtype!r}") from None
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be numpy.float64 or numpy.float32, got {dtype!r}")
    return dt


def _as_shell_shape(shell_shape: Any) -> tuple[int, ...]:
    """Check ``shell_shape`` as a shape, the errors naming ``shell_shape``."""
    try:
        return _as_shape(shell_shape)
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("shape", "shell_shape", 1)) from None


class ShellState(np.ndarray):
    """A state array that carries its shell (apps with ``shell_shape``).

    The engine hands callbacks of an :class:`App` with ``shell_shape`` its
    states as this numpy subclass: ``u`` is the state as usual and ``u.shell``
    a float64 array of ``app.shell_shape`` over the point's shell (XBraid's
    shell vectors: per-point metadata such as the time values of a multistep
    method, copied with the state, never summed or normed). ``u.shell`` is
    writable where ``u`` is (``init``, ``step``'s ``u``) and read-only where
    ``u`` is (``ustop``, ``access``, ...). ``u.shell = values`` copies the values
    in (same shape, real numbers). Arrays computed from a state (``u * 2``,
    slices) carry no shell.
    """

    _shell: np.ndarray | None = None

    @property
    def shell(self) -> np.ndarray:
        """The point's shell (float64, shape ``app.shell_shape``)."""
        if self._shell is None:
            raise AttributeError("this array carries no shell (only the states a callback receives do)")
        return self._shell

    @shell.setter
    def shell(self, value: Any) -> None:
        target = self.shell
        if not target.flags.writeable:
            raise ValueError("this state's shell is read-only (ustop and the states of access, norm, ... are inputs)")
        values = np.asarray(value)
        if values.dtype.kind not in "fiub":
            raise TypeError(f"shell values must be real numbers (float64), got dtype {values.dtype}")
        if values.shape != target.shape:
            raise ValueError(f"shell must have the app's shell_shape {target.shape}, got shape {values.shape}")
        target[...] = values


class App:
    """A time-dependent problem solved by :class:`pyxbraid.Solver`.

    Subclass it, call ``super().__init__(shape=...)`` with the shape of one
    state, and implement :meth:`init` and :meth:`step`. The engine owns
    contiguous float64 storage for every state; callbacks receive numpy *views*
    of it (no copies) and must update their array argument **in place**
    (``u[:] = ...``, ``u *= ...``) and return None. Do not keep references to
    the arrays or to ``status`` after a callback returns.

    Optional callbacks: :meth:`residual` (user residual mode, or the full
    residual norm with ``full_residual_norm=True``), :meth:`access` (solution
    output), :meth:`spatial_norm` (replaces the Euclidean 2-norm), :meth:`sync`
    (told where the solver is).
    They are used only when a subclass defines them.

    Mapping to XBraid: ``init`` = braid_PtFcnInit, ``step`` = braid_PtFcnStep,
    ``residual`` = braid_PtFcnResidual, ``access`` = braid_PtFcnAccess,
    ``spatial_norm`` = braid_PtFcnSpatialNorm. Clone, sum, free and buffer
    packing are done natively by pyxbraid and need no callback.

    Parameters
    ----------
    shape : int or tuple of int
        Shape of one state vector, e.g. ``(1,)`` or ``(batch, width)``.
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
        Element type of the states: the engine stores and sends states of this
        type and hands callbacks arrays of it. Norms and reductions accumulate
        in float64 either way. float32 halves the memory of stored states
        (e.g. for a float32 PyTorch model); XBraid's numbers are float64.
    shell_shape : int or tuple of int, optional
        Shape of a float64 *shell* kept with every time point (XBraid's
        braid_SetShell): metadata such as the times a variable-step multistep
        method needs, copied with its state (also in MPI messages, restriction,
        interpolation and the solution), never summed or normed, and kept at
        every point even where ``storage`` drops the state. Callbacks then
        receive states as :class:`ShellState` arrays carrying ``u.shell``;
        ``init`` fills ``u`` and ``u.shell``, :meth:`init_shell` fills the
        points that keep only a shell (the fine F-points with ``storage=-1``),
        and ``step`` reads the target point's shell as ``ustop.shell``. See
        :doc:`/guide/shells`. Not combinable with ``adjoint=True`` (as in
        XBraid) or :meth:`step_batch`.

    Examples
    --------
    >>> import pyxbraid as xb
    >>> class Decay(xb.App):
    ...     '''u' = lam*u with backward Euler (XBraid's ex-01).'''
    ...     def __init__(self, lam=-1.0):
    ...         super().__init__(shape=(1,))
    ...         self.lam = lam
    ...     def init(self, t, u):
    ...         u[:] = 1.0 if t == 0.0 else 0.456
    ...     def step(self, u, ustop, fstop, status):
    ...         if fstop is not None:
    ...             u += fstop
    ...         u /= 1.0 - self.lam * (status.tstop - status.tstart)
    >>> result = xb.Solver(Decay(), tstart=0.0, tstop=5.0, ntime=10,
    ...                    max_levels=2, abs_tol=1e-6).solve()
    >>> result.iterations
    4
    """

    def __init__(
        self, shape: int | Sequence[int], dtype: Any = np.float64, shell_shape: int | Sequence[int] | None = None
    ) -> None:
        self.shape = _as_shape(shape)
        self.dtype = _as_state_dtype(dtype)
        self.shell_shape: tuple[int, ...] | None = None if shell_shape is None else _as_shell_shape(shell_shape)

    def init(self, t: float, u: np.ndarray) -> None:
        """Fill ``u`` with the initial condition (t = tstart) or an initial guess.

        Parameters
        ----------
        t : float
            Time of the state.
        u : numpy.ndarray
            Writable float64 view of shape ``self.shape`` (out).
        """
        raise NotImplementedError

    def init_shell(self, t: float, shell: np.ndarray) -> None:
        """Fill the shell of a point that keeps only a shell (apps with ``shell_shape``; XBraid's SInit).

        Called instead of :meth:`init` at the fine points whose state is not
        stored (every point but the C-points with the default ``storage=-1``),
        in increasing index order together with :meth:`init`.

        Parameters
        ----------
        t : float
            Time of the point.
        shell : numpy.ndarray
            Writable float64 view of shape ``self.shell_shape`` (out).
        """
        raise NotImplementedError

    def step(self, u: np.ndarray, ustop: np.ndarray, fstop: np.ndarray | None, status: Status) -> None:
        """Advance ``u`` in place from ``status.tstart`` to ``status.tstop``.

        Parameters
        ----------
        u : numpy.ndarray
            State at ``status.tstart`` on entry, at ``status.tstop`` on exit (in/out).
        ustop : numpy.ndarray
            Read-only guess of the result (useful as an initial iterate for
            implicit solvers). May be the same array as ``u``. With
            ``shell_shape``, ``ustop.shell`` is the target point's shell, also
            where the point keeps only a shell (its values are then the guess
            used without shells: ``u``'s on the fine level).
        fstop : numpy.ndarray or None
            Read-only FAS right-hand side to add to the step equation; passed
            only in user residual mode (when :meth:`residual` is defined),
            otherwise always None (the engine adds it itself).
        status : pyxbraid.Status
            tstart, tstop, dt, tindex, level, nlevels, iter, done, phase.
        """
        raise NotImplementedError

    def step_batch(
        self,
        u: np.ndarray,
        ustop: np.ndarray,
        fstop: np.ndarray | None,
        tstart: np.ndarray,
        tstop: np.ndarray,
        status: Status,
    ) -> None:
        """Advance k independent states in place: ``u[i]`` from ``tstart[i]`` to ``tstop[i]`` (optional).

        Within one relaxation sweep the steps of different intervals do not
        depend on each other. When an App defines ``step_batch``, the engine
        hands it each group of such steps in one call (the i-th F-point of
        every interval of the level on this rank, then their C-points, in
        relaxation, restriction, interpolation and the final sweep), and calls
        :meth:`step` only where steps are sequential (the coarsest level,
        sequential marching, the interval that waits for the left neighbour).
        Row ``i`` must be exactly what ``step`` does to ``u[i]``: the results are
        then identical to stepping one by one. How many rows one call gets is
        bounded by the option ``batch_size``.

        Parameters
        ----------
        u : numpy.ndarray
            Writable array of shape ``(k, *self.shape)`` (in/out).
        ustop : numpy.ndarray
            Read-only ``(k, *self.shape)``: row ``i`` is the ``ustop`` of row
            ``i``'s step. May be the same array as ``u``.
        fstop : numpy.ndarray or None
            Read-only ``(k, *self.shape)`` FAS right-hand sides in user residual
            mode, otherwise None (as for :meth:`step`).
        tstart, tstop : numpy.ndarray
            Read-only float64 arrays of shape ``(k,)``.
        status : pyxbraid.Status
            What the rows share: level, nlevels, iter, done, phase. Its
            ``tstart`` and ``tstop`` are NaN and ``tindex`` is -1 (the times
            are the arrays).

        Examples
        --------
        Backward Euler for ``u' = lam u``, all rows at once:

        >>> import numpy as np, pyxbraid as xb
        >>> from mpi4py import MPI
        >>> class Decay(xb.App):
        ...     def __init__(self):
        ...         super().__init__(shape=(1,))
        ...     def init(self, t, u):
        ...         u[:] = 1.0 if t == 0.0 else 0.5
        ...     def step(self, u, ustop, fstop, status):
        ...         u /= 1.0 + status.dt
        ...     def step_batch(self, u, ustop, fstop, tstart, tstop, status):
        ...         u /= (1.0 + (tstop - tstart))[:, None]
        >>> result = xb.Solver(Decay(), 0.0, 1.0, 64, comm=MPI.COMM_WORLD, cfactor=4).solve()
        >>> result.calls["step_batch"] > 0
        True
        """
        raise NotImplementedError

    def residual(self, ustop: np.ndarray, r: np.ndarray, status: Status) -> None:
        """Compute XBraid's user residual ``r <- A(ustop, r)`` (optional).

        On entry ``r`` holds the state at ``status.tstart``; on exit it must
        hold the residual of the step equation whose solution at
        ``status.tstop`` is ``ustop``, e.g. ``(1 - lam dt) ustop - r`` for
        backward Euler. Defining it switches the engine to XBraid's residual
        mode (coarse steps receive ``fstop``) -- unless the solver has
        ``full_residual_norm=True``, where it serves the full residual norm
        only (XBraid's braid_SetFullRNormRes).
        """
        raise NotImplementedError

    def access(self, u: np.ndarray, status: Status) -> None:
        """Look at the state ``u`` at time ``status.t`` (optional; read-only).

        With ``delta_rank > 0``, ``status.basis_vectors`` is the point's basis
        (read-only views) and ``status.lyapunov_exponents`` its local Lyapunov
        exponents (zeros where none are provided).
        """
        raise NotImplementedError

    def init_basis(self, t: float, index: int, v: np.ndarray) -> None:
        """Fill ``v`` with basis vector number ``index`` at time ``t`` (delta correction; XBraid's InitBasis).

        Needed for ``delta_rank > 0``: called with index 0..delta_rank-1 where
        :meth:`init` is called (level-0 C-points); the vectors must be
        linearly independent (the solver orthonormalizes them with
        :meth:`inner_product`).

        Parameters
        ----------
        t : float
            Time of the point.
        index : int
            Which basis vector (0-based).
        v : numpy.ndarray
            Writable float64 view of shape ``self.shape``, zero on entry (out).
        """
        raise NotImplementedError

    def inner_product(self, u: np.ndarray, v: np.ndarray) -> float:
        """Return an inner product of ``u`` and ``v`` (delta correction; default: Euclidean dot product).

        Parameters
        ----------
        u, v : numpy.ndarray
            Read-only views of shape ``self.shape``.

        Returns
        -------
        float
            The inner product; it also defines the norm of the Gram-Schmidt
            orthonormalization and so the local Lyapunov exponents.
        """
        raise NotImplementedError

    def spatial_norm(self, u: np.ndarray) -> float:
        """Return a norm of ``u`` (optional; default: Euclidean 2-norm of all entries)."""
        raise NotImplementedError

    def sync(self, status: Status) -> None:
        """Be told where the solver is, on every rank (optional; XBraid's braid_PtFcnSync).

        Called, as XBraid calls it, once after the initial guess of a solve
        that starts from ``init`` (``status.caller == "after_init"``) and at the
        top of every MGRIT iteration, before its convergence test
        (``"top_cycle"``). Every rank calls it at the same point, so it may
        communicate (e.g. a global maximum with mpi4py). ``status`` has
        ``caller`` (the same as ``phase``), ``iter``, ``level`` (0), ``nlevels``,
        ``ntime``, ``residual_norm`` and ``done`` (False: the test has not run).

        Examples
        --------
        Count the cycles (XBraid's ex-01-expanded with ``-sync``):

        >>> import pyxbraid as xb
        >>> class Decay(xb.App):
        ...     def __init__(self):
        ...         super().__init__(shape=(1,))
        ...         self.cycles = 0
        ...     def init(self, t, u):
        ...         u[:] = 1.0 if t == 0.0 else 0.456
        ...     def step(self, u, ustop, fstop, status):
        ...         u /= 1.0 + status.dt
        ...     def sync(self, status):
        ...         if status.caller == "top_cycle":
        ...             self.cycles += 1
        >>> app = Decay()
        >>> result = xb.Solver(app, 0.0, 5.0, 10, max_levels=2, abs_tol=1e-6).solve()
        >>> result.iterations, app.cycles
        (4, 4)
        """
        raise NotImplementedError

    # -- spatial coarsening (XBraid's braid_SetSpatialCoarsen / SetSpatialRefine) -----
    def shape_at(self, level: int) -> tuple[int, ...]:
        """Return the shape of a state on time level ``level`` (optional; default ``self.shape``).

        Asked once per level when a :class:`~pyxbraid.Solver` is built. Level 0
        must have ``self.shape``; coarser levels may have fewer elements (never
        more). A shape that differs from ``self.shape`` needs :meth:`coarsen`
        and :meth:`refine` to move states between the levels.
        """
        raise NotImplementedError

    def coarsen(self, fine: np.ndarray, coarse: np.ndarray, status: Status) -> None:
        """Fill ``coarse`` from ``fine``: spatial coarsening (optional; XBraid's braid_PtFcnSCoarsen).

        Defined together with :meth:`refine`. The engine calls it wherever
        XBraid does: the C-point values and FAS residuals restricted to the
        next coarser level (and the initial value at index 0), and the initial
        guess of the coarse levels when the first down-cycle is skipped.

        Parameters
        ----------
        fine : numpy.ndarray
            Read-only state of shape ``shape_at(status.level)``.
        coarse : numpy.ndarray
            Writable array of shape ``shape_at(status.level + 1)`` (out): fill
            every entry.
        status : pyxbraid.Status
            ``level`` is the FINE level (as in XBraid); ``t`` (= ``tstart`` =
            ``tstop``) and ``tindex`` are the time and index of the point on it.
        """
        raise NotImplementedError

    def refine(self, coarse: np.ndarray, fine: np.ndarray, status: Status) -> None:
        """Fill ``fine`` from ``coarse``: spatial refinement (optional; XBraid's braid_PtFcnSRefine).

        Called on the coarse-grid corrections before they are added to the
        next finer level (interpolation).

        Parameters
        ----------
        coarse : numpy.ndarray
            Read-only array of shape ``shape_at(status.level + 1)``.
        fine : numpy.ndarray
            Writable array of shape ``shape_at(status.level)`` (out): fill every entry.
        status : pyxbraid.Status
            ``level`` is the FINE level; ``t`` and ``tindex`` as in :meth:`coarsen`.

        Examples
        --------
        Halve a 1-D grid of 2^k + 1 points on every coarser level (XBraid's ex-02 with ``-sc``):

        >>> import numpy as np, pyxbraid as xb
        >>> class Smooth(xb.App):
        ...     def __init__(self, n=17):
        ...         super().__init__(shape=(n,))
        ...     def shape_at(self, level):
        ...         return (max((self.shape[0] - 1) >> level, 2) + 1,)
        ...     def init(self, t, u):
        ...         u[:] = 1.0
        ...     def step(self, u, ustop, fstop, status):
        ...         u *= np.exp(-status.dt)
        ...     def coarsen(self, fine, coarse, status):
        ...         coarse[:] = fine[:: (fine.size - 1) // (coarse.size - 1)]
        ...     def refine(self, coarse, fine, status):
        ...         x = np.linspace(0.0, 1.0, fine.size)
        ...         fine[:] = np.interp(x, np.linspace(0.0, 1.0, coarse.size), coarse)
        >>> result = xb.Solver(Smooth(), 0.0, 1.0, 16, max_levels=3, abs_tol=1e-10).solve()
        >>> result.calls["coarsen"] > 0 and result.calls["refine"] > 0
        True
        """
        raise NotImplementedError

    def coarsen_adjoint(self, coarse_bar: np.ndarray, fine_bar: np.ndarray, status: Status) -> None:
        """Fill ``fine_bar`` with ``C^T coarse_bar``, the transpose of :meth:`coarsen` (adjoint only).

        Needed with ``adjoint=True`` when the app coarsens in space; :meth:`coarsen`
        and :meth:`refine` must then be linear maps (as restriction and
        interpolation are). Not in XBraid, which refuses the adjoint with spatial
        coarsening.

        Parameters
        ----------
        coarse_bar : numpy.ndarray
            Read-only, shape ``shape_at(status.level + 1)``.
        fine_bar : numpy.ndarray
            Writable, shape ``shape_at(status.level)``, zero on entry (out).
        status : pyxbraid.Status
            The status the primal :meth:`coarsen` call had.
        """
        raise NotImplementedError

    def refine_adjoint(self, fine_bar: np.ndarray, coarse_bar: np.ndarray, status: Status) -> None:
        """Fill ``coarse_bar`` with ``R^T fine_bar``, the transpose of :meth:`refine` (adjoint only).

        Parameters
        ----------
        fine_bar : numpy.ndarray
            Read-only, shape ``shape_at(status.level)``.
        coarse_bar : numpy.ndarray
            Writable, shape ``shape_at(status.level + 1)``, zero on entry (out).
        status : pyxbraid.Status
            The status the primal :meth:`refine` call had.
        """
        raise NotImplementedError

    # -- adjoint (used with Solver(adjoint=True) / objective_only=True) --------------
    def objective(self, u: np.ndarray, status: Status) -> float:
        """Adjoint: the objective term f(u_i) at fine time ``status.t`` (XBraid's objectiveT).

        The objective is ``J = F(I)``, ``I = sum_i f(u_i)`` over the fine points
        in ``[tstart_objective, tstop_objective]`` (``F`` = identity unless
        :meth:`postprocess_objective` is defined). ``status.tindex`` and
        ``status.ntime`` are available.
        """
        raise NotImplementedError

    def objective_adjoint(self, u: np.ndarray, u_bar: np.ndarray, f_bar: float, status: Status) -> None:
        """Adjoint: set ``u_bar = (df/du)^T f_bar`` and add ``(df/ddesign)^T f_bar`` to the gradient.

        ``u_bar`` is zero on entry (XBraid's objectiveT_diff).
        """
        raise NotImplementedError

    def step_adjoint(
        self, u: np.ndarray, ustop: np.ndarray, u_bar: np.ndarray, ustop_bar: np.ndarray, status: Status
    ) -> None:
        """Adjoint of one :meth:`step` (XBraid's step_diff).

        ``u`` and ``ustop`` are the step's inputs (read-only). Overwrite ``u_bar``
        with ``(dPhi/du)^T u_bar``, add ``(dPhi/ddesign)^T u_bar`` (the incoming
        ``u_bar``) to the gradient, and, when the step uses ``ustop``, write
        ``(dPhi/dustop)^T u_bar`` into ``ustop_bar`` (zero on entry). ``status``
        is the status of the primal step.
        """
        raise NotImplementedError

    def step_adjoint_batch(
        self,
        u: np.ndarray,
        ustop: np.ndarray,
        u_bar: np.ndarray,
        ustop_bar: np.ndarray,
        tstart: np.ndarray,
        tstop: np.ndarray,
        status: Status,
    ) -> None:
        """Adjoints of the k steps of one :meth:`step_batch` call, row by row as :meth:`step_adjoint` (optional).

        The reverse sweep replays each grouped primal call as one call of this
        method (with ``adjoint=True`` and :meth:`step_batch` defined); without
        it, :meth:`step_adjoint` is called per row. Row ``i`` of ``u``,
        ``ustop`` (read-only, ``(k, *self.shape)``; ``ustop`` may be the same
        array as ``u``), ``u_bar`` (in/out) and ``ustop_bar`` (out, zero on
        entry) is what :meth:`step_adjoint` would get for that step; add every
        row's design term to the gradient. ``tstart``/``tstop`` are the rows'
        times, ``status`` what they share (its times are NaN, as in
        :meth:`step_batch`). The gradient then differs from one-by-one
        replay by round-off only (its terms are summed in another order).
        """
        raise NotImplementedError

    def reset_gradient(self) -> None:
        """Adjoint: set the gradient accumulator to zero (XBraid's reset_gradient)."""
        raise NotImplementedError

    def init_adjoint(self, t: float, u_bar: np.ndarray, status: Status) -> None:
        """Apply the adjoint of ``init(tstart)`` (optional) when the initial condition depends on the design.

        After each reverse sweep the rank owning time index 0 receives
        ``u_bar = dJ/du_0`` (read-only) and adds ``(d init / d design)^T u_bar``
        to its gradient. Not part of XBraid (whose initial condition cannot
        depend on the design); a ResNet's opening layer needs it.
        """
        raise NotImplementedError

    def postprocess_objective(self, integral: float) -> float:
        """Return ``J = F(I)`` from ``I = sum_i f(u_i)`` (XBraid's postprocess_obj)."""
        raise NotImplementedError

    def postprocess_objective_adjoint(self, integral: float) -> float:
        """Return ``dF/dI``; may *assign* the design part of ``dF/ddesign`` to the gradient.

        (XBraid's postprocess_obj_diff.) It runs on every rank, but on ranks other
        than 0 the gradient is reset right after it, so that term counts once.
        """
        raise NotImplementedError

    def gradient(self) -> Any:
        """Return this rank's gradient accumulator (default: the attribute ``self.grad``).

        :meth:`Solver.gradient` reads it and, by default, sums it over ranks.
        """
        if hasattr(self, "grad"):
            return self.grad
        raise NotImplementedError(
            f"{type(self).__name__} keeps no 'grad' attribute; define gradient() to return the gradient"
        )

    # -- used by the Solver ---------------------------------------------------
    def _overrides(self, name: str) -> bool:
        return getattr(type(self), name, None) is not getattr(App, name)


class NativeApp:
    """Base of the built-in apps implemented in C++ (see :mod:`pyxbraid.apps`).

    They run with no Python in the time-stepping loop.
    """

    shape: tuple[int, ...]

    def _native(self) -> Any:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def gradient(self) -> Any:
        """Return this rank's gradient of the objective (apps with an adjoint override it)."""
        raise TypeError(f"{type(self).__name__} has no adjoint, so no gradient")
