"""The CI accuracy gate's ingredients: same seed, same numbers; regressions named; the committed reference
matches the ci grid. The gate itself (`python -m benchmark check --suite ci`) is its own step in `.ci/run`."""
import json

import pytest
import torch

from benchmark.check import compare, load_reference, run_label
from benchmark.config import CONFIG_DIR, load_suite

@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path, write_suite):
    from benchmark.runner import RunOptions, expand_grid, run_specs

    cfg = load_suite(str(write_suite(methods=("kd",))))
    recs = []
    for k in range(2):
        opts = RunOptions(tmp_path / f"r{k}", torch.device("cpu"), progress=False, log=lambda m: None)
        recs.append([o.record for o in run_specs(cfg, expand_grid(cfg, torch.device("cpu")), opts)])
    for a, b in zip(*recs):
        assert a["final"]["per_class_acc"] == b["final"]["per_class_acc"]
        assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def test_compare_names_regressions():
    """An old-format reference (one seed, a hand-set tolerance): both ways, and a setting never measured."""
    rec = {"run_id": "x", "status": "ok", "role": "student", "dataset": "fmnist-lt", "imbalance_factor": 100,
           "teacher_arch": "t", "student_arch": "s", "method": "kd", "seed": 0,
           "final": {"overall": 50.0, "tail": 10.0}}
    label = run_label(rec)
    assert label == "fmnist-lt_if100/t->s/kd/s0"
    raw = {"tolerance": 2.0, "metrics": ["overall", "tail"], "runs": {label: {"overall": 51.0, "tail": 13.0},
                                                                      "missing/run": {"overall": 1.0}}}
    failures, notes = compare([rec], _loaded(raw))
    assert any("tail 10.00 (reference 13.00, -3.00, limit 2.00 OFF)" in f for f in failures)
    assert any(f.startswith("missing/run: no run was measured") for f in failures)
    assert not any("overall 50.00 (reference 51.00, -1.00, limit 2.00 OFF)" in f for f in failures)
    # per-metric tolerances: tail may move more than overall; a better number is off too
    raw["tolerance"] = {"overall": 0.5, "tail": 4.0}
    failures, _ = compare([rec], _loaded(raw))
    assert any("overall 50.00 (reference 51.00, -1.00, limit 0.50 OFF)" in f for f in failures)
    assert not any("tail 10.00 (reference 13.00, -3.00, limit 4.00 OFF)" in f for f in failures)
    rec["final"]["tail"] = 17.5
    failures, _ = compare([rec], _loaded(raw))
    assert any("tail 17.50 (reference 13.00, +4.50, limit 4.00 OFF)" in f for f in failures)


def _loaded(raw):
    """``raw`` through load_reference (which fills in the seed statistics an old-format file lacks)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.json"
        path.write_text(json.dumps(raw))
        return load_reference(path)


def test_committed_ci_reference_matches_the_ci_grid():
    cfg = load_suite("ci")
    ref = load_reference(CONFIG_DIR / "ci_reference.json")
    metrics = {"overall", "tail", "train_loss", "first_loss"}
    assert ref["suite"] == "ci" and set(ref["metrics"]) == set(ref["floor"]) == metrics
    assert ref["paired"] == ["first_loss"] and set(ref["k"]) == metrics - {"first_loss"}  # paired: a floor, no k
    assert len(ref["seed_stats"]) == 1 + len(cfg.methods)  # the teacher + every method
    assert set(cfg.seeds) <= set(ref["seeds"]) and len(ref["seeds"]) >= 3  # a measured spread for every setting
    assert len(ref["runs"]) == len(ref["seeds"]) * (1 + len(cfg.methods))
    for setting, stats in ref["seed_stats"].items():  # the committed teacher is evaluated, not trained: no losses
        judged = {"overall", "tail"} if setting.endswith("/teacher") else metrics
        assert all(stats[m]["n"] == len(ref["seeds"]) and stats[m]["sd"] is not None for m in judged)
    first = [run["first_loss"] for label, run in ref["runs"].items() if "/teacher/" not in label]
    assert len(set(first)) == len(first)  # each seed and method starts from its own loss
    assert "seed_spread.py" in ref["derivation"]  # says how k and floor were measured
