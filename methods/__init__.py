"""Registry of distillation methods: ``register_method``, ``get_method``, ``list_methods``, plugins.

A method lives in one file that decorates a :class:`~methods.base.Method` subclass with
``@register_method("name")``. Methods from outside this repository register through a module
named in a suite's ``plugins:`` list (see :func:`load_plugins`) or the entry-point group
``ltkd_bench.methods`` of an installed package. Every module of this package except ``base`` and
private ones (``_*``) is a builtin method file, found with ``pkgutil``: adding ``methods/my_new.py`` is
enough, and a builtin that fails to import raises an ``ImportError`` naming it.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Type

from ltkd_core.registry import Registry, load_plugins

from .base import EPOCH_KINDS, Method, MethodContext, Outputs, as_target, linear_warmup

__all__ = [
    "Method", "MethodContext", "Outputs", "register_method", "get_method", "list_methods",
    "create_method", "load_plugins", "ENTRY_POINT_GROUP", "as_target", "linear_warmup", "epoch_params", "EPOCH_KINDS",
]

ENTRY_POINT_GROUP = "ltkd_bench.methods"
#: The method classes by name: this package's modules but ``base`` (and private ``_*`` ones), then entry points.
REGISTRY: Registry[Type[Method]] = Registry("method", package=__name__, exclude={"base"},
                                            entry_point_group=ENTRY_POINT_GROUP)
_REGISTRY = REGISTRY.entries  # the live name -> class dict (tests snapshot and restore it)


def register_method(name: Optional[str] = None) -> Callable[[Type[Method]], Type[Method]]:
    """Class decorator registering a method under ``name`` (default: the class name, lower-cased)."""

    def wrap(cls: Type[Method]) -> Type[Method]:
        key = name or cls.__name__.lower()
        REGISTRY.add(key, cls)
        cls.name = key
        return cls

    return wrap


def list_methods() -> List[str]:
    """Names of all registered methods (builtins and plugins), sorted."""
    return REGISTRY.names()


def get_method(name: str) -> Type[Method]:
    """The method class registered under ``name``; a ``KeyError`` lists close matches."""
    return REGISTRY.get(name)


def epoch_params(name: str) -> Dict[str, str]:
    """Hyper-parameters of method ``name`` that count epochs, name -> kind (its ``epoch_params`` declaration,
    checked when the class was defined): what ``--epochs`` rescales and the pre-training warnings inspect."""
    return dict(get_method(name).epoch_params)


def create_method(name: str, ctx: MethodContext, **hparams) -> Method:
    """Instantiate a registered method with hyper-parameter overrides."""
    return get_method(name)(ctx, **hparams)
