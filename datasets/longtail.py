"""Long-tail helpers: the exponential class profile, seeded per-class subsampling (ours and LDAM-DRW's),
shot groups, and the one head / middle / tail rule by training frequency (``frequency_groups``)."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["check_imbalance_factor", "exponential_profile", "subsample_per_class", "ldam_subsample", "shot_groups",
           "frequency_rank", "frequency_group_sizes", "frequency_groups", "frequency_thirds", "class_counts_of",
           "describe_profile"]


def check_imbalance_factor(imbalance_factor: float) -> float:
    """Validate an imbalance factor (n_max / n_min): a finite number >= 1, 1 meaning balanced."""
    ok = isinstance(imbalance_factor, (int, float, np.integer, np.floating)) and not isinstance(imbalance_factor, bool)
    if not ok or not math.isfinite(float(imbalance_factor)) or float(imbalance_factor) < 1:
        raise ValueError(f"imbalance_factor must be >= 1 (1 = balanced), got {imbalance_factor!r}")
    return float(imbalance_factor)


def exponential_profile(n_max: int, num_classes: int, imbalance_factor: float) -> List[int]:
    """Per-class counts n_c = floor(n_max * (1/IF)^(c/(C-1))), class 0 the head (Cui et al. 2019 / LDAM)."""
    imbalance_factor = check_imbalance_factor(imbalance_factor)
    if num_classes < 1 or n_max < 1:
        raise ValueError(f"need n_max >= 1 and num_classes >= 1, got n_max={n_max}, num_classes={num_classes}")
    if num_classes == 1:
        return [int(n_max)]
    # exactly the reference implementation's arithmetic, so the published totals are reproduced bit for bit
    ratio = 1.0 / imbalance_factor
    return [int(n_max * ratio ** (c / (num_classes - 1.0))) for c in range(num_classes)]


def subsample_per_class(targets: Sequence[int], counts: Sequence[int], seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset holding ``counts[c]`` samples of every class ``c``.

    Each class draws from its own generator seeded by ``(seed, c)``, taking the first ``n_c`` of a
    random permutation: the subsets are nested across imbalance factors for one seed, and a
    class's subset does not depend on the other classes' counts.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    targets = np.asarray(targets)
    picked = []
    for c, n in enumerate(counts):
        members = np.flatnonzero(targets == c)
        if n > len(members):
            raise ValueError(f"class {c} has {len(members)} samples, cannot draw {n}")
        if n < 0:
            raise ValueError(f"class {c}: count must be >= 0, got {n}")
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), c]))
        picked.append(rng.permutation(members)[:n])
    if not picked:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(picked))


def ldam_subsample(targets: Sequence[int], counts: Sequence[int], seed: int) -> np.ndarray:
    """Sorted indices of LDAM-DRW's long-tailed subset (``IMBALANCECIFAR10/100(rand_number=seed)``).

    One ``np.random.RandomState(seed)`` serves every class in ascending order: the class's indices
    (file order) are shuffled in place and the first ``counts[c]`` kept. Every class is shuffled,
    whatever its count, so a class's subset depends on the seed and the class sizes only, and
    subsets are nested across imbalance factors. LDAM returns them grouped by class; we keep file order.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be an integer in [0, 2**32) (numpy's legacy seed range), got {seed!r}")
    targets = np.asarray(targets)
    rs = np.random.RandomState(int(seed))
    picked = []
    for c, n in enumerate(counts):
        members = np.flatnonzero(targets == c)
        if n > len(members):
            raise ValueError(f"class {c} has {len(members)} samples, cannot draw {n}")
        if n < 0:
            raise ValueError(f"class {c}: count must be >= 0, got {n}")
        rs.shuffle(members)
        picked.append(members[:int(n)])
    if not picked:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(picked))


def shot_groups(class_counts: Sequence[int], many: int = 100, few: int = 20) -> Dict[str, List[int]]:
    """Split class ids by TRAIN count, strict rule: many > ``many``, few < ``few``, medium in between."""
    groups: Dict[str, List[int]] = {"many": [], "medium": [], "few": []}
    for c, n in enumerate(class_counts):
        groups["many" if n > many else "few" if n < few else "medium"].append(c)
    return groups


def frequency_rank(class_counts: Sequence[int]) -> List[int]:
    """Class ids from the most to the least frequent in training; equal counts keep ascending class id, so the
    order (and every group cut from it) is deterministic."""
    return sorted(range(len(class_counts)), key=lambda c: (-class_counts[c], c))


def frequency_group_sizes(num_classes: int) -> Tuple[int, int, int]:
    """(head, middle, tail) sizes: head and tail get ``num_classes // 3`` classes each, the middle the rest
    (33 / 34 / 33 for 100 classes, as LTKD's head / medium / tail; 3 / 4 / 3 for 10)."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    side = num_classes // 3
    return side, num_classes - 2 * side, side


def frequency_groups(class_counts: Sequence[int]) -> Dict[str, List[int]]:
    """THE rule grouping classes by training count, used by LTKD and by the head / middle / tail columns:
    class ids (each list sorted) of the ``frequency_group_sizes`` most frequent (head), next (middle) and
    least frequent (tail) classes in ``frequency_rank`` order (ties: the lower class id is the more frequent)."""
    order = frequency_rank(class_counts)
    n_head, n_mid, _ = frequency_group_sizes(len(order))
    return {"head": sorted(order[:n_head]), "middle": sorted(order[n_head:n_head + n_mid]),
            "tail": sorted(order[n_head + n_mid:])}


#: The name the leaderboard's columns grew up with; the very same function.
frequency_thirds = frequency_groups


def class_counts_of(targets: Sequence[int], num_classes: int) -> List[int]:
    """Per-class sample counts of ``targets`` (length ``num_classes``)."""
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).tolist()


def describe_profile(class_counts: Sequence[int], imbalance_factor: Optional[float] = None) -> str:
    """One-line summary of a class profile: total, max/min and shot-group sizes (for verify notes)."""
    g = shot_groups(class_counts)
    head = f"IF {imbalance_factor:g}: " if imbalance_factor is not None else ""
    return (f"{head}{sum(class_counts):,} images, max {max(class_counts)}, min {min(class_counts)}, "
            f"many/medium/few = {len(g['many'])}/{len(g['medium'])}/{len(g['few'])} classes")
