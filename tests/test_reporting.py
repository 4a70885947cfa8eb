"""Reporting layer: settings-exact rows, paired bootstrap "Δ vs kd", csv/md/plot files (no training).

Every record and prediction file here is synthetic: built from chosen per-class accuracies, so the
expected numbers are known exactly.
"""
import csv
import io
import json
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from benchmark import paired
from benchmark.evaluate import summarize
from benchmark.leaderboard import build_rows
from benchmark.results import RunStore, regenerate, write_leaderboard
from benchmark.settings import settings_label, settings_of

REPO = Path(__file__).resolve().parent.parent
RECIPE = {"epochs": 6, "batch_size": 128, "lr": 0.1, "schedule": "cosine", "weight_decay": 5e-4, "augment": "flip"}
TEACHER_RECIPE = dict(RECIPE, epochs=10)


def class_counts(k: int, imb: float = 100.0, n_max: int = 600) -> list:
    """A long-tailed training profile of ``k`` classes (``n_max`` down to ``n_max / imb``)."""
    return [max(1, int(n_max * imb ** (-i / max(k - 1, 1)))) for i in range(k)]


def balanced_targets(k: int, per_class: int = 50, seed: int = 0) -> np.ndarray:
    """Balanced test targets in shuffled order."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(k), per_class))


def predictions(target: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Predictions right exactly where ``correct`` is True (wrong: the next class)."""
    k = int(target.max()) + 1
    return np.where(correct, target, (target + 1) % k)


def correct_per_class(target: np.ndarray, acc: np.ndarray, seed: int = 0) -> np.ndarray:
    """A correctness mask with exactly round(acc[c] * n_c) right images in each class c."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(target), dtype=bool)
    for c in range(len(acc)):
        idx = rng.permutation(np.flatnonzero(target == c))
        mask[idx[:int(round(acc[c] * len(idx)))]] = True
    return mask


def write_run(out: Path, method: str, seed: int = 0, *, role: str = "student", k: int = 10,
              pred: np.ndarray = None, target: np.ndarray = None, acc: np.ndarray = None, recipe: dict = None,
              params: dict = None, run_id: str = None, family: str = "2", save_predictions: bool = True) -> dict:
    """Write a synthetic ok record (and its predictions file) into ``out/runs``; returns the record."""
    counts = class_counts(k)
    if target is None:
        target = balanced_targets(k)
    if pred is None:
        if acc is None:
            acc = np.linspace(0.9, 0.3, k)
        pred = predictions(target, correct_per_class(target, acc, seed))
    total = np.bincount(target, minlength=k)
    per_class = (np.bincount(target[pred == target], minlength=k) / total * 100).tolist()
    final = {"epoch": (recipe or RECIPE)["epochs"], "per_class_acc": per_class,
             "per_class_test_count": total.tolist(), **summarize(per_class, counts, total.tolist())}
    teacher = role == "teacher"
    tag = settings_label({"m": method, "p": params, "r": recipe, "f": family})
    rec = {"run_id": run_id or f"synth_{role}_{method}_s{seed}_{tag}",
           "status": "ok", "reason": None, "role": role, "dataset": "synth-lt", "imbalance_factor": 100.0,
           "data_seed": 0, "data_options": {}, "num_classes": k, "class_counts": counts, "seed": seed,
           "student_arch": "big" if teacher else "small", "teacher_arch": None if teacher else "big",
           "method": "ce" if teacher else method, "method_params": params if params is not None else {"t": 4.0},
           "recipe": recipe or (TEACHER_RECIPE if teacher else RECIPE),
           "teacher_recipe": None if teacher else TEACHER_RECIPE, "base_lr": None,
           "code": {"family": family, "fingerprint": "0123456789ab", "git_commit": "f" * 40, "git_dirty": False},
           "final": final, "best": final}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    if save_predictions:
        np.savez_compressed(out / "runs" / f"{rec['run_id']}.predictions.npz", pred=pred.astype(np.int32),
                            target=target.astype(np.int32))
    return rec


def report(out: Path) -> str:
    """leaderboard.md / .csv only (plots are slow to draw; their own tests call ``regenerate``)."""
    return write_leaderboard(RunStore(out).records(), out)


def read_csv(out: Path) -> list:
    return list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))


# ----------------------------------------------------------------------------- settings-exact rows

def test_mixed_settings_give_separate_rows_with_labels_and_legend(tmp_path):
    write_run(tmp_path, "teacher", role="teacher")
    kd6 = write_run(tmp_path, "kd")
    kd1 = write_run(tmp_path, "kd", recipe=dict(RECIPE, epochs=1))
    kd_t1 = write_run(tmp_path, "kd", params={"t": 1.0})
    write_run(tmp_path, "ce", params={})
    md = report(tmp_path)
    rows = [r for r in read_csv(tmp_path) if r["method"] == "kd"]
    assert len(rows) == 3  # three settings of kd: never averaged into one "mean over seeds"
    labels = {settings_label(settings_of(r)) for r in (kd6, kd1, kd_t1)}
    assert {r["settings"] for r in rows} == labels and len(labels) == 3
    assert all(r["seeds"] == "1" for r in rows)
    lab1, lab_t1 = settings_label(settings_of(kd1)), settings_label(settings_of(kd_t1))
    assert re.search(rf"- `{lab1}` kd: .*recipe\.epochs=1\b", md)
    assert re.search(rf"- `{lab_t1}` kd: .*method_params\.t=1\b", md)
    # ce is told apart by the epochs that vary among students, never by its own (other) hyper-parameters;
    # the teacher's recipe is compared with teachers only
    assert re.search(r"- `\w{6}` ce: recipe\.epochs=6$", md, re.M) and "teacher (ce):" not in md
    for lab in labels:
        assert f"| `{lab}`" in md


def test_legend_says_when_rows_differ_only_by_method(tmp_path):
    write_run(tmp_path, "teacher", role="teacher")
    write_run(tmp_path, "kd")
    write_run(tmp_path, "ce", params={})
    md = report(tmp_path)
    assert "each method has one setting" in md
    assert "students: epochs=6" in md and "teacher: epochs=10" in md


def test_seeds_counts_distinct_seeds_and_run_ids_are_joined(tmp_path):
    ids = [write_run(tmp_path, "ce", seed=s, params={})["run_id"] for s in (0, 1, 2)]
    write_run(tmp_path, "kd", seed=0)
    report(tmp_path)
    rows = {r["method"]: r for r in read_csv(tmp_path)}
    assert rows["ce"]["seeds"] == "3" and rows["kd"]["seeds"] == "1"
    assert rows["ce"]["run_ids"].split(";") == ids


def test_other_code_family_is_another_row(tmp_path):
    write_run(tmp_path, "kd", family="1")
    write_run(tmp_path, "kd", family="2")
    md = report(tmp_path)
    assert len(read_csv(tmp_path)) == 2
    assert "code_family=1" in md and "code_family=2" in md


def test_settings_label_ignores_int_float_spelling():
    a = {"run_id": "a", "role": "student", "dataset": "d", "imbalance_factor": 100, "recipe": {"lr": 1}}
    b = dict(a, run_id="b", imbalance_factor=100.0, recipe={"lr": 1.0})
    c = dict(a, run_id="c", recipe={"lr": 0.5})
    assert settings_label(a) == settings_label(b) != settings_label(c)


def test_duplicate_seed_and_setting_raises_naming_both_files(tmp_path, capsys):
    write_run(tmp_path, "kd", run_id="first_kd_run")
    write_run(tmp_path, "kd", run_id="second_kd_run")
    with pytest.raises(ValueError) as err:
        regenerate(tmp_path)
    msg = str(err.value)
    assert "first_kd_run.json" in msg and "second_kd_run.json" in msg and "seed 0" in msg
    from benchmark.cli import main

    assert main(["report", "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "second_kd_run.json" in lines[0]


OLD_FIELDS_DROPPED = ("effective", "teacher_recipe", "data_options", "predictions_sha256")  # newer than old records


def test_records_without_new_fields_still_report(tmp_path):
    """Records of an older schema (no code family, no effective settings, no checksum) still make a leaderboard.
    Built from copies of the committed reference (never from this checkout's own results/runs/)."""
    ref = REPO / "results" / "reference" / "quick" / "runs"
    (tmp_path / "runs").mkdir()
    picked = sorted(ref.glob("*_teacher_*.json"))[:1] + sorted(ref.glob("*-cifar_cnn_tiny_kd_s0_*.json"))[:1] + sorted(
        ref.glob("*-cifar_cnn_tiny_ce_s0_*.json"))[:1]
    assert len(picked) == 3, "the committed quick reference lost its teacher, kd or ce record"
    for path in picked:
        rec = json.loads(path.read_text())
        rec["code"].pop("family", None)
        for key in OLD_FIELDS_DROPPED:
            rec.pop(key, None)
        (tmp_path / "runs" / path.name).write_text(json.dumps(rec))
        shutil.copy(path.with_suffix(".predictions.npz"), tmp_path / "runs")
    md = regenerate(tmp_path)
    assert md is not None and "family unknown" in md
    rows = read_csv(tmp_path)
    assert len(rows) == 3 and all(r["settings"] for r in rows)
    kd = next(r for r in rows if r["method"] == "kd")
    kd_final = json.loads(next(p for p in picked if "_kd_s0_" in p.name).read_text())["final"]["overall"]
    assert kd["overall_mean"] == f"{kd_final:.2f}" and kd["verified"] == "True"  # the record's own number, verified


# ----------------------------------------------------------------------------- paired bootstrap

def test_paired_interval_of_a_method_against_itself_is_exactly_zero():
    target = balanced_targets(10, per_class=200)
    pred = predictions(target, correct_per_class(target, np.linspace(0.9, 0.2, 10)))
    res = paired.paired_bootstrap({0: pred, 1: pred}, {0: pred, 1: pred}, target, [7, 8, 9])
    for iv in (res.overall, res.tail):
        assert (iv.diff, iv.lo, iv.hi) == (0.0, 0.0, 0.0) and not iv.excludes_zero


def test_known_difference_is_recovered():
    target = balanced_targets(10, per_class=1000)  # 10,000 images
    base = correct_per_class(target, np.full(10, 0.5))
    better = base.copy()
    better[np.flatnonzero(~base)[:500]] = True  # right on exactly 5% more images
    a, b = predictions(target, better), predictions(target, base)
    res = paired.paired_bootstrap({0: a}, {0: b}, target, paired.tail_classes(class_counts(10)))
    assert res.overall.diff == pytest.approx(5.0, abs=1e-9)
    assert res.overall.lo < 5.0 < res.overall.hi and res.overall.excludes_zero
    assert res.overall.format().startswith("+5.00 [") and res.overall.format().endswith("]*")
    tail_gain = np.mean([(better & (target == c)).sum() / 10 - (base & (target == c)).sum() / 10 for c in (7, 8, 9)])
    assert res.tail.diff == pytest.approx(tail_gain)
    back = paired.paired_bootstrap({0: b}, {0: a}, target, [7, 8, 9])
    assert back.overall.diff == pytest.approx(-5.0) and back.overall.hi < 0


def test_several_seeds_are_paired_by_seed_and_resampled():
    target = balanced_targets(10, per_class=300)
    base = correct_per_class(target, np.full(10, 0.6))
    plus = base.copy()
    plus[np.flatnonzero(~base)[:150]] = True  # +5 points
    a = {0: predictions(target, plus), 1: predictions(target, base), 7: predictions(target, plus)}
    b = {0: predictions(target, base), 1: predictions(target, base), 3: predictions(target, base)}
    res = paired.paired_bootstrap(a, b, target, [7, 8, 9])
    assert res.seeds == (0, 1)  # only seeds both sides have
    assert res.overall.diff == pytest.approx(2.5)  # mean of +5 (seed 0) and 0 (seed 1)
    assert res.overall.lo <= 0.0 + 1e-9 and res.overall.hi >= 5.0 - 0.5  # seed resampling spans both
    with pytest.raises(ValueError, match="no common seed"):
        paired.paired_bootstrap({0: a[0]}, {3: b[3]}, target, [9])


@pytest.mark.parametrize("strategy", ["patterns", "images"])
def test_bootstrap_matches_explicit_resampling_of_test_images(strategy):
    """Both ways of drawing give the interval of literally resampling images within each class."""
    k, target = 6, balanced_targets(6, per_class=80, seed=3)
    a = predictions(target, correct_per_class(target, np.linspace(0.8, 0.4, k), seed=1))
    b = predictions(target, correct_per_class(target, np.linspace(0.7, 0.5, k), seed=2))
    tail = [4, 5]
    res = paired.paired_bootstrap({0: a}, {0: b}, target, tail, n_resamples=4000, seed=1, strategy=strategy)
    rng = np.random.default_rng(0)
    d = (a == target).astype(float) - (b == target)
    members = [np.flatnonzero(target == c) for c in range(k)]
    overall, tail_acc = [], []
    for _ in range(4000):
        per_class = np.array([d[rng.choice(m, len(m))].mean() for m in members]) * 100
        overall.append(np.mean(per_class))  # balanced test set: image mean == class mean
        tail_acc.append(per_class[tail].mean())
    for iv, boot in ((res.overall, overall), (res.tail, tail_acc)):
        lo, hi = np.percentile(boot, [2.5, 97.5])
        width = hi - lo
        assert abs(iv.lo - lo) < 0.08 * width and abs(iv.hi - hi) < 0.08 * width


def test_bootstrap_is_seeded_at_50k_images():
    target = balanced_targets(1000, per_class=50)  # ImageNet-LT's test split: 50,000 images, 1000 classes
    a = predictions(target, correct_per_class(target, np.full(1000, 0.6), seed=1))
    b = predictions(target, correct_per_class(target, np.full(1000, 0.5), seed=2))  # 30 vs 25 of 50 per class
    r1 = paired.paired_bootstrap({0: a}, {0: b}, target, list(range(667, 1000)))
    r2 = paired.paired_bootstrap({0: a}, {0: b}, target, list(range(667, 1000)))
    assert r1 == r2 and r1.n_resamples == paired.N_RESAMPLES
    assert r1.overall.diff == pytest.approx(10.0) and r1.overall.lo < 10.0 < r1.overall.hi
    assert r1.tail.diff == pytest.approx(10.0)


def test_both_strategies_agree_with_several_seeds():
    target = balanced_targets(20, per_class=100)
    a = {s: predictions(target, correct_per_class(target, np.full(20, 0.6), seed=s)) for s in range(3)}
    b = {s: predictions(target, correct_per_class(target, np.full(20, 0.5), seed=10 + s)) for s in range(3)}
    by_pattern = paired.paired_bootstrap(a, b, target, [17, 18, 19], strategy="patterns")
    by_image = paired.paired_bootstrap(a, b, target, [17, 18, 19], strategy="images")
    for x, y in ((by_pattern.overall, by_image.overall), (by_pattern.tail, by_image.tail)):
        assert x.diff == pytest.approx(y.diff)
        width = x.hi - x.lo
        assert abs(x.lo - y.lo) < 0.1 * width and abs(x.hi - y.hi) < 0.1 * width


# ----------------------------------------------------------------------------- leaderboard Δ column, csv, modes

def _paired_folder(out: Path) -> dict:
    """teacher, kd (50%), better (+5% of images), ce without predictions; same test set."""
    target = balanced_targets(10, per_class=1000)
    base = correct_per_class(target, np.full(10, 0.5))
    better = base.copy()
    better[np.flatnonzero(~base)[:500]] = True
    return {"teacher": write_run(out, "teacher", role="teacher", pred=predictions(target, better), target=target),
            "kd": write_run(out, "kd", pred=predictions(target, base), target=target),
            "better": write_run(out, "better", pred=predictions(target, better), target=target),
            "ce": write_run(out, "ce", params={}, pred=predictions(target, base), target=target,
                            save_predictions=False)}


def test_leaderboard_delta_vs_kd_column(tmp_path):
    _paired_folder(tmp_path)
    md = report(tmp_path)
    line = {m: next(ln for ln in md.splitlines() if ln.startswith(f"| {m} ")) for m in ("better", "kd", "ce")}
    assert "| +5.00 [" in line["better"] and "]* |" in line["better"]
    assert line["kd"].count("| ref ") == 2
    assert line["ce"].count("| —") >= 2  # no predictions stored
    teacher = next(ln for ln in md.splitlines() if ln.startswith("| **teacher (ce)**"))
    assert "| +5.00 [" in teacher
    assert "paired" in md and "bootstrap" in md  # the header says how it is computed
    rows = {r["method"]: r for r in read_csv(tmp_path)}
    assert float(rows["better"]["delta_overall_vs_kd"]) == 5.0
    assert float(rows["better"]["delta_overall_lo"]) < 5.0 < float(rows["better"]["delta_overall_hi"])
    assert rows["ce"]["delta_overall_vs_kd"] == ""


def test_csv_is_rounded_to_two_decimals(tmp_path):
    _paired_folder(tmp_path)
    report(tmp_path)
    text = (tmp_path / "leaderboard.csv").read_text()
    numbers = re.findall(r"(?<![\w.])-?\d+\.(\d+)(?![\w.])", text)
    assert numbers and all(len(dec) <= 2 for dec in numbers), text
    header = text.splitlines()[0].split(",")
    assert header[:2] == ["dataset", "imbalance_factor"]
    assert {"settings", "settings_diff", "run_ids", "overall_mean", "delta_tail_vs_kd"} <= set(header)


def test_every_written_file_is_0644(tmp_path):
    _paired_folder(tmp_path)
    old = os.umask(0o077)  # a restrictive umask: the modes must be set explicitly
    try:
        regenerate(tmp_path)
    finally:
        os.umask(old)
    files = [tmp_path / "leaderboard.md", tmp_path / "leaderboard.csv", *(tmp_path / "plots").iterdir()]
    assert len(files) == 2 + 6
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


# ----------------------------------------------------------------------------- plots

@pytest.mark.parametrize("k", [10, 100, 1000])
def test_plots_written_for_10_100_1000_classes(tmp_path, k):
    target = balanced_targets(k, per_class=20)
    rng = np.random.default_rng(k)
    for i, method in enumerate(("teacher", "ce", "kd", "dkd", "la_kd")):
        acc = np.clip(np.linspace(0.9, 0.2, k) + rng.normal(0, 0.1, k) + 0.03 * i, 0, 1)
        for seed in (0, 1):
            write_run(tmp_path, method, seed=seed, role="teacher" if method == "teacher" else "student", k=k,
                      target=target, acc=acc, params={} if method == "ce" else None)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "stale_old_plot.png").write_bytes(b"old")
    regenerate(tmp_path)
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["synth-lt_if100_big_groups.png", "synth-lt_if100_big_per_class.png",
                    "synth-lt_if100_big_tail_vs_overall.png"]  # the stale plot is gone
    for name in pngs:
        png = tmp_path / "plots" / name
        svg = png.with_suffix(".svg")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert svg.exists() and b"<svg" in svg.read_bytes()[:2000]


def test_per_class_plot_shows_teacher_ce_kd_and_best_tail(tmp_path):
    from benchmark.leaderboard import sections
    from benchmark.plots import per_class_rows

    write_run(tmp_path, "teacher", role="teacher")
    write_run(tmp_path, "ce", params={}, acc=np.linspace(0.9, 0.1, 10))
    write_run(tmp_path, "kd", acc=np.linspace(0.9, 0.2, 10))
    write_run(tmp_path, "dkd", acc=np.linspace(0.9, 0.3, 10))
    write_run(tmp_path, "tailwin", acc=np.linspace(0.7, 0.8, 10))
    rows = build_rows([json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")])
    (part,) = sections(rows).values()
    shown = [r.name for r in per_class_rows(part)]
    assert sorted(shown[:3]) == ["ce", "kd", "teacher (ce)"] and shown[3:] == ["tailwin"]
    assert [r.name for r in per_class_rows(part, ["dkd"])] == ["dkd"]
