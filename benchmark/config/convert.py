"""Typed conversion of plain YAML data into dataclasses, driven by the dataclasses' own type hints.

``from_dict(SuiteConfig, raw, "")`` checks every key and value against the field types (``int``,
``float``, ``bool``, ``str``, ``Optional``/``Union``, ``List``, ``Dict``, nested dataclasses) and fails
with one line naming the key's path (``student_train.lr: expected a number, got 'fast'``).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Callable, Dict, List, Union

from ..errors import unknown_name
from .exceptions import ConfigError

__all__ = ["from_dict", "convert", "type_name"]


def type_name(tp: Any) -> str:
    """How an error message names the type ``tp`` (``an integer``, ``a list``, ``a mapping``, ...)."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (list, List):
        return "a list"
    if origin in (dict, Dict) or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert containers/dataclasses."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is Union:
        return _convert_union(value, tp, where)
    if value is None:
        if origin in (dict, Dict):  # `method_params:` with every entry commented out
            return {}
        raise ConfigError(f"{where}: no value given (an empty `key:` or `key=`); expected {type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, _mapping(value, where), where)
    if origin in (list, List):
        items = value if isinstance(value, list) else [value]  # a scalar where a list is expected: `seeds: 0`
        return [convert(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(items)]
    if origin in (dict, Dict):
        return {str(k): convert(v, typing.get_args(tp)[1], f"{where}.{k}") for k, v in _mapping(value, where).items()}
    scalar = _SCALARS.get(tp) if isinstance(tp, type) else None
    return scalar(value, where) if scalar is not None else value


def _convert_union(value: Any, tp: Any, where: str) -> Any:
    """``Optional[X]`` / ``Union[X, Y]``: None where allowed, else the first member type that accepts ``value``."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return convert(value, arg, where)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(errors[0] if len(errors) == 1 else
                      f"{where}: {value!r} matches none of {', '.join(type_name(a) for a in args)}")


def _mapping(value: Any, where: str) -> Dict[Any, Any]:
    """``value`` when it is a mapping, else a one-line error naming ``where``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _as_bool(value: Any, where: str) -> bool:
    """YAML's ``true`` / ``false`` only (no 0/1, no strings)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _as_int(value: Any, where: str) -> int:
    """An integer (``true`` is not one here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _as_float(value: Any, where: str) -> float:
    """A finite number (integers allowed), as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _as_str(value: Any, where: str) -> str:
    """A string (YAML's unquoted ``1e-2`` or ``yes`` are not strings here)."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


_SCALARS: Dict[type, Callable[[Any, str], Any]] = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def from_dict(cls: Any, data: Dict[str, Any], where: str) -> Any:
    """An instance of dataclass ``cls`` from mapping ``data``: unknown keys (with close matches), missing
    required keys and wrong value types fail with one line naming ``where``'s key path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(unknown_name(where, "key", key, fields))
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], f"{where}.{name}" if where else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore
            raise ConfigError(f"{where or 'suite'}: missing required key '{name}'")
    return cls(**kwargs)
