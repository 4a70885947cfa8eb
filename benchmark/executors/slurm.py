"""The ``submitit`` executor: ``python -m benchmark run --executor submitit`` runs the grid as Slurm job arrays.

No scheduler of our own: `submitit <https://github.com/facebookincubator/submitit>`_ submits, requeues
and collects; its local executor (``--slurm-local``) runs the same code path on one machine (tests,
laptops, a workstation with a few GPUs).

* The grid's runs that have no ``ok`` record in ``--out`` are packed ``--runs-per-task`` per array task.
  Teachers go in a first array, students in a second one that starts when the first has ended
  (Slurm ``afterany`` dependency; locally, after the teacher tasks returned). A student whose teacher is
  still missing trains it under the teacher's run lock (:meth:`benchmark.runner.GridRunner.ensure_teacher`), so no packing or
  ordering can train a run twice.
* Idempotent by ``run_id``: a task skips every run that has an ``ok`` record, and the submitter submits
  only the missing runs, so resubmitting a grid runs nothing new.
* A task's specs run through :func:`benchmark.runner.run_specs`, the loop the local executor calls, so a
  task trains a cell's students together exactly as a local run does (pack them with ``--runs-per-task``).
* Preemption and time limits: a task is a :class:`submitit.helpers.Checkpointable`. On submitit's
  signal (USR2, ``signal_delay_s`` before the limit) the task's :class:`~benchmark.train.StopRequest` is set,
  the current cell is checkpointed at its next optimiser step, then submitit requeues the task, which
  resumes from ``<out>/checkpoints/<run_id>.pt``.
* ``--gpus-per-task N`` > 1 starts N processes per task (one per GPU) that train each run together with
  DDP (:mod:`benchmark.distributed`), e.g. ImageNet-LT / Places-LT teachers.
* Shared filesystem: ``--out`` must be visible from every node (records are written atomically, and
  the run locks use ``fcntl.flock``, which NFS v4 / Lustre mounted with ``flock`` / GPFS honour).
"""
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..config import ConfigError, SuiteConfig
from ..device import configure_backends
from ..distributed import env_world_size
from ..results import RunStore
from ..runner import Outcome, RunOptions, RunSpec, run_specs
from . import Executor, register_executor

try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - submitit is an optional dependency
    _Checkpointable = object  # type: ignore[misc,assignment]

__all__ = ["SlurmOptions", "SubmititExecutor", "GridTask", "pack", "STOP_AFTER_STEPS_ENV", "MAX_REQUEUES"]

#: Test hook: the first cell a task trains stops (checkpointed) after this many optimiser steps and the
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


@dataclass
class SlurmOptions:
    """Where and how array tasks run (the CLI's ``--slurm-*`` options; defaults live here only)."""

    partition: Optional[str] = None
    time: int = 24 * 60  # minutes per task; a task that hits it is checkpointed and requeued
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    array_parallelism: Optional[int] = None
    runs_per_task: int = 1
    extra: Dict[str, str] = field(default_factory=dict)
    local: bool = False  # submitit's local executor on this machine instead of Slurm
    wait: bool = True

    @staticmethod
    def parse_extra(items: Sequence[str]) -> Dict[str, str]:
        out: Dict[str, str] = {}
        for item in items:
            if "=" not in item:
                raise ConfigError(f"--slurm-extra '{item}' is not KEY=VALUE (e.g. --slurm-extra account=myproj)")
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip()
        return out


def pack(specs: Sequence[Any], per_task: int) -> List[List[Any]]:
    """Consecutive chunks of ``per_task`` specs (grid order keeps a cell's runs together)."""
    per_task = max(1, int(per_task))
    return [list(specs[i:i + per_task]) for i in range(0, len(specs), per_task)]


class GridTask(_Checkpointable):
    """One array task: :func:`run_specs` over its specs (recorded ones are skipped); requeue on preemption.

    Picklable and stateless apart from two flags: all progress lives in ``out`` (records, checkpoints),
    so the requeued callable simply runs again.
    """

    def __init__(self, cfg: SuiteConfig, out: Path, specs: Sequence[RunSpec],
                 stop_after_steps: Optional[int] = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.specs = list(specs)
        self.stop_after_steps = stop_after_steps
        self.attempt = 0
        self._preempted = False
        self._stop = None

    def __repr__(self) -> str:
        return f"GridTask({len(self.specs)} runs, out={self.out})"

    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_stop"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state, _stop=None)

    # submitit calls this (from its USR2 handler, or from ours) to get what is requeued
    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        self.stop_after_steps = None  # the test hook simulates one kill, not one per attempt
        self.attempt += 1
        self._preempted = False
        return DelayedSubmission(self, *args, **kwargs)

    def _on_preempt_signal(self, signum, frame) -> None:
        # submitit's own handler would requeue at once, losing the current epoch: instead ask the trainer to
        # checkpoint at its next step and requeue once it has stopped
        self._preempted = True
        print(f"received {signal.Signals(signum).name} (preemption / time limit): checkpointing the current run",
              flush=True)
        if self._stop is not None:
            self._stop.request()

    def __call__(self) -> List[Outcome]:
        import methods

        from .. import distributed as D
        from ..train import RunInterrupted, StopRequest

        self._preempted = False
        ddp = _export_torch_distributed_env()
        D.init_from_env(self.cfg.device)
        try:
            main = D.is_main()
            log = print if main else D.rank_log
            device = D.local_device(self.cfg.device)
            configure_backends(device, self.cfg.deterministic)
            methods.load_plugins(self.cfg.plugins)
            if ddp:
                D.check_batch_sizes(self.cfg)
            log(f"task pid {os.getpid()} attempt {self.attempt}: {len(self.specs)} runs on {device}"
                + (f" x {D.world_size()} processes" if ddp else ""))
            self._stop = StopRequest(self.stop_after_steps)
            opts = RunOptions(self.out, device, progress=False, stop=self._stop, log=log)
            usr_sig = _submitit_signal()
            submitit_handler = signal.getsignal(usr_sig) if usr_sig is not None else None
            with _PreemptionHandler(self, usr_sig, submitit_handler), self._stop.signals():
                try:
                    outcomes = run_specs(self.cfg, self.specs, opts)
                except RunInterrupted as err:
                    log(f"interrupted: {err}")
                    if not (self._preempted or self.stop_after_steps is not None):
                        raise RuntimeError("interrupted (SIGTERM/SIGINT): the current run was checkpointed; "
                                           "resubmit the same command to resume") from None
                    outcomes = None
            if outcomes is None:
                self._requeue(usr_sig, submitit_handler, log)
                return []  # non-main ranks: rank 0 requeues the whole job
            n = {s: sum(o.status == s for o in outcomes) for s in ("trained", "skipped", "failed")}
            log(f"task done: {n['trained']} ran, {n['skipped']} skipped, {n['failed']} failed")
            return outcomes
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


class _PreemptionHandler:
    """Inside a submitit job: route its USR2 to :meth:`GridTask._on_preempt_signal` for the block."""

    def __init__(self, task: GridTask, usr_sig, submitit_handler) -> None:
        self.task, self.sig, self.old = task, usr_sig, submitit_handler

    def __enter__(self):
        if self.sig is None or not callable(self.old):
            self.sig = None
            return self
        signal.signal(self.sig, self.task._on_preempt_signal)
        return self

    def __exit__(self, *exc) -> None:
        if self.sig is not None:
            signal.signal(self.sig, self.old)


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

def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()


def _make_executor(folder: Path, opts: SlurmOptions, name: str):
    submitit = _require_submitit()
    gpus = opts.gpus_per_task
    if opts.local:
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        ex.update_parameters(timeout_min=opts.time, gpus_per_node=min(gpus, _cuda_count()),
                             tasks_per_node=max(1, gpus) if gpus > 1 else 1)
        return ex
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
    params: Dict[str, Any] = {"job_name": name, "time": opts.time, "nodes": 1, "ntasks_per_node": max(1, gpus),
                              "cpus_per_task": opts.cpus_per_task, "signal_delay_s": 120}
    if gpus > 0:
        params["gpus_per_node"] = gpus
    if opts.partition:
        params["partition"] = opts.partition
    if opts.array_parallelism:
        params["array_parallelism"] = int(opts.array_parallelism)
    if opts.extra:
        params["additional_parameters"] = dict(opts.extra)
    ex.update_parameters(**params)
    return ex


class _LocalPool:
    """submitit's local executor starts every job at once: keep at most ``--array-parallelism`` running.

    With GPUs, each task gets its own ``--gpus-per-task`` GPUs (``CUDA_VISIBLE_DEVICES``); by default one task
    per GPU set, and a parallelism above that puts several small runs on each GPU.
    """

    def __init__(self, executor, opts: SlurmOptions) -> None:
        self.ex = executor
        gpus, n_vis = opts.gpus_per_task, _cuda_count()
        limit = opts.array_parallelism
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
    """(outcomes or None, error text or None) of a finished job."""
    try:
        return job.results()[0], None  # rank 0's outcomes when the task runs DDP over several processes
    except Exception as err:  # submitit wraps the task's traceback
        text = str(err).strip().splitlines()
        return None, (text[-1] if text else type(err).__name__)


def _reporter(results: Dict[str, tuple], log: Callable[[str], None]) -> Callable[[Any], None]:
    """A callback that stores a finished job's (outcomes, error) in ``results`` and logs one line."""
    def report(job) -> None:
        outcomes, err = results[job.job_id] = _task_result(job)
        what = (f"{sum(o.status == 'trained' for o in outcomes)} ran, "
                f"{sum(o.status == 'failed' for o in outcomes)} failed" if outcomes is not None
                else f"FAILED: {err} (log: {job.paths.stdout})")
        log(f"  task {job.job_id}: {what}")

    return report


def _collect(specs: Sequence[RunSpec], todo: Sequence[RunSpec], skipped: List[Outcome],
             task_outcomes: List[Optional[List[Outcome]]], store: RunStore) -> List[Outcome]:
    """One outcome per spec: what the tasks reported, else what the store says (a crashed task: failed)."""
    seen: Dict[str, Outcome] = {o.run_id: o for o in skipped}
    for outcomes in task_outcomes:
        for o in outcomes or []:
            if o.status != "skipped" or o.run_id not in seen:
                seen[o.run_id] = o
    for s in todo:  # a task that crashed, or was never heard from: its runs have no record
        if s.run_id not in seen:
            rec = store.load(s.run_id)
            status = "trained" if rec is not None and rec.ok else "failed"
            seen[s.run_id] = Outcome(s.run_id, s.role, status, rec, "" if rec else "its task failed")
    return [seen[s.run_id] for s in specs if s.run_id in seen]


def _array_id(jobs: Sequence[Any]) -> str:
    return str(jobs[0].job_id).split("_")[0] if jobs else "-"


@register_executor("submitit")
class SubmititExecutor(Executor):
    """Slurm job arrays (or submitit's local executor): teachers first, students after them."""

    def __init__(self, **options: Any) -> None:
        self.slurm = SlurmOptions(**options)

    def run(self, cfg: SuiteConfig, specs: Sequence[RunSpec], opts: RunOptions) -> List[Outcome]:
        """Submit the specs without an ok record; wait (unless ``wait`` is off) and return their outcomes.
        Specs already recorded come back as ``skipped``; a task that crashed makes its specs ``failed``."""
        _require_submitit()
        if env_world_size() > 1:
            raise ConfigError("--executor submitit submits jobs: start it with plain `python -m benchmark run`, "
                              "not under torchrun (use --gpus-per-task N for multi-GPU runs)")
        store = RunStore(opts.out)
        todo = [s for s in specs if not store.exists(s.run_id)]
        skipped = [Outcome(s.run_id, s.role, "skipped", store.load(s.run_id)) for s in specs if s not in todo]
        self._announce(specs, todo, opts)
        if not todo:
            opts.log("nothing to submit: every run has an ok record")
            return skipped
        by_role = self._tasks(cfg, todo, opts)
        results: Dict[str, tuple] = {}
        report = _reporter(results, opts.log)
        jobs = self._submit(cfg, Path(opts.out) / "submitit", by_role, report, opts.log)
        if not self.slurm.wait:
            opts.log("not waiting (--no-wait): run `python -m benchmark report --out "
                     f"{opts.out}` when they are done; rerunning this command submits only the missing runs")
            return skipped
        if not self.slurm.local:  # the local pool has reported each task already
            self._wait(jobs, report, opts.log)
        return _collect(specs, todo, skipped, [o for o, _ in results.values()], store)

    @staticmethod
    def _wait(jobs: List[Any], report: Callable[[Any], None], log: Callable[[str], None]) -> None:
        log("waiting for the jobs (Ctrl-C stops waiting; the jobs go on; rerun the same command to submit what "
            "is still missing)")
        for job in _require_submitit().helpers.as_completed(jobs, poll_frequency=30):
            report(job)

    def _tasks(self, cfg: SuiteConfig, todo: Sequence[RunSpec], opts: RunOptions) -> Dict[str, List[GridTask]]:
        """Array tasks per role, ``runs_per_task`` specs each (the test hook's step budget read once, here)."""
        stop_env = os.environ.get(STOP_AFTER_STEPS_ENV)
        stop = int(stop_env) if stop_env else None
        return {role: [GridTask(cfg, opts.out, chunk, stop) for chunk in
                       pack([s for s in todo if s.role == role], self.slurm.runs_per_task)]
                for role in ("teacher", "student")}

    def _announce(self, specs: Sequence[RunSpec], todo: Sequence[RunSpec], opts: RunOptions) -> None:
        so = self.slurm
        n_t = sum(s.role == "teacher" for s in todo)
        where = "submitit local executor" if so.local else "Slurm" + (f" partition {so.partition}" if so.partition
                                                                       else "")
        opts.log(f"{len(specs)} runs, {len(specs) - len(todo)} already recorded in {opts.out}/runs, {len(todo)} to "
                 f"run ({n_t} teachers, {len(todo) - n_t} students) on {where}")

    def _submit(self, cfg: SuiteConfig, folder: Path, by_role: Dict[str, List[GridTask]], report, log) -> List[Any]:
        so = self.slurm
        if so.local:
            ex = _make_executor(folder, so, f"ltkd-{cfg.name}")
            if not so.wait:
                jobs = [ex.submit(t) for t in by_role["teacher"] + by_role["student"]]
                log(f"started {len(jobs)} local task(s) (pids {', '.join(j.job_id for j in jobs)}); logs in {folder}/")
                return jobs
            pool, jobs = _LocalPool(ex, so), []
            for role in ("teacher", "student"):
                if by_role[role]:
                    log(f"running {len(by_role[role])} {role} task(s) locally ({so.runs_per_task} run(s) per task); "
                        f"logs in {folder}/")
                    jobs += pool.submit(by_role[role], report)
            return jobs
        ex = _make_executor(folder, so, f"ltkd-{cfg.name}-teachers")
        t_jobs: List[Any] = []
        if by_role["teacher"]:
            with ex.batch():
                t_jobs = [ex.submit(t) for t in by_role["teacher"]]
            log(f"submitted teacher array {_array_id(t_jobs)} ({len(t_jobs)} tasks)")
        s_jobs: List[Any] = []
        if by_role["student"]:
            params: Dict[str, Any] = {"job_name": f"ltkd-{cfg.name}-students"}
            if t_jobs:
                params["dependency"] = "afterany:" + ":".join(sorted({_array_id([j]) for j in t_jobs}))
            ex.update_parameters(**params)
            with ex.batch():
                s_jobs = [ex.submit(t) for t in by_role["student"]]
            log(f"submitted student array {_array_id(s_jobs)} ({len(s_jobs)} tasks)"
                + (", starting after the teacher array" if t_jobs else ""))
        log(f"logs in {folder}/; squeue -u $USER shows the arrays")
        return t_jobs + s_jobs
