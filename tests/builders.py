"""Fixture builders shared by the test files: small dataset trees written in the official formats (CIFAR
pickles, ``path label`` split files over JPEGs, Fashion-MNIST IDX files). Import them as ``from builders import``."""
import dataclasses
import gzip
import pickle
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from datasets import txt_split

CIFAR_LAYOUT = {  # name -> (folder, classes, train files, test file, meta file, label key, n_max)
    "cifar10-lt": ("cifar-10-batches-py", 10, [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                   "batches.meta", "labels", 5000),
    "cifar100-lt": ("cifar-100-python", 100, ["train"], "test", "meta", "fine_labels", 500),
}


def ds_write_cifar(root: Path, name: str, per_class_train: int, per_class_test: int, bytes_keys: bool = False,
                   protocol: int = pickle.HIGHEST_PROTOCOL, seed: int = 0,
                   train_labels: Optional[np.ndarray] = None) -> Path:
    """Write ``root/<folder>/`` like the official extract (random pixels, index-tagged rows); returns the folder.

    The official files are Python 2 pickles (``protocol=2``, ``bytes_keys``-like once decoded);
    the big fixtures use the newest protocol only because it writes and loads ~10x faster.
    ``train_labels`` replaces the random train labels (e.g. the golden fixture's synthetic targets).
    """
    folder, classes, train_files, test_file, meta_file, label_key, _ = CIFAR_LAYOUT[name]
    out = root / folder
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)

    def split(per_class, labels=None):
        if labels is None:
            labels = rng.permutation(np.repeat(np.arange(classes), per_class))
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        data[:, :4] = np.arange(len(labels), dtype="<u4").view(np.uint8).reshape(-1, 4)
        return data, labels

    def dump(path, data, labels):
        obj = {key("batch_label"): "fixture", key(label_key): labels.tolist(), key("data"): data}
        if name == "cifar100-lt":
            obj[key("coarse_labels")] = (labels // 5).tolist()
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)

    data, labels = split(per_class_train, train_labels)
    chunks = zip(np.array_split(data, len(train_files)), np.array_split(labels, len(train_files)))
    for fname, (d, lab) in zip(train_files, chunks):
        dump(out / fname, d, lab)
    data, labels = split(per_class_test)
    dump(out / test_file, data, labels)
    with open(out / meta_file, "wb") as f:
        pickle.dump({key("label_names" if name == "cifar10-lt" else "fine_label_names"):
                     [f"c{i}" for i in range(classes)]}, f, protocol=protocol)
    return out


def original_index(images: torch.Tensor) -> np.ndarray:
    """The split index each ``ds_write_cifar`` image was tagged with."""
    return images[:, 0, 0, :4].contiguous().numpy().view("<u4").ravel().astype(np.int64)


def ds_write_jpeg(path: Path, color: Tuple[int, int, int], mode: str = "RGB") -> None:
    """A tiny solid-colour JPEG (or other mode) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (12, 10), color if mode == "RGB" else color[0]).save(path, format="JPEG")


def ds_write_split(path: Path, rows: List[Tuple[str, int]], trailer: str = "\n") -> Path:
    """A split file of ``relative/path label`` lines at ``path``, ending with ``trailer``."""
    path.write_text("\n".join(f"{p} {label}" for p, label in rows) + trailer)
    return path


def ds_write_small_places(root: Path, monkeypatch) -> List[Tuple[str, int]]:
    """A Places-LT tree under ``root`` (3 good JPEGs shared by all lines) that satisfies 'published' sizes patched
    down to it: train max 3 / min 1 (367 lines), val/test 1 per class. Returns the train rows."""
    for i in range(3):
        ds_write_jpeg(root / f"data_256/img{i}.jpg", (i, i, i))
    train = [(f"data_256/img{c % 3}.jpg", c) for c in range(365)] + [("data_256/img0.jpg", 0)] * 2
    evals = [(f"data_256/img{c % 3}.jpg", c) for c in range(365)]
    for split, rows in (("train", train), ("val", evals), ("test", evals)):
        ds_write_split(root / f"Places_LT_{split}.txt", rows)
    small = dataclasses.replace(txt_split.LAYOUTS["places-lt"], sizes={"train": 367, "val": 365, "test": 365},
                                per_class={"val": 1, "test": 1}, train_max=3, train_min=1)
    monkeypatch.setitem(txt_split.LAYOUTS, "places-lt", small)
    return train


def ds_write_idx(path: Path, array: np.ndarray, shape: Optional[Sequence[int]] = None) -> Path:
    """A uint8 IDX file at ``path`` (gzipped if the name ends in ``.gz``): ``shape`` in the header (default: the
    array's, so a different one writes a damaged file), then the array's bytes."""
    header = bytes([0, 0, 0x08, len(shape or array.shape)]) + np.array(shape or array.shape, ">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as g:
            g.write(data)
    else:
        path.write_bytes(data)
    return path
