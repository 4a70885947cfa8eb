"""Registry of distillation methods: ``register_method``, ``get_method``, ``list_methods``, plugins.

A method lives in one file that decorates a :class:`~methods.base.Method` subclass with
``@register_method("name")``. Methods from outside this repository register through a module
named in a suite's ``plugins:`` list (see :func:`load_plugins`) or the entry-point group
``ltkd_bench.methods`` of an installed package. Every module of this package except ``base`` and
private ones (``_*``) is a builtin method file, found with ``pkgutil``: adding ``methods/my_new.py`` is
enough, and a builtin that fails to import raises an ``ImportError`` naming it.
"""
from __future__ import annotations

import importlib
import pkgutil
import traceback
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Type

from .base import EPOCH_KINDS, Method, MethodContext, Outputs, as_target, linear_warmup

__all__ = [
    "Method", "MethodContext", "Outputs", "register_method", "get_method", "list_methods",
    "create_method", "load_plugins", "ENTRY_POINT_GROUP", "as_target", "linear_warmup", "epoch_params", "EPOCH_KINDS",
]

ENTRY_POINT_GROUP = "ltkd_bench.methods"
_REGISTRY: Dict[str, Type[Method]] = {}
_NOT_METHODS = frozenset({"base"})  # modules of this package that hold no method (besides private `_*` ones)
_builtins_loaded = False
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


def _builtin_modules() -> List[str]:
    """Names of this package's method modules (every module but ``base`` and ``_*``), sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name not in _NOT_METHODS)


def _load_builtins() -> None:
    """Import every builtin method module once (each registers itself); a broken one raises, named."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    for name in _builtin_modules():
        module = f"{__name__}.{name}"
        try:
            importlib.import_module(module)
        except Exception as err:  # the real error stays chained as __cause__
            raise ImportError(f"builtin method module '{module}' {_failure(err)}; fix {module.replace('.', '/')}.py "
                              f"or move it out of the package") from err
    _builtins_loaded = True


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


def _origin(err: BaseException) -> str:
    """``file:line`` where an import failed: the syntax error's position, else the innermost traceback frame."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}"
    frames = traceback.extract_tb(err.__traceback__)
    frames = [f for f in frames if "importlib" not in f.filename] or frames
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _failure(err: BaseException) -> str:
    """``raised on import: Type: message (at file:line)`` (or ``has a syntax error: ...``), one line."""
    kind = "has a syntax error" if isinstance(err, SyntaxError) else "raised on import"
    msg = err.msg if isinstance(err, SyntaxError) else str(err)
    return f"{kind}: {type(err).__name__}: {' '.join(str(msg).split())} (at {_origin(err)})"


def load_plugins(modules: Iterable[str]) -> None:
    """Import modules that register methods (a suite's ``plugins:`` list).

    Any failure becomes one ``ImportError`` line naming the module, the error and where it happened.
    """
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name and (mod == err.name or mod.startswith(err.name + ".")):
                raise ModuleNotFoundError(
                    f"plugin module '{mod}' could not be imported ({err}); make it importable "
                    f"(install it or add its folder to PYTHONPATH)") from err
            raise ImportError(f"plugin module '{mod}' failed to import: {err} (at {_origin(err)}); install what "
                              f"it needs or fix the module") from err
        except Exception as err:  # SyntaxError, or anything the module raises while it runs
            raise ImportError(f"plugin module '{mod}' {_failure(err)}; fix the module or remove it from "
                              f"plugins:") from err


def list_methods() -> List[str]:
    """Names of all registered methods, sorted."""
    _load_builtins()
    _load_entry_points()
    return sorted(_REGISTRY)


def get_method(name: str) -> Type[Method]:
    """The method class registered under ``name``; a ``KeyError`` lists close matches."""
    names = list_methods()
    if name not in _REGISTRY:
        # imported here: `benchmark` imports `methods.base` (its zoo's outputs), and `import methods` stays light
        from benchmark.errors import did_you_mean

        raise KeyError(f"unknown method '{name}'.{did_you_mean(name, names, cutoff=0.5)} Registered methods: "
                       f"{', '.join(names)}.")
    return _REGISTRY[name]


def epoch_params(name: str) -> Dict[str, str]:
    """Hyper-parameters of method ``name`` that count epochs, name -> kind (its ``epoch_params`` declaration,
    checked when the class was defined): what ``--epochs`` rescales and the pre-training warnings inspect."""
    return dict(get_method(name).epoch_params)


def create_method(name: str, ctx: MethodContext, **hparams) -> Method:
    """Instantiate a registered method with hyper-parameter overrides."""
    return get_method(name)(ctx, **hparams)
