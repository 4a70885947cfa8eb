"""Registry of long-tailed datasets: ``build_dataset``, ``list_datasets``, ``dataset_info``, ``dataset_root``,
``verify_dataset``, ``download_dataset``.

A family file (``fashion_mnist.py``, ``cifar.py``, ``txt_split.py``) decorates a builder with
``@register_dataset(name, info=..., verify=..., download=...)``. The builtin families (every module of
this package but ``base`` and private ``_*`` ones, found with ``pkgutil``) are imported on first use, so
``import datasets`` stays cheap; one that fails to import raises an ``ImportError`` naming it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence

from ltkd_core.errors import close_matches
from ltkd_core.registry import Registry

if TYPE_CHECKING:  # real imports are deferred: they pull in torch
    from pathlib import Path

    from .base import DatasetInfo, DownloadUnavailable, VerifyReport

__all__ = ["register_dataset", "build_dataset", "list_datasets", "dataset_info", "dataset_root", "verify_dataset",
           "download_dataset", "default_transform", "DatasetInfo", "VerifyReport", "DownloadUnavailable"]

@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., Any]
    info: Optional["DatasetInfo"]
    verify: Optional[Callable[..., "VerifyReport"]]
    download: Optional[Callable[..., Any]] = None


def _unknown_dataset(name: str, names: Sequence[str]) -> str:
    """``unknown dataset 'x'; did you mean 'y'? available: a, b``: the registry's message for a missing name."""
    close = close_matches(name, names)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"unknown dataset {name!r}; {hint}available: {', '.join(names)}"


#: The dataset families by name: this package's modules but ``base`` (and private ``_*`` ones) register them.
REGISTRY: Registry[_Entry] = Registry("dataset", package=__name__, exclude={"base"}, unknown=_unknown_dataset,
                                      origin=lambda entry: entry.builder)
_REGISTRY = REGISTRY.entries  # the live name -> entry dict (tests snapshot and restore it)


def __getattr__(name: str) -> Any:
    """Lazy access to ``DatasetInfo`` / ``VerifyReport`` so that importing the package does not import torch."""
    if name in ("DatasetInfo", "VerifyReport", "DownloadUnavailable"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_dataset(name: str, info: Optional["DatasetInfo"] = None,
                     verify: Optional[Callable[..., "VerifyReport"]] = None,
                     download: Optional[Callable[..., Any]] = None) -> Callable:
    """Decorator registering ``builder(root, split, imbalance_factor, seed, transform, **kw)`` under ``name``.

    ``info`` (a ``DatasetInfo``) is what the harness reads before loading; ``verify(root, **options)``
    backs ``verify_dataset`` / ``python -m benchmark prepare``; ``download(root)`` fetches the files into
    ``root`` (``prepare --download``) or raises ``DownloadUnavailable`` saying where to get them.
    """

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY.add(name, _Entry(builder, info, verify, download))
        return builder

    return wrap


def _entry(name: str) -> _Entry:
    """The registry entry of ``name``; a ``KeyError`` names close matches and every dataset."""
    return REGISTRY.get(name)


def list_datasets() -> List[str]:
    """Names of all registered datasets, sorted."""
    return REGISTRY.names()


def dataset_info(name: str) -> "DatasetInfo":
    """The ``DatasetInfo`` of ``name`` (classes, channels, image size, mean/std, splits, default IF)."""
    info = _entry(name).info
    if info is None:
        raise ValueError(f"dataset {name!r} was registered without a DatasetInfo (register_dataset(name, info=...))")
    return info


def dataset_root(name: str, root: Optional[Any] = None) -> "Path":
    """The folder ``name`` is read from: ``root`` if given, else its family's default under ``$LTKD_DATA`` or ./data."""
    from .base import resolve_root

    return resolve_root(root, _entry(name).info)


def build_dataset(name: str, root: Optional[Any] = None, split: str = "train", imbalance_factor: Optional[float] = None,
                  seed: int = 0, transform: Optional[Callable] = None, **kw: Any) -> Any:
    """Build split ``split`` of dataset ``name`` (train: long-tailed subset chosen by ``seed``; eval: untouched)."""
    entry = _entry(name)
    return entry.builder(root=root, split=split, imbalance_factor=imbalance_factor, seed=seed, transform=transform,
                         **kw)


def verify_dataset(name: str, root: Optional[Any] = None, **options: Any) -> "VerifyReport":
    """Check the files of ``name`` under ``root`` (presence, counts, checksums, missing or corrupt images).

    ``options`` go to the family's verify step where it takes them (split-file datasets: ``decode``,
    ``workers``, ``max_listed``) and are dropped elsewhere, so one ``prepare`` command line fits every dataset.
    """
    entry = _entry(name)
    if entry.verify is None:
        from .base import VerifyReport as Report

        return Report(ok=True, notes=[f"{name} has no verify step"], name=name, root=str(root or ""))
    params = inspect.signature(entry.verify).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return entry.verify(root, **options)


def download_dataset(name: str, root: Optional[Any] = None) -> "Path":
    """Fetch ``name``'s files into ``dataset_root(name, root)`` unless the builder already finds them; returns
    the folder holding them.

    Raises ``DownloadUnavailable`` for datasets that must be obtained by hand (ImageNet-LT, Places-LT)
    and ``RuntimeError`` naming the URL when a download or its checksum fails.
    """
    entry = _entry(name)
    if entry.download is None:
        from .base import DownloadUnavailable as Unavailable

        raise Unavailable(f"{name} has no download step; put its files under {dataset_root(name, root)} "
                          f"or pass --root DIR")
    return entry.download(root)


def default_transform(name: str, train: bool) -> Callable:
    """The standard-protocol torchvision transform of ``name`` producing normalised float tensors."""
    from .transforms import transform_for

    return transform_for(dataset_info(name), train)


def dataset_builder(name: str) -> Callable[..., Any]:
    """The registered builder of ``name``: its signature lists the dataset's extra options (the config layer
    checks a suite's ``options`` against it); an unknown name raises ``KeyError`` with close matches."""
    return _entry(name).builder
