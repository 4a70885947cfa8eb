"""Suite configs: every shipped suite validates; bad input fails before training with a one-line message."""
import pytest

from benchmark.config import ConfigError, apply_overrides, list_suites, load_suite
from conftest import call_cli


@pytest.mark.parametrize("suite", ["quick", "ci", "cifar10_lt", "cifar100_lt", "imagenet_lt", "places_lt"])
def test_shipped_suites_validate(suite):
    cfg = load_suite(suite)
    assert cfg.name == suite and cfg.datasets and cfg.pairs
    assert suite in list_suites()


def test_cifar_protocol_is_the_literature_one():
    cfg = load_suite("cifar100_lt")
    r = cfg.student_train
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay, r.milestones, r.gamma) == \
        (240, 64, 0.05, 0.9, 5e-4, [150, 180, 210], 0.1)
    assert cfg.datasets[0].imbalance_factors == [100, 50, 10]
    assert {(p.teacher, p.student) for p in cfg.pairs} == {
        ("cifar_resnet32x4", "cifar_resnet8x4"), ("cifar_wrn_40_2", "cifar_wrn_16_2"), ("cifar_resnet56", "cifar_resnet20")}


def _suite(tmp_path, body):
    p = tmp_path / "s.yaml"
    p.write_text(body)
    return str(p)


BASE = """
datasets: [{name: fmnist-lt, imbalance_factors: [100]}]
pairs: [{teacher: cifar_cnn_small, student: cifar_cnn_tiny}]
methods: [ce, kd]
"""


@pytest.mark.parametrize("body,fragment", [
    (BASE + "student_trian: {epochs: 2}\n", "s.yaml: unknown key 'student_trian'. Did you mean student_train?"),
    (BASE + "student_train: {epochs: two}\n", "student_train.epochs: expected an integer, got 'two'"),
    (BASE + "student_train: {schedule: linear}\n", "student_train.schedule: 'linear' is not one of"),
    (BASE.replace("[ce, kd]", "[ce, dkdd]"), "unknown method 'dkdd'. Did you mean dkd"),
    (BASE.replace("cifar_cnn_tiny", "cifar_resnet8x3"), "unknown model 'cifar_resnet8x3'. Did you mean cifar_resnet8x4"),
    (BASE.replace("fmnist-lt", "fmnist_lt"), "unknown dataset 'fmnist_lt'. Did you mean fmnist-lt"),
    (BASE + "method_params: {kd: {temprature: 2}}\n", "unknown hyper-parameter 'temprature'. Did you mean temperature?"),
    (BASE.replace("[100]", "[0.5]"), "0.5 < 1"),
    (BASE + "seeds: [a]\n", "seeds[0]: expected an integer"),
    ("datasets: [\n", "not valid YAML"),
])
def test_bad_config_names_the_key(tmp_path, body, fragment):
    with pytest.raises(ConfigError) as err:
        load_suite(_suite(tmp_path, body))
    assert fragment in str(err.value)


def test_unknown_suite_suggests():
    with pytest.raises(ConfigError, match="Did you mean quick"):
        load_suite("quik")


def test_overrides_dotted_and_typed():
    raw = {"student_train": {"epochs": 5}, "pairs": [{"teacher": "a", "student": "b"}]}
    out = apply_overrides(raw, ["student_train.epochs=3", "method_params.kd.temperature=2.5", "pairs.0.student=c",
                                "seeds=[0, 1]"])
    assert out["student_train"]["epochs"] == 3
    assert out["method_params"] == {"kd": {"temperature": 2.5}}
    assert out["pairs"][0]["student"] == "c" and out["seeds"] == [0, 1]
    assert raw["student_train"]["epochs"] == 5  # the input is not mutated
    shared = {"epochs": 5}
    out = apply_overrides({"teacher_train": shared, "student_train": shared}, ["student_train.epochs=1"])
    assert out["teacher_train"]["epochs"] == 5 and out["student_train"]["epochs"] == 1  # YAML anchors unshared
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides(raw, ["student_train.epochs"])


def test_cli_config_error_is_one_line_exit_2(capsys):
    rc, _, err = call_cli(capsys, ["run", "--suite", "quick", "--methods", "kdd", "--dry-run"])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Did you mean" in lines[0] and "kd" in lines[0]


def test_cli_dry_run_expands_grid_and_epochs_rescale(tmp_path, capsys):
    import re

    from benchmark.cli import main

    rc = main(["run", "--suite", "cifar100_lt", "--dry-run", "--seeds", "0", "--out", str(tmp_path / "res")])
    captured = capsys.readouterr()
    assert rc in (0, 1), captured.err  # 1: the dry run says CIFAR-100 is not on this machine
    ids = re.findall(r"cifar100-lt_\S+_s0_[0-9a-f]{10}", captured.out)
    # 3 IF x 3 pairs teachers + 3 x 3 x methods students, all distinct
    assert len(ids) == len(set(ids)) and sum("_teacher_" in i for i in ids) == 9
    from benchmark.cli import build_config, make_parser

    args = make_parser().parse_args(["run", "--suite", "cifar100_lt", "--epochs", "24", "--dry-run"])  # no CIFAR here
    cfg = build_config(args)
    assert cfg.student_train.epochs == 24 and cfg.student_train.milestones == [15, 18, 21]
    assert cfg.method_params["dkd"]["warmup"] == 2  # 20 of 240 -> 2 of 24


def test_overrides_after_list_options_are_not_swallowed():
    from benchmark.cli import build_config, make_parser

    args = make_parser().parse_args(["run", "--methods", "ce", "kd", "student_train.epochs=3", "--seeds", "4",
                                     "teacher_train.lr=0.2"])
    cfg = build_config(args)
    assert cfg.methods == ["ce", "kd"] and cfg.seeds == [4]
    assert cfg.student_train.epochs == 3 and cfg.teacher_train.lr == 0.2
