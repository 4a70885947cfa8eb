"""ImageNet-LT / Places-LT on small JPEG trees with split files in the real OLTR format."""
from typing import Dict

import pytest
import torch
from PIL import Image

import datasets
from builders import ds_write_jpeg, ds_write_small_places, ds_write_split

PREFIX = {"imagenet-lt": "ImageNet_LT", "places-lt": "Places_LT"}
CLASSES = {"imagenet-lt": 1000, "places-lt": 365}
NAMES = list(PREFIX)


@pytest.fixture
def ds_txt_tree(tmp_path) -> Dict[str, object]:
    """``root`` with 7 JPEGs in train/<wnid>/ and val/, and the three split files for both datasets."""
    root = tmp_path / "root"
    train = [(f"train/n{c:04d}/img_{k}.JPEG", c) for c, n in ((0, 3), (1, 2), (7, 1)) for k in range(n)]
    evals = [("val/ILSVRC_val_0001.JPEG", 5)]
    for i, (p, label) in enumerate(train + evals):
        ds_write_jpeg(root / p, (10 * i, 100, 200))
    for prefix in PREFIX.values():
        ds_write_split(root / f"{prefix}_train.txt", train)
        ds_write_split(root / f"{prefix}_val.txt", evals)
        ds_write_split(root / f"{prefix}_test.txt", evals + [("/" + train[0][0], 364)])  # leading slash is relative
    return {"root": root, "train": train, "evals": evals}


@pytest.mark.parametrize("name", NAMES)
def test_train_items_targets_counts(ds_txt_tree, name):
    root = ds_txt_tree["root"]
    ds = datasets.build_dataset(name, root=root)
    assert len(ds) == 6 and ds.targets == [0, 0, 0, 1, 1, 7]
    assert ds.num_classes == CLASSES[name] and len(ds.class_counts) == CLASSES[name]
    assert ds.class_counts[:8] == [3, 2, 0, 0, 0, 0, 0, 1] and sum(ds.class_counts) == 6
    assert ds.info.name == name and not ds.info.in_memory and ds.imbalance_factor is None
    assert not hasattr(ds, "as_tensors")
    img, label = ds[4]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (12, 10) and label == 1
    assert abs(img.getpixel((5, 5))[0] - 40) <= 6  # the 5th image written (colour 10 * 4)


@pytest.mark.parametrize("name", NAMES)
def test_eval_splits(ds_txt_tree, name):
    root = ds_txt_tree["root"]
    val = datasets.build_dataset(name, root=root, split="val")
    test = datasets.build_dataset(name, root=root, split="test")
    assert val.targets == [5] and test.targets == [5, 364]
    assert test.paths[1] == "train/n0000/img_0.JPEG" and test[1][0].size == (12, 10)


def test_transform_applied(ds_txt_tree):
    tf = datasets.default_transform("imagenet-lt", train=False)
    x, y = datasets.build_dataset("imagenet-lt", root=ds_txt_tree["root"], transform=tf)[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 0


def test_grayscale_images_become_rgb(ds_txt_tree):
    root = ds_txt_tree["root"]
    ds_write_jpeg(root / "gray.jpg", (77, 0, 0), mode="L")
    split_file = ds_write_split(root / "custom.txt", [("gray.jpg", 3)])
    img, label = datasets.build_dataset("places-lt", root=root, split_file=split_file)[0]
    assert img.mode == "RGB" and label == 3


def test_split_file_kwarg(ds_txt_tree, tmp_path):
    root = ds_txt_tree["root"]
    elsewhere = ds_write_split(tmp_path / "mine.txt", ds_txt_tree["train"][:2])
    ds = datasets.build_dataset("imagenet-lt", root=root, split_file=elsewhere)
    assert len(ds) == 2 and ds.split_file == str(elsewhere) and ds[1][1] == 0
    ds_write_split(root / "sub.txt", ds_txt_tree["train"][3:])  # a relative name is also looked up in root
    assert datasets.build_dataset("imagenet-lt", root=root, split_file="sub.txt").targets == [1, 1, 7]


def test_split_files_in_prefix_subfolder(ds_txt_tree):
    root = ds_txt_tree["root"]
    (root / "ImageNet_LT").mkdir()
    (root / "ImageNet_LT_val.txt").rename(root / "ImageNet_LT" / "ImageNet_LT_val.txt")
    assert datasets.build_dataset("imagenet-lt", root=root, split="val").targets == [5]


def test_blank_lines_skipped(tmp_path):
    path = tmp_path / "ImageNet_LT_train.txt"
    path.write_text("a.jpg 1\n\n   \nb.jpg 2\n\n")
    assert datasets.build_dataset("imagenet-lt", root=tmp_path).targets == [1, 2]


@pytest.mark.parametrize("line,message", [
    ("a/b.jpg", r"ImageNet_LT_train.txt, line 3: expected 'relative/path label', got 'a/b.jpg'"),
    ("a/b c.jpg 4", r"ImageNet_LT_train.txt, line 3: expected 'relative/path label', got 'a/b c.jpg 4'"),
    ("a/b.jpg x7", r"ImageNet_LT_train.txt, line 3: label 'x7' is not an integer"),
    ("a/b.jpg 1.5", r"ImageNet_LT_train.txt, line 3: label '1.5' is not an integer"),
    ("a/b.jpg 1000", r"ImageNet_LT_train.txt, line 3: label 1000 outside \[0, 1000\) \(C = 1000 classes\)"),
    ("a/b.jpg -1", r"ImageNet_LT_train.txt, line 3: label -1 outside \[0, 1000\)"),
])
def test_malformed_lines(tmp_path, line, message):
    ds_write_split(tmp_path / "ImageNet_LT_train.txt", [("x.jpg", 0), ("y.jpg", 1)], trailer=f"\n{line}\nz.jpg 2\n")
    with pytest.raises(ValueError, match=message) as err:
        datasets.build_dataset("imagenet-lt", root=tmp_path)
    assert str(tmp_path / "ImageNet_LT_train.txt") in str(err.value)


def test_label_range_depends_on_dataset(tmp_path):
    ds_write_split(tmp_path / "Places_LT_train.txt", [("x.jpg", 365)])
    with pytest.raises(ValueError, match=r"Places_LT_train.txt, line 1: label 365 outside \[0, 365\) \(C = 365"):
        datasets.build_dataset("places-lt", root=tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_missing_split_file_message(tmp_path, name):
    with pytest.raises(FileNotFoundError) as err:
        datasets.build_dataset(name, root=tmp_path, split="val")
    msg = str(err.value)
    assert "\n" not in msg and f"{tmp_path / (PREFIX[name] + '_val.txt')}" in msg
    assert f"{PREFIX[name]}_{{train,val,test}}.txt from the OLTR release" in msg
    assert ("ImageNet 2012" if name == "imagenet-lt" else "Places365-Standard") in msg
    assert "split_file=PATH" in msg
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        datasets.build_dataset(name, root=tmp_path, split_file=tmp_path / "nope.txt")


def test_missing_image_on_load(ds_txt_tree):
    root = ds_txt_tree["root"]
    ds = datasets.build_dataset("imagenet-lt", root=root)
    (root / ds.paths[0]).unlink()
    with pytest.raises(FileNotFoundError, match=r"imagenet-lt: image .*img_0.JPEG listed in .*ImageNet_LT_train.txt "
                                                r"not found; check it with `python -m benchmark prepare"):
        ds[0]


# --- verify: the published sizes are patched down to the fixture's (365 classes, shared image files) ---

@pytest.fixture
def ds_places_verify(tmp_path, monkeypatch):
    """A Places-LT tree that satisfies patched 'published' sizes: train max 3 / min 1, val/test 1 per class."""
    root = tmp_path / "places"
    ds_write_small_places(root, monkeypatch)
    return root


def test_verify_good(ds_places_verify):
    report = datasets.verify_dataset("places-lt", ds_places_verify)
    assert report.ok and not report.problems, report.summary()
    assert any("367 images, max 3, min 1" in n for n in report.notes)


def test_verify_missing_images(ds_places_verify):
    (ds_places_verify / "data_256/img1.jpg").unlink()
    (ds_places_verify / "data_256/img2.jpg").unlink()
    report = datasets.verify_dataset("places-lt", ds_places_verify)
    assert not report.ok and len(report.problems) == 3
    train = next(p for p in report.problems if p.startswith("Places_LT_train.txt"))
    assert "243 of 367 images missing" in train and "(first: data_256/img1.jpg, data_256/img2.jpg, " in train
    assert train.count("data_256/img") == 5 and "Places365-Standard" in train


def test_verify_wrong_sizes(ds_places_verify):
    rows = [(f"data_256/img{c % 3}.jpg", c) for c in range(365)]
    ds_write_split(ds_places_verify / "Places_LT_train.txt", rows[:-1])
    ds_write_split(ds_places_verify / "Places_LT_val.txt", rows + [rows[0]])
    (ds_places_verify / "Places_LT_test.txt").write_text("data_256/img0.jpg zero\n")
    problems = datasets.verify_dataset("places-lt", ds_places_verify).problems
    assert "Places_LT_train.txt: 364 lines, expected 367" in problems
    assert "Places_LT_train.txt: 1 of 365 classes have no image" in problems
    assert "Places_LT_val.txt: 366 lines, expected 365" in problems
    assert "Places_LT_val.txt: class sizes min 1 max 2, expected 1 per class" in problems
    assert any("Places_LT_test.txt, line 1: label 'zero' is not an integer" in p for p in problems)


def test_verify_train_max_min(ds_places_verify):
    rows = [(f"data_256/img{c % 3}.jpg", c) for c in range(365)] + [("data_256/img0.jpg", 5)] * 2
    ds_write_split(ds_places_verify / "Places_LT_train.txt", rows)
    problems = datasets.verify_dataset("places-lt", ds_places_verify).problems
    assert problems == []  # same max/min as the patched published sizes
    ds_write_split(ds_places_verify / "Places_LT_train.txt", rows[:-1] + [("data_256/img0.jpg", 6)])
    problems = datasets.verify_dataset("places-lt", ds_places_verify).problems
    assert problems == ["Places_LT_train.txt: class sizes max 2 min 1, expected max 3 min 1"]


def test_verify_no_split_files(tmp_path):
    report = datasets.verify_dataset("imagenet-lt", tmp_path)
    assert not report.ok and len(report.problems) == 1
    assert "ImageNet_LT_train.txt, ImageNet_LT_val.txt, ImageNet_LT_test.txt not found" in report.problems[0]
    report = datasets.verify_dataset("imagenet-lt", tmp_path / "absent")
    assert not report.ok and "is not a folder" in report.problems[0]
