"""`eval`: any checkpoint on any split of Fashion-MNIST-LT, printed as the leaderboard's per-group table.

The reference numbers are computed here independently of the harness (plain numpy normalisation and
an argmax), so a wrong data path, normalisation, grouping or weight loading shows up as a mismatch.
"""
import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import datasets
from benchmark.cli import main
from benchmark.models import create_model
from datasets.longtail import exponential_profile, frequency_thirds, shot_groups

pytestmark = pytest.mark.skipif(
    not all((Path("/usr/share/datasets/fashion-mnist") / f).is_file() for f in
            ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")

ARCH = "cifar_cnn_tiny"


def _normalised(name: str, split: str, **kw) -> tuple:
    ds = datasets.build_dataset(name, split=split, **kw)
    info = datasets.dataset_info(name)
    x = torch.from_numpy(ds.images.astype(np.float32) / 255.0)
    x = (x - torch.tensor(info.mean).view(1, -1, 1, 1)) / torch.tensor(info.std).view(1, -1, 1, 1)
    return x, torch.tensor(ds.targets)


@pytest.fixture(scope="module")
def ev_model(tmp_path_factory):
    """A tiny CNN after 60 Adam steps on balanced Fashion-MNIST (every class partly right), saved as a state dict."""
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=10, in_chans=1)
    x, y = _normalised("fmnist-lt", "train", imbalance_factor=1, n_max=1000)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, len(y), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("ev") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def ev_reference(ev_model):
    """Per-class test accuracy (%) of the fixture model, computed without the harness."""
    model, _ = ev_model
    x, y = _normalised("fmnist-lt", "test")
    with torch.inference_mode():
        pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(y), 1000)])
    return [100.0 * int((pred[y == c] == c).sum()) / int((y == c).sum()) for c in range(10)]


def _table(out: str) -> dict:
    """Header cell -> value cell of the first data row of the GitHub-style table in ``out``."""
    rows = [line for line in out.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    values = [c.strip() for c in rows[2].strip("|").split("|")]
    return dict(zip(header, values))


def _expected(per_class, counts) -> dict:
    groups = {**shot_groups(counts), **frequency_thirds(counts)}
    out = {"overall": f"{sum(per_class) / len(per_class):.2f}"}  # a balanced test split: equal class weights
    for g, members in groups.items():
        key = f"{g} ({len(members)} cls)"
        out[key] = f"{sum(per_class[c] for c in members) / len(members):.2f}" if members else "—"
    return out


def _eval(args, capsys):
    code = main(["eval", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_state_dict_prints_the_group_table(ev_model, ev_reference, capsys):
    _, path = ev_model
    code, out, err = _eval(["--checkpoint", path, "--model", ARCH, "--dataset", "fmnist-lt", "--device", "cpu"], capsys)
    assert code == 0, err
    counts = exponential_profile(6000, 10, 100)
    row = _table(out)
    assert row["model"] == ARCH and row["checkpoint"] == "tiny.pt"
    assert {k: row[k] for k in _expected(ev_reference, counts)} == _expected(ev_reference, counts)
    assert list(row) == ["model", "checkpoint", "overall", "many (8 cls)", "medium (2 cls)", "few (0 cls)",
                         "head (3 cls)", "middle (4 cls)", "tail (3 cls)"]
    assert 20 < float(row["overall"]) < 95 and min(ev_reference) > 0  # trained a little: neither chance nor perfect
    assert "fmnist-lt test: 10,000 images, cpu" in out
    assert "at imbalance factor 100 (14,886 images, 6000 down to 60 per class)" in out
    assert "No class falls in few" in out


def test_imbalance_factor_and_dataset_options_set_the_groups(ev_model, ev_reference, capsys):
    _, path = ev_model
    base = ["--checkpoint", path, "--model", ARCH, "--dataset", "fmnist-lt", "--device", "cpu"]
    code, out, _ = _eval(base + ["--imbalance-factor", "10"], capsys)
    assert code == 0
    row = _table(out)
    assert "many (10 cls)" in row and row["medium (0 cls)"] == "—"
    assert row == {**row, **_expected(ev_reference, exponential_profile(6000, 10, 10))}
    code, out, _ = _eval(base + ["--dataset-option", "n_max=600"], capsys)
    counts = exponential_profile(600, 10, 100)  # 600 ... 6: all three shot groups populated
    row = _table(out)
    assert row == {**row, **_expected(ev_reference, counts)} and "few (3 cls)" in row
    assert f"({sum(counts):,} images, 600 down to 6 per class)" in out


def test_train_split_and_per_class_and_json(ev_model, tmp_path, capsys):
    model, path = ev_model
    js = tmp_path / "out" / "eval.json"
    code, out, _ = _eval(["--checkpoint", path, "--model", ARCH, "--dataset", "fmnist-lt", "--split", "train",
                          "--dataset-option", "n_max=600", "--device", "cpu", "--per-class", "--json", js], capsys)
    assert code == 0
    assert "fmnist-lt train: 1,485 images" in out and "training split itself" in out
    x, y = _normalised("fmnist-lt", "train", n_max=600)
    with torch.inference_mode():
        acc = 100.0 * float((model(x).argmax(1) == y).float().mean())
    assert _table(out)["overall"] == f"{acc:.2f}"  # the train split is imbalanced: image-weighted overall
    doc = json.loads(js.read_text())
    assert doc["split"] == "train" and doc["images"] == 1485 and len(doc["per_class_acc"]) == 10
    assert doc["class_counts"] == exponential_profile(600, 10, 100) and doc["group_sizes"]["many"] == 4
    assert doc["data_options"] == {"n_max": 600}
    per_class_rows = [line for line in out.splitlines() if re.match(r"\|\s+\d+\s+\|", line)]
    assert len(per_class_rows) == 10 and per_class_rows[0].split("|")[2].strip() == "600"


@pytest.mark.parametrize("layout", ["timm", "epoch"])
def test_training_checkpoints(layout, ev_model, ev_reference, tmp_path, capsys):
    """timm's training checkpoint (`state_dict` with DDP's `module.` prefix, `args` as a Namespace) and the
    harness's epoch checkpoint of an unfinished run (`student` beside optimiser and loop state)."""
    model, _ = ev_model
    ckpt = tmp_path / "checkpoint-3.pth.tar"
    if layout == "timm":
        torch.save({"epoch": 3, "arch": ARCH, "args": argparse.Namespace(lr=0.05),
                    "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.save({"student": model.state_dict(), "method": {}, "optimizer": opt.state_dict(),
                    "loop": {"epoch": 2, "step": 0, "history": [{"loss": 1.0}], "best": {}, "final": {},
                             "running": {"loss": torch.zeros(())}, "rng": None}}, ckpt)
    code, out, err = _eval(["--checkpoint", ckpt, "--model", ARCH, "--dataset", "fmnist-lt", "--device", "cpu"], capsys)
    assert code == 0, err
    assert _table(out)["overall"] == f"{sum(ev_reference) / 10:.2f}"


def test_checkpoint_that_does_not_fit_fails_in_one_line(tmp_path, capsys):
    wrong = tmp_path / "c100.pt"
    torch.save(create_model(ARCH, num_classes=100, in_chans=1).state_dict(), wrong)
    code, out, err = _eval(["--checkpoint", wrong, "--model", ARCH, "--dataset", "fmnist-lt", "--device", "cpu"],
                           capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "does not fit" in err and "shape mismatches (file vs model)" in err and "[100, " in err and "[10, " in err
    assert "--model" in err and "--dataset" in err
    code, _, err = _eval(["--checkpoint", wrong, "--model", "cifar_cnn_small", "--dataset", "fmnist-lt"], capsys)
    assert code == 2 and "missing keys" in err and "unexpected keys" in err
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    code, _, err = _eval(["--checkpoint", tmp_path / "junk.pt", "--model", ARCH, "--dataset", "fmnist-lt"], capsys)
    assert code == 2 and "junk.pt: cannot read weights" in err and err.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--model", ARCH], "eval needs --checkpoint, --model and --dataset (missing: --checkpoint, --dataset)"),
    (["--checkpoint", "absent.pt", "--model", ARCH, "--dataset", "fmnist-lt"], "checkpoint absent.pt not found"),
    (["--run-id", "x", "--model", ARCH], "drop --model"),
    (["--checkpoint", "a.pt", "--model", ARCH, "--dataset", "fmnist-lt", "--dataset-option", "n_max"],
     "--dataset-option takes KEY=VALUE"),
])
def test_bad_command_lines(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.pt").write_bytes(b"")
    code, _, err = _eval(args, capsys)
    assert code == 2 and message in err, err


@pytest.mark.slow  # trains a teacher and a student (1 epoch each on 1,485 images)
def test_run_id_reproduces_the_records(tmp_path, write_suite, capsys):
    """The harness's own records: `eval --run-id` gives exactly the final numbers of the teacher and student."""
    suite = write_suite(methods=("ce",))
    out = tmp_path / "res"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    records = {r["role"]: r for r in (json.loads(p.read_text()) for p in (out / "runs").glob("*.json"))}
    assert set(records) == {"teacher", "student"}
    for role, rec in records.items():
        weights = out / "checkpoints" / ("teachers" if role == "teacher" else "students") / f"{rec['run_id']}.pt"
        if not weights.is_file():
            pytest.fail(f"the harness kept no {role} weights at {weights}")
        code, text, err = _eval(["--run-id", rec["run_id"], "--out", out], capsys)
        assert code == 0, err
        row = _table(text)
        final = rec["final"]
        assert row["overall"] == f"{final['overall']:.2f}"
        for g in ("many", "medium", "few", "head", "middle", "tail"):
            assert row[f"{g} ({final['group_sizes'][g]} cls)"] == f"{final[g]:.2f}", (role, g)
        assert row["model"] == "cifar_cnn_tiny" and row["checkpoint"] == rec["run_id"]
    # weights that were not kept: the message names where they were expected
    student = records["student"]
    (out / "checkpoints" / "students" / f"{student['run_id']}.pt").unlink()
    code, _, err = _eval(["--run-id", student["run_id"], "--out", out], capsys)
    assert code == 2 and "has no kept weights at" in err and "--checkpoint" in err
    code, _, err = _eval(["--run-id", student["run_id"][:-1] + "X", "--out", out], capsys)
    assert code == 2 and f"did you mean {student['run_id']}" in err
