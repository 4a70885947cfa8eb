"""The committed reference run of a suite, reused: its teacher weights and its leaderboard rows.

A suite with a committed reference (``results/reference/<suite>/``: ``runs/`` records and predictions, and
``teachers/<run_id>.pt`` pinned in ``teachers/SHA256SUMS``) lets a method developer train only the new method:

* :func:`adopt_teacher` copies the reference teacher (weights, record, predictions) into this checkout's
  results folder when the run ids match and the weights pass their sha256 check, so the new students learn
  from the bit-identical teacher the reference students had (same teacher run id, same student run ids);
  a missing file or a checksum mismatch falls back to training the teacher, and says so in one line.
* :func:`merge_records` adds the reference records of the exact settings of this folder's runs to the
  records a report ranks (never those of another recipe or code family), marked as reference rows; a
  method this folder ran itself shows its own row.

``LTKD_REFERENCE_ROOT`` points at another folder of ``<suite>/`` references (tests; a fork's own).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from .fileio import atomic_write, atomic_write_text, sha256_file
from .record import RunRecord
from .settings import arch_of, dataset_label, differing_keys, describe, settings_key, settings_of, teacher_of

__all__ = ["REFERENCE_ENV", "COPIED_KEY", "MAX_TEACHER_BYTES", "reference_root", "reference_dir",
           "read_sums", "save_teachers", "adopt_teacher", "merge_records", "provenance",
           "is_reference", "reference_lines", "results_dir_of"]

REFERENCE_ENV = "LTKD_REFERENCE_ROOT"
COPIED_KEY = "copied_from"  # the record key (RunRecord.copied_from) of a teacher copied from the reference
TEACHERS = "teachers"
SUMS = "SHA256SUMS"
MAX_TEACHER_BYTES = 16 << 20  # committed only when small (the quick teacher is ~1 MB)


def reference_root() -> Path:
    """The folder of committed references: ``$LTKD_REFERENCE_ROOT``, else ``results/reference/`` of this checkout."""
    env = os.environ.get(REFERENCE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "results" / "reference"


def reference_dir(suite: Optional[str]) -> Optional[Path]:
    """``<root>/<suite>/`` when it holds a reference run (a ``runs/`` folder), else None."""
    if not suite:
        return None
    path = reference_root() / str(suite)
    return path if (path / "runs").is_dir() else None


def read_sums(ref: Path) -> Dict[str, str]:
    """``teachers/SHA256SUMS`` (``sha256sum`` format: ``<hex>  <file>``) as {file name: hex}."""
    path = Path(ref) / TEACHERS / SUMS
    if not path.is_file():
        return {}
    sums = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def save_teachers(out: Path, log: Callable[[str], None] = print) -> List[Path]:
    """Copy the ok teachers' weights of a reference run into ``<out>/teachers/`` and pin each by sha256 in
    ``teachers/SHA256SUMS`` (what :func:`adopt_teacher` checks); teachers above 16 MiB are not committed."""
    from .results import RunStore

    store, folder = RunStore(out), Path(out) / TEACHERS
    saved, lines = [], []
    for rec in store.records():
        src = store.teacher_weights(rec.run_id)
        if not rec.is_teacher or not rec.ok or not src.is_file():
            continue
        if src.stat().st_size > MAX_TEACHER_BYTES:
            log(f"teacher {rec.run_id}: {src.stat().st_size >> 20} MiB, above the 16 MiB kept in the reference")
            continue
        dst = folder / f"{rec.run_id}.pt"
        atomic_write(dst, lambda fh, s=src: fh.write(s.read_bytes()))
        lines.append(f"{sha256_file(dst)}  {dst.name}")
        saved.append(dst)
    if lines:
        atomic_write_text(folder / SUMS, "\n".join(sorted(lines, key=lambda x: x.split()[1])) + "\n")
        log(f"saved {len(saved)} teacher weight file(s) with their sha256 in {folder}/")
    return saved


def adopt_teacher(store: Any, run_id: str, suite: Optional[str], log: Callable[[str], None] = print) -> bool:
    """Copy the reference teacher ``run_id`` into ``store`` (a RunStore) when its committed weights pass their
    sha256 check; True when copied. Nothing to do (False, silent) when ``store`` has it or no reference run
    has this id; a missing or altered weights file is one line, and the teacher is then trained here."""
    ref = reference_dir(suite)
    if ref is None or Path(ref).resolve() == Path(store.out).resolve():
        return False
    rec_path = ref / "runs" / f"{run_id}.json"
    have = store.load(run_id) if store.record_path(run_id).exists() else None
    if not rec_path.is_file() or (have is not None and have.ok
                                  and store.teacher_weights(run_id).exists()):
        return False
    weights, expected = ref / TEACHERS / f"{run_id}.pt", read_sums(ref).get(f"{run_id}.pt")
    why = _weights_problem(weights, expected)
    if why is not None:
        log(f"teacher {run_id}: the committed reference weights {why}; training the teacher here instead")
        return False
    _copy_teacher(store, ref, run_id, expected)
    log(f"teacher {run_id}: loaded from the committed reference {weights} (sha256 {expected[:12]} checked), "
        "not trained")
    return True


def _weights_problem(weights: Path, expected: Optional[str]) -> Optional[str]:
    """Why committed teacher weights cannot be used (missing file, no pinned sha256, mismatch), or None."""
    if not weights.is_file():
        return f"{weights} are missing"
    if expected is None:
        return f"{weights} have no sha256 in {weights.parent / SUMS}"
    actual = sha256_file(weights)
    if actual != expected:
        return f"{weights} fail their sha256 check (pinned {expected[:12]}, file {actual[:12]})"
    return None


def _copy_teacher(store: Any, ref: Path, run_id: str, sha: str) -> None:
    """Weights, predictions, then the record (last: a record means the teacher is there), marked as copied."""
    weights = (ref / TEACHERS / f"{run_id}.pt").read_bytes()
    atomic_write(store.teacher_weights(run_id), lambda fh: fh.write(weights))
    preds = ref / "runs" / f"{run_id}.predictions.npz"
    if preds.is_file():
        data = preds.read_bytes()
        atomic_write(store.predictions_path(run_id), lambda fh: fh.write(data))
    rec = RunRecord.load(ref / "runs" / f"{run_id}.json")
    rec.copied_from = {"reference": str(ref), "weights_sha256": sha}
    rec.save(store.record_path(run_id))


# ----------------------------------------------------------------------------- leaderboard rows


def is_reference(rec: RunRecord) -> bool:
    """A record made by the committed reference run (read from it, or a teacher copied from it)."""
    return rec.reference_dir is not None or rec.copied_from is not None


def results_dir_of(rec: RunRecord, out: Path) -> Path:
    """The results folder holding a record's predictions: its reference folder, else ``out``."""
    return Path(rec.reference_dir) if rec.reference_dir is not None else Path(out)


def provenance(rec: RunRecord) -> str:
    """Which code and machine made a record: ``commit 57ba431aad (clean tree) on cpu: x86_64 (2 threads), host vm``."""
    code = rec.code if isinstance(rec.code, Mapping) else {}
    env = rec.env if isinstance(rec.env, Mapping) else {}
    commit = code.get("git_commit")
    tree = {True: "dirty tree", False: "clean tree"}.get(code.get("git_dirty"), "tree state unknown")
    where = env.get("device") or "unknown device"
    host = f", host {env['hostname']}" if env.get("hostname") else ""
    return f"commit {commit[:10] if commit else 'unknown'} ({tree}) on {where}{host}"


def _context(rec: RunRecord) -> str:
    """A student's settings minus its method: what a reference row must share with this folder's rows."""
    return settings_key({k: v for k, v in settings_of(rec).items() if k not in ("method", "method_params")})


def _row_key(rec: RunRecord) -> Tuple[Any, ...]:
    """The leaderboard place of a record: table, role, student and method (a local row replaces a reference one)."""
    return dataset_label(rec), rec.imbalance_factor, teacher_of(rec), arch_of(rec), rec.role, rec.method


def _load(ref: Path) -> List[RunRecord]:
    """The ok records of a reference folder, each marked with the folder it was read from."""
    from .results import RunStore

    recs = [r for r in RunStore(ref).records() if r.ok]
    for r in recs:
        r.reference_dir = str(ref)
    return recs


def merge_records(records: Sequence[RunRecord], out: Path) -> Tuple[List[RunRecord], List[str]]:
    """``records`` plus the reference records of the same exact settings, and one note per reference left out.

    Per suite among the ok student records: reference students whose settings equal those of a local student
    but for the method, and their teachers; a method (or teacher) trained locally keeps only its local row (a
    teacher copied from the reference is the reference's row, with all its seeds).
    """
    ok = [r for r in records if r.ok]
    merged, notes = list(records), []
    for suite in sorted({str(r.suite) for r in ok if r.is_student}):
        ref = reference_dir(suite)
        if ref is not None and ref.resolve() != Path(out).resolve():
            merged, note = _merge_suite(merged, ok, suite, ref)
            notes += [note] if note else []
    return merged, notes


def _merge_suite(merged: List[RunRecord], ok: Sequence[RunRecord], suite: str, ref: Path
                 ) -> Tuple[List[RunRecord], Optional[str]]:
    """``merged`` plus the rows of reference ``ref`` that ``suite``'s local records rank beside, and any note."""
    local = [r for r in ok if str(r.suite) == suite]
    added, note = _select(local, _load(ref), [r for r in ok if r.copied_from is None], ref)
    ids = {r.run_id for r in added}  # a copied teacher gives way to the reference's row (all its seeds)
    return [r for r in merged if not (r.copied_from is not None and r.run_id in ids)] + added, note


def _select(local: Sequence[RunRecord], ref_recs: Sequence[RunRecord], all_local: Sequence[RunRecord],
            ref: Path) -> Tuple[List[RunRecord], Optional[str]]:
    """The reference records to rank beside ``local`` (same settings, not already a local row), or a note."""
    contexts = {_context(r) for r in local if r.is_student}
    taken: Set[Tuple[Any, ...]] = {_row_key(r) for r in all_local}
    students = [r for r in ref_recs if r.is_student and _context(r) in contexts]
    if not students:
        return [], _mismatch_note(local, ref_recs, ref)
    teacher_ids = {r.teacher_run_id for r in students}
    teachers = [r for r in ref_recs if r.is_teacher and r.run_id in teacher_ids]
    return [r for r in teachers + students if _row_key(r) not in taken], None


def _mismatch_note(local: Sequence[RunRecord], ref_recs: Sequence[RunRecord], ref: Path) -> Optional[str]:
    """Why no reference row is shown: the first local student's settings that differ from the reference's."""
    mine = next((r for r in local if r.is_student), None)
    theirs = next((r for r in ref_recs if r.is_student), None)
    if mine is None or theirs is None:
        return None
    strip = lambda r: {k: v for k, v in settings_of(r).items() if k not in ("method", "method_params")}  # noqa: E731
    diff = differing_keys([strip(mine), strip(theirs)])[0]
    return (f"reference rows of {ref} not shown: this folder's runs have other settings ({describe(diff)}); "
            "rows of different settings are never mixed")


def reference_lines(records: Sequence[RunRecord]) -> List[str]:
    """The leaderboard's note on its reference rows: where they come from, the code and machine that made them."""
    refs = [r for r in records if r.ok and is_reference(r)]
    if not refs:
        return []
    by_source: Dict[Tuple[str, str], int] = {}
    for r in refs:
        where = str(r.reference_dir or (r.copied_from or {}).get("reference"))
        key = (where, provenance(r))
        by_source[key] = by_source.get(key, 0) + 1
    lines = ["Reference rows (marked `(ref)`) come from the committed reference run, not retrained here "
             "(`--no-reference` leaves them out); a method this folder trained itself shows its own row:", ""]
    lines += [f"- {n} run{'s' if n != 1 else ''} from `{where}`: {prov}" for (where, prov), n in by_source.items()]
    return lines + [""]
