"""Settings-exact grouping of run records: what a run was, minus its seed, and a short label for it.

A leaderboard row (and a point in a plot) aggregates only records whose ``settings_of`` are identical, so
a 1-epoch and a 6-epoch run, or two temperatures of one method, never average into one "mean over seeds".
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .record import RunRecord, as_record

__all__ = ["settings_of", "settings_label", "settings_key", "flatten", "group_by_settings", "differing_keys",
           "describe", "code_family", "arch_of", "teacher_of", "dataset_label", "format_value", "record_path",
           "SETTINGS_KEYS"]

# Keys of ``settings_of``, in the order a reader scans them (data, pair, method, recipes, code).
SETTINGS_KEYS = ("dataset", "data_options", "imbalance_factor", "data_seed", "role", "teacher", "student",
                 "method", "method_params", "recipe", "teacher_recipe", "base_lr", "effective", "code_family")


def code_family(rec: RunRecord) -> Optional[str]:
    """The record's code family (``code.family``); ``None`` for records written before it existed."""
    return rec.code_family


def arch_of(rec: RunRecord) -> Optional[str]:
    """The architecture the run trained (``arch``; ``student_arch`` in schema-1 files)."""
    return rec.arch


def teacher_of(rec: RunRecord) -> Optional[str]:
    """The teacher of a student run; for a teacher run, its own architecture (its table's teacher)."""
    return rec.teacher


def dataset_label(rec: Union[RunRecord, Mapping[str, Any]]) -> str:
    """The dataset's name plus any non-default build options (``fmnist-lt (n_max=600)``)."""
    rec = as_record(rec)
    opts = rec.data_options or {}
    return rec.dataset + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) + ")" if opts else "")


def _effective(rec: RunRecord) -> Optional[Dict[str, Any]]:
    """What the device actually used (precision, layout, ...), minus how runs were batched together."""
    eff = rec.effective
    if not isinstance(eff, Mapping):
        return None
    out = {k: v for k, v in eff.items() if k != "cell_size"}
    if isinstance(out.get("device"), str):
        out["device"] = out["device"].split(":")[0]  # cuda:0 and cuda:1 are one setting
    return out


def settings_of(rec: Union[RunRecord, Mapping[str, Any]]) -> Dict[str, Any]:
    """The effective settings of a run minus its seed: the key that decides which records share a row.

    Missing fields of older records become ``None`` (they group with each other, never with newer ones
    that carry the field); a plain dict is read as a :class:`~benchmark.record.RunRecord` first.
    """
    rec = as_record(rec)
    student = rec.is_student
    return {
        "dataset": rec.dataset,
        "data_options": dict(rec.data_options or {}),
        "imbalance_factor": rec.imbalance_factor,
        "data_seed": rec.data_seed,
        "role": rec.role,
        "teacher": rec.teacher_arch if student else None,
        "student": rec.arch,
        "method": rec.method,
        "method_params": dict(rec.method_params or {}),
        "recipe": dict(rec.recipe or {}),
        "teacher_recipe": dict(rec.teacher_recipe) if student and rec.teacher_recipe else None,
        "base_lr": rec.student_lr,  # the settings key keeps its first name (schema 1's base_lr)
        "effective": _effective(rec),
        "code_family": rec.code_family,
    }


def _canonical(value: Any) -> Any:
    """JSON-ready form in which 100 and 100.0, or a tuple and a list, compare (and hash) equal."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        return repr(f) if math.isfinite(f) else str(f)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if hasattr(value, "tolist"):
        return _canonical(value.tolist())
    return str(value)


def settings_key(settings: Mapping[str, Any]) -> str:
    """A canonical JSON string of ``settings`` (equal settings give equal strings)."""
    return json.dumps(_canonical(settings), sort_keys=True, separators=(",", ":"))


def settings_label(settings_or_record: Union[RunRecord, Mapping[str, Any]], length: int = 6) -> str:
    """A short hex hash of the settings (or of a record's ``settings_of``), e.g. ``3fa2c1``."""
    settings = settings_of(settings_or_record) if _is_record(settings_or_record) else settings_or_record
    return hashlib.sha256(settings_key(settings).encode()).hexdigest()[:length]


def flatten(settings: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested dicts as dotted keys: ``{"recipe": {"lr": 0.1}}`` -> ``{"recipe.lr": 0.1}``."""
    out: Dict[str, Any] = {}
    for k, v in settings.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _is_record(obj: Any) -> bool:
    """A run record (typed, or a plain dict with a ``run_id``) rather than a settings dict."""
    return isinstance(obj, RunRecord) or (isinstance(obj, Mapping) and "run_id" in obj)


def group_by_settings(records: Iterable[RunRecord], path_of: Callable[[RunRecord], str] = lambda r: r.run_id
                      ) -> Dict[str, List[RunRecord]]:
    """Records grouped by settings label (insertion order); two records of one seed and setting raise.

    ``path_of`` names a record in the error (its file), so the reader knows which one to delete.
    """
    groups: Dict[str, List[RunRecord]] = {}
    keys: Dict[str, str] = {}
    seen: Dict[tuple, RunRecord] = {}
    for rec in records:
        settings = settings_of(rec)
        key = settings_key(settings)
        label = settings_label(settings)
        if keys.setdefault(label, key) != key:  # pragma: no cover - a 24-bit collision: widen the label
            label = settings_label(settings, length=12)
        dup = seen.get((key, rec.seed))
        if dup is not None:
            raise ValueError(
                f"two records of seed {rec.seed} with identical settings ({label}): {path_of(dup)} and "
                f"{path_of(rec)}; delete the one you do not want and rerun `report`")
        seen[(key, rec.seed)] = rec
        groups.setdefault(label, []).append(rec)
    return groups


def format_value(value: Any) -> str:
    """A compact printable value for legends (``0.1``, ``100``, ``[150, 180]``, ``-``)."""
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) + "}" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def differing_keys(rows: Sequence[Union[RunRecord, Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """Per row of one table, the flattened settings whose values are not shared by every comparable row.

    Rows are compared within their role (a teacher's recipe is not a student's), and ``method_params.*``
    only among rows of the same method (each method has its own hyper-parameters); ``method`` and
    ``role`` themselves are columns of the table, so they are never listed.
    """
    flat = [flatten(settings_of(r) if _is_record(r) else r) for r in rows]
    canon = [{k: settings_key({"v": v}) for k, v in f.items()} for f in flat]
    return [_row_diff(i, flat, canon) for i in range(len(flat))]


def _row_diff(i: int, flat: Sequence[Mapping[str, Any]], canon: Sequence[Mapping[str, str]]) -> Dict[str, Any]:
    """The flattened settings of row ``i`` whose canonical values (``canon``) differ among its peers."""
    f = flat[i]
    peers = [j for j in range(len(flat)) if flat[j].get("role") == f.get("role")]
    same_method = [j for j in peers if flat[j].get("method") == f.get("method")]
    diff: Dict[str, Any] = {}
    for key in sorted(set().union(*(flat[j].keys() for j in peers))):
        if key in ("method", "role"):  # columns of the table
            continue
        group = same_method if key == "method_params" or key.startswith("method_params.") else peers
        if len({canon[j].get(key, "<absent>") for j in group}) > 1:
            diff[key] = f.get(key)
    return diff


def describe(diff: Mapping[str, Any]) -> str:
    """``key=value`` pairs of a ``differing_keys`` entry, comma-separated (empty string if none)."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in diff.items())


def record_path(out: Path, rec: RunRecord) -> str:
    """The file a record lives in under ``out`` (``runs/<run_id>.json``), for error messages."""
    return str(Path(out) / "runs" / f"{rec.run_id}.json")
