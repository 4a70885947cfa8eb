"""Grid executors: ``python -m benchmark run --executor submitit`` runs the grid as Slurm job arrays.

No scheduler of our own: `submitit <https://github.com/facebookincubator/submitit>`_ submits, requeues
and collects; its local executor (``--slurm-local``) runs the same code path on one machine (tests,
laptops, a workstation with a few GPUs).

* The grid's runs that have no ``ok`` record in ``--out`` are packed ``--runs-per-task`` per array task.
  Teachers go in a first array, students in a second one that starts when the first has ended
  (Slurm ``afterany`` dependency; locally, after the teacher tasks returned). A student whose teacher is
  still missing trains it under the teacher's run lock (:meth:`GridRunner.run`), so no packing or
  ordering can train a run twice.
* Idempotent by ``run_id``: a task skips every run that has an ``ok`` record, and the submitter submits
  only the missing runs, so resubmitting a grid runs nothing new.
* Preemption and time limits: a task is a :class:`submitit.helpers.Checkpointable`. On submitit's
  signal (USR2, ``signal_delay_s`` before the limit) the current run is checkpointed at its next
  optimiser step (the signal is turned into the SIGTERM that :func:`benchmark.train.train` handles),
  then submitit requeues the task, which resumes from ``<out>/checkpoints/<run_id>.pt``.
* ``--gpus-per-task N`` > 1 starts N processes per task (one per GPU) that train each run together with
  DDP (:mod:`benchmark.distributed`), e.g. ImageNet-LT / Places-LT teachers.
* Shared filesystem: ``--out`` must be visible from every node (records are written atomically, and
  the run locks use ``fcntl.flock``, which NFS v4 / Lustre mounted with ``flock`` / GPFS honour).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - submitit is an optional dependency
    _Checkpointable = object  # type: ignore[misc,assignment]

__all__ = ["GridTask", "pack", "pending_specs", "submit_suite", "STOP_AFTER_STEPS_ENV", "MAX_REQUEUES"]

#: Test hook: the first run a task trains stops (checkpointed) after this many optimiser steps and the
#: task is requeued exactly as on a preemption. Read once, at submission.
STOP_AFTER_STEPS_ENV = "LTKD_BENCH_STOP_AFTER_STEPS"
#: How many times submitit may requeue a task after a time-out / preemption signal.
MAX_REQUEUES = 20


def _require_submitit():
    try:
        import submitit
    except ImportError:
        raise ModuleNotFoundError("--executor submitit needs the submitit package: pip install submitit "
                                  "(or pip install 'ltkd-bench[slurm]')") from None
    return submitit


def pack(specs: Sequence[Any], per_task: int) -> List[List[Any]]:
    """Consecutive chunks of ``per_task`` specs (grid order keeps a dataset's runs together)."""
    per_task = max(1, int(per_task))
    return [list(specs[i:i + per_task]) for i in range(0, len(specs), per_task)]


def pending_specs(cfg, out: Path) -> tuple:
    """(all specs, specs without an ``ok`` record) of the suite in ``out``."""
    from .results import RunStore
    from .runner import expand_grid

    specs = expand_grid(cfg)
    store = RunStore(out)
    return specs, [s for s in specs if not store.exists(s.run_id)]


class GridTask(_Checkpointable):
    """One array task: run its specs with a :class:`GridRunner` (skipping recorded ones); requeue on preemption.

    Picklable and stateless apart from two flags: all progress lives in ``out`` (records, checkpoints),
    so the requeued callable simply runs again.
    """

    def __init__(self, cfg, out: Path, specs: Sequence[Any], stop_after_steps: Optional[int] = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.specs = list(specs)
        self.stop_after_steps = stop_after_steps
        self.attempt = 0
        self._preempted = False

    def __repr__(self) -> str:
        return f"GridTask({len(self.specs)} runs, out={self.out})"

    # submitit calls this (from its USR2 handler, or from ours) to get what is requeued
    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        self.stop_after_steps = None  # the test hook simulates one kill, not one per attempt
        self.attempt += 1
        self._preempted = False
        return DelayedSubmission(self, *args, **kwargs)

    def _on_preempt_signal(self, signum, frame) -> None:
        # submitit's own handler would requeue at once, losing the current epoch: instead ask train() to
        # checkpoint at its next step (it turns SIGTERM into a flag) and requeue once it has stopped
        self._preempted = True
        print(f"received {signal.Signals(signum).name} (preemption / time limit): checkpointing the current run",
              flush=True)
        signal.raise_signal(signal.SIGTERM)

    def __call__(self) -> Dict[str, Any]:
        import methods

        from . import distributed as D
        from .cli import _configure
        from .runner import GridRunner
        from .train import RunInterrupted

        self._preempted = False
        ddp = _export_torch_distributed_env()
        D.init_from_env(self.cfg.device)
        try:
            main = D.is_main()
            log = print if main else D.rank_log
            device = D.local_device(self.cfg.device)
            _configure(self.cfg, device)
            methods.load_plugins(self.cfg.plugins)
            if ddp:
                D.check_batch_sizes(self.cfg)
            log(f"task pid {os.getpid()} attempt {self.attempt}: {len(self.specs)} runs on {device}"
                + (f" x {D.world_size()} processes" if ddp else ""))
            runner = GridRunner(self.cfg, self.out, device, progress=False, log=log)
            counts: Dict[str, Any] = {"ran": 0, "skipped": 0, "failed": 0, "failed_runs": [], "interrupted": False,
                                      "attempt": self.attempt}
            usr_sig = _submitit_signal()
            submitit_handler = signal.getsignal(usr_sig) if usr_sig is not None else None
            requeue = False
            with _PreemptionHandler(self, usr_sig, submitit_handler):
                stop = self.stop_after_steps
                for spec in self.specs:
                    if self._preempted:
                        requeue = True
                        break
                    try:
                        with _teacher_lock(runner, spec):  # a student task may be training this teacher
                            if D.broadcast(runner.store.exists(spec.run_id)):
                                counts["skipped"] += 1
                                continue
                            rec = runner.run(spec, stop_after_steps=stop)
                    except RunInterrupted as err:
                        log(f"interrupted: {err}")
                        counts["interrupted"] = True
                        requeue = self._preempted or stop is not None
                        break
                    stop = None
                    counts["ran"] += 1
                    if rec.get("status") != "ok":
                        counts["failed"] += 1
                        counts["failed_runs"].append(spec.run_id)
                requeue = requeue or self._preempted
            if requeue:
                self._requeue(usr_sig, submitit_handler, log)
                return counts  # non-main ranks: rank 0 requeues the whole job
            if counts["interrupted"]:
                raise RuntimeError("interrupted (SIGTERM/SIGINT): the current run was checkpointed; resubmit the "
                                   "same command to resume")
            log(f"task done: {counts['ran']} ran, {counts['skipped']} skipped, {counts['failed']} failed")
            return counts
        finally:
            if ddp:
                D.cleanup()

    def _requeue(self, usr_sig, submitit_handler, log) -> None:
        """Hand over to submitit's own handler: it calls :meth:`checkpoint`, requeues and exits."""
        if usr_sig is None or not callable(submitit_handler):
            raise RuntimeError("preempted outside a submitit job: rerun the same command to resume")
        log(f"requeuing this task (attempt {self.attempt + 1})")
        sys.stdout.flush()
        submitit_handler(usr_sig, None)


def _teacher_lock(runner, spec):
    """The lock :meth:`GridRunner.teacher` takes before training a missing teacher (rank 0 holds it)."""
    import contextlib

    from .results import file_lock

    if spec.role != "teacher" or not runner.is_main:
        return contextlib.nullcontext()
    return file_lock(runner.store.teacher_weights(spec.run_id).with_suffix(".lock"))


class _PreemptionHandler:
    """Inside a submitit job: route its USR2 to :meth:`GridTask._on_preempt_signal` for the block."""

    def __init__(self, task: GridTask, usr_sig, submitit_handler) -> None:
        self.task, self.sig, self.old = task, usr_sig, submitit_handler
        self.old_term = None

    def __enter__(self):
        if self.sig is None or not callable(self.old):
            self.sig = None
            return self
        signal.signal(self.sig, self.task._on_preempt_signal)
        # outside train() the SIGTERM we raise must be harmless (submitit installs a logging no-op)
        self.old_term = signal.getsignal(signal.SIGTERM)
        if not callable(self.old_term):
            signal.signal(signal.SIGTERM, lambda s, f: None)
        return self

    def __exit__(self, *exc) -> None:
        if self.sig is None:
            return
        signal.signal(self.sig, self.old)
        if not callable(self.old_term) and self.old_term is not None:
            signal.signal(signal.SIGTERM, self.old_term)


def _submitit_signal():
    """The signal submitit uses for preemption / time-out in this job (USR2), or None outside a job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        from submitit import JobEnvironment

        return JobEnvironment._usr_sig()
    except Exception:  # pragma: no cover - not a submitit job
        return None


def _export_torch_distributed_env() -> bool:
    """In a submitit job of several tasks (``--gpus-per-task`` > 1): export RANK/WORLD_SIZE/MASTER_* for DDP."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks <= 1:
        return False
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True


# ----------------------------------------------------------------------------- submission

def _executor_options(args: argparse.Namespace) -> Dict[str, Any]:
    def get(name, default=None):
        value = getattr(args, name, None)
        return default if value is None else value

    extra: Dict[str, str] = {}
    for item in get("slurm_extra", []) or []:
        if "=" not in item:
            from .config import ConfigError

            raise ConfigError(f"--slurm-extra '{item}' is not KEY=VALUE (e.g. --slurm-extra account=myproj)")
        k, v = item.split("=", 1)
        extra[k.strip()] = v.strip()
    return {"partition": get("slurm_partition"), "time": int(get("slurm_time", 24 * 60)),
            "gpus_per_task": int(get("gpus_per_task", 1)), "cpus_per_task": int(get("cpus_per_task", 8)),
            "array_parallelism": get("array_parallelism"), "runs_per_task": int(get("runs_per_task", 1)),
            "local": bool(get("slurm_local", False)), "wait": not get("no_wait", False),
            "extra": extra}


def _make_executor(folder: Path, opts: Dict[str, Any], name: str):
    submitit = _require_submitit()
    gpus = opts["gpus_per_task"]
    if opts["local"]:
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        n_vis = _cuda_count()
        ex.update_parameters(timeout_min=opts["time"], gpus_per_node=min(gpus, n_vis),
                             tasks_per_node=max(1, gpus) if gpus > 1 else 1)
        return ex
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
    params: Dict[str, Any] = {"job_name": name, "time": opts["time"], "nodes": 1,
                              "ntasks_per_node": max(1, gpus), "cpus_per_task": opts["cpus_per_task"],
                              "signal_delay_s": 120}
    if gpus > 0:
        params["gpus_per_node"] = gpus
    if opts["partition"]:
        params["partition"] = opts["partition"]
    if opts["array_parallelism"]:
        params["array_parallelism"] = int(opts["array_parallelism"])
    if opts["extra"]:
        params["additional_parameters"] = dict(opts["extra"])
    ex.update_parameters(**params)
    return ex


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover
        return 0


class _LocalPool:
    """submitit's local executor starts every job at once: keep at most ``--array-parallelism`` running.

    With GPUs, each task gets its own ``--gpus-per-task`` GPUs (``CUDA_VISIBLE_DEVICES``); by default one task
    per GPU set, and a parallelism above that puts several small runs on each GPU.
    """

    def __init__(self, executor, opts: Dict[str, Any]) -> None:
        self.ex = executor
        gpus, n_vis = opts["gpus_per_task"], _cuda_count()
        limit = opts["array_parallelism"]
        if gpus > 0 and n_vis >= gpus:  # a slot per disjoint set of GPUs; more slots share the sets round-robin
            sets = [tuple(range(i * gpus, (i + 1) * gpus)) for i in range(n_vis // gpus)]
            n = int(limit) if limit else len(sets)
            self.free = [sets[i % len(sets)] for i in range(n)]
        else:  # CPU: one task at a time unless --array-parallelism says otherwise
            self.free = [()] * max(1, int(limit or 1))
        self.running: List[tuple] = []

    def submit(self, tasks: List[GridTask], on_done) -> List[Any]:
        jobs = []
        queue = list(tasks)
        while queue or self.running:
            while queue and self.free:
                gpu_set = self.free.pop(0)
                if gpu_set:
                    self.ex.update_parameters(visible_gpus=gpu_set)
                job = self.ex.submit(queue.pop(0))
                jobs.append(job)
                self.running.append((job, gpu_set))
            time.sleep(0.5)
            for item in list(self.running):
                if item[0].done():
                    self.running.remove(item)
                    self.free.append(item[1])
                    on_done(item[0])
        return jobs


def _task_result(job) -> tuple:
    """(counts or None, error text or None) of a finished job."""
    try:
        return job.results()[0], None  # rank 0's counts when the task runs DDP over several processes
    except Exception as err:  # submitit wraps the task's traceback
        text = str(err).strip().splitlines()
        return None, (text[-1] if text else type(err).__name__)


def submit_suite(cfg, out: Path, args: argparse.Namespace) -> int:
    """Submit the suite's missing runs (teachers, then students) as job arrays; wait and summarise."""
    from . import distributed as D
    from .results import regenerate

    submitit = _require_submitit()
    if D.env_world_size() > 1:
        from .config import ConfigError

        raise ConfigError("--executor submitit submits jobs: start it with plain `python -m benchmark run`, "
                          "not under torchrun (use --gpus-per-task N for multi-GPU runs)")
    opts = _executor_options(args)
    out = Path(out)
    specs, todo = pending_specs(cfg, out)
    n_t = sum(s.role == "teacher" for s in todo)
    where = "submitit local executor" if opts["local"] else "Slurm" + (
        f" partition {opts['partition']}" if opts["partition"] else "")
    print(f"suite '{cfg.name}': {len(specs)} runs, {len(specs) - len(todo)} already recorded in {out}/runs, "
          f"{len(todo)} to run ({n_t} teachers, {len(todo) - n_t} students) on {where}")
    if not todo:
        regenerate(out)
        print(f"nothing to submit: 0 to run. Leaderboard: {out / 'leaderboard.md'}")
        return 0
    stop_env = os.environ.get(STOP_AFTER_STEPS_ENV)
    stop = int(stop_env) if stop_env else None
    folder = out / "submitit"
    teacher_tasks = [GridTask(cfg, out, chunk, stop) for chunk in pack([s for s in todo if s.role == "teacher"],
                                                                        opts["runs_per_task"])]
    student_tasks = [GridTask(cfg, out, chunk, stop) for chunk in pack([s for s in todo if s.role == "student"],
                                                                        opts["runs_per_task"])]
    results: Dict[str, tuple] = {}

    def report(job) -> None:
        res = results[job.job_id] = _task_result(job)
        counts, err = res
        what = (f"{counts['ran']} ran, {counts['skipped']} skipped, {counts['failed']} failed" if counts
                else f"FAILED: {err} (log: {job.paths.stdout})")
        print(f"  task {job.job_id}: {what}", flush=True)

    jobs: List[Any] = []
    if opts["local"]:
        ex = _make_executor(folder, opts, f"ltkd-{cfg.name}")
        if opts["wait"]:
            pool = _LocalPool(ex, opts)
            for label, tasks in (("teacher", teacher_tasks), ("student", student_tasks)):
                if tasks:
                    print(f"running {len(tasks)} {label} task(s) locally ({opts['runs_per_task']} run(s) per task); "
                          f"logs in {out / 'submitit'}/", flush=True)
                    jobs += pool.submit(tasks, report)
        else:
            jobs = [ex.submit(t) for t in teacher_tasks + student_tasks]
            print(f"started {len(jobs)} local task(s) (pids {', '.join(j.job_id for j in jobs)}); logs in "
                  f"{out / 'submitit'}/")
    else:
        ex = _make_executor(folder, opts, f"ltkd-{cfg.name}-teachers")
        t_jobs: List[Any] = []
        if teacher_tasks:
            with ex.batch():
                t_jobs = [ex.submit(t) for t in teacher_tasks]
            print(f"submitted teacher array {_array_id(t_jobs)} ({len(t_jobs)} tasks)", flush=True)
        if student_tasks:
            params: Dict[str, Any] = {"job_name": f"ltkd-{cfg.name}-students"}
            if t_jobs:
                params["dependency"] = "afterany:" + ":".join(sorted({_array_id([j]) for j in t_jobs}))
            ex.update_parameters(**params)
            with ex.batch():
                s_jobs = [ex.submit(t) for t in student_tasks]
            print(f"submitted student array {_array_id(s_jobs)} ({len(s_jobs)} tasks)"
                  + (", starting after the teacher array" if t_jobs else ""), flush=True)
        else:
            s_jobs = []
        jobs = t_jobs + s_jobs
        print(f"logs in {out / 'submitit'}/; squeue -u $USER shows the arrays")
        if opts["wait"]:
            print("waiting for the jobs (Ctrl-C stops waiting; the jobs go on; rerun the same command to "
                  "submit what is still missing)", flush=True)
            for job in submitit.helpers.as_completed(jobs, poll_frequency=30):
                report(job)
    if not opts["wait"]:
        print("not waiting (--no-wait): run `python -m benchmark report --out "
              f"{out}` when they are done; rerunning this command submits only the missing runs")
        return 0
    text = regenerate(out)
    ran = sum(c["ran"] for c, _ in results.values() if c)
    failed_runs = sum(c["failed"] for c, _ in results.values() if c)
    failed_tasks = sum(1 for c, _ in results.values() if c is None)
    _, still = pending_specs(cfg, out)
    print(f"done: {ran} ran, {len(specs) - len(todo)} skipped (already recorded), {failed_runs} failed; "
          f"{len(jobs)} tasks, {failed_tasks} failed; {len(still)} of {len(specs)} runs still without an ok record."
          + (f" Leaderboard: {out / 'leaderboard.md'}" if text is not None else ""))
    return 1 if (failed_tasks or failed_runs or still) else 0


def _array_id(jobs: Sequence[Any]) -> str:
    return str(jobs[0].job_id).split("_")[0] if jobs else "-"
