"""Published numbers beside ours (configs/published.yaml, benchmark/published.py) and the balanced CIFAR-100 suite.

Records here are hand-made (no training): their final / best accuracies are chosen, so the `paper` column's
difference is known exactly. The published values asserted are copied from the sources' tables
(mdistiller README, RepDistiller README), not from the data file under test.
"""
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import published
from benchmark.config import ConfigError, list_suites, load_suite
from benchmark.results import RunStore, write_leaderboard

GOOD = ("{paper: P, table: T1, source: S, dataset: cifar100-lt, imbalance_factor: 1, teacher: cifar_resnet32x4, "
        "student: cifar_resnet8x4, method: kd, value: 73.33, epoch: best, rule: 'best epoch, mean of 5 runs', "
        "primary: true, epochs: 240}")


def write_published(tmp_path: Path, *entries: str) -> Path:
    """A published-numbers file: a comment line, ``entries:``, then one flow-style entry per line (line 3, 4, ...)."""
    path = tmp_path / "published.yaml"
    path.write_text("# test file\nentries:\n" + "".join(f"  - {e}\n" for e in entries))
    return path


def record(out: Path, method: str, seed: int, final: float, best: float, *, teacher: str = "cifar_resnet32x4",
           student: str = "cifar_resnet8x4", imb: float = 1.0, epochs: int = 240, dataset: str = "cifar100-lt",
           options: dict = None, role: str = "student") -> dict:
    """A hand-made ok record (a student, or with ``role="teacher"`` the teacher ``student``) with the given final
    and best overall accuracy (10 balanced classes)."""
    def part(acc: float, epoch: int) -> dict:
        per_class = [acc] * 10
        return {"epoch": epoch, "overall": acc, "per_class_acc": per_class, "per_class_test_count": [10] * 10,
                "many": acc, "medium": None, "few": None, "head": acc, "middle": acc, "tail": acc,
                "group_sizes": {"many": 10, "medium": 0, "few": 0, "head": 4, "middle": 3, "tail": 3}}

    recipe = {"epochs": epochs, "batch_size": 64, "lr": 0.05, "schedule": "multistep", "weight_decay": 5e-4}
    rec = {"run_id": f"r_{method}_{teacher}_{student}_{imb:g}_{epochs}_{dataset}_{bool(options)}_s{seed}",
           "status": "ok", "role": role, "dataset": dataset, "imbalance_factor": imb, "data_seed": 0,
           "data_options": options or {}, "num_classes": 10, "class_counts": [500] * 10, "seed": seed,
           "student_arch": student, "teacher_arch": None if role == "teacher" else teacher, "method": method,
           "method_params": {}, "recipe": recipe, "teacher_recipe": None if role == "teacher" else recipe,
           "base_lr": None,
           "code": {"family": "2", "fingerprint": "0123456789ab", "git_commit": "f" * 40, "git_dirty": False},
           "final": part(final, epochs), "best": part(best, epochs - 30)}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    return rec


def leaderboard(out: Path):
    """(markdown, csv rows by method) of the records in ``out``."""
    md = write_leaderboard(RunStore(out).records(), out)
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    return md, {r["method"]: r for r in rows}


def md_cell(md: str, method: str) -> str:
    """The `paper` cell of ``method``'s row in the Markdown table."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(ln for ln in lines if ln.strip("|").split("|")[0].strip() == method)
    return [c.strip() for c in row.strip("|").split("|")][header.index("paper")]


# ----------------------------------------------------------------------------- the committed file

def test_committed_file_loads_and_holds_the_cited_numbers():
    items = published.load_published()
    by = {(e.teacher, e.student, e.method): e for e in items if e.role == "student"}
    # mdistiller README, "Decoupled Knowledge Distillation" > On CIFAR-100, first table
    assert by["cifar_resnet32x4", "cifar_resnet8x4", "kd"].value == 73.33
    dkd = by["cifar_resnet32x4", "cifar_resnet8x4", "dkd"]
    assert (dkd.value, dkd.epoch, dkd.runs, dkd.primary, dkd.arxiv) == (76.32, "best", 5, True, "2203.08679")
    assert by["cifar_resnet56", "cifar_resnet20", "dkd"].value == 71.97
    assert by["cifar_wrn_40_2", "cifar_wrn_16_2", "dkd"].value == 76.23
    # RepDistiller README table 1 (CRD), resnet32x4 -> resnet8x4 column
    assert by["cifar_resnet32x4", "cifar_resnet8x4", "crd"].value == 75.51
    assert by["cifar_resnet32x4", "cifar_resnet8x4", "fitnet"].value == 73.50
    # mdistiller's KD row reprints CRD's: marked secondary
    assert by["cifar_resnet32x4", "cifar_resnet8x4", "kd"].primary is False
    assert all(e.dataset == "cifar100-lt" and e.imbalance_factor == 1 and e.epochs == 240 for e in items)
    text = published.PUBLISHED_FILE.read_text().splitlines()
    assert all("value: " in text[e.line - 1] and f"{e.value:.2f}" in text[e.line - 1] for e in items)


def test_published_file_is_not_a_suite():
    assert "published" not in list_suites() and "cifar100" in list_suites()
    with pytest.raises(ConfigError, match="unknown suite 'published'"):
        load_suite("published")


# ----------------------------------------------------------------------------- validation: file and line

def test_unknown_method_names_file_and_line(tmp_path):
    path = write_published(tmp_path, GOOD, GOOD.replace("method: kd", "method: dkdd"))
    with pytest.raises(ConfigError) as err:
        published.load_published(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:4: entries[1].method: unknown method 'dkdd'") and "Did you mean dkd" in msg


def test_unknown_dataset_names_file_and_line(tmp_path):
    path = write_published(tmp_path, GOOD.replace("cifar100-lt", "cifar-100-lt"), GOOD)
    with pytest.raises(ConfigError) as err:
        published.load_published(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: entries[0].dataset: unknown dataset 'cifar-100-lt'")
    assert "Did you mean cifar100-lt" in msg


def test_unknown_model_names_file_and_line(tmp_path):
    path = write_published(tmp_path, GOOD.replace("method: kd", "method: dkd"), GOOD,
                           GOOD.replace("student: cifar_resnet8x4", "student: resnet8x4").replace("kd", "at"))
    with pytest.raises(ConfigError) as err:
        published.load_published(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:5: entries[2].student: unknown model 'resnet8x4'")
    assert "cifar_resnet8x4" in msg.split("CIFAR zoo")[0]  # the close match comes first


def test_unknown_reporting_rule_names_file_and_line(tmp_path):
    path = write_published(tmp_path, GOOD.replace("epoch: best", "epoch: last"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: entries[0].epoch: unknown reporting rule 'last'")):
        published.load_published(path)


def test_missing_value_names_file_and_line(tmp_path):
    path = write_published(tmp_path, GOOD, GOOD.replace(", value: 73.33", ""))
    with pytest.raises(ConfigError, match=re.escape(f"{path}:4: entries[1]: missing required key 'value'")):
        published.load_published(path)


def test_value_outside_percent_is_refused(tmp_path):
    path = write_published(tmp_path, GOOD.replace("73.33", "0.7333"), GOOD.replace("73.33", "7333").replace("kd", "at"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}:4: entries[1].value: 7333.0 is not an accuracy")):
        published.load_published(path)


def test_same_setting_twice_names_both_lines(tmp_path):
    path = write_published(tmp_path, GOOD, GOOD.replace("method: kd", "method: at"), GOOD.replace("73.33", "73.5"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}:5: the same setting, metric and epochs as line 3")):
        published.load_published(path)


# ----------------------------------------------------------------------------- the `paper` column

def test_matching_records_get_the_difference_on_the_best_epoch(tmp_path):
    """Two seeds of kd, resnet32x4 -> resnet8x4, balanced CIFAR-100, 240 epochs: the committed mdistiller entry."""
    record(tmp_path, "kd", 0, final=72.0, best=73.50)
    record(tmp_path, "kd", 1, final=72.4, best=74.16)  # best mean 73.83: +0.50 against 73.33
    md, rows = leaderboard(tmp_path)
    assert md_cell(md, "kd") == "+0.50 vs 73.33 (best)"
    row = rows["kd"]
    assert (row["paper_value"], row["paper_diff"], row["paper_epoch"]) == ("73.33", "0.50", "best")
    assert "mdistiller README.md" in row["paper_source"] and "secondary source" in row["paper_source"]
    assert "best epoch" in row["paper_rule"]
    notes = md.split(published.PAPER_PARAGRAPH)[1]
    assert "kd (cifar_resnet32x4 → cifar_resnet8x4), overall 73.33" in notes and "compared with `best overall`" in notes
    assert "mean of 2 seeds" in notes


def test_best_and_final_rules_are_compared_with_best_and_final(tmp_path, monkeypatch):
    path = write_published(tmp_path, GOOD.replace("73.33", "74.0"),  # kd: best rule
                           GOOD.replace("method: kd", "method: dkd").replace("73.33", "69.0")
                           .replace("epoch: best", "epoch: final"))
    monkeypatch.setattr(published, "PUBLISHED_FILE", path)
    out = tmp_path / "res"
    record(out, "kd", 0, final=70.0, best=75.0)
    record(out, "dkd", 0, final=70.0, best=75.0)
    md, rows = leaderboard(out)
    assert md_cell(md, "kd") == "+1.00 vs 74.00 (best)" and rows["kd"]["paper_diff"] == "1.00"
    assert md_cell(md, "dkd") == "+1.00 vs 69.00 (final)" and rows["dkd"]["paper_diff"] == "1.00"
    assert "dkd (cifar_resnet32x4 → cifar_resnet8x4), overall 69.00" in md and "our final-epoch overall" in md


@pytest.mark.parametrize("change", [{"imb": 100.0}, {"teacher": "cifar_wrn_40_2"}, {"student": "cifar_resnet20"},
                                    {"epochs": 24}, {"dataset": "cifar10-lt"}, {"options": {"n_max": 250}}],
                         ids=lambda c: next(iter(c)))
def test_a_setting_that_matches_no_entry_gets_none(tmp_path, change):
    record(tmp_path, "kd", 0, final=72.0, best=73.5, **change)
    md, rows = leaderboard(tmp_path)
    assert md_cell(md, "kd") == "—"
    assert rows["kd"]["paper_value"] == "" and rows["kd"]["paper_diff"] == ""
    assert published.PAPER_PARAGRAPH not in md


def test_a_teacher_row_is_set_beside_the_published_teacher(tmp_path):
    """CRD's README gives resnet32x4 79.42 (table 1, Teacher row); a student row of that arch does not match it."""
    record(tmp_path, "ce", 0, final=79.0, best=80.0, student="cifar_resnet32x4", role="teacher")
    record(tmp_path, "ce", 0, final=72.0, best=72.0)  # the student alone: CRD's Student row, resnet8x4 72.50
    md = write_leaderboard(RunStore(tmp_path).records(), tmp_path)
    assert md_cell(md, "**teacher (ce)**") == "+0.58 vs 79.42 (best)"
    assert md_cell(md, "ce") == "-0.50 vs 72.50 (best)"


def test_a_method_without_a_published_number_gets_none(tmp_path):
    record(tmp_path, "la_kd", 0, final=72.0, best=73.5)
    md, rows = leaderboard(tmp_path)
    assert md_cell(md, "la_kd") == "—" and rows["la_kd"]["paper_value"] == ""


# ----------------------------------------------------------------------------- the balanced CIFAR-100 suite

def test_cifar100_suite_is_mdistillers_protocol():
    cfg = load_suite("cifar100")
    assert cfg.datasets[0].name == "cifar100-lt" and cfg.datasets[0].imbalance_factors == [1]
    for r in (cfg.teacher_train, cfg.student_train):
        assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay, r.milestones, r.gamma, r.eval_every) == \
            (240, 64, 0.05, 0.9, 5e-4, [150, 180, 210], 0.1, 1)
        assert r.amp is False and r.augment == "crop_flip"  # mdistiller: fp32, RandomCrop(32, 4) + flip
    assert {(p.teacher, p.student, p.method_params["dkd"]["beta"]) for p in cfg.pairs} == {
        ("cifar_resnet32x4", "cifar_resnet8x4", 8.0), ("cifar_wrn_40_2", "cifar_wrn_16_2", 6.0),
        ("cifar_resnet56", "cifar_resnet20", 2.0)}
    assert cfg.methods == ["ce", "kd", "dkd", "fitnet", "at", "rkd", "crd", "reviewkd"] and len(cfg.seeds) == 5
    assert cfg.method_params["dkd"]["warmup"] == 20 and cfg.method_params["reviewkd"]["feat_weight"] == 5.0


@pytest.fixture(scope="module")
def cifar100_full(tmp_path_factory):
    """CIFAR-100 in torchvision's real pickle format at full size (500 train images per class), 1 test image each."""
    from builders import ds_write_cifar

    root = tmp_path_factory.mktemp("cifar")
    ds_write_cifar(root, "cifar100-lt", 500, 1)
    return root


def test_imbalance_factor_1_keeps_every_training_image_once(cifar100_full):
    import datasets
    from builders import original_index

    train = datasets.build_dataset("cifar100-lt", root=cifar100_full, split="train", imbalance_factor=1, seed=3)
    assert len(train) == 50000 and train.class_counts == [500] * 100
    idx = original_index(torch.from_numpy(np.ascontiguousarray(train.images)))
    assert np.array_equal(idx, np.arange(50000))  # all of them, in file order


def test_cifar100_suite_dry_run_lists_every_run(cifar100_full, tmp_path, capsys):
    from benchmark.cli import main

    rc = main(["run", "--suite", "cifar100", "--dry-run", "--root", str(cifar100_full), "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("to do")]
    assert len(lines) == 3 * 5 + 3 * 8 * 5 and all("cifar100-lt IF 1," in ln for ln in lines)
    assert all("240 ep x batch 64, lr 0.05 multistep" in ln and "MISSING" not in ln for ln in lines)
    assert sum("cifar_resnet32x4->cifar_resnet8x4 dkd" in ln for ln in lines) == 5
    assert out.strip().splitlines()[-1].startswith("135 runs on ")
