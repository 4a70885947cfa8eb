"""``python -m benchmark check``: run a suite and compare with committed reference accuracies.

The reference is JSON: ``{"tolerance": pts or {metric: pts}, "metrics": [...], "runs": {label: {metric: value}}}``. A label
names a run by what it is (dataset, imbalance, pair, method, seed), not by its hash, so a degraded
recipe is compared with the same row. Exit 1 names every run and metric below reference - tolerance.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .config import CONFIG_DIR, ConfigError, SuiteConfig
from .results import RunStore, atomic_write_text

__all__ = ["run_label", "compare", "run_check"]

DEFAULT_METRICS = ("overall", "tail")


def run_label(rec: Dict[str, Any]) -> str:
    """A stable, readable name of a run: ``fmnist-lt_if100/cifar_cnn_small->cifar_cnn_tiny/kd/s0``."""
    imb = rec.get("imbalance_factor")
    from .results import dataset_label

    ds = dataset_label(rec).replace(" ", "") + (f"_if{imb:g}" if imb is not None else "")
    if rec["role"] == "teacher":
        return f"{ds}/{rec['student_arch']}/teacher/s{rec['seed']}"
    return f"{ds}/{rec['teacher_arch']}->{rec['student_arch']}/{rec['method']}/s{rec['seed']}"


def compare(records: List[Dict[str, Any]], reference: Dict[str, Any],
            tolerance: float | None = None) -> Tuple[List[str], List[str]]:
    """(failures, notes): a failure per metric below ``reference - tolerance``, per missing or failed run."""
    tol_spec = reference.get("tolerance", 2.0) if tolerance is None else tolerance
    metrics = reference.get("metrics", list(DEFAULT_METRICS))
    # one number for every metric, or {metric: points}: tail accuracy over few classes moves more
    tols = {m: float(tol_spec[m] if isinstance(tol_spec, dict) else tol_spec) for m in metrics}
    measured = {run_label(r): r for r in records}
    failures: List[str] = []
    notes: List[str] = []
    for label, ref in reference["runs"].items():
        rec = measured.get(label)
        if rec is None:
            failures.append(f"{label}: no run was measured (reference expects one)")
            continue
        if rec.get("status") != "ok":
            failures.append(f"{label}: run failed ({rec.get('reason')})")
            continue
        for m in metrics:
            if ref.get(m) is None:
                continue
            got, tol = rec["final"].get(m), tols[m]
            if got is None:
                failures.append(f"{label}: {m} was not measured (reference {ref[m]:.2f})")
            elif got < ref[m] - tol:
                failures.append(f"{label}: {m} {got:.2f} < reference {ref[m]:.2f} - {tol:g}")
            else:
                notes.append(f"{label}: {m} {got:.2f} (reference {ref[m]:.2f}, {got - ref[m]:+.2f})")
    for label in sorted(set(measured) - set(reference["runs"])):
        notes.append(f"{label}: not in the reference (not checked)")
    return failures, notes


def _round(value: Any) -> Any:
    return None if value is None else round(value, 3)


def reference_path(cfg: SuiteConfig, explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    if cfg.reference:
        path = Path(cfg.reference)
        return path if path.is_absolute() else CONFIG_DIR / path
    return CONFIG_DIR / f"{cfg.name}_reference.json"


def run_check(args: argparse.Namespace, cfg: SuiteConfig) -> int:
    """Run the suite (fresh folder unless --out), then compare or (--update-reference) write the reference."""
    from .cli import _configure
    from .runner import environment_info, expand_grid, run_suite

    ref_path = reference_path(cfg, args.reference)
    if not args.update_reference and not ref_path.exists():
        raise ConfigError(f"no reference file {ref_path}; create it with "
                          f"`python -m benchmark check --suite {args.suite} --update-reference`")
    from . import distributed as D

    device = D.local_device(cfg.device)
    _configure(cfg, device)
    tmp = None
    out = args.out
    if out is None:
        if D.is_main():
            tmp = tempfile.TemporaryDirectory(prefix="ltkd-check-")
        out = Path(D.broadcast(tmp.name if tmp is not None else None))  # one shared folder for all ranks
    try:
        run_suite(cfg, out, device, progress=not args.no_progress, log=print if D.is_main() else D.rank_log)
        if not D.is_main():
            return 0  # rank 0 compares and reports
        store = RunStore(out)
        wanted = {s.run_id for s in expand_grid(cfg)}
        records = [r for r in store.records() if r["run_id"] in wanted]
        if args.update_reference:
            old = json.loads(ref_path.read_text()) if ref_path.exists() else {}
            ref = {"suite": cfg.name, "tolerance": old.get("tolerance", 2.0),
                   "metrics": old.get("metrics", list(DEFAULT_METRICS)),
                   "measured_on": environment_info(device),
                   "runs": {run_label(r): {m: _round(r["final"].get(m)) for m in
                                           ("overall", "many", "medium", "few", "head", "middle", "tail")}
                            for r in sorted(records, key=run_label) if r.get("status") == "ok"}}
            atomic_write_text(ref_path, json.dumps(ref, indent=1) + "\n")
            print(f"wrote reference {ref_path} ({len(ref['runs'])} runs)")
            return 0
        reference = json.loads(ref_path.read_text())
        failures, notes = compare(records, reference)
        for line in notes:
            print(f"  ok   {line}")
        for line in failures:
            print(f"  FAIL {line}")
        if failures:
            print(f"check FAILED: {len(failures)} regression(s) against {ref_path.name}")
            return 1
        print(f"check passed: {len(reference['runs'])} runs within tolerance of {ref_path.name}")
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()
