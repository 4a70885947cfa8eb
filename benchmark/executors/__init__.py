"""Executors: where the run loop (:func:`benchmark.runner.run_specs`) runs. A new executor is one module here
that registers a class with :func:`register_executor`; the modules of this package (all but private ``_*`` ones)
are discovered on the first lookup (:class:`ltkd_core.registry.Registry`, as for methods and datasets).

``local`` runs the specs in this process (or under torchrun, one DDP job); ``submitit`` packs them into
Slurm job arrays whose tasks call the same :func:`run_specs`. Both return :class:`~benchmark.runner.Outcome`\\ s.
"""
from typing import Any, Callable, List, Sequence, Type

from ltkd_core.registry import Registry

from ..config import SuiteConfig
from ..runner import Outcome, RunOptions, RunSpec, run_specs

__all__ = ["Executor", "register_executor", "create_executor", "list_executors", "LocalExecutor"]


class Executor:
    """Runs a list of specs with :class:`RunOptions` and returns one outcome per spec it saw finish."""

    name: str = ""

    def run(self, cfg: SuiteConfig, specs: Sequence[RunSpec], opts: RunOptions) -> List[Outcome]:
        raise NotImplementedError


#: The executor classes by name: ``local`` (below) and whatever this package's modules register.
REGISTRY: Registry[Type[Executor]] = Registry("executor", package=__name__)


def register_executor(name: str) -> Callable[[Type[Executor]], Type[Executor]]:
    """Class decorator registering an executor under ``name`` (``--executor name``)."""

    def wrap(cls: Type[Executor]) -> Type[Executor]:
        REGISTRY.add(name, cls)
        cls.name = name
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


def list_executors() -> List[str]:
    """Names of all registered executors, sorted."""
    return REGISTRY.names()


def create_executor(name: str, **options: Any) -> Executor:
    """The executor registered as ``name``, built with its options (e.g. Slurm settings); a ``KeyError``
    names close matches and every executor."""
    return REGISTRY.get(name)(**options)
