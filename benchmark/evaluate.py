"""Evaluation: per-class accuracy, then overall / many / medium / few and head / middle / tail.

Groups come from TRAIN class counts (strict rule: many > 100, medium 20..100, few < 20; head / middle / tail
by ``datasets.longtail.frequency_groups``, the rule LTKD groups by). Per-class accuracy is always kept so any other grouping can be computed from a run record later.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from datasets.longtail import frequency_groups, shot_groups

__all__ = ["per_class_counts", "summarize", "SHOT_GROUPS", "THIRDS", "GROUPS", "METRICS"]

SHOT_GROUPS = ("many", "medium", "few")  # by TRAIN count: > 100, 20..100, < 20 images
THIRDS = ("head", "middle", "tail")  # by TRAIN frequency rank: C // 3, the rest, C // 3 classes (frequency_groups)
GROUPS = SHOT_GROUPS + THIRDS
METRICS = ("overall",) + GROUPS  # every accuracy a record's ``final`` / ``best`` holds


@torch.inference_mode()
def per_class_counts(model: nn.Module, batches: Iterable[Tuple[Tensor, Tensor]], num_classes: int,
                     amp_dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
    """(correct, total) per class over ``batches``, accumulated on the device (one sync at the end)."""
    correct = total = None
    for x, y in batches:
        if correct is None:
            correct = torch.zeros(num_classes, dtype=torch.long, device=y.device)
            total = torch.zeros(num_classes, dtype=torch.long, device=y.device)
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            pred = model(x).argmax(dim=1)
        total += torch.bincount(y, minlength=num_classes)
        correct += torch.bincount(y[pred == y], minlength=num_classes)
    if correct is None:
        raise ValueError("evaluation got no batches (empty test split?)")
    return correct, total


def summarize(per_class_acc: Sequence[float], class_counts: Sequence[int],
              per_class_total: Optional[Sequence[int]] = None) -> Dict[str, object]:
    """Overall and group accuracies (in %) from per-class accuracy (in %) and train counts.

    ``overall`` weighs classes by their test size (``per_class_total``; equal weights if absent).
    A group with no class is reported as ``None`` and listed in ``empty_groups``.
    """
    acc = [float(a) for a in per_class_acc]
    if per_class_total is None:
        per_class_total = [1] * len(acc)
    n_test = sum(per_class_total)
    overall = sum(a * t for a, t in zip(acc, per_class_total)) / max(n_test, 1)
    groups = {**shot_groups(class_counts), **frequency_groups(class_counts)}
    out: Dict[str, object] = {"overall": overall}
    sizes: Dict[str, int] = {}
    empty: List[str] = []
    for g in GROUPS:
        members = list(groups[g])
        sizes[g] = len(members)
        if members:
            out[g] = sum(acc[c] for c in members) / len(members)
        else:
            out[g] = None
            empty.append(g)
    out["group_sizes"] = sizes
    out["empty_groups"] = empty
    return out
