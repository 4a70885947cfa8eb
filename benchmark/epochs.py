"""A suite at another length (``--epochs``): every epoch-valued setting rescaled by one rule, and the warnings
about epoch-valued method hyper-parameters that make part of a method inert for a whole run.

Which method hyper-parameters count epochs is declared by the method (``Method.epoch_params``), never
guessed from a name, so a plugin method is rescaled like a builtin. The rounding rule, for every integer
count (LR milestones, LR warm-up, method ``epoch_params``): ``value * new / old`` rounded to the nearest
integer, halves up, computed exactly in integers; a positive value never becomes 0 (at least 1), 0 stays 0;
a ``start`` epoch inside the original run (``value < old``) stays inside the new one (at most ``new - 1``)
when the new run has 2 epochs or more. A float-valued hyper-parameter is scaled without rounding.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Tuple

from .config import SuiteConfig, TrainRecipe, effective_method_params, method_names

__all__ = ["scale_count", "scale_epochs", "schedule_warnings", "epoch_values"]


def scale_count(value: Any, new: int, old: int, kind: str = "epochs") -> Any:
    """``value`` epochs of an ``old``-epoch run, rescaled to a ``new``-epoch run (module docstring's rule)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"an epoch count must be a number, got {value!r}")
    if isinstance(value, int):
        scaled = (2 * value * new + old) // (2 * old)  # round(value * new / old), halves up, exactly
        if value > 0:
            scaled = max(scaled, 1)
    else:
        scaled = value * new / old
    if kind == "start" and 0 < value < old and new >= 2:
        scaled = min(scaled, new - 1)
    return scaled


def _scale_recipe(recipe: TrainRecipe, epochs: int) -> None:
    """``recipe`` set to ``epochs``, its LR milestones and LR warm-up rescaled by the same rule."""
    old = recipe.epochs
    recipe.milestones = [scale_count(m, epochs, old) for m in recipe.milestones]
    recipe.warmup_epochs = scale_count(recipe.warmup_epochs, epochs, old)
    recipe.epochs = epochs


def _param_levels(cfg: SuiteConfig) -> Iterator[Dict[str, Dict[str, Any]]]:
    """The suite's ``method_params``, then every dataset entry's and every pair's."""
    yield cfg.method_params
    for entry in cfg.datasets:
        yield entry.method_params
    for pair in cfg.pairs:
        yield pair.method_params


def _scale_method_params(cfg: SuiteConfig, epochs: int, old: int) -> None:
    """Every declared epoch-valued hyper-parameter rescaled where it is set; an unset one gets its scaled default
    at the suite level, so the record holds the value the run used."""
    import methods

    names = set(method_names(cfg)) | {name for level in _param_levels(cfg) for name in level}
    for name in sorted(names):
        for key, kind in methods.epoch_params(name).items():
            suite_level = cfg.method_params.setdefault(name, {})
            suite_level.setdefault(key, methods.get_method(name).hparams[key])
            for level in _param_levels(cfg):
                if key in level.get(name, {}):
                    level[name][key] = scale_count(level[name][key], epochs, old, kind)


def scale_epochs(cfg: SuiteConfig, epochs: int) -> None:
    """Set both recipes to ``epochs`` and rescale, by the factor of each recipe, its LR milestones and warm-up and
    (by the student's factor) every method's declared ``epoch_params`` at every level, so a short run keeps the
    protocol's shape."""
    old_student = cfg.student_train.epochs
    for recipe in (cfg.teacher_train, cfg.student_train):
        _scale_recipe(recipe, epochs)
    _scale_method_params(cfg, epochs, old_student)


def _combinations(cfg: SuiteConfig) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """``(method, effective hyper-parameters)`` of every dataset entry x pair x method of the suite."""
    for name in method_names(cfg):
        for entry in cfg.datasets:
            for pair in cfg.pairs:
                yield name, effective_method_params(cfg, name, entry, pair)


def schedule_warnings(cfg: SuiteConfig) -> List[str]:
    """One line per distinct epoch-valued setting that leaves part of a method inert over the whole student run
    (``Method.schedule_warnings``), in suite order; empty when there is none."""
    import methods

    out: List[str] = []
    for name, params in _combinations(cfg):
        for line in methods.get_method(name).schedule_warnings(params, cfg.student_train.epochs):
            if line not in out:
                out.append(line)
    return out


def epoch_values(method: str, params: Dict[str, Any]) -> str:
    """``"drw_epoch=1"``: the method's declared epoch-valued hyper-parameters as the run uses them ('' if none)."""
    import methods

    declared = methods.epoch_params(method)
    return ", ".join(f"{key}={params[key]:g}" for key in declared if key in params)
