"""YAML reading for suites: ``yaml.safe_load`` semantics with floats as people write them, duplicate keys
rejected, and every syntax error turned into one ``source:line:col: problem`` line.

PyYAML's YAML 1.1 rules read ``1e-2``, ``5.e-4`` or ``.5`` as strings and silently keep the last of a key
given twice; :class:`SuiteLoader` reads those as floats and names the duplicated key and both lines.
No tag is ever executed (it is a ``yaml.SafeLoader``).
"""
from __future__ import annotations

import re
from typing import Any, Dict

import yaml

from .exceptions import ConfigError

__all__ = ["SuiteLoader", "yaml_load", "yaml_error"]

_FLOAT = re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?   # 1.5  1.  5.e-4  1_000.5  1.5e3
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?          # .5  -.5  .5e-3
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+                 # 1e-2  1E5  5e-4
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*      # 190:20:30.15 (YAML 1.1 sexagesimal, kept)
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_FLOAT_TAG = "tag:yaml.org,2002:float"


class SuiteLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2-style floats and duplicate keys rejected (key and line named)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Dict[Any, Any]:
        """The base mapping, after checking that no key of ``node`` is given twice."""
        if isinstance(node, yaml.MappingNode):
            self._reject_duplicate_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _reject_duplicate_keys(self, node: yaml.MappingNode) -> None:
        """Raise naming a key given twice and the line of its first occurrence (merge keys ``<<`` excepted)."""
        seen: Dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` keys may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (first given at line {first}); YAML would keep only "
                                f"the last one: remove one of them", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1


SuiteLoader.yaml_implicit_resolvers = {
    first: [(tag, _FLOAT if tag == _FLOAT_TAG else regexp) for tag, regexp in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def yaml_error(err: yaml.YAMLError, source: str, lines: bool = True) -> str:
    """One line ``source:line:col: problem`` from a PyYAML error (which spans several lines);
    ``lines=False`` (a one-line override value) gives ``source: at column N: problem``."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    if mark is None:
        where = source
    else:
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if lines else f"{source}: at column {mark.column + 1}"
    text = problem + (f" ({context})" if context else "")
    if "constructor for the tag" in problem:
        text += "; only plain YAML values are allowed (tags such as !!python/... are never executed)"
    else:
        text = f"not valid YAML: {text}"
    return " ".join(f"{where}: {text}".split())


def yaml_load(text: str, source: str) -> Any:
    """Parse ``text`` with :class:`SuiteLoader`; a syntax error becomes a one-line ``ConfigError``."""
    try:
        return yaml.load(text, Loader=SuiteLoader)  # noqa: S506 - SuiteLoader is a SafeLoader
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error(err, source)) from None
