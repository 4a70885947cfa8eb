"""The run store survives foreign and broken files in runs/: each is skipped with ONE warning naming it.

Valid records are copies of committed ones (results/runs/), renamed; the broken ones are written by hand.
"""
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.results import RunStore

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted((REPO / "results" / "runs").glob("*.json"))

BROKEN = {  # file name -> (bytes, a fragment of the reason the warning must give)
    "truncated.json": (b'{"run_id": "truncated", "status": "ok", "final": {"overall": 7', "not valid JSON"),
    "empty_object.json": (b"{}", "missing run_id"),
    "a_list.json": (b"[1, 2]", "a JSON list"),
    "binary.json": (bytes(range(256)) * 4, "not valid JSON"),
    "other_schema.json": (json.dumps({"name": "some other tool", "version": 3, "items": []}).encode(), "missing run_id"),
}


def _record(role: str) -> dict:
    """A committed record of ``role`` (teacher/student), as parsed JSON."""
    for path in COMMITTED:
        rec = json.loads(path.read_text())
        if rec.get("role") == role and rec.get("status") == "ok":
            return rec
    pytest.skip(f"no committed {role} record in results/runs")


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
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
