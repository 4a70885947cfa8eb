"""What the dataset and method registries say about a suite: a dataset's extra options and their types, the
methods ``all`` expands to, and the hyper-parameters a method runs with.

Only public functions of ``datasets`` and ``methods`` are used, imported on call (as the checks that need
the registries run).
"""
from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, Dict, List, Optional

from .schema import DatasetEntry, Pair, SuiteConfig

__all__ = ["dataset_options", "parameter_type", "method_names", "effective_method_params"]

#: builder parameters every dataset takes; ``options`` are the others
_FIXED_BUILDER_PARAMS = frozenset({"root", "split", "imbalance_factor", "seed", "transform"})


def dataset_options(name: str) -> Optional[Dict[str, Any]]:
    """Extra keyword options of dataset ``name``'s builder (name -> default), None when it takes ``**kw``.

    Derived from the builder's signature, so a new option of a family is allowed without touching this file.
    """
    import datasets as ds

    builder = ds.dataset_builder(name)  # the registered builder's own signature is the source of truth
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name: p.default for p in params if p.name not in _FIXED_BUILDER_PARAMS
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def parameter_type(func: Callable[..., Any], name: str) -> Any:
    """The resolved annotation of parameter ``name`` of ``func``; ``Any`` when absent or not resolvable.

    ``typing.get_type_hints`` resolves this one annotation (string annotations included, in ``func``'s
    module), so another parameter's unresolvable forward reference does not hide it.
    """
    annotations = getattr(func, "__annotations__", {})
    if name not in annotations:
        return Any
    one = types.SimpleNamespace(__annotations__={name: annotations[name]},
                                __globals__=getattr(func, "__globals__", {}))
    try:
        return typing.get_type_hints(one, include_extras=True)[name]
    except Exception:  # a forward reference that does not resolve: the builder checks its own values
        return Any


def method_names(cfg: SuiteConfig) -> List[str]:
    """The suite's methods, with ``all`` expanded to every registered method."""
    import methods

    if isinstance(cfg.methods, str):
        if cfg.methods == "all":
            return methods.list_methods()
        return [cfg.methods]
    return list(cfg.methods)


def effective_method_params(cfg: SuiteConfig, method: str, entry: DatasetEntry, pair: Pair) -> Dict[str, Any]:
    """The hyper-parameters ``method`` runs with on ``entry`` x ``pair``: its declared defaults, updated by the
    suite's ``method_params[method]``, then the dataset entry's, then the pair's (the pair wins)."""
    import methods

    params = dict(methods.get_method(method).hparams)
    for level in (cfg.method_params, entry.method_params, pair.method_params):
        params.update(level.get(method, {}))
    return params
