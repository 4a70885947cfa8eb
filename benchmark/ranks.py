"""Ranks of a leaderboard table's rows on overall and tail accuracy, with 95% bootstrap intervals.

The bootstrap is the paired one of :mod:`benchmark.paired` (test images redrawn within each test class;
with several seeds, the seeds redrawn too), drawn ONCE per table and shared by every ranked row: in each
resample all rows are scored on the same images and seeds and ranked against each other, so a rank
interval reflects how the whole ordering moves, not each row's accuracy on its own draw. Rank 1 is the
best; rows with equal accuracy in a resample share the best (minimum) rank of their group ("1, 2, 2, 4").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import paired

if TYPE_CHECKING:  # pragma: no cover
    from .leaderboard import Row

__all__ = ["Rank", "Ranking", "TableRanks", "joint_bootstrap", "ranks_of", "rank_rows", "rank_table",
           "cell", "csv_fields", "section_lines", "RANK_PARAGRAPH", "METRICS", "MIN_ROWS"]

METRICS = ("overall", "tail")
MIN_ROWS = 2  # a table ranks its student rows only when at least this many share one test set and seeds
_TIE = 1e-9  # accuracies (points) closer than this are equal: the same image counts summed in another order

RANK_PARAGRAPH = (
    "**rank overall / rank tail**: the row's rank among the table's student rows (1 = best), the teacher "
    "excluded (it is another, larger model: the ranks compare methods for one student). Only rows with "
    "stored predictions on one test set and the same seeds are ranked; the others show —. The bracket is "
    f"a 95% interval from the Δ columns' bootstrap ({paired.N_RESAMPLES} resamples of the test images "
    "within each test class, and of the seeds), drawn once per table: in every resample all rows are "
    "scored on the same images and seeds and ranked together; equal accuracies share the best rank. The "
    "bounds are the 2.5% and 97.5% quantiles of the resampled ranks, rounded outwards to whole ranks. With "
    "one seed the interval covers test-image sampling only, not seed-to-seed spread (train several seeds). "
    "**Tied with the best** (the line under each table): the rows whose 95% paired interval of the "
    "difference to the best-ranked row, in those same resamples, includes 0.")


@dataclass(frozen=True)
class Rank:
    """A row's rank on the full test set (mean over seeds) and its bootstrap interval ``[lo, hi]``."""

    point: int
    lo: int
    hi: int

    def format(self) -> str:
        """``2 [1, 3]``."""
        return f"{self.point} [{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class Ranking:
    """One metric's ranks of the rows (input order), the best row and the rows tied with it (indices)."""

    ranks: Tuple[Rank, ...]
    best: int
    tied: Tuple[int, ...]


def ranks_of(acc: np.ndarray, tol: float = _TIE) -> np.ndarray:
    """Ranks along the last axis, 1 = highest; within ``tol`` counts as equal and shares the minimum rank."""
    acc = np.asarray(acc, dtype=np.float64)
    return 1 + (acc[..., None, :] > acc[..., :, None] + tol).sum(axis=-1)


def _checked(preds: Sequence[Mapping[Any, np.ndarray]], target: np.ndarray) -> Tuple[Tuple[Any, ...], np.ndarray]:
    """The rows' common seeds (sorted) and ``target`` as int64; ValueError on rows that cannot be ranked jointly."""
    if not preds:
        raise ValueError("no rows to rank: pass the predictions of at least one row")
    seeds = tuple(sorted(preds[0], key=repr))
    target = np.asarray(target).astype(np.int64, copy=False)
    if not seeds or target.ndim != 1 or target.shape[0] == 0:
        raise ValueError("nothing to rank: every row needs predictions of at least one seed on a non-empty test set")
    for i, row in enumerate(preds):
        if tuple(sorted(row, key=repr)) != seeds:
            raise ValueError(f"row {i} has seeds {sorted(row, key=repr)}, row 0 {list(seeds)}: joint ranks need "
                             "the same seeds in every row; rank only rows trained with the same seeds")
        for s in seeds:
            if np.shape(row[s]) != target.shape:
                raise ValueError(f"predictions of row {i} (seed {s}) have shape {np.shape(row[s])}, the test "
                                 f"targets {target.shape}: they are not predictions on the same test set")
    return seeds, target


def _features(preds: Sequence[Mapping[Any, np.ndarray]], target: np.ndarray, seeds: Sequence[Any],
              tail: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, bool]:
    """(images sorted by class, (2, rows, seeds) metric columns) weights: an image's contribution, in points,
    to overall and to tail accuracy when it is right; the class sizes; whether any tail class is tested."""
    order = np.argsort(target, kind="stable")  # the positions paired.StratifiedDraw draws from
    sorted_t = target[order]
    classes, counts = np.unique(sorted_t, return_counts=True)
    size_of = counts[np.searchsorted(classes, sorted_t)].astype(np.float64)
    tail_present = np.isin(classes, np.asarray(list(tail), dtype=np.int64))
    weights = np.zeros((2, sorted_t.shape[0]))
    weights[0] = 100.0 / sorted_t.shape[0]
    if tail_present.any():  # tail = mean over the tail classes of their accuracy, as paired._Strata.summarize
        in_tail = np.isin(sorted_t, classes[tail_present])
        weights[1, in_tail] = 100.0 / (size_of[in_tail] * tail_present.sum())
    correct = np.stack([[np.asarray(row[s])[order] == sorted_t for s in seeds] for row in preds])  # (R, S, n)
    feats = weights[:, None, None, :] * correct[None]  # (2, R, S, n)
    return feats.reshape(-1, sorted_t.shape[0]).T, counts, bool(tail_present.any())


def joint_bootstrap(preds: Sequence[Mapping[Any, np.ndarray]], target: np.ndarray, tail: Sequence[int],
                    n_resamples: int = paired.N_RESAMPLES, seed: int = 0
                    ) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Overall and tail accuracy (points) of every row: (2, rows) on the full test set (mean over seeds) and
    (2, n_resamples, rows) in joint resamples (one draw of images and seeds for all rows), and whether the
    tail is defined. The same draws as :func:`benchmark.paired.paired_bootstrap` with ``strategy="images"``."""
    seeds, target = _checked(preds, target)
    feats, counts, has_tail = _features(preds, target, seeds, tail)
    n, n_rows, n_seeds = feats.shape[0], len(preds), len(seeds)
    point = feats.sum(axis=0).reshape(2, n_rows, n_seeds).mean(axis=-1)
    draw = paired.StratifiedDraw(counts)
    rng = np.random.default_rng(seed)
    boot = np.empty((2, n_resamples, n_rows))
    for lo in range(0, n_resamples, draw.chunk):
        m = min(draw.chunk, n_resamples - lo)
        idx = draw(rng, m)  # images first, then seeds: the order paired._bootstrap draws them in
        times = np.bincount((np.arange(m)[:, None] * n + idx).ravel(), minlength=m * n).reshape(m, n)
        acc = (times.astype(np.float64) @ feats).reshape(m, 2, n_rows, n_seeds)
        acc = acc[..., 0] if n_seeds == 1 else np.einsum("mkrs,ms->mkr", acc,
                                                         paired.seed_weights(rng, m, n_seeds))
        boot[:, lo:lo + m] = acc.transpose(1, 0, 2)
    return point, boot, has_tail


def _ranking(point: np.ndarray, boot: np.ndarray, level: float) -> Ranking:
    """One metric's ranks with intervals and its tied-with-best set: ``point`` (rows,), ``boot`` (resamples, rows)."""
    point_rank, boot_rank = ranks_of(point), ranks_of(boot)
    lo = np.quantile(boot_rank, (1 - level) / 2, axis=0, method="lower")
    hi = np.quantile(boot_rank, (1 + level) / 2, axis=0, method="higher")
    best = int(np.flatnonzero(point_rank == 1)[0])
    diff = boot - boot[:, [best]]
    diff[np.abs(diff) < _TIE] = 0.0
    d_lo, d_hi = np.percentile(diff, [(1 - level) / 2 * 100, (1 + level) / 2 * 100], axis=0)
    tied = np.flatnonzero(((d_lo <= 0) & (d_hi >= 0)) | (point_rank == 1))
    ranks = tuple(Rank(int(p), int(a), int(b)) for p, a, b in zip(point_rank, lo, hi))
    return Ranking(ranks, best, tuple(int(i) for i in tied))


def rank_rows(preds: Sequence[Mapping[Any, np.ndarray]], target: np.ndarray, tail: Sequence[int],
              n_resamples: int = paired.N_RESAMPLES, seed: int = 0, level: float = paired.LEVEL
              ) -> Dict[str, Ranking]:
    """Per metric ("overall", and "tail" when a tail class is tested), the rows' ranks with ``level`` intervals.

    ``preds[r]`` maps each seed to row r's argmax predictions on the test set (order of ``target``); every
    row must have the same seeds. ``tail``: the tail classes (:func:`benchmark.paired.tail_classes`).
    """
    point, boot, has_tail = joint_bootstrap(preds, target, tail, n_resamples=n_resamples, seed=seed)
    out = {"overall": _ranking(point[0], boot[0], level)}
    if has_tail:
        out["tail"] = _ranking(point[1], boot[1], level)
    return out


@dataclass(frozen=True)
class TableRanks:
    """The ranks of one leaderboard table: ranked row labels and names (table order), per-metric rankings,
    the seeds they share, and the student rows left out with why."""

    labels: Tuple[str, ...]
    names: Tuple[str, ...]
    metrics: Mapping[str, Ranking]
    seeds: Tuple[Any, ...]
    left_out: Tuple[Tuple[str, str], ...] = ()

    def rank(self, label: str, metric: str) -> Optional[Rank]:
        """The rank of row ``label`` on ``metric``; None when the row (or the metric) is not ranked."""
        if label not in self.labels or metric not in self.metrics:
            return None
        return self.metrics[metric].ranks[self.labels.index(label)]

    def tied(self, label: str, metric: str) -> Optional[bool]:
        """Whether row ``label`` is tied with the best on ``metric``; None when not ranked."""
        if self.rank(label, metric) is None:
            return None
        return self.labels.index(label) in self.metrics[metric].tied


def _row_predictions(row: "Row", out: Path, cache: Dict[str, Any]
                     ) -> Tuple[Optional[Dict[Any, np.ndarray]], Optional[np.ndarray], str]:
    """(predictions by seed, the test target, '') of a row, or (None, None, why it cannot be ranked)."""
    preds: Dict[Any, np.ndarray] = {}
    target: Optional[np.ndarray] = None
    for rec in row.records:
        loaded = paired._cached_predictions(out, cache, rec)
        if loaded is None:
            return None, None, "no stored predictions"
        if target is not None and not paired._same_target(loaded[1], target):
            return None, None, "its seeds were tested on different test sets"
        preds[rec.seed], target = loaded[0], loaded[1]
    return preds, np.asarray(target).astype(np.int64), ""


def _group_key(row: "Row", preds: Mapping[Any, np.ndarray], target: np.ndarray) -> tuple:
    """What rows ranked together must share: seeds, training class counts, test targets."""
    return tuple(sorted(preds, key=repr)), tuple(row.class_counts), target.tobytes()


def _select(part: Sequence["Row"], out: Path, cache: Dict[str, Any]):
    """(rows, their predictions, target) of the largest group of student rows sharing seeds, class counts and
    test set (ties: more seeds, then table order), and (name, why) for every other student row."""
    loaded, left_out = [], []
    for row in part:
        if row.is_teacher:
            continue
        preds, target, why = _row_predictions(row, out, cache)
        if preds is None:
            left_out.append((row, why))
        else:
            loaded.append((row, preds, target, _group_key(row, preds, target)))
    keys = [k for *_, k in loaded]
    chosen = max(dict.fromkeys(keys), key=lambda k: (keys.count(k), len(k[0])), default=None)
    for row, preds, _, key in loaded:
        if key != chosen:
            other = key[0] != chosen[0]
            left_out.append((row, f"other seeds ({', '.join(map(str, key[0]))})" if other else "another test set"))
    group = [(row, preds, target) for row, preds, target, key in loaded if key == chosen]
    return group, left_out


_CACHE: Dict[tuple, Optional[TableRanks]] = {}


def rank_table(part: Sequence["Row"], out: Path, cache: Optional[Dict[str, Any]] = None,
               n_resamples: int = paired.N_RESAMPLES, seed: int = 0) -> Optional[TableRanks]:
    """The ranks of a table's student rows (``part``: one :func:`benchmark.leaderboard.sections` entry); None
    when fewer than :data:`MIN_ROWS` rows share stored predictions, seeds and test set."""
    students = [r for r in part if not r.is_teacher]
    key = (tuple((r.label, paired._file_key(out, r.records)) for r in students), n_resamples, seed)
    if all(k[1] is not None for k in key[0]) and key in _CACHE:
        return _CACHE[key]  # a report ranks each table twice (md/csv, html): unchanged predictions are reused
    group, left_out = _select(part, Path(out), {} if cache is None else cache)
    result = None
    if len(group) >= MIN_ROWS:
        rows, preds, targets = zip(*group)
        metrics = rank_rows(list(preds), targets[0], paired.tail_classes(rows[0].class_counts),
                            n_resamples=n_resamples, seed=seed)
        result = TableRanks(tuple(r.label for r in rows), _names(rows), metrics,
                            tuple(sorted(preds[0], key=repr)), tuple((_names([r])[0], why) for r, why in left_out))
    if len(_CACHE) > 1024:
        _CACHE.clear()
    _CACHE[key] = result
    return result


def _names(rows: Sequence["Row"]) -> Tuple[str, ...]:
    """The rows' display names, each followed by its settings label when another row of the table has its name."""
    names = [r.display_name for r in rows]
    return tuple(f"{n} `{r.label}`" if names.count(n) > 1 else n for n, r in zip(names, rows))


def cell(table: Optional[TableRanks], row: "Row", metric: str) -> str:
    """The markdown cell ``2 [1, 3]`` of a row's rank on ``metric``; — where it is not ranked."""
    rank = table.rank(row.label, metric) if table is not None else None
    return rank.format() if rank is not None else "—"


def csv_fields(table: Optional[TableRanks], row: "Row") -> Dict[str, Any]:
    """``rank_<metric>``, ``rank_<metric>_lo``, ``rank_<metric>_hi`` and ``tied_best_<metric>`` (None: unranked)."""
    fields: Dict[str, Any] = {}
    for metric in METRICS:
        rank = table.rank(row.label, metric) if table is not None else None
        fields[f"rank_{metric}"] = rank.point if rank is not None else None
        fields[f"rank_{metric}_lo"] = rank.lo if rank is not None else None
        fields[f"rank_{metric}_hi"] = rank.hi if rank is not None else None
        fields[f"tied_best_{metric}"] = table.tied(row.label, metric) if table is not None else None
    return fields


def section_lines(table: Optional[TableRanks]) -> List[str]:
    """The lines under a table: per metric the rows tied with the best (rule stated), then the unranked rows."""
    if table is None:
        return []
    parts = []
    for metric in METRICS:
        if metric in table.metrics:
            ranking = table.metrics[metric]
            names = [table.names[ranking.best] + " (best)"] + [table.names[i] for i in ranking.tied
                                                                if i != ranking.best]
            parts.append(f"{metric}: {', '.join(names)}")
    seeds = ", ".join(map(str, table.seeds))
    lines = [f"Tied with the best (95% paired bootstrap interval of the difference to the best-ranked row includes 0; "
             f"{len(table.labels)} student rows ranked, seed{'s' if len(table.seeds) > 1 else ''} {seeds}) — "
             + "; ".join(parts) + "."]
    if table.left_out:
        lines += ["Not ranked: " + ", ".join(f"{name} ({why})" for name, why in table.left_out) + "."]
    return lines + [""]
