"""CIFAR-10-LT / CIFAR-100-LT on fixtures written in torchvision's real pickle format.

Every image row carries its index within its split in its first 4 bytes (little-endian), so a
test can tell exactly which original images a long-tailed subset kept.
"""
import functools
import hashlib
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from builders import CIFAR_LAYOUT as LAYOUT, ds_write_cifar, original_index
from datasets.longtail import exponential_profile

TOTALS = {"cifar10-lt": {100: 12406, 50: 13996, 10: 20431}, "cifar100-lt": {100: 10847, 50: 12608, 10: 19573}}


@functools.lru_cache(maxsize=4)
def fixture_labels(folder: Path, name: str, split: str) -> np.ndarray:
    """Labels of a fixture split, read back independently of the loader under test."""
    _, _, train_files, test_file, _, label_key, _ = LAYOUT[name]
    labels = []
    for fname in (train_files if split == "train" else [test_file]):
        with open(folder / fname, "rb") as f:
            labels += pickle.load(f, encoding="latin1")[label_key]
    return np.asarray(labels)


@pytest.fixture(scope="session")
def ds_cifar_root(tmp_path_factory):
    """One root holding full-size CIFAR-10 and CIFAR-100 fixtures (written once per session)."""
    root = tmp_path_factory.mktemp("cifar")
    ds_write_cifar(root, "cifar10-lt", 5000, 1000)
    ds_write_cifar(root, "cifar100-lt", 500, 100)
    return root


CASES = [(name, imb, total) for name, t in TOTALS.items() for imb, total in t.items()]


@pytest.mark.parametrize("name,imb,total", CASES)
def test_lt_totals_and_profile(ds_cifar_root, name, imb, total):
    ds = datasets.build_dataset(name, root=ds_cifar_root, imbalance_factor=imb, seed=0)
    n_max, classes = LAYOUT[name][6], LAYOUT[name][1]
    assert len(ds) == total == sum(ds.class_counts)
    assert ds.class_counts == exponential_profile(n_max, classes, imb)
    assert ds.num_classes == classes and ds.info.name == name and ds.imbalance_factor == imb
    images, targets = ds.as_tensors()
    idx = original_index(images)
    assert np.all(np.diff(idx) > 0)  # a subset, in original order, no duplicates
    labels = fixture_labels(ds_cifar_root / LAYOUT[name][0], name, "train")
    assert np.array_equal(labels[idx], targets.numpy()) and targets.tolist() == ds.targets


@pytest.mark.parametrize("name", list(LAYOUT))
def test_default_imbalance_is_100(ds_cifar_root, name):
    assert len(datasets.build_dataset(name, root=ds_cifar_root)) == TOTALS[name][100]


@pytest.mark.parametrize("name", list(LAYOUT))
def test_seed_selects_subset(ds_cifar_root, name):
    def picked(seed):
        return original_index(datasets.build_dataset(name, root=ds_cifar_root, seed=seed).as_tensors()[0])

    a = picked(0)
    assert np.array_equal(a, picked(0))
    b = picked(1)
    assert len(a) == len(b) and not np.array_equal(a, b)


def test_balanced_full_set_with_if_1(ds_cifar_root):
    ds = datasets.build_dataset("cifar10-lt", root=ds_cifar_root, imbalance_factor=1)
    assert len(ds) == 50000 and ds.class_counts == [5000] * 10
    assert np.array_equal(original_index(ds.as_tensors()[0]), np.arange(50000))


@pytest.mark.parametrize("name,per_class", [("cifar10-lt", 1000), ("cifar100-lt", 100)])
def test_test_split_untouched(ds_cifar_root, name, per_class):
    ds = datasets.build_dataset(name, root=ds_cifar_root, split="test", imbalance_factor=100)
    classes = LAYOUT[name][1]
    assert len(ds) == 10000 and ds.class_counts == [per_class] * classes and ds.imbalance_factor is None
    images, targets = ds.as_tensors()
    assert np.array_equal(original_index(images), np.arange(10000))
    assert np.array_equal(targets.numpy(), fixture_labels(ds_cifar_root / LAYOUT[name][0], name, "test"))


def test_items_and_tensors(ds_cifar_root):
    ds = datasets.build_dataset("cifar100-lt", root=ds_cifar_root, imbalance_factor=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning on non-writable numpy arrays
        images, targets = ds.as_tensors()
    assert images.shape == (19573, 3, 32, 32) and images.dtype == torch.uint8
    assert targets.shape == (19573,) and targets.dtype == torch.int64
    assert ds.as_tensors()[0].data_ptr() == images.data_ptr()  # no copy per call
    for i in (0, 1234, len(ds) - 1):
        img, label = ds[i]
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
        assert isinstance(label, int) and label == ds.targets[i] == int(targets[i])
        assert np.array_equal(np.asarray(img), images[i].permute(1, 2, 0).numpy())


def test_transform_applied(ds_cifar_root):
    tf = datasets.default_transform("cifar10-lt", train=True)
    ds = datasets.build_dataset("cifar10-lt", root=ds_cifar_root, split="test", transform=tf)
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == ds.targets[3]


def test_root_may_be_the_folder_itself(ds_cifar_root):
    ds = datasets.build_dataset("cifar10-lt", root=ds_cifar_root / "cifar-10-batches-py", split="test")
    assert len(ds) == 10000


@pytest.mark.parametrize("name", list(LAYOUT))
def test_missing_folder_message(tmp_path, name):
    folder = LAYOUT[name][0]
    with pytest.raises(FileNotFoundError) as err:
        datasets.build_dataset(name, root=tmp_path / "nowhere")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"download https://www.cs.toronto.edu/~kriz/{folder.replace('-batches-py', '-python')}.tar.gz" in msg
    assert f"extract it into {tmp_path / 'nowhere'}" in msg and f"{tmp_path / 'nowhere' / folder}" in msg


def test_incomplete_folder_names_missing_files(tmp_path, ds_cifar_root):
    out = tmp_path / "cifar-10-batches-py"
    out.mkdir()
    (out / "data_batch_1").symlink_to(ds_cifar_root / "cifar-10-batches-py" / "data_batch_1")
    with pytest.raises(FileNotFoundError, match="train files data_batch_2, data_batch_3, data_batch_4, data_batch_5 "
                                                "missing in " + str(out)):
        datasets.build_dataset("cifar10-lt", root=tmp_path)


def test_too_few_images_for_profile(tmp_path):
    ds_write_cifar(tmp_path, "cifar10-lt", 10, 2)
    with pytest.raises(ValueError, match="cifar10-lt: class 0 has 10 samples, cannot draw 5000"):
        datasets.build_dataset("cifar10-lt", root=tmp_path)
    assert len(datasets.build_dataset("cifar10-lt", root=tmp_path, split="test")) == 20


def test_python2_style_bytes_keys(tmp_path):
    ds_write_cifar(tmp_path, "cifar100-lt", 2, 3, bytes_keys=True, protocol=2)
    ds = datasets.build_dataset("cifar100-lt", root=tmp_path, split="test")
    assert len(ds) == 300 and ds.class_counts == [3] * 100


def test_rewritten_files_are_reloaded(tmp_path):
    ds_write_cifar(tmp_path, "cifar10-lt", 1, 2)
    assert len(datasets.build_dataset("cifar10-lt", root=tmp_path, split="test")) == 20
    ds_write_cifar(tmp_path, "cifar10-lt", 1, 3)
    assert len(datasets.build_dataset("cifar10-lt", root=tmp_path, split="test")) == 30


def test_corrupt_pickle(tmp_path):
    out = ds_write_cifar(tmp_path, "cifar10-lt", 1, 1)
    (out / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test_batch: cannot unpickle CIFAR batch"):
        datasets.build_dataset("cifar10-lt", root=tmp_path, split="test")


@pytest.mark.parametrize("name", list(LAYOUT))
def test_verify_good_fixture(ds_cifar_root, name):
    report = datasets.verify_dataset(name, ds_cifar_root)
    assert report.ok and report.problems == [], report.summary()
    notes = "\n".join(report.notes)
    assert "md5 of" in notes and "differs from the official release" in notes
    assert f"{TOTALS[name][100]:,} images" in notes and f"{TOTALS[name][10]:,} images" in notes
    assert report.summary().startswith(f"{name} at {ds_cifar_root}: OK")


def test_verify_broken_fixtures(tmp_path):
    small = tmp_path / "small"
    out = ds_write_cifar(small, "cifar10-lt", 10, 5)
    report = datasets.verify_dataset("cifar10-lt", small)
    assert not report.ok
    assert any("train: class counts min 10 max 10" in p and "expected 5000 per class" in p for p in report.problems)
    assert any("test: class counts" in p and "expected 1000 per class" in p for p in report.problems)

    (out / "test_batch").unlink()
    (out / "batches.meta").unlink()
    report = datasets.verify_dataset("cifar10-lt", small)
    assert any("test_batch, batches.meta missing in" in p and "cifar-10-python.tar.gz" in p for p in report.problems)

    report = datasets.verify_dataset("cifar100-lt", tmp_path / "absent")
    assert not report.ok and len(report.problems) == 1 and "train, test, meta missing" in report.problems[0]
    assert "FAILED (1 problem)" in report.summary()


# ----------------------------------------------------------------------------- LDAM-DRW's subsets
# Golden indices from running LDAM-DRW's IMBALANCECIFAR10/100 on synthetic targets (tests/fixtures/README.md).
REFERENCE = Path(__file__).parent / "fixtures" / "reference_values.json"
RECIPES = {  # the fixture's targets_recipe strings, rebuilt here rather than evaluated
    "np.random.RandomState(123).permutation(np.repeat(np.arange(10), 5000))":
        lambda: np.random.RandomState(123).permutation(np.repeat(np.arange(10), 5000)),
    "np.random.RandomState(123).permutation(np.repeat(np.arange(100), 500))":
        lambda: np.random.RandomState(123).permutation(np.repeat(np.arange(100), 500)),
}


@functools.lru_cache(maxsize=1)
def ldam_entries() -> tuple:
    return tuple(json.loads(REFERENCE.read_text())["ldam_subsets"])


@pytest.fixture(scope="module")
def ldam_root(tmp_path_factory):
    """CIFAR-10 and CIFAR-100 pickles whose train labels are the golden fixture's synthetic targets."""
    root = tmp_path_factory.mktemp("cifar_ldam")
    for name, classes in (("cifar10-lt", 10), ("cifar100-lt", 100)):
        (recipe,) = {e["targets_recipe"] for e in ldam_entries() if e["num_classes"] == classes}
        ds_write_cifar(root, name, 0, 1, train_labels=RECIPES[recipe]())
    return root


def test_ldam_fixture_covers_the_protocol():
    got = sorted((e["num_classes"], e["imbalance_factor"], e["seed"]) for e in ldam_entries())
    assert got == sorted((c, imb, s) for c in (10, 100) for imb in (100, 50, 10) for s in (0, 1))


@pytest.mark.parametrize("entry", ldam_entries(), ids=lambda e: f"C{e['num_classes']}-IF{e['imbalance_factor']}-seed{e['seed']}")
def test_subset_is_ldam_drw(ldam_root, entry):
    """build_dataset keeps exactly the images IMBALANCECIFAR10/100(rand_number=seed) keeps, in file order."""
    name = "cifar10-lt" if entry["num_classes"] == 10 else "cifar100-lt"
    ds = datasets.build_dataset(name, root=ldam_root, imbalance_factor=entry["imbalance_factor"], seed=entry["seed"])
    images, targets = ds.as_tensors()
    idx = original_index(images)
    assert len(idx) == entry["count"] == len(entry["selected_in_ldam_order"])
    assert np.array_equal(idx, np.sort(np.asarray(entry["selected_in_ldam_order"], dtype=np.int64)))
    assert hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest() == entry["sha256_of_sorted_int64"]
    labels = fixture_labels(ldam_root / LAYOUT[name][0], name, "train")
    assert np.array_equal(targets.numpy(), labels[idx])
