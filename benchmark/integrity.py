"""Records that cannot lie: recompute a record's final numbers from its stored test predictions.

Every ``ok`` record names the SHA-256 of its predictions file (``predictions_sha256``, written by the runner).
Where records are read for reporting or checking (``results.regenerate``, ``check``, the reproduction verdict
of ``run``), :func:`verify_records` recomputes per-class accuracy, overall and the group metrics from the
predictions and the record's class counts (``benchmark.evaluate.summarize``) and

- keeps it, marked verified, when they agree (a record without a checksum, like the committed references made
  before checksums existed, is verified by recomputation only);
- keeps it, marked unverified (the leaderboard says so), when it has no predictions file to recompute from;
- refuses it, with one line naming the file, when a number or the checksum disagrees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from datasets.longtail import frequency_rank

from .evaluate import METRICS, THIRDS, summarize
from .fileio import sha256_file
from .record import RunRecord, as_record

__all__ = ["CHECKSUM_KEY", "Verification", "recompute", "verify_record",
           "verify_records", "gate_records", "is_verified"]

CHECKSUM_KEY = "predictions_sha256"  # the record's key (RunRecord.predictions_sha256): SHA-256 of its predictions
TOLERANCE = 1e-6  # points: recomputation uses the trainer's own arithmetic, so only float noise may differ


@dataclass
class Verification:
    """The outcome for one record: ``verified``, ``unverified`` (no predictions), ``refused`` or ``not_ok``."""

    status: str
    message: str = ""


def _thirds_by_sizes(per_class: Sequence[float], counts: Sequence[int], sizes: Mapping[str, int]) -> Dict[str, float]:
    """Head / middle / tail accuracy cut from the frequency rank by a record's own group sizes (records made
    under an earlier size rule, e.g. 4/3/3 instead of 3/4/3 classes, are checked against the rule they used)."""
    order, out, start = frequency_rank(counts), {}, 0
    for g in THIRDS:
        members = order[start:start + int(sizes.get(g, 0))]
        start += len(members)
        out[g] = sum(per_class[c] for c in members) / len(members) if members else None
    return out


def recompute(rec: RunRecord | Mapping[str, Any], pred: np.ndarray, target: np.ndarray) -> Dict[str, Any]:
    """Per-class accuracy, its test counts and every metric of ``rec.final``, from predictions alone."""
    rec = as_record(rec)
    c = len(rec.class_counts)
    if pred.shape != target.shape or (target.size and (target.min() < 0 or target.max() >= c)):
        raise ValueError(f"predictions and labels do not fit {c} classes (shapes {pred.shape} / {target.shape})")
    total = np.bincount(target, minlength=c)
    correct = np.bincount(target[pred == target], minlength=c)
    per_class = [100.0 * float(a) / float(t) if t else 0.0 for a, t in zip(correct.tolist(), total.tolist())]
    out = summarize(per_class, rec.class_counts, per_class_total=total.tolist())
    sizes = rec.result("final").get("group_sizes") or {}
    if any(int(sizes.get(g, -1)) != out["group_sizes"][g] for g in THIRDS if g in sizes):
        out.update(_thirds_by_sizes(per_class, rec.class_counts, sizes))
    return {**out, "per_class_acc": per_class, "per_class_test_count": total.tolist()}


def _disagreement(final: Mapping[str, Any], redo: Mapping[str, Any]) -> Optional[str]:
    """The first number of ``final`` that its recomputation ``redo`` contradicts, as text, or None."""
    for m in METRICS:
        a, b = final.get(m), redo.get(m)
        if a is None and b is None:
            continue
        if a is None or b is None or not math.isclose(float(a), float(b), rel_tol=0, abs_tol=TOLERANCE):
            shown = "none" if a is None else f"{float(a):.2f}"
            return f"final.{m} says {shown} but its predictions give " + ("none" if b is None else f"{b:.2f}")
    for key in ("per_class_acc", "per_class_test_count"):
        if key in final and (len(final[key]) != len(redo[key]) or any(
                not math.isclose(float(x), float(y), abs_tol=TOLERANCE) for x, y in zip(final[key], redo[key]))):
            return f"final.{key} disagrees with its predictions"
    return None


def verify_record(rec: RunRecord | Mapping[str, Any], folder: Path) -> Verification:
    """Check one record against ``folder/runs/<run_id>.predictions.npz`` (``folder``: its results folder)."""
    rec = as_record(rec)
    if not rec.ok:
        return Verification("not_ok")
    preds = Path(folder) / "runs" / f"{rec.run_id}.predictions.npz"
    if not preds.is_file():
        said = " (the record names a checksum: the file was removed)" if rec.predictions_sha256 else ""
        return Verification("unverified", f"no predictions file {preds.name}{said}; its numbers cannot be "
                                          "recomputed and are marked unverified")
    expected = rec.predictions_sha256
    if expected is not None and sha256_file(preds) != expected:
        return Verification("refused", f"the checksum of {preds.name} is not the one the record names (the "
                                       "predictions file was replaced or edited)")
    try:
        with np.load(preds, allow_pickle=False) as z:
            pred, target = np.asarray(z["pred"]).astype(np.int64), np.asarray(z["target"]).astype(np.int64)
        why = _disagreement(rec.result("final"), recompute(rec, pred, target))
    except Exception as err:  # unreadable, truncated, foreign keys: nothing in it can be trusted
        why = f"{preds.name} is unreadable ({type(err).__name__}: {' '.join(str(err).split())[:120]})"
    if why is not None:
        return Verification("refused", why)
    return Verification("verified", "" if expected else "no checksum in the record: verified by recomputation only")


def verify_records(records: Sequence[RunRecord | Mapping[str, Any]], out: Path
                   ) -> Tuple[List[RunRecord], List[str], List[str]]:
    """(records kept, each marked in ``verified``; refusal lines; unverified lines), every line naming the record's
    file. A record read from a reference folder is checked against that folder's predictions."""
    from .reference import results_dir_of

    kept: List[RunRecord] = []
    refused: List[str] = []
    unverified: List[str] = []
    for rec in map(as_record, records):
        folder = results_dir_of(rec, Path(out))
        v = verify_record(rec, folder)
        where = Path(folder) / "runs" / f"{rec.run_id}.json"
        if v.status == "refused":
            refused.append(f"{where}: refused, {v.message}; rerun the run (delete the record) or restore its files")
            continue
        if v.status != "not_ok":
            rec.verified = v.status == "verified"
        if v.status == "unverified":
            unverified.append(f"{where}: {v.message}")
        kept.append(rec)
    return kept, refused, unverified


def is_verified(rec: RunRecord) -> bool:
    """False only for a record verification marked as having no predictions (unchecked records count as is)."""
    return rec.verified is not False


def gate_records(records: Sequence[RunRecord | Mapping[str, Any]], out: Path) -> Tuple[List[RunRecord], List[str]]:
    """``check``'s view: (verified records, one line per record refused or without predictions to check). A
    gate judges only numbers it recomputed, so an unverified record is refused here too."""
    kept, refused, unverified = verify_records(records, out)
    return [r for r in kept if is_verified(r)], refused + [f"{line} (check refuses it)" for line in unverified]
