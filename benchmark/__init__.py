"""ltkd-bench: knowledge distillation on long-tailed image classification.

Importing this package registers the CIFAR-style model zoo into timm's registry, so
``timm.create_model("cifar_resnet8x4", num_classes=100)`` works after ``import benchmark``.
"""
from __future__ import annotations

__version__ = "0.1.0"


def _check_datasets_not_shadowed() -> None:
    """Our top-level ``datasets`` package shares its name with Hugging Face ``datasets``: fail clearly."""
    import datasets as _ds

    if not hasattr(_ds, "build_dataset"):
        where = getattr(_ds, "__file__", "?")
        raise ImportError(
            f"the 'datasets' package imported from {where} is not ltkd-bench's (it looks like Hugging Face "
            "'datasets', which shadows ours); run from the ltkd-bench checkout after `pip install -e .`, "
            "or `pip uninstall datasets` in this environment")


_check_datasets_not_shadowed()

from . import models  # noqa: E402,F401  (registers the CIFAR zoo into timm)
