"""Grid executor ``--executor submitit``: submitit's local executor runs the same code path as Slurm.

A small grid runs and writes its records; resubmitting runs nothing new; a run killed inside a job (the
test hook, or submitit's own preemption signal) is checkpointed, the job is requeued and the run resumes,
ending with the numbers of an uninterrupted run. The Slurm submission itself is checked against
submitit's mocked ``sbatch``.
"""
import json
import os
import re
import signal
import time

import pytest
import torch

from conftest import run_cli

pytest.importorskip("submitit")

SUBMITIT = ["--executor", "submitit", "--slurm-local", "--no-progress"]


def _records(out):
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


@pytest.mark.slow
def test_local_grid_resubmit_and_resume_after_kill(tmp_path, write_suite, cli_env):
    suite = write_suite(methods=("ce", "kd"))
    out = tmp_path / "res"
    env = dict(cli_env, OMP_NUM_THREADS="1")
    cmd = ["run", "--suite", str(suite), "--out", str(out), *SUBMITIT, "--runs-per-task", "2"]

    # 1. the grid: a teacher task, then one task packing the two students
    proc = run_cli(cmd, env, tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 to run (1 teachers, 2 students)" in proc.stdout
    assert "done: 2 ran, 0 skipped, 0 failed; teachers: 1 trained" in proc.stdout
    recs = _records(out)
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs.values())
    assert sorted(r["method"] for r in recs.values() if r["role"] == "student") == ["ce", "kd"]
    assert (out / "leaderboard.md").exists()
    jobs = sorted((out / "submitit").glob("*_submitted.pkl"))
    assert len(jobs) == 2  # 1 teacher task + 1 student task (2 runs packed)

    # 2. resubmitting the same grid runs nothing new
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "runs").glob("*.json")}
    again = run_cli(cmd, env, tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to run" in again.stdout and "nothing to submit" in again.stdout
    assert sorted((out / "submitit").glob("*_submitted.pkl")) == jobs  # no job was submitted
    assert {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (out / "runs").glob("*.json")} == stamps

    # 3. only the missing run is resubmitted; killed mid-epoch inside its job, requeued, resumed
    kd_id = next(k for k, r in recs.items() if r["method"] == "kd" and r["role"] == "student")
    (out / "runs" / f"{kd_id}.json").unlink()
    killed = run_cli(cmd, dict(env, LTKD_BENCH_STOP_AFTER_STEPS="5"), tmp_path, timeout=300)
    assert killed.returncode == 0, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert "1 to run (0 teachers, 1 students)" in killed.stdout and "done: 1 ran" in killed.stdout
    log = "".join(p.read_text() for p in (out / "submitit").glob("*_log.out"))
    assert "stopped at epoch 1 step 5" in log and "requeuing this task" in log
    rec = _records(out)[kd_id]
    assert rec["status"] == "ok"
    assert rec["resumed_from"] == {"epoch": 1, "step": 5}
    assert not (out / "checkpoints" / f"{kd_id}.pt").exists()
    # the resumed run ends with the uninterrupted run's numbers (deterministic on CPU)
    assert rec["final"]["per_class_acc"] == recs[kd_id]["final"]["per_class_acc"]
    assert rec["history"][-1]["loss"] == pytest.approx(recs[kd_id]["history"][-1]["loss"], rel=1e-5)


@pytest.mark.slow
def test_preemption_signal_checkpoints_requeues_and_resumes(tmp_path, write_suite, monkeypatch):
    """submitit's USR2 (preemption / time limit) during training: checkpoint at the next step, requeue, resume."""
    import submitit

    from benchmark.config import load_suite
    from benchmark.executors.slurm import GridTask
    from benchmark.runner import expand_grid

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = load_suite(str(write_suite(methods=("ce",), epochs=6)))  # several seconds of training to hit
    teacher = [s for s in expand_grid(cfg, torch.device("cpu")) if s.role == "teacher"]
    out = tmp_path / "res"
    ex = submitit.LocalExecutor(folder=out / "submitit", max_num_timeout=3)
    ex.update_parameters(timeout_min=10)
    job = ex.submit(GridTask(cfg, out, teacher))
    log = out / "submitit" / f"{job.job_id}_0_log.out"
    deadline = time.time() + 180
    pid = None
    while time.time() < deadline and pid is None:
        text = log.read_text() if log.exists() else ""
        m = re.search(r"task pid (\d+)", text)
        if m and re.search(r"\s1/6\s", text):  # the table's epoch-1 block: epoch 2 is under way
            pid = int(m.group(1))
        time.sleep(0.1)
    assert pid is not None, log.read_text() if log.exists() else "no log"
    os.kill(pid, signal.SIGUSR2)
    job.wait()
    outcomes = job.result()
    text = log.read_text()
    assert "checkpointing the current run" in text and "Requeued job" in text, text
    assert "attempt 1" in text and [o.status for o in outcomes] == ["trained"]
    rec = _records(out)[teacher[0].run_id]
    assert rec["status"] == "ok" and rec["epochs"] == 6
    assert rec["resumed_from"] is not None and rec["resumed_from"]["epoch"] >= 2
    assert (out / "checkpoints" / "teachers" / f"{teacher[0].run_id}.pt").exists()


def test_slurm_submission_arrays_options_and_dependency(tmp_path, write_suite):
    """Against submitit's mocked sbatch: a teacher job, then a student array that waits for it."""
    from submitit.slurm.test_slurm import mocked_slurm

    from benchmark.cli import build_config, make_parser, slurm_options
    from benchmark.executors import create_executor
    from benchmark.runner import RunOptions, expand_grid

    out = tmp_path / "res"
    args = make_parser().parse_args([
        "run", "--suite", str(write_suite(methods=("ce", "kd", "dkd"))), "--out", str(out), "--executor", "submitit",
        "--slurm-partition", "gpu", "--slurm-time", "600", "--gpus-per-task", "2", "--cpus-per-task", "6",
        "--runs-per-task", "2", "--array-parallelism", "4", "--slurm-extra", "account=proj", "--no-wait"])
    cfg = build_config(args)
    cpu = torch.device("cpu")
    with mocked_slurm():
        outcomes = create_executor("submitit", **slurm_options(args)).run(cfg, expand_grid(cfg, cpu),
                                                                         RunOptions(out, cpu, log=lambda m: None))
    assert outcomes == []  # --no-wait: nothing finished yet
    scripts = {p.name: p.read_text() for p in (out / "submitit").glob("[0-9]*_submission.sh")}
    assert len(scripts) == 2
    teacher_sh, student_sh = (scripts[k] for k in sorted(scripts, key=lambda n: int(n.split("_")[0])))
    for sh in (teacher_sh, student_sh):
        for flag in ("--partition=gpu", "--time=600", "--gpus-per-node=2", "--ntasks-per-node=2",
                     "--cpus-per-task=6", "--account=proj", "--signal=USR2@"):
            assert flag in sh, (flag, sh)
    assert "--array" not in teacher_sh  # one teacher: a plain job
    assert "--array=0-1%2" in student_sh  # 3 students, 2 per task
    assert re.search(r"--dependency=afterany:\d+", student_sh)
    assert "ltkd-tiny-students" in student_sh


def test_pack():
    from benchmark.executors.slurm import pack

    assert pack(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert pack([1, 2], 0) == [[1], [2]]
