"""Records that cannot lie: report, check and the verdict recompute a record's numbers from its predictions.

Fixtures are copies of the committed quick reference (results/reference/quick/runs: records with predictions),
with their checksums removed, as records made before checksums existed; the golden values are the numbers each
record stored when it was trained (the trainer's own evaluation, not the recomputation under test).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.fileio import sha256_file
from benchmark.integrity import CHECKSUM_KEY, recompute, verify_record, verify_records
from conftest import call_cli

REF = Path(__file__).resolve().parent.parent / "results" / "reference" / "quick" / "runs"


def _ref_record(method: str) -> Path:
    return sorted(REF.glob(f"*-cifar_cnn_tiny_{method}_s0_*.json"))[0]


@pytest.fixture
def folder(tmp_path):
    """A results folder holding copies of the reference teacher, kd and ce (records and predictions)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for path in [sorted(REF.glob("*_teacher_*.json"))[0], _ref_record("kd"), _ref_record("ce")]:
        rec = json.loads(path.read_text())
        rec.pop(CHECKSUM_KEY, None)  # as made before checksums existed
        (runs / path.name).write_text(json.dumps(rec))
        shutil.copy(path.with_suffix(".predictions.npz"), runs)
    return tmp_path


def _stored(method: str, metric: str = "overall") -> float:
    """The number the committed reference record of ``method`` (seed 0) stored when it was trained."""
    return json.loads(_ref_record(method).read_text())["final"][metric]


def _kd(folder: Path) -> Path:
    return next((folder / "runs").glob("*_kd_s0_*.json"))


def _edit(path: Path, **changes) -> None:
    rec = json.loads(path.read_text())
    for key, value in changes.items():
        if key in ("overall", "tail"):
            rec["final"][key] = value
        else:
            rec[key] = value
    path.write_text(json.dumps(rec))


def _csv(folder: Path) -> dict:
    import csv

    with open(folder / "leaderboard.csv", newline="") as fh:
        return {r["method"]: r for r in csv.DictReader(fh)}


def test_reference_records_without_checksum_verify_by_recomputation(folder):
    recs = [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))]
    results = [verify_record(r, folder) for r in recs]
    assert [v.status for v in results] == ["verified"] * 3
    assert all("recomputation only" in v.message for v in results)


def test_recompute_gives_the_numbers_the_trainer_stored(folder):
    rec = json.loads(_kd(folder).read_text())
    with np.load(_kd(folder).with_suffix(".predictions.npz")) as z:
        redo = recompute(rec, z["pred"].astype(np.int64), z["target"].astype(np.int64))
    assert redo["overall"] == pytest.approx(_stored("kd"), abs=1e-6)
    assert redo["tail"] == pytest.approx(_stored("kd", "tail"), abs=1e-6)


def test_report_skips_a_hand_edited_accuracy_with_one_warning(folder, capsys):
    _edit(_kd(folder), overall=99.0, tail=99.0)
    rc, out, err = call_cli(capsys, ["report", "--out", folder, "--no-reference"])
    assert rc == 0
    lines = [line for line in err.splitlines() if "refused" in line]
    assert lines == [f"warning: {_kd(folder)}: refused, final.overall says 99.00 but its predictions give "
                     f"{_stored('kd'):.2f}; "
                     "rerun the run (delete the record) or restore its files"]
    assert "| kd " not in out and set(_csv(folder)) == {"teacher (ce)", "ce"}


def test_report_refuses_a_swapped_predictions_file_by_its_checksum(folder, capsys):
    kd = _kd(folder)
    _edit(kd, **{CHECKSUM_KEY: sha256_file(kd.with_suffix(".predictions.npz"))})
    ce = next((folder / "runs").glob("*_ce_s0_*.predictions.npz"))
    shutil.copy(ce, kd.with_suffix(".predictions.npz"))  # another run's predictions under kd's name
    rc, _, err = call_cli(capsys, ["report", "--out", folder, "--no-reference"])
    assert rc == 0
    assert f"warning: {kd}: refused, the checksum of {kd.stem}.predictions.npz is not the one the record names" in err
    assert "kd" not in _csv(folder)


def test_a_swapped_predictions_file_without_checksum_is_refused_by_its_numbers(folder):
    kd = _kd(folder)
    ce = next((folder / "runs").glob("*_ce_s0_*.predictions.npz"))
    shutil.copy(ce, kd.with_suffix(".predictions.npz"))
    kept, refused, _ = verify_records([json.loads(kd.read_text())], folder)
    assert kept == [] and refused == [f"{kd}: refused, final.overall says {_stored('kd'):.2f} but its predictions give "
                                      f"{_stored('ce'):.2f}; "
                                      "rerun the run (delete the record) or restore its files"]


def test_a_missing_predictions_file_is_marked_unverified(folder, capsys):
    kd = _kd(folder)
    kd.with_suffix(".predictions.npz").unlink()
    rc, out, err = call_cli(capsys, ["report", "--out", folder, "--no-reference"])
    assert rc == 0
    assert (f"note: {kd}: no predictions file {kd.stem}.predictions.npz; its numbers cannot be recomputed and are "
            "marked unverified") in err
    rows = _csv(folder)
    assert rows["kd"]["verified"] == "False" and rows["ce"]["verified"] == "True"
    assert "| kd †" in out and "† unverified: no stored test predictions" in out


def test_a_corrupt_predictions_file_is_refused(folder):
    kd = _kd(folder)
    kd.with_suffix(".predictions.npz").write_bytes(b"PK\x03\x04 not a zip")
    _, refused, _ = verify_records([json.loads(kd.read_text())], folder)
    assert len(refused) == 1 and f"{kd.stem}.predictions.npz is unreadable" in refused[0]


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """A tiny suite trained once by ``check --update-reference`` (its records carry checksums) and its reference."""
    from conftest import tiny_suite

    base = tmp_path_factory.mktemp("gate")
    suite = base / "tiny.yaml"
    suite.write_text(tiny_suite(("ce", "kd")))
    from benchmark.cli import main

    assert main(["check", "--suite", str(suite), "--out", str(base / "out"), "--reference", str(base / "ref.json"),
                 "--update-reference", "--no-progress"]) == 0
    return base


def test_trained_records_store_the_checksum_of_their_predictions(checked):
    for path in (checked / "out" / "runs").glob("*.json"):
        rec = json.loads(path.read_text())
        assert rec[CHECKSUM_KEY] == sha256_file(path.with_suffix(".predictions.npz"))


def _gate(checked: Path, tmp_path: Path, capsys, tamper) -> tuple:
    out = tmp_path / "out"
    shutil.copytree(checked / "out", out)
    tamper(next((out / "runs").glob("*_kd_s0_*.json")))
    return call_cli(capsys, ["check", "--suite", checked / "tiny.yaml", "--out", out, "--reference",
                             checked / "ref.json", "--no-progress"]), out


def test_check_passes_untampered_records(checked, tmp_path, capsys):
    (rc, out, _), _ = _gate(checked, tmp_path, capsys, lambda kd: None)
    assert rc == 0 and "check passed" in out


def test_check_exits_2_on_a_hand_edited_accuracy(checked, tmp_path, capsys):
    (rc, out, _), folder = _gate(checked, tmp_path, capsys, lambda kd: _edit(kd, overall=99.0))
    kd = next((folder / "runs").glob("*_kd_s0_*.json"))
    assert rc == 2
    assert [line for line in out.splitlines() if line.startswith("error:")] == [
        f"error: {kd}: refused, final.overall says 99.00 but its predictions give "
        f"{json.loads((checked / 'out' / 'runs' / kd.name).read_text())['final']['overall']:.2f}; rerun the run "
        "(delete the record) or restore its files"]


def test_check_exits_2_on_a_missing_predictions_file(checked, tmp_path, capsys):
    (rc, out, _), _ = _gate(checked, tmp_path, capsys, lambda kd: kd.with_suffix(".predictions.npz").unlink())
    assert rc == 2 and "no predictions file" in out and "(the record names a checksum: the file was removed)" in out
    assert "(check refuses it)" in out
