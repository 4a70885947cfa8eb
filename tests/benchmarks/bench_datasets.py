"""pytest-benchmark timings for the dataset layer (not collected by default: run this file explicitly).

    python -m pytest tests/benchmarks/bench_datasets.py --benchmark-enable
"""
from pathlib import Path

import numpy as np
import pytest

import datasets
from datasets import fashion_mnist as fm
from datasets import txt_split

IMAGENET_LT_TRAIN_LINES = 115846


def _cold_fmnist() -> None:
    fm._read_idx_cached.cache_clear()


@pytest.mark.skipif(not (fm.DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="no Fashion-MNIST")
def test_fmnist_lt_cold_load(benchmark):
    """Parse the gzipped IDX files and build the IF-100 train set in memory (target: well under 5 s)."""

    def load():
        ds = datasets.build_dataset("fmnist-lt")
        return ds.as_tensors()

    images, _ = benchmark.pedantic(load, setup=_cold_fmnist, rounds=5, iterations=1)
    assert images.shape == (14886, 1, 28, 28)
    if benchmark.stats:
        assert benchmark.stats.stats.max < 5.0


@pytest.mark.skipif(not (fm.DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="no Fashion-MNIST")
def test_fmnist_lt_warm_build(benchmark):
    """Build the IF-100 train set again once the arrays are cached in-process (every run after the first)."""
    datasets.build_dataset("fmnist-lt")
    ds = benchmark(datasets.build_dataset, "fmnist-lt", seed=1)
    assert len(ds) == 14886


@pytest.fixture(scope="module")
def ds_imagenet_lt_sized_split(tmp_path_factory) -> Path:
    """A split file with ImageNet-LT's 115,846 lines, real path style, 1000 classes (max 1280, min 5)."""
    shape = 1280 * (5 / 1280) ** (np.arange(1000) / 999)
    scale = (IMAGENET_LT_TRAIN_LINES - 1280 - 5) / shape[1:-1].sum()
    counts = np.concatenate([[1280], np.maximum(5, np.round(shape[1:-1] * scale)), [5]]).astype(int)
    diff = IMAGENET_LT_TRAIN_LINES - counts.sum()
    counts[1:1 + abs(diff)] += np.sign(diff)
    lines = [f"train/n{c:08d}/n{c:08d}_{k}.JPEG {c}" for c in range(1000) for k in range(counts[c])]
    path = tmp_path_factory.mktemp("splits") / "ImageNet_LT_train.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parse_imagenet_lt_split_file(benchmark, ds_imagenet_lt_sized_split):
    """Parse and validate a 115,846-line split file, uncached (target: well under 2 s)."""
    paths, labels = benchmark.pedantic(txt_split.parse_split_file, args=(ds_imagenet_lt_sized_split, 1000),
                                       setup=txt_split._parse_cached.cache_clear, rounds=10, iterations=1)
    assert len(paths) == IMAGENET_LT_TRAIN_LINES and max(labels) == 999
    if benchmark.stats:
        assert benchmark.stats.stats.max < 2.0


def test_build_imagenet_lt_train(benchmark, ds_imagenet_lt_sized_split):
    """Build the ImageNet-LT train dataset object from the split file, uncached (parse + targets + counts)."""
    root = ds_imagenet_lt_sized_split.parent
    ds = benchmark.pedantic(datasets.build_dataset, args=("imagenet-lt",), kwargs={"root": root},
                            setup=txt_split._parse_cached.cache_clear, rounds=10, iterations=1)
    assert len(ds) == IMAGENET_LT_TRAIN_LINES and max(ds.class_counts) == 1280 and min(ds.class_counts) == 5
