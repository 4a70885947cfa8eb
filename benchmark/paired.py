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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

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
    """The tail third of the classes by TRAIN count, exactly as ``benchmark.evaluate`` reports ``tail``."""
    from datasets.longtail import frequency_thirds

    return list(frequency_thirds(list(class_counts))["tail"])


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
    classes, class_of, counts = np.unique(target, return_inverse=True, return_counts=True)
    # D[s, i] = 1 where only A is right on image i (seed s), -1 where only B is, else 0
    diff = np.stack([(np.asarray(pred_a[s]) == target).astype(np.int64)
                     - (np.asarray(pred_b[s]) == target).astype(np.int64) for s in seeds])
    # Only the multiset of per-image patterns (D[0, i], ..., D[S-1, i]) within each class matters, so
    # resampling n_c images of class c with replacement is exactly a multinomial draw over the patterns:
    # O(resamples x classes x patterns). Where that exceeds O(resamples x images) (many seeds, hence up
    # to 3^seeds patterns), the images themselves are drawn instead; both are the same bootstrap.
    codes = ((diff + 1) * (3 ** np.arange(len(seeds)))[:, None]).sum(axis=0)
    patterns, pattern_of = np.unique(codes, return_inverse=True)
    values = np.stack([(patterns // 3 ** k) % 3 - 1 for k in range(len(seeds))], axis=1).astype(np.float64)
    n_classes, n_patterns = len(classes), len(patterns)
    per_class = np.bincount(class_of * n_patterns + pattern_of, minlength=n_classes * n_patterns)
    per_class = per_class.reshape(n_classes, n_patterns)
    tail_pos = np.flatnonzero(np.isin(classes, np.asarray(list(tail), dtype=np.int64)))

    def summarize(per_class_sums: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(overall, tail) in points from per-class sums of D (last axis: classes)."""
        overall = per_class_sums.sum(axis=-1) * (100.0 / n)
        tail_acc = (per_class_sums[..., tail_pos] / counts[tail_pos]).mean(axis=-1) * 100.0 if len(tail_pos) \
            else None
        return overall, tail_acc

    point_overall, point_tail = summarize((per_class @ values).T)  # (seeds,) each
    rng = np.random.default_rng(seed)
    pvals = per_class / counts[:, None]
    n_seeds = len(seeds)
    boot_overall = np.empty(n_resamples)
    boot_tail = np.empty(n_resamples)
    cheaper = n_classes * n_patterns * _PATTERN_COST <= n * (1 + len(seeds) / 3)  # measured cost ratio
    by_pattern = strategy == "patterns" or (strategy == "auto" and cheaper)
    if by_pattern:
        chunk = max(1, _CHUNK_ELEMENTS // (n_classes * n_patterns))
    else:
        order = np.argsort(class_of, kind="stable")
        sorted_diff = diff[:, order]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos_start, pos_last = np.repeat(starts, counts), np.repeat(starts + counts - 1, counts)
        pos_count = np.repeat(counts, counts).astype(np.float64)
        chunk = max(1, _CHUNK_ELEMENTS // n)
    for lo in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - lo)
        if by_pattern:
            drawn = rng.multinomial(counts, pvals, size=(m, n_classes))  # (m, classes, patterns)
            sums = drawn @ values  # (m, classes, seeds): per-class sum of D for each seed
        else:  # each sorted position redrawn within its own class (stratified)
            idx = np.minimum(pos_start + (rng.random((m, n)) * pos_count).astype(np.int64), pos_last)
            sums = np.stack([np.add.reduceat(sorted_diff[k][idx], starts, axis=1) for k in range(len(seeds))],
                            axis=-1).astype(np.float64)
        if n_seeds > 1:  # resample the seeds too (the same draw for A and B, runs paired by seed)
            picks = rng.integers(0, n_seeds, size=(m, n_seeds))
            weights = np.stack([(picks == k).sum(axis=1) for k in range(n_seeds)], axis=1) / n_seeds
            sums = np.einsum("mcs,ms->mc", sums, weights)
        else:
            sums = sums[..., 0]
        o, t = summarize(sums)
        boot_overall[lo:lo + m] = o
        if t is not None:
            boot_tail[lo:lo + m] = t
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def interval(point: np.ndarray, boot: np.ndarray) -> Interval:
        lo_q, hi_q = np.percentile(boot, q)
        return Interval(float(point.mean()), float(lo_q), float(hi_q))

    return PairedResult(overall=interval(point_overall, boot_overall),
                        tail=interval(point_tail, boot_tail) if point_tail is not None else None,
                        seeds=seeds, n_images=n, n_resamples=n_resamples)


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


def compare_records(recs_a: Sequence[Mapping[str, Any]], recs_b: Sequence[Mapping[str, Any]], out: Path,
                    cache: Optional[Dict[str, Any]] = None, n_resamples: int = N_RESAMPLES,
                    seed: int = 0) -> Optional[PairedResult]:
    """Paired A - B over the seeds both record sets share; ``None`` where predictions are missing or the
    two sides were not evaluated on one test set (other targets, other training class counts)."""
    cache = {} if cache is None else cache

    def preds(rec: Mapping[str, Any]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        rid = str(rec.get("run_id"))
        if rid not in cache:
            cache[rid] = load_predictions(out, rid)
        return cache[rid]

    by_seed_a = {r.get("seed"): r for r in recs_a}
    by_seed_b = {r.get("seed"): r for r in recs_b}
    common = sorted(set(by_seed_a) & set(by_seed_b), key=repr)
    if not common:
        return None
    key = (_file_key(out, [by_seed_a[s] for s in common]), _file_key(out, [by_seed_b[s] for s in common]),
           n_resamples, seed)
    if key[0] is not None and key[1] is not None and key in _RESULTS:
        return _RESULTS[key]  # a long-lived runner regenerates after every run: unchanged pairs are reused
    counts = by_seed_b[common[0]].get("class_counts")
    pa: Dict[Any, np.ndarray] = {}
    pb: Dict[Any, np.ndarray] = {}
    target: Optional[np.ndarray] = None
    for s in common:
        a, b = preds(by_seed_a[s]), preds(by_seed_b[s])
        if a is None or b is None:
            return None
        if by_seed_a[s].get("class_counts") != counts or by_seed_b[s].get("class_counts") != counts:
            return None
        for _, t in (a, b):
            if target is None:
                target = t
            elif t.shape != target.shape or not np.array_equal(t, target):
                return None
        pa[s], pb[s] = a[0], b[0]
    result = paired_bootstrap(pa, pb, target, tail_classes(counts), n_resamples=n_resamples, seed=seed)
    if len(_RESULTS) > 4096:
        _RESULTS.clear()
    _RESULTS[key] = result
    return result


_RESULTS: Dict[tuple, PairedResult] = {}


def _file_key(out: Path, recs: Sequence[Mapping[str, Any]]) -> Optional[tuple]:
    """(run id, seed, size, mtime) of each run's predictions file: a result stays valid while these do."""
    key = []
    for rec in recs:
        try:
            st = predictions_path(out, str(rec.get("run_id"))).stat()
        except OSError:
            return None
        key.append((str(Path(out).resolve()), rec.get("run_id"), rec.get("seed"), st.st_size, st.st_mtime_ns))
    return tuple(key)
