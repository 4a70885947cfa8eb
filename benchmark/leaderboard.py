"""Settings-exact leaderboard rows, paired "Δ vs kd" columns, and ``leaderboard.md`` / ``leaderboard.csv``.

A row holds every seed of one setting (``benchmark.settings``); rows are grouped into one table per
(dataset + options, imbalance factor, teacher). Called through :func:`benchmark.results.regenerate`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tabulate import tabulate

from . import paired, published, ranks
from .evaluate import METRICS, SHOT_GROUPS, THIRDS
from .integrity import is_verified
from .record import RunRecord, as_records
from .reference import is_reference, provenance, reference_lines
from .settings import (arch_of, code_family, dataset_label, describe, differing_keys, flatten, format_value,
                       group_by_settings, settings_key, settings_of, teacher_of)

__all__ = ["Row", "build_rows", "sections", "METRICS", "REFERENCE_METHOD", "compute_deltas", "frame",
           "markdown", "csv_text", "code_versions", "DELTA_PARAGRAPH"]

REFERENCE_METHOD = "kd"
TEACHER_NAME = "teacher (ce)"
# recipe keys named in a table's "shared settings" line (all keys still decide the rows)
HEADLINE_KEYS = ("recipe.epochs", "recipe.lr", "recipe.batch_size", "recipe.schedule", "recipe.weight_decay",
                 "recipe.augment", "base_lr")

DELTA_PARAGRAPH = (
    "**Δ vs kd** (overall and tail): accuracy of the row minus that of the `kd` row of the same table with "
    "the same settings apart from the method (the teacher row is compared with the table's `kd` row), in "
    "points, from the test predictions stored beside each record. The interval in brackets is a 95% paired "
    f"bootstrap: {paired.N_RESAMPLES} resamples of the test images, drawn with replacement within each "
    "test class (class sizes kept), the same images for both methods; with several seeds, runs are paired "
    "by seed and the seeds are resampled too. Tail accuracy is the mean accuracy of the tail third of the "
    "classes by training count. `*` marks an interval that excludes 0 (a difference the test set "
    "supports); `ref` is the `kd` row compared against; — where a side stored no predictions or no `kd` "
    "row matches.")

UNVERIFIED_MARK = " †"  # after a row's name in leaderboard.md: a run without predictions to check


@dataclass(eq=False)
class Row:
    """One leaderboard row: the runs (one per seed) of one setting, and their aggregate metrics."""

    label: str
    settings: Dict[str, Any]
    records: List[RunRecord]
    diff: Dict[str, Any] = field(default_factory=dict)  # settings keys that tell this row from its peers

    @property
    def role(self) -> str:
        return self.records[0].role

    @property
    def method(self) -> str:
        return self.records[0].method

    @property
    def is_teacher(self) -> bool:
        return self.role == "teacher"

    @property
    def name(self) -> str:
        """The method column: ``teacher (ce)`` for a teacher, else the method's name."""
        return TEACHER_NAME if self.is_teacher else self.method

    @property
    def is_reference(self) -> bool:
        """A row of the committed reference run (benchmark.reference), not trained in this folder."""
        return all(is_reference(r) for r in self.records)

    @property
    def display_name(self) -> str:
        """The name shown in tables and plots: ``kd (ref)`` for a reference row."""
        return self.name + (" (ref)" if self.is_reference else "")

    @property
    def student(self) -> Optional[str]:
        return arch_of(self.records[0])

    @property
    def teacher(self) -> Optional[str]:
        return teacher_of(self.records[0])

    @property
    def section(self) -> Tuple[str, Any, Any]:
        """The table a row belongs to: (dataset + options, imbalance factor, teacher)."""
        rec = self.records[0]
        return dataset_label(rec), rec.imbalance_factor, self.teacher

    @property
    def seeds(self) -> int:
        return len({r.seed for r in self.records})

    @property
    def verified(self) -> bool:
        """Every run's numbers were recomputed from its stored predictions (benchmark.integrity)."""
        return all(is_verified(r) for r in self.records)

    @property
    def run_ids(self) -> List[str]:
        return [r.run_id for r in self.records]

    @property
    def class_counts(self) -> List[int]:
        return list(self.records[0].class_counts or [])

    @property
    def epochs(self) -> Optional[int]:
        """Planned epochs of the recipe (what a reader means by "6 epochs")."""
        return (self.records[0].recipe or {}).get("epochs", self.records[0].epochs)

    def group_sizes(self, epoch: str = "final") -> Dict[str, int]:
        return dict(self.records[0].result(epoch).get("group_sizes") or {})

    def values(self, metric: str, epoch: str = "final") -> List[float]:
        """The metric of every seed (seeds where it is undefined, e.g. an empty group, are left out)."""
        return [float(r.result(epoch)[metric]) for r in self.records if r.result(epoch).get(metric) is not None]

    def metric(self, metric: str, epoch: str = "final") -> Tuple[float, float]:
        """(mean, sample std) over seeds; NaN mean where undefined, NaN std with a single seed."""
        v = self.values(metric, epoch)
        if not v:
            return math.nan, math.nan
        return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan

    def per_class(self, epoch: str = "final") -> Tuple[np.ndarray, np.ndarray]:
        """(mean, std) of per-class accuracy over seeds (std 0 with one seed)."""
        acc = np.array([r.result(epoch)["per_class_acc"] for r in self.records], dtype=np.float64)
        return acc.mean(axis=0), acc.std(axis=0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])


def build_rows(records: Sequence[RunRecord | Mapping[str, Any]],
               path_of: Callable[[RunRecord], str] = lambda r: r.run_id) -> List[Row]:
    """One :class:`Row` per setting among the ok records (seeds in order); duplicates raise ValueError. Plain
    dicts are read as :class:`~benchmark.record.RunRecord` first."""
    ok = [r for r in as_records(records) if r.ok]
    rows = []
    for label, recs in group_by_settings(ok, path_of).items():
        recs = sorted(recs, key=lambda r: repr(r.seed))
        rows.append(Row(label, settings_of(recs[0]), recs))
    for part in sections(rows).values():
        for row, diff in zip(part, differing_keys([r.settings for r in part])):
            row.diff = diff
    return rows


def sections(rows: Sequence[Row]) -> Dict[Tuple[str, Any, Any], List[Row]]:
    """Rows per table, in each table the teacher(s) first, then by overall accuracy (best first)."""
    out: Dict[Tuple[str, Any, Any], List[Row]] = {}
    for row in rows:
        out.setdefault(row.section, []).append(row)
    for key, part in out.items():
        out[key] = sorted(part, key=lambda r: (not r.is_teacher, -_nan_to(r.metric("overall")[0], -1e9),
                                               r.method, r.label))
    return out


def _nan_to(x: float, fill: float) -> float:
    return fill if x is None or math.isnan(x) else x


def _context(row: Row) -> str:
    """The settings of a row minus its method: what a fair comparison with ``kd`` must share."""
    return settings_key({k: v for k, v in row.settings.items() if k not in ("method", "method_params")})


def reference_row(row: Row, part: Sequence[Row]) -> Optional[Row]:
    """The ``kd`` row a row is compared with: same table and settings but the method (teachers: any ``kd``
    row of the table); several candidates (kd hyper-parameters) -> the one with most seeds."""
    kd = [r for r in part if r.method == REFERENCE_METHOD and not r.is_teacher]
    if not row.is_teacher:
        kd = [r for r in kd if _context(r) == _context(row)]
    if not kd:
        return None
    return sorted(kd, key=lambda r: (-r.seeds, r.label))[0]


@dataclass
class Delta:
    """A row's paired comparison with its reference row (``result`` None: not computable)."""

    reference: Optional[Row]
    result: Optional[paired.PairedResult]
    used_as_reference: bool = False  # another row of the table is compared with this one
    table_ranks: Optional[ranks.TableRanks] = None  # the joint ranks of the row's table (benchmark.ranks)

    def text(self, metric: str, row: Row) -> str:
        if self.reference is row:
            return "ref" if self.used_as_reference else "—"
        iv = self._interval(metric)
        return iv.format() if iv is not None else "—"

    def _interval(self, metric: str) -> Optional[paired.Interval]:
        if self.result is None:
            return None
        return self.result.overall if metric == "overall" else self.result.tail

    def numbers(self, metric: str) -> Tuple[Optional[float], Optional[float], Optional[float]]:
        iv = self._interval(metric)
        return (iv.diff, iv.lo, iv.hi) if iv is not None else (None, None, None)


def compute_deltas(rows: Sequence[Row], out: Path, n_resamples: int = paired.N_RESAMPLES) -> Dict[str, Delta]:
    """Per row label, its paired difference to its ``kd`` reference row (predictions loaded once)."""
    cache: Dict[str, Any] = {}
    deltas: Dict[str, Delta] = {}
    for part in sections(rows).values():
        for row in part:
            ref = reference_row(row, part)
            if ref is None or ref is row:
                deltas[row.label] = Delta(ref, None)
                continue
            deltas[row.label] = Delta(ref, paired.compare_records(row.records, ref.records, out, cache,
                                                                  n_resamples=n_resamples))
    for label, delta in deltas.items():
        if delta.reference is not None and delta.reference.label != label:
            deltas[delta.reference.label].used_as_reference = True
    for part in sections(rows).values():  # ranks with intervals, one joint bootstrap per table
        table = ranks.rank_table(part, out, cache, n_resamples=n_resamples)
        for row in part:
            deltas[row.label].table_ranks = table
    return deltas


def _fmt(mean: float, std: float) -> str:
    if mean is None or math.isnan(mean):
        return "—"
    if std is None or math.isnan(std):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def _title(part: Sequence[Row]) -> str:
    dataset, imb, teacher = part[0].section
    students = sorted({r.student for r in part if not r.is_teacher and r.student})
    title = f"{dataset}" + (f", imbalance factor {imb:g}" if imb is not None and imb == imb else "")
    return title + f" — teacher {teacher}" + (f" → student {', '.join(students)}" if students else "")


def _common(rows: Sequence[Row], keys: Sequence[str]) -> List[str]:
    """``key=value`` for each of ``keys`` (flattened settings) that every row has with one non-null value."""
    flats = [flatten(r.settings) for r in rows]
    same = [k for k in keys if all(k in f for f in flats) and flats[0][k] is not None
            and len({settings_key({"v": f[k]}) for f in flats}) == 1]
    return [f"{k.split('.')[-1]}={format_value(flats[0][k])}" for k in same]


def _shared(part: Sequence[Row]) -> str:
    """The headline settings every row shares (data seed, code family; epochs, lr, ... per role), one line."""
    bits = [", ".join(_common(part, ("data_seed", "code_family")))]
    for role, name in (("teacher", "teacher"), ("student", "students")):
        rows = [r for r in part if r.role == role]
        shared = _common(rows, HEADLINE_KEYS) if rows else []
        if shared:
            bits.append(f"{name}: " + ", ".join(shared))
    return "; ".join(b for b in bits if b)


def code_versions(records: Sequence[RunRecord]) -> List[str]:
    """One line per distinct code version among the ok records (family, fingerprint, commit, dirty)."""
    seen: Dict[Tuple[Any, ...], int] = {}
    for rec in records:
        if not rec.ok:
            continue
        code = rec.code if isinstance(rec.code, Mapping) else {}
        key = (code_family(rec), code.get("fingerprint"), code.get("git_commit"), code.get("git_dirty"))
        seen[key] = seen.get(key, 0) + 1
    lines = []
    for (family, fp, commit, dirty), n in seen.items():
        parts = [f"family {family}" if family is not None else "family unknown (record predates code families)",
                 f"fingerprint {fp}" if fp else "no fingerprint",
                 f"commit {commit[:10]}" if commit else "commit unknown",
                 {True: "dirty tree", False: "clean tree"}.get(dirty, "tree state unknown")]
        lines.append(f"- code {', '.join(parts)}: {n} run{'s' if n != 1 else ''}")
    return lines


_INTRO = (
    "# ltkd-bench leaderboard", "",
    "Generated by `python -m benchmark report` from the run records in `runs/`; do not edit by hand.",
    "Accuracy in % on the balanced test split, final epoch (no model selection on test), mean ± std over "
    "seeds. Shot groups from TRAIN counts: many > 100, medium 20..100, few < 20 images; head / middle / "
    "tail rank the classes by training count: the first C // 3 head, the last C // 3 tail, the rest middle "
    "(33 / 34 / 33 of 100 classes, LTKD's groups). `best` is the best evaluated epoch "
    "(selected on test; reported for comparison with papers that do so).",
    "A row holds the runs of one exact setting (data and its options, imbalance factor, data seed, "
    "teacher and student, method and every hyper-parameter, both recipes, code family); `seeds` counts "
    "its distinct seeds. Rows that differ in anything but the seed are separate rows, told apart by the "
    "`settings` label (a hash of those settings); the legend under each table names the keys that differ.",
)


def markdown(rows: Sequence[Row], deltas: Mapping[str, Delta], records: Sequence[RunRecord]) -> str:
    """The whole ``leaderboard.md``: header, one table (+ legend) per section, methods, failed runs."""
    lines = _header_lines(records)
    for part in sections(rows).values():
        lines += _section_lines(part, deltas)
    return "\n".join(lines + _footer_lines(records))


def _header_lines(records: Sequence[RunRecord]) -> List[str]:
    """What every leaderboard says first: how to read it, the Δ paragraph, the code versions it was built from."""
    lines = [*_INTRO, "", DELTA_PARAGRAPH, "", ranks.RANK_PARAGRAPH, ""]
    versions = code_versions(records)
    if versions:
        lines += ["Built from:", "", *versions, ""]
    lines += reference_lines(records)
    return lines


def _section_lines(part: Sequence[Row], deltas: Mapping[str, Delta]) -> List[str]:
    """One table: title, classes per group, the rows, then the settings they share and those that differ."""
    sizes = {g: int(part[0].group_sizes().get(g, 0)) for g in SHOT_GROUPS + THIRDS}
    lines = [f"## {_title(part)}", "", "Classes per group: " + ", ".join(f"{g} {n}" for g, n in sizes.items()) + "."]
    empty = [g for g in SHOT_GROUPS if sizes[g] == 0]
    if empty:
        lines.append(f"No class falls in {' / '.join(empty)} on this dataset (strict 100/20 rule): those "
                     "columns are empty; use head / middle / tail.")
    table_ranks = next((deltas[r.label].table_ranks for r in part if r.label in deltas), None)
    return lines + ["", _table(part, deltas, sizes), "", *ranks.section_lines(table_ranks), *_settings_lines(part),
                    *published.section_notes(part), ""]


def _table(part: Sequence[Row], deltas: Mapping[str, Delta], sizes: Mapping[str, int]) -> str:
    """The GitHub-Markdown table of one section: metrics (mean ± std), best overall, Δ vs kd, seeds."""
    headers = ["method", "settings", "student", *[f"{m} ({sizes[m]} cls)" if m in sizes else m for m in METRICS],
               "best overall", "Δ overall vs kd", "Δ tail vs kd", "rank overall", "rank tail", "paper",
               "seeds"]
    table = []
    for r in part:
        delta = deltas.get(r.label, Delta(None, None))
        name = r.display_name + ("" if r.verified else UNVERIFIED_MARK)
        table.append([f"**{name}**" if r.is_teacher else name, f"`{r.label}`", r.student,
                      *[_fmt(*r.metric(m)) for m in METRICS], _fmt(*r.metric("overall", "best")),
                      delta.text("overall", r), delta.text("tail", r), ranks.cell(delta.table_ranks, r, "overall"),
                      ranks.cell(delta.table_ranks, r, "tail"), published.paper_cell(r), r.seeds])
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def _settings_lines(part: Sequence[Row]) -> List[str]:
    """The settings every row of a table shares, then per row label those that tell it from its peers."""
    shared = _shared(part)
    lines = [f"Shared settings: {shared}."] if shared else []
    differing = [r for r in part if r.diff]
    if not differing:
        return lines + ["No other setting differs among these rows: each method has one setting."]
    return lines + ["", "Settings that differ among rows of this table (per label; teachers compared with "
                        "teachers, hyper-parameters within a method):", "",
                    *[f"- `{r.label}` {r.name}: {describe(r.diff)}" for r in differing]]


def _footer_lines(records: Sequence[RunRecord]) -> List[str]:
    """The legend of the methods in the tables, then the failed runs and why."""
    lines: List[str] = []
    legend = _method_legend({r.method for r in records if r.is_student})
    if legend:
        lines += ["Methods:", "", *legend, ""]
    if any(r.ok and not is_verified(r) for r in records):
        lines += [f"{UNVERIFIED_MARK.strip()} unverified: no stored test predictions to recompute the numbers from.",
                  ""]
    failed = [r for r in records if not r.ok]
    if failed:
        lines += ["Failed runs (not in the tables):", "", *[f"- `{r.run_id}`: {r.reason}" for r in failed],
                  ""]
    return lines


def _method_legend(names) -> List[str]:
    try:
        import methods
    except ImportError:  # pragma: no cover
        return []
    out = []
    for name in sorted(n for n in names if n):
        try:
            cls = methods.get_method(name)
        except KeyError:
            continue
        if getattr(cls, "summary", None):
            out.append(f"- `{name}`: {cls.summary}")
    return out


def frame(rows: Sequence[Row], deltas: Mapping[str, Delta]):
    """A pandas DataFrame, one line per row: metrics (mean, std), Δ vs kd with bounds, labels, run ids."""
    import pandas as pd

    data = []
    for part in sections(rows).values():
        for r in part:
            dataset, imb, teacher = r.section
            line: Dict[str, Any] = {"dataset": dataset, "imbalance_factor": imb, "teacher": teacher,
                                    "student": r.student, "role": r.role, "method": r.name, "settings": r.label,
                                    "settings_diff": describe(r.diff)}
            for m in METRICS:
                line[f"{m}_mean"], line[f"{m}_std"] = r.metric(m)
            line["best_overall_mean"], line["best_overall_std"] = r.metric("overall", "best")
            delta = deltas.get(r.label, Delta(None, None))
            for m in ("overall", "tail"):
                line[f"delta_{m}_vs_kd"], line[f"delta_{m}_lo"], line[f"delta_{m}_hi"] = delta.numbers(m)
            line["kd_reference"] = delta.reference.label if delta.reference is not None else None
            line.update(ranks.csv_fields(delta.table_ranks, r))  # rank_overall[_lo|_hi], rank_tail..., tied_best_*
            line.update(published.csv_fields(r))  # published value, its rule and source, ours minus it
            line["seeds"] = r.seeds
            line["epoch"] = max(int(rec.result("final").get("epoch") or 0) for rec in r.records)
            for g, n in r.group_sizes().items():
                line[f"n_{g}"] = n
            line["code_family"] = r.settings.get("code_family")
            line["source"] = "reference" if r.is_reference else "local"
            line["made_by"] = provenance(r.records[0])
            line["verified"] = r.verified
            line["run_ids"] = ";".join(r.run_ids)
            data.append(line)
    df = pd.DataFrame(data)
    for col in df.columns:  # counts stay integers in the csv (a missing group would make them floats)
        if col.startswith(("n_", "rank_")) or col in ("seeds", "epoch"):
            df[col] = df[col].astype("Int64")
    return df


def csv_text(df) -> str:
    """``leaderboard.csv``: every float rounded to 2 decimals."""
    return df.round(2).to_csv(index=False, float_format="%.2f")
