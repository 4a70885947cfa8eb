"""Paired comparisons of two methods on one test set: accuracy differences with bootstrap intervals.

Both methods are scored on the same resampled test images (and, with several seeds, the same resampled
seeds, runs paired by seed), so the interval reflects how much the *difference* depends on which test
images were drawn, not the much larger spread of each accuracy on its own. Resampling is stratified
by test class: every resample keeps each class's test size, as the test split was built with, so the
per-class (and tail) accuracies are defined in every resample.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .record import RunRecord
from .reference import results_dir_of

__all__ = ["Interval", "PairedResult", "paired_bootstrap", "tail_classes", "load_predictions",
           "predictions_path", "compare_records", "N_RESAMPLES", "LEVEL"]

N_RESAMPLES = 2000
LEVEL = 0.95
_PATTERN_COST = 6  # a multinomial cell costs about this many image draws (numpy 2, one CPU thread)
_CHUNK_ELEMENTS = 2_000_000  # resamples x classes x patterns drawn at once (~16 MB of int64 counts)


@dataclass(frozen=True)
class Interval:
    """A difference in accuracy points (A - B) and its bootstrap interval ``[lo, hi]``."""

    diff: float
    lo: float
    hi: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (the difference is not resampling noise)."""
        return self.lo > 0 or self.hi < 0

    def format(self, mark: str = "*") -> str:
        """``+1.23 [+0.41, +2.05]``, followed by ``mark`` when the interval excludes 0."""
        text = f"{self.diff:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}]"
        return f"{text}{mark}" if self.excludes_zero and mark else text


@dataclass(frozen=True)
class PairedResult:
    """Differences A - B in overall and tail accuracy (points), over ``seeds`` and ``n_images`` images."""

    overall: Interval
    tail: Optional[Interval]
    seeds: Tuple[Any, ...]
    n_images: int
    n_resamples: int


def tail_classes(class_counts: Sequence[int]) -> List[int]:
    """The tail group of the classes by TRAIN count (``frequency_groups``), exactly as ``benchmark.evaluate``
    reports ``tail``."""
    from datasets.longtail import frequency_groups

    return list(frequency_groups(list(class_counts))["tail"])


def paired_bootstrap(pred_a: Mapping[Any, np.ndarray], pred_b: Mapping[Any, np.ndarray], target: np.ndarray,
                     tail: Sequence[int], n_resamples: int = N_RESAMPLES, seed: int = 0,
                     level: float = LEVEL, strategy: str = "auto") -> PairedResult:
    """Accuracy of A minus B (overall and tail, in points) with a ``level`` paired bootstrap interval.

    ``pred_a`` / ``pred_b`` map a training seed to argmax predictions on the test set (order of ``target``);
    runs are paired by seed (seeds present on both sides). Each resample draws test images with
    replacement within each class, and (with several seeds) the seeds with replacement, the same draw
    for A and B. The point estimate is the mean over seeds of the full-test-set difference.
    ``strategy`` ("auto", "patterns", "images") picks how resamples are drawn; all give this bootstrap.
    """
    seeds, target = _checked_inputs(pred_a, pred_b, target, strategy)
    strata = _Strata.of(pred_a, pred_b, target, seeds, tail)
    point_overall, point_tail = strata.summarize((strata.per_class @ strata.values).T)  # (seeds,) each
    rng = np.random.default_rng(seed)
    boot_overall, boot_tail = _bootstrap(strata, _sampler(strata, strategy), rng, n_resamples)
    return PairedResult(overall=_interval(point_overall, boot_overall, level),
                        tail=_interval(point_tail, boot_tail, level) if point_tail is not None else None,
                        seeds=seeds, n_images=strata.n, n_resamples=n_resamples)


def _checked_inputs(pred_a: Mapping[Any, np.ndarray], pred_b: Mapping[Any, np.ndarray], target: np.ndarray,
                    strategy: str) -> Tuple[Tuple[Any, ...], np.ndarray]:
    """The seeds both sides have (sorted) and ``target`` as int64; a ValueError names any input that cannot pair."""
    if strategy not in ("auto", "patterns", "images"):
        raise ValueError(f"strategy must be 'auto', 'patterns' or 'images', not {strategy!r}")
    seeds = tuple(sorted(set(pred_a) & set(pred_b), key=repr))
    if not seeds:
        raise ValueError(f"no common seed to pair: A has seeds {sorted(pred_a, key=repr)}, B has "
                         f"{sorted(pred_b, key=repr)}; train both methods with at least one common seed")
    target = np.asarray(target).astype(np.int64, copy=False)
    n = target.shape[0]
    if n == 0:
        raise ValueError("empty test set: nothing to compare")
    for name, preds in (("A", pred_a), ("B", pred_b)):
        for s in seeds:
            if np.shape(preds[s]) != (n,):
                raise ValueError(f"predictions of {name} (seed {s}) have shape {np.shape(preds[s])}, the test "
                                 f"targets ({n},): they are not predictions on the same test set")
    return seeds, target


@dataclass(frozen=True)
class _Strata:
    """The test set as a stratified paired bootstrap sees it.

    ``diff[s, i]`` is 1 where only A is right on image i (seed s), -1 where only B is, else 0. Only the
    multiset of per-image patterns (D[0, i], ..., D[S-1, i]) within each class matters, so ``per_class``
    counts the images of each pattern (columns of ``values``) in each class.
    """

    diff: np.ndarray  # (seeds, images)
    class_of: np.ndarray  # (images,) position of each image's class in ``counts``
    counts: np.ndarray  # (classes,) test images per class
    per_class: np.ndarray  # (classes, patterns) images of each pattern in each class
    values: np.ndarray  # (patterns, seeds) D of each pattern, float64
    tail_pos: np.ndarray  # positions of the tail classes in ``counts``

    @classmethod
    def of(cls, pred_a: Mapping[Any, np.ndarray], pred_b: Mapping[Any, np.ndarray], target: np.ndarray,
           seeds: Sequence[Any], tail: Sequence[int]) -> "_Strata":
        """The strata of A's and B's predictions for ``seeds`` (checked by :func:`_checked_inputs`)."""
        classes, class_of, counts = np.unique(target, return_inverse=True, return_counts=True)
        diff = np.stack([(np.asarray(pred_a[s]) == target).astype(np.int64)
                         - (np.asarray(pred_b[s]) == target).astype(np.int64) for s in seeds])
        codes = ((diff + 1) * (3 ** np.arange(len(seeds)))[:, None]).sum(axis=0)
        patterns, pattern_of = np.unique(codes, return_inverse=True)
        values = np.stack([(patterns // 3 ** k) % 3 - 1 for k in range(len(seeds))], axis=1).astype(np.float64)
        n_classes, n_patterns = len(classes), len(patterns)
        per_class = np.bincount(class_of * n_patterns + pattern_of, minlength=n_classes * n_patterns)
        tail_pos = np.flatnonzero(np.isin(classes, np.asarray(list(tail), dtype=np.int64)))
        return cls(diff, class_of, counts, per_class.reshape(n_classes, n_patterns), values, tail_pos)

    @property
    def n(self) -> int:
        """Test images."""
        return int(self.diff.shape[1])

    @property
    def n_seeds(self) -> int:
        """Seeds both sides share."""
        return int(self.diff.shape[0])

    def summarize(self, per_class_sums: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(overall, tail) in points from per-class sums of D (last axis: classes); tail None without tail classes."""
        overall = per_class_sums.sum(axis=-1) * (100.0 / self.n)
        if not len(self.tail_pos):
            return overall, None
        return overall, (per_class_sums[..., self.tail_pos] / self.counts[self.tail_pos]).mean(axis=-1) * 100.0


class _PatternSampler:
    """Each class's n_c images redrawn as one multinomial over its patterns: O(resamples x classes x patterns)."""

    def __init__(self, strata: _Strata) -> None:
        self.strata = strata
        self.pvals = strata.per_class / strata.counts[:, None]
        self.chunk = max(1, _CHUNK_ELEMENTS // strata.per_class.size)

    def __call__(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """(m, classes, seeds): per-class sums of D in ``m`` resamples."""
        drawn = rng.multinomial(self.strata.counts, self.pvals, size=(m, len(self.strata.counts)))
        return drawn @ self.strata.values


class StratifiedDraw:
    """Test images redrawn with replacement within their class, as positions into the images sorted by class
    (stable); shared by the paired bootstrap and the joint one of ``benchmark.ranks``."""

    def __init__(self, counts: np.ndarray) -> None:
        counts = np.asarray(counts)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.pos_start, self.pos_last = np.repeat(self.starts, counts), np.repeat(self.starts + counts - 1, counts)
        self.pos_count = np.repeat(counts, counts).astype(np.float64)
        self.chunk = max(1, _CHUNK_ELEMENTS // int(counts.sum()))  # resamples drawn at once

    def __call__(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """(m, images): ``m`` resamples of positions, each drawn uniformly within its own class's block."""
        n = self.pos_count.shape[0]
        return np.minimum(self.pos_start + (rng.random((m, n)) * self.pos_count).astype(np.int64), self.pos_last)


class _ImageSampler:
    """Each image position redrawn within its own class: O(resamples x images), cheaper with many patterns."""

    def __init__(self, strata: _Strata) -> None:
        self.sorted_diff = strata.diff[:, np.argsort(strata.class_of, kind="stable")]
        self.draw = StratifiedDraw(strata.counts)
        self.starts, self.chunk = self.draw.starts, self.draw.chunk

    def __call__(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """(m, classes, seeds): per-class sums of D in ``m`` resamples."""
        n_seeds = self.sorted_diff.shape[0]
        idx = self.draw(rng, m)
        return np.stack([np.add.reduceat(self.sorted_diff[k][idx], self.starts, axis=1) for k in range(n_seeds)],
                        axis=-1).astype(np.float64)


def _sampler(strata: _Strata, strategy: str) -> Union[_PatternSampler, _ImageSampler]:
    """The sampler ``strategy`` asks for; "auto": patterns unless the images are cheaper to draw (many seeds,
    hence up to 3^seeds patterns). Both give the same bootstrap."""
    cheaper = strata.per_class.size * _PATTERN_COST <= strata.n * (1 + strata.n_seeds / 3)  # measured cost ratio
    by_pattern = strategy == "patterns" or (strategy == "auto" and cheaper)
    return _PatternSampler(strata) if by_pattern else _ImageSampler(strata)


def _mix_seeds(rng: np.random.Generator, sums: np.ndarray) -> np.ndarray:
    """(m, classes): with several seeds, the seeds resampled too (the same draw for A and B, runs paired by seed)."""
    m, _, n_seeds = sums.shape
    if n_seeds == 1:
        return sums[..., 0]
    return np.einsum("mcs,ms->mc", sums, seed_weights(rng, m, n_seeds))


def seed_weights(rng: np.random.Generator, m: int, n_seeds: int) -> np.ndarray:
    """(m, seeds): the seeds drawn with replacement, as each seed's share of the draw (rows sum to 1)."""
    picks = rng.integers(0, n_seeds, size=(m, n_seeds))
    return np.stack([(picks == k).sum(axis=1) for k in range(n_seeds)], axis=1) / n_seeds


def _bootstrap(strata: _Strata, sampler: Union[_PatternSampler, _ImageSampler], rng: np.random.Generator,
               n_resamples: int) -> Tuple[np.ndarray, np.ndarray]:
    """Overall and tail differences of ``n_resamples`` resamples, drawn ``sampler.chunk`` at a time."""
    boot_overall = np.empty(n_resamples)
    boot_tail = np.empty(n_resamples)  # left unset without tail classes (then never read)
    for lo in range(0, n_resamples, sampler.chunk):
        m = min(sampler.chunk, n_resamples - lo)
        overall, tail = strata.summarize(_mix_seeds(rng, sampler(rng, m)))
        boot_overall[lo:lo + m] = overall
        if tail is not None:
            boot_tail[lo:lo + m] = tail
    return boot_overall, boot_tail


def _interval(point: np.ndarray, boot: np.ndarray, level: float) -> Interval:
    """The mean point estimate over seeds and the percentile interval of ``boot`` at ``level``."""
    lo_q, hi_q = np.percentile(boot, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return Interval(float(point.mean()), float(lo_q), float(hi_q))


def predictions_path(out: Path, run_id: str) -> Path:
    """Where a run's test predictions live: ``<out>/runs/<run_id>.predictions.npz``."""
    return Path(out) / "runs" / f"{run_id}.predictions.npz"


def load_predictions(out: Path, run_id: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(pred, target)`` of a run, or ``None`` when the run stored none (older records) or no ``target``."""
    path = predictions_path(out, run_id)
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            if "target" not in data.files:  # argmax alone cannot be scored: treated as missing ("—")
                return None
            pred, target = np.asarray(data["pred"]), np.asarray(data["target"])
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a predictions file with int arrays 'pred' and 'target' ({err}); delete it "
                         "and retrain the run") from err
    if pred.shape != target.shape or pred.ndim != 1:
        raise ValueError(f"{path}: 'pred' {pred.shape} and 'target' {target.shape} must be 1-D of one length; "
                         "delete it and retrain the run")
    return pred, target


def compare_records(recs_a: Sequence[RunRecord], recs_b: Sequence[RunRecord], out: Path,
                    cache: Optional[Dict[str, Any]] = None, n_resamples: int = N_RESAMPLES,
                    seed: int = 0) -> Optional[PairedResult]:
    """Paired A - B over the seeds both record sets share; ``None`` where predictions are missing or the
    two sides were not evaluated on one test set (other targets, other training class counts)."""
    cache = {} if cache is None else cache
    by_seed_a = {r.seed: r for r in recs_a}
    by_seed_b = {r.seed: r for r in recs_b}
    common = sorted(set(by_seed_a) & set(by_seed_b), key=repr)
    if not common:
        return None
    pairs = {s: (by_seed_a[s], by_seed_b[s]) for s in common}
    key = (_file_key(out, [a for a, _ in pairs.values()]), _file_key(out, [b for _, b in pairs.values()]),
           n_resamples, seed)
    if key[0] is not None and key[1] is not None and key in _RESULTS:
        return _RESULTS[key]  # a long-lived runner regenerates after every run: unchanged pairs are reused
    counts = by_seed_b[common[0]].class_counts
    inputs = _paired_inputs(pairs, counts, lambda rec: _cached_predictions(out, cache, rec))
    if inputs is None:
        return None
    result = paired_bootstrap(*inputs, tail_classes(counts), n_resamples=n_resamples, seed=seed)
    if len(_RESULTS) > 4096:
        _RESULTS.clear()
    _RESULTS[key] = result
    return result


_RESULTS: Dict[tuple, PairedResult] = {}


def _cached_predictions(out: Path, cache: Dict[str, Any], rec: RunRecord) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """:func:`load_predictions` of a record's run, read once per ``cache`` (a report compares a run many times)."""
    rid = rec.run_id
    if rid not in cache:
        cache[rid] = load_predictions(results_dir_of(rec, out), rid)  # a reference row: its own folder
    return cache[rid]


def _paired_inputs(pairs: Mapping[Any, Tuple[RunRecord, RunRecord]], counts: Any,
                   preds: Callable[[RunRecord], Optional[Tuple[np.ndarray, np.ndarray]]]
                   ) -> Optional[Tuple[Dict[Any, np.ndarray], Dict[Any, np.ndarray], np.ndarray]]:
    """(A's predictions by seed, B's, the shared target) of the seed -> (record A, record B) ``pairs``; None
    where a side stored no predictions, or the runs differ in training class counts or test targets."""
    pa: Dict[Any, np.ndarray] = {}
    pb: Dict[Any, np.ndarray] = {}
    target: Optional[np.ndarray] = None
    for s, (rec_a, rec_b) in pairs.items():
        a, b = preds(rec_a), preds(rec_b)
        if a is None or b is None:
            return None
        if rec_a.class_counts != counts or rec_b.class_counts != counts:
            return None
        target = a[1] if target is None else target
        if not (_same_target(a[1], target) and _same_target(b[1], target)):
            return None
        pa[s], pb[s] = a[0], b[0]
    return pa, pb, target


def _same_target(t: np.ndarray, target: np.ndarray) -> bool:
    """Two runs' test targets are one test set (same length, same labels in the same order)."""
    return t.shape == target.shape and np.array_equal(t, target)


def _file_key(out: Path, recs: Sequence[RunRecord]) -> Optional[tuple]:
    """(run id, seed, size, mtime) of each run's predictions file: a result stays valid while these do."""
    key = []
    for rec in recs:
        try:
            st = predictions_path(results_dir_of(rec, out), rec.run_id).stat()
        except OSError:
            return None
        key.append((str(results_dir_of(rec, out).resolve()), rec.run_id, rec.seed, st.st_size, st.st_mtime_ns))
    return tuple(key)
