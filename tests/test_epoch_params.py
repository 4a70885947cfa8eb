"""Epoch-valued hyper-parameters are declared by each method (``Method.epoch_params``), rescaled by ``--epochs`` at
every level with one rounding rule, shown by ``--dry-run``, and reported before training when they leave part of a
method inert for the whole run (issue 22, item 1)."""
import re
import textwrap

import pytest

import methods
from benchmark.cli import build_config, make_parser
from benchmark.epochs import scale_count
from conftest import call_cli
from methods import Method, list_methods

# every (method, epoch-valued hyper-parameter) of the registry, builtins and installed plugins alike
DECLARED = [(name, key) for name in list_methods() for key in methods.epoch_params(name)]

SUITE = """\
name: e
datasets:
  - name: fmnist-lt
    imbalance_factors: [100]
    options: {{n_max: 600}}
    method_params: {{{method}: {{{key}: 30}}}}
pairs:
  - {{teacher: cifar_cnn_tiny, student: cifar_cnn_tiny, method_params: {{{method}: {{{key}: 20}}}}}}
methods: [{method}]
method_params: {{{method}: {{{key}: 10}}}}
seeds: [0]
teacher_train: {{epochs: 8, batch_size: 64, lr: 0.05, schedule: cosine, augment: flip}}
student_train: {{epochs: 40, batch_size: 64, lr: 0.05, schedule: cosine, augment: flip}}
"""


def _config(path, *argv):
    return build_config(make_parser().parse_args(["run", "--suite", str(path), "--dry-run", *map(str, argv)]))


def test_the_registry_declares_warmup_and_drw_epoch():
    assert {("bkd", "drw_epoch"), ("dkd", "warmup"), ("krdistill", "warmup"), ("reviewkd", "warmup")} <= set(DECLARED)
    assert methods.epoch_params("bkd") == {"drw_epoch": "start"} and methods.epoch_params("dkd") == {"warmup": "warmup"}


@pytest.mark.parametrize("name", list_methods())
def test_no_epoch_like_hyper_parameter_goes_undeclared(name):
    """A hyper-parameter whose name says it counts epochs must be declared (so a new method cannot forget it)."""
    cls = methods.get_method(name)
    epoch_like = {k for k in cls.hparams if "epoch" in k.lower() or "warmup" in k.lower() or "warm_up" in k.lower()}
    assert epoch_like <= set(cls.epoch_params), f"{name}: declare {sorted(epoch_like - set(cls.epoch_params))}"


@pytest.mark.parametrize("name,key", DECLARED)
def test_each_declared_epoch_param_scales_with_epochs_at_every_level(name, key, tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(SUITE.format(method=name, key=key))
    cfg = _config(path, "--epochs", 4)  # 40 -> 4 student epochs: a tenth
    assert cfg.method_params[name][key] == 1  # suite level, 10 -> 1
    assert cfg.datasets[0].method_params[name][key] == 3  # dataset level, 30 -> 3
    assert cfg.pairs[0].method_params[name][key] == 2  # pair level, 20 -> 2 (the pair wins)
    assert cfg.teacher_train.epochs == cfg.student_train.epochs == 4


@pytest.mark.parametrize("name,key", DECLARED)
def test_an_unset_epoch_param_gets_its_scaled_default(name, key, tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(textwrap.dedent(SUITE.format(method=name, key=key)).replace(f"method_params: {{{name}: {{{key}: 10}}}}\n", ""))
    cfg = _config(path, "--epochs", 40)  # same length: the default is written where the record shows it
    assert cfg.method_params[name][key] == methods.get_method(name).hparams[key]


@pytest.mark.parametrize("value,new,old,kind,expected", [
    (20, 24, 240, "warmup", 2),  # DKD's 20 of 240 -> 2 of 24
    (150, 10, 240, "start", 6),  # 6.25 -> 6
    (1, 1, 240, "warmup", 1),  # 0.004: a positive value never becomes 0
    (0, 24, 240, "start", 0),  # 0 stays 0
    (1, 1, 2, "epochs", 1),  # 0.5: halves round up
    (5, 1, 2, "epochs", 3),  # 2.5 -> 3 (Python's round() would give 2)
    (235, 10, 240, "start", 9),  # 9.79 -> 10 would be the last epoch: a start inside the run stays inside it
    (240, 10, 240, "start", 10),  # a start that was not inside the run is not pulled in
    (150, 1, 240, "start", 1),  # a 1-epoch run cannot hold both phases
    (235, 10, 240, "warmup", 10),  # the cap is for starts only
    (2.5, 2, 4, "warmup", 1.25),  # floats scale without rounding
])
def test_scale_count_rule(value, new, old, kind, expected):
    got = scale_count(value, new, old, kind)
    assert got == expected and type(got) is type(expected)


def test_lr_schedule_rescales_by_the_same_rule(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(SUITE.format(method="bkd", key="drw_epoch").replace(
        "student_train: {epochs: 40,", "student_train: {epochs: 40, warmup_epochs: 1, milestones: [10, 30],"))
    cfg = _config(path, "--epochs", 4)
    assert cfg.student_train.warmup_epochs == 1  # 0.1 epochs: kept at 1, not dropped to 0
    assert cfg.student_train.milestones == [1, 3]


# ----------------------------------------------------------------------------- BKD end to end through the CLI

def test_bkd_drw_epoch_scales_through_the_cli(write_suite, tmp_path, capsys):
    """The issue's case: student epochs 4, drw_epoch 2, --epochs 2 -> drw_epoch 1 (it stayed 2: BKD became KD)."""
    suite = write_suite(methods=("bkd",), epochs=4, extra="method_params: {bkd: {drw_epoch: 2}}\n")
    rc, out, err = call_cli(capsys, ["run", "--suite", suite, "--epochs", 2, "--dry-run", "--out", tmp_path / "r"])
    assert rc == 0, err
    student = [line for line in out.splitlines() if " bkd " in line]
    assert len(student) == 1 and "bkd (drw_epoch=1)" in student[0] and "2 ep x batch" in student[0]
    assert "warning" not in err
    args = make_parser().parse_args(["run", "--suite", str(suite), "--epochs", "2", "--dry-run"])
    assert build_config(args).method_params["bkd"]["drw_epoch"] == 1


# ----------------------------------------------------------------------------- no-op warnings

def _warnings(err):
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def test_dry_run_warns_when_the_reweighting_never_starts(write_suite, tmp_path, capsys):
    suite = write_suite(methods=("bkd",), epochs=4, extra="method_params: {bkd: {drw_epoch: 4}}\n")
    rc, out, err = call_cli(capsys, ["run", "--suite", suite, "--dry-run", "--out", tmp_path / "r"])
    assert rc == 0, err
    (line,) = _warnings(err)
    assert re.search(r"bkd: drw_epoch=4 but the student trains 4 epochs.*never happens.*set drw_epoch below 4", line)
    assert not (tmp_path / "r" / "runs").exists()


def test_shortening_with_an_override_is_reported_too(write_suite, tmp_path, capsys):
    """``student_train.epochs=2`` does not rescale anything: the drw_epoch 2 it leaves is a no-op, and says so."""
    suite = write_suite(methods=("bkd",), epochs=4, extra="method_params: {bkd: {drw_epoch: 2}}\n")
    rc, _, err = call_cli(capsys, ["run", "--suite", suite, "--dry-run", "--out", tmp_path / "r",
                                   "student_train.epochs=2"])
    assert rc == 0, err
    assert len(_warnings(err)) == 1 and "drw_epoch=2" in err


def test_a_warmup_longer_than_the_run_is_reported(write_suite, tmp_path, capsys):
    suite = write_suite(methods=("dkd",), epochs=4, extra="method_params: {dkd: {warmup: 8}}\n")
    rc, _, err = call_cli(capsys, ["run", "--suite", suite, "--dry-run", "--out", tmp_path / "r"])
    assert rc == 0, err
    (line,) = _warnings(err)
    assert "dkd: warmup=8 is longer than the student's 4 epochs" in line and "0.5 of it" in line
    _, _, err = call_cli(capsys, ["run", "--suite", suite, "--dry-run", "--out", tmp_path / "r", "--epochs", 2])
    assert "dkd: warmup=4 is longer than the student's 2 epochs" in err  # 8 of 4 -> 4 of 2: still too long


def test_run_warns_before_training(write_suite, tmp_path, capsys, monkeypatch):
    import benchmark.executors

    seen = {}

    class Executor:
        def run(self, cfg, specs, opts):
            seen["err"] = capsys.readouterr().err  # what was on stderr when training would start
            return []

    monkeypatch.setattr(benchmark.executors, "create_executor", lambda *a, **k: Executor())
    suite = write_suite(methods=("bkd",), epochs=4, extra="method_params: {bkd: {drw_epoch: 9}}\n")
    rc = call_cli(capsys, ["run", "--suite", suite, "--out", tmp_path / "r", "--no-progress"])[0]
    assert rc == 0
    assert any("bkd: drw_epoch=9 but the student trains 4 epochs" in line for line in _warnings(seen["err"]))


def test_check_warns_before_training(write_suite, tmp_path, capsys, monkeypatch):
    import benchmark.check

    seen = {}

    def run_check(cfg, opts, device, log):
        seen["err"] = capsys.readouterr().err
        return 0

    monkeypatch.setattr(benchmark.check, "run_check", run_check)
    suite = write_suite(methods=("bkd",), epochs=4, extra="method_params: {bkd: {drw_epoch: 4}}\n")
    assert call_cli(capsys, ["check", "--suite", suite, "--out", tmp_path / "r", "--no-progress"])[0] == 0
    assert any("bkd: drw_epoch=4 but the student trains 4 epochs" in line for line in _warnings(seen["err"]))


@pytest.mark.parametrize("name,key,value,epochs,n", [
    ("bkd", "drw_epoch", 4, 4, 1), ("bkd", "drw_epoch", 5, 4, 1), ("bkd", "drw_epoch", 3, 4, 0),
    ("bkd", "drw_epoch", 0, 1, 0),  # a start after the last epoch never switches on; 3 of 4 does at epoch 4
    ("dkd", "warmup", 4, 4, 0), ("dkd", "warmup", 5, 4, 1), ("reviewkd", "warmup", 0, 1, 0),  # full weight at 4 of 4
])
def test_schedule_warnings_boundaries(name, key, value, epochs, n):
    assert len(methods.get_method(name).schedule_warnings({key: value}, epochs)) == n


# ----------------------------------------------------------------------------- plugins and declarations

def test_a_plugin_declaring_an_epoch_param_is_rescaled(tmp_path, monkeypatch, write_suite):
    """A suite ``plugins:`` method is scaled by its declaration, whatever the name (here ``ramp``), and warned about."""
    (tmp_path / "ep_plugin_i22.py").write_text(textwrap.dedent('''
        from methods import Method, register_method

        @register_method("ep_plugin_i22")
        class Ramp(Method):
            hparams = {"ramp": 20, "start_at": 0}
            epoch_params = {"ramp": "warmup", "start_at": "start"}
            requires_teacher = False

            def forward(self, student, teacher, target, epoch):
                raise NotImplementedError
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = dict(methods._REGISTRY)
    try:
        suite = write_suite(methods=("ep_plugin_i22",), epochs=40, plugins=("ep_plugin_i22",),
                            extra="method_params: {ep_plugin_i22: {start_at: 40}}\n")
        cfg = _config(suite, "--epochs", 4)
        assert cfg.method_params["ep_plugin_i22"] == {"ramp": 2, "start_at": 4}
        from benchmark.epochs import schedule_warnings

        assert len(schedule_warnings(cfg)) == 1 and "start_at=4" in schedule_warnings(cfg)[0]
    finally:
        methods._REGISTRY.clear()
        methods._REGISTRY.update(before)
        import sys
        sys.modules.pop("ep_plugin_i22", None)


def test_a_tuple_declaration_means_plain_epoch_counts():
    class Counted(Method):
        hparams = {"span": 10, "temperature": 4.0}
        epoch_params = ("span",)

    assert Counted.epoch_params == {"span": "epochs"}


@pytest.mark.parametrize("hparams,declared,match", [
    ({"warmup": 20}, {"warm_up": "warmup"}, "names 'warm_up', which is not a numeric hyper-parameter"),
    ({"mode": "exact"}, {"mode": "epochs"}, "names 'mode', which is not a numeric hyper-parameter"),
    ({"warmup": 20}, {"warmup": "ramp"}, "kind 'ramp' is not one of epochs, start, warmup"),
    ({"warmup": 20}, "warmup", "must map hyper-parameter names to a kind"),
])
def test_a_bad_declaration_fails_when_the_class_is_defined(hparams, declared, match):
    with pytest.raises(TypeError, match=match):
        type("Bad", (Method,), {"hparams": hparams, "epoch_params": declared})
