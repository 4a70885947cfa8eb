"""Every bad input stops before training with one line naming the key/file and the fix (exit code 2).

The CLI is called in-process (``benchmark.cli.main``) with ``capsys``; a guard makes any attempt to load
training data through the runner fail loudly, and each CLI test checks that nothing was written to --out.
"""
import math
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.config import ConfigError, SuiteLoader, apply_overrides, effective_method_params, load_suite
from benchmark.errors import did_you_mean, unknown_name

SUITE = """\
name: v
datasets:
  - name: fmnist-lt
    imbalance_factors: [100]
    options: {n_max: 600}  # 1,485 training images
pairs:
  - {teacher: cifar_cnn_tiny, student: cifar_cnn_tiny}
methods: [ce, kd]
seeds: [0]
teacher_train: &r {epochs: 1, batch_size: 64, lr: 0.05, schedule: cosine, augment: flip}
student_train: *r
"""


@pytest.fixture
def suite(tmp_path):
    """Write SUITE (optionally edited) to a file and return its path as a string."""

    def _write(text: str = SUITE, name: str = "v.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return _write


@pytest.fixture
def no_training(monkeypatch):
    """Any attempt of the runner to load training data fails the test (validation must stop earlier)."""
    import benchmark.runner

    def boom(*a, **k):
        raise AssertionError("training started: validation let a bad input through")

    monkeypatch.setattr(benchmark.runner, "build_data", boom, raising=False)


def fails(capsys, argv, *fragments, out=None):
    """Run the CLI; assert exit 2, exactly one stderr line starting 'error: ' holding every fragment."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for f in fragments:
        assert f in err[0], (f, err[0])
    if out is not None:  # nothing trained: no record, no checkpoint
        assert not (Path(out) / "runs").exists() and not (Path(out) / "checkpoints").exists()
    return err[0]


def run_argv(path, tmp_path, *extra):
    """A real (not dry) `run` of the suite at ``path`` into tmp_path/out."""
    return ["run", "--suite", path, "--out", tmp_path / "out", "--no-progress", *extra]


# ----------------------------------------------------------------------------- 1. method hyper-parameters

@pytest.mark.parametrize("params,fragments", [
    ("{kd: {temperature: hot}}", ["method_params.kd", "'temperature'", "must be a number", "'hot'"]),
    ("{kd: {temperature: 0}}", ["method_params.kd", "'temperature'", "must be > 0"]),
    ("{kd: {alpha: 1.5}}", ["method_params.kd", "'alpha'", "must be in [0, 1]"]),
    ("{dkd: {warmup: -1}}", ["method_params.dkd", "'warmup'", "must be >= 0"]),
    ("{ltkd: {rebalance: 1}}", ["method_params.ltkd", "'rebalance'", "true/false"]),
    ("{kd: {temprature: 2}}", ["method_params.kd: unknown hyper-parameter 'temprature'. Did you mean temperature?"]),
])
def test_method_hparams_fail_while_loading(capsys, suite, tmp_path, no_training, params, fragments):
    path = suite(SUITE + f"method_params: {params}\n")
    with pytest.raises(ConfigError):  # load_suite alone: the config layer, not the method, catches it
        load_suite(path)
    fails(capsys, run_argv(path, tmp_path), *fragments, out=tmp_path / "out")


def test_empty_hparam_override(capsys, suite, tmp_path, no_training):
    fails(capsys, run_argv(suite(), tmp_path, "method_params.kd.temperature="),
          "method_params.kd", "'temperature'", "has no value", out=tmp_path / "out")


def test_per_pair_and_per_dataset_params_are_validated(suite):
    bad_pair = SUITE.replace("student: cifar_cnn_tiny}", "student: cifar_cnn_tiny, method_params: {kd: {temperature: -1}}}")
    with pytest.raises(ConfigError, match=r"pairs\[0\]\.method_params\.kd: hyper-parameter 'temperature' must be > 0"):
        load_suite(suite(bad_pair))
    bad_ds = SUITE.replace("options: {n_max: 600}", "options: {n_max: 600}\n    method_params: {dkdd: {}}")
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.method_params: unknown method 'dkdd'. Did you mean dkd"):
        load_suite(suite(bad_ds))


def test_method_init_uses_the_same_validator():
    import methods
    from methods import MethodContext

    ctx = MethodContext(class_counts=[50, 20, 5], student_dim=8, teacher_dim=8)
    with pytest.raises(ValueError, match="method 'kd': hyper-parameter 'temperature' must be > 0"):
        methods.create_method("kd", ctx, temperature=0)
    assert methods.create_method("kd", ctx, temperature=2).temperature == 2.0  # int -> the default's float
    assert methods.get_method("kd").validate_hparams({"alpha": 0.5}) == {"temperature": 4.0, "alpha": 0.5}


def test_bounds_declaration_is_checked_when_the_class_is_defined():
    from methods import Method

    with pytest.raises(TypeError, match="hparam_bounds names 'temp'"):
        type("Bad", (Method,), {"hparams": {"temperature": 4.0}, "hparam_bounds": {"temp": "(0, inf)"}})
    with pytest.raises(TypeError, match="not an interval"):
        type("Bad", (Method,), {"hparams": {"temperature": 4.0}, "hparam_bounds": {"temperature": "> 0"}})


def test_every_builtin_method_declares_bounds_for_its_numbers():
    import methods

    for name in methods.list_methods():
        cls = methods.get_method(name)
        numeric = {k for k, v in cls.hparams.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if cls.__module__.startswith("methods."):
            assert numeric <= set(cls.hparam_bounds), (name, numeric - set(cls.hparam_bounds))


# ----------------------------------------------------------------------------- 2. optimizer values

@pytest.mark.parametrize("override,fragments", [
    ("student_train.weight_decay=-1", ["student_train.weight_decay must be >= 0"]),
    ("teacher_train.momentum=-0.5", ["teacher_train.momentum must be in [0, 1)"]),
    ("student_train.nesterov=true", ["student_train.nesterov", "momentum > 0"]),  # with momentum 0, below
    ("pairs.0.student_lr=-0.01", ["pairs[0].student_lr must be > 0"]),
    ("student_train.lr=.nan", ["student_train.lr: expected a finite number, got nan"]),
    ("teacher_train.lr=.inf", ["teacher_train.lr: expected a finite number, got inf"]),
    ("student_train.batch_size=1486", ["student_train.batch_size: 1486 is larger than the training split",
                                       "1485 images", "batch_size <= 1485"]),
])
def test_optimizer_values_torch_would_reject(capsys, suite, tmp_path, no_training, override, fragments):
    extra = [override] + (["student_train.momentum=0"] if "nesterov" in override else [])
    fails(capsys, run_argv(suite(), tmp_path, *extra), *fragments, out=tmp_path / "out")


def test_batch_size_equal_to_the_split_is_fine(suite):
    from benchmark.config import check_data

    cfg = load_suite(suite(), ["student_train.batch_size=1485"])
    check_data(cfg)


# ----------------------------------------------------------------------------- 3. dataset options

def test_unknown_dataset_option_lists_allowed(capsys, suite, tmp_path, no_training):
    path = suite(SUITE.replace("{n_max: 600}", "{n_maxx: 600}"))
    fails(capsys, run_argv(path, tmp_path), "datasets[0].options (fmnist-lt): unknown option 'n_maxx'.",
          "Did you mean n_max?", "Allowed: download, n_max", out=tmp_path / "out")


def test_dataset_option_value_is_type_checked(suite):
    with pytest.raises(ConfigError, match=r"datasets\[0\]\.options\.n_max: expected an integer, got 'many'"):
        load_suite(suite(SUITE.replace("{n_max: 600}", "{n_max: many}")))


# ----------------------------------------------------------------------------- 4. empty lists, duplicates, NaN

@pytest.mark.parametrize("edit,fragments", [
    (("methods: [ce, kd]", "methods: []"), ["methods: the list is empty"]),
    (("seeds: [0]", "seeds: []"), ["seeds: the list is empty"]),
    (("seeds: [0]", "seeds: [0]\nseeds: [1]"), ["v.yaml:10:1", "duplicate key 'seeds' (first given at line 9)"]),
    (("imbalance_factors: [100]", "imbalance_factors: [.nan]"),
     ["datasets[0].imbalance_factors[0]: expected a finite number, got nan"]),
    (("methods: [ce, kd]", "methods: [ce, kd, kd]"), ["methods[2]: 'kd' is listed twice"]),
])
def test_empty_lists_duplicates_and_nan(capsys, suite, tmp_path, no_training, edit, fragments):
    path = suite(SUITE.replace(*edit))
    fails(capsys, run_argv(path, tmp_path), *fragments, out=tmp_path / "out")


def test_duplicate_keys_nested_and_merge_keys_allowed(suite):
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        load_suite(suite(SUITE.replace("lr: 0.05,", "lr: 0.05, lr: 0.1,")))
    cfg = load_suite(suite(SUITE.replace("student_train: *r", "student_train: {<<: *r, epochs: 2}")))
    assert cfg.student_train.epochs == 2 and cfg.teacher_train.epochs == 1  # `<<` then an explicit key: fine


# ----------------------------------------------------------------------------- 5. YAML syntax, tags, folders

def test_yaml_syntax_error_is_file_line_col(capsys, suite, tmp_path, no_training):
    path = suite(SUITE.replace("methods: [ce, kd]", "methods: [ce, kd"))
    fails(capsys, run_argv(path, tmp_path), f"{path}:9:", "not valid YAML", out=tmp_path / "out")


def test_override_yaml_syntax_error_is_one_line(capsys, suite, tmp_path, no_training):
    fails(capsys, run_argv(suite(), tmp_path, "seeds=[0"), "override 'seeds=[0'", "not valid YAML",
          out=tmp_path / "out")


def test_python_tag_is_rejected_never_executed(capsys, suite, tmp_path, no_training):
    marker = tmp_path / "executed"
    path = suite(SUITE.replace("name: v", f"name: !!python/object/apply:os.system ['touch {marker}']"))
    fails(capsys, run_argv(path, tmp_path), f"{path}:1:7", "tag:yaml.org,2002:python/object/apply:os.system",
          "never executed", out=tmp_path / "out")
    fails(capsys, run_argv(suite(), tmp_path, f"name=!!python/object/apply:os.system ['touch {marker}']"),
          "override 'name=", "never executed", out=tmp_path / "out")
    assert not marker.exists()


def test_suite_path_that_is_a_folder(capsys, suite, tmp_path, no_training):
    suite()
    fails(capsys, ["run", "--suite", tmp_path, "--dry-run"], f"--suite {tmp_path}: is a folder", "v.yaml")
    fails(capsys, ["run", "--suite", tmp_path / "nope.yaml", "--dry-run"], "nope.yaml: no such file")


# ----------------------------------------------------------------------------- 6. device, --out, plugins, speed

def test_device_cuda_without_gpu(capsys, suite, tmp_path, no_training, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fails(capsys, run_argv(suite(), tmp_path, "--device", "cuda"), "--device cuda: no CUDA device is visible",
          "--device cpu", out=tmp_path / "out")
    fails(capsys, run_argv(suite(), tmp_path, "device=cuda:1"), "device: cuda:1: no CUDA device", out=tmp_path / "out")


def test_out_that_is_a_file_or_cannot_be_created(capsys, suite, tmp_path, no_training):
    afile = tmp_path / "afile"
    afile.write_text("x")
    fails(capsys, ["run", "--suite", suite(), "--out", afile], f"--out {afile}: is a file")
    fails(capsys, ["run", "--suite", suite(), "--out", afile / "sub"], f"{afile} is a file")
    fails(capsys, ["report", "--out", afile], f"--out {afile}: is a file")


def test_out_not_writable(capsys, suite, tmp_path, no_training):
    import os

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as root: permissions are not enforced")
    fails(capsys, ["run", "--suite", suite(), "--out", locked / "res"], "is not writable")


@pytest.mark.parametrize("body,fragments", [
    ("raise RuntimeError('boom at import')\n", ["plugin module 'v_bad_plugin' raised on import",
                                                "RuntimeError: boom at import", "v_bad_plugin.py:1"]),
    ("def broken(:\n    pass\n", ["plugin module 'v_bad_plugin' has a syntax error", "v_bad_plugin.py:1"]),
    ("import v_no_such_dependency\n", ["plugin module 'v_bad_plugin' failed to import",
                                       "No module named 'v_no_such_dependency'"]),
])
def test_broken_plugin_is_one_line(capsys, suite, tmp_path, no_training, monkeypatch, body, fragments):
    (tmp_path / "v_bad_plugin.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = suite(SUITE + "plugins: [v_bad_plugin]\n")
    fails(capsys, run_argv(path, tmp_path), *fragments, out=tmp_path / "out")


@pytest.mark.parametrize("option", ["--batch-size", "--steps", "--image-size", "--num-classes", "--in-chans"])
def test_speed_non_positive_ints(capsys, option):
    fails(capsys, ["speed", option, "0"], f"speed {option}: must be a positive integer, got 0")


def test_usage_error_is_one_line(capsys):
    fails(capsys, ["run", "--no-such-option"], "unrecognized arguments: --no-such-option", "--help")


# ----------------------------------------------------------------------------- 7. --root

def test_root_missing_or_empty_does_not_fall_back(capsys, suite, tmp_path, no_training):
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    fails(capsys, run_argv(suite(), tmp_path, "--root", missing), f"--root {missing}: no such folder",
          out=tmp_path / "out")
    fails(capsys, run_argv(suite(), tmp_path, "--root", empty), f"--root {empty}: the folder is empty",
          out=tmp_path / "out")
    path = suite(SUITE.replace("options:", f"root: {missing}\n    options:"))
    fails(capsys, run_argv(path, tmp_path), f"datasets[0].root {missing}: no such folder", out=tmp_path / "out")


def test_root_without_the_files_is_not_replaced_by_debian(tmp_path):
    from datasets.fashion_mnist import locate_fashion_mnist

    (tmp_path / "README").write_text("not Fashion-MNIST")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        locate_fashion_mnist(tmp_path, download=False)
    assert locate_fashion_mnist(None, download=False)  # no root: the Debian copy is still found


def test_prepare_missing_root_is_not_ok(capsys, tmp_path):
    rc = main(["prepare", "--dataset", "fmnist-lt", "--root", str(tmp_path / "missing")])
    out = capsys.readouterr()
    assert rc != 0 and ": OK" not in out.out + out.err


# ----------------------------------------------------------------------------- 8. numbers as people write them

@pytest.mark.parametrize("text,value", [("1e-2", 0.01), ("1E-2", 0.01), ("5.e-4", 5e-4), (".5", 0.5), ("-.5", -0.5),
                                        ("1.5e3", 1500.0), ("+1e5", 1e5), ("1_000.5", 1000.5), ("1_000", 1000),
                                        ("0.1", 0.1), ("3", 3)])
def test_float_spellings(text, value):
    got = yaml.load(f"v: {text}", Loader=SuiteLoader)["v"]
    assert got == value and type(got) is type(value)


def test_floats_in_yaml_and_overrides(suite):
    path = suite(SUITE.replace("lr: 0.05,", "lr: 1e-2, weight_decay: 5e-4,"))
    cfg = load_suite(path, ["student_train.lr=5e-2", "method_params.kd.temperature=.5e1"])
    assert cfg.teacher_train.lr == 0.01 and cfg.teacher_train.weight_decay == 5e-4
    assert cfg.student_train.lr == 0.05 and cfg.method_params["kd"]["temperature"] == 5.0
    assert yaml.safe_load("v: 1e-2")["v"] == "1e-2"  # PyYAML's own loader is left as it is


# ----------------------------------------------------------------------------- 10. per-pair / per-dataset params

def test_effective_method_params_precedence(suite):
    text = SUITE.replace("options: {n_max: 600}", "options: {n_max: 600}\n    method_params: {kd: {temperature: 3, "
                                                  "alpha: 0.5}}")
    text = text.replace("student: cifar_cnn_tiny}", "student: cifar_cnn_tiny, method_params: {kd: {temperature: 2}}}")
    text += "method_params: {kd: {temperature: 8, alpha: 0.1}, dkd: {beta: 2}}\n"
    cfg = load_suite(suite(text))
    entry, pair = cfg.datasets[0], cfg.pairs[0]
    assert effective_method_params(cfg, "kd", entry, pair) == {"temperature": 2, "alpha": 0.5}  # pair, then dataset
    assert effective_method_params(cfg, "dkd", entry, pair)["beta"] == 2  # suite level only
    assert effective_method_params(cfg, "dkd", entry, pair)["warmup"] == 20  # declared default
    from benchmark.config import DatasetEntry, Pair

    bare = effective_method_params(cfg, "kd", DatasetEntry("fmnist-lt"), Pair("a", "b"))
    assert bare == {"temperature": 8, "alpha": 0.1}


def test_epochs_rescale_per_pair_warmup(suite):
    from benchmark.cli import build_config, make_parser

    text = SUITE.replace("teacher_train: &r {epochs: 1,", "teacher_train: &r {epochs: 240,").replace("kd]", "dkd]")
    text = text.replace("student: cifar_cnn_tiny}", "student: cifar_cnn_tiny, method_params: {dkd: {warmup: 40}}}")
    args = make_parser().parse_args(["run", "--suite", suite(text), "--epochs", "24", "--dry-run"])
    cfg = build_config(args)
    assert cfg.pairs[0].method_params["dkd"]["warmup"] == 4 and cfg.method_params["dkd"]["warmup"] == 2


# ----------------------------------------------------------------------------- 11. one "did you mean" wording

def test_did_you_mean_helper_and_one_wording(suite):
    assert did_you_mean("temprature", ["temperature", "alpha"]) == " Did you mean temperature?"
    assert did_you_mean("FMNIST-LT", ["fmnist-lt"]) == " Did you mean fmnist-lt?"
    assert did_you_mean("zzz", ["temperature"]) == ""
    assert unknown_name("x", "key", "b", ["a", "bb"]) == "x: unknown key 'b'. Did you mean bb? Allowed: a, bb"
    shape = r"unknown \w[\w -]* '[^']+'\. Did you mean [^?]+\? Allowed: "
    for old, new in [("methods: [ce, kd]", "methods: [ce, kdd]"), ("name: fmnist-lt", "name: fmnist_lt"),
                     ("seeds: [0]", "seeds: [0]\nstudent_trian: {}"), ("n_max: 600", "n_mx: 600")]:
        with pytest.raises(ConfigError, match=shape):
            load_suite(suite(SUITE.replace(old, new)))
    with pytest.raises(ConfigError, match=shape):
        load_suite(suite(SUITE), ["method_params.kd.alph=1"])
    with pytest.raises(ConfigError, match=r"unknown suite 'quik'\. Did you mean quick\? Allowed: "):
        load_suite("quik")


def test_overrides_reject_empty_key_parts():
    with pytest.raises(ConfigError, match="empty part"):
        apply_overrides({}, ["student_train..lr=1"])
    assert apply_overrides({"method_params": None}, ["method_params.kd.temperature=2"]) == \
        {"method_params": {"kd": {"temperature": 2}}}


def test_nan_hparam_is_rejected(suite):
    assert math.isnan(yaml.load("v: .nan", Loader=SuiteLoader)["v"])  # parsed, then rejected by the validator
    with pytest.raises(ConfigError, match="'alpha' must be a finite number"):
        load_suite(suite(SUITE + "method_params: {kd: {alpha: .nan}}\n"))
