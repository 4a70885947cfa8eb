"""Checks of a loaded suite, all before any training: values (recipes, grid lists, imbalance factors, name,
device string) and, against the registries, every dataset, option, model, method and method hyper-parameter.

Each failure is one ``ConfigError`` line naming the key's path and the fix (close matches for names).
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Sequence, Tuple

from ..errors import did_you_mean, unknown_name
from .convert import convert
from .exceptions import ConfigError
from .registries import dataset_options, method_names, parameter_type
from .schema import DatasetEntry, SuiteConfig, interval_check

__all__ = ["validate_suite", "validate_names_exist"]


def _no_duplicates(values: Sequence[Any], where: str) -> None:
    """Fail on the first value of ``values`` listed a second time (its index named)."""
    seen = set()
    for i, v in enumerate(values):
        if v in seen:
            raise ConfigError(f"{where}[{i}]: {v!r} is listed twice; list each once")
        seen.add(v)


def validate_suite(cfg: SuiteConfig, names: bool = True) -> None:
    """Every check of a loaded (and CLI-modified) config; ``names``: also those that need the registries."""
    cfg.teacher_train.validate("teacher_train")
    cfg.student_train.validate("student_train")
    _check_grid_lists(cfg)
    for i, entry in enumerate(cfg.datasets):
        _check_dataset_entry(entry, f"datasets[{i}]")
    for i, pair in enumerate(cfg.pairs):
        if pair.student_lr is not None:
            interval_check(f"pairs[{i}].student_lr", pair.student_lr, 0, strict=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.name) or ".." in cfg.name:  # it names files and folders
        raise ConfigError(f"name: '{cfg.name}' may hold only letters, digits, '_', '-' and '.' (no '..'): it names "
                          "configs/<name>_reference.json and results/reference/<name>/")
    if cfg.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", cfg.device):
        raise ConfigError(f"device: '{cfg.device}' is not one of auto, cpu, cuda, cuda:N")
    if names:
        validate_names_exist(cfg)


def _check_grid_lists(cfg: SuiteConfig) -> None:
    """Datasets, pairs, methods and seeds: none empty (nothing would train), none listed twice, seeds >= 0."""
    if not cfg.datasets:
        raise ConfigError("datasets: the suite names no dataset")
    if not cfg.pairs:
        raise ConfigError("pairs: the suite names no teacher->student pair")
    if isinstance(cfg.methods, list):
        if not cfg.methods:
            raise ConfigError("methods: the list is empty (only teachers would train); name methods or use `all`")
        _no_duplicates(cfg.methods, "methods")
    if not cfg.seeds:
        raise ConfigError("seeds: the list is empty (nothing would train); give at least one seed, e.g. [0]")
    _no_duplicates(cfg.seeds, "seeds")
    for i, s in enumerate(cfg.seeds):
        interval_check(f"seeds[{i}]", s, 0)


def _check_dataset_entry(entry: DatasetEntry, where: str) -> None:
    """Imbalance factors (at least one, none twice, each >= 1 or null) and a data seed >= 0."""
    if not entry.imbalance_factors:
        raise ConfigError(f"{where}.imbalance_factors: the list is empty; give e.g. [100] (or [null] for the "
                          f"dataset's default)")
    _no_duplicates(entry.imbalance_factors, f"{where}.imbalance_factors")
    for j, f in enumerate(entry.imbalance_factors):
        if f is not None and f < 1:
            raise ConfigError(f"{where}.imbalance_factors[{j}]: {f:g} < 1 (1 = balanced, 100 = the usual LT)")
    interval_check(f"{where}.data_seed", entry.data_seed, 0)


# ----------------------------------------------------------------------------- against the registries

def validate_names_exist(cfg: SuiteConfig) -> None:
    """Fail before training on an unknown dataset, option, model or method, or a bad method hyper-parameter."""
    import methods

    methods.load_plugins(cfg.plugins)
    _check_dataset_names(cfg)
    _check_model_names(cfg)
    _check_method_names(cfg)


def _check_dataset_names(cfg: SuiteConfig) -> None:
    """Every dataset is registered, takes the imbalance factors given, and knows its ``options``."""
    import datasets as ds

    known_ds = ds.list_datasets()
    for i, entry in enumerate(cfg.datasets):
        if entry.name not in known_ds:
            raise ConfigError(unknown_name(f"datasets[{i}].name", "dataset", entry.name, known_ds, cutoff=0.5))
        if ds.dataset_info(entry.name).default_imbalance_factor is None and \
                any(f is not None for f in entry.imbalance_factors):
            raise ConfigError(f"datasets[{i}].imbalance_factors: {entry.name} has a fixed split (its imbalance is "
                              f"set by the split file); use [null] or leave the key out")
        _check_options(entry, f"datasets[{i}]")


def _check_options(entry: DatasetEntry, where: str) -> None:
    """Unknown ``options`` keys (with close matches) and values of the wrong type, from the builder's signature."""
    import datasets as ds

    allowed = dataset_options(entry.name)
    if allowed is None:
        return
    for key in entry.options:
        if key not in allowed:
            raise ConfigError(unknown_name(f"{where}.options ({entry.name})", "option", key, sorted(allowed)))
    builder = ds.dataset_builder(entry.name)
    for key, value in entry.options.items():
        convert(value, parameter_type(builder, key), f"{where}.options.{key}")


def _check_model_names(cfg: SuiteConfig) -> None:
    """Every teacher and student is a timm model name (the CIFAR zoo is registered into timm)."""
    import timm

    all_models = timm.list_models()
    model_set = set(all_models)
    for i, pair in enumerate(cfg.pairs):
        for role in ("teacher", "student"):
            name = getattr(pair, role)
            if name not in model_set:
                zoo = ", ".join(m for m in all_models if m.startswith("cifar_"))
                raise ConfigError(f"pairs[{i}].{role}: unknown model '{name}'.{did_you_mean(name, all_models)} "
                                  f"CIFAR zoo: {zoo}; or any name from timm.list_models()")


def _method_param_levels(cfg: SuiteConfig) -> Iterator[Tuple[str, dict]]:
    """``(where, method_params)`` of the suite, every dataset entry and every pair."""
    yield "method_params", cfg.method_params
    for i, entry in enumerate(cfg.datasets):
        yield f"datasets[{i}].method_params", entry.method_params
    for i, pair in enumerate(cfg.pairs):
        yield f"pairs[{i}].method_params", pair.method_params


def _check_method_names(cfg: SuiteConfig) -> None:
    """Every method is registered, and every ``method_params`` entry names one and passes its bounds."""
    import methods

    known_methods = methods.list_methods()
    for i, name in enumerate(method_names(cfg)):
        if name not in known_methods:
            raise ConfigError(unknown_name(f"methods[{i}]", "method", name, known_methods, cutoff=0.5))
    for where, level in _method_param_levels(cfg):
        for name, params in level.items():
            if name not in known_methods:
                raise ConfigError(unknown_name(where, "method", name, known_methods, cutoff=0.5))
            try:
                methods.get_method(name).validate_hparams(params, where=f"{where}.{name}")
            except (TypeError, ValueError) as err:
                raise ConfigError(str(err)) from None
