"""The run store survives foreign and broken files in runs/: each is skipped with ONE warning naming it.

Valid records are small hand-written ones in the schema the runner writes (that of results/runs/*.json,
three classes); the broken ones are written by hand too.
"""
import json
import re
import warnings
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.results import RunStore

BROKEN = {  # file name -> (bytes, a fragment of the reason the warning must give)
    "truncated.json": (b'{"run_id": "truncated", "status": "ok", "final": {"overall": 7', "not valid JSON"),
    "empty_object.json": (b"{}", "missing run_id"),
    "a_list.json": (b"[1, 2]", "a JSON list"),
    "binary.json": (bytes(range(256)) * 4, "not valid JSON"),
    "other_schema.json": (json.dumps({"name": "some other tool", "version": 3, "items": []}).encode(), "missing run_id"),
}


def _result(accs) -> dict:
    """An evaluation block (``final`` / ``best``) for three classes of 100 test images each."""
    return {"epoch": 1, "per_class_acc": accs, "per_class_test_count": [100, 100, 100],
            "overall": sum(accs) / 3, "many": accs[0], "medium": accs[1], "few": accs[2], "head": accs[0],
            "middle": accs[1], "tail": accs[2],
            "group_sizes": {"many": 1, "medium": 1, "few": 1, "head": 1, "middle": 1, "tail": 1}, "empty_groups": []}


def _record(role: str) -> dict:
    """A valid ok record of a teacher (``ce``) or a ``kd`` student, as the runner writes them."""
    student = role == "student"
    run_id = "toy_if10_t-s_kd_s0_0123456789" if student else "toy_if10_t_teacher_s0_9876543210"
    recipe = {"epochs": 1, "batch_size": 8, "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
              "schedule": "cosine", "milestones": [150, 180, 210], "gamma": 0.1, "warmup_epochs": 0,
              "augment": "flip", "eval_every": 1, "amp": True, "channels_last": True, "compile": False, "workers": 0,
              "eval_batch_size": 64, "sync_bn": False}
    accs = [90.0, 60.0, 20.0] if student else [95.0, 70.0, 10.0]
    return {"run_id": run_id, "status": "ok", "reason": None, "role": role, "suite": "toy", "dataset": "fmnist-lt",
            "imbalance_factor": 10.0, "data_seed": 0, "data_options": {}, "num_classes": 3,
            "class_counts": [120, 40, 12], "seed": 0, "student_arch": "cifar_cnn_tiny" if student else "cifar_cnn_small",
            "teacher_arch": "cifar_cnn_small" if student else None,
            "teacher_run_id": "toy_if10_t_teacher_s0_9876543210" if student else None,
            "method": "kd" if student else "ce", "method_params": {"temperature": 4.0, "alpha": 0.9} if student else {},
            "recipe": recipe, "base_lr": None, "config": {"name": "toy"}, "created": "2026-01-01T00:00:00+0000",
            "device": "cpu", "torch": "2", "torchvision": "0", "timm": "1", "python": "3.11", "ltkd_bench": "0.1.0",
            "git_commit": None, "git_dirty": None, "hostname": "test", "world_size": 1,
            "final": _result(accs), "best": _result(accs), "epochs": 1,
            "history": [{"epoch": 1, "lr": 0.1, "train_acc": 50.0, "loss": 1.0}],
            "wall_time_s": 1.0, "train_time_s": 1.0, "images_per_s": 172.0, "resumed_from": None}


def _write_broken(runs: Path) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    for name, (data, _) in BROKEN.items():
        (runs / name).write_bytes(data)


def _messages(caught) -> list:
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_records_skip_broken_files_with_one_warning_each(tmp_path):
    runs = tmp_path / "runs"
    _write_broken(runs)
    good = [_record("teacher"), _record("student")]
    for rec in good:
        (runs / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    renamed = dict(good[1], run_id="not_its_file_name")  # a valid record under another run's file name
    (runs / "misnamed.json").write_text(json.dumps(renamed))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count every warning of this one call
        records = RunStore(tmp_path).records()
    assert sorted(r["run_id"] for r in records) == sorted(r["run_id"] for r in good)
    messages = _messages(caught)
    assert len(messages) == len(BROKEN) + 1, messages
    for name, (_, why) in {**BROKEN, "misnamed.json": (b"", "does not match the file name")}.items():
        hits = [m for m in messages if str(runs / name) in m]
        assert len(hits) == 1 and why in hits[0] and "skipped" in hits[0], (name, hits)


def test_load_of_a_broken_record_means_redo(tmp_path):
    store = RunStore(tmp_path)
    store.runs.mkdir(parents=True)
    store.record_path("r1").write_text('{"run_id": "r1", "status": "ok"')  # cut short by a crash
    with pytest.warns(RuntimeWarning, match="r1.json: skipped, not valid JSON"):
        assert store.load("r1") is None
    assert store.load("absent") is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not store.exists("r1")


def test_report_writes_the_leaderboard_despite_broken_files(tmp_path, capsys):
    out = tmp_path / "res"
    _write_broken(out / "runs")
    student = _record("student")
    for rec in (_record("teacher"), student):
        (out / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["report", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    board = (out / "leaderboard.md").read_text()
    assert student["method"] in board and student["student_arch"] in board


TINY = """\
name: tiny-store
datasets:
  - name: fmnist-lt
    imbalance_factors: [100]
    options: {n_max: 600}
pairs:
  - {teacher: cifar_cnn_tiny, student: cifar_cnn_tiny}
methods: [ce, kd]
seeds: [0]
deterministic: true
teacher_train: &r {epochs: 1, batch_size: 64, lr: 0.05, schedule: cosine, augment: flip, eval_every: 1,
                   eval_batch_size: 2000}
student_train: *r
"""


@pytest.mark.slow  # trains a tiny teacher and two students (about a minute on 2 busy CPU cores)
def test_grid_runs_past_a_corrupt_record(tmp_path, capsys):
    """A corrupt record at the teacher's own path and foreign files in runs/: every run trains, all are listed."""
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    out = tmp_path / "res"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--dry-run"]) == 0
    ids = re.findall(r"fmnist-lt\S+_s0_[0-9a-f]{10}", capsys.readouterr().out)
    teacher = next(i for i in ids if "_teacher_" in i)
    _write_broken(out / "runs")
    (out / "runs" / f"{teacher}.json").write_text('{"run_id": "' + teacher + '", "status": "o')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = {r["run_id"]: r for r in RunStore(out).records()}
    assert set(ids) <= set(records) and all(records[i]["status"] == "ok" for i in ids)
    board = (out / "leaderboard.md").read_text()
    assert "kd" in board and "ce" in board
