"""`prepare`: one default folder per dataset family, `--download` through torchvision (served from 127.0.0.1,
never the network), and corrupt images in an ImageNet-LT / Places-LT tree."""
import dataclasses
import functools
import hashlib
import http.server
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import datasets
from benchmark.cli import main
from benchmark.config import list_suites, load_suite
from builders import ds_write_cifar, ds_write_small_places, ds_write_split
from datasets import cifar, fashion_mnist as fm

FAMILY = {"fmnist-lt": "fmnist", "cifar10-lt": "cifar", "cifar100-lt": "cifar", "imagenet-lt": "imagenet",
          "places-lt": "places"}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def prep_server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (base URL, folder, list of paths requested)."""
    www = tmp_path / "www"
    www.mkdir()
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # torchvision's redirect probe hangs up mid-file
            pass

    server = Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www, requested
    finally:
        server.shutdown()
        server.server_close()


# --- one default folder per family, shared by prepare, the builders and the suites ---

@pytest.mark.parametrize("name", list(FAMILY))
def test_default_root_is_the_family_folder(name, monkeypatch, tmp_path):
    monkeypatch.delenv("LTKD_DATA", raising=False)
    assert datasets.dataset_root(name) == Path("data") / FAMILY[name]
    assert datasets.dataset_info(name).default_root == FAMILY[name]
    monkeypatch.setenv("LTKD_DATA", str(tmp_path))
    assert datasets.dataset_root(name) == tmp_path / FAMILY[name]
    assert datasets.dataset_root(name, tmp_path / "mine") == tmp_path / "mine"


@pytest.mark.parametrize("suite", list_suites())
def test_suites_read_the_default_folder(suite):
    """A suite either names no root (the family default) or exactly the default: prepare checks what runs read."""
    for entry in load_suite(suite, validate_names=False).datasets:
        assert entry.root is None or Path(entry.root) == datasets.dataset_root(entry.name, None), (suite, entry)


def test_prepare_and_builder_use_the_same_default_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LTKD_DATA", str(tmp_path))
    ds_write_cifar(tmp_path / "cifar", "cifar10-lt", 4, 2)
    assert len(datasets.build_dataset("cifar10-lt", split="test")) == 20  # no root: $LTKD_DATA/cifar
    assert main(["prepare", "--dataset", "cifar10-lt"]) == 1  # found, but the counts are not CIFAR-10's
    out = capsys.readouterr().out
    assert f"cifar10-lt at {tmp_path / 'cifar'}: FAILED" in out and "missing" not in out
    assert "expected 5000 per class" in out


# --- --download: torchvision's downloader and checksums, served locally ---

def test_official_archives_are_torchvisions():
    from torchvision.datasets import CIFAR10, CIFAR100

    for name, tv in (("cifar10-lt", CIFAR10), ("cifar100-lt", CIFAR100)):
        assert cifar.LAYOUTS[name].url == tv.url and cifar.LAYOUTS[name].archive_md5 == tv.tgz_md5


@pytest.fixture
def prep_cifar_archive(tmp_path, prep_server, monkeypatch):
    """A small CIFAR-10 archive on the local server (10 train / 2 test images per class), the layout patched to it."""
    base, www, requested = prep_server
    src = tmp_path / "src"
    ds_write_cifar(src, "cifar10-lt", 10, 2, protocol=2)
    archive = www / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    layout = dataclasses.replace(cifar.LAYOUTS["cifar10-lt"], url=f"{base}/cifar-10-python.tar.gz",
                                 archive_md5=_md5(archive), n_max=10)
    monkeypatch.setitem(cifar.LAYOUTS, "cifar10-lt", layout)
    return archive, requested


def test_download_cifar_then_check(tmp_path, prep_cifar_archive, capsys):
    archive, requested = prep_cifar_archive
    root = tmp_path / "data"
    assert main(["prepare", "--dataset", "cifar10-lt", "--download", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"cifar10-lt at {root}: OK" in out and f"files found in {root / 'cifar-10-batches-py'}" in out
    assert set(requested) == {"/cifar-10-python.tar.gz"}  # torchvision probes for a redirect, then fetches
    fetched = len(requested)
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    assert not (root / "cifar-10-python.tar.gz").exists()  # the archive is removed once extracted
    assert len(datasets.build_dataset("cifar10-lt", root=root, split="test")) == 20
    # present: a second --download fetches nothing
    assert main(["prepare", "--dataset", "cifar10-lt", "--download", "--root", str(root)]) == 0
    assert len(requested) == fetched


def test_download_into_the_default_folder(tmp_path, prep_cifar_archive, monkeypatch, capsys):
    monkeypatch.setenv("LTKD_DATA", str(tmp_path / "store"))
    assert main(["prepare", "--dataset", "cifar10-lt", "--download"]) == 0
    assert (tmp_path / "store" / "cifar" / "cifar-10-batches-py" / "test_batch").is_file()
    assert len(datasets.build_dataset("cifar10-lt", split="test")) == 20


def test_download_checksum_mismatch_fails_in_one_line(tmp_path, prep_cifar_archive, monkeypatch, capsys):
    layout = dataclasses.replace(cifar.LAYOUTS["cifar10-lt"], archive_md5="0" * 32)
    monkeypatch.setitem(cifar.LAYOUTS, "cifar10-lt", layout)
    root = tmp_path / "data"
    assert main(["prepare", "--dataset", "cifar10-lt", "--download", "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after torchvision's progress bar
    assert err.startswith(f"error: cifar10-lt: downloading {layout.url} into {root} failed (md5 of "
                          f"{root / 'cifar-10-python.tar.gz'} is not the official {'0' * 32}")
    assert not (root / "cifar-10-batches-py").exists()


def test_download_server_unreachable(tmp_path, prep_server, monkeypatch, capsys):
    base, _, requested = prep_server
    layout = dataclasses.replace(cifar.LAYOUTS["cifar100-lt"], url=f"{base}/absent.tar.gz")
    monkeypatch.setitem(cifar.LAYOUTS, "cifar100-lt", layout)
    assert main(["prepare", "--dataset", "cifar100-lt", "--download", "--root", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "downloading" in err and "absent.tar.gz" in err and "404" in err
    assert set(requested) == {"/absent.tar.gz"}


def test_download_fashion_mnist_with_torchvision(tmp_path, prep_server, monkeypatch, capsys):
    """torchvision's FashionMNIST downloader against the Debian files served locally (their md5 patched in)."""
    base, www, requested = prep_server
    from torchvision.datasets import FashionMNIST

    names = [n for n, _ in FashionMNIST.resources]
    if not all((fm.DEBIAN_DIR / n).is_file() for n in names):
        pytest.skip(f"Fashion-MNIST not in {fm.DEBIAN_DIR}")
    for n in names:
        (www / n).write_bytes((fm.DEBIAN_DIR / n).read_bytes())
    monkeypatch.setattr(FashionMNIST, "mirrors", [f"{base}/"])
    monkeypatch.setattr(FashionMNIST, "resources", [(n, _md5(www / n)) for n in names])
    # no --root: the builder would read the Debian copy, so nothing is downloaded
    monkeypatch.setenv("LTKD_DATA", str(tmp_path / "store"))
    assert main(["prepare", "--dataset", "fmnist-lt", "--download"]) == 0
    assert requested == [] and not (tmp_path / "store").exists()
    capsys.readouterr()
    # an explicit --root is where the files must be (the builder does not fall back to Debian's then)
    assert main(["prepare", "--dataset", "fmnist-lt", "--download", "--root", str(tmp_path / "fm")]) == 0
    out = capsys.readouterr().out
    assert set(requested) == {f"/{n}" for n in names}
    assert f"files found in {tmp_path / 'fm' / 'FashionMNIST' / 'raw'}" in out and "14,886 images" in out


@pytest.mark.parametrize("name, source", [("imagenet-lt", "https://image-net.org"),
                                          ("places-lt", "http://places2.csail.mit.edu/download.html")])
def test_no_download_for_imagenet_and_places(name, source, tmp_path, capsys):
    assert main(["prepare", "--dataset", name, "--download", "--root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {name} cannot be downloaded by ltkd-bench")
    assert source in err and "OpenLongTailRecognition-OLTR" in err and str(tmp_path) in err


# --- corrupt images in a split-file tree ---

@pytest.fixture
def prep_places_tree(tmp_path, monkeypatch):
    """A Places-LT tree that meets patched published sizes (train max 3 / min 1, val/test 1 per class), all
    images good; returns (root, list of the image paths of class 0..2 in train)."""
    root = tmp_path / "places"
    return root, ds_write_small_places(root, monkeypatch)


def _break_images(root: Path, train) -> None:
    """Point three train lines at a truncated JPEG, a zero-byte file and a text file (same counts per class)."""
    good = root / "data_256/img0.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (192, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "data_256/big.jpg", quality=95)  # the cut lands in the image data
    data = (root / "data_256/big.jpg").read_bytes()
    (root / "data_256/trunc.jpg").write_bytes(data[: len(data) // 2])
    (root / "data_256/empty.jpg").write_bytes(b"")
    (root / "data_256/text.jpg").write_text("not a picture\n")
    assert good.is_file()
    rows = list(train)
    rows[3] = ("data_256/trunc.jpg", 3)
    rows[4] = ("data_256/empty.jpg", 4)
    rows[5] = ("data_256/text.jpg", 5)
    ds_write_split(root / "Places_LT_train.txt", rows)


def test_good_tree_decodes(prep_places_tree):
    root, _ = prep_places_tree
    report = datasets.verify_dataset("places-lt", root)
    assert report.ok, report.summary()
    assert any(n.startswith("decoded 3 images with") for n in report.notes)


@pytest.mark.parametrize("workers", [1, 3])
def test_corrupt_images_are_reported(prep_places_tree, workers):
    root, train = prep_places_tree
    _break_images(root, train)
    report = datasets.verify_dataset("places-lt", root, workers=workers)
    assert not report.ok
    assert report.problems == [
        f"Places_LT_train.txt: 3 of 367 images under {root} cannot be decoded (first: data_256/trunc.jpg (truncated), "
        "data_256/empty.jpg (empty file), data_256/text.jpg (not an image)); download those files again or replace them"]
    assert any(n.startswith(f"decoded 6 images with {workers} threads") and n.endswith(": 3 cannot be decoded")
               for n in report.notes)


def test_corrupt_listing_is_capped_and_decode_can_be_skipped(prep_places_tree, capsys):
    root, train = prep_places_tree
    _break_images(root, train)
    assert main(["prepare", "--dataset", "places-lt", "--root", str(root), "--max-listed", "1"]) == 1
    out = capsys.readouterr().out
    assert "3 of 367 images under" in out and "(first: data_256/trunc.jpg (truncated), ...)" in out
    assert "empty.jpg" not in out
    assert main(["prepare", "--dataset", "places-lt", "--root", str(root), "--no-decode"]) == 0
    assert "decoded" not in capsys.readouterr().out


def test_missing_and_corrupt_are_told_apart(prep_places_tree):
    root, train = prep_places_tree
    _break_images(root, train)
    (root / "data_256/img2.jpg").unlink()
    problems = datasets.verify_dataset("places-lt", root).problems
    train_missing = next(p for p in problems if p.startswith("Places_LT_train.txt") and "missing" in p)
    assert "120 of 367 images missing" in train_missing and "trunc.jpg" not in train_missing
    assert any(p.startswith("Places_LT_train.txt: 3 of 367 images") and "cannot be decoded" in p for p in problems)
