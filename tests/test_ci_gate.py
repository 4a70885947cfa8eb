"""The CI accuracy gate's ingredients: same seed, same numbers; regressions named; the committed reference
matches the ci grid. The gate itself (`python -m benchmark check --suite ci`) is its own step in `.ci/run`."""
import json

import pytest
import torch

from benchmark.check import compare, run_label
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
    rec = {"run_id": "x", "status": "ok", "role": "student", "dataset": "fmnist-lt", "imbalance_factor": 100,
           "teacher_arch": "t", "student_arch": "s", "method": "kd", "seed": 0,
           "final": {"overall": 50.0, "tail": 10.0}}
    label = run_label(rec)
    assert label == "fmnist-lt_if100/t->s/kd/s0"
    ref = {"tolerance": 2.0, "metrics": ["overall", "tail"], "runs": {label: {"overall": 51.0, "tail": 13.0},
                                                                      "missing/run": {"overall": 1.0}}}
    failures, notes = compare([rec], ref)
    assert any("tail 10.00 < reference 13.00 - 2" in f for f in failures)
    assert any(f.startswith("missing/run: no run was measured") for f in failures)
    assert any("overall 50.00" in n for n in notes)
    assert not any("overall" in f and label in f for f in failures)
    # per-metric tolerances: tail may move more than overall
    ref["tolerance"] = {"overall": 0.5, "tail": 4.0}
    failures, _ = compare([rec], ref)
    assert any(f"{label}: overall 50.00 < reference 51.00 - 0.5" == f for f in failures)
    assert not any("tail" in f for f in failures)


def test_committed_ci_reference_matches_the_ci_grid():
    cfg = load_suite("ci")
    ref = json.loads((CONFIG_DIR / "ci_reference.json").read_text())
    assert ref["suite"] == "ci" and set(ref["tolerance"]) == set(ref["metrics"]) == {"overall", "tail"}
    assert len(ref["runs"]) == 1 + len(cfg.methods)  # the teacher + every method
