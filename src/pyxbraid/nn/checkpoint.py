"""Training checkpoints: what :meth:`Trainer.fit` needs to continue exactly where it stopped.

A checkpoint is a ``numpy.savez`` archive (no pickle), written by rank 0 with
:func:`~pyxbraid.nn._files.atomic_write`:

* ``format``: ``"pyxbraid.nn.Checkpoint/1"``;
* ``meta``: JSON -- the network's configuration, the fit settings a resumed
  run must share (mode and MGRIT settings, seed, batch size, shuffling, a
  fingerprint of the data, the optimizer), the progress (completed epochs,
  completed steps of the next epoch, the shuffling generator's state at the
  start of that epoch, the epoch's running sums, the wall time, the last
  MGRIT residuals), the optimizer's scalar state, the number of ranks
  that wrote it and, for a network with a numpy :class:`~pyxbraid.nn.Layer`,
  ``layer``: its description (type, config, state and parameter shapes);
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
array data is read (:class:`~pyxbraid.nn._files.NpzReader`).

With the iterate saved, a resumed run continues every mode exactly where
it stopped (see :meth:`Trainer.fit`).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import _Agreed
from ._files import NpzReader, atomic_write
from .network import _config_from_json, _full_shapes

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import History, Trainer

FORMAT = "pyxbraid.nn.Checkpoint/2"
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


# -- writing -------------------------------------------------------------------------------
def save(trainer: Trainer, path: Path, settings: dict, history: History, progress: Progress) -> None:
    """Gather everything to rank 0 and write it there (collective; a failure raises on every rank)."""
    net, comm = trainer.net, trainer.comm
    params = net.gather(net.local_parameters)  # None except on rank 0, which alone uses them below
    state = trainer.optimizer.state_dict()
    opt = type(trainer.optimizer)
    vectors = {key: None if state[key] is None else net.gather(state[key]) for key in opt._VECTORS}
    lists = {key: [net.gather(v) for v in state[key]] for key in opt._VECTOR_LISTS}
    mgrit = trainer._gathered_iterate()
    with _Agreed(comm, f"checkpoint {str(path)!r}"):
        if comm.Get_rank() != 0:
            return
        scalars = {k: v for k, v in state.items() if k not in opt._VECTORS and k not in opt._VECTOR_LISTS}
        assert params is not None  # rank 0: the gathered parameters
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
            "ranks": comm.Get_size(),
            "note": _NOTE,
        }
        if net._layer_spec.description is not None:  # a numpy layer: its description (no key for the native one)
            meta["layer"] = json.loads(net._layer_spec.description)
        arrays: dict[str, Any] = {"format": np.array(FORMAT), "meta": np.array(json.dumps(meta))}
        arrays.update({f"param.{k}": v for k, v in params.items()})
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
        atomic_write(path, lambda fh: np.savez(fh, **arrays))


# -- reading --------------------------------------------------------------------------------
def load(
    trainer: Trainer, path: Path, settings: dict, epochs: int, n: int, batch_size: int
) -> tuple[History, Progress, dict | None]:
    """Read, check and distribute a checkpoint (collective).

    Returns the history, progress and MGRIT iterate to continue from.
    """
    comm, net = trainer.comm, trainer.net
    payload = None
    with _Agreed(comm, f"checkpoint {str(path)!r}"):
        if comm.Get_rank() == 0:
            payload = _read(trainer, path, settings, epochs, -(-n // batch_size), batch_size)
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
                stacklevel=4,
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


def _read(trainer: Trainer, path: Path, settings: dict, epochs: int, steps_per_epoch: int, batch_size: int) -> tuple:
    """Rank 0: everything in the file, checked against this trainer and fit() call."""
    net = trainer.net
    with NpzReader(path, "pyxbraid.nn checkpoint") as r:
        if "format" not in r.members:
            raise r.error(f"no format tag (expected {FORMAT!r})")
        tag = r.read_text("format", 256)
        if tag != FORMAT:
            raise r.error(f"format is {tag!r}, expected {FORMAT!r}")
        meta = r.read_json("meta", 1 << 20)
        if not isinstance(meta, dict) or set(meta) - {"layer"} != set(_META_KEYS):
            raise r.error(f"meta must be a JSON object with the keys {', '.join(_META_KEYS)} (and layer)")

        # the network: its numpy layer (absent: the native one), then the configuration
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

        # the run's settings
        saved = meta["settings"]
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

        # progress
        p = meta["progress"]
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
                "progress must be a JSON object with the keys epoch, step, rng, loss_sum, correct_sum, "
                "wall_seconds, last"
            )
        _number(path, "progress.epoch", p["epoch"], integer=True, minimum=0)
        _number(path, "progress.step", p["step"], integer=True, minimum=0, maximum=steps_per_epoch)
        if p["epoch"] > epochs or (p["epoch"] == epochs and p["step"] > 0):
            done = f"{p['epoch']} epoch(s)" + (f" and {p['step']} step(s)" if p["step"] else "")
            raise ValueError(f"checkpoint {str(path)!r} has already completed {done}, more than epochs={epochs}")
        for key in ("loss_sum", "correct_sum", "wall_seconds"):
            _number(path, f"progress.{key}", p[key], minimum=0)
        if not isinstance(p["last"], list) or len(p["last"]) != 3:
            raise r.error("progress.last must be [residual, adjoint residual, iterations]")
        _number(path, "progress.last[0]", p["last"][0], minimum=0, nan=True)
        _number(path, "progress.last[1]", p["last"][1], minimum=0, nan=True)
        _number(path, "progress.last[2]", p["last"][2], integer=True, minimum=0)
        try:
            rng_state: Any = p["rng"]
            if not _is_pcg64_state(rng_state):
                raise ValueError("not a PCG64 state")
            np.random.PCG64().state = rng_state  # its own checks of the values
        except Exception as exc:
            raise r.error(f"progress.rng is not a valid generator state ({exc})") from None
        _number(path, "ranks", meta["ranks"], integer=True, minimum=1)

        # the optimizer: type, scalars; which vectors there are
        opt = trainer.optimizer
        state_keys = set(opt.state_dict())
        vector_keys, list_keys = type(opt)._VECTORS, type(opt)._VECTOR_LISTS
        scalars = meta["optimizer"]
        if not isinstance(scalars, dict) or set(scalars) != state_keys - set(vector_keys) - set(list_keys):
            raise r.error(f"optimizer must be a JSON object with the keys of {type(opt).__name__}'s state")
        present, counts = meta["optimizer_vectors"], meta["optimizer_lists"]
        if (
            not isinstance(present, dict)
            or set(present) != set(vector_keys)
            or not all(isinstance(v, bool) for v in present.values())
        ):
            raise r.error(f"optimizer_vectors must map {', '.join(vector_keys) or 'nothing'} to true/false")
        if not isinstance(counts, dict) or set(counts) != set(list_keys):
            raise r.error(f"optimizer_lists must map {', '.join(list_keys) or 'nothing'} to counts")
        for key, k in counts.items():
            _number(path, f"optimizer_lists.{key}", k, integer=True, minimum=0, maximum=scalars.get("history", 0))

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
                raise r.error(f"mgrit must be null or a JSON object with the keys {', '.join(_MGRIT_KEYS)}")
            count = _number(path, "mgrit.count", mgrit["count"], integer=True, minimum=0, maximum=net.config.depth + 1)
            for key in ("rnorm0", "rnorm0_adjoint"):
                _number(path, f"mgrit.{key}", mgrit[key])
            state_shape = (count, batch_size, *net.state_shape)
            expected["mgrit.indices"] = (count,)
            expected["mgrit.states"] = state_shape
            if mgrit["adjoint"]:
                expected["mgrit.adjoint"] = state_shape
        r.require_members({"format", "meta", *expected})
        for name, shape in expected.items():
            got, dtype = r.header(name)
            if tuple(got) != shape:
                raise r.error(f"array {name!r} must have shape {shape}, got {tuple(got)}")
            if dtype.kind != "f" or dtype.itemsize != 8:
                raise r.error(f"array {name!r} must be float64, got dtype {dtype}")
        arrays = {name: r.read_float64(name, shape) for name, shape in expected.items()}
    for name, arr in arrays.items():
        finite = np.isfinite(arr) if not name.startswith("history.") else ~np.isinf(arr)
        if not np.all(finite):
            raise _fail(
                path, f"array {name!r} contains {'NaN or ' if not name.startswith('history.') else ''}infinite values"
            )
    for name in _INT_FIELDS:
        values = arrays[f"history.{name}"]
        if not np.all((values == np.round(values)) & (values >= 0)):
            raise _fail(path, f"history.{name} must hold non-negative integers")
    params = {k: arrays[f"param.{k}"] for k in shapes}
    vectors = {
        key: ({k: arrays[f"optimizer.{key}.{k}"] for k in shapes} if present[key] else None) for key in vector_keys
    }
    lists = {
        key: [{k: arrays[f"optimizer.{key}.{i}.{k}"] for k in shapes} for i in range(counts[key])] for key in list_keys
    }
    history = {f.name: arrays[f"history.{f.name}"] for f in fields(History)}
    iterate = None
    if mgrit is not None:
        indices = arrays["mgrit.indices"]
        if not (
            np.all(indices == np.round(indices))
            and np.all((indices >= 0) & (indices <= net.config.depth))
            and np.unique(indices).size == indices.size
        ):
            raise _fail(path, "mgrit.indices must be distinct time indices in 0..depth")
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
        probe.load_state_dict(dict(scalars, **flat, **flat_lists))
    except (TypeError, ValueError) as exc:
        raise _fail(path, f"optimizer state: {exc}") from None
    return meta, history, params, vectors, lists, iterate
