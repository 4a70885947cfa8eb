"""Fashion-MNIST-LT on the real data (Debian package dataset-fashion-mnist), plus lookup and error paths."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from builders import ds_write_idx
from datasets import fashion_mnist as fm
from datasets.longtail import exponential_profile

FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz"]
REAL = fm.DEBIAN_DIR
needs_real = pytest.mark.skipif(not all((REAL / f).is_file() for f in FILES),
                                reason=f"Fashion-MNIST not in {REAL} (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def ds_no_fmnist(monkeypatch, tmp_path):
    """No Debian copy and an offline torchvision download: the lookup has nowhere left to go."""
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")

    def offline(root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(fm, "_download", offline)


@needs_real
def test_lt_train_size_and_profile():
    ds = datasets.build_dataset("fmnist-lt")
    assert len(ds) == 14886 and ds.class_counts == exponential_profile(6000, 10, 100)
    assert ds.num_classes == 10 and ds.info.name == "fmnist-lt" and ds.imbalance_factor == 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images, targets = ds.as_tensors()
    assert images.shape == (14886, 1, 28, 28) and images.dtype == torch.uint8
    assert targets.shape == (14886,) and targets.dtype == torch.int64 and targets.tolist() == ds.targets
    img, label = ds[100]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (28, 28)
    assert label == ds.targets[100] and np.array_equal(np.asarray(img), images[100, 0].numpy())


@needs_real
def test_test_split_untouched():
    ds = datasets.build_dataset("fmnist-lt", split="test", imbalance_factor=50)
    assert len(ds) == 10000 and ds.class_counts == [1000] * 10 and ds.imbalance_factor is None


@needs_real
@pytest.mark.parametrize("imb,total", [(1, 60000), (10, sum(exponential_profile(6000, 10, 10)))])
def test_other_imbalance_factors(imb, total):
    assert len(datasets.build_dataset("fmnist-lt", imbalance_factor=imb)) == total


@needs_real
def test_seed_selects_subset():
    def images(seed):
        return datasets.build_dataset("fmnist-lt", seed=seed).as_tensors()[0]

    assert torch.equal(images(0), images(0))
    assert not torch.equal(images(0), images(1))


@needs_real
def test_transform_applied():
    ds = datasets.build_dataset("fmnist-lt", split="test", transform=datasets.default_transform("fmnist-lt", False))
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == ds.targets[0]


@needs_real
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_files_found_in_root(tmp_path, layout, monkeypatch):
    folder = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        (folder / f).symlink_to(REAL / f)
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    assert {p.parent for p in fm.locate_fashion_mnist(tmp_path, download=False).values()} == {folder}
    assert len(datasets.build_dataset("fmnist-lt", root=tmp_path)) == 14886


def test_uncompressed_idx_files(tmp_path, ds_no_fmnist):
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("t10k", 20)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        ds_write_idx(tmp_path / f"{split}-images-idx3-ubyte", images)
        ds_write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
    ds = datasets.build_dataset("fmnist-lt", root=tmp_path, split="test")
    assert len(ds) == 20 and ds.class_counts == [2] * 10
    with pytest.raises(ValueError, match="fmnist-lt: class 0 has 6 samples, cannot draw 6000"):
        datasets.build_dataset("fmnist-lt", root=tmp_path)


def test_truncated_idx_file(tmp_path, ds_no_fmnist):
    for f in FILES:
        ds_write_idx(tmp_path / f, np.zeros(100, np.uint8), shape=(5, 28, 28))  # 100 bytes, header says 3920
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: IDX payload has 100 bytes"):
        datasets.build_dataset("fmnist-lt", root=tmp_path)


def test_missing_everywhere_message(tmp_path, ds_no_fmnist, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        datasets.build_dataset("fmnist-lt", root=tmp_path / "data")
    msg = str(err.value)
    assert "\n" not in msg
    assert "train-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    data = tmp_path / "data"
    assert f"not found in {data}, {data / 'FashionMNIST' / 'raw'};" in msg  # an explicit root: nowhere else
    assert "download into" in msg and "network is unreachable" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--root DIR" in msg
    # no root: the family's default folder under $LTKD_DATA, then the Debian package's folder
    monkeypatch.setenv("LTKD_DATA", str(tmp_path / "store"))
    with pytest.raises(FileNotFoundError) as err:
        datasets.build_dataset("fmnist-lt")
    msg = str(err.value)
    store = tmp_path / "store" / "fmnist"
    assert f"not found in {store}, {store / 'FashionMNIST' / 'raw'}, {tmp_path / 'no-debian'};" in msg
    assert f"download into {tmp_path / 'store' / 'fmnist'}" in msg


def test_download_is_tried_last(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fm, "_download", lambda root: calls.append(root))
    with pytest.raises(FileNotFoundError, match="left no files"):
        fm.locate_fashion_mnist(tmp_path)
    assert calls == [tmp_path]
    with pytest.raises(FileNotFoundError, match="download disabled"):
        fm.locate_fashion_mnist(tmp_path, download=False)
    assert calls == [tmp_path]


@needs_real
def test_verify_real_data():
    report = datasets.verify_dataset("fmnist-lt", None)
    assert report.ok, report.summary()
    assert any("14,886 images" in n for n in report.notes)


def test_verify_missing(tmp_path, ds_no_fmnist):
    report = datasets.verify_dataset("fmnist-lt", tmp_path)
    assert not report.ok and "apt-get install dataset-fashion-mnist" in report.problems[0]
    assert "download disabled" in report.problems[0]  # verify never downloads


def test_verify_wrong_counts(tmp_path, ds_no_fmnist):
    for split, n in (("train", 30), ("t10k", 10)):
        ds_write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        ds_write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.zeros(n, np.uint8))
    report = datasets.verify_dataset("fmnist-lt", tmp_path)
    assert not report.ok
    assert "train: 30 images, expected 60,000" in report.problems
    assert any(p.startswith("test: class counts [10, 0,") for p in report.problems)
