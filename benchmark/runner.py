"""From a suite to records: run specs, cells, and the one run loop every executor calls (:func:`run_specs`).

config -> :func:`expand_grid` (one :class:`RunSpec` per dataset x IF x pair x method x seed, plus the
teachers; the run id hashes the effective settings) -> :func:`cells` (student specs sharing data, teacher,
architecture, seed and recipe) -> :class:`GridRunner` (teacher from cache or trained as a cell of one; the
cell trained in lockstep by :class:`~benchmark.train.Trainer`) -> records, predictions, student weights and
logs in the :class:`~benchmark.results.RunStore` -> tables (:func:`~benchmark.results.regenerate`).
"""
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import timm
import torch

import methods

from .config import (CONFIG_DIR, ConfigError, DatasetEntry, Pair, SuiteConfig, TrainRecipe, effective_method_params,
                     method_names)
from .console import CellTable, short_names
from .data import build_data
from .device import effective_recipe
from .distributed import barrier, broadcast, is_main
from .evaluate import GROUPS
from .fileio import atomic_savez, atomic_torch_save, sha256_file
from .models import create_model, feature_dim, map_shapes
from .provenance import RESULTS_FAMILY, code_info, environment_info
from .record import RunContext, RunRecord
from .reference import adopt_teacher
from .results import RunStore, file_lock, regenerate
from .train import RunInterrupted, StopRequest, Trainer, TrainResult

__all__ = ["RunSpec", "RunOptions", "Outcome", "expand_grid", "teacher_spec", "cells", "GridRunner", "run_specs",
           "summarize_outcomes", "method_context"]


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one run's numbers (and nothing machine-local); ``run_id`` hashes it."""

    role: str  # teacher | student
    dataset: str
    imbalance_factor: Optional[float]
    data_seed: int
    arch: str
    method: str
    method_params: Tuple[Tuple[str, Any], ...]
    seed: int
    recipe: Tuple[Tuple[str, Any], ...]  # the effective recipe (as the device runs it)
    student_lr: Optional[float] = None
    teacher_arch: Optional[str] = None
    teacher_id: Optional[str] = None
    data_options: Tuple[Tuple[str, Any], ...] = ()
    init: Optional[str] = None  # teachers: the weights they start from (None: from scratch; see teacher_init)
    family: str = RESULTS_FAMILY

    @property
    def run_id(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
        imb = "" if self.imbalance_factor is None else f"_if{self.imbalance_factor:g}"
        who = self.arch if self.role == "teacher" else f"{self.teacher_arch}-{self.arch}"
        return f"{self.dataset}{imb}_{who}_{self.method if self.role == 'student' else 'teacher'}_s{self.seed}_{digest}"

    def train_recipe(self) -> TrainRecipe:
        fields = {f.name for f in dataclasses.fields(TrainRecipe)}
        return TrainRecipe(**{k: list(v) if isinstance(v, tuple) else v for k, v in self.recipe if k in fields})

    @property
    def cell_key(self) -> tuple:
        """Specs with the same key train in one cell: same data stream, teacher, student, seed and recipe."""
        return (self.dataset, self.imbalance_factor, self.data_seed, self.data_options, self.teacher_id, self.arch,
                self.seed, self.recipe, self.student_lr)


def _freeze(d: Dict[str, Any]) -> Tuple[Tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


@lru_cache(maxsize=None)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:  # the stat fields key the cache
    return sha256_file(path)


def teacher_init(pair: Pair) -> Optional[str]:
    """Where the pair's teacher starts: None (from scratch), ``timm`` or ``sha256:<hex>`` of a local file (so
    the run id changes with the weights, not with where the file lies)."""
    if pair.teacher_weights is None:
        return None
    if pair.teacher_weights == "timm":
        return "timm"
    path = weights_file(pair.teacher_weights)
    if not path.is_file():
        raise ConfigError(f"pairs: teacher_weights '{pair.teacher_weights}' is not a file; give a weights file "
                          "(state dict, .pth / .safetensors) or 'timm' for timm's pretrained weights")
    st = path.stat()
    return f"sha256:{_file_sha256(str(path.resolve()), st.st_mtime_ns, st.st_size)}"


def weights_file(weights: str) -> Path:
    """A local weights file: as given (``~`` expanded), else, for a relative path missing from the current
    folder, the same path under configs/ (a suite's committed teacher, found from any working folder)."""
    path = Path(weights).expanduser()
    if not path.is_absolute() and not path.is_file() and (CONFIG_DIR / path).is_file():
        return CONFIG_DIR / path
    return path


def _file_overlay(arch: str, path: Path) -> Dict[str, Any]:
    """timm's ``pretrained_cfg_overlay`` for a local weights file, with the file's own class count, so that
    timm keeps a classifier of the right size (weights trained on this very split) and drops any other."""
    overlay: Dict[str, Any] = {"file": str(path)}
    classifier = timm.models.get_pretrained_cfg_value(arch, "classifier")
    if isinstance(classifier, str):
        state = timm.models.load_state_dict(str(path))
        weight = state.get(f"{classifier}.weight")
        if weight is not None:
            overlay["num_classes"] = int(weight.shape[0])
    return overlay


def teacher_spec(cfg: SuiteConfig, entry: DatasetEntry, imbalance_factor: Optional[float], pair: Pair, seed: int,
                 device: torch.device) -> RunSpec:
    """The teacher run: CE on the same long-tailed data as its students (from scratch, or fine-tuned from
    weights; weights used as is are only evaluated)."""
    ce = effective_method_params(cfg, "ce", entry, Pair(pair.teacher, pair.teacher))
    recipe = effective_recipe(cfg.teacher_train, device)
    init = teacher_init(pair)
    if init is not None and not pair.teacher_finetune:
        recipe["epochs"] = 0  # evaluate the weights as they are
    return RunSpec("teacher", entry.name, imbalance_factor, entry.data_seed, pair.teacher, "ce", _freeze(ce), seed,
                   _freeze(recipe), data_options=_freeze(entry.options), init=init)


def expand_grid(cfg: SuiteConfig, device: torch.device) -> List[RunSpec]:
    """Teacher specs first, then every (dataset x imbalance x pair x seed x method) student spec."""
    teachers: Dict[str, RunSpec] = {}
    students: List[RunSpec] = []
    names = method_names(cfg)
    s_recipe = _freeze(effective_recipe(cfg.student_train, device))
    for entry in cfg.datasets:
        for imb in entry.imbalance_factors:
            for pair in cfg.pairs:
                for seed in cfg.seeds:
                    teacher = teacher_spec(cfg, entry, imb, pair, seed, device)
                    teachers.setdefault(teacher.run_id, teacher)
                    for name in names:
                        students.append(RunSpec(
                            "student", entry.name, imb, entry.data_seed, pair.student, name,
                            _freeze(effective_method_params(cfg, name, entry, pair)), seed, s_recipe,
                            pair.student_lr, pair.teacher, teacher.run_id, _freeze(entry.options)))
    return list(teachers.values()) + students


def cells(specs: Sequence[RunSpec], together: bool = True) -> List[List[RunSpec]]:
    """Student specs grouped by :attr:`RunSpec.cell_key` (grid order kept); one spec per cell if not ``together``."""
    if not together:
        return [[s] for s in specs]
    groups: Dict[tuple, List[RunSpec]] = {}
    for s in specs:
        groups.setdefault(s.cell_key, []).append(s)
    return list(groups.values())


@dataclass
class RunOptions:
    """How a grid runs on this machine (nothing here changes a number)."""

    out: Path
    device: torch.device
    progress: bool = True
    together: bool = True  # train a cell's students in lockstep (False: one at a time, for debugging)
    retry_failed: bool = False  # retrain runs recorded as failed deterministically (non-finite loss, bad value)
    retrain_stale: bool = False  # retrain runs whose record came from other code (another fingerprint)
    keep_students: bool = True  # keep each student's final weights in <out>/checkpoints/students/
    reference: bool = False  # reuse the suite's committed reference teachers and rank beside its rows (run's default)
    stop: StopRequest = field(default_factory=StopRequest)
    log: Callable[[str], None] = logging.getLogger("ltkd_bench").info


@dataclass
class Outcome:
    """What happened to one spec in this call: ``trained``, ``skipped`` (already recorded) or ``failed``."""

    run_id: str
    role: str
    status: str
    record: Optional[RunRecord] = None
    note: str = ""


def _fingerprint(rec: RunRecord) -> Optional[str]:
    """The code fingerprint a record was made by (None for records written before fingerprints existed)."""
    return (rec.code or {}).get("fingerprint")


_DETERMINISTIC = "deterministic"  # failure kinds: a rerun would fail the same way (not retried unless asked)
_ERROR = "error"


class GridRunner:
    """Runs specs against one results folder, caching datasets and teachers in-process."""

    def __init__(self, cfg: SuiteConfig, opts: RunOptions) -> None:
        self.cfg, self.opts, self.log = cfg, opts, opts.log
        self.out = Path(opts.out)
        self.store = RunStore(self.out)
        self.device = opts.device
        self._data: Dict[tuple, tuple] = {}
        self._teachers: Dict[str, Outcome] = {}
        self._env: Optional[Dict[str, Any]] = None
        self._names: Dict[str, str] = {}  # run id -> the short name the console shows
        self._code = code_info(cfg.plugins)
        self.roots = {e.name: e.root for e in cfg.datasets}
        self.entries = {e.name: e for e in cfg.datasets}

    # ------------------------------------------------------------------ the run loop
    def run_specs(self, specs: Sequence[RunSpec]) -> List[Outcome]:
        """Train every spec without an ok record (teachers first, then students cell by cell)."""
        outcomes: List[Outcome] = []
        for spec in specs:
            if spec.role == "teacher":
                outcomes.append(self.ensure_teacher(spec))
                self._check_stop()
        for cell in cells([s for s in specs if s.role == "student"], self.opts.together):
            outcomes += self.run_student_cell(cell)
            self._check_stop()
        # teachers trained for students of this call but not among its specs (e.g. a submitit student task)
        listed = {o.run_id for o in outcomes}
        outcomes += [o for rid, o in self._teachers.items() if rid not in listed and o.status == "trained"]
        return outcomes

    def _check_stop(self) -> None:
        if self.opts.stop.hit:  # e.g. Ctrl-C during a final evaluation: the run was recorded, the grid stops
            raise RunInterrupted("stopped on request after the last recorded run; rerun the same command to resume")

    def _status(self, spec: RunSpec) -> Tuple[str, Optional[RunRecord]]:
        """``done``, ``failed`` (deterministically, not to retry) or ``todo``, and the record if any."""
        rec = self.store.load(spec.run_id)
        if rec is None:
            return "todo", None
        if rec.ok:
            if spec.role == "teacher" and not self.store.teacher_weights(spec.run_id).exists():
                return "todo", rec
            stale = self._stale(rec)
            return ("todo" if stale and self.opts.retrain_stale else "done"), rec
        if rec.failure_kind == _DETERMINISTIC and not self.opts.retry_failed:
            return "failed", rec
        return "todo", rec

    def _stale(self, rec: RunRecord) -> bool:
        """Recorded by other code (another fingerprint); a teacher copied from the committed reference is pinned by
        its sha256 instead, so ``--retrain-stale`` keeps it (delete its record to train it here)."""
        return _fingerprint(rec) != self._code["fingerprint"] and rec.copied_from is None

    @contextlib.contextmanager
    def _locked(self, specs: Sequence[RunSpec]) -> Iterator[None]:
        """Per-run locks, taken in sorted order (no deadlock between processes sharing ``out``); rank 0 only."""
        with contextlib.ExitStack() as stack:
            if is_main():
                for rid in sorted(s.run_id for s in specs):
                    stack.enter_context(file_lock(self.store.lock_path(rid)))
            yield

    def _skip(self, spec: RunSpec, status: str, rec: Optional[RunRecord]) -> Outcome:
        if status == "failed":
            return Outcome(spec.run_id, spec.role, "failed", rec,
                           f"failed earlier ({rec.reason}); --retry-failed retrains it")
        stale = self._stale(rec)
        note = (f"recorded by other code (fingerprint {_fingerprint(rec) or 'none'}, now "
                f"{self._code['fingerprint']}); --retrain-stale retrains it") if stale else ""
        return Outcome(spec.run_id, spec.role, "skipped", rec, note)

    # ------------------------------------------------------------------ teachers
    def ensure_teacher(self, spec: RunSpec) -> Outcome:
        """The teacher's record: reused, or trained now as a cell of one (its lock serialises processes)."""
        if spec.run_id in self._teachers:
            return self._teachers[spec.run_id]
        if self.opts.reference and is_main():  # the committed teacher of these exact settings, if it checks out
            adopt_teacher(self.store, spec.run_id, self.cfg.name, self.log)
        barrier()
        outcome = self._train_teacher(spec)
        self._teachers[spec.run_id] = outcome
        return outcome

    def _train_teacher(self, spec: RunSpec) -> Outcome:
        """Train a teacher run unless it is recorded: a cell of one that learns from the labels alone."""
        return self._train_unrecorded([spec])[0]

    def _teacher_spec_of(self, spec: RunSpec) -> Tuple[RunSpec, Pair]:
        """The teacher spec (and its pair) a student spec names, rebuilt from this suite."""
        entry = self.entries.get(spec.dataset) or DatasetEntry(spec.dataset, data_seed=spec.data_seed,
                                                                options=dict(spec.data_options))
        for pair in self.cfg.pairs:
            if pair.teacher == spec.teacher_arch:
                t_spec = teacher_spec(self.cfg, entry, spec.imbalance_factor, pair, spec.seed, self.device)
                if t_spec.run_id == spec.teacher_id:
                    return t_spec, pair
        raise RuntimeError(f"the teacher {spec.teacher_id} of {spec.run_id} is not one of this suite's teachers")

    def _teacher_model(self, spec: RunSpec, train_data: Any) -> torch.nn.Module:
        t_spec, _ = self._teacher_spec_of(spec)
        outcome = self.ensure_teacher(t_spec)
        if outcome.status == "failed" or not self.store.teacher_weights(t_spec.run_id).exists():
            rec = outcome.record
            raise _CellFailed(f"its teacher {t_spec.run_id} failed: {rec.reason if rec else None}",
                              (rec.failure_kind if rec else None) or _ERROR)
        model = self._model(spec.teacher_arch, train_data)
        model.load_state_dict(self._teacher_state(self.store.teacher_weights(t_spec.run_id)))
        return model

    def _teacher_state(self, path: Path) -> Dict[str, Any]:
        """A teacher's saved weights; an unreadable file (corrupt, foreign) is set aside, so a rerun retrains it."""
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            bad = path.with_name(path.name + ".unreadable")
            if is_main():
                os.replace(path, bad)
            first = str(err).strip().splitlines()[0][:100] if str(err).strip() else ""
            raise _CellFailed(f"the teacher weights {path.name} are unreadable ({type(err).__name__}: {first}); moved "
                              f"to {bad.name}: rerun the same command to retrain the teacher", _ERROR) from None

    # ------------------------------------------------------------------ cells
    def run_student_cell(self, specs: Sequence[RunSpec]) -> List[Outcome]:
        """Train a cell's unrecorded student runs together, distilling from their teacher; recorded ones are
        skipped (counted as such)."""
        return self._train_unrecorded(specs)

    def _train_unrecorded(self, specs: Sequence[RunSpec]) -> List[Outcome]:
        """Under the runs' locks: skip the recorded runs (or deterministic failures), train the rest as one cell."""
        with self._locked(specs):
            statuses = broadcast([self._status(s) for s in specs])  # DDP: rank 0's view decides for every rank
            outcomes = {s.run_id: self._skip(s, st, rec) for s, (st, rec) in zip(specs, statuses) if st != "todo"}
            todo = [s for s, (st, _) in zip(specs, statuses) if st == "todo"]
            if todo:
                for o in self._fit_cell(todo):
                    outcomes[o.run_id] = o
        return [outcomes[s.run_id] for s in specs]

    def _fit_cell(self, specs: List[RunSpec]) -> List[Outcome]:
        """Train one cell: its data and teacher, a Trainer with every student, then a record per run."""
        t0 = time.perf_counter()
        try:
            trainer, train_data = self._build_trainer(specs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # the cell cannot start: every run of it is recorded as failed
            if not isinstance(err, _CellFailed):
                self.log(traceback.format_exc())
            reason = str(err) if isinstance(err, _CellFailed) else f"{type(err).__name__}: {err}"
            kind = err.kind if isinstance(err, _CellFailed) else _ERROR
            return [self._finish(s, None, None, "failed", reason, kind, t0) for s in specs]
        failed: Dict[str, Tuple[str, str]] = {}
        students: Dict[str, torch.nn.Module] = {}
        for spec in specs:
            try:
                students[spec.run_id] = self._add(trainer, spec, train_data)
            except (KeyboardInterrupt, SystemExit):
                raise
            except (ValueError, TypeError) as err:  # an invalid hyper-parameter fails the same way every time
                failed[spec.run_id] = (f"{type(err).__name__}: {err}", _DETERMINISTIC)
            except Exception as err:
                self.log(traceback.format_exc())
                failed[spec.run_id] = (f"{type(err).__name__}: {err}", _ERROR)
        results = trainer.fit() if trainer.members else {}
        outcomes = [self._outcome(spec, train_data, results.get(spec.run_id), failed.get(spec.run_id),
                                  students.get(spec.run_id), t0) for spec in specs]
        if is_main():
            regenerate(self.out, reference=self.opts.reference)
        barrier()  # DDP: ranks go on only once records and weights are on disk
        return outcomes

    def _build_trainer(self, specs: List[RunSpec]) -> Tuple[Trainer, Any]:
        """The cell's data, its teacher (:meth:`_cell_teacher`) and an empty Trainer."""
        first = specs[0]
        recipe = first.train_recipe()
        train_data, test_data = self.data(first, recipe)
        teacher = self._cell_teacher(specs, train_data)
        label = (f"teacher {first.arch}" if first.role == "teacher" else
                 f"{first.teacher_arch}->{first.arch} [{', '.join(s.method for s in specs)}]")
        self.log(f"==> {label} on {first.dataset}" + (f" IF {first.imbalance_factor:g}" if first.imbalance_factor
                                                       else "") + f", {recipe.epochs} epochs, seed {first.seed}, "
                 f"{self.device}" + (f", {len(specs)} runs in lockstep" if len(specs) > 1 else ""))
        names = short_names([s.run_id for s in specs], ["teacher" if s.role == "teacher" else s.method for s in specs])
        self._names.update(names)
        trainer = Trainer(recipe, train_data, test_data, seed=first.seed, device=self.device, teacher=teacher,
                          stop=self.opts.stop, desc=label, progress=self.opts.progress, log=self.log,
                          member_log=self._member_log, epoch_report=CellTable(names, recipe.epochs, self.log))
        return trainer, train_data

    def _cell_teacher(self, specs: List[RunSpec], train_data: Any) -> Optional[torch.nn.Module]:
        """The frozen teacher a cell distils from: None for a teacher run, and for a student cell whose methods
        all train without one (``requires_teacher = False``), so none is loaded or trained for it."""
        if specs[0].role == "teacher" or not any(methods.get_method(s.method).requires_teacher for s in specs):
            return None
        return self._teacher_model(specs[0], train_data)

    def _outcome(self, spec: RunSpec, train_data: Any, result: Optional[TrainResult],
                 failed: Optional[Tuple[str, str]], student: Optional[torch.nn.Module], t0: float) -> Outcome:
        if failed is not None:
            return self._finish(spec, None, None, "failed", failed[0], failed[1], t0)
        if result.failure:
            kind = _DETERMINISTIC if result.failure.startswith("non-finite") else _ERROR
            return self._finish(spec, train_data, result, "failed", result.failure, kind, t0)
        return self._finish(spec, train_data, result, "ok", None, None, t0, student)

    def _add(self, trainer: Trainer, spec: RunSpec, train_data: Any) -> torch.nn.Module:
        """Build the spec's student and method (seeded by the spec alone) and add them to the cell."""
        method_cls = methods.get_method(spec.method)
        torch.manual_seed(spec.seed)  # the student's initialisation depends on its seed only
        pair = self._pair_of_teacher(spec) if spec.init is not None else None
        student = self._model(spec.arch, train_data, pair.teacher_weights if pair is not None else None)
        ctx = method_context(method_cls, train_data, student, trainer.teacher, trainer.recipe.epochs)
        method = method_cls(ctx, **dict(spec.method_params))
        log_file = self.store.log_path(spec.run_id)
        trainer.add(spec.run_id, student, method, student_lr=spec.student_lr,
                    checkpoint=self.store.checkpoint_path(spec.run_id),
                    on_epoch=self.store.epoch_logger(spec.run_id) if is_main() else None)
        if is_main():
            self.store.append_log(spec.run_id, f"started {spec.run_id}: {spec.method} {spec.arch} on "
                                               f"{spec.dataset} seed {spec.seed} ({log_file.name})")
        return student

    def _member_log(self, run_id: str, line: str) -> None:
        """A student's own line (epoch, resume, failure) into its run log; the console shows the cell's table,
        and a resume or a discarded checkpoint by method name (it changes what the rerun does)."""
        if is_main():
            self.store.append_log(run_id, line)
            if line.startswith(("resuming ", "checkpoint ")):
                self.log(f"  {self._names.get(run_id, run_id)}: {line.split(' (')[0]}")  # the file (a run id): log only

    def _finish(self, spec: RunSpec, train_data: Any, result: Optional[TrainResult], status: str,
                reason: Optional[str], kind: Optional[str], t0: float,
                student: Optional[torch.nn.Module] = None) -> Outcome:
        """Write the record (and teacher/student weights, predictions) of one run; log one line."""
        record = self._record(spec, train_data, result, status, reason, kind)
        if is_main():
            if result is not None and result.predictions is not None:
                atomic_savez(self.store.predictions_path(spec.run_id), pred=result.predictions.astype("int32"),
                             target=result.targets.astype("int32"))
                record.predictions_sha256 = sha256_file(self.store.predictions_path(spec.run_id))  # binds the numbers
            if student is not None and spec.role == "teacher":
                atomic_torch_save(student.state_dict(), self.store.teacher_weights(spec.run_id))
            elif student is not None and self.opts.keep_students:
                atomic_torch_save(student.state_dict(), self.store.student_weights(spec.run_id))
            self.store.write(record)
            self.store.checkpoint_path(spec.run_id).unlink(missing_ok=True)
        if status == "ok":
            f = record.final
            line = (f"<== {spec.run_id}: overall {f['overall']:.2f}%, " + ", ".join(
                f"{g} {f[g]:.1f}" for g in GROUPS
                if f.get(g) is not None) + f" ({time.perf_counter() - t0:.0f}s)")
        else:
            line = f"<== {spec.run_id}: FAILED: {reason}"
            self.log(f"FAILED {spec.method if spec.role == 'student' else 'teacher'} (seed {spec.seed}): {reason} "
                     f"(log: {self.store.log_path(spec.run_id)})")  # the console's one line; the full one in the log
        if is_main():
            self.store.append_log(spec.run_id, line)
        return Outcome(spec.run_id, spec.role, "trained" if status == "ok" else "failed", record)

    # ------------------------------------------------------------------ data, models, records
    def data(self, spec: RunSpec, recipe: TrainRecipe) -> tuple:
        """(train, test) data of a spec, loaded once per process."""
        key = (spec.dataset, spec.imbalance_factor, spec.data_seed, spec.data_options, recipe.channels_last)
        if key not in self._data:
            kw = dict(root=self.roots.get(spec.dataset), imbalance_factor=spec.imbalance_factor,
                      data_seed=spec.data_seed, device=self.device, channels_last=recipe.channels_last,
                      workers=recipe.workers, options=dict(spec.data_options))
            self._data[key] = (build_data(spec.dataset, "train", **kw), build_data(spec.dataset, "test", **kw))
        return self._data[key]

    def _model(self, arch: str, train_data: Any, weights: Optional[str] = None) -> torch.nn.Module:
        """A fresh network, or (``weights``: ``timm`` or a file) one started from weights through timm's own
        pretrained loader, which re-initialises a classifier of another size and adapts ``in_chans``."""
        kw: Dict[str, Any] = {}
        if weights is not None:
            kw["pretrained"] = True
            if weights != "timm":
                kw["pretrained_cfg_overlay"] = _file_overlay(arch, weights_file(weights).resolve())
        return create_model(arch, num_classes=train_data.num_classes, in_chans=train_data.info.in_chans, **kw)

    def _pair_of_teacher(self, spec: RunSpec) -> Optional[Pair]:
        for pair in self.cfg.pairs:
            if pair.teacher == spec.arch and teacher_init(pair) == spec.init:
                return pair
        return None

    def env(self) -> Dict[str, Any]:
        if self._env is None:
            self._env = environment_info(self.device)
        return self._env

    def _record(self, spec: RunSpec, train_data: Any, result: Optional[TrainResult], status: str,
                reason: Optional[str], kind: Optional[str]) -> RunRecord:
        """The run's record (built once, :meth:`RunRecord.from_run`), with its teacher's recipe for a student."""
        t_rec = self.store.load(spec.teacher_id) if spec.role == "student" and spec.teacher_id else None
        return RunRecord.from_run(spec, result, self._context(), status=status, reason=reason, failure_kind=kind,
                                  data=train_data, init=self._init_block(spec),
                                  teacher_recipe=t_rec.recipe if t_rec is not None else None)

    def _context(self) -> RunContext:
        """What every record of this grid shares: suite, code, machine, config and device."""
        return RunContext(suite=self.cfg.name, code=self._code, env=self.env(), config=self.cfg.to_dict(),
                          device=str(self.device), deterministic=self.cfg.deterministic)

    def _init_block(self, spec: RunSpec) -> Optional[Dict[str, Any]]:
        """Where a teacher started from weights (origin, sha256, fine-tuned or not); None when from scratch."""
        if spec.init is None:
            return None
        pair = self._pair_of_teacher(spec)
        return {"origin": "timm pretrained" if spec.init == "timm" else pair.teacher_weights,
                "sha256": spec.init.split(":", 1)[1] if spec.init.startswith("sha256:") else None,
                "finetuned": dict(spec.recipe)["epochs"] > 0}


def method_context(method_cls: type, train_data: Any, student: torch.nn.Module, teacher: Optional[torch.nn.Module],
                   epochs: int) -> "methods.MethodContext":
    """What a method may know of its run: train counts, feature widths, epochs; training rows and labels (for
    sample-indexed methods); stage map shapes at the training input size (only for methods that use maps)."""
    needs = frozenset(getattr(method_cls, "needs", ()))
    shapes: Dict[str, Any] = {}
    if needs & {"feature_maps", "preact_maps"}:
        size = (train_data.info.in_chans, train_data.info.image_size, train_data.info.image_size)
        shapes = {"student_shapes": map_shapes(student, size),
                  "teacher_shapes": map_shapes(teacher, size) if teacher is not None else None}
    return methods.MethodContext(
        class_counts=train_data.class_counts, student_dim=feature_dim(student),
        teacher_dim=feature_dim(teacher) if teacher is not None else None, epochs=epochs, num_train=len(train_data),
        train_targets=[int(t) for t in train_data.targets.tolist()] if "index" in needs else None, **shapes)


class _CellFailed(RuntimeError):
    """The cell could not start (its teacher failed): every run of it is recorded as failed."""

    def __init__(self, msg: str, kind: str) -> None:
        super().__init__(msg)
        self.kind = kind


def run_specs(cfg: SuiteConfig, specs: Sequence[RunSpec], opts: RunOptions) -> List[Outcome]:
    """The one run loop: train what has no ok record, in cells; every executor calls this."""
    return GridRunner(cfg, opts).run_specs(specs)


def summarize_outcomes(outcomes: Sequence[Outcome]) -> Tuple[str, int]:
    """(``done: R ran, S skipped, F failed`` with teachers counted apart, exit code: 1 if anything failed)."""
    def count(role: str, status: str) -> int:
        return sum(o.role == role and o.status == status for o in outcomes)

    text = (f"done: {count('student', 'trained')} ran, {count('student', 'skipped')} skipped, "
            f"{count('student', 'failed')} failed; teachers: {count('teacher', 'trained')} trained, "
            f"{count('teacher', 'skipped')} reused, {count('teacher', 'failed')} failed")
    return text, int(any(o.status == "failed" for o in outcomes))
