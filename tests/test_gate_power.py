"""The CI gate's mutation list (scripts/gate_mutations.json) stays honest: every mutation applies to the
current tree exactly once, and scripts/gate_power.py refuses one that does not. The measurement itself
(`python scripts/gate_power.py`, ~35 min on 2 cores) is documented in docs/testing.md, "CI gate"."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gp():
    spec = importlib.util.spec_from_file_location("gate_power", ROOT / "scripts" / "gate_power.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_mutation_applies_exactly_once_to_the_current_tree(gp):
    mutations = gp.load_mutations()
    assert len(mutations) >= 10
    assert [gp.problem(m) for m in mutations] == [None] * len(mutations)


def test_the_list_covers_the_regressions_the_issue_names(gp):
    names = {m.name for m in gp.load_mutations()}
    assert {"kd_sign_flipped", "dkd_no_nckd", "kd_no_t_squared", "krdistill_class_weight_1", "kd_temperature_halved",
            "la_kd_adjustment_halved", "constant_lr", "balanced_data", "teacher_train_mode",
            "krdistill_ce_dropped"} <= names


def test_apply_patches_a_copy(gp, tmp_path):
    (tmp_path / "m.py").write_text("a = 1\nb = 2\n")
    gp.apply(gp.Mutation("x", "m.py", "b = 2", "b = 3", "b"), tmp_path)
    assert (tmp_path / "m.py").read_text() == "a = 1\nb = 3\n"


def test_apply_refuses_an_old_text_found_twice(gp, tmp_path):
    (tmp_path / "m.py").write_text("b = 2\nb = 2\n")
    with pytest.raises(ValueError, match="x: the old text occurs 2 times in m.py, not exactly once"):
        gp.apply(gp.Mutation("x", "m.py", "b = 2", "b = 3", "b"), tmp_path)
    assert (tmp_path / "m.py").read_text() == "b = 2\nb = 2\n"


def test_apply_refuses_an_old_text_not_found(gp, tmp_path):
    (tmp_path / "m.py").write_text("a = 1\n")
    with pytest.raises(ValueError, match="occurs 0 times"):
        gp.apply(gp.Mutation("x", "m.py", "b = 2", "b = 3", "b"), tmp_path)


def test_apply_refuses_a_missing_file(gp, tmp_path):
    with pytest.raises(ValueError, match="x: gone.py does not exist"):
        gp.apply(gp.Mutation("x", "gone.py", "b = 2", "b = 3", "b"), tmp_path)


def test_load_mutations_refuses_an_incomplete_entry(gp, tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"mutations": [{"name": "x", "file": "m.py", "old": "a", "new": "b"}]}))
    with pytest.raises(ValueError, match="mutation 0 lacks breaks"):
        gp.load_mutations(path)


def test_load_mutations_refuses_duplicate_names(gp, tmp_path):
    m = {"name": "x", "file": "m.py", "old": "a", "new": "b", "breaks": "c"}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"mutations": [m, m]}))
    with pytest.raises(ValueError, match="duplicate mutation names x"):
        gp.load_mutations(path)


def test_copy_tree_copies_the_source_and_not_results(gp, tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("x")
    (src / "results").mkdir()
    (src / "results" / "big.pt").write_text("y")
    gp.copy_tree(tmp_path / "dst", src)
    assert (tmp_path / "dst" / "pkg" / "a.py").read_text() == "x"
    assert not (tmp_path / "dst" / "results").exists()


def test_off_metrics_names_the_metrics_that_caught_a_mutation(gp):
    run = ("FAIL OFF        ds/t->s/krdistill/s0: overall 29.46 (mean 30.27, -0.81 = 0.2 sd, limit 17.01); tail 0.00 "
           "(mean 0.35, -0.35 = 0.4 sd, limit 12.32); train_loss 2.006 (mean 2.234, -0.228 = 0.7 sd, limit 1.033); "
           "first_loss 16.355 (seed-0 reference 15.951, +0.404, limit 0.010 OFF); seed 0 vs the reference's 5 seeds")
    mean = ("FAIL OFF        ds/t->s/kd/mean3: overall 23.94 (mean 39.74, -15.80 = 10.1 sd, limit 6.67 OFF); tail 0.00 "
            "(mean 0.00, +0.00, limit 10.00); train_loss 0.546 (mean 0.625, -0.079 = 3.3 sd, limit 0.063 OFF)")
    assert gp.off_metrics([run]) == {"first_loss": 1}
    assert gp.off_metrics([run, mean]) == {"first_loss": 1, "overall": 1, "train_loss": 1}
    assert gp.off_metrics(["check FAILED: 2 regression(s) against ci_reference.json"]) == {}
