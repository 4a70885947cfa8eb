"""The seed-aware reproduction verdict (benchmark.verdict via benchmark.check) on hand-made reference files:
exact, within the seed spread, OFF in seed-sd units, both ways, a one-seed reference that cannot judge, the
old format's hand-set tolerance, and write_reference's seed statistics against numbers computed by hand."""
import json
from types import SimpleNamespace

import pytest
import torch

from benchmark.check import compare, load_reference, reproduction_lines, verdicts, write_reference
from benchmark.config import ConfigError

SETTING = "fmnist-lt_if100/t->s/kd"


def rec(seed, overall, tail, method="kd", status="ok"):
    """A minimal student run record with final overall/tail accuracies."""
    return {"run_id": f"{method}{seed}", "status": status, "role": "student", "dataset": "fmnist-lt",
            "imbalance_factor": 100, "teacher_arch": "t", "student_arch": "s", "method": method, "seed": seed,
            "final": {"overall": overall, "tail": tail}, "reason": "non-finite loss"}


def three_seed_reference(tmp_path, **extra):
    """kd at seeds 0, 1, 2: overall 50, 52, 54 (mean 52, sd 2), tail 10, 14, 18 (mean 14, sd 4)."""
    ref = {"format": 2, "metrics": ["overall", "tail"], "k": {"overall": 2, "tail": 1},
           "floor": {"overall": 0.5, "tail": 1}, "derivation": "hand-made for a test",
           "runs": {f"{SETTING}/s0": {"overall": 50.0, "tail": 10.0}, f"{SETTING}/s1": {"overall": 52.0, "tail": 14.0},
                    f"{SETTING}/s2": {"overall": 54.0, "tail": 18.0}},
           "seed_stats": {SETTING: {"overall": {"mean": 52.0, "sd": 2.0, "n": 3},
                                    "tail": {"mean": 14.0, "sd": 4.0, "n": 3}}}}
    ref.update(extra)
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(ref))
    return load_reference(path)


def test_bit_identical_run_of_the_same_seed_is_exact(tmp_path):
    (v,) = verdicts([rec(1, 52.0, 14.0)], three_seed_reference(tmp_path))
    assert (v.kind, v.seed) == ("exact", 1)
    assert "exactly" in v.text and "seed 1" in v.text


def test_the_same_numbers_under_another_seed_are_not_exact(tmp_path):
    (v,) = verdicts([rec(0, 52.0, 14.0)], three_seed_reference(tmp_path))
    assert v.kind == "within"  # seed 0's reference run is 50 / 10


def test_within_the_seed_spread_states_the_rule(tmp_path):
    (v,) = verdicts([rec(0, 53.0, 17.0)], three_seed_reference(tmp_path))  # +1 (0.5 sd) and +3 (0.75 sd)
    assert v.kind == "within" and v.seed == 0
    assert v.values == {"overall": 53.0, "tail": 17.0}
    assert v.distance == pytest.approx(0.75)
    assert "seed 0" in v.text and "|x - mean| <= k * sd + floor" in v.text
    assert "overall: k 2, floor 0.5" in v.text and "tail: k 1, floor 1" in v.text


def test_off_says_by_how_much_in_seed_sd_units(tmp_path):
    (v,) = verdicts([rec(2, 42.0, 14.0)], three_seed_reference(tmp_path))  # 10 below: 5 sd, limit 2*2+0.5
    assert v.kind == "off" and v.is_off and v.distance == pytest.approx(5.0)
    assert "overall 42.00 (mean 52.00, -10.00 = 5.0 sd, limit 4.50 OFF)" in v.text
    lines, n_off = reproduction_lines([rec(2, 42.0, 14.0)], three_seed_reference(tmp_path))
    assert n_off == 1 and lines[0].lstrip().startswith("OFF")


def test_the_floor_is_part_of_the_limit(tmp_path):
    ref = three_seed_reference(tmp_path)
    assert verdicts([rec(0, 56.5, 14.0)], ref)[0].kind == "within"  # 4.5 = 2 * 2 + 0.5
    assert verdicts([rec(0, 56.6, 14.0)], ref)[0].kind == "off"


def test_a_jump_up_beyond_the_spread_is_off_and_fails_check(tmp_path):
    ref = three_seed_reference(tmp_path)
    (v,) = verdicts([rec(0, 52.0, 30.0)], ref)  # tail +16 = 4 sd, limit 1 * 4 + 1 = 5
    assert v.kind == "off" and v.distance == pytest.approx(4.0)
    failures, _ = compare([rec(0, 52.0, 30.0)], ref)
    assert len(failures) == 1 and "tail 30.00 (mean 14.00, +16.00 = 4.0 sd, limit 5.00 OFF)" in failures[0]


def test_check_passes_runs_within_the_spread(tmp_path):
    failures, notes = compare([rec(0, 53.0, 12.0), rec(1, 52.0, 14.0)], three_seed_reference(tmp_path))
    assert failures == [] and len(notes) == 3  # two runs and their mean


def test_check_catches_a_shift_of_the_mean_each_seed_hides(tmp_path):
    """Each seed 4 points up is within 2 sd + 0.5 = 4.5; their mean is beyond 2 * 2 * sqrt(1/3 + 1/3) + 0.5."""
    recs = [rec(s, 56.0, 14.0) for s in (0, 1, 2)]
    ref = three_seed_reference(tmp_path)
    assert [v.kind for v in verdicts(recs, ref)] == ["within"] * 3
    failures, _ = compare(recs, ref)
    assert len(failures) == 1 and failures[0].startswith(f"OFF        {SETTING}/mean3")
    assert "limit 3.77" in failures[0]


def test_check_names_a_failed_run_and_a_setting_never_measured(tmp_path):
    stats = {SETTING: {"overall": {"mean": 52.0, "sd": 2.0, "n": 3}},
             "fmnist-lt_if100/t->s/dkd": {"overall": {"mean": 60.0, "sd": 1.0, "n": 3}}}
    ref = three_seed_reference(tmp_path, seed_stats=stats)
    failures, _ = compare([rec(0, 0.0, 0.0, status="failed")], ref)
    assert any("FAILED" in f and "non-finite loss" in f for f in failures)
    assert "fmnist-lt_if100/t->s/dkd: no run was measured (the reference expects one)" in failures


def test_a_setting_the_reference_lacks_is_new(tmp_path):
    vs = verdicts([rec(0, 50.0, 10.0), rec(0, 40.0, 5.0, method="ce")], three_seed_reference(tmp_path))
    assert [v.kind for v in vs] == ["new", "exact"]


def test_a_one_seed_reference_cannot_judge_the_spread(tmp_path):
    one = {"overall": {"mean": 50.0, "sd": None, "n": 1}, "tail": {"mean": 10.0, "sd": None, "n": 1}}
    ref = three_seed_reference(tmp_path, runs={f"{SETTING}/s0": {"overall": 50.0, "tail": 10.0}},
                               seed_stats={SETTING: one})
    assert verdicts([rec(0, 50.0, 10.0)], ref)[0].kind == "exact"
    (v,) = verdicts([rec(0, 50.5, 10.0)], ref)
    assert v.kind == "unjudged" and v.distance is None
    assert "cannot judge the seed spread" in v.text
    failures, _ = compare([rec(0, 50.5, 10.0)], ref)
    assert len(failures) == 1 and "cannot judge" in failures[0]


def test_a_one_seed_reference_with_a_hand_set_fallback_says_so(tmp_path):
    one = {"overall": {"mean": 50.0, "sd": None, "n": 1}, "tail": {"mean": 10.0, "sd": None, "n": 1}}
    ref = three_seed_reference(tmp_path, runs={f"{SETTING}/s0": {"overall": 50.0, "tail": 10.0}},
                               seed_stats={SETTING: one}, fallback_tolerance={"overall": 3, "tail": 12})
    (v,) = verdicts([rec(0, 52.0, 10.0)], ref)
    assert v.kind == "within" and "HAND-SET tolerance overall ±3, tail ±12 (not measured)" in v.text
    assert verdicts([rec(0, 46.0, 10.0)], ref)[0].kind == "off"


OLD_FORMAT = {"suite": "quick", "tolerance": {"overall": 3.0, "tail": 12.0}, "metrics": ["overall", "tail"],
              "measured_on": {"device": "cpu", "threads": 2},
              "runs": {f"{SETTING}/s0": {"overall": 45.91, "many": 56.913, "medium": 1.9, "few": None,
                                         "head": 86.9, "middle": 35.9, "tail": 1.267}}}


def test_an_old_format_reference_loads_as_one_seed_with_a_labelled_hand_set_tolerance(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(OLD_FORMAT))
    ref = load_reference(path)
    assert ref["fallback_tolerance"] == {"overall": 3.0, "tail": 12.0}
    assert ref["seed_stats"][SETTING]["overall"] == {"mean": 45.91, "sd": None, "n": 1}
    same = rec(0, 45.91, 1.267)
    same["final"].update(many=56.913, medium=1.9, few=None, head=86.9, middle=35.9)
    assert verdicts([same], ref)[0].kind == "exact"  # every stored metric, not only the judged ones
    assert verdicts([rec(0, 45.91, 1.267)], ref)[0].kind == "within"
    (v,) = verdicts([rec(0, 47.0, 9.0)], ref)
    assert v.kind == "within" and "HAND-SET" in v.text
    assert verdicts([rec(0, 49.0, 1.267)], ref)[0].kind == "off"  # +3.09 > 3, and upward


def test_an_old_format_scalar_tolerance_applies_to_every_metric(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(dict(OLD_FORMAT, tolerance=2.0)))
    assert load_reference(path)["fallback_tolerance"] == {"overall": 2.0, "tail": 2.0}


def test_a_reference_without_k_for_a_metric_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"k.tail must be a number >= 0, got None"):
        three_seed_reference(tmp_path, k={"overall": 2})


def test_a_reference_without_a_derivation_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'derivation' must say how k and floor were measured"):
        three_seed_reference(tmp_path, derivation="")


def test_a_reference_with_a_negative_sd_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"seed_stats.*overall must be \{mean, sd"):
        three_seed_reference(tmp_path, seed_stats={SETTING: {"overall": {"mean": 1.0, "sd": -1.0, "n": 3}}})


def test_a_reference_with_an_unknown_k_metric_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown metric 'tial'. Did you mean tail\\?"):
        three_seed_reference(tmp_path, k={"overall": 2, "tail": 1, "tial": 1})


def _teacher(seed, overall):
    return {"run_id": f"t{seed}", "status": "ok", "role": "teacher", "dataset": "fmnist-lt", "imbalance_factor": 100,
            "arch": "t", "seed": seed, "final": {"overall": overall, "tail": 0.0}}


def test_write_reference_stores_each_seed_and_the_seed_statistics(tmp_path):
    """overall 50, 53, 59: mean 54, sd sqrt((16 + 1 + 25) / 2) = sqrt(21) = 4.583; tail 10 x 3: sd 0."""
    path = tmp_path / "ci_reference.json"
    recs = [rec(0, 50.0, 10.0), rec(1, 53.0, 10.0), rec(2, 59.0, 10.0), _teacher(0, 70.0),
            rec(3, 1.0, 1.0, status="failed")]
    assert write_reference(path, recs, SimpleNamespace(name="ci"), torch.device("cpu")) == 4
    raw = json.loads(path.read_text())
    assert raw["seeds"] == [0, 1, 2] and f"{SETTING}/s3" not in raw["runs"]
    assert raw["runs"][f"{SETTING}/s2"]["overall"] == 59.0
    assert raw["seed_stats"][SETTING]["overall"] == {"mean": 54.0, "sd": 4.583, "n": 3}
    assert raw["seed_stats"][SETTING]["tail"] == {"mean": 10.0, "sd": 0.0, "n": 3}
    assert raw["seed_stats"]["fmnist-lt_if100/t/teacher"]["overall"] == {"mean": 70.0, "sd": None, "n": 1}
    assert "NOT MEASURED" in raw["derivation"]  # a fresh file says its k and floor are defaults
    ref = load_reference(path)
    assert verdicts([rec(1, 53.0, 10.0)], ref)[0].kind == "exact"


def test_write_reference_keeps_k_floor_derivation_and_the_hand_set_fallback(tmp_path):
    path = tmp_path / "ci_reference.json"
    path.write_text(json.dumps({"metrics": ["overall", "head"], "k": {"overall": 4, "head": 5},
                                "floor": {"overall": 1, "head": 2}, "derivation": "measured on seeds 0-4",
                                "fallback_tolerance": {"overall": 3}, "runs": {}}))
    write_reference(path, [rec(0, 50.0, 10.0), rec(1, 52.0, 12.0)], SimpleNamespace(name="ci"), torch.device("cpu"))
    raw = json.loads(path.read_text())
    assert (raw["metrics"], raw["k"], raw["floor"]) == (["overall", "head"], {"overall": 4, "head": 5},
                                                        {"overall": 1, "head": 2})
    assert raw["derivation"] == "measured on seeds 0-4" and raw["fallback_tolerance"] == {"overall": 3.0}


def test_write_reference_over_an_old_format_file_keeps_its_tolerance_as_the_fallback(tmp_path):
    path = tmp_path / "quick_reference.json"
    path.write_text(json.dumps(OLD_FORMAT))
    write_reference(path, [rec(0, 50.0, 10.0)], SimpleNamespace(name="quick"), torch.device("cpu"))
    ref = load_reference(path)
    assert ref["fallback_tolerance"] == {"overall": 3.0, "tail": 12.0} and ref["format"] == 2
    assert "HAND-SET" in verdicts([rec(0, 51.0, 10.0)], ref)[0].text


def test_check_takes_seeds_from_the_command_line():
    from benchmark.cli import _apply_selection, make_parser
    from benchmark.config import load_suite

    args = make_parser().parse_args(["check", "--suite", "ci", "--seeds", "0", "1", "2", "3"])
    cfg = load_suite("ci", [], validate=False)
    _apply_selection(cfg, args)
    assert cfg.seeds == [0, 1, 2, 3]


def loss_rec(seed, loss):
    """A run whose accuracies match the reference mean but whose last epoch's training loss is ``loss``."""
    r = rec(seed, 52.0, 14.0)
    r["history"] = [{"epoch": 1, "loss": 9.0}, {"epoch": 2, "loss": loss}]
    return r


def loss_reference(tmp_path):
    """kd's train_loss at seeds 0, 1, 2: 0.30, 0.32, 0.34 (mean 0.32, sd 0.02), k 3, floor 0.01: limit 0.07."""
    stats = {SETTING: {"overall": {"mean": 52.0, "sd": 2.0, "n": 3}, "tail": {"mean": 14.0, "sd": 4.0, "n": 3},
                       "train_loss": {"mean": 0.32, "sd": 0.02, "n": 3}}}
    return three_seed_reference(tmp_path, metrics=["overall", "tail", "train_loss"],
                                k={"overall": 2, "tail": 1, "train_loss": 3},
                                floor={"overall": 0.5, "tail": 1, "train_loss": 0.01}, seed_stats=stats)


def test_the_last_epochs_training_loss_is_judged_from_the_history(tmp_path):
    ref = loss_reference(tmp_path)
    (v,) = verdicts([loss_rec(0, 0.38)], ref)  # +0.06 <= 0.07: within (the first epoch's 9.0 is not read)
    assert v.kind == "within" and v.values["train_loss"] == pytest.approx(0.38)
    (v,) = verdicts([loss_rec(0, 0.02)], ref)  # a KD term 16x too small: -0.30 = 15 sd, accuracies unchanged
    assert v.kind == "off" and v.distance == pytest.approx(15.0)
    assert "train_loss 0.020 (mean 0.320, -0.300 = 15.0 sd, limit 0.070 OFF)" in v.text


def test_write_reference_stores_the_training_loss(tmp_path):
    path = tmp_path / "ref.json"
    path.write_text(json.dumps({"metrics": ["overall", "train_loss"], "k": {"overall": 3, "train_loss": 3},
                                "floor": {"overall": 1, "train_loss": 0.01}, "derivation": "test"}))
    recs = [loss_rec(s, loss) for s, loss in ((0, 0.3), (1, 0.5))]
    write_reference(path, recs, SimpleNamespace(name="t"), torch.device("cpu"))
    ref = json.loads(path.read_text())
    assert ref["runs"][f"{SETTING}/s1"]["train_loss"] == 0.5
    assert ref["seed_stats"][SETTING]["train_loss"]["mean"] == pytest.approx(0.4)
    assert ref["seed_stats"][SETTING]["train_loss"]["sd"] == 0.141  # sqrt(0.02), stored to 3 decimals


def first_rec(seed, first, overall=52.0):
    """A run whose first step's loss (epoch 1's ``first_loss``) is ``first``."""
    r = rec(seed, overall, 14.0)
    r["history"] = [{"epoch": 1, "loss": 2.0, "first_loss": first}]
    return r


def paired_reference(tmp_path, **extra):
    """first_loss paired (floor 0.01) at seeds 0, 1, 2: 6.50, 7.10, 5.80 (an sd of 0.65 the pairing ignores)."""
    runs = {f"{SETTING}/s{s}": {"overall": o, "tail": t, "first_loss": f}
            for s, o, t, f in ((0, 50.0, 10.0, 6.5), (1, 52.0, 14.0, 7.1), (2, 54.0, 18.0, 5.8))}
    stats = {SETTING: {"overall": {"mean": 52.0, "sd": 2.0, "n": 3}, "tail": {"mean": 14.0, "sd": 4.0, "n": 3},
                       "first_loss": {"mean": 6.467, "sd": 0.651, "n": 3}}}
    kw = dict(metrics=["overall", "tail", "first_loss"], paired=["first_loss"], k={"overall": 2, "tail": 1},
              floor={"overall": 0.5, "tail": 1, "first_loss": 0.01}, runs=runs, seed_stats=stats)
    return three_seed_reference(tmp_path, **{**kw, **extra})


def test_a_paired_metric_is_judged_against_the_same_seed(tmp_path):
    ref = paired_reference(tmp_path)
    (v,) = verdicts([first_rec(0, 6.505)], ref)  # 0.005 from seed 0's 6.50 (a seed-distribution rule: 0.0 sd)
    assert v.kind == "within" and v.values["first_loss"] == pytest.approx(6.505)
    assert "first_loss 6.505 (seed-0 reference 6.500, +0.005, limit 0.010)" in v.text
    assert "paired rule |x - x_seed| <= floor (first_loss: floor 0.01)" in v.text
    (v,) = verdicts([first_rec(0, 6.2)], ref)  # -0.3: well inside the seed spread (0.4 sd), but not seed 0's value
    assert v.kind == "off" and "first_loss 6.200 (seed-0 reference 6.500, -0.300, limit 0.010 OFF)" in v.text
    (v,) = verdicts([first_rec(2, 5.8)], ref)  # seed 2's own value: within, though 1 sd from the mean
    assert v.kind == "within"


def test_a_paired_metric_is_not_judged_for_a_seed_the_reference_lacks(tmp_path):
    (v,) = verdicts([first_rec(7, 1.0)], paired_reference(tmp_path))
    assert v.kind == "within" and "first_loss" not in v.values and "a seed the reference lacks" in v.text


def test_the_mean_over_seeds_leaves_a_paired_metric_to_the_runs(tmp_path):
    failures, notes = compare([first_rec(0, 6.5), first_rec(1, 7.1), first_rec(2, 5.8)], paired_reference(tmp_path))
    mean_line = next(n for n in notes if "/mean3" in n)
    assert not failures and "first_loss" not in mean_line and "overall" in mean_line
    failures, _ = compare([first_rec(0, 6.5), first_rec(1, 7.3), first_rec(2, 5.8)], paired_reference(tmp_path))
    assert len(failures) == 1 and "/s1" in failures[0] and "first_loss 7.300" in failures[0]


def test_a_paired_metric_needs_a_floor_but_no_k(tmp_path):
    with pytest.raises(ConfigError, match="floor.first_loss must be a number"):
        paired_reference(tmp_path, floor={"overall": 0.5, "tail": 1})


def test_a_paired_metric_outside_the_metrics_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'paired' must list metrics of 'metrics'"):
        paired_reference(tmp_path, paired=["train_loss"])


def test_write_reference_stores_the_first_loss_and_keeps_the_pairing(tmp_path):
    path = tmp_path / "ref.json"
    path.write_text(json.dumps({"metrics": ["overall", "first_loss"], "paired": ["first_loss"], "k": {"overall": 3},
                                "floor": {"overall": 1, "first_loss": 0.01}, "derivation": "test"}))
    write_reference(path, [first_rec(0, 6.4567), first_rec(1, 7.0)], SimpleNamespace(name="t"), torch.device("cpu"))
    ref = json.loads(path.read_text())
    assert ref["paired"] == ["first_loss"] and ref["runs"][f"{SETTING}/s0"]["first_loss"] == 6.457
    assert load_reference(path)["paired"] == ["first_loss"]
