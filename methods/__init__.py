"""Registry of distillation methods: ``register_method``, ``get_method``, ``list_methods``, plugins.

A method lives in one file that decorates a :class:`~methods.base.Method` subclass with
``@register_method("name")``. Methods from outside this repository register through a module
named in a suite's ``plugins:`` list (see :func:`load_plugins`) or the entry-point group
``ltkd_bench.methods`` of an installed package.
"""
from __future__ import annotations

import difflib
import importlib
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Type

from .base import Method, MethodContext, Outputs, as_target, linear_warmup

__all__ = [
    "Method", "MethodContext", "Outputs", "register_method", "get_method", "list_methods",
    "create_method", "load_plugins", "ENTRY_POINT_GROUP", "as_target", "linear_warmup",
]

ENTRY_POINT_GROUP = "ltkd_bench.methods"
_REGISTRY: Dict[str, Type[Method]] = {}
_BUILTINS = ("ce", "kd", "dkd", "la_kd", "krdistill", "bkd", "ltkd", "dist", "balanced_softmax")
_entry_points_loaded = False


def register_method(name: Optional[str] = None) -> Callable[[Type[Method]], Type[Method]]:
    """Class decorator registering a method under ``name`` (default: the class name, lower-cased)."""

    def wrap(cls: Type[Method]) -> Type[Method]:
        key = name or cls.__name__.lower()
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            warnings.warn(f"method '{key}' is registered twice; {cls.__module__}.{cls.__qualname__} "
                          f"replaces {_REGISTRY[key].__module__}.{_REGISTRY[key].__qualname__}",
                          RuntimeWarning, stacklevel=2)
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return wrap


def _load_builtins() -> None:
    for mod in _BUILTINS:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as err:  # a builtin file not (yet) present is skipped
            if err.name != f"{__name__}.{mod}":
                raise


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python < 3.10
        eps = entry_points().get(ENTRY_POINT_GROUP, [])
    for ep in eps:
        try:
            ep.load()
        except Exception as err:  # a broken plugin must not break the benchmark
            warnings.warn(f"could not load method plugin '{ep.name}' ({ep.value}): {err}", RuntimeWarning)


def load_plugins(modules: Iterable[str]) -> None:
    """Import modules that register methods (a suite's ``plugins:`` list)."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                f"plugin module '{mod}' could not be imported ({err}); make it importable "
                f"(install it or add its folder to PYTHONPATH)") from err


def list_methods() -> List[str]:
    """Names of all registered methods, sorted."""
    _load_builtins()
    _load_entry_points()
    return sorted(_REGISTRY)


def get_method(name: str) -> Type[Method]:
    """The method class registered under ``name``; a ``KeyError`` lists close matches."""
    names = list_methods()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown method '{name}'.{hint} Registered methods: {', '.join(names)}.")
    return _REGISTRY[name]


def create_method(name: str, ctx: MethodContext, **hparams) -> Method:
    """Instantiate a registered method with hyper-parameter overrides."""
    return get_method(name)(ctx, **hparams)
