"""``fmnist-lt``: Fashion-MNIST (10 classes, 28x28 gray) with the exponential long-tail profile, n_max 6000.

The four IDX files are parsed with numpy straight from their ``.gz`` (no torchvision dataset
object), and cached in-process, so the embedded default suite loads in a fraction of a second.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import register_dataset
from .base import (resolve_n_max, DatasetInfo, InMemoryLTDataset, PathLike, VerifyReport, build_in_memory, check_split,
                   file_key, resolve_imbalance_factor, resolve_root)
from .longtail import describe_profile, exponential_profile

__all__ = ["INFO", "N_MAX", "DEBIAN_DIR", "locate_fashion_mnist", "read_idx", "load_fashion_mnist",
           "build_fmnist_lt", "verify_fmnist_lt", "download_fmnist"]

N_MAX = 6000
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {"train": 60000, "test": 10000}
OFFICIAL_MD5 = {  # of the .gz files as released (torchvision.datasets.FashionMNIST.resources)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

INFO = DatasetInfo(name="fmnist-lt", num_classes=10, in_chans=1, image_size=28, mean=(0.2860,), std=(0.3530,),
                   in_memory=True, crop_padding=2, splits=("train", "test"), default_imbalance_factor=100,
                   default_root="fmnist")


def _stems() -> List[str]:
    return [stem for pair in FILES.values() for stem in pair]


def _search_dirs(root: Optional[PathLike]) -> List[Path]:
    base = resolve_root(root, INFO)  # no root: the family's default folder (where `prepare --download` puts them)
    # Debian's copy is a fallback only when no root is given: an explicit root that lacks the files must fail,
    # not silently train on (and record) another folder
    return [base, base / "FashionMNIST" / "raw"] + ([DEBIAN_DIR] if root is None else [])


def _find_in(folder: Path) -> Optional[Dict[str, Path]]:
    """Map stem -> file (``.gz`` preferred, else torchvision's extracted copy) if all four are in ``folder``."""
    found = {}
    for stem in _stems():
        for cand in (folder / f"{stem}.gz", folder / stem):
            if cand.is_file():
                found[stem] = cand
                break
        else:
            return None
    return found


def _download(root: Path) -> None:
    """Let torchvision fetch the four files into ``root/FashionMNIST/raw`` (needs internet)."""
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(str(root), train=train, download=True)


def locate_fashion_mnist(root: Optional[PathLike] = None, download: bool = True) -> Dict[str, Path]:
    """Find the IDX files: ``root``, ``root/FashionMNIST/raw``, the Debian location (only when ``root`` is None),
    else torchvision download."""
    dirs = _search_dirs(root)
    for folder in dirs:
        found = _find_in(folder)
        if found:
            return found
    target = resolve_root(root, INFO)
    why = "download disabled"
    if download:
        try:
            _download(target)
            found = _find_in(target / "FashionMNIST" / "raw")
            if found:
                return found
            why = f"the torchvision download into {target} left no files"
        except Exception as err:  # offline, proxy, disk: any failure ends in the same advice
            why = f"the torchvision download into {target} failed ({type(err).__name__}: {err})"
    names = ", ".join(f"{s}.gz" for s in _stems())
    where = ", ".join(str(d) for d in dirs)
    msg = (f"fmnist-lt: Fashion-MNIST files {names} not found in {where}; {why}; install them with "
           f"`apt-get install dataset-fashion-mnist` or pass --root DIR holding the four files")
    raise FileNotFoundError(" ".join(msg.split()))


def read_idx(path: PathLike) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a read-only uint8 array; cached per file version."""
    return _read_idx_cached(file_key(path))


@functools.lru_cache(maxsize=8)
def _read_idx_cached(key: Tuple[str, int, int]) -> np.ndarray:
    path = key[0]
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(f"{path}: IDX payload has {len(raw) - header} bytes, header says shape {shape}")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return arr  # frombuffer over bytes is read-only: the cache cannot be mutated by callers


def load_fashion_mnist(split: str, root: Optional[PathLike] = None,
                       download: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of the full ``split`` (read-only, cached)."""
    files = locate_fashion_mnist(root, download)
    img_stem, lbl_stem = FILES[split]
    images, labels = read_idx(files[img_stem]), read_idx(files[lbl_stem])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"fmnist-lt: {files[img_stem]} {images.shape} and {files[lbl_stem]} {labels.shape} "
                         f"do not match")
    return images[:, None], labels.astype(np.int64)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def download_fmnist(root: Optional[PathLike]) -> Path:
    """Let torchvision fetch and md5-check the four files into ``root/FashionMNIST/raw`` (None: the family
    default), unless the builder finds them already (with no root, also the Debian package); returns their folder."""
    try:
        return next(iter(locate_fashion_mnist(root, download=False).values())).parent
    except FileNotFoundError:
        pass
    target = resolve_root(root, INFO)
    try:
        _download(target)
    except Exception as err:  # offline, proxy, disk full, checksum: one line naming the source
        from torchvision.datasets import FashionMNIST

        raise RuntimeError(f"fmnist-lt: downloading Fashion-MNIST from {FashionMNIST.mirrors[0]} into {target} failed "
                           f"({type(err).__name__}: {err}); `apt-get install dataset-fashion-mnist` installs it "
                           f"offline") from None
    return next(iter(locate_fashion_mnist(root, download=False).values())).parent


def _split_problems(split: str, n: int, images: np.ndarray, labels: np.ndarray) -> List[str]:
    """Why one loaded split is off: images not 28x28, not ``n`` of them, labels out of range or unbalanced."""
    problems: List[str] = []
    if images.shape[1:] != (1, 28, 28):
        problems.append(f"{split}: images are {images.shape[2:]}, expected 28x28")
    if len(labels) != n:
        problems.append(f"{split}: {len(labels):,} images, expected {n:,}")
    counts = np.bincount(labels, minlength=INFO.num_classes)
    if len(counts) != INFO.num_classes or labels.min() < 0:
        problems.append(f"{split}: labels outside [0, {INFO.num_classes})")
    elif len(set(counts.tolist())) != 1:
        problems.append(f"{split}: class counts {counts.tolist()} are not balanced")
    return problems


def verify_fmnist_lt(root: Optional[PathLike] = None) -> VerifyReport:
    """Check the four files (found without downloading): sizes 60k/10k, 6000/1000 per class, 28x28, checksums."""
    problems: List[str] = []
    notes: List[str] = []
    try:
        files = locate_fashion_mnist(root, download=False)
    except FileNotFoundError as err:
        return VerifyReport(ok=False, problems=[str(err)], name=INFO.name, root=str(root or ""))
    notes.append(f"files found in {next(iter(files.values())).parent}")
    for split, n in SIZES.items():
        try:
            images, labels = load_fashion_mnist(split, root, download=False)
        except ValueError as err:
            problems.append(str(err))
            continue
        problems += _split_problems(split, n, images, labels)
    mismatched = [p.name for p in files.values() if p.name in OFFICIAL_MD5 and _md5(p) != OFFICIAL_MD5[p.name]]
    if mismatched:
        notes.append(f"md5 of {', '.join(mismatched)} differs from the official archives (recompressed copies, "
                     f"e.g. the Debian package, are fine when the counts above check out)")
    if not problems:
        notes.append("train " + describe_profile(exponential_profile(N_MAX, INFO.num_classes, 100), 100))
    return VerifyReport(ok=not problems, problems=problems, notes=notes, name=INFO.name, root=str(root or ""))


@register_dataset("fmnist-lt", info=INFO, verify=verify_fmnist_lt, download=download_fmnist)
def build_fmnist_lt(root: Optional[PathLike] = None, split: str = "train", imbalance_factor: Optional[float] = None,
                    seed: int = 0, transform: Optional[Callable] = None, download: bool = True,
                    n_max: Optional[int] = None) -> InMemoryLTDataset:
    """Fashion-MNIST-LT: train = seeded exponential subset (IF 100 -> 14,886 images), test = the 10k test set."""
    check_split(INFO, split)
    imbalance_factor = resolve_imbalance_factor(INFO, imbalance_factor)
    images, labels = load_fashion_mnist(split, root, download)
    return build_in_memory(INFO, split, images, labels, resolve_n_max(INFO, N_MAX, n_max), imbalance_factor, seed,
                           transform, root)
