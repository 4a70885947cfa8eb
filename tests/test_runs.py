"""The run loop's promises: cells give the numbers of single runs, exact counts and exit codes, failed runs
are not silently retried, provenance in every record, resume after kill -9, Ctrl-C during evaluation,
references that compare something, and the reproduction verdict."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO

CPU = torch.device("cpu")

NOISY_PLUGIN = '''
import torch.nn.functional as F
from methods import Method, register_method

@register_method("noisy_ce")
class NoisyCE(Method):
    """CE on dropped-out logits: draws from the global RNG at every step (tests per-student RNG streams)."""
    requires_teacher = False
    def forward(self, student, teacher, target, epoch):
        return {"ce": F.cross_entropy(F.dropout(student.logits, 0.5, training=True), target)}
'''

NAN_PLUGIN = '''
from methods import Method, register_method

@register_method("nan_kd")
class NanKD(Method):
    """Uses the teacher, then goes NaN."""
    def forward(self, student, teacher, target, epoch):
        return {"bad": (student.logits - teacher.logits).sum() * float("nan")}
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / "noisy_plugin.py").write_text(NOISY_PLUGIN)
    (tmp_path / "nan_plugin.py").write_text(NAN_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]))
    return ("noisy_plugin", "nan_plugin")


def _run(cfg, out, **kw):
    from benchmark.runner import RunOptions, expand_grid, run_specs

    opts = RunOptions(out, CPU, progress=False, log=lambda m: None, **kw)
    return run_specs(cfg, expand_grid(cfg, CPU), opts)


def _records(out):
    return {r["run_id"]: r for r in (json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json")))}


@pytest.mark.slow
def test_cell_gives_the_numbers_of_single_runs_for_every_method(tmp_path, write_suite, plugins):
    """Lockstep training changes no number: every registered method (and one drawing random numbers at every
    step) ends bit-identical to training one at a time, history included."""
    import methods
    from benchmark.config import load_suite

    names = tuple(methods.list_methods()) + ("noisy_ce",)
    cfg = load_suite(str(write_suite(methods=names, plugins=plugins)))
    together = _run(cfg, tmp_path / "cell")
    alone = _run(cfg, tmp_path / "alone", together=False)
    assert [o.status for o in together] == ["trained"] * len(together)
    a, b = _records(tmp_path / "cell"), _records(tmp_path / "alone")
    assert set(a) == set(b) and len(a) == 1 + len(names)
    students = [rid for rid in a if a[rid]["role"] == "student"]
    assert {a[r]["effective"]["cell_size"] for r in students} == {len(names)}
    assert {b[r]["effective"]["cell_size"] for r in students} == {1}
    for rid in a:
        assert a[rid]["final"]["per_class_acc"] == b[rid]["final"]["per_class_acc"], a[rid]["method"]
        assert [h["loss"] for h in a[rid]["history"]] == [h["loss"] for h in b[rid]["history"]], a[rid]["method"]
        pa = np.load(tmp_path / "cell" / "runs" / f"{rid}.predictions.npz")["pred"]
        pb = np.load(tmp_path / "alone" / "runs" / f"{rid}.predictions.npz")["pred"]
        assert np.array_equal(pa, pb)
    noisy = next(r for r in students if a[r]["method"] == "noisy_ce")
    ce = next(r for r in students if a[r]["method"] == "ce")
    assert a[noisy]["history"][0]["loss"] != a[ce]["history"][0]["loss"]  # the dropout did draw numbers


@pytest.mark.slow
def test_nan_student_fails_alone_exit_1_and_is_not_retried_unless_asked(tmp_path, write_suite, plugins, capsys):
    from benchmark.cli import main

    suite = write_suite(methods=("ce", "nan_kd", "kd"), plugins=plugins)
    out = tmp_path / "res"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "done: 2 ran, 0 skipped, 1 failed; teachers: 1 trained, 0 reused, 0 failed" in text
    recs = {r["method"]: r for r in _records(out).values() if r["role"] == "student"}
    assert recs["nan_kd"]["status"] == "failed" and recs["nan_kd"]["failure_kind"] == "deterministic"
    assert "non-finite loss" in recs["nan_kd"]["reason"]
    assert recs["ce"]["status"] == recs["kd"]["status"] == "ok"
    nan_file = out / "runs" / f"{recs['nan_kd']['run_id']}.json"
    stamp = nan_file.stat().st_mtime_ns
    # a rerun does not retrain the deterministic failure, and still exits 1
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "done: 0 ran, 2 skipped, 1 failed; teachers: 0 trained, 1 reused" in text
    assert "--retry-failed retrains it" in text
    assert nan_file.stat().st_mtime_ns == stamp
    # --retry-failed trains it again (and it fails again)
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress", "--retry-failed"]) == 1
    assert "done: 0 ran, 2 skipped, 1 failed" in capsys.readouterr().out
    assert nan_file.stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_kill_9_mid_cell_then_rerun_gives_identical_records_and_counts(tmp_path, write_suite, cli_env, capsys):
    from benchmark.cli import main

    suite = write_suite(methods=("ce", "kd"), epochs=2)
    main(["run", "--suite", str(suite), "--out", str(tmp_path / "full"), "--no-progress"])
    capsys.readouterr()
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "benchmark", "run", "--suite", str(suite), "--out", str(out), "--no-progress"]
    threads = str(torch.get_num_threads())  # the thread count changes CPU numerics: keep this process's
    proc = subprocess.Popen(cmd, env=dict(cli_env, OMP_NUM_THREADS=threads), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    for line in proc.stdout:  # the cell finished epoch 1 (and checkpointed): kill -9
        if re.match(r"\s+kd\s", line) or time.time() > deadline:  # kd's row closes the table's epoch-1 block
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*_s0_*.pt"))
    assert len(ckpts) == 2, ckpts  # both students of the cell, at the end of epoch 1
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "done: 2 ran, 0 skipped, 0 failed; teachers: 0 trained, 1 reused, 0 failed" in text
    assert text.count("resuming from epoch 2 step 0") == 2
    full, killed = _records(tmp_path / "full"), _records(out)
    assert set(full) == set(killed)
    for rid, rec in full.items():
        assert killed[rid]["final"]["per_class_acc"] == rec["final"]["per_class_acc"]
        assert [h["loss"] for h in killed[rid]["history"]] == [h["loss"] for h in rec["history"]]
    # provenance: effective settings, code fingerprint, predictions, student weights, logs
    rec = next(r for r in killed.values() if r["method"] == "kd" and r["role"] == "student")
    assert rec["recipe"]["amp"] is False and rec["recipe"]["channels_last"] is True  # CPU: no bf16 autocast
    assert rec["effective"]["device"] == "cpu" and rec["effective"]["fused_sgd"] is False
    assert re.fullmatch(r"[0-9a-f]{12}", rec["code"]["fingerprint"]) and rec["code"]["family"]
    assert {"git_commit", "git_dirty"} <= set(rec["code"]) and rec["teacher_recipe"] == rec["recipe"]
    npz = np.load(out / "runs" / f"{rec['run_id']}.predictions.npz")
    pred, target = npz["pred"], npz["target"]
    assert len(pred) == len(target) == sum(rec["final"]["per_class_test_count"])
    per_class = [100.0 * np.mean(pred[target == c] == c) for c in range(10)]
    assert per_class == pytest.approx(rec["final"]["per_class_acc"])  # the predictions are the recorded ones
    assert (out / "checkpoints" / "students" / f"{rec['run_id']}.pt").exists()
    log = (out / "logs" / f"{rec['run_id']}.log").read_text()
    assert "epoch=1" in log and "epoch=2" in log
    rows = (out / "logs" / f"{rec['run_id']}.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_acc") and len(rows) == 1 + 2
    # a method added to the suite later trains alone; the others are skipped
    more = write_suite(methods=("ce", "kd", "dkd"), epochs=2)
    assert main(["run", "--suite", str(more), "--out", str(out), "--no-progress"]) == 0
    assert "done: 1 ran, 2 skipped, 0 failed" in capsys.readouterr().out


@pytest.mark.slow
def test_two_processes_sharing_out_count_exactly(tmp_path, write_suite, cli_env):
    suite = write_suite(methods=("ce", "kd"))
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "benchmark", "run", "--suite", str(suite), "--out", str(out), "--no-progress"]
    env = dict(cli_env, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    counts = []
    for text in outs:
        m = re.search(r"done: (\d+) ran, (\d+) skipped, (\d+) failed; teachers: (\d+) trained, (\d+) reused", text)
        counts.append(tuple(map(int, m.groups())))
    assert sum(c[0] for c in counts) == 2 and all(c[0] + c[1] == 2 and c[2] == 0 for c in counts)
    assert sum(c[3] for c in counts) == 1 and all(c[3] + c[4] == 1 for c in counts)


@pytest.mark.slow
def test_ctrl_c_during_final_evaluation_stops_the_grid(tmp_path, write_suite, monkeypatch):
    """The run being evaluated is recorded; the grid stops instead of swallowing the request."""
    from benchmark.config import load_suite
    from benchmark.train import RunInterrupted, StopRequest, Trainer

    stop = StopRequest()
    real = Trainer._evaluate

    def evaluate_then_ctrl_c(self, members, predictions=False):
        out = real(self, members, predictions)
        if predictions and any(m.method.name == "ce" and "_teacher_" not in m.key for m in members):
            stop.request()
        return out

    monkeypatch.setattr(Trainer, "_evaluate", evaluate_then_ctrl_c)
    cfg = load_suite(str(write_suite(methods=("ce", "kd"))))
    with pytest.raises(RunInterrupted, match="stopped on request"):
        _run(cfg, tmp_path / "res", together=False, stop=stop)
    recs = {r["method"]: r for r in _records(tmp_path / "res").values() if r["role"] == "student"}
    assert set(recs) == {"ce"} and recs["ce"]["status"] == "ok"


def test_reference_that_compares_nothing_is_refused(tmp_path, write_suite, capsys):
    from benchmark.check import load_reference
    from benchmark.cli import main
    from benchmark.config import ConfigError

    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"runs": {}}))
    with pytest.raises(ConfigError, match="lists no runs"):
        load_reference(empty)
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"metrics": ["overal"], "runs": {"a/b/c/s0": {"overall": 1.0}}}))
    with pytest.raises(ConfigError, match="unknown metric 'overal'. Did you mean overall"):
        load_reference(typo)
    out = tmp_path / "res"
    for ref in (empty, typo):
        assert main(["check", "--suite", str(write_suite()), "--reference", str(ref), "--out", str(out)]) == 2
        assert "error:" in capsys.readouterr().err
    assert not out.exists()  # refused before any training


def test_reference_sharing_no_run_with_the_suite_is_refused():
    from benchmark.check import compare
    from benchmark.config import ConfigError

    rec = {"run_id": "x", "status": "ok", "role": "student", "dataset": "fmnist-lt", "imbalance_factor": 100,
           "teacher_arch": "t", "arch": "s", "method": "kd", "seed": 0, "final": {"overall": 50.0, "tail": 1.0}}
    with pytest.raises(ConfigError, match="compares nothing"):
        compare([rec], {"metrics": ["overall"], "runs": {"other/t->s/kd/s0": {"overall": 1.0}}})


@pytest.mark.slow
def test_rerun_prints_reproduction_verdict_and_flags_a_difference(tmp_path, write_suite, capsys):
    from benchmark.check import write_reference
    from benchmark.cli import main
    from benchmark.config import load_suite

    ref = tmp_path / "tiny_reference.json"
    suite = write_suite(methods=("ce",), extra=f"reference: {ref}\n")
    out = tmp_path / "res"
    outcomes = _run(load_suite(str(suite)), out)
    write_reference(ref, [o.record for o in outcomes], load_suite(str(suite)), CPU)
    assert main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "reproduction against tiny_reference.json" in text
    assert "reproduction: 2 runs: 2 exact" in text  # the per-run verdict lines are in the runs' logs
    assert all("reproduction: reproduced" in p.read_text() for p in (out / "logs").glob("*.log"))
    data = json.loads(ref.read_text())
    label = next(k for k in data["runs"] if "/ce/" in k)
    data["runs"][label]["overall"] -= 7.5
    data["seed_stats"][label.rsplit("/", 1)[0]]["overall"]["mean"] -= 7.5  # the one seed's statistics move with it
    ref.write_text(json.dumps(data))
    main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert "reproduction: 2 runs: 1 exact, 1 unjudged" in text  # one reference seed: no spread to judge by
    data["fallback_tolerance"] = {"overall": 3.0, "tail": 12.0}  # a labelled hand-set tolerance judges it
    ref.write_text(json.dumps(data))
    main(["run", "--suite", str(suite), "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert re.search(rf"OFF +{re.escape(label)}: overall [\d.]+ \(reference [\d.]+, \+7\.50, limit 3\.00 OFF\)",
                     text), text
    assert "HAND-SET" in text and "reproduction: 2 runs: 1 exact, 1 off" in text


def test_fresh_copy_of_the_repository_trains_the_quick_suite(tmp_path, cli_env):
    """Nothing committed counts as done: in a copy of the repository every quick-suite run is 'to do'."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    copy = tmp_path / "clone"
    for rel in files:
        src = REPO / rel
        if src.is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            (copy / rel).write_bytes(src.read_bytes())
    env = dict(cli_env, PYTHONPATH=str(copy))
    proc = subprocess.run([sys.executable, "-m", "benchmark", "run", "--dry-run"], cwd=copy, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if "_s0_" in ln]
    assert lines and all(ln.startswith("to do") for ln in lines), proc.stdout
    assert re.search(r"\d+ runs on cpu: 0 done, \d+ to do, 0 failed", proc.stdout)


@pytest.mark.slow
def test_truncated_checkpoint_is_set_aside_and_the_run_starts_over(tmp_path, write_suite):
    from benchmark.config import load_suite
    from benchmark.runner import expand_grid
    from benchmark.results import RunStore

    cfg = load_suite(str(write_suite(methods=("ce",))))
    student = [s for s in expand_grid(cfg, CPU) if s.role == "student"][0]
    store = RunStore(tmp_path / "res")
    ckpt = store.checkpoint_path(student.run_id)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    outcomes = _run(cfg, tmp_path / "res")
    assert [o.status for o in outcomes] == ["trained", "trained"]
    assert ckpt.with_name(ckpt.name + ".unreadable").exists() and not ckpt.exists()
    assert store.load(student.run_id)["resumed_from"] is None


def test_teacher_from_a_local_weights_file_used_as_is(tmp_path, write_suite):
    """A pair's teacher starts from a local weights file (offline), evaluated as is; the record names the
    weights' origin and SHA-256, and other weights give another teacher run."""
    import hashlib

    from benchmark.config import load_suite
    from benchmark.models import create_model

    torch.manual_seed(3)
    weights = tmp_path / "teacher.pth"
    model = create_model("cifar_cnn_tiny", num_classes=10, in_chans=1)
    torch.save(model.state_dict(), weights)
    extra = f"""
pairs:
  - {{teacher: cifar_cnn_tiny, student: cifar_cnn_tiny, teacher_weights: {weights}, teacher_finetune: false}}
"""
    suite = write_suite(methods=("ce",), name="w.yaml")
    text = suite.read_text().replace("pairs:\n  - {teacher: cifar_cnn_tiny, student: cifar_cnn_tiny}\n", "")
    suite.write_text(text + extra)
    cfg = load_suite(str(suite))
    outcomes = _run(cfg, tmp_path / "res")
    teacher = next(o.record for o in outcomes if o.role == "teacher")
    assert teacher["status"] == "ok" and teacher["epochs"] == 0 and teacher["history"] == []
    assert teacher["init"] == {"origin": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                               "finetuned": False}
    # used as is: the teacher's predictions are those of the saved network
    x = torch.load(tmp_path / "res" / "checkpoints" / "teachers" / f"{teacher['run_id']}.pt", weights_only=True)
    assert all(torch.equal(x[k], v) for k, v in model.state_dict().items())
    torch.manual_seed(4)
    torch.save(create_model("cifar_cnn_tiny", num_classes=10, in_chans=1).state_dict(), weights)
    from benchmark.runner import expand_grid

    assert expand_grid(load_suite(str(suite)), CPU)[0].run_id != teacher["run_id"]  # other weights, other run


def test_a_cell_loads_a_teacher_only_to_distil_from_it(monkeypatch):
    """``_cell_teacher``: none for a teacher run (it learns from the labels) and none for a student cell whose
    methods all train without one; otherwise the students' teacher, loaded once for the cell."""
    from types import SimpleNamespace

    from benchmark.runner import GridRunner

    runner = object.__new__(GridRunner)
    loaded = []
    monkeypatch.setattr(runner, "_teacher_model", lambda spec, data: loaded.append(spec.method) or "teacher")
    spec = lambda role, method: SimpleNamespace(role=role, method=method)  # noqa: E731
    assert runner._cell_teacher([spec("teacher", "ce")], None) is None
    assert runner._cell_teacher([spec("teacher", "kd")], None) is None  # a teacher run never has one, by its role
    assert runner._cell_teacher([spec("student", "ce"), spec("student", "balanced_softmax")], None) is None
    assert loaded == []
    assert runner._cell_teacher([spec("student", "ce"), spec("student", "kd")], None) == "teacher"
    assert loaded == ["ce"]  # the cell's first spec names the teacher
