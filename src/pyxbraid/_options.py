"""Solver keywords -> the engine's Options, checked against the vocabulary.

Every rule comes from :mod:`pyxbraid._vocabulary` (the one declaration of
the options); the messages name the option and the value given
(``cfactor must be >= 2, got 1``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import _core
from ._vocabulary import OPTIONS, Option

__all__ = ["OPTION_NAMES", "check_option", "core_options", "describe_options"]

OPTION_NAMES = frozenset(o.name for o in OPTIONS)
_INT_MAX = 2**31 - 2  # the engine uses 32-bit indices (and ntime + 1)


def _is_bool_like(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and int(value) in (0, 1))


def as_bool(name: str, value: Any) -> bool:
    if not _is_bool_like(value):
        raise TypeError(f"{name} must be True/False (or 0/1), got {value!r}")
    return bool(value)


def as_int(name: str, value: Any, minimum: int | None = None, rule: str | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be {rule or f'>= {minimum}'}, got {v}")
    if v > _INT_MAX:
        raise ValueError(f"{name} must be <= {_INT_MAX}, got {v}")
    return v


def as_finite(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_, str, bytes, complex, np.complexfloating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _per_level(name: str, value: Any, convert: Callable[[str, Any], Any]) -> tuple[Any, list[Any]]:
    """One value for all levels, or a sequence indexed by level."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number or a sequence of numbers per level, got {value!r}")
    if isinstance(value, (numbers.Number, np.number)):
        return convert(name, value), []
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a number or a sequence of numbers per level, got {value!r}") from None
    if not items:
        raise ValueError(f"{name} must not be an empty sequence")
    return None, [convert(f"{name}[{k}]", v) for k, v in enumerate(items)]


def _converter(option: Option) -> Callable[[str, Any], Any]:
    """Check one value of ``option`` (rules from the vocabulary)."""
    if option.kind == "bool":
        return as_bool
    if option.kind == "int":
        if option.choices:

            def choice(name: str, value: Any) -> int:
                v = as_int(name, value)
                if v not in option.choices:
                    raise ValueError(f"{name} must be {option.rule}, got {value!r}")
                return v

            return choice
        minimum = None if option.minimum is None else int(option.minimum)
        return lambda name, value: as_int(name, value, minimum)

    def real(name: str, value: Any) -> float:
        v = as_finite(name, value)
        if option.positive and not v > 0.0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
        if option.minimum is not None and v < option.minimum:
            raise ValueError(f"{name} must be >= {option.minimum:g}, got {value!r}")
        return v

    return real


_BY_NAME = {o.name: o for o in OPTIONS}


def check_option(name: str, value: Any, label: str | None = None) -> Any:
    """One option's value checked by the vocabulary's rules, for callers with their own keyword names.

    ``label`` names the value in messages (default: the option's name), e.g.
    ``"layer_parallel['cfactor']"``. Per-level options return a number or a list.
    """
    option = _BY_NAME[name]
    label = label or name
    convert = _converter(option)
    if option.per_level:
        single, levels = _per_level(label, value, convert)
        return single if single is not None else levels
    return convert(label, value)


def core_options(values: Mapping[str, Any]) -> Any:
    """Check the keywords ``values`` (option name -> value, None = not given) and fill a ``_core.Options``."""
    opt = _core.Options()
    given = {name for name, v in values.items() if v is not None}
    for option in OPTIONS:
        value = values.get(option.name, option.default)
        convert = _converter(option)
        if option.kind == "optional_float":
            if option.group:
                continue  # below, with the other members of its group
            setattr(opt, f"has_{option.name}", value is not None)
            if value is not None:
                setattr(opt, option.name, convert(option.name, value))
        elif option.per_level:
            single, levels = _per_level(option.name, value, convert)
            setattr(opt, option.name, option.default if single is None else single)
            setattr(opt, f"{option.name}_level", levels)
        else:
            setattr(opt, option.name, convert(option.name, value))
    for group in dict.fromkeys(o.group for o in OPTIONS if o.group):
        members = [o for o in OPTIONS if o.group == group]
        chosen = [o for o in members if o.name in given]
        if len(chosen) > 1:
            names = " or ".join(o.name for o in chosen)
            got = ", ".join(f"{o.name}={values[o.name]!r}" for o in chosen)
            raise ValueError(f"give either {names}, not both (got {got})")
        active = chosen[0] if chosen else next(o for o in members if o.group_default)
        for o in members:
            setattr(opt, f"has_{o.name}", o is active)
        value = values[active.name] if active in chosen else active.default
        setattr(opt, active.name, _converter(active)(active.name, value))
    for option in OPTIONS:
        value = values.get(option.name)
        needed = option.requires.split("|") if option.requires else []
        if needed and value is not None and value != option.default and not any(getattr(opt, n) for n in needed):
            without = " or ".join(f"{n}=True" for n in needed)
            got = ", ".join(f"{n}={values.get(n, False)!r}" for n in needed)
            raise ValueError(f"{option.name}={value!r} has no effect without {without} (got {got})")
    return opt


def describe_options() -> str:
    """Return the options' entries of the Solver's numpydoc "Parameters" section."""
    lines = []
    for o in OPTIONS:
        kind = {"int": "int", "float": "float", "bool": "bool", "optional_float": "float, optional"}[o.kind]
        if o.per_level:
            kind = f"{kind} or sequence of {kind}"
        default = "" if o.kind == "optional_float" else f", default {o.default!r}"
        lines.append(f"    {o.name} : {kind}{default}")
        text = o.doc[0].upper() + o.doc[1:] + "."
        if o.kind == "optional_float" and o.group_default:
            text += f" Default {o.default!r}."
        if o.details:
            text += " " + o.details
        if o.xbraid:
            text += f" XBraid: ``{o.xbraid}``."
        words, line = text.split(), "       "
        for word in words:
            if len(line) + 1 + len(word) > 92:
                lines.append(line)
                line = "       "
            line += " " + word
        lines.append(line)
    return "\n".join(lines)
