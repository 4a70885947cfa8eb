"""Grid -> run specs -> execution. A spec hashes to a stable ``run_id``; finished runs are skipped.

Teachers are runs too (role ``teacher``, method ``ce``): trained once per (dataset, imbalance, arch,
seed, recipe), their weights cached under ``<out>/checkpoints/teachers/`` and their accuracy reported
like any row. Every student spec names its teacher's ``run_id``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .config import DatasetEntry, SuiteConfig, TrainRecipe, method_names
from .distributed import barrier, broadcast, is_main, world_size
from .results import RunStore, file_lock, regenerate

__all__ = ["RunSpec", "expand_grid", "GridRunner", "run_suite", "environment_info"]

REPO_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's numbers (and nothing machine-local)."""

    role: str  # teacher | student
    dataset: str
    imbalance_factor: Optional[float]
    data_seed: int
    arch: str
    method: str
    method_params: Tuple[Tuple[str, Any], ...]
    seed: int
    recipe: Tuple[Tuple[str, Any], ...]
    base_lr: Optional[float] = None
    teacher_arch: Optional[str] = None
    teacher_id: Optional[str] = None
    data_options: Tuple[Tuple[str, Any], ...] = ()

    @property
    def run_id(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
        imb = "" if self.imbalance_factor is None else f"_if{self.imbalance_factor:g}"
        who = self.arch if self.role == "teacher" else f"{self.teacher_arch}-{self.arch}"
        return f"{self.dataset}{imb}_{who}_{self.method if self.role == 'student' else 'teacher'}_s{self.seed}_{digest}"

    @property
    def params(self) -> Dict[str, Any]:
        return dict(self.method_params)

    @property
    def train_recipe(self) -> TrainRecipe:
        return TrainRecipe(**dict((k, list(v) if isinstance(v, tuple) else v) for k, v in self.recipe))


def _freeze(d: Dict[str, Any]) -> Tuple[Tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def resolved_method_params(name: str, cfg: SuiteConfig) -> Dict[str, Any]:
    """The method's declared defaults updated with the suite's ``method_params``."""
    import methods

    params = dict(methods.get_method(name).hparams)
    params.update(cfg.method_params.get(name, {}))
    return params


def teacher_spec(cfg: SuiteConfig, spec: "RunSpec | DatasetEntry", imbalance_factor: Optional[float], arch: str,
                 seed: int) -> RunSpec:
    """The teacher run: CE on the same long-tailed data (that of a dataset entry or of a student spec)."""
    if isinstance(spec, DatasetEntry):
        dataset, data_seed, options = spec.name, spec.data_seed, _freeze(spec.options)
    else:
        dataset, data_seed, options = spec.dataset, spec.data_seed, spec.data_options
    return RunSpec("teacher", dataset, imbalance_factor, data_seed, arch, "ce",
                   _freeze(resolved_method_params("ce", cfg)), seed, _freeze(dataclasses.asdict(cfg.teacher_train)),
                   data_options=options)


def expand_grid(cfg: SuiteConfig) -> List[RunSpec]:
    """Teacher specs first, then every (dataset x imbalance x pair x seed x method) student spec."""
    teachers: Dict[str, RunSpec] = {}
    students: List[RunSpec] = []
    names = method_names(cfg)
    s_recipe = _freeze(dataclasses.asdict(cfg.student_train))
    for entry in cfg.datasets:
        for imb in entry.imbalance_factors:
            for pair in cfg.pairs:
                for seed in cfg.seeds:
                    teacher = teacher_spec(cfg, entry, imb, pair.teacher, seed)
                    teachers.setdefault(teacher.run_id, teacher)
                    for name in names:
                        students.append(RunSpec(
                            "student", entry.name, imb, entry.data_seed, pair.student, name,
                            _freeze(resolved_method_params(name, cfg)), seed, s_recipe, pair.student_lr,
                            pair.teacher, teacher.run_id, _freeze(entry.options)))
    return list(teachers.values()) + students


def environment_info(device: torch.device) -> Dict[str, Any]:
    """Versions, device and git commit: what a record needs to be repeatable."""
    import timm
    import torchvision

    if device.type == "cuda":
        dev_name = f"cuda: {torch.cuda.get_device_name(device)}"
    else:
        dev_name = f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_DIR,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    from . import __version__

    return {"device": dev_name, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "python": platform.python_version(), "ltkd_bench": __version__,
            "git_commit": commit, "git_dirty": dirty, "hostname": platform.node(), "world_size": world_size()}


@dataclass
class GridRunner:
    """Executes specs against one results folder, caching datasets and teachers in-process."""

    cfg: SuiteConfig
    out: Path
    device: torch.device
    progress: bool = True
    log: Callable[[str], None] = print
    roots: Dict[str, Optional[str]] = field(default_factory=dict)
    _data: Dict[tuple, tuple] = field(default_factory=dict, repr=False)
    _failed: Dict[str, Dict[str, Any]] = field(default_factory=dict, repr=False)
    last_ran: bool = field(default=False, repr=False)  # whether the last run() call trained (vs found a record)
    _env: Optional[Dict[str, Any]] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.store = RunStore(self.out)
        for entry in self.cfg.datasets:
            self.roots.setdefault(entry.name, entry.root)

    @property
    def is_main(self) -> bool:
        return is_main()

    def env(self) -> Dict[str, Any]:
        if self._env is None:
            self._env = environment_info(self.device)
        return self._env

    def data(self, spec: RunSpec, recipe: TrainRecipe):
        """(train, test) data of a spec, loaded once per process."""
        from .data import build_data

        key = (spec.dataset, spec.imbalance_factor, spec.data_seed, spec.data_options, recipe.channels_last)
        if key not in self._data:
            root = self.roots.get(spec.dataset)
            kw = dict(root=root, imbalance_factor=spec.imbalance_factor, data_seed=spec.data_seed,
                      device=self.device, channels_last=recipe.channels_last, workers=recipe.workers,
                      options=dict(spec.data_options))
            self._data[key] = (build_data(spec.dataset, "train", **kw), build_data(spec.dataset, "test", **kw))
        return self._data[key]

    def _model(self, arch: str, train_data) -> torch.nn.Module:
        from .models import create_model

        return create_model(arch, num_classes=train_data.num_classes, in_chans=train_data.info.in_chans)

    def teacher(self, spec: RunSpec, train_data) -> torch.nn.Module:
        """The trained teacher of a student spec: cached weights, or train it now (its run lock serialises it)."""
        t_spec = teacher_spec(self.cfg, spec, spec.imbalance_factor, spec.teacher_arch, spec.seed)
        rec = self.run(t_spec)
        if rec["status"] != "ok":
            raise RuntimeError(f"its teacher {t_spec.run_id} failed: {rec.get('reason')}")
        model = self._model(spec.teacher_arch, train_data)
        weights = self.store.teacher_weights(t_spec.run_id)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model

    def run(self, spec: RunSpec, stop_after_steps: Optional[int] = None) -> Dict[str, Any]:
        """Train, evaluate and record one spec, unless its record already says ok (then return that record).

        A per-run file lock makes processes sharing a results folder wait for, not repeat, a run in progress.
        DDP: rank 0 alone takes the lock and decides for every rank (ranks queueing on it would deadlock).
        """
        lock = file_lock(self.store.lock_path(spec.run_id)) if self.is_main else contextlib.nullcontext()
        with lock:
            return self._run_unlocked(spec, stop_after_steps)

    def _run_unlocked(self, spec: RunSpec, stop_after_steps: Optional[int]) -> Dict[str, Any]:
        import methods

        from .train import NonFiniteLoss, train

        run_id = spec.run_id
        done = self.store.load(run_id)
        finished = done is not None and done.get("status") == "ok" and (
            spec.role == "student" or self.store.teacher_weights(run_id).exists())
        finished, done = broadcast((finished, done))  # DDP: rank 0's view decides for every rank
        self.last_ran = not finished and run_id not in self._failed
        if not self.last_ran:  # done, or already failed in this process (a broken teacher is not retried per student)
            return done if finished else self._failed[run_id]
        recipe = spec.train_recipe
        train_data, test_data = self.data(spec, recipe)
        method_cls = methods.get_method(spec.method)
        label = f"{spec.arch} {spec.method}" if spec.role == "student" else f"teacher {spec.arch}"
        ckpt = self.store.checkpoint_path(run_id)
        try:
            teacher = (self.teacher(spec, train_data) if spec.role == "student" and method_cls.requires_teacher
                       else None)
            torch.manual_seed(spec.seed)
            student = self._model(spec.arch, train_data)
            from .models import feature_dim

            ctx = methods.MethodContext(class_counts=train_data.class_counts, student_dim=feature_dim(student),
                                        teacher_dim=feature_dim(teacher) if teacher is not None else None,
                                        epochs=recipe.epochs)
            method = method_cls(ctx, **spec.params)
            self.log(f"==> {run_id}: {label} on {spec.dataset}"
                     + (f" IF {spec.imbalance_factor:g}" if spec.imbalance_factor else "")
                     + f", {recipe.epochs} epochs, seed {spec.seed}, {self.device}")
            result = train(student, method, recipe, train_data, test_data, seed=spec.seed, device=self.device,
                           teacher=teacher, checkpoint=ckpt, base_lr=spec.base_lr, desc=label,
                           progress=self.progress, log=self.log, stop_after_steps=stop_after_steps)
            status, reason = "ok", None
        except NonFiniteLoss as err:
            result, status, reason = None, "failed", str(err)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # one broken run must not stop the grid; the record says why
            result, status, reason = None, "failed", f"{type(err).__name__}: {err}"
            self.log(traceback.format_exc())
        record = self._record(spec, train_data, result, status, reason)
        if status != "ok":
            self._failed[run_id] = record
        if self.is_main:
            if status == "ok" and spec.role == "teacher":
                from .train import _atomic_save

                _atomic_save(student.state_dict(), self.store.teacher_weights(run_id))
            self.store.write(record)
            ckpt.unlink(missing_ok=True)  # the record (and teacher weights) hold what is needed now
            regenerate(self.out)
        barrier()  # DDP: ranks go on only once the record and teacher weights are on disk
        if status == "ok":
            f = record["final"]
            self.log(f"<== {run_id}: overall {f['overall']:.2f}%, "
                     + ", ".join(f"{g} {f[g]:.1f}" for g in ("many", "medium", "few", "head", "middle", "tail")
                                 if f.get(g) is not None)
                     + f" ({record['wall_time_s']:.0f}s, {record['images_per_s']:.0f} img/s)")
        else:
            self.log(f"<== {run_id}: FAILED: {reason}")
        return record

    def _record(self, spec: RunSpec, train_data, result, status: str, reason: Optional[str]) -> Dict[str, Any]:
        rec: Dict[str, Any] = {
            "run_id": spec.run_id, "status": status, "reason": reason, "role": spec.role,
            "suite": self.cfg.name, "dataset": spec.dataset, "imbalance_factor": spec.imbalance_factor,
            "data_seed": spec.data_seed, "data_options": dict(spec.data_options), "num_classes": train_data.num_classes,
            "class_counts": list(train_data.class_counts), "seed": spec.seed,
            "student_arch": spec.arch, "teacher_arch": spec.teacher_arch, "teacher_run_id": spec.teacher_id,
            "method": spec.method, "method_params": spec.params, "recipe": dataclasses.asdict(spec.train_recipe),
            "base_lr": spec.base_lr, "config": self.cfg.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **self.env(),
        }
        if result is not None:
            rec.update({"final": result.final, "best": result.best, "epochs": result.epochs_completed,
                        "history": result.history, "wall_time_s": result.wall_time_s,
                        "train_time_s": result.train_time_s, "images_per_s": result.images_per_s,
                        "resumed_from": result.resumed_from})
        return rec


def run_suite(cfg: SuiteConfig, out: Path, device: torch.device, progress: bool = True,
              log: Callable[[str], None] = print, only: Optional[List[str]] = None) -> Dict[str, int]:
    """Run every spec of the grid that has no ok record yet; returns counts of ran/skipped/failed."""
    runner = GridRunner(cfg, out, device, progress=progress, log=log)
    specs = expand_grid(cfg)
    if only is not None:
        specs = [s for s in specs if s.run_id in only]
    counts = {"ran": 0, "skipped": 0, "failed": 0}
    todo = broadcast([s for s in specs if not runner.store.exists(s.run_id)])  # DDP: rank 0's view
    counts["skipped"] = len(specs) - len(todo)
    if counts["skipped"]:
        log(f"{counts['skipped']} of {len(specs)} runs already have records in {out}/runs (skipped)")
    for spec in todo:
        rec = runner.run(spec)
        if not runner.last_ran:  # another process (or this one, as a teacher) finished it meanwhile
            counts["skipped"] += 1
            continue
        counts["ran"] += 1
        if rec["status"] != "ok":
            counts["failed"] += 1
    if not counts["ran"] and runner.is_main and runner.store.runs.exists():
        regenerate(out)  # nothing trained: still bring tables and plots in line with the records
    return counts
