"""The override language: dotted ``key=value`` strings (``student_train.epochs=5``, ``datasets.0.root=/data``)
applied to the raw YAML mapping before it is converted and validated.

The value is read as YAML (``seeds=[0,1]``, ``lr=1e-2``, ``root=`` for null), so an override means exactly
what the same value would mean in the suite file.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import yaml

from .exceptions import ConfigError
from .yaml_io import SuiteLoader, yaml_error

__all__ = ["parse_override", "apply_overrides"]


def parse_override(text: str) -> Tuple[List[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML; ``a.b=`` gives None)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not key=value (e.g. student_train.epochs=5)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override '{text}': empty part in the key '{key.strip()}' (e.g. student_train.lr=0.01)")
    if not raw.strip():
        return parts, None
    try:
        value = yaml.load(raw, Loader=SuiteLoader)  # noqa: S506 - SuiteLoader is a SafeLoader
    except yaml.YAMLError as err:
        msg = yaml_error(err, f"override '{text}'", lines=False)
        hint = " (quote a string value: key='text')" if "not valid YAML" in msg else ""
        raise ConfigError(msg + hint) from None
    return parts, value


def _unshare(node: Any) -> Any:
    """A deep copy in which no two places share an object (unlike copy.deepcopy, which keeps aliasing)."""
    if isinstance(node, dict):
        return {k: _unshare(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unshare(v) for v in node]
    return node


def apply_overrides(raw: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """Apply dotted ``key=value`` overrides to the raw YAML mapping (before validation)."""
    raw = _unshare(raw)  # YAML anchors (`student_train: *recipe`) must not make one override change both
    for text in overrides:
        path, value = parse_override(text)
        _set(_parent(raw, path, text), path[-1], value, text)
    return raw


def _parent(raw: Dict[str, Any], path: List[str], text: str) -> Any:
    """The mapping or list that holds ``path[-1]``; missing or null mappings on the way are created."""
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = _item(node, part, text)
            continue
        if node.get(part) is None:
            node[part] = {}  # also replaces a null (`method_params:` left empty)
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override '{text}': '{'.'.join(path[:i + 1])}' is not a mapping")
    return node


def _item(node: List[Any], part: str, text: str) -> Any:
    """``node[int(part)]``, else a one-line error: ``part`` is not a valid index of the list."""
    try:
        return node[int(part)]
    except (ValueError, IndexError):
        raise ConfigError(f"override '{text}': '{part}' is not a valid index") from None


def _set(node: Any, last: str, value: Any, text: str) -> None:
    """``node[last] = value`` for a mapping, ``node[int(last)] = value`` for a list (an existing index)."""
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise ConfigError(f"override '{text}': '{last}' is not a valid index") from None
    else:
        node[last] = value
