"""Reference numbers: the reproduction verdict ``run`` prints, and ``check``, the CI gate built on it.

A reference is JSON committed beside its suite (``configs/<suite>_reference.json``)::

    {"metrics": ["overall", "tail"], "k": {metric: k}, "floor": {metric: pts}, "derivation": "how k, floor were
     measured", "runs": {label/s<seed>: {metric: value}}, "seed_stats": {label: {metric: {mean, sd, n}}}}

A label names a run by what it is (dataset, imbalance, pair, method, seed), not by its hash, so a run
trained with another recipe is compared with the same row. Each run is judged against the reference's seed
distribution (benchmark.verdict: exact / within ``k * sd + floor`` / OFF by so many sd, both ways); ``run``
prints one line per run, ``check`` trains the suite into a fresh folder and exits 1 on any run (or any
setting's mean over seeds) off the spread. Old references (one seed, a hand-set ``tolerance``) still load,
judged by that tolerance and labelled hand-set. A reference that compares nothing (no runs, an unknown
metric, no setting in common with the suite) is refused.
"""
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from . import distributed as D
from .config import CONFIG_DIR, ConfigError, SuiteConfig
from .errors import did_you_mean
from .evaluate import METRICS
from .fileio import atomic_write_text
from .integrity import gate_records
from .provenance import environment_info
from .record import RunRecord, as_record, as_records
from .results import dataset_label
from .reference import save_teachers
from .runner import RunOptions, expand_grid, run_specs, summarize_outcomes
from .verdict import EXACT, LOSSES, Verdict, gate_values, judge_mean, judge_run, seed_stats, split_label

__all__ = ["run_label", "load_reference", "reference_path", "compare", "reproduction_lines", "CheckOptions",
           "run_check", "write_reference", "Verdict", "verdicts", "mean_verdicts", "prepare_reference", "EXACT"]

DEFAULT_METRICS = ("overall", "tail")
GATE_METRICS = METRICS + LOSSES  # what a reference may judge: accuracies, the last epoch's and the first step's loss


Records = Sequence[Union[RunRecord, Mapping[str, Any]]]  # typed records; plain dicts are read as RunRecord


def run_label(rec: Union[RunRecord, Mapping[str, Any]]) -> str:
    """A stable, readable name of a run: ``fmnist-lt_if100/cifar_cnn_small->cifar_cnn_tiny/kd/s0``."""
    rec = as_record(rec)
    imb = rec.imbalance_factor
    ds = dataset_label(rec).replace(" ", "") + (f"_if{imb:g}" if imb is not None else "")
    if rec.is_teacher:
        return f"{ds}/{rec.arch}/teacher/s{rec.seed}"
    return f"{ds}/{rec.teacher_arch}->{rec.arch}/{rec.method}/s{rec.seed}"


def reference_path(cfg: SuiteConfig, explicit: Optional[Path] = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    if cfg.reference:
        path = Path(cfg.reference)
        return path if path.is_absolute() else CONFIG_DIR / path
    return CONFIG_DIR / f"{cfg.name}_reference.json"


def load_reference(path: Path) -> Dict[str, Any]:
    """Read and validate a reference (either format); return it with ``seed_stats``, ``k``, ``floor`` and
    ``fallback_tolerance`` filled in. An old-format file (one seed, a hand-set ``tolerance``) loads as one seed
    per setting judged by that tolerance, labelled hand-set."""
    try:
        ref = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable reference file ({err})") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("runs"), dict) or not ref["runs"]:
        raise ConfigError(f"{path}: the reference lists no runs; write one with `python -m benchmark check "
                          "--suite <suite> --seeds 0 1 2 --update-reference`")
    return prepare_reference(ref, path)


def prepare_reference(ref: Dict[str, Any], path: Any = "reference") -> Dict[str, Any]:
    """Validate a reference dict in place and fill what the old format lacks (seed statistics from its runs,
    its ``tolerance`` as the hand-set ``fallback_tolerance``); a dict already prepared is returned as is."""
    if ref.get("_prepared"):
        return ref
    metrics = ref.setdefault("metrics", list(DEFAULT_METRICS))
    _known_metrics(path, metrics)
    ref["_prepared"] = True
    if "seed_stats" not in ref:  # the old format: one seed, one hand-set tolerance
        tol = ref.pop("tolerance", 2.0)
        _known_metrics(path, list(tol) if isinstance(tol, dict) else [])
        ref["fallback_tolerance"] = {m: float(tol.get(m, 2.0) if isinstance(tol, dict) else tol) for m in metrics}
        ref["seed_stats"] = seed_stats(ref["runs"])
        ref.setdefault("k", {})
        ref.setdefault("floor", {})
        ref["derivation"] = "old-format reference: one seed, hand-set tolerance"
        return ref
    _validate_rule(path, ref)
    return ref


def _known_metrics(path: Path, names: Sequence[str]) -> None:
    for m in names:
        if m not in GATE_METRICS:
            raise ConfigError(f"{path}: unknown metric '{m}'.{did_you_mean(m, GATE_METRICS)} Metrics: "
                              f"{', '.join(GATE_METRICS)}")


def _validate_rule(path: Path, ref: Dict[str, Any]) -> None:
    """A seed-statistics reference needs k (spread metrics) and floor (every metric), numbers >= 0, and its
    derivation; ``paired`` (optional) lists metrics of ``metrics`` judged per seed."""
    paired = ref.setdefault("paired", [])
    if not isinstance(paired, list) or any(m not in ref["metrics"] for m in paired):
        raise ConfigError(f"{path}: 'paired' must list metrics of 'metrics' ({', '.join(ref['metrics'])}), "
                          f"got {paired!r}")
    _validate_table(path, ref, "k", [m for m in ref["metrics"] if m not in paired])  # a paired metric: floor only
    _validate_table(path, ref, "floor", ref["metrics"])
    if not isinstance(ref.get("derivation"), str) or not ref["derivation"].strip():
        raise ConfigError(f"{path}: 'derivation' must say how k and floor were measured")
    ref.setdefault("fallback_tolerance", {})
    _known_metrics(path, list(ref["fallback_tolerance"]))
    for setting, stats in ref["seed_stats"].items():
        for m, st in stats.items():
            _validate_stat(path, f"{setting}.{m}", st)


def _validate_table(path: Path, ref: Dict[str, Any], key: str, metrics: Sequence[str]) -> None:
    """``ref[key]`` maps known metrics to numbers, one >= 0 for each of ``metrics``."""
    table = ref.get(key)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: '{key}' must map each metric to a number, e.g. {{\"overall\": 3}}")
    _known_metrics(path, list(table))
    for m in metrics:
        v = table.get(m)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{path}: {key}.{m} must be a number >= 0, got {v!r}")


def _validate_stat(path: Path, where: str, st: Any) -> None:
    if not (isinstance(st, dict) and isinstance(st.get("mean"), (int, float)) and isinstance(st.get("n"), int)
            and st["n"] >= 1 and (st.get("sd") is None or st["sd"] >= 0)):
        raise ConfigError(f"{path}: seed_stats.{where} must be {{mean, sd (>= 0 or null), n (>= 1)}}, got {st!r}")


def _matched(records: Records, reference: Dict[str, Any]) -> Dict[str, RunRecord]:
    prepare_reference(reference)
    measured = {run_label(r): r for r in as_records(records)}
    if not {split_label(lb)[0] for lb in measured} & set(reference["seed_stats"]):
        raise ConfigError("the reference shares no run with this suite: it compares nothing (labels like "
                          f"{next(iter(reference['runs']))}; measured {next(iter(measured), 'none')})")
    return measured


def verdicts(records: Records, reference: Dict[str, Any]) -> List[Verdict]:
    """One Verdict per measured run, sorted by label: exact / within the seed spread / off / unjudged / failed /
    new (see benchmark.verdict). Both ways: a number above the spread is off too."""
    measured = _matched(records, reference)
    return [judge_run(label, measured[label], reference) for label in sorted(measured)]


def mean_verdicts(records: Records, reference: Dict[str, Any]) -> List[Verdict]:
    """Per setting trained with 2+ seeds: its mean over those seeds against the reference mean (``check``)."""
    groups: Dict[str, List[RunRecord]] = {}
    for label, rec in sorted(_matched(records, reference).items()):
        groups.setdefault(split_label(label)[0], []).append(rec)
    out = [judge_mean(setting, recs, reference) for setting, recs in groups.items()]
    return [v for v in out if v is not None]


def compare(records: Records, reference: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """(failures, notes) of ``check``: a failure per run off the seed spread (either way), failed, or that the
    reference cannot judge; per setting mean off; per reference setting no seed of which was measured."""
    runs = verdicts(records, reference)
    means = mean_verdicts(records, reference)
    failures: List[str] = []
    notes: List[str] = []
    for v in runs + means:
        (failures if v.is_off or v.kind == "unjudged" else notes).append(v.text.strip())
    trained = {split_label(v.label)[0] for v in runs}
    for setting in sorted(set(reference["seed_stats"]) - trained):
        failures.append(f"{setting}: no run was measured (the reference expects one)")
    return failures, notes


def reproduction_lines(records: Records, reference: Dict[str, Any]) -> Tuple[List[str], int]:
    """One verdict line per measured run and how many runs are off (or failed): ``verdicts`` as text."""
    vs = verdicts(records, reference)
    return [v.text for v in vs], sum(v.is_off for v in vs)


def _reference_rule(old: Dict[str, Any], metrics: Sequence[str]) -> Dict[str, Any]:
    """k, floor and derivation kept from an existing reference; for a new one, k 3 and floor 0, said unmeasured."""
    if "k" in old and "floor" in old and old.get("derivation"):
        rule = {key: old[key] for key in ("k", "floor", "paired", "derivation") if key in old}
    else:
        rule = {"k": {m: 3.0 for m in metrics}, "floor": {m: 0.0 for m in metrics},
                "derivation": "NOT MEASURED: k 3 (a normal draw lies within 3 sd 99.7% of the time) and floor 0 are "
                              "defaults; measure the spread across seeds and thread counts and set k and floor"}
    tol = old.get("fallback_tolerance", old.get("tolerance"))
    if tol:
        rule["fallback_tolerance"] = ({m: float(v) for m, v in tol.items()} if isinstance(tol, dict)
                                      else {m: float(tol) for m in metrics})
    return rule


def write_reference(path: Path, records: Records, cfg: SuiteConfig, device: torch.device) -> int:
    """Write the records' final numbers per seed and their per-setting seed statistics (mean, sd, n) as the
    suite's reference, keeping an existing file's metrics, k, floor, derivation and hand-set fallback."""
    old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    metrics = old.get("metrics", list(DEFAULT_METRICS))
    ok = sorted((r for r in as_records(records) if r.ok), key=run_label)
    runs = {run_label(r): {m: None if v.get(m) is None else round(v[m], 3) for m in GATE_METRICS}
            for r, v in ((r, gate_values(r)) for r in ok)}
    ref = {"suite": cfg.name, "format": 2, "metrics": metrics, **_reference_rule(old, metrics),
           "seeds": sorted({r.seed for r in ok}), "measured_on": environment_info(device),
           "seed_stats": seed_stats(runs), "runs": runs}
    atomic_write_text(path, json.dumps(ref, indent=1) + "\n")
    return len(runs)


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
        records, refused = gate_records([o.record for o in outcomes if o.record is not None], Path(out))
        if refused:  # a number the predictions contradict (or cannot back) is neither judged nor written
            for line in refused:
                log(f"error: {line}")
            return 2
        if opts.update_reference:
            n = write_reference(ref_path, records, cfg, device)
            log(f"wrote reference {ref_path} ({n} runs)")
            save_teachers(Path(out), log)  # <out>/teachers/<run_id>.pt + SHA256SUMS: `run` reuses them
            return 0
        failures, notes = compare(records, reference)
        for line in notes:
            log(f"  ok   {line}")
        for line in failures:
            log(f"  FAIL {line}")
        if failures:
            log(f"check FAILED: {len(failures)} regression(s) against {ref_path.name}")
            return 1
        log(f"check passed: {len(notes)} verdicts within the seed spread of {ref_path.name} (both ways)")
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()
