"""Training checkpoints: what :meth:`Trainer.fit` needs to continue exactly where it stopped.

A checkpoint is a ``numpy.savez`` archive (no pickle), written by rank 0 with
:func:`~pyxbraid.nn._files.atomic_write`:

* ``format``: ``"pyxbraid.nn.Checkpoint/3"``;
* ``meta``: JSON -- the network's configuration, the fit settings a resumed
  run must share (mode and MGRIT settings, seed, batch size, shuffling, a
  fingerprint of the data, the optimizer), the progress (completed epochs,
  completed steps of the next epoch, the shuffling generator's state at the
  start of that epoch, the epoch's running sums, the wall time, the last
  MGRIT residuals), ``gradient_evaluations`` (the fit's gradient evaluations
  so far, those before any earlier resume included), the optimizer's scalar
  state, the number of ranks that wrote it and, for a network with a numpy
  :class:`~pyxbraid.nn.Layer`, ``layer``: its description (type, config,
  state and parameter shapes);
* ``param.<name>``: the parameters in the network's global layout (as
  :meth:`ResNet.parameters`), gathered from all ranks;
* ``optimizer.<key>.<name>`` and ``optimizer.<key>.<i>.<name>``: the
  optimizer's parameter-space vectors (Adam's moments, the momentum, L-BFGS's
  pairs and cached gradient), gathered to the global layout the same way, so
  a checkpoint written on P ranks resumes on any number of ranks;
* ``history.<field>``: the :class:`History` so far;
* ``mgrit.indices``, ``mgrit.states``, ``mgrit.adjoint``: with a full batch
  in an MGRIT mode, the engine's iterate (the states and adjoint iterate at
  the stored time points, gathered from all ranks), which the next step's
  warm restart continues from; absent (``meta["mgrit"]`` null) otherwise.

Reading checks the format, the JSON (exact keys, types, ranges) and every
array's name, shape and dtype against what the metadata declares before any
array data is read (:class:`~pyxbraid.nn._files.NpzReader`). The earlier
formats (``/1`` without MGRIT's iterate, ``/2`` without the gradient
evaluations) are refused, naming their format: a resumed run could not
reproduce the uninterrupted one's report from them.

With the iterate saved, a resumed run continues every mode exactly where
it stopped (see :meth:`Trainer.fit`).

A multilevel run (``strategy="nested"`` or ``"mgopt"``) writes format
``"pyxbraid.nn.MultilevelCheckpoint/1"``: its ``meta`` has

* ``strategy``: the strategy's settings (:meth:`Strategy.settings`), which a
  resumed run must share key by key;
* ``phase``: where the strategy's schedule stands -- nested iteration:
  ``cascade`` (whether this fit runs the cascade), ``level`` (the level
  being trained, 0 the network itself), ``offset`` (the wall time of the
  coarser levels) and ``coarse_epochs`` (the coarse levels' epochs,
  coarsest first); MG/Opt: ``cycles`` (V-cycles done);
* ``gradient_evaluations``: each level's gradient evaluations so far;
* ``levels``: one metadata object per level, finest first, as a
  single-level checkpoint's ``meta``, whose arrays are stored with the
  prefix ``level.<i>.`` (``level.1.param.layers.weight``, ...);
* ``ranks`` and ``note``.

Every level's part is checked as a single-level checkpoint is, all of
them before any array data is read.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import _Agreed
from ._files import NpzReader, atomic_write
from .network import _config_from_json, _full_shapes

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import History, Trainer

FORMAT = "pyxbraid.nn.Checkpoint/3"
# Written by earlier versions; they lack what a resumed run reproduces (MGRIT's iterate, the gradient evaluations).
_EARLIER_FORMATS = ("pyxbraid.nn.Checkpoint/1", "pyxbraid.nn.Checkpoint/2")
MULTILEVEL_FORMAT = "pyxbraid.nn.MultilevelCheckpoint/1"
_META_KEYS = (
    "config",
    "settings",
    "progress",
    "optimizer",
    "optimizer_vectors",
    "optimizer_lists",
    "mgrit",
    "ranks",
    "note",
)
_MGRIT_KEYS = ("count", "adjoint", "rnorm0", "rnorm0_adjoint")
_NOTE = "with a full batch in an MGRIT mode, mgrit.* is the engine's iterate the next step warm-restarts from"
_INT_FIELDS = ("epoch", "mgrit_iterations")
_TOP_KEYS = ("strategy", "phase", "gradient_evaluations", "levels", "ranks", "note")
_MULTILEVEL_NOTE = (
    "levels[i] and level.<i>.* are level i's part (0: the network trained, then coarser), as in a single-level "
    "checkpoint; phase says where the strategy's schedule stands"
)


@dataclass
class Progress:
    """Where a fit stands: ``epoch`` epochs done and ``step`` steps of the next one."""

    epoch: int
    step: int
    rng: dict  # the shuffling generator's state at the start of epoch ``epoch``
    loss_sum: float  # running sums of epoch ``epoch`` over its first ``step`` steps
    correct_sum: float
    wall_seconds: float
    last: tuple  # (residual, adjoint residual, MGRIT iterations) of the last gradient

    @staticmethod
    def start(rng: np.random.Generator) -> Progress:
        """Return the progress of a fit that has not started, with ``rng``'s current state."""
        return Progress(0, 0, dict(rng.bit_generator.state), 0.0, 0.0, 0.0, (math.nan, math.nan, 0))

    def begin_epoch(
        self, epoch: int, rng: np.random.Generator, n: int, shuffled: bool
    ) -> tuple[int, float, float, dict, np.ndarray]:
        """Start ``epoch`` of a fit that started (or resumed) at this progress.

        Returns its first step, its running sums of losses and correct
        predictions, the generator's state before the epoch's permutation is
        drawn (what a checkpoint stores) and the order of the ``n`` samples.
        The epoch the run starts at continues from this progress: its step,
        its sums and its generator state, so a resumed run draws the
        permutation the interrupted one drew.
        """
        if epoch == self.epoch:
            rng.bit_generator.state = self.rng
            first_step, loss_sum, correct_sum = self.step, self.loss_sum, self.correct_sum
        else:
            first_step, loss_sum, correct_sum = 0, 0.0, 0.0
        epoch_rng = dict(rng.bit_generator.state)
        order = rng.permutation(n) if shuffled else np.arange(n)
        return first_step, loss_sum, correct_sum, epoch_rng, order


# -- writing -------------------------------------------------------------------------------
def save(trainer: Trainer, path: Path, settings: dict, history: History, progress: Progress, evaluations: int) -> None:
    """Gather everything to rank 0 and write it there (collective; a failure raises on every rank).

    ``evaluations``: the gradient evaluations of the fit so far (a resumed fit's include the interrupted one's).
    """
    gathered = _gather(trainer, None)
    with _Agreed(trainer.comm, f"checkpoint {str(path)!r}"):
        if trainer.comm.Get_rank() != 0:
            return
        meta, arrays = _encode(trainer, gathered, settings, history, progress)
        # (not in _encode: a multilevel checkpoint keeps every level's count once, in its top-level meta)
        meta["gradient_evaluations"] = int(evaluations)
        arrays = {"format": np.array(FORMAT), "meta": np.array(json.dumps(meta)), **arrays}
        atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _gather(trainer: Trainer, full_token: Any) -> tuple | None:
    """Gather one trainer's parameters, optimizer vectors and MGRIT iterate (collective): on rank 0, else None.

    ``full_token``: the identity of the full batch in the trainer's engine (None: the single-level one).
    """
    net = trainer.net
    params = net.gather(net.local_parameters)  # None except on rank 0, which alone uses them
    state = trainer.optimizer.state_dict()
    opt = type(trainer.optimizer)
    vectors = {key: None if state[key] is None else net.gather(state[key]) for key in opt._VECTORS}
    lists = {key: [net.gather(v) for v in state[key]] for key in opt._VECTOR_LISTS}
    mgrit = trainer._gathered_iterate(full_token)
    if trainer.comm.Get_rank() != 0:
        return None
    return params, state, vectors, lists, mgrit


def stack_iterate(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the ranks' pieces of an MGRIT iterate (:meth:`Solver.iterate`) as one, in time order.

    A rank that stores no time point has no adjoint piece (None): only the
    pieces with points count.
    """
    held = [p for p in pieces if p["indices"].size] or pieces[:1]
    order = np.argsort(np.concatenate([p["indices"] for p in held]), kind="stable")

    def stack(key: str) -> Any:
        if held[0][key] is None:
            return None
        return np.concatenate([p[key] for p in held])[order]

    return {
        "indices": stack("indices"),
        "states": stack("states"),
        "adjoint": stack("adjoint"),
        "rnorm0": pieces[0]["rnorm0"],
        "rnorm0_adjoint": pieces[0]["rnorm0_adjoint"],
    }


def _encode(
    trainer: Trainer, gathered: tuple | None, settings: dict, history: History, progress: Progress
) -> tuple[dict, dict[str, Any]]:
    """Rank 0: the metadata and the arrays (without format and meta) of one trainer's part of a checkpoint."""
    assert gathered is not None  # rank 0: what _gather collected
    params, state, vectors, lists, pieces = gathered
    mgrit = None if pieces is None else stack_iterate(pieces)
    net, opt = trainer.net, type(trainer.optimizer)
    scalars = {k: v for k, v in state.items() if k not in opt._VECTORS and k not in opt._VECTOR_LISTS}
    meta = {
        "config": asdict(net.config),
        "settings": settings,
        "progress": {
            "epoch": progress.epoch,
            "step": progress.step,
            "rng": progress.rng,
            "loss_sum": progress.loss_sum,
            "correct_sum": progress.correct_sum,
            "wall_seconds": progress.wall_seconds,
            "last": list(progress.last),
        },
        "optimizer": scalars,
        "optimizer_vectors": {key: vectors[key] is not None for key in opt._VECTORS},
        "optimizer_lists": {key: len(lists[key]) for key in opt._VECTOR_LISTS},
        "mgrit": None
        if mgrit is None
        else {
            "count": int(mgrit["indices"].size),
            "adjoint": mgrit["adjoint"] is not None,
            "rnorm0": mgrit["rnorm0"],
            "rnorm0_adjoint": mgrit["rnorm0_adjoint"],
        },
        "ranks": trainer.comm.Get_size(),
        "note": _NOTE,
    }
    if net._layer_spec.description is not None:  # a numpy layer: its description (no key for the native one)
        meta["layer"] = json.loads(net._layer_spec.description)
    arrays: dict[str, Any] = {f"param.{k}": v for k, v in params.items()}
    for key, full in vectors.items():
        if full is not None:
            arrays.update({f"optimizer.{key}.{k}": v for k, v in full.items()})
    for key, items in lists.items():
        for i, item in enumerate(items):
            arrays.update({f"optimizer.{key}.{i}.{k}": v for k, v in (item or {}).items()})
    for f in fields(history):
        arrays[f"history.{f.name}"] = np.asarray(getattr(history, f.name), dtype=np.float64)
    if mgrit is not None:
        arrays["mgrit.indices"] = mgrit["indices"].astype(np.float64)
        arrays["mgrit.states"] = mgrit["states"]
        if mgrit["adjoint"] is not None:
            arrays["mgrit.adjoint"] = mgrit["adjoint"]
    return meta, arrays


# -- reading --------------------------------------------------------------------------------
def load(
    trainer: Trainer, path: Path, settings: dict, epochs: int, n: int, batch_size: int
) -> tuple[History, Progress, dict | None, int]:
    """Read, check and distribute a checkpoint (collective).

    Returns the history, progress and MGRIT iterate to continue from, and
    the gradient evaluations of the fit that wrote it.
    """
    payload = evaluations = None
    with _Agreed(trainer.comm, f"checkpoint {str(path)!r}"):
        if trainer.comm.Get_rank() == 0:
            payload, evaluations = _read(trainer, path, settings, epochs, -(-n // batch_size), batch_size)
    if trainer.comm.Get_size() > 1:
        evaluations = trainer.comm.bcast(evaluations, root=0)
    assert evaluations is not None  # rank 0 read it, the others received it
    return (*_install(trainer, path, payload), evaluations)


def _install(trainer: Trainer, path: Path, payload: tuple | None) -> tuple[History, Progress, dict | None]:
    """Distribute one trainer's part of a checkpoint, read and checked on rank 0 (collective).

    Sets the trainer's parameters and optimizer state; returns the history,
    progress and MGRIT iterate to continue from.
    """
    comm, net = trainer.comm, trainer.net
    if comm.Get_size() > 1:  # the small part to every rank; the vectors are scattered below
        meta, history_arrays, mgrit = comm.bcast(None if payload is None else (*payload[:2], payload[5]), root=0)
        params, vectors, lists = payload[2:5] if payload is not None else (None, None, None)
    else:
        assert payload is not None  # one rank: rank 0, which read the file
        meta, history_arrays, params, vectors, lists, mgrit = payload
    opt = type(trainer.optimizer)
    local_params = net.scatter(params)
    local_vectors = {}
    for key in opt._VECTORS:
        present = meta["optimizer_vectors"][key]
        local_vectors[key] = net.scatter(vectors[key] if comm.Get_rank() == 0 else None) if present else None
    local_lists = {
        key: [net.scatter(lists[key][i] if comm.Get_rank() == 0 else None) for i in range(meta["optimizer_lists"][key])]
        for key in opt._VECTOR_LISTS
    }
    with _Agreed(comm, f"checkpoint {str(path)!r} state"):
        state = dict(meta["optimizer"], **local_vectors, **local_lists)
        now = json.loads(json.dumps(trainer.optimizer.hyperparameters()))
        saved = {k: state[k] for k in now}
        if saved != now:
            warnings.warn(
                f"resuming from {str(path)!r}: the optimizer continues with the checkpoint's "
                f"hyperparameters {saved} instead of {now}",
                UserWarning,
                stacklevel=5,
            )
        trainer.optimizer.load_state_dict(state)
        np.copyto(net.local_parameters, local_params)
    from .trainer import History

    history = History()
    for f in fields(history):
        values = history_arrays[f.name].tolist()
        setattr(history, f.name, [int(v) for v in values] if f.name in _INT_FIELDS else values)
    p = meta["progress"]
    last = (float(p["last"][0]), float(p["last"][1]), int(p["last"][2]))
    return (
        history,
        Progress(
            p["epoch"],
            p["step"],
            p["rng"],
            float(p["loss_sum"]),
            float(p["correct_sum"]),
            float(p["wall_seconds"]),
            last,
        ),
        mgrit,
    )


def _is_pcg64_state(state: Any) -> bool:
    """Tell whether ``state`` looks like a PCG64 generator's state (a dict naming PCG64)."""
    return isinstance(state, dict) and state.get("bit_generator") == "PCG64"


def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"{str(path)!r} is not a valid pyxbraid.nn checkpoint: {message}")


def _number(
    path: Path,
    name: str,
    value: Any,
    *,
    integer: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    nan: bool = False,
) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool):
        raise _fail(path, f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value) and not (nan and math.isnan(value)):
        raise _fail(path, f"{name} must be finite, got {value!r}")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        raise _fail(path, f"{name} must be in [{minimum}, {maximum}], got {value!r}")
    return value


def _read(
    trainer: Trainer, path: Path, settings: dict, epochs: int, steps_per_epoch: int, batch_size: int
) -> tuple[tuple, int]:
    """Rank 0: everything in the file, checked against this trainer and fit() call; and the gradient evaluations."""
    with NpzReader(path, "pyxbraid.nn checkpoint") as r:
        tag = _format_tag(r)
        if tag == MULTILEVEL_FORMAT:
            raise ValueError(
                f"checkpoint {str(path)!r} was written by a multilevel run ({MULTILEVEL_FORMAT!r}): resume it "
                "with the Trainer's strategy (nested or mgopt) and settings it was written with, not 'single'"
            )
        if tag in _EARLIER_FORMATS:
            raise ValueError(
                f"checkpoint {str(path)!r} has the format {tag!r} of an earlier pyxbraid version, which this version "
                f"cannot resume: it reads {FORMAT!r}, which also holds MGRIT's iterate and the gradient evaluations "
                "so far; start the training anew"
            )
        if tag != FORMAT:
            raise r.error(f"format is {tag!r}, expected {FORMAT!r}")
        meta = r.read_json("meta", 1 << 20)
        # the single-level key; the rest is a level's part, as in a multilevel checkpoint
        evaluations = meta.pop("gradient_evaluations", None) if isinstance(meta, dict) else None
        expected = _check_meta(r, trainer, meta, settings, epochs, steps_per_epoch, batch_size, "")
        count: int = _number(path, "gradient_evaluations", evaluations, integer=True, minimum=0)
        arrays = _read_arrays(r, {"format", "meta"}, expected)
    return _decode(trainer, path, meta, arrays, ""), count


def _format_tag(r: NpzReader) -> str:
    if "format" not in r.members:
        raise r.error(f"no format tag (expected {FORMAT!r} or {MULTILEVEL_FORMAT!r})")
    return r.read_text("format", 256)


def _read_arrays(r: NpzReader, others: set[str], expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Check that the archive holds exactly ``others`` and ``expected`` (names, shapes, float64), then read those."""
    r.require_members({*others, *expected})
    for name, shape in expected.items():
        got, dtype = r.header(name)
        if tuple(got) != shape:
            raise r.error(f"array {name!r} must have shape {shape}, got {tuple(got)}")
        if dtype.kind != "f" or dtype.itemsize != 8:
            raise r.error(f"array {name!r} must be float64, got dtype {dtype}")
    return {name: r.read_float64(name, shape) for name, shape in expected.items()}


def _check_network(r: NpzReader, trainer: Trainer, path: Path, meta: dict) -> None:
    """Check the network: its numpy layer (absent: the native one), then the configuration."""
    net = trainer.net
    spec = net._layer_spec
    mine = None if spec.description is None else json.loads(spec.description)
    if meta.get("layer") != mine:
        raise ValueError(
            f"checkpoint {str(path)!r} was written for another network: layer={meta.get('layer')!r} "
            f"(the trainer's network: {mine!r})"
        )
    try:
        config = _config_from_json(meta["config"], None if mine is None else spec)
    except ValueError as exc:
        raise r.error(str(exc)) from None
    if config != net.config:
        diff = [
            f"{k}={getattr(config, k)!r} (the trainer's network: {getattr(net.config, k)!r})"
            for k in asdict(config)
            if getattr(config, k) != getattr(net.config, k)
        ]
        raise ValueError(f"checkpoint {str(path)!r} was written for another network: {', '.join(diff)}")


def _check_settings(r: NpzReader, path: Path, saved: Any, settings: dict) -> None:
    """Check the run's settings: the same keys, and equal values but the optimizer's hyperparameters."""
    if not isinstance(saved, dict) or set(saved) != set(settings):
        raise r.error(f"settings must be a JSON object with the keys {', '.join(sorted(settings))}")
    names = {
        "data": "training data (x, y)",
        "validation": "validation data",
        "n": "number of samples",
        "layer_parallel": "layer_parallel settings",
        "optimizer": "optimizer",
    }
    for key in settings:
        if key == "optimizer_hyperparameters":
            continue
        if saved[key] != settings[key]:
            raise ValueError(
                f"checkpoint {str(path)!r} was written for another {names.get(key, key)}: "
                f"{key}={saved[key]!r} there, {settings[key]!r} in this fit()"
            )


def _check_progress(r: NpzReader, path: Path, p: Any, epochs: int, steps_per_epoch: int, prefix: str) -> None:
    if not isinstance(p, dict) or set(p) != {
        "epoch",
        "step",
        "rng",
        "loss_sum",
        "correct_sum",
        "wall_seconds",
        "last",
    }:
        raise r.error(
            f"{prefix}progress must be a JSON object with the keys epoch, step, rng, loss_sum, correct_sum, "
            "wall_seconds, last"
        )
    _number(path, f"{prefix}progress.epoch", p["epoch"], integer=True, minimum=0)
    _number(path, f"{prefix}progress.step", p["step"], integer=True, minimum=0, maximum=steps_per_epoch)
    if p["epoch"] > epochs or (p["epoch"] == epochs and p["step"] > 0):
        done = f"{p['epoch']} epoch(s)" + (f" and {p['step']} step(s)" if p["step"] else "")
        where = f" on level {prefix[6:-1]}" if prefix else ""
        raise ValueError(f"checkpoint {str(path)!r} has already completed {done}{where}, more than epochs={epochs}")
    for key in ("loss_sum", "correct_sum", "wall_seconds"):
        _number(path, f"{prefix}progress.{key}", p[key], minimum=0)
    if not isinstance(p["last"], list) or len(p["last"]) != 3:
        raise r.error(f"{prefix}progress.last must be [residual, adjoint residual, iterations]")
    _number(path, f"{prefix}progress.last[0]", p["last"][0], minimum=0, nan=True)
    _number(path, f"{prefix}progress.last[1]", p["last"][1], minimum=0, nan=True)
    _number(path, f"{prefix}progress.last[2]", p["last"][2], integer=True, minimum=0)
    try:
        rng_state: Any = p["rng"]
        if not _is_pcg64_state(rng_state):
            raise ValueError("not a PCG64 state")
        np.random.PCG64().state = rng_state  # its own checks of the values
    except Exception as exc:
        raise r.error(f"{prefix}progress.rng is not a valid generator state ({exc})") from None


def _check_meta(
    r: NpzReader,
    trainer: Trainer,
    meta: Any,
    settings: dict,
    epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    prefix: str,
) -> dict[str, tuple[int, ...]]:
    """Check one trainer's metadata; return the arrays (``prefix`` + name) it declares, with their shapes."""
    path, net = r.path, trainer.net
    if not isinstance(meta, dict) or set(meta) - {"layer"} != set(_META_KEYS):
        raise r.error(f"{prefix}meta must be a JSON object with the keys {', '.join(_META_KEYS)} (and layer)")
    _check_network(r, trainer, path, meta)
    _check_settings(r, path, meta["settings"], settings)
    p = meta["progress"]
    _check_progress(r, path, p, epochs, steps_per_epoch, prefix)
    _number(path, f"{prefix}ranks", meta["ranks"], integer=True, minimum=1)

    # the optimizer: type, scalars; which vectors there are
    opt = trainer.optimizer
    state_keys = set(opt.state_dict())
    vector_keys, list_keys = type(opt)._VECTORS, type(opt)._VECTOR_LISTS
    scalars = meta["optimizer"]
    if not isinstance(scalars, dict) or set(scalars) != state_keys - set(vector_keys) - set(list_keys):
        raise r.error(f"{prefix}optimizer must be a JSON object with the keys of {type(opt).__name__}'s state")
    present, counts = meta["optimizer_vectors"], meta["optimizer_lists"]
    if (
        not isinstance(present, dict)
        or set(present) != set(vector_keys)
        or not all(isinstance(v, bool) for v in present.values())
    ):
        raise r.error(f"{prefix}optimizer_vectors must map {', '.join(vector_keys) or 'nothing'} to true/false")
    if not isinstance(counts, dict) or set(counts) != set(list_keys):
        raise r.error(f"{prefix}optimizer_lists must map {', '.join(list_keys) or 'nothing'} to counts")
    for key, k in counts.items():
        _number(path, f"{prefix}optimizer_lists.{key}", k, integer=True, minimum=0, maximum=scalars.get("history", 0))

    # the arrays: every name, shape and dtype before any data
    shapes = _full_shapes(net.config, net._layer_spec)
    completed = p["epoch"] * steps_per_epoch + p["step"]
    expected: dict[str, tuple[int, ...]] = {f"param.{k}": s for k, s in shapes.items()}
    for key in vector_keys:
        if present[key]:
            expected.update({f"optimizer.{key}.{k}": s for k, s in shapes.items()})
    for key in list_keys:
        for i in range(counts[key]):
            expected.update({f"optimizer.{key}.{i}.{k}": s for k, s in shapes.items()})
    from .trainer import History

    for f in fields(History):
        expected[f"history.{f.name}"] = (completed,) if f.name == "step_loss" else (p["epoch"],)
    mgrit = meta["mgrit"]
    if mgrit is not None:
        if not isinstance(mgrit, dict) or set(mgrit) != set(_MGRIT_KEYS) or not isinstance(mgrit["adjoint"], bool):
            raise r.error(f"{prefix}mgrit must be null or a JSON object with the keys {', '.join(_MGRIT_KEYS)}")
        count = _number(
            path, f"{prefix}mgrit.count", mgrit["count"], integer=True, minimum=0, maximum=net.config.depth + 1
        )
        for key in ("rnorm0", "rnorm0_adjoint"):
            _number(path, f"{prefix}mgrit.{key}", mgrit[key])
        state_shape = (count, batch_size, *net.state_shape)
        expected["mgrit.indices"] = (count,)
        expected["mgrit.states"] = state_shape
        if mgrit["adjoint"]:
            expected["mgrit.adjoint"] = state_shape
    return {prefix + name: shape for name, shape in expected.items()}


def _decode(trainer: Trainer, path: Path, meta: dict, all_arrays: dict[str, np.ndarray], prefix: str) -> tuple:
    """Rank 0: check the values of one trainer's arrays; return (meta, history, params, vectors, lists, iterate)."""
    net, opt = trainer.net, trainer.optimizer
    arrays = {name[len(prefix) :]: a for name, a in all_arrays.items() if name.startswith(prefix)}
    for name, arr in arrays.items():
        finite = np.isfinite(arr) if not name.startswith("history.") else ~np.isinf(arr)
        if not np.all(finite):
            raise _fail(
                path,
                f"array {prefix + name!r} contains {'NaN or ' if not name.startswith('history.') else ''}"
                "infinite values",
            )
    for name in _INT_FIELDS:
        values = arrays[f"history.{name}"]
        if not np.all((values == np.round(values)) & (values >= 0)):
            raise _fail(path, f"{prefix}history.{name} must hold non-negative integers")
    shapes = _full_shapes(net.config, net._layer_spec)
    vector_keys, list_keys = type(opt)._VECTORS, type(opt)._VECTOR_LISTS
    present, counts = meta["optimizer_vectors"], meta["optimizer_lists"]
    params = {k: arrays[f"param.{k}"] for k in shapes}
    vectors = {
        key: ({k: arrays[f"optimizer.{key}.{k}"] for k in shapes} if present[key] else None) for key in vector_keys
    }
    lists = {
        key: [{k: arrays[f"optimizer.{key}.{i}.{k}"] for k in shapes} for i in range(counts[key])] for key in list_keys
    }
    from .trainer import History

    history = {f.name: arrays[f"history.{f.name}"] for f in fields(History)}
    iterate = None
    mgrit = meta["mgrit"]
    if mgrit is not None:
        indices = arrays["mgrit.indices"]
        if not (
            np.all(indices == np.round(indices))
            and np.all((indices >= 0) & (indices <= net.config.depth))
            and np.unique(indices).size == indices.size
        ):
            raise _fail(path, f"{prefix}mgrit.indices must be distinct time indices in 0..depth")
        iterate = {
            "indices": indices.astype(np.int64),
            "states": arrays["mgrit.states"],
            "adjoint": arrays.get("mgrit.adjoint"),
            "rnorm0": float(mgrit["rnorm0"]),
            "rnorm0_adjoint": float(mgrit["rnorm0_adjoint"]),
        }
    # the optimizer's own checks of the whole state, before any rank changes anything
    probe = copy.deepcopy(opt)
    flat = {key: (None if v is None else np.concatenate([a.ravel() for a in v.values()])) for key, v in vectors.items()}
    flat_lists = {key: [np.concatenate([a.ravel() for a in v.values()]) for v in items] for key, items in lists.items()}
    try:
        probe.load_state_dict(dict(meta["optimizer"], **flat, **flat_lists))
    except (TypeError, ValueError) as exc:
        raise _fail(path, f"{prefix}optimizer state: {exc}") from None
    return meta, history, params, vectors, lists, iterate


# -- multilevel checkpoints ---------------------------------------------------------------------
@dataclass
class LevelHooks:
    """How the training loop of one level of a multilevel strategy saves and resumes (see Trainer._fit_single)."""

    level: int
    write: Callable[[History, Progress], None]  # writes the whole multilevel checkpoint (collective)
    resumed: tuple[History, Progress, dict | None] | None = None  # the level's state read from the checkpoint


@dataclass
class LevelState:
    """One level's part of a multilevel checkpoint: its history, where its training stands, its full batch."""

    history: History
    progress: Progress
    full_token: Any = None  # the full batch's identity in the level's engine (None: the single-level one's)


def save_levels(
    trainers: list[Trainer],
    path: Path,
    settings: list[dict],
    states: list[LevelState],
    strategy: dict,
    phase: dict,
    counts: list[int],
) -> None:
    """Write a multilevel checkpoint: every level's part, the strategy and where its schedule stands (collective).

    ``phase`` says where the strategy's schedule stands (JSON); ``counts`` the
    gradient evaluations of each level so far in this fit. Gathered to rank 0,
    written there atomically; a failure raises on every rank.
    """
    comm = trainers[0].comm
    gathered = [_gather(t, s.full_token) for t, s in zip(trainers, states, strict=True)]
    with _Agreed(comm, f"checkpoint {str(path)!r}"):
        if comm.Get_rank() != 0:
            return
        metas = []
        arrays: dict[str, Any] = {"format": np.array(MULTILEVEL_FORMAT)}
        for level, (t, g, s, st) in enumerate(zip(trainers, gathered, settings, states, strict=True)):
            meta, part = _encode(t, g, s, st.history, st.progress)
            metas.append(meta)
            arrays.update({f"level.{level}.{k}": v for k, v in part.items()})
        top = {
            "strategy": strategy,
            "phase": phase,
            "gradient_evaluations": [int(c) for c in counts],
            "levels": metas,
            "ranks": comm.Get_size(),
            "note": _MULTILEVEL_NOTE,
        }
        arrays["meta"] = np.array(json.dumps(top))
        atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_levels(
    trainers: list[Trainer],
    path: Path,
    settings: list[dict],
    n: int,
    batch_size: int,
    strategy: dict,
    check_phase: Callable[[Any, NpzReader], list[int]],
) -> tuple[dict, list[int], list[tuple[History, Progress, dict | None]]]:
    """Read, check and distribute a multilevel checkpoint (collective).

    ``check_phase(phase, reader)`` checks the strategy's phase (raising
    ``ValueError``) and returns the most epochs each level may have done.
    Returns the phase, the gradient evaluations of each level so far, and
    each level's history, progress and MGRIT iterate; sets every level's
    parameters and optimizer state.
    """
    comm = trainers[0].comm
    payload = None
    with _Agreed(comm, f"checkpoint {str(path)!r}"):
        if comm.Get_rank() == 0:
            payload = _read_levels(trainers, path, settings, -(-n // batch_size), batch_size, strategy, check_phase)
    top = payload[:2] if payload is not None else None
    if comm.Get_size() > 1:
        top = comm.bcast(top, root=0)
    assert top is not None  # rank 0 read it, the others received it
    parts = [_install(t, path, None if payload is None else payload[2][i]) for i, t in enumerate(trainers)]
    return top[0], top[1], parts


def _read_levels(
    trainers: list[Trainer],
    path: Path,
    settings: list[dict],
    steps_per_epoch: int,
    batch_size: int,
    strategy: dict,
    check_phase: Callable[[Any, NpzReader], list[int]],
) -> tuple:
    """Rank 0: a multilevel checkpoint, checked against these level trainers and this fit() call."""
    with NpzReader(path, "pyxbraid.nn checkpoint") as r:
        tag = _format_tag(r)
        if tag == FORMAT:
            raise ValueError(
                f"checkpoint {str(path)!r} was written for another strategy: strategy='single' there, "
                f"{strategy['strategy']!r} in this trainer"
            )
        if tag != MULTILEVEL_FORMAT:
            raise r.error(f"format is {tag!r}, expected {MULTILEVEL_FORMAT!r}")
        top = r.read_json("meta", 1 << 22)
        if not isinstance(top, dict) or set(top) != set(_TOP_KEYS):
            raise r.error(f"meta must be a JSON object with the keys {', '.join(_TOP_KEYS)}")
        _check_strategy(r, top["strategy"], strategy)
        _number(path, "ranks", top["ranks"], integer=True, minimum=1)
        levels, counts = top["levels"], top["gradient_evaluations"]
        if not isinstance(levels, list) or len(levels) != len(trainers):
            raise r.error(f"levels must be a list of {len(trainers)} level descriptions")
        if not isinstance(counts, list) or len(counts) != len(trainers):
            raise r.error(f"gradient_evaluations must be a list of {len(trainers)} counts")
        for i, c in enumerate(counts):
            _number(path, f"gradient_evaluations[{i}]", c, integer=True, minimum=0)
        epochs = check_phase(top["phase"], r)
        expected: dict[str, tuple[int, ...]] = {}
        for i, (t, meta) in enumerate(zip(trainers, levels, strict=True)):
            expected.update(_check_meta(r, t, meta, settings[i], epochs[i], steps_per_epoch, batch_size, f"level.{i}."))
        arrays = _read_arrays(r, {"format", "meta"}, expected)
    parts = [
        _decode(t, path, meta, arrays, f"level.{i}.") for i, (t, meta) in enumerate(zip(trainers, levels, strict=True))
    ]
    return top["phase"], counts, parts


def _check_strategy(r: NpzReader, saved: Any, mine: dict) -> None:
    """Check that the strategy and its settings are this trainer's (ValueError naming the first difference)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("strategy"), str):
        raise r.error("strategy must be a JSON object naming the strategy")
    where = f"checkpoint {str(r.path)!r} was written for another strategy"
    if saved["strategy"] != mine["strategy"]:
        raise ValueError(f"{where}: strategy={saved['strategy']!r} there, {mine['strategy']!r} in this trainer")
    if set(saved) != set(mine):
        raise r.error(f"strategy must be a JSON object with the keys {', '.join(mine)}")
    for key, value in mine.items():
        if saved[key] != value:
            raise ValueError(f"{where} setting: {key}={saved[key]!r} there, {value!r} in this trainer")
