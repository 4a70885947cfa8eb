"""``crd``: contrastive representation distillation (Tian, Krishnan & Isola, ICLR 2020).

Student and teacher pooled features are embedded (linear layer, L2 norm) into a common space; each
network's embedding of a sample is contrasted with the *other* network's memory bank: the bank entry of
the same sample is the positive, K entries of other samples are negatives. The critic is
exp(<v, m> / T) / Z with Z fixed from the first batch (mean score x N), and the loss is the NCE estimate
of the paper's eq. 18 with noise distribution 1/N, for both directions (student anchor against the
teacher bank and vice versa). Each step writes the batch's embeddings into the banks at its dataset rows
(momentum update, then L2 normalisation). The embeddings are trained with the student; the banks are
buffers, checkpointed with the method.

Defaults are mdistiller's CIFAR-100 configuration: CE weight 1, CRD weight 0.8, embedding width 128,
K = 16384 negatives, T = 0.07, bank momentum 0.5, mode "exact": negatives are drawn from the rows of
*other classes* than the anchor's (as mdistiller's and CRD's sampling datasets do), the positive is the
anchor's own row; mode "relax" takes a random row of the anchor's class as the positive. Needs, from the
harness, the batch's dataset indices (``needs`` has "index") and ``MethodContext.train_targets``.
Where the references differ from us: negatives are drawn with replacement (the reference draws without
replacement when a class's complement has at least K rows); the negatives are sampled inside the method
from the global RNG (the reference samples them in the dataset's workers). Under DDP, DistributedDataParallel
broadcasts rank 0's buffers at every forward, so only rank 0's bank updates persist.
The bank scores cost B x (K + 1) x feat_dim multiply-adds per step in each direction, or N x B x feat_dim when
the bank has fewer rows than B x (K + 1) (then one matrix product replaces the gather of bank rows).
"""
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import register_method
from .base import Method, MethodContext, as_target

MODES = ("exact", "relax")


class Embed(nn.Module):
    """Linear projection of pooled features to the contrastive space, L2-normalised."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def bank_dots(memory: Tensor, v: Tensor, rows: Tensor) -> Tensor:
    """(B, K + 1): <memory[rows[b, k]], v[b]>. When the bank has fewer rows than B x (K + 1) one (N, D) x (D, B)
    product and a gather are much cheaper than gathering B x (K + 1) bank rows (the same numbers)."""
    if memory.shape[0] <= rows.numel():  # a copy: autograd keeps it, and the bank is updated in place afterwards
        return (memory.clone() @ v.t()).t().gather(1, rows)
    return torch.bmm(memory[rows], v.unsqueeze(2)).squeeze(2)


def nce_loss(scores: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    """NCE loss of (B, K + 1) critic scores whose column 0 is the positive; noise distribution 1/num_data.

    -(sum_b log h(pos_b) + sum_{b,k} log(1 - h(neg_bk))) / B with h(s) = s / (s + K / num_data)."""
    k = scores.shape[1] - 1
    noise = k / float(num_data)
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + eps))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + eps))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


@register_method("crd")
class CRD(Method):
    """ce_weight * CE + feat_weight * (NCE(student vs teacher bank) + NCE(teacher vs student bank))."""

    hparams = {"ce_weight": 1.0, "feat_weight": 0.8, "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07,
               "nce_momentum": 0.5, "mode": "exact"}
    hparam_bounds = {"ce_weight": "[0, inf)", "feat_weight": "[0, inf)", "feat_dim": "[1, inf)",
                     "nce_k": "[1, inf)", "nce_t": "(0, inf)", "nce_momentum": "[0, 1]"}
    needs = frozenset({"logits", "features", "index"})
    summary = "CRD, contrastive representation distillation with a memory bank (Tian et al. 2020)"

    def __init__(self, ctx: MethodContext, **overrides) -> None:
        super().__init__(ctx, **overrides)
        if self.mode not in MODES:
            raise ValueError(f"method 'crd': mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if ctx.train_targets is None or not ctx.teacher_dim:
            raise ValueError("method 'crd' needs MethodContext.train_targets (the class of every training row) "
                             "and teacher_dim; the harness fills them")
        targets = torch.as_tensor(ctx.train_targets, dtype=torch.long, device="cpu").flatten()
        n = int(ctx.num_train) if ctx.num_train is not None else targets.numel()
        if targets.numel() != n:
            raise ValueError(f"method 'crd': train_targets has {targets.numel()} rows but num_train is {n}")
        counts = torch.bincount(targets, minlength=ctx.num_classes)
        if int(counts.max()) == n:
            raise ValueError("method 'crd': every training row has the same class, so there are no negatives")
        self.num_data = n
        self.embed_s = Embed(int(ctx.student_dim), int(self.feat_dim))
        self.embed_t = Embed(int(ctx.teacher_dim), int(self.feat_dim))
        stdv = 1.0 / math.sqrt(self.feat_dim / 3.0)
        self.register_buffer("memory_s", torch.rand(n, self.feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(n, self.feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z", torch.full((2,), -1.0))  # the critics' normalisers, fixed by the first batch
        # rows sorted by class: class c occupies order[start[c] : start[c] + count[c]]
        self.register_buffer("order", torch.argsort(targets, stable=True), persistent=False)
        self.register_buffer("start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("count", counts, persistent=False)

    def contrast_indices(self, index: Tensor, target: Tensor) -> Tensor:
        """(B, K + 1) bank rows: column 0 the positive, then K rows of other classes than ``target``."""
        b, k = index.shape[0], int(self.nce_k)
        start, count = self.start[target].unsqueeze(1), self.count[target].unsqueeze(1)
        # uniform over the N - n_c rows outside the class: skip the class's block of the sorted order
        r = (torch.rand(b, k, device=index.device) * (self.num_data - count)).long()
        r = torch.minimum(r, self.num_data - count - 1)
        negatives = self.order[r + count * (r >= start)]
        if self.mode == "exact":
            positive = index.unsqueeze(1)
        else:
            pos = (torch.rand(b, 1, device=index.device) * count).long()
            positive = self.order[start + torch.minimum(pos, count - 1)]
        return torch.cat([positive, negatives], dim=1)

    def _scores(self, v: Tensor, memory: Tensor, rows: Tensor, slot: int) -> Tensor:
        """exp(<bank rows, v> / T) / Z, with Z set from this batch the first time (mean score x N); float32
        (autocast off: a bf16 dot product divided by T = 0.07 would perturb the scores by several percent)."""
        with torch.autocast(device_type=v.device.type, enabled=False):
            scores = torch.exp(bank_dots(memory.detach().float(), v.float(), rows) / self.nce_t)
        with torch.no_grad():
            z = self.z[slot]
            self.z[slot] = torch.where(z < 0, scores.mean() * self.num_data, z)
        return scores / self.z[slot].clone()

    @torch.no_grad()
    def _update(self, memory: Tensor, index: Tensor, v: Tensor) -> None:
        mixed = memory[index] * self.nce_momentum + v.detach() * (1.0 - self.nce_momentum)
        memory.index_copy_(0, index, F.normalize(mixed, dim=1))

    def forward(self, student, teacher, target, epoch, index: Optional[Tensor] = None) -> Dict[str, Tensor]:
        teacher = self.checked_teacher(teacher)
        if index is None:
            raise ValueError("method 'crd' needs the batch's dataset indices (index=); the harness passes them "
                             "for methods whose needs include 'index'")
        index = index.to(self.memory_s.device).long()
        target = target.to(self.memory_s.device)
        v_s = self.embed_s(student.features.float())
        v_t = self.embed_t(as_target(teacher.features))
        rows = self.contrast_indices(index, target)
        scores_s = self._scores(v_s, self.memory_t, rows, 0)  # student anchor vs the teacher's bank
        scores_t = self._scores(v_t, self.memory_s, rows, 1)  # teacher anchor vs the student's bank
        loss = nce_loss(scores_s, self.num_data) + nce_loss(scores_t, self.num_data)
        self._update(self.memory_s, index, v_s.float())
        self._update(self.memory_t, index, v_t.float())
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits.float(), target),
            "crd": self.feat_weight * loss,
        }
