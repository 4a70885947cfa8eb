"""Run store and reporting: atomic JSON run records (benchmark.record.RunRecord) -> leaderboard.md / .csv, plots.

Tables and plots are generated only from the records in ``<out>/runs/`` (and the test predictions
beside them): rows are settings-exact (``benchmark.leaderboard``), plots in ``benchmark.plots``. Each
file is written atomically (``benchmark.fileio``: temp file + rename, mode 0644), and regeneration holds
a file lock, so two processes sharing a results folder never corrupt or lose a record or a table.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from . import leaderboard as lb
from .fileio import atomic_write_text
from .record import RecordError, RunRecord, as_record
from .plots import write_plots as _plots
from .settings import dataset_label, record_path

__all__ = ["RunStore", "RunRecord", "atomic_write_text", "dataset_label", "leaderboard_frame", "write_leaderboard",
           "write_plots", "regenerate"]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) held for the block; a no-op where fcntl is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class RunStore:
    """``<out>/runs/<run_id>.json`` records and ``<out>/checkpoints/`` of one results folder."""

    def __init__(self, out: os.PathLike | str) -> None:
        self.out = Path(out)
        self.runs = self.out / "runs"
        self.checkpoints = self.out / "checkpoints"

    def record_path(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def checkpoint_path(self, run_id: str) -> Path:
        return self.checkpoints / f"{run_id}.pt"

    def lock_path(self, run_id: str) -> Path:
        return self.checkpoints / "locks" / f"{run_id}.lock"

    def teacher_weights(self, run_id: str) -> Path:
        return self.checkpoints / "teachers" / f"{run_id}.pt"

    def student_weights(self, run_id: str) -> Path:
        """A student's final state dict (``python -m benchmark eval`` reads it)."""
        return self.checkpoints / "students" / f"{run_id}.pt"

    def predictions_path(self, run_id: str) -> Path:
        """The final epoch's argmax per test image (``pred``, test-set order), for paired comparisons."""
        return self.runs / f"{run_id}.predictions.npz"

    def log_path(self, run_id: str) -> Path:
        return self.out / "logs" / f"{run_id}.log"

    def metrics_path(self, run_id: str) -> Path:
        """Per-epoch metrics, one CSV row per epoch (like timm's summary.csv)."""
        return self.out / "logs" / f"{run_id}.csv"

    def append_log(self, run_id: str, line: str) -> None:
        path = self.log_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")

    def epoch_logger(self, run_id: str) -> Callable[[Dict[str, Any]], None]:
        """A callback writing each epoch's row to the run's log file, metrics CSV and (if installed) TensorBoard."""
        writer = _tensorboard_writer(self.out / "tensorboard" / run_id)

        def on_epoch(row: Dict[str, Any]) -> None:
            self.append_log(run_id, "epoch " + " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                                        for k, v in row.items()))
            path = self.metrics_path(run_id)
            new = not path.exists()
            with open(path, "a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(row), extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, (int, float)):
                        writer.add_scalar(k, v, row["epoch"])
                writer.flush()

        return on_epoch

    def exists(self, run_id: str) -> bool:
        """A finished run (its record exists and says ok)."""
        rec = self.load(run_id)
        return rec is not None and rec.ok

    @staticmethod
    def record_problem(rec: Any, path: Path) -> Optional[str]:
        """Why ``rec`` (parsed from ``path``) is not a usable run record, or None when it is one."""
        return _checked(rec, path)[1]

    def _read(self, path: Path) -> Optional[RunRecord]:
        """The record in ``path``, or None with ONE warning naming the file and why (never an exception)."""
        try:
            rec = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:  # unreadable, binary, truncated or not JSON
            why = f"not valid JSON ({type(err).__name__}: {' '.join(str(err).split())})"
        else:
            typed, why = _checked(rec, path)
            if typed is not None:
                return typed
        warnings.warn(f"{path}: skipped, {why}; the run is redone if a suite needs it (delete or move the file "
                      f"to silence this)", RuntimeWarning)  # one place: shown once per file
        return None

    def load(self, run_id: str) -> Optional[RunRecord]:
        """The record of ``run_id``; None when absent or unusable (then the run is redone and the file replaced)."""
        path = self.record_path(run_id)
        if not path.exists():
            return None
        return self._read(path)

    def write(self, record: RunRecord | Mapping[str, Any]) -> Path:
        """Write ``record`` (a plain dict is read as a RunRecord first) to ``runs/<run_id>.json`` atomically."""
        record = as_record(record)
        return record.save(self.record_path(record.run_id))

    def records(self) -> List[RunRecord]:
        """Every valid record in ``runs/``; a truncated, binary or foreign file is skipped with one warning."""
        out = []
        for path in sorted(self.runs.glob("*.json")):
            rec = self._read(path)
            if rec is not None:
                out.append(rec)
        return out


def _checked(raw: Any, path: Path) -> Tuple[Optional[RunRecord], Optional[str]]:
    """(``raw`` as a record, None), or (None, why it is not a usable one): not a record of any schema, a field of
    the wrong type, a file not named after its run id, an ok record without its results."""
    try:
        rec = RunRecord.from_json(raw)
    except RecordError as err:
        return None, str(err)
    why = _run_id_mismatch(rec, path) or rec.result_problem()
    return (None, why) if why else (rec, None)


def _run_id_mismatch(rec: RunRecord, path: Path) -> Optional[str]:
    """A record must live in ``<run_id>.json``: a copied or renamed file would shadow another run."""
    return f"its run_id '{rec.run_id}' does not match the file name" if rec.run_id != path.stem else None


def _tensorboard_writer(folder: Path):
    """A TensorBoard ``SummaryWriter`` when the optional ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


# ----------------------------------------------------------------------------- tables and plots
# Settings-exact rows and the paired "Δ vs kd" columns: benchmark/leaderboard.py; plots: benchmark/plots.py.
# ``dataset_label`` is re-exported (check.run_label names runs with it).


def _record_path(out: Path) -> Callable[[RunRecord], str]:
    """A function naming a record's file under ``out``, for errors (duplicate seed of one setting)."""
    return functools.partial(record_path, Path(out))


def leaderboard_frame(records: List[RunRecord], out: Optional[os.PathLike | str] = None):
    """One line per exact setting (all its seeds): mean/std of every metric, label, run ids, Δ vs kd.

    ``out`` is the results folder holding the predictions; without it the Δ columns stay empty.
    """
    rows = lb.build_rows(records, _record_path(Path(out or ".")))
    deltas = lb.compute_deltas(rows, Path(out)) if out is not None else {}
    return lb.frame(rows, deltas)


def _write_tables(rows: list, records: List[RunRecord], out: Path) -> str:
    """Write ``leaderboard.csv`` and ``leaderboard.md`` of ``rows`` into ``out``; returns the Markdown."""
    deltas = lb.compute_deltas(rows, out)
    text = lb.markdown(rows, deltas, records)
    atomic_write_text(out / "leaderboard.csv", lb.csv_text(lb.frame(rows, deltas)))
    atomic_write_text(out / "leaderboard.md", text)
    return text


def write_leaderboard(records: List[RunRecord], out: Path) -> Optional[str]:
    """``leaderboard.md`` and ``leaderboard.csv`` (2 decimals, run ids, settings labels) from records.

    Returns the Markdown, or None when no run finished ok. Two records of one seed and one setting
    raise ValueError naming both files.
    """
    out = Path(out)
    rows = lb.build_rows(records, _record_path(out))
    return _write_tables(rows, records, out) if rows else None


def write_plots(records: List[RunRecord], out: Path,
                per_class_methods: Optional[List[str]] = None) -> List[Path]:
    """Per table: tail-vs-overall, group bars and per-class plots (PNG + SVG) in ``out/plots``."""
    out = Path(out)
    rows = lb.build_rows(records, _record_path(out))
    return _plots(list(lb.sections(rows).values()), out, per_class_methods)


def regenerate(out: os.PathLike | str, reference: bool = False,
               log: Optional[Callable[[str], None]] = None) -> Optional[str]:
    """Rebuild tables, plots and ``leaderboard.html`` from every record in ``out`` (under a lock: concurrent runs
    are safe); ``reference``: also rank the committed reference rows of the same settings (benchmark.reference)."""
    from .html_report import write_html
    from .reference import merge_records

    out = Path(out)
    store = RunStore(out)
    with file_lock(out / ".lock"):
        records = store.records()
        if reference:
            records, notes = merge_records(records, out)
            for note in notes if log is not None else ():
                log(f"note: {note}")
        records = _verified(records, out, log)
        rows = lb.build_rows(records, _record_path(out))
        if not rows:
            return None
        text = _write_tables(rows, records, out)
        _plots(list(lb.sections(rows).values()), out)
        write_html(rows, lb.compute_deltas(rows, out), records, out)
    return text


def _verified(records: List[RunRecord], out: Path, log: Optional[Callable[[str], None]]) -> List[RunRecord]:
    """``records`` checked against their stored predictions (benchmark.integrity): a record whose numbers or
    checksum disagree is left out with one warning naming its file; one without predictions is marked unverified."""
    from .integrity import verify_records

    kept, refused, unverified = verify_records(records, out)
    for line in refused:
        if log is not None:
            log(f"warning: {line}")
        else:
            warnings.warn(line, RuntimeWarning)
    for line in unverified if log is not None else ():
        log(f"note: {line}")
    return kept
