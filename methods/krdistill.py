"""``krdistill``: KRDistill, "Learn from Balance: Rectifying Knowledge Transfer for Long-Tailed
Scenarios" (arXiv 2409.07694). OUR RECONSTRUCTION from the abstract (docs/methods.md); the paper's
equations were not available to us, so numbers from this method are not the paper's.

The abstract names two parts, both implemented and switchable:
  1. representation-rectified distillation: the teacher's class centres are replaced by a balanced
     geometry (a simplex ETF, Procrustes-rotated into the teacher's feature space) and a learned linear
     projector g maps student features onto the rectified teacher features;
  2. logit-rectified distillation: the teacher's logits are debiased by the class prior and, where the
     teacher is still wrong, the true class is swapped to the top; the KL is re-weighted toward tail
     classes.
Assumptions beyond the abstract (ours; docs/methods.md):
  * L_rep = mean over the batch of the squared L2 distance summed over feature dims; the projector
    g = nn.Linear(student_dim, teacher_dim) is owned by the method and trained with the student.
  * anchors are scaled to the mean norm of the CENTRED prototypes ||mu_c - m||, the quantity they
    replace, so only the geometry of the class centres changes, not their spread.
  * if teacher_dim < C - 1 no simplex ETF exists; we then use a best-effort equiangular code (C unit
    vectors maximising the smallest pairwise angle, centred; see ``simplex_etf``) and warn.
  * classes absent from the setup data keep mu_c = m (their instances, if any, are not rectified).
  * warm-up is linear over ``warmup`` epochs, as DKD's; w_c = (N / (C n_c))^gamma (gamma=0.5).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import register_method
from .base import Method, MethodContext, Outputs, as_target, linear_warmup


@torch.no_grad()
def rectify_logits(logits_teacher: Tensor, target: Tensor, log_prior: Tensor, tau: float) -> Tensor:
    """z~ = z_t - tau*log(pi); in rows where argmax z~ != y the values at y and at the argmax are swapped,
    so the true class ranks first and the rest of the distribution is kept; correct rows are unchanged."""
    z = logits_teacher.detach() - tau * log_prior.to(device=logits_teacher.device, dtype=logits_teacher.dtype)
    y = target.view(-1, 1)
    top = z.argmax(dim=1, keepdim=True)
    z_y, z_top = z.gather(1, y), z.gather(1, top)
    return z.scatter(1, y, z_top).scatter(1, top, z_y)  # a no-op where top == y


def _equiangular_code(num_classes: int, dim: int, steps: int = 300, seed: int = 0,
                      device: Optional[torch.device] = None) -> Tensor:
    """Best effort when dim < C - 1: C centred unit vectors minimising a soft maximum of the pairwise
    cosines (the Tammes problem, whose solution is the simplex ETF when dim >= C - 1)."""
    gen = torch.Generator().manual_seed(seed)
    init = torch.randn(num_classes, dim, generator=gen)
    with torch.inference_mode(False), torch.enable_grad():  # setup() may run under no_grad/inference_mode
        x = nn.Parameter(F.normalize(init, dim=1).to(device))
        opt = torch.optim.Adam([x], lr=0.01)
        off_diag = ~torch.eye(num_classes, dtype=torch.bool, device=x.device)
        for step in range(steps):
            sharpness = 10.0 + 90.0 * step / steps
            u = F.normalize(x, dim=1)
            cos = (u @ u.t())[off_diag]
            loss = torch.logsumexp(sharpness * cos, 0) / sharpness + u.mean(0).pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return F.normalize(x.detach(), dim=1)


def simplex_etf(num_classes: int, dim: int, device: Optional[torch.device] = None) -> Tensor:
    """(C, dim) unit vectors with pairwise cosine -1/(C-1) (a simplex equiangular tight frame).

    Needs dim >= C - 1: the C vertices span a (C-1)-dim subspace, embedded in the first C-1 coordinates.
    For dim < C - 1 returns a best-effort equiangular code (``_equiangular_code``) and warns."""
    c = int(num_classes)
    if c < 2:
        raise ValueError(f"simplex_etf needs at least 2 classes, got {c}")
    if dim < c - 1:
        warnings.warn(f"simplex_etf: dim {dim} < C - 1 = {c - 1}, no simplex ETF exists; using a best-effort "
                      "equiangular code instead", RuntimeWarning, stacklevel=2)
        return _equiangular_code(c, dim, device=device)
    centred = torch.eye(c, dtype=torch.float64) - 1.0 / c  # rows: the vertices, in 1-perp
    basis, _ = torch.linalg.qr(centred[:, : c - 1])  # orthonormal basis of 1-perp, (C, C-1)
    coords = math.sqrt(c / (c - 1)) * centred @ basis  # unit rows, pairwise dot -1/(C-1)
    out = torch.zeros(c, dim, dtype=torch.float64)
    out[:, : c - 1] = coords
    return out.float().to(device)


def procrustes_rotation(source: Tensor, target: Tensor) -> Tensor:
    """The orthogonal R (D, D) minimising ||source @ R - target||_F (Schoenemann 1966): R = U V^T with
    U S V^T = svd(source^T target)."""
    m = source.double().t() @ target.double()
    u, _, vh = torch.linalg.svd(m)
    return (u @ vh).to(source.dtype)


@register_method("krdistill")
class KRDistill(Method):
    """CE + warm-up * (alpha * L_rep + beta * L_logit); see the module docstring (reconstruction)."""

    hparams = {"temperature": 4.0, "tau": 1.0, "gamma": 0.5, "alpha": 1.0, "beta": 1.0, "warmup": 20,
               "use_rep": True, "use_logit": True}
    hparam_bounds = {"temperature": "(0, inf)", "tau": "[0, inf)", "gamma": "[0, inf)", "alpha": "[0, inf)",
                     "beta": "[0, inf)", "warmup": "[0, inf)"}
    epoch_params = {"warmup": "warmup"}
    summary = "KRDistill (reconstruction from the abstract)"

    def __init__(self, ctx: MethodContext, **overrides) -> None:
        super().__init__(ctx, **overrides)
        counts = self.class_counts.clamp_min(1.0)
        self.register_buffer("class_weights", (counts.sum() / (counts.numel() * counts)) ** self.gamma,
                             persistent=False)
        self._ready = not self.use_rep
        if self.use_rep:
            if not ctx.teacher_dim:
                raise ValueError("method 'krdistill' with use_rep needs the teacher feature width (ctx.teacher_dim)")
            c, d = ctx.num_classes, int(ctx.teacher_dim)
            self.projector = nn.Linear(ctx.student_dim, d)
            # persistent: a checkpoint restores the rectified geometry without re-running setup
            self.register_buffer("prototypes", torch.zeros(c, d))
            self.register_buffer("centre", torch.zeros(d))
            self.register_buffer("anchors", torch.zeros(c, d))

    @torch.no_grad()
    def setup(self, teacher: Optional[Callable[[Tensor], Outputs]],
              train_batches: Callable[[], Iterable[Tuple[Tensor, Tensor]]]) -> None:
        """Class-balanced prototypes of L2-normalised teacher features, their centre and the ETF anchors."""
        if not self.use_rep:
            return
        if teacher is None:
            raise ValueError("method 'krdistill' needs the teacher in setup()")
        c = self.ctx.num_classes
        sums = counts = None
        for x, y in train_batches():
            f = F.normalize(teacher(x).features.float(), dim=1)
            if sums is None:
                if f.shape[1] != self.anchors.shape[1]:
                    raise ValueError(f"method 'krdistill': teacher features are {f.shape[1]}-d but "
                                     f"ctx.teacher_dim is {self.anchors.shape[1]}")
                sums = torch.zeros(c, f.shape[1], device=f.device)
                counts = torch.zeros(c, device=f.device)
            y = y.to(f.device)
            sums.index_add_(0, y, f)
            counts.index_add_(0, y, torch.ones_like(y, dtype=f.dtype))
        if sums is None:
            raise ValueError("method 'krdistill': setup() got no training batches")
        seen = counts > 0
        mu = sums / counts.clamp_min(1.0).unsqueeze(1)
        centre = mu[seen].mean(0)
        mu[~seen] = centre
        offsets = mu - centre
        scale = offsets[seen].norm(dim=1).mean()
        etf = simplex_etf(c, mu.shape[1], device=mu.device)
        rotation = procrustes_rotation(etf[seen], offsets[seen])
        anchors = scale * (etf @ rotation)
        self.prototypes.copy_(mu)
        self.centre.copy_(centre)
        self.anchors.copy_(anchors)
        self._ready = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.use_rep and prefix + "anchors" in state_dict:
            self._ready = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def rectified_features(self, features_teacher: Tensor, target: Tensor) -> Tensor:
        """f~_t = normalise(f_t) - mu_y + (m + a_y)."""
        f = F.normalize(as_target(features_teacher), dim=1)
        return f - self.prototypes[target] + self.centre + self.anchors[target]

    def forward(self, student, teacher, target, epoch):
        teacher = self.checked_teacher(teacher)
        z_s = student.logits.float()
        losses = {"ce": F.cross_entropy(z_s, target)}
        warm = linear_warmup(epoch, self.warmup)
        if self.use_rep:
            if not self._ready:
                raise RuntimeError("method 'krdistill': call setup(teacher, train_batches) before training")
            pred = self.projector(student.features).float()
            l_rep = (pred - self.rectified_features(teacher.features, target)).pow(2).sum(1).mean()
            losses["rep"] = (warm * self.alpha) * l_rep
        if self.use_logit:
            t = self.temperature
            z_t = rectify_logits(as_target(teacher.logits), target, self.log_prior, self.tau)
            kl = F.kl_div(F.log_softmax(z_s / t, dim=1), F.log_softmax(z_t / t, dim=1),
                          reduction="none", log_target=True).sum(1)
            w = self.class_weights[target]
            losses["logit"] = (warm * self.beta * t * t) * (w * kl).sum() / w.sum()
        return losses


@register_method("krdistill_rep")
class KRDistillRep(KRDistill):
    """KRDistill ablation: representation-rectified distillation only."""

    hparams = {**KRDistill.hparams, "use_logit": False}
    summary = "KRDistill, representation part only (reconstruction)"


@register_method("krdistill_logit")
class KRDistillLogit(KRDistill):
    """KRDistill ablation: logit-rectified distillation only."""

    hparams = {**KRDistill.hparams, "use_rep": False}
    summary = "KRDistill, logit part only (reconstruction)"
