"""Dataset registry: names, infos, errors raised before any file is read, transforms, plugins."""
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch
from PIL import Image

import datasets
from datasets import DatasetInfo, VerifyReport

NAMES = ["cifar10-lt", "cifar100-lt", "fmnist-lt", "imagenet-lt", "places-lt"]
IN_MEMORY = ["cifar10-lt", "cifar100-lt", "fmnist-lt"]


def test_list_datasets():
    assert datasets.list_datasets() == NAMES


def test_hf_shadowing_attribute():
    assert hasattr(datasets, "build_dataset")  # benchmark/__init__.py relies on it


def test_import_is_light():
    code = "import sys, datasets; datasets.register_dataset; print('torch' in sys.modules, 'numpy' in sys.modules)"
    repo = Path(datasets.__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo).stdout
    assert out.split() == ["False", "False"]


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXPECTED_INFO = {
    "fmnist-lt": (10, 1, 28, (0.2860,), (0.3530,), True, 2, ("train", "test"), 100),
    "cifar10-lt": (10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, 4, ("train", "test"), 100),
    "cifar100-lt": (100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, 4, ("train", "test"), 100),
    "imagenet-lt": (1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD, False, 0, ("train", "val", "test"), None),
    "places-lt": (365, 3, 224, IMAGENET_MEAN, IMAGENET_STD, False, 0, ("train", "val", "test"), None),
}


@pytest.mark.parametrize("name", NAMES)
def test_dataset_info(name):
    info = datasets.dataset_info(name)
    assert isinstance(info, DatasetInfo) and info.name == name
    got = (info.num_classes, info.in_chans, info.image_size, info.mean, info.std, info.in_memory, info.crop_padding,
           info.splits, info.default_imbalance_factor)
    assert got == EXPECTED_INFO[name]
    assert len(info.mean) == len(info.std) == info.in_chans
    with pytest.raises(FrozenInstanceError):
        info.num_classes = 3


@pytest.mark.parametrize("bad,suggested", [("cifar10lt", "cifar10-lt"), ("CIFAR100-LT", "cifar100-lt"),
                                           ("fmnist", "fmnist-lt"), ("imagenetlt", "imagenet-lt")])
def test_unknown_name_suggests_close_match(bad, suggested):
    with pytest.raises(KeyError) as err:
        datasets.build_dataset(bad)
    msg = str(err.value)
    assert f"unknown dataset {bad!r}" in msg and f"did you mean {suggested!r}" in msg
    assert all(n in msg for n in NAMES)
    for fn in (datasets.dataset_info, datasets.verify_dataset):
        with pytest.raises(KeyError, match="did you mean"):
            fn(bad)


def test_unknown_name_without_close_match():
    with pytest.raises(KeyError) as err:
        datasets.build_dataset("mnist-balanced-xyz")
    assert "did you mean" not in str(err.value) and "available: " + ", ".join(NAMES) in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_split_lists_allowed(name, tmp_path):
    allowed = ", ".join(datasets.dataset_info(name).splits)
    with pytest.raises(ValueError, match=f"unknown split 'validation'; allowed splits: {allowed}"):
        datasets.build_dataset(name, root=tmp_path, split="validation")


@pytest.mark.parametrize("name", IN_MEMORY)
@pytest.mark.parametrize("imb", [0.5, 0, -1])
def test_imbalance_below_one_rejected(name, imb, tmp_path):
    with pytest.raises(ValueError, match=r"imbalance_factor must be >= 1 \(1 = balanced\)"):
        datasets.build_dataset(name, root=tmp_path, imbalance_factor=imb)


@pytest.mark.parametrize("name", ["imagenet-lt", "places-lt"])
def test_fixed_split_rejects_imbalance(name, tmp_path):
    with pytest.raises(ValueError, match="imbalance_factor must be None"):
        datasets.build_dataset(name, root=tmp_path, imbalance_factor=100)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [True, False])
def test_default_transform(name, train):
    info = datasets.dataset_info(name)
    size = (269, 256) if info.image_size == 224 else (info.image_size, info.image_size)
    img = Image.new("L" if info.in_chans == 1 else "RGB", size, (128,) * info.in_chans)
    out = datasets.default_transform(name, train)(img)
    assert out.dtype == torch.float32 and out.shape == (info.in_chans, info.image_size, info.image_size)
    expected = (128 / 255 - torch.tensor(info.mean)) / torch.tensor(info.std)
    if not train:  # eval transform is deterministic: a flat image stays flat at its normalised value
        assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-3)
    names = [type(t).__name__ for t in datasets.default_transform(name, train).transforms]
    if info.image_size == 224:
        assert names == (["RandomResizedCrop", "RandomHorizontalFlip"] if train else ["Resize", "CenterCrop"]) + \
            ["ToTensor", "Normalize"]
    else:
        assert names == (["RandomCrop", "RandomHorizontalFlip"] if train else []) + ["ToTensor", "Normalize"]


def test_register_plugin_dataset():
    info = DatasetInfo(name="toy-lt", num_classes=2, in_chans=1, image_size=4, mean=(0.5,), std=(0.5,),
                       in_memory=False, crop_padding=0, splits=("train",), default_imbalance_factor=None)

    @datasets.register_dataset("toy-lt", info=info)
    def build_toy(root=None, split="train", imbalance_factor=None, seed=0, transform=None, scale=1):
        return [(split, seed, scale)]

    try:
        assert "toy-lt" in datasets.list_datasets()
        assert datasets.dataset_info("toy-lt") is info
        assert datasets.build_dataset("toy-lt", seed=4, scale=2) == [("train", 4, 2)]
        report = datasets.verify_dataset("toy-lt", None)
        assert isinstance(report, VerifyReport) and report.ok
        with pytest.warns(RuntimeWarning, match="registered twice"):
            datasets.register_dataset("toy-lt", info=info)(lambda **kw: None)
    finally:
        datasets._REGISTRY.pop("toy-lt", None)


def test_verify_report_summary():
    report = VerifyReport(ok=False, problems=["a is missing"], notes=["b"], name="cifar10-lt", root="/d")
    assert report.summary() == "cifar10-lt at /d: FAILED (1 problem)\n  problem: a is missing\n  note: b"
    assert VerifyReport(ok=True, name="x").summary() == "x: OK"
