"""One training forward of a student with its method: the module DDP and ``torch.compile`` wrap.

The frozen teacher is held outside the module tree (no gradients, no DDP broadcast, not checkpointed). In
a cell the harness computes the teacher's outputs once per batch and passes them in, so every student of
the cell sees the same teacher outputs without a second teacher forward.

What is computed follows the method's ``needs`` (``methods.base.NEEDS``): logits and pooled features by
default, feature maps for feature methods (:func:`benchmark.models.forward_outputs`, one pass per network),
and the batch's dataset ``index`` for methods such as CRD (iterate ``train_batches(..., with_index=True)``).
"""
from typing import AbstractSet, Dict, FrozenSet, Iterable, Optional, Tuple

import torch
from torch import Tensor, nn

from methods import Outputs
from methods.base import DEFAULT_NEEDS, FIELD_NEEDS, NEEDS, check_loss_terms

from .models import forward_outputs

__all__ = ["DistillStep", "frozen_outputs", "needs_of"]



def needs_of(methods: Iterable[nn.Module]) -> FrozenSet[str]:
    """The union of the methods' ``needs`` (what one shared teacher forward must compute for a cell)."""
    out: FrozenSet[str] = frozenset()
    for method in methods:
        needs = frozenset(getattr(method, "needs", DEFAULT_NEEDS))
        unknown = needs - NEEDS
        if unknown:
            raise ValueError(f"method '{getattr(method, 'name', type(method).__name__)}' declares unknown needs "
                             f"{sorted(unknown)}; allowed: {sorted(NEEDS)}")
        out |= needs
    return out


def frozen_outputs(model: nn.Module, x: Tensor, needs: AbstractSet[str] = DEFAULT_NEEDS) -> Outputs:
    """A frozen network's :class:`Outputs` (what ``needs`` asks for) computed under ``inference_mode`` and
    returned as plain float32 tensors, which autograd may save for the student's loss."""
    with torch.inference_mode():
        out = forward_outputs(model, x, needs)

    def plain(ts):
        return None if ts is None else [t.float().clone() for t in ts]

    return Outputs(out.logits.float().clone(), out.features.float().clone(),
                   feature_maps=plain(out.feature_maps), preact_maps=plain(out.preact_maps))


class DistillStep(nn.Module):
    """Student + method (+ frozen teacher held outside the module tree): one forward -> loss terms.

    Wrapping both student and method lets DDP synchronise the method's own modules (projectors) too.
    """

    def __init__(self, student: nn.Module, method: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.student = student
        self.method = method
        self._teacher = [teacher]  # not a submodule: no grads, no DDP broadcast, not in the checkpoint
        self.needs = needs_of([method])
        self._map_needs = sorted(FIELD_NEEDS & self.needs)  # feature_maps, then preact_maps

    @property
    def needs_index(self) -> bool:
        """Whether the method needs the batch's dataset indices (``forward(..., index=...)``)."""
        return "index" in self.needs

    @property
    def teacher(self) -> Optional[nn.Module]:
        return self._teacher[0]

    def teacher_outputs(self, x: Tensor) -> Outputs:
        """The frozen teacher's outputs for what the method needs (also ``Method.setup``'s teacher callable)."""
        return frozen_outputs(self.teacher, x, self.needs)

    def forward(self, x: Tensor, y: Tensor, epoch: int, t_out: Optional[Outputs] = None,
                index: Optional[Tensor] = None) -> Tuple[Dict[str, Tensor], Tensor]:
        """Loss terms (checked: a dict of 0-dim tensors, :func:`~methods.base.check_loss_terms`) and the student's
        logits; ``t_out``: the cell's shared teacher outputs (computed here when None); ``index``: the batch's
        dataset row indices, required by methods that need "index"."""
        s_out = forward_outputs(self.student, x, self.needs)
        if t_out is None and self.teacher is not None:
            t_out = self.teacher_outputs(x)
        elif t_out is not None:
            for kind in self._map_needs:
                if getattr(t_out, kind) is None:
                    raise ValueError(f"method '{self.method.name}' needs the teacher's {kind}, but the shared teacher "
                                     f"outputs lack them: compute them with frozen_outputs(teacher, x, needs_of(methods))")
        if self.needs_index:
            if index is None:
                raise ValueError(f"method '{self.method.name}' needs the batch's dataset indices: iterate "
                                 f"train_batches(..., with_index=True) and pass index= to DistillStep")
            terms = self.method(s_out, t_out, y, epoch, index=index)
        else:
            terms = self.method(s_out, t_out, y, epoch)
        return check_loss_terms(terms, self.method.name), s_out.logits
