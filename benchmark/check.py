"""Reference numbers: the reproduction verdict ``run`` prints, and ``check``, the CI gate built on it.

A reference is JSON committed beside its suite (``configs/<suite>_reference.json``)::

    {"tolerance": pts or {metric: pts}, "metrics": ["overall", "tail"], "runs": {label: {metric: value}}}

A label names a run by what it is (dataset, imbalance, pair, method, seed), not by its hash, so a run
trained with another recipe is compared with the same row. ``run`` ends with one line per run (reproduced,
or off by how much); ``check`` trains the suite into a fresh folder and exits 1 on any run below
``reference - tolerance``. A reference that compares nothing (no runs, an unknown metric, no label in
common with the suite) is refused.
"""
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import distributed as D
from .config import CONFIG_DIR, ConfigError, SuiteConfig
from .errors import did_you_mean
from .evaluate import METRICS
from .fileio import atomic_write_text
from .provenance import environment_info
from .results import dataset_label
from .runner import RunOptions, expand_grid, run_specs, summarize_outcomes

__all__ = ["run_label", "load_reference", "reference_path", "compare", "reproduction_lines", "CheckOptions",
           "run_check", "write_reference"]

DEFAULT_METRICS = ("overall", "tail")
EXACT = 0.005  # references keep 3 decimals: a smaller difference is the same number


def run_label(rec: Dict[str, Any]) -> str:
    """A stable, readable name of a run: ``fmnist-lt_if100/cifar_cnn_small->cifar_cnn_tiny/kd/s0``."""
    imb = rec.get("imbalance_factor")
    ds = dataset_label(rec).replace(" ", "") + (f"_if{imb:g}" if imb is not None else "")
    arch = rec.get("arch") or rec.get("student_arch")
    if rec["role"] == "teacher":
        return f"{ds}/{arch}/teacher/s{rec['seed']}"
    return f"{ds}/{rec['teacher_arch']}->{arch}/{rec['method']}/s{rec['seed']}"


def reference_path(cfg: SuiteConfig, explicit: Optional[Path] = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    if cfg.reference:
        path = Path(cfg.reference)
        return path if path.is_absolute() else CONFIG_DIR / path
    return CONFIG_DIR / f"{cfg.name}_reference.json"


def load_reference(path: Path) -> Dict[str, Any]:
    """Read and validate a reference: it must name runs and only known metrics."""
    try:
        ref = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable reference file ({err})") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("runs"), dict) or not ref["runs"]:
        raise ConfigError(f"{path}: the reference lists no runs; write one with `python -m benchmark check "
                          "--suite <suite> --update-reference`")
    metrics = ref.setdefault("metrics", list(DEFAULT_METRICS))
    tol = ref.setdefault("tolerance", 2.0)
    for m in list(metrics) + (list(tol) if isinstance(tol, dict) else []):
        if m not in METRICS:
            raise ConfigError(f"{path}: unknown metric '{m}'.{did_you_mean(m, METRICS)} Metrics: {', '.join(METRICS)}")
    return ref


def _tolerances(reference: Dict[str, Any]) -> Dict[str, float]:
    tol = reference.get("tolerance", 2.0)
    return {m: float(tol.get(m, 2.0) if isinstance(tol, dict) else tol) for m in reference["metrics"]}


def _matched(records: Sequence[Dict[str, Any]], reference: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    measured = {run_label(r): r for r in records}
    if not set(measured) & set(reference["runs"]):
        raise ConfigError("the reference shares no run with this suite: it compares nothing (labels like "
                          f"{next(iter(reference['runs']))}; measured {next(iter(measured), 'none')})")
    return measured


def compare(records: Sequence[Dict[str, Any]], reference: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """(failures, notes): a failure per metric below ``reference - tolerance``, per missing or failed run."""
    tols = _tolerances(reference)
    measured = _matched(records, reference)
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
        for m, tol in tols.items():
            if ref.get(m) is None:
                continue
            got = rec["final"].get(m)
            if got is None:
                failures.append(f"{label}: {m} was not measured (reference {ref[m]:.2f})")
            elif got < ref[m] - tol:
                failures.append(f"{label}: {m} {got:.2f} < reference {ref[m]:.2f} - {tol:g}")
            else:
                notes.append(f"{label}: {m} {got:.2f} (reference {ref[m]:.2f}, {got - ref[m]:+.2f})")
    for label in sorted(set(measured) - set(reference["runs"])):
        notes.append(f"{label}: not in the reference (not checked)")
    return failures, notes


def reproduction_lines(records: Sequence[Dict[str, Any]], reference: Dict[str, Any]) -> Tuple[List[str], int]:
    """One verdict per measured run (reproduced exactly / within tolerance / off by how much) and how many
    runs are off. Compares every metric the reference holds, both ways (a better number is also off)."""
    tols = _tolerances(reference)
    measured = _matched(records, reference)
    lines, off = [], 0
    for label in sorted(measured):
        rec, ref = measured[label], reference["runs"].get(label)
        if ref is None:
            lines.append(f"  new        {label}: not in the reference")
            continue
        if rec.get("status") != "ok":
            lines.append(f"  FAILED     {label}: {rec.get('reason')}")
            off += 1
            continue
        diffs = {m: rec["final"][m] - v for m, v in ref.items()
                 if v is not None and rec["final"].get(m) is not None}
        worst = max((abs(d) for d in diffs.values()), default=0.0)
        beyond = {m: d for m, d in diffs.items() if abs(d) > tols.get(m, max(tols.values()))}
        text = ", ".join(f"{m} {rec['final'][m]:.2f} ({d:+.2f})" for m, d in diffs.items() if abs(d) >= EXACT)
        if worst < EXACT:
            lines.append(f"  reproduced {label}: exactly")
        elif not beyond:
            lines.append(f"  within     {label}: {text} (tolerance {', '.join(f'{m} {t:g}' for m, t in tols.items())})")
        else:
            off += 1
            lines.append(f"  OFF        {label}: {text}")
    return lines, off


def write_reference(path: Path, records: Sequence[Dict[str, Any]], cfg: SuiteConfig, device: torch.device) -> int:
    """Write the records' final numbers as the suite's reference (keeping its tolerance and metrics)."""
    old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    ref = {"suite": cfg.name, "tolerance": old.get("tolerance", 2.0),
           "metrics": old.get("metrics", list(DEFAULT_METRICS)), "measured_on": environment_info(device),
           "runs": {run_label(r): {m: None if r["final"].get(m) is None else round(r["final"][m], 3)
                                   for m in METRICS}
                    for r in sorted(records, key=run_label) if r.get("status") == "ok"}}
    atomic_write_text(path, json.dumps(ref, indent=1) + "\n")
    return len(ref["runs"])


@dataclass
class CheckOptions:
    """``check``: where to train (a fresh temporary folder by default) and which reference to use."""

    out: Optional[Path] = None
    reference: Optional[Path] = None
    update_reference: bool = False
    progress: bool = True


def run_check(cfg: SuiteConfig, opts: CheckOptions, device: torch.device, log: Callable[[str], None] = print) -> int:
    """Train the suite, then compare with (or, ``update_reference``, write) its reference; 1 on regression."""
    ref_path = reference_path(cfg, opts.reference)
    reference = None if opts.update_reference else load_reference(ref_path)  # refuse a bad one before training
    tmp = None
    out = opts.out
    if out is None:
        if D.is_main():
            tmp = tempfile.TemporaryDirectory(prefix="ltkd-check-")
        out = Path(D.broadcast(tmp.name if tmp is not None else None))  # one shared folder for all ranks
    try:
        specs = expand_grid(cfg, device)
        ro = RunOptions(Path(out), device, progress=opts.progress, log=log)
        with ro.stop.signals():
            outcomes = run_specs(cfg, specs, ro)
        if not D.is_main():
            return 0  # rank 0 compares and reports
        log(summarize_outcomes(outcomes)[0])
        records = [o.record for o in outcomes if o.record is not None]
        if opts.update_reference:
            n = write_reference(ref_path, records, cfg, device)
            log(f"wrote reference {ref_path} ({n} runs)")
            return 0
        failures, notes = compare(records, reference)
        for line in notes:
            log(f"  ok   {line}")
        for line in failures:
            log(f"  FAIL {line}")
        if failures:
            log(f"check FAILED: {len(failures)} regression(s) against {ref_path.name}")
            return 1
        log(f"check passed: {len(reference['runs'])} runs within tolerance of {ref_path.name}")
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()
