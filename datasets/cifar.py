"""``cifar10-lt`` / ``cifar100-lt``: CIFAR with the exponential long-tail profile (n_max 5000 / 500).

The train subset is LDAM-DRW's ``IMBALANCECIFAR10/100(rand_number=seed)`` image for image (see
``datasets.longtail.ldam_subsample``), the subset BKD and most long-tailed KD papers train on; kept
in file order. ``root`` holds torchvision's extracted ``cifar-10-batches-py/`` or ``cifar-100-python/``. The
pickles are read directly (whatever their checksum, so tests can write small fixtures in the
same format) and cached in-process; ``verify`` compares checksums with the official release.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import register_dataset
from .base import (resolve_n_max, DatasetInfo, InMemoryLTDataset, PathLike, VerifyReport, build_in_memory, check_split,
                   file_key, resolve_root, resolve_imbalance_factor)
from .longtail import describe_profile, exponential_profile, ldam_subsample

__all__ = ["CIFAR10_INFO", "CIFAR100_INFO", "CifarLayout", "LAYOUTS", "locate_cifar", "load_cifar",
           "build_cifar10_lt", "build_cifar100_lt", "verify_cifar", "download_cifar"]


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant lives inside ``root`` and what its official files are."""

    folder: str
    url: str
    files: Dict[str, Tuple[str, ...]]
    meta: str
    label_key: str
    n_max: int
    md5: Dict[str, str]  # official checksums (as in torchvision.datasets.CIFAR10/CIFAR100)
    archive_md5: str = ""  # of the .tar.gz at ``url`` (torchvision's CIFAR10/CIFAR100.tgz_md5)


LAYOUTS: Dict[str, CifarLayout] = {
    "cifar10-lt": CifarLayout(
        folder="cifar-10-batches-py", url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        meta="batches.meta", label_key="labels", n_max=5000,
        md5={"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
             "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
             "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
             "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"},
        archive_md5="c58f30108f718f92721af3b95e74349a"),
    "cifar100-lt": CifarLayout(
        folder="cifar-100-python", url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        files={"train": ("train",), "test": ("test",)}, meta="meta", label_key="fine_labels", n_max=500,
        md5={"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
             "meta": "7973b15100ade9c7d40fb424638fde48"},
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85"),
}

CIFAR10_INFO = DatasetInfo(name="cifar10-lt", num_classes=10, in_chans=3, image_size=32,
                           mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), in_memory=True,
                           crop_padding=4, splits=("train", "test"), default_imbalance_factor=100,
                           default_root="cifar")
CIFAR100_INFO = DatasetInfo(name="cifar100-lt", num_classes=100, in_chans=3, image_size=32,
                            mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), in_memory=True,
                            crop_padding=4, splits=("train", "test"), default_imbalance_factor=100,
                            default_root="cifar")
_INFOS = {"cifar10-lt": CIFAR10_INFO, "cifar100-lt": CIFAR100_INFO}
PUBLISHED_TOTALS = {"cifar10-lt": {100: 12406, 50: 13996, 10: 20431},
                    "cifar100-lt": {100: 10847, 50: 12608, 10: 19573}}


def locate_cifar(name: str, root: Optional[PathLike], split: str) -> List[Path]:
    """Paths of ``split``'s pickles: in ``root/<folder>`` (or ``root`` itself); FileNotFoundError if any is missing."""
    layout, base = LAYOUTS[name], resolve_root(root, _INFOS[name])
    wanted = layout.files[split]
    candidates = [base / layout.folder, base]
    for folder in candidates:
        if all((folder / f).is_file() for f in wanted):
            return [folder / f for f in wanted]
    folder = next((c for c in candidates if c.is_dir() and any((c / f).exists() for f in wanted)), candidates[0])
    missing = [f for f in wanted if not (folder / f).is_file()]
    raise FileNotFoundError(
        f"{name}: {split} files {', '.join(missing)} missing in {folder} (looked in {candidates[0]} and {base}); "
        f"download {layout.url} and extract it into {base} (it creates {layout.folder}/; `python -m benchmark "
        f"prepare --dataset {name} --download --root {base}` does both), or pass --root DIR holding {layout.folder}/")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as err:  # truncated / not a pickle
        raise ValueError(f"{path}: cannot unpickle CIFAR batch ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


@functools.lru_cache(maxsize=4)
def _load_cached(keys: Tuple[Tuple[str, int, int], ...], label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for key in keys:
        batch = _unpickle(Path(key[0]))
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{key[0]}: CIFAR batch without 'data'/'{label_key}' (keys: {sorted(batch)})")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch[label_key]):
            raise ValueError(f"{key[0]}: 'data' is {data.shape}, expected (N, 3072) matching "
                             f"{len(batch[label_key])} labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    images_np, labels_np = np.concatenate(images), np.concatenate(labels)
    images_np.flags.writeable = False
    labels_np.flags.writeable = False
    return images_np, labels_np


def load_cifar(name: str, root: Optional[PathLike], split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of the full ``split`` (read-only, cached)."""
    paths = locate_cifar(name, root, split)
    images, labels = _load_cached(tuple(file_key(p) for p in paths), LAYOUTS[name].label_key)
    num_classes = _INFOS[name].num_classes
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name}: {split} labels outside [0, {num_classes}) in {paths[0].parent}")
    return images, labels


def _build(name: str, root: Optional[PathLike], split: str, imbalance_factor: Optional[float], seed: int,
           transform: Optional[Callable], n_max: Optional[int] = None) -> InMemoryLTDataset:
    info = _INFOS[name]
    check_split(info, split)
    imbalance_factor = resolve_imbalance_factor(info, imbalance_factor)
    images, labels = load_cifar(name, root, split)
    n_max = resolve_n_max(info, LAYOUTS[name].n_max, n_max)
    if split != "train":
        return build_in_memory(info, split, images, labels, n_max, imbalance_factor, seed, transform, root)
    counts = exponential_profile(n_max, info.num_classes, imbalance_factor)
    try:
        idx = ldam_subsample(labels, counts, seed)
    except ValueError as err:
        raise ValueError(f"{name}: {err} (is the {split} data complete?)") from None
    return InMemoryLTDataset(info, split, images[idx], labels[idx], transform, imbalance_factor, seed, root)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _class_count_problems(name: str, folder: Path, missing: List[str]) -> List[str]:
    """Per split whose files are all present: why it does not load, or why its class counts differ from n_max
    per class (train) or n_max / 5 per class (test)."""
    layout, info = LAYOUTS[name], _INFOS[name]
    problems: List[str] = []
    for split in info.splits:
        if any(f in missing for f in layout.files[split]):
            continue
        try:
            _, labels = load_cifar(name, folder, split)
        except ValueError as err:
            problems.append(str(err))
            continue
        counts = np.bincount(labels, minlength=info.num_classes).tolist()
        per_class = layout.n_max if split == "train" else layout.n_max // 5
        if counts != [per_class] * info.num_classes:
            problems.append(f"{split}: class counts min {min(counts)} max {max(counts)} (total {sum(counts):,}), "
                            f"expected {per_class} per class ({per_class * info.num_classes:,} images)")
    return problems


def _published_profile_notes(name: str) -> List[str]:
    """One ``train`` note per published imbalance factor: the profile's counts, and the published total where
    it differs from the profile's."""
    layout, info = LAYOUTS[name], _INFOS[name]
    notes: List[str] = []
    for imb, total in PUBLISHED_TOTALS[name].items():
        counts = exponential_profile(layout.n_max, info.num_classes, imb)
        notes.append("train " + describe_profile(counts, imb) + ("" if sum(counts) == total else
                                                                  f" (published: {total:,})"))
    return notes


def verify_cifar(name: str, root: Optional[PathLike]) -> VerifyReport:
    """Check presence, shapes, per-class counts (n_max per class train, balanced test) and official checksums."""
    layout, info, base = LAYOUTS[name], _INFOS[name], resolve_root(root, _INFOS[name])
    problems: List[str] = []
    notes: List[str] = []
    wanted = [f for split in info.splits for f in layout.files[split]] + [layout.meta]
    folder = next((c for c in (base / layout.folder, base) if (c / wanted[0]).is_file()), base / layout.folder)
    missing = [f for f in wanted if not (folder / f).is_file()]
    if missing:
        problems.append(f"{name}: {', '.join(missing)} missing in {folder}; download {layout.url} and extract it "
                        f"into {base} (it creates {layout.folder}/), or run `python -m benchmark prepare --dataset "
                        f"{name} --download --root {base}`")
    problems += _class_count_problems(name, folder, missing)
    differing = [f for f in wanted if f not in missing and _md5(folder / f) != layout.md5[f]]
    if differing:
        notes.append(f"md5 of {', '.join(differing)} differs from the official release ({layout.url}): the files "
                     f"load, but results are not comparable to published numbers")
    if not problems:
        notes.append(f"files found in {folder}")
        notes += _published_profile_notes(name)
    return VerifyReport(ok=not problems, problems=problems, notes=notes, name=name, root=str(base))


def download_cifar(name: str, root: Optional[PathLike]) -> Path:
    """Fetch the official archive into ``root`` (None: the family default) with torchvision's downloader
    (md5-checked) and extract it, unless every file is there already; returns the root."""
    layout, base = LAYOUTS[name], resolve_root(root, _INFOS[name])
    wanted = [f for files in layout.files.values() for f in files] + [layout.meta]
    if any(all((folder / f).is_file() for f in wanted) for folder in (base / layout.folder, base)):
        return base
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(layout.url, download_root=str(base), md5=layout.archive_md5,
                                     remove_finished=True)
    except Exception as err:  # offline, proxy, disk full, checksum: one line naming the URL
        archive = base / os.path.basename(layout.url)
        why = (f"md5 of {archive} is not the official {layout.archive_md5}: a broken or altered download; run the "
               f"command again" if archive.is_file() and _md5(archive) != layout.archive_md5
               else f"{type(err).__name__}: {err}")
        raise RuntimeError(f"{name}: downloading {layout.url} into {base} failed ({why}); alternatively download it "
                           f"by hand and extract it into {base}") from None
    return base


@register_dataset("cifar10-lt", info=CIFAR10_INFO, verify=functools.partial(verify_cifar, "cifar10-lt"),
                  download=functools.partial(download_cifar, "cifar10-lt"))
def build_cifar10_lt(root: Optional[PathLike] = None, split: str = "train", imbalance_factor: Optional[float] = None,
                     seed: int = 0, transform: Optional[Callable] = None, n_max: Optional[int] = None) -> InMemoryLTDataset:
    """CIFAR-10-LT: train = LDAM-DRW's seeded exponential subset (IF 100/50/10 -> 12,406/13,996/20,431), test = 10k."""
    return _build("cifar10-lt", root, split, imbalance_factor, seed, transform, n_max)


@register_dataset("cifar100-lt", info=CIFAR100_INFO, verify=functools.partial(verify_cifar, "cifar100-lt"),
                  download=functools.partial(download_cifar, "cifar100-lt"))
def build_cifar100_lt(root: Optional[PathLike] = None, split: str = "train", imbalance_factor: Optional[float] = None,
                      seed: int = 0, transform: Optional[Callable] = None, n_max: Optional[int] = None) -> InMemoryLTDataset:
    """CIFAR-100-LT: train = LDAM-DRW's seeded exponential subset (IF 100/50/10 -> 10,847/12,608/19,573), test = 10k."""
    return _build("cifar100-lt", root, split, imbalance_factor, seed, transform, n_max)
