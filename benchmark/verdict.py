"""The seed-aware reproduction rule: is a run's number within the reference's seed distribution?

A reference holds each run per seed (labels end with ``/s<seed>``) and, per setting (the label without its
seed), the seeds' ``mean``, ``sd`` and ``n`` per metric. A measured run is

- ``exact``: bit-identical (every stored metric within 0.005) to the reference's run of the same seed;
- ``within``: ``|x - mean| <= k * sd + floor`` for every judged metric (``k`` and ``floor`` per metric, stored in
  the reference with the ``derivation`` that says how they were measured); a *paired* metric (the reference's
  ``paired`` list: ``first_loss``, the loss of the first step, which a seed and a fixed teacher determine up to
  summation order) is judged against the reference's run of the same seed instead: ``|x - x_seed| <= floor``;
- ``off``: beyond that, either way (a jump up means the benchmark measures something else), by so many sd;
- ``unjudged``: the reference has one seed of the setting, so no spread, and no hand-set ``fallback_tolerance``;
- ``failed`` (the run failed) or ``new`` (the setting is not in the reference).

With a one-seed reference and a ``fallback_tolerance`` (old-format files: their ``tolerance``), the run is judged
by ``|x - reference| <= tolerance`` and every line says that tolerance is hand-set, not a measured spread.
"""
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .record import RunRecord
from .train import FIRST_LOSS

__all__ = ["EXACT", "KINDS", "TRAIN_LOSS", "FIRST_LOSS", "LOSSES", "gate_values", "MetricCheck", "Verdict",
           "split_label", "seed_stats", "judge_run", "judge_mean", "format_rule"]

EXACT = 0.005  # references keep 3 decimals: a smaller difference is the same number
TRAIN_LOSS = "train_loss"  # the last epoch's mean training loss: a gate metric beside the accuracies (it moves when a
# loss term, a weight or a temperature changes even where accuracy, chaotic after a few epochs, does not)
LOSSES = (TRAIN_LOSS, FIRST_LOSS)  # shown with 3 decimals


def gate_values(rec: RunRecord) -> Dict[str, Any]:
    """The numbers a reference can judge: the record's final accuracies, ``train_loss`` (last epoch's mean) and
    ``first_loss`` (the first step's, before any update; records written before it existed lack it)."""
    values = dict(rec.final or {})
    history = rec.history or []
    if history and history[-1].get("loss") is not None:
        values[TRAIN_LOSS] = float(history[-1]["loss"])
    if history and history[0].get(FIRST_LOSS) is not None:
        values[FIRST_LOSS] = float(history[0][FIRST_LOSS])
    return values
KINDS = ("exact", "within", "off", "new", "failed", "unjudged")
_SEED = re.compile(r"^(?P<setting>.+)/s(?P<seed>-?\d+)$")
_TAGS = {"exact": "reproduced", "within": "within", "off": "OFF", "new": "new", "failed": "FAILED",
         "unjudged": "unjudged"}


def split_label(label: str) -> Tuple[str, Optional[int]]:
    """``".../kd/s2"`` -> (``".../kd"``, 2); a label without a seed suffix is its own setting (seed None)."""
    m = _SEED.match(label)
    return (m.group("setting"), int(m.group("seed"))) if m else (label, None)


def seed_stats(runs: Dict[str, Dict[str, Optional[float]]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Per setting and metric: mean, sample sd (None with one seed: no spread to measure) and n over the seeds."""
    groups: Dict[str, Dict[str, List[float]]] = {}
    for label, values in sorted(runs.items()):
        per_metric = groups.setdefault(split_label(label)[0], {})
        for m, v in values.items():
            if v is not None:
                per_metric.setdefault(m, []).append(float(v))
    return {s: {m: {"mean": round(statistics.fmean(v), 3),
                    "sd": round(statistics.stdev(v), 3) if len(v) > 1 else None, "n": len(v)}
                for m, v in per_metric.items()} for s, per_metric in groups.items()}


@dataclass
class MetricCheck:
    """One metric of one run against the reference: the measured value, the seeds' mean/sd/n, the allowed
    half-width (None: unjudged) and where that came from (``spread`` measured, or ``hand-set``)."""

    metric: str
    value: float
    mean: float
    sd: Optional[float]
    n: int
    bound: Optional[float]
    source: Optional[str]

    @property
    def diff(self) -> float:
        return self.value - self.mean

    @property
    def off(self) -> bool:
        return self.bound is not None and abs(self.diff) > self.bound

    @property
    def distance(self) -> Optional[float]:
        """|x - mean| in units of the seed sd (None without a positive sd)."""
        return abs(self.diff) / self.sd if self.sd else None

    def describe(self, seed: Optional[int] = None) -> str:
        dist, d = self.distance, 3 if self.metric in LOSSES else 2  # a loss needs a third decimal
        sd_text = "" if dist is None else f" = {dist:.1f} sd"
        ref = (f"seed-{seed} reference {self.mean:.{d}f}" if self.source == "paired" else
               f"mean {self.mean:.{d}f}" if self.n > 1 else f"reference {self.mean:.{d}f}")
        limit = "" if self.bound is None else f", limit {self.bound:.{d}f}"
        return (f"{self.metric} {self.value:.{d}f} ({ref}, {self.diff:+.{d}f}{sd_text}{limit}"
                f"{' OFF' if self.off else ''})")


@dataclass
class Verdict:
    """One measured run (or, ``seed`` None, one setting's mean over seeds) against the reference."""

    label: str
    seed: Optional[int]
    kind: str
    values: Dict[str, float] = field(default_factory=dict)
    distance: Optional[float] = None  # the worst judged metric's |x - mean| in seed-sd units
    text: str = ""
    checks: List[MetricCheck] = field(default_factory=list)

    @property
    def is_off(self) -> bool:
        return self.kind in ("off", "failed")


def paired_metrics(reference: Dict[str, Any]) -> List[str]:
    """The reference's metrics judged per seed against its run of the same seed (``paired``), not the spread."""
    return [m for m in reference.get("paired", []) if m in reference["metrics"]]


def format_rule(reference: Dict[str, Any], metrics: Sequence[str], scale: str = "sd") -> str:
    """The spread rule in words, per metric: ``|x - mean| <= k sd + floor (overall: k 3, floor 0.5; ...)``, and
    the paired rule for the paired metrics: ``|x - x_seed| <= floor``."""
    paired = set(paired_metrics(reference))
    spread = [m for m in metrics if m not in paired]
    per = "; ".join(f"{m}: k {reference['k'][m]:g}, floor {reference['floor'][m]:g}" for m in spread)
    text = f"rule |x - mean| <= k * {scale} + floor ({per})" if spread else ""
    same = [m for m in metrics if m in paired]
    if same:
        text += ("; " if text else "") + "paired rule |x - x_seed| <= floor (" + "; ".join(
            f"{m}: floor {reference['floor'][m]:g}" for m in same) + ")"
    return text


def _bound(reference: Dict[str, Any], m: str, stat: Dict[str, Any],
           scale: float) -> Tuple[Optional[float], Optional[str]]:
    """The allowed |x - mean| for metric ``m``: measured spread when there is one, else the hand-set fallback."""
    if stat.get("sd") is not None and stat["n"] > 1 and m in reference.get("k", {}):
        return reference["k"][m] * stat["sd"] * scale + reference["floor"][m], "spread"
    fallback = reference.get("fallback_tolerance") or {}
    if m in fallback:
        return float(fallback[m]), "hand-set"
    return None, None


def _checks(values: Dict[str, Any], stats: Dict[str, Any], reference: Dict[str, Any],
            scale_of=lambda stat: 1.0) -> List[MetricCheck]:
    """A MetricCheck per spread-judged reference metric both measured and in the setting's statistics."""
    out = []
    paired = set(paired_metrics(reference))
    for m in reference["metrics"]:
        stat = stats.get(m)
        if m in paired:
            continue
        if stat is None or values.get(m) is None:
            continue
        bound, source = _bound(reference, m, stat, scale_of(stat))
        out.append(MetricCheck(m, float(values[m]), float(stat["mean"]), stat.get("sd"), int(stat["n"]), bound, source))
    return out


def _paired_checks(values: Dict[str, Any], ref_run: Optional[Dict[str, Any]],
                   reference: Dict[str, Any]) -> List[MetricCheck]:
    """A MetricCheck per paired metric against the reference's run of the same seed (none without that run)."""
    out = []
    for m in paired_metrics(reference):
        ref = (ref_run or {}).get(m)
        if ref is not None and values.get(m) is not None:
            out.append(MetricCheck(m, float(values[m]), float(ref), None, 1, float(reference["floor"][m]), "paired"))
    return out


def _is_exact(final: Dict[str, Any], ref_run: Optional[Dict[str, Any]]) -> bool:
    """Every metric the reference's run of this seed stores is the same number (within 0.005)."""
    if not ref_run:
        return False
    pairs = [(final.get(m), v) for m, v in ref_run.items() if v is not None]
    return bool(pairs) and all(got is not None and abs(got - v) < EXACT for got, v in pairs)


def _kind(checks: List[MetricCheck]) -> str:
    if any(c.off for c in checks):
        return "off"
    if not checks or any(c.bound is None for c in checks):
        return "unjudged"
    return "within"


def _explain(kind: str, checks: List[MetricCheck], reference: Dict[str, Any], scale: str) -> str:
    """The tail of a verdict line: which rule judged it, or why none could."""
    sources = {c.source for c in checks}
    if kind == "unjudged":
        return "the reference has one seed of this run and no hand-set tolerance: it cannot judge the seed spread"
    if "hand-set" in sources:
        tol = reference["fallback_tolerance"]
        return ("one reference seed, so no seed spread: judged by the HAND-SET tolerance "
                + ", ".join(f"{m} ±{tol[m]:g}" for m in reference["metrics"] if m in tol) + " (not measured)")
    return format_rule(reference, [c.metric for c in checks], scale)


def judge_run(label: str, rec: RunRecord, reference: Dict[str, Any]) -> Verdict:
    """The verdict on one measured run record (its ``final`` numbers) against the reference."""
    setting, seed = split_label(label)
    stats = reference["seed_stats"].get(setting)
    final = gate_values(rec)
    seed_text = f"seed {seed}"
    if stats is None:
        return Verdict(label, seed, "new", text=f"  {_TAGS['new']:<10} {label}: {seed_text}, not in the reference")
    if not rec.ok:
        return Verdict(label, seed, "failed", text=f"  {_TAGS['failed']:<10} {label}: {seed_text}, {rec.reason}")
    checks = _checks(final, stats, reference) + _paired_checks(final, reference["runs"].get(label), reference)
    values = {c.metric: c.value for c in checks}
    dists = [c.distance for c in checks if c.bound is not None and c.distance is not None]
    distance = max(dists) if dists else None
    if _is_exact(final, reference["runs"].get(label)):
        text = (f"  {_TAGS['exact']:<10} {label}: exactly (seed {seed}, bit-identical to the reference's run of "
                f"seed {seed})")
        return Verdict(label, seed, "exact", values, distance, text, checks)
    kind = _kind(checks)
    n = max((c.n for c in checks), default=0)
    where = "" if f"{setting}/s{seed}" in reference["runs"] else " (a seed the reference lacks)"
    body = "; ".join(c.describe(seed) for c in checks)
    text = (f"  {_TAGS[kind]:<10} {label}: {body}; seed {seed}{where} vs the reference's {n} "
            f"seed{'s' if n != 1 else ''}; {_explain(kind, checks, reference, 'sd')}")
    return Verdict(label, seed, kind, values, distance, text, checks)


def _means(recs: Sequence[RunRecord], metrics: Sequence[str]) -> Dict[str, float]:
    """Per metric, the mean over ``recs`` of their gate values (a metric any run lacks is left out)."""
    values = [gate_values(r) for r in recs]
    means = {}
    for m in metrics:
        vals = [v.get(m) for v in values]
        if vals and all(v is not None for v in vals):
            means[m] = statistics.fmean(vals)
    return means


def judge_mean(setting: str, recs: Sequence[RunRecord], reference: Dict[str, Any]) -> Optional[Verdict]:
    """The mean over the measured seeds of one setting against the reference mean: allowed
    ``k * sd * sqrt(1/n + 1/n_ref) + floor`` (the sd of a difference of two means). None: nothing to judge."""
    stats = reference["seed_stats"].get(setting)
    ok = [r for r in recs if r.ok]
    if stats is None or len(ok) < 2:
        return None
    scale = lambda stat: math.sqrt(1.0 / len(ok) + 1.0 / stat["n"])  # noqa: E731
    checks = [c for c in _checks(_means(ok, reference["metrics"]), stats, reference, scale) if c.source == "spread"]
    if not checks:
        return None
    kind = _kind(checks)
    dists = [c.distance for c in checks if c.distance is not None]
    label = f"{setting}/mean{len(ok)}"
    text = (f"  {_TAGS[kind]:<10} {label}: " + "; ".join(c.describe() for c in checks)
            + f"; the mean of {len(ok)} seeds vs the reference's {checks[0].n}; "
            + format_rule(reference, [c.metric for c in checks], "sd * sqrt(1/n + 1/n_ref)"))
    return Verdict(label, None, kind, {c.metric: c.value for c in checks}, max(dists) if dists else None, text, checks)
