"""``ce``: the student trained alone with cross-entropy, the no-teacher baseline."""
from __future__ import annotations

import torch.nn.functional as F

from . import register_method
from .base import Method


@register_method("ce")
class CE(Method):
    """CE(z_s, y): what the student reaches without a teacher."""

    hparams = {}
    requires_teacher = False
    summary = "Cross-entropy only (student without a teacher)"

    def forward(self, student, teacher, target, epoch):
        return {"ce": F.cross_entropy(student.logits.float(), target)}
