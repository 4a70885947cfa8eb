"""Shared pieces of every dataset family: ``DatasetInfo``, ``VerifyReport`` and the dataset classes."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .longtail import check_imbalance_factor, class_counts_of, exponential_profile, subsample_per_class

__all__ = ["DatasetInfo", "VerifyReport", "DownloadUnavailable", "LTDataset", "InMemoryLTDataset", "build_in_memory",
           "check_split", "resolve_imbalance_factor", "default_root", "resolve_root", "file_key", "PathLike"]

PathLike = Union[str, "os.PathLike[str]"]
DATA_ENV = "LTKD_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset that the harness needs before (or without) loading it."""

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    in_memory: bool
    crop_padding: int
    splits: Tuple[str, ...]
    default_imbalance_factor: Optional[float]
    # the family's folder under the data root ($LTKD_DATA or ./data), used whenever no root is given:
    # the one place `prepare`, `--download` and the suites take the default location from
    default_root: Optional[str] = None


@dataclass
class VerifyReport:
    """Outcome of ``verify_dataset``: ``ok`` is False when anything in ``problems`` must be fixed."""

    ok: bool
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    name: str = ""
    root: str = ""

    def summary(self) -> str:
        """Human-readable multi-line report (what ``python -m benchmark prepare`` prints)."""
        where = f" at {self.root}" if self.root else ""
        status = "OK" if self.ok else f"FAILED ({len(self.problems)} problem{'s' * (len(self.problems) != 1)})"
        lines = [f"{self.name or 'dataset'}{where}: {status}"]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class DownloadUnavailable(RuntimeError):
    """The dataset cannot be downloaded by ltkd-bench (licence or size): the message says where to get it."""


def default_root() -> Path:
    """The data root: ``$LTKD_DATA`` or ``./data`` (each family has its own folder below it)."""
    return Path(os.environ.get(DATA_ENV, "data")).expanduser()


def resolve_root(root: Optional[PathLike], info: Optional[DatasetInfo] = None) -> Path:
    """``root`` as a Path (``~`` expanded); when None, the family's folder ``default_root() / info.default_root``."""
    if root is not None:
        return Path(root).expanduser()
    return default_root() / info.default_root if info is not None and info.default_root else default_root()


def file_key(path: PathLike) -> Tuple[str, int, int]:
    """Cache key of a file: resolved path, mtime and size (a rewritten file is parsed again)."""
    st = os.stat(path)
    return str(Path(path).resolve()), st.st_mtime_ns, st.st_size


def check_split(info: DatasetInfo, split: str) -> str:
    """Return ``split`` if the dataset has it, else raise ValueError listing the allowed splits."""
    if split not in info.splits:
        raise ValueError(f"{info.name}: unknown split {split!r}; allowed splits: {', '.join(info.splits)}")
    return split


def resolve_imbalance_factor(info: DatasetInfo, imbalance_factor: Optional[float]) -> Optional[float]:
    """Default and validate the imbalance factor; fixed-split datasets (IF None) accept only None."""
    if info.default_imbalance_factor is None:
        if imbalance_factor is not None:
            raise ValueError(f"{info.name}: imbalance_factor must be None (the imbalance is fixed by the "
                             f"split file), got {imbalance_factor!r}")
        return None
    if imbalance_factor is None:
        return float(info.default_imbalance_factor)
    return check_imbalance_factor(imbalance_factor)


class LTDataset(Dataset):
    """Base class: ``targets``, ``class_counts`` (of this split), ``num_classes``, ``info``, ``transform``."""

    def __init__(self, info: DatasetInfo, split: str, targets: Sequence[int], transform: Optional[Callable] = None,
                 imbalance_factor: Optional[float] = None, seed: int = 0, root: Optional[PathLike] = None) -> None:
        self.info = info
        self.split = split
        self.num_classes = info.num_classes
        self.targets: List[int] = [int(t) for t in targets]
        self.class_counts: List[int] = class_counts_of(self.targets, info.num_classes)
        self.transform = transform
        self.imbalance_factor = imbalance_factor
        self.seed = seed
        self.root = None if root is None else str(root)

    def __len__(self) -> int:
        return len(self.targets)

    def load_image(self, index: int) -> Image.Image:
        """The unaugmented PIL image of sample ``index``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        img = self.load_image(index)
        return (img if self.transform is None else self.transform(img)), self.targets[index]

    def __repr__(self) -> str:
        imb = "" if self.imbalance_factor is None else f", imbalance_factor={self.imbalance_factor:g}"
        return f"{type(self).__name__}({self.info.name!r}, split={self.split!r}, n={len(self)}{imb})"


class InMemoryLTDataset(LTDataset):
    """A dataset whose uint8 images (N, C, H, W) live in one numpy array (Fashion-MNIST, CIFAR)."""

    def __init__(self, info: DatasetInfo, split: str, images: np.ndarray, targets: np.ndarray,
                 transform: Optional[Callable] = None, imbalance_factor: Optional[float] = None, seed: int = 0,
                 root: Optional[PathLike] = None) -> None:
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(targets):
            raise ValueError(f"{info.name}: expected uint8 images (N, C, H, W) matching {len(targets)} targets, "
                             f"got {images.dtype} {images.shape}")
        super().__init__(info, split, targets.tolist(), transform, imbalance_factor, seed, root)
        self.images = images
        self._targets_np = np.asarray(targets, dtype=np.int64)

    def load_image(self, index: int) -> Image.Image:
        img = self.images[index]
        if img.shape[0] == 1:
            return Image.fromarray(img[0])  # uint8 2-D -> mode "L"
        return Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))

    def as_tensors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """All images as a uint8 tensor (N, C, H, W) and targets as int64 (N,), sharing this dataset's memory."""
        return torch.from_numpy(self.images), torch.from_numpy(self._targets_np)


def resolve_n_max(info: DatasetInfo, default: int, n_max: Optional[int]) -> int:
    """The head-class size of the train profile: the dataset's own unless ``n_max`` shrinks it (fast protocols)."""
    if n_max is None:
        return default
    if isinstance(n_max, bool) or not isinstance(n_max, int) or not 1 <= n_max <= default:
        raise ValueError(f"{info.name}: n_max must be an integer in 1..{default} (images of the head class), got {n_max!r}")
    return n_max


def build_in_memory(info: DatasetInfo, split: str, images: np.ndarray, labels: np.ndarray, n_max: int,
                    imbalance_factor: Optional[float], seed: int, transform: Optional[Callable],
                    root: Optional[PathLike]) -> InMemoryLTDataset:
    """Train: the seeded exponential-profile subset (copied out of the cached arrays); eval splits: a full copy."""
    if split == "train":
        counts = exponential_profile(n_max, info.num_classes, imbalance_factor)
        try:
            idx = subsample_per_class(labels, counts, seed)
        except ValueError as err:
            raise ValueError(f"{info.name}: {err} (is the {split} data complete?)") from None
        images, labels = images[idx], labels[idx]
    else:
        imbalance_factor = None
        images, labels = images.copy(), labels.copy()
    return InMemoryLTDataset(info, split, images, labels.astype(np.int64, copy=False), transform,
                             imbalance_factor, seed, root)
