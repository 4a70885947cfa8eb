"""End-to-end harness: the CLI on a tiny suite, resume after a kill, NaN runs, concurrent writers, check."""
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, call_cli, run_cli

pytestmark = pytest.mark.slow

RECORD_FIELDS = {"run_id", "status", "role", "config", "method", "method_params", "seed", "dataset",
                 "imbalance_factor", "class_counts", "arch", "teacher_arch", "final", "best", "wall_time_s",
                 "images_per_s", "env", "code", "effective", "history", "recipe"}


def test_cli_run_writes_records_tables_and_plot(tmp_path, write_suite, capsys):
    suite = write_suite(methods=("ce", "kd"))
    out = tmp_path / "res"
    rc, _, err = call_cli(capsys, ["run", "--suite", suite, "--out", out, "--no-progress"])
    assert rc == 0, err[-3000:]
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    assert len(records) == 3  # teacher + 2 students
    assert {r["role"] for r in records} == {"teacher", "student"}
    for rec in records:
        assert RECORD_FIELDS <= set(rec), RECORD_FIELDS - set(rec)
        assert rec["status"] == "ok"
        assert len(rec["final"]["per_class_acc"]) == 10
        assert rec["class_counts"] == [600, 359, 215, 129, 77, 46, 27, 16, 10, 6]
        assert 0 <= rec["final"]["overall"] <= 100
        assert rec["final"]["group_sizes"] == {"many": 4, "medium": 3, "few": 3, "head": 3, "middle": 4, "tail": 3}
        assert rec["final"]["empty_groups"] == []
    md = (out / "leaderboard.md").read_text()
    assert "teacher (ce)" in md and "| kd" in md and "| ce" in md
    assert "many (4 cls)" in md and "few (3 cls)" in md and "n_max=600" in md
    csv = (out / "leaderboard.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[0].startswith("dataset,imbalance_factor")
    assert list((out / "plots").glob("*.png"))
    assert (out / "checkpoints" / "teachers").is_dir()
    # a second invocation skips everything, and still rebuilds the tables from the records
    (out / "leaderboard.md").unlink()
    rc, again, _ = call_cli(capsys, ["run", "--suite", suite, "--out", out, "--no-progress"])
    assert rc == 0
    assert "0 ran, 2 skipped, 0 failed; teachers: 0 trained, 1 reused" in again
    assert (out / "leaderboard.md").read_text() == md


def _runner(suite_path, out, stop_after_steps=None):
    from benchmark.config import load_suite
    from benchmark.runner import GridRunner, RunOptions
    from benchmark.train import StopRequest

    cfg = load_suite(str(suite_path))
    opts = RunOptions(out, torch.device("cpu"), progress=False, log=lambda m: None,
                      stop=StopRequest(stop_after_steps))
    return cfg, GridRunner(cfg, opts)


def test_resume_after_kill_gives_the_same_record(tmp_path, write_suite):
    from benchmark.runner import expand_grid
    from benchmark.train import RunInterrupted

    suite = write_suite(methods=("kd",), epochs=2)
    cfg, full = _runner(suite, tmp_path / "full")
    teacher_spec, kd_spec = expand_grid(cfg, torch.device("cpu"))
    rec_full = full.run_specs([teacher_spec, kd_spec])[1].record

    _, killed = _runner(suite, tmp_path / "killed")
    killed.run_specs([teacher_spec])
    _, killed = _runner(suite, tmp_path / "killed", stop_after_steps=30)  # 1485 // 64 = 23 steps per epoch
    with pytest.raises(RunInterrupted):
        killed.run_specs([kd_spec])  # stops in epoch 2, mid-epoch
    ckpt = killed.store.checkpoint_path(kd_spec.run_id)
    assert ckpt.exists() and torch.load(ckpt, weights_only=False)["loop"]["epoch"] == 2
    assert killed.store.load(kd_spec.run_id) is None
    _, killed = _runner(suite, tmp_path / "killed")
    rec_resumed = killed.run_specs([kd_spec])[0].record
    assert rec_resumed["resumed_from"] == {"epoch": 2, "step": 7}
    assert rec_resumed["final"]["per_class_acc"] == rec_full["final"]["per_class_acc"]
    assert [h["loss"] for h in rec_resumed["history"]] == pytest.approx([h["loss"] for h in rec_full["history"]],
                                                                        rel=1e-6)
    assert not ckpt.exists()  # the record replaces the checkpoint


def _fake_record(i):
    return {"run_id": f"r{i:03d}", "status": "ok", "role": "student", "dataset": "fmnist-lt", "imbalance_factor": 100,
            "teacher_arch": "t", "student_arch": "s", "method": f"m{i % 4}", "seed": i // 4,
            "class_counts": [100, 10], "final": {"epoch": 1, "overall": float(i), "many": None, "medium": 1.0,
                                                  "few": 1.0, "head": 1.0, "middle": None, "tail": 1.0,
                                                  "per_class_acc": [1.0, 2.0],
                                                  "group_sizes": {"many": 0, "medium": 1, "few": 1, "head": 1,
                                                                  "middle": 0, "tail": 1}}}


def _writer(out, ids):
    from benchmark.results import RunStore, regenerate

    store = RunStore(out)
    for i in ids:
        rec = _fake_record(i)
        rec["best"] = rec["final"]
        store.write(rec)
        regenerate(out)


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(tmp_path, range(k, 24, 2))) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    files = sorted((tmp_path / "runs").glob("*.json"))
    assert len(files) == 24
    assert all(json.loads(f.read_text())["run_id"] for f in files)
    assert not list((tmp_path / "runs").glob("*.tmp"))
    csv = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert len(csv) == 1 + 4  # 4 methods, each mean over its seeds
    import pandas as pd
    import io
    df = pd.read_csv(io.StringIO("\n".join(csv)))
    assert sorted(df["seeds"].tolist()) == [6, 6, 6, 6]


def test_check_passes_on_reference_and_fails_when_degraded(tmp_path, write_suite, capsys):
    """Write a reference from one training, pass against it, then fail against a reference raised above it
    (a degraded run and a raised reference are the same comparison; no second training needed)."""
    from benchmark.cli import main

    suite = write_suite(methods=("ce", "kd"), epochs=1)
    ref = tmp_path / "ref.json"
    out = tmp_path / "res"
    common = ["check", "--suite", str(suite), "--reference", str(ref), "--out", str(out), "--no-progress"]
    assert main(common + ["--update-reference"]) == 0
    data = json.loads(ref.read_text())
    assert len(data["runs"]) == 3
    capsys.readouterr()
    assert main(common) == 0  # every run recorded in --out: compared without retraining
    assert "check passed" in capsys.readouterr().out
    kd = next(label for label in data["runs"] if "/kd/" in label)
    data["runs"][kd]["overall"] += 5.0
    ref.write_text(json.dumps(data))
    assert main(common) == 1
    text = capsys.readouterr().out
    assert "FAIL" in text and f"{kd}: overall" in text and "check FAILED: 1 regression" in text


def test_ctrl_c_checkpoints_and_rerun_resumes(tmp_path, write_suite, cli_env):
    suite = write_suite(methods=("ce",), epochs=6)
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "benchmark", "run", "--suite", str(suite), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    for line in proc.stdout:  # wait until the student has finished one epoch, then press Ctrl-C
        if re.match(r"\s+1/6\s+ce\s", line) or time.time() > deadline:  # the cell table's epoch-1 row of ce
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted:" in err and "rerun the same command to resume" in err
    ckpts = list((out / "checkpoints").glob("*_ce_s0_*.pt"))
    assert len(ckpts) == 1
    again = run_cli(["run", "--suite", str(suite), "--out", str(out), "--no-progress"], cli_env, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from epoch" in again.stdout
    rec = [json.loads(p.read_text()) for p in (out / "runs").glob("*_ce_*.json")][0]
    assert rec["status"] == "ok" and rec["resumed_from"]["epoch"] >= 2 and rec["epochs"] == 6
