"""Executors: where the run loop (:func:`benchmark.runner.run_specs`) runs. A new executor is one module here
that registers a class with :func:`register_executor`; modules of this package are discovered on import.

``local`` runs the specs in this process (or under torchrun, one DDP job); ``submitit`` packs them into
Slurm job arrays whose tasks call the same :func:`run_specs`. Both return :class:`~benchmark.runner.Outcome`\\ s.
"""
import importlib
import pkgutil
from typing import Any, Callable, Dict, List, Sequence, Type

from ..config import SuiteConfig
from ..errors import did_you_mean
from ..runner import Outcome, RunOptions, RunSpec, run_specs

__all__ = ["Executor", "register_executor", "create_executor", "list_executors", "LocalExecutor"]

_EXECUTORS: Dict[str, Type["Executor"]] = {}


class Executor:
    """Runs a list of specs with :class:`RunOptions` and returns one outcome per spec it saw finish."""

    name: str = ""

    def run(self, cfg: SuiteConfig, specs: Sequence[RunSpec], opts: RunOptions) -> List[Outcome]:
        raise NotImplementedError


def register_executor(name: str) -> Callable[[Type[Executor]], Type[Executor]]:
    def wrap(cls: Type[Executor]) -> Type[Executor]:
        cls.name = name
        _EXECUTORS[name] = cls
        return cls

    return wrap


@register_executor("local")
class LocalExecutor(Executor):
    """This process (and, under torchrun, its peers): the specs run one cell after the other."""

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"the local executor takes no options, got {', '.join(sorted(options))}")

    def run(self, cfg: SuiteConfig, specs: Sequence[RunSpec], opts: RunOptions) -> List[Outcome]:
        with opts.stop.signals():
            return run_specs(cfg, specs, opts)


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")  # a broken executor module fails loudly


def list_executors() -> List[str]:
    return sorted(_EXECUTORS)


def create_executor(name: str, **options: Any) -> Executor:
    """The executor registered as ``name``, built with its options (e.g. Slurm settings)."""
    if name not in _EXECUTORS:
        raise KeyError(f"unknown executor '{name}'.{did_you_mean(name, list_executors())} "
                       f"Executors: {', '.join(list_executors())}")
    return _EXECUTORS[name](**options)


_discover()
