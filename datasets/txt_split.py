"""``imagenet-lt`` / ``places-lt``: image trees listed by the standard OLTR split files.

Each split file has one ``relative/path label`` per line, paths relative to ``root``. The
imbalance is fixed by the file (``imbalance_factor`` must stay None); images load lazily as RGB.
Neither can be downloaded by ltkd-bench (the images come under their owners' terms): ``verify``
checks a tree obtained by hand, down to images that exist but do not decode.
"""
from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

from . import register_dataset
from .base import (DatasetInfo, DownloadUnavailable, LTDataset, PathLike, VerifyReport, check_split, file_key,
                   resolve_root, resolve_imbalance_factor)
from .longtail import describe_profile

__all__ = ["IMAGENET_LT_INFO", "PLACES_LT_INFO", "TxtLayout", "LAYOUTS", "parse_split_file", "locate_split_file",
           "TxtSplitDataset", "build_imagenet_lt", "build_places_lt", "verify_txt_split", "decode_problem",
           "find_undecodable", "no_download"]

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_OLTR = "https://github.com/zhmiao/OpenLongTailRecognition-OLTR"


@dataclass(frozen=True)
class TxtLayout:
    """Split-file prefix, published sizes and where to get the files, for one split-file dataset."""

    prefix: str
    sizes: Dict[str, int]          # lines per split
    per_class: Dict[str, int]      # images per class of the balanced eval splits
    train_max: int
    train_min: int
    images_hint: str


LAYOUTS: Dict[str, TxtLayout] = {
    "imagenet-lt": TxtLayout(
        prefix="ImageNet_LT", sizes={"train": 115846, "val": 20000, "test": 50000}, per_class={"val": 20, "test": 50},
        train_max=1280, train_min=5,
        images_hint="the ImageNet 2012 train and val images (https://image-net.org) under ROOT so that the "
                    "paths in the files resolve (e.g. ROOT/train/n01440764/...)"),
    "places-lt": TxtLayout(
        prefix="Places_LT", sizes={"train": 62500, "val": 7300, "test": 36500}, per_class={"val": 20, "test": 100},
        train_max=4980, train_min=5,
        images_hint="the Places365-Standard 256x256 train and val images (http://places2.csail.mit.edu/download.html) "
                    "under ROOT so that the paths in the files resolve"),
}

IMAGENET_LT_INFO = DatasetInfo(name="imagenet-lt", num_classes=1000, in_chans=3, image_size=224, mean=_IMAGENET_MEAN,
                               std=_IMAGENET_STD, in_memory=False, crop_padding=0, splits=("train", "val", "test"),
                               default_imbalance_factor=None, default_root="imagenet")
PLACES_LT_INFO = DatasetInfo(name="places-lt", num_classes=365, in_chans=3, image_size=224, mean=_IMAGENET_MEAN,
                             std=_IMAGENET_STD, in_memory=False, crop_padding=0, splits=("train", "val", "test"),
                             default_imbalance_factor=None, default_root="places")
_INFOS = {"imagenet-lt": IMAGENET_LT_INFO, "places-lt": PLACES_LT_INFO}


def _how_to_get(name: str, root: Path, split_file_hint: bool = True) -> str:
    layout = LAYOUTS[name]
    tail = ", or pass split_file=PATH" if split_file_hint else ""
    return (f"get {layout.prefix}_{{train,val,test}}.txt from the OLTR release ({_OLTR}) into {root} and "
            f"{layout.images_hint.replace('ROOT', str(root))}{tail}")


def locate_split_file(name: str, root: Optional[PathLike], split: str, split_file: Optional[PathLike] = None) -> Path:
    """The split file: ``split_file`` if given (as is, else relative to root), else ``root/<Prefix>_<split>.txt``."""
    base = resolve_root(root, _INFOS[name])
    if split_file is not None:
        candidates = [Path(split_file), base / split_file]
    else:
        fname = f"{LAYOUTS[name].prefix}_{split}.txt"
        candidates = [base / fname, base / LAYOUTS[name].prefix / fname]
    for cand in candidates:
        if cand.is_file():
            return cand
    looked = " or ".join(dict.fromkeys(str(c) for c in candidates))
    raise FileNotFoundError(f"{name}: {split} split file not found (looked for {looked}); {_how_to_get(name, base)}")


def parse_split_file(path: PathLike, num_classes: int) -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
    """Parse ``relative/path label`` lines (blank lines skipped); ValueError names the file and line."""
    return _parse_cached(file_key(path), num_classes, str(path))


@functools.lru_cache(maxsize=8)
def _parse_cached(key: Tuple[str, int, int], num_classes: int, shown: str) -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
    with open(key[0], "r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    paths: List[str] = []
    labels: List[int] = []
    add_path, add_label = paths.append, labels.append
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if len(parts) != 2:
            if not parts:
                continue
            raise ValueError(f"{shown}, line {lineno}: expected 'relative/path label', got {line.strip()!r}")
        try:
            label = int(parts[1])
        except ValueError:
            raise ValueError(f"{shown}, line {lineno}: label {parts[1]!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise ValueError(f"{shown}, line {lineno}: label {label} outside [0, {num_classes}) "
                             f"(C = {num_classes} classes)")
        add_path(parts[0].lstrip("/"))
        add_label(label)
    return tuple(paths), tuple(labels)


class TxtSplitDataset(LTDataset):
    """Images listed by a split file, loaded lazily from ``root`` as RGB PIL images."""

    def __init__(self, info: DatasetInfo, split: str, root: Path, paths: Sequence[str], targets: Sequence[int],
                 split_file: Path, transform: Optional[Callable] = None) -> None:
        super().__init__(info, split, targets, transform, None, 0, root)
        self.paths: List[str] = list(paths)
        self.split_file = str(split_file)

    def load_image(self, index: int) -> Image.Image:
        full = os.path.join(self.root, self.paths[index])
        try:
            with Image.open(full) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{self.info.name}: image {full} listed in {self.split_file} not found; check it with "
                f"`python -m benchmark prepare --dataset {self.info.name} --root {self.root}`") from None


def _build(name: str, root: Optional[PathLike], split: str, imbalance_factor: Optional[float], seed: int,
           transform: Optional[Callable], split_file: Optional[PathLike]) -> TxtSplitDataset:
    info = _INFOS[name]
    check_split(info, split)
    resolve_imbalance_factor(info, imbalance_factor)
    path = locate_split_file(name, root, split, split_file)
    paths, targets = parse_split_file(path, info.num_classes)
    base = resolve_root(root, info)
    return TxtSplitDataset(info, split, base, paths, targets, path, transform)


def decode_problem(path: str) -> Optional[str]:
    """None if PIL decodes the image at ``path``, else why not in a few words (empty file, not an image, truncated)."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))  # JPEG: decode at 1/8 scale
            img.load()  # still reads every byte: a truncated file fails here
    except UnidentifiedImageError:
        return "empty file" if os.path.getsize(path) == 0 else "not an image"
    except Exception as err:  # PIL reports damage as OSError, SyntaxError, ValueError, DecompressionBombError...
        text = str(err)
        return "truncated" if "truncated" in text.lower() else f"{type(err).__name__}: {text[:80]}"
    return None


def find_undecodable(paths: Sequence[str], workers: int = 8) -> Dict[str, str]:
    """``path -> reason`` for every image of ``paths`` that PIL cannot decode, checked by ``workers`` threads
    (PIL releases the GIL while decoding)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = list(pool.map(decode_problem, paths, chunksize=64))
    return {p: why for p, why in zip(paths, reasons) if why is not None}


def _listed(items: Sequence[str], max_listed: int) -> str:
    return ", ".join(items[:max_listed]) + (", ..." if len(items) > max_listed else "")


def _locate_splits(name: str, base: Path) -> Tuple[Dict[str, Path], List[str]]:
    """The split files found under ``base`` (by split), and one problem naming those that are absent."""
    layout, info = LAYOUTS[name], _INFOS[name]
    located: Dict[str, Path] = {}
    for split in info.splits:
        try:
            located[split] = locate_split_file(name, base, split)
        except FileNotFoundError:
            pass
    absent = [f"{layout.prefix}_{s}.txt" for s in info.splits if s not in located]
    if not absent:
        return located, []
    return located, [f"{name}: split files {', '.join(absent)} not found in {base} or {base / layout.prefix}; "
                     f"{_how_to_get(name, base, False)}"]


def _class_size_problem(name: str, split: str, path: Path, counts: List[int]) -> Optional[str]:
    """Why the per-class image counts of one split differ from the published ones (train: no empty class, the
    published max/min; eval splits: balanced at the published size), or None."""
    layout, num_classes = LAYOUTS[name], _INFOS[name].num_classes
    if split != "train":
        if len(set(counts)) != 1 or counts[0] != layout.per_class[split]:
            return (f"{path.name}: class sizes min {min(counts)} max {max(counts)}, expected "
                    f"{layout.per_class[split]} per class")
        return None
    empty = sum(1 for c in counts if c == 0)
    if empty:
        return f"{path.name}: {empty} of {num_classes} classes have no image"
    if (max(counts), min(counts)) != (layout.train_max, layout.train_min):
        return (f"{path.name}: class sizes max {max(counts)} min {min(counts)}, expected "
                f"max {layout.train_max} min {layout.train_min}")
    return None


def _check_split_files(name: str, located: Dict[str, Path]
                       ) -> Tuple[Dict[str, Tuple[Path, Tuple[str, ...]]], List[str], List[str]]:
    """Parse each located split file and check its line count and class sizes: ``split -> (file, image paths)``
    for those that parse, then the problems and the notes (the train profile) in split order."""
    layout, info = LAYOUTS[name], _INFOS[name]
    parsed: Dict[str, Tuple[Path, Tuple[str, ...]]] = {}
    problems: List[str] = []
    notes: List[str] = []
    for split, path in located.items():
        try:
            paths, targets = parse_split_file(path, info.num_classes)
        except ValueError as err:
            problems.append(str(err))
            continue
        parsed[split] = (path, paths)
        if len(paths) != layout.sizes[split]:
            problems.append(f"{path.name}: {len(paths):,} lines, expected {layout.sizes[split]:,}")
        counts = [0] * info.num_classes
        for t in targets:
            counts[t] += 1
        problem = _class_size_problem(name, split, path, counts)
        if problem:
            problems.append(problem)
        elif split == "train":
            notes.append(f"train {describe_profile(counts)}")
    return parsed, problems, notes


def _decode_present(base: Path, present: Sequence[str], workers: Optional[int]) -> Tuple[Dict[str, str], str]:
    """Decode the ``present`` images (paths relative to ``base``) in threads: ``path -> reason`` for those PIL
    cannot decode, and a note of how many were decoded, with how many threads, in how long."""
    workers = workers or min(8, os.cpu_count() or 1)
    t0 = time.perf_counter()
    found = find_undecodable([os.path.join(base, p) for p in present], workers)
    broken = {p: found[os.path.join(base, p)] for p in present if os.path.join(base, p) in found}
    note = (f"decoded {len(present):,} images with {workers} threads in {time.perf_counter() - t0:.1f} s"
            + (f": {len(broken):,} cannot be decoded" if broken else ""))
    return broken, note


def _image_problems(name: str, base: Path, path: Path, paths: Sequence[str], exists: Dict[str, bool],
                    broken: Dict[str, str], max_listed: int) -> List[str]:
    """The images split file ``path`` lists that are missing under ``base``, then those that cannot be decoded."""
    problems: List[str] = []
    missing = [p for p in paths if not exists[p]]
    if missing:
        problems.append(f"{path.name}: {len(missing):,} of {len(paths):,} images missing under {base} "
                        f"(first: {_listed(missing, max_listed)}); "
                        f"{LAYOUTS[name].images_hint.replace('ROOT', str(base))}")
    bad = [p for p in paths if p in broken]
    if bad:
        shown = [f"{p} ({broken[p]})" for p in bad]
        problems.append(f"{path.name}: {len(bad):,} of {len(paths):,} images under {base} cannot be decoded "
                        f"(first: {_listed(shown, max_listed)}); download those files again or replace them")
    return problems


def verify_txt_split(name: str, root: Optional[PathLike], max_listed: int = 5, decode: bool = True,
                     workers: Optional[int] = None) -> VerifyReport:
    """Check the three split files (sizes, train max/min, balanced eval splits) and every image they list:
    present, and (``decode``) decodable by PIL. At most ``max_listed`` file names are shown per problem."""
    base = resolve_root(root, _INFOS[name])
    if not base.is_dir():
        problems = [f"{base} is not a folder; {_how_to_get(name, base, False)}"]
        return VerifyReport(ok=False, problems=problems, name=name, root=str(base))
    located, problems = _locate_splits(name, base)
    parsed, split_problems, notes = _check_split_files(name, located)
    problems += split_problems
    unique = list(dict.fromkeys(p for _, paths in parsed.values() for p in paths))
    exists = {p: os.path.isfile(os.path.join(base, p)) for p in unique}
    broken: Dict[str, str] = {}
    if decode and unique:
        broken, note = _decode_present(base, [p for p in unique if exists[p]], workers)
        notes.append(note)
    for path, paths in parsed.values():
        problems += _image_problems(name, base, path, paths, exists, broken, max_listed)
    return VerifyReport(ok=not problems, problems=problems, notes=notes, name=name, root=str(base))


def no_download(name: str, root: PathLike) -> Path:
    """ImageNet-LT / Places-LT cannot be downloaded by ltkd-bench: raise ``DownloadUnavailable`` saying where to get them."""
    raise DownloadUnavailable(f"{name} cannot be downloaded by ltkd-bench (the images come under their owners' "
                              f"terms): {_how_to_get(name, Path(root), False)}; then run `python -m benchmark "
                              f"prepare --dataset {name} --root {root}`")


@register_dataset("imagenet-lt", info=IMAGENET_LT_INFO, verify=functools.partial(verify_txt_split, "imagenet-lt"),
                  download=functools.partial(no_download, "imagenet-lt"))
def build_imagenet_lt(root: Optional[PathLike] = None, split: str = "train", imbalance_factor: Optional[float] = None,
                      seed: int = 0, transform: Optional[Callable] = None,
                      split_file: Optional[PathLike] = None) -> TxtSplitDataset:
    """ImageNet-LT (1000 classes; train 115,846 / val 20,000 / test 50,000) from the OLTR split files."""
    return _build("imagenet-lt", root, split, imbalance_factor, seed, transform, split_file)


@register_dataset("places-lt", info=PLACES_LT_INFO, verify=functools.partial(verify_txt_split, "places-lt"),
                  download=functools.partial(no_download, "places-lt"))
def build_places_lt(root: Optional[PathLike] = None, split: str = "train", imbalance_factor: Optional[float] = None,
                    seed: int = 0, transform: Optional[Callable] = None,
                    split_file: Optional[PathLike] = None) -> TxtSplitDataset:
    """Places-LT (365 classes; train 62,500 / val 7,300 / test 36,500) from the OLTR split files."""
    return _build("places-lt", root, split, imbalance_factor, seed, transform, split_file)
