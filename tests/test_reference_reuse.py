"""A method developer's loop: a one-file method trains one student, no teacher (the committed reference
teacher, pinned by sha256, is copied), and is ranked beside the reference rows of the same settings.

The reference is built here (tiny suite, 1 epoch) with the lead's flow, ``check --update-reference --out``,
into a folder that ``LTKD_REFERENCE_ROOT`` points at.
"""
import csv
import io
import shutil
import textwrap
from pathlib import Path

import pytest

from benchmark.fileio import sha256_file
from benchmark.reference import REFERENCE_ENV, SUMS, read_sums
from conftest import call_cli, tiny_suite

# ``mykd``: a copy of kd under another name, in its own file (the README's one-file method)
MYKD = textwrap.dedent('''
    """mykd.py: kd under another name (a method developer's first file)."""
    from methods import register_method
    from methods.kd import KD


    @register_method("mykd")
    class MyKD(KD):
        """KD, copied."""

        summary = "my copy of KD"
''')


def _suite(folder: Path, name: str, methods, plugins=()) -> Path:
    path = folder / name
    path.write_text(tiny_suite(methods, plugins=plugins))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``<root>/tiny/``: the tiny suite's reference (ce, kd, teacher; seeds 0 and 1), written by ``check
    --update-reference``; the developer's suite runs seed 0 only."""
    from benchmark.cli import main

    root = tmp_path_factory.mktemp("refroot")
    suite = _suite(root, "tiny.yaml", ("ce", "kd"))
    rc = main(["check", "--suite", str(suite), "--update-reference", "--reference", str(root / "tiny_ref.json"),
               "--out", str(root / "tiny"), "--no-progress", "--seeds", "0", "1"])
    assert rc == 0
    return root


@pytest.fixture
def developer(tmp_path, monkeypatch, reference):
    """A checkout with ``mykd.py`` on the path and the reference root set; returns (suite of mykd, out folder)."""
    import methods

    (tmp_path / "mykd.py").write_text(MYKD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(REFERENCE_ENV, str(reference))
    before = dict(methods._REGISTRY)
    yield _suite(tmp_path, "tiny.yaml", ("mykd",), plugins=("mykd",)), tmp_path / "results"
    methods._REGISTRY.clear()
    methods._REGISTRY.update(before)
    import sys
    sys.modules.pop("mykd", None)


def _teacher_id(reference: Path) -> str:
    (name,) = [n for n in read_sums(reference / "tiny") if "_s0_" in n]
    return name[:-len(".pt")]


def test_update_reference_saves_teacher_weights_pinned_by_sha256(reference):
    ref = reference / "tiny"
    sums = read_sums(ref)
    assert len(sums) == 2  # one teacher per seed
    name, digest = sorted(sums.items())[0]
    assert (ref / "runs" / name.replace(".pt", ".json")).is_file()
    assert sha256_file(ref / "teachers" / name) == digest
    assert (ref / "teachers" / name).read_bytes() == (ref / "checkpoints" / "teachers" / name).read_bytes()


def test_new_method_trains_one_student_no_teacher_ranked_beside_reference(developer, reference, capsys):
    suite, out = developer
    rc, text, _ = call_cli(capsys, ["run", "--suite", suite, "--out", out, "--no-progress"])
    assert rc == 0, text
    assert "done: 1 ran, 0 skipped, 0 failed; teachers: 0 trained, 1 reused, 0 failed" in text
    tid = _teacher_id(reference)
    assert (out / "checkpoints" / "teachers" / f"{tid}.pt").read_bytes() == \
        (reference / "tiny" / "teachers" / f"{tid}.pt").read_bytes()
    md = (out / "leaderboard.md").read_text()
    for name in ("**teacher (ce) (ref)**", "| kd (ref) ", "| ce (ref) ", "| mykd "):
        assert name in md, name
    assert "Reference rows (marked `(ref)`)" in md and "commit" in md
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text()))}
    assert {m: rows[m]["source"] for m in rows} == {"teacher (ce)": "reference", "ce": "reference",
                                                     "kd": "reference", "mykd": "local"}
    # the bit-identical teacher: mykd (kd's code) reproduces the reference kd student, prediction for prediction,
    # so its paired Δ vs the reference kd (computed from the reference's stored predictions) is exactly 0
    assert float(rows["mykd"]["delta_overall_vs_kd"]) == 0.0 and float(rows["mykd"]["delta_overall_hi"]) == 0.0
    assert rows["mykd"]["kd_reference"] == rows["kd"]["settings"]
    assert rows["ce"]["delta_overall_vs_kd"] not in ("", None)
    # the reference rows keep all their seeds (the copied teacher gives way to the reference's teacher row)
    assert {m: rows[m]["seeds"] for m in rows} == {"teacher (ce)": "2", "ce": "2", "kd": "2", "mykd": "1"}
    assert "leaderboard.html" in {p.name for p in out.iterdir()}
    (svg,) = (out / "plots").glob("*_tail_vs_overall.svg")  # the plots mark the reference rows too
    assert "kd (ref)" in svg.read_text() and "mykd" in svg.read_text()


def test_no_reference_flag_trains_the_teacher_and_shows_local_rows_only(developer, capsys):
    suite, out = developer
    rc, text, _ = call_cli(capsys, ["run", "--suite", suite, "--out", out, "--no-progress", "--no-reference"])
    assert rc == 0, text
    assert "teachers: 1 trained, 0 reused" in text
    md = (out / "leaderboard.md").read_text()
    assert "(ref)" not in md and "| mykd " in md


def test_local_row_replaces_the_reference_row_of_its_method(developer, reference, capsys):
    suite, out = developer
    kd_suite = _suite(suite.parent, "tiny_kd.yaml", ("kd",))
    rc, text, _ = call_cli(capsys, ["run", "--suite", kd_suite, "--out", out, "--no-progress"])
    assert rc == 0, text
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert [(r["method"], r["source"]) for r in rows if r["method"] == "kd"] == [("kd", "local")]
    assert ("ce", "reference") in {(r["method"], r["source"]) for r in rows}


def test_changed_recipe_is_not_mixed_with_reference_rows(developer, capsys):
    suite, out = developer
    rc, text, _ = call_cli(capsys, ["run", "--suite", suite, "--out", out, "--no-progress", "student_train.lr=0.04"])
    assert rc == 0, text
    assert "reference rows of" in text and "not shown" in text and "recipe.lr=0.04" in text
    md = (out / "leaderboard.md").read_text()
    assert "kd (ref)" not in md and "ce (ref)" not in md and "| mykd " in md


def _alter(reference: Path, tmp_path: Path, how: str) -> Path:
    """A copy of the reference whose teacher weights are altered (``flip``) or deleted (``delete``)."""
    root = tmp_path / "altered"
    shutil.copytree(reference / "tiny", root / "tiny", ignore=shutil.ignore_patterns("checkpoints"))
    path = root / "tiny" / "teachers" / f"{_teacher_id(reference)}.pt"
    if how == "flip":
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    return root


@pytest.mark.parametrize("how, message", [("flip", "fail their sha256 check"), ("delete", "are missing")])
def test_bad_committed_teacher_is_trained_again_with_a_message(developer, reference, tmp_path, monkeypatch, capsys,
                                                               how, message):
    suite, out = developer
    monkeypatch.setenv(REFERENCE_ENV, str(_alter(reference, tmp_path, how)))
    rc, text, err = call_cli(capsys, ["run", "--suite", suite, "--out", out, "--no-progress"])
    assert rc == 0, text
    line = [ln for ln in (text + err).splitlines() if message in ln]
    assert len(line) == 1 and "training the teacher here instead" in line[0], text + err
    assert "teachers: 1 trained, 0 reused" in text



def test_retrain_stale_keeps_the_copied_reference_teacher(developer, capsys):
    """The copied teacher was recorded by other code (the reference's fingerprint), yet it is pinned by its
    sha256: ``--retrain-stale`` (the loop after editing a method) must not train it again."""
    suite, out = developer
    assert call_cli(capsys, ["run", "--suite", suite, "--out", out, "--no-progress"])[0] == 0
    rc, text, _ = call_cli(capsys, ["run", "--suite", suite, "--out", out, "--no-progress", "--retrain-stale"])
    assert rc == 0, text
    assert "done: 0 ran, 1 skipped, 0 failed; teachers: 0 trained, 1 reused, 0 failed" in text
    assert "--retrain-stale retrains it" not in text
