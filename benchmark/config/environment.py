"""Checks of a suite against this machine, run by the CLI just before training: the device is visible, a
given dataset root is a non-empty folder, and every training split loads and fits the batch sizes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .exceptions import ConfigError
from .schema import DatasetEntry, SuiteConfig

__all__ = ["check_device", "check_root", "check_data"]


def check_device(cfg: SuiteConfig, source: str = "device") -> None:
    """``cuda`` / ``cuda:N`` must name a visible GPU (else training would die at the first tensor move)."""
    if not cfg.device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"{source} {cfg.device}: no CUDA device is visible to PyTorch "
                          f"(torch.cuda.is_available() is False); use --device cpu or auto")
    if ":" in cfg.device and int(cfg.device.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"{source} {cfg.device}: only {torch.cuda.device_count()} CUDA device(s) are visible; "
                          f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")


def check_root(root: Optional[str], where: str) -> None:
    """An explicitly given dataset root must be an existing, non-empty folder (no silent fallback elsewhere)."""
    if root is None:
        return
    path = Path(root).expanduser()
    if not path.exists():
        raise ConfigError(f"{where} {root}: no such folder; give the folder that holds the dataset's files "
                          f"(see `python -m benchmark prepare`)")
    if not path.is_dir():
        raise ConfigError(f"{where} {root}: is a file, not a folder; give the folder that holds the dataset's files")
    if not any(path.iterdir()):
        raise ConfigError(f"{where} {root}: the folder is empty; put the dataset's files there "
                          f"(see `python -m benchmark prepare`)")


def check_data(cfg: SuiteConfig) -> None:
    """Load every training split once (cheap: cached per process) and check it fits the batch sizes.

    Missing files, bad ``options`` values and ``batch_size`` > the number of training images (zero
    optimiser steps per epoch) all fail here, before a teacher trains.
    """
    for i, entry in enumerate(cfg.datasets):
        check_root(entry.root, f"datasets[{i}].root")
        for imb in entry.imbalance_factors:
            label = entry.name + (f" IF {imb:g}" if imb is not None else "") + \
                "".join(f", {k}={v}" for k, v in sorted(entry.options.items()))
            n = _train_size(entry, imb, f"datasets[{i}] ({label})")
            for recipe in ("teacher_train", "student_train"):
                bs = getattr(cfg, recipe).batch_size
                if bs > n:
                    raise ConfigError(f"{recipe}.batch_size: {bs} is larger than the training split of {label} "
                                      f"({n} images), so no full batch fits an epoch; use batch_size <= {n}")


def _train_size(entry: DatasetEntry, imb: Optional[float], where: str) -> int:
    """The number of images in ``entry``'s training split at imbalance ``imb``; a build error names ``where``."""
    import datasets as ds

    kw = {} if imb is None else {"imbalance_factor": imb}
    try:
        train = ds.build_dataset(entry.name, root=entry.root, split="train", seed=entry.data_seed, **kw,
                                 **entry.options)
    except (OSError, ValueError, TypeError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise ConfigError(f"{where}: {' '.join(str(msg).split())}") from None
    return len(train)

