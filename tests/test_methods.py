"""Distillation methods: numeric checks against independent numpy references, KRDistill geometry,
gradient flow, the registry's errors, and one training step of every method on real model pairs."""
import copy
import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import methods
from methods import MethodContext, Outputs, create_method, get_method, list_methods, register_method
from methods.base import DEFAULT_NEEDS
from methods.bkd import bkd_loss
from methods.dist import dist_loss
from methods.dkd import dkd_loss, dkd_terms
from methods.kd import kd_loss
from methods.krdistill import procrustes_rotation, rectify_logits, simplex_etf
from methods.ltkd import frequency_groups, ltkd_loss

# every registered method that reads only logits and pooled features, from the registry (a new method file is
# tested without editing a list); methods needing feature maps or indices: test_feature_methods.py
LOGIT_METHODS = [name for name in list_methods() if get_method(name).needs <= DEFAULT_NEEDS]
COUNTS = [500, 300, 180, 110, 65, 40, 24, 14, 8, 5]


# ----------------------------------------------------------------------------- numpy references
def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_kl(p, q):
    """KL(p || q) over the last axis."""
    return (p * (np.log(p) - np.log(q))).sum(axis=-1)


def np_ce(z, y):
    return -np_log_softmax(z)[np.arange(len(y)), y].mean()


def np_kd_per_sample(zs, zt, T):
    return T * T * np_kl(np_softmax(zt / T), np_softmax(zs / T))


def np_dkd_per_sample(zs, zt, y, T):
    tckd, nckd = [], []
    for i in range(len(y)):
        ps, pt = np_softmax(zs[i] / T), np_softmax(zt[i] / T)
        bs, bt = np.array([ps[y[i]], 1 - ps[y[i]]]), np.array([pt[y[i]], 1 - pt[y[i]]])
        tckd.append(T * T * np_kl(bt, bs))
        others = [c for c in range(len(ps)) if c != y[i]]
        qs, qt = np_softmax(zs[i, others] / T), np_softmax(zt[i, others] / T)
        nckd.append(T * T * np_kl(qt, qs))
    return np.array(tckd), np.array(nckd)


def np_rectify(zt, y, log_prior, tau):
    z = zt - tau * log_prior
    for i in range(len(y)):
        a = int(np.argmax(z[i]))
        if a != y[i]:
            z[i, a], z[i, y[i]] = z[i, y[i]], z[i, a]
    return z


def logits_batch(b=16, c=10, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    zs, zt = rng.normal(size=(b, c)) * scale, rng.normal(size=(b, c)) * scale
    y = rng.integers(0, c, size=b)
    return zs, zt, y


def tt(a):
    return torch.tensor(a, dtype=torch.float64 if np.asarray(a).dtype.kind == "f" else torch.long)


def ctx_for(counts=COUNTS, student_dim=8, teacher_dim=12, epochs=10):
    return MethodContext(class_counts=list(counts), student_dim=student_dim, teacher_dim=teacher_dim, epochs=epochs)


def as_np(a):
    return a.detach().double().numpy() if torch.is_tensor(a) else np.asarray(a, dtype=np.float64)


def close(a, b, tol=1e-5):
    return np.allclose(as_np(a), as_np(b), rtol=tol, atol=tol)


def value(terms):
    return float(sum(terms.values()))


# ----------------------------------------------------------------------------- pure losses
def test_kd_loss_matches_numpy():
    zs, zt, _ = logits_batch()
    for T in (1.0, 4.0):
        assert close(kd_loss(tt(zs), tt(zt), T), np_kd_per_sample(zs, zt, T).mean())


def test_kd_loss_is_float32_under_bf16():
    zs, zt, _ = logits_batch()
    out = kd_loss(tt(zs).bfloat16(), tt(zt).bfloat16(), 4.0)
    assert out.dtype == torch.float32 and out.dim() == 0
    ref = np_kd_per_sample(tt(zs).bfloat16().double().numpy(), tt(zt).bfloat16().double().numpy(), 4.0).mean()
    assert close(out, ref, 1e-4)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_terms_decompose_kd_per_sample(T):
    """Zhao et al. Eq. 1: KD = TCKD + (1 - p_y^teacher) * NCKD, per sample."""
    zs, zt, y = logits_batch(seed=1)
    tckd, nckd = dkd_terms(tt(zs), tt(zt), tt(y), T)
    p_y = np_softmax(zt / T)[np.arange(len(y)), y]
    assert close(tckd.numpy() + (1 - p_y) * nckd.numpy(), np_kd_per_sample(zs, zt, T))
    ref_t, ref_n = np_dkd_per_sample(zs, zt, y, T)
    assert close(tckd, ref_t) and close(nckd, ref_n)


def test_dkd_loss_matches_numpy_and_survives_confident_logits():
    zs, zt, y = logits_batch(seed=2)
    ref_t, ref_n = np_dkd_per_sample(zs, zt, y, 4.0)
    assert close(dkd_loss(tt(zs), tt(zt), tt(y), 1.0, 8.0, 4.0), (ref_t + 8 * ref_n).mean())
    # very confident teacher at T=1: finite loss and gradients (mdistiller's log(softmax) would give inf)
    zs_t = (tt(zs) * 30).float().requires_grad_(True)
    loss = dkd_loss(zs_t, tt(zt).float() * 30, tt(y), 1.0, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs_t.grad).all()


def test_bkd_loss_matches_numpy():
    zs, zt, y = logits_batch(seed=3)
    counts = np.array(COUNTS, dtype=np.float64)
    w = (1 - 0.9999) / (1 - 0.9999 ** counts)
    w = w / w.mean()
    q = np_softmax(zt / 2) * w
    q = q / q.sum(1, keepdims=True)
    ref_kd = 4 * np_kl(q, np_softmax(zs / 2)).mean()
    m = create_method("bkd", ctx_for())
    assert close(m.class_weights, w)
    assert close(bkd_loss(tt(zs), tt(zt), m.class_weights, 2.0), ref_kd)
    terms = m(Outputs(tt(zs).float(), torch.zeros(16, 8)), Outputs(tt(zt).float(), torch.zeros(16, 12)), tt(y), 1)
    assert close(terms["kd"], ref_kd) and close(terms["ce"], np_ce(zs, y))
    # DRW: plain KD until drw_epoch, re-weighted after
    drw = create_method("bkd", ctx_for(), drw_epoch=5)
    out = drw(Outputs(tt(zs).float(), torch.zeros(16, 8)), Outputs(tt(zt).float(), torch.zeros(16, 12)), tt(y), 5)
    assert close(out["kd"], np_kd_per_sample(zs, zt, 2.0).mean())


def test_dist_loss_matches_numpy():
    zs, zt, _ = logits_batch(seed=4)
    ps, pt = np_softmax(zs / 4), np_softmax(zt / 4)
    inter = 1 - np.mean([np.corrcoef(ps[i], pt[i])[0, 1] for i in range(len(ps))])
    intra = 1 - np.mean([np.corrcoef(ps[:, c], pt[:, c])[0, 1] for c in range(ps.shape[1])])
    assert close(dist_loss(tt(zs), tt(zt), 2.0, 2.0, 4.0), 16 * (2 * inter + 2 * intra), 1e-4)


def test_balanced_softmax_matches_numpy():
    zs, _, y = logits_batch(seed=5)
    m = create_method("balanced_softmax", ctx_for())
    terms = m(Outputs(tt(zs).float(), torch.zeros(16, 8)), None, tt(y), 1)
    assert close(terms["ce"], np_ce(zs + np.log(np.array(COUNTS, dtype=np.float64)), y))


def test_la_kd_with_uniform_prior_is_ce_plus_kd():
    zs, zt, y = logits_batch(seed=6)
    m = create_method("la_kd", ctx_for(counts=[50] * 10))
    terms = m(Outputs(tt(zs).float(), torch.zeros(16, 8)), Outputs(tt(zt).float(), torch.zeros(16, 12)), tt(y), 1)
    assert close(value(terms), np_ce(zs, y) + np_kd_per_sample(zs, zt, 4.0).mean())


def test_la_kd_matches_numpy():
    zs, zt, y = logits_batch(seed=7)
    log_pi = np.log(np.array(COUNTS) / np.sum(COUNTS))
    m = create_method("la_kd", ctx_for(), tau=1.5)
    terms = m(Outputs(tt(zs).float(), torch.zeros(16, 8)), Outputs(tt(zt).float(), torch.zeros(16, 12)), tt(y), 1)
    assert close(terms["ce"], np_ce(zs + 1.5 * log_pi, y))
    assert close(terms["kd"], np_kd_per_sample(zs, zt - 1.5 * log_pi, 4.0).mean())


LTKD_COUNTS = [5, 100, 20, 50, 8, 200, 3, 30, 70]
LTKD_GROUPS = [2, 0, 1, 1, 2, 0, 2, 1, 0]  # thirds by count: {200, 100, 70} {50, 30, 20} {8, 5, 3}


def np_ltkd(zs, zt, groups, T, alpha, beta, rebalance, uniform):
    ps, pt = np_softmax(zs / T), np_softmax(zt / T)
    k = max(groups) + 1
    members = [[c for c in range(len(groups)) if groups[c] == g] for g in range(k)]
    gs = np.stack([ps[:, m].sum(1) for m in members], 1)
    gt = np.stack([pt[:, m].sum(1) for m in members], 1)
    gt_r = gt / gt.mean(0, keepdims=True) if rebalance else gt
    gt_r = gt_r / gt_r.sum(1, keepdims=True)
    out = []
    for i in range(len(zs)):
        cross = np_kl(gt_r[i], gs[i])
        within = sum((1.0 if uniform else gt[i, g]) * np_kl(pt[i, m] / gt[i, g], ps[i, m] / gs[i, g])
                     for g, m in enumerate(members))
        out.append(alpha * cross + beta * within)
    return T * T * np.mean(out)


def test_ltkd_groups_are_frequency_thirds():
    assert frequency_groups(LTKD_COUNTS).tolist() == LTKD_GROUPS
    assert frequency_groups(COUNTS).tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]  # 3 / 4 / 3


@pytest.mark.parametrize("rebalance,uniform", [(True, True), (False, True), (True, False)])
def test_ltkd_loss_matches_numpy(rebalance, uniform):
    zs, zt, _ = logits_batch(c=9, seed=8)
    got = ltkd_loss(tt(zs), tt(zt), torch.tensor(LTKD_GROUPS), 3, 4.0, 1.0, 2.0, rebalance, uniform)
    assert close(got, np_ltkd(zs, zt, LTKD_GROUPS, 4.0, 1.0, 2.0, rebalance, uniform))


def test_ltkd_without_rebalancing_is_kd():
    zs, zt, y = logits_batch(c=9, seed=9)
    got = ltkd_loss(tt(zs), tt(zt), torch.tensor(LTKD_GROUPS), 3, 4.0, rebalance=False, uniform_within=False)
    assert close(got, np_kd_per_sample(zs, zt, 4.0).mean())
    m = create_method("ltkd", ctx_for(counts=LTKD_COUNTS))
    terms = m(Outputs(tt(zs).float(), torch.zeros(16, 8)), Outputs(tt(zt).float(), torch.zeros(16, 12)), tt(y), 1)
    assert close(terms["ltkd"], np_ltkd(zs, zt, LTKD_GROUPS, 4.0, 1.0, 1.0, True, True))


# ----------------------------------------------------------------------------- KRDistill
def test_rectify_logits_ranks_true_class_first_by_swapping():
    rng = np.random.default_rng(10)
    zt = rng.normal(size=(256, 10)) * 3
    y = rng.integers(0, 10, size=256)
    log_prior = np.log(np.array(COUNTS) / np.sum(COUNTS))
    out = rectify_logits(tt(zt), tt(y), tt(log_prior), 1.0).numpy()
    adjusted = zt - log_prior
    assert np.allclose(out, np_rectify(zt.copy(), y, log_prior, 1.0))
    assert (out.argmax(1) == y).all()
    assert np.allclose(np.sort(out, 1), np.sort(adjusted, 1))  # same values per row, only moved
    correct = adjusted.argmax(1) == y
    assert correct.any() and (~correct).any()
    assert np.array_equal(out[correct], adjusted[correct])
    wrong = ~correct
    changed = (out != adjusted)[wrong].sum(1)
    assert (changed == 2).all()  # exactly two positions move in a wrong row


def test_rectify_logits_needs_no_grad():
    zt = torch.randn(4, 10, requires_grad=True)
    out = rectify_logits(zt, torch.tensor([0, 1, 2, 3]), torch.zeros(10), 1.0)
    assert not out.requires_grad


@pytest.mark.parametrize("c,dim", [(2, 1), (10, 9), (10, 32), (100, 99)])
def test_simplex_etf_is_equiangular(c, dim):
    e = simplex_etf(c, dim).double()
    assert e.shape == (c, dim)
    gram = e @ e.t()
    assert torch.allclose(gram.diagonal(), torch.ones(c, dtype=torch.float64), atol=1e-5)
    off = gram[~torch.eye(c, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (c - 1)), atol=1e-5)
    assert e.sum(0).norm() < 1e-4  # centred


def test_simplex_etf_best_effort_below_c_minus_1():
    with pytest.warns(RuntimeWarning, match="no simplex ETF"):
        e = simplex_etf(20, 8).double()
    assert torch.allclose(e.norm(dim=1), torch.ones(20, dtype=torch.float64), atol=1e-5)
    off = (e @ e.t())[~torch.eye(20, dtype=torch.bool)]
    # well spread: random unit vectors in 8-d reach ~0.7, the optimiser ~0.13; a centring penalty over the
    # wrong axis gives ~0.19
    assert off.max() < 0.15
    assert e.mean(0).norm() < 0.05


def test_procrustes_recovers_rotation_and_never_increases_distance():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(10, 6, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    r = procrustes_rotation(src, src @ q)
    assert torch.allclose(r, q, atol=1e-8)
    tgt = torch.randn(10, 6, generator=g, dtype=torch.float64)
    r = procrustes_rotation(src, tgt)
    assert torch.allclose(r @ r.t(), torch.eye(6, dtype=torch.float64), atol=1e-8)
    assert (src @ r - tgt).norm() <= (src - tgt).norm()
    for _ in range(5):  # no other rotation does better
        other, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
        assert (src @ r - tgt).norm() <= (src @ other - tgt).norm() + 1e-9


class FeatureTeacher:
    """A 'teacher' whose inputs are its features: logits = x @ W (for setup and loss tests)."""

    def __init__(self, dim, c, seed=0):
        self.w = torch.randn(dim, c, generator=torch.Generator().manual_seed(seed))

    def __call__(self, x):
        return Outputs(x @ self.w, x)


def krd_data(c=10, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), k) for k, n in enumerate([30, 20, 12, 8, 6, 5, 4, 3, 2, 2][:c])])
    centres = torch.randn(c, dim, generator=g).abs() * 2
    x = (centres[y] + 0.5 * torch.randn(len(y), dim, generator=g)).relu()
    return x, y


def krd_batches(x, y, bs=16):
    return lambda: ((x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs))


def test_krdistill_setup_prototypes_centre_anchors():
    x, y = krd_data()
    m = create_method("krdistill", ctx_for(student_dim=8, teacher_dim=12))
    m.setup(FeatureTeacher(12, 10), krd_batches(x, y))
    xn = x.double() / x.double().norm(dim=1, keepdim=True)
    mu = torch.stack([xn[y == k].mean(0) for k in range(10)])  # each class equal weight
    centre = mu.mean(0)
    assert torch.allclose(m.prototypes.double(), mu, atol=1e-5)
    assert torch.allclose(m.centre.double(), centre, atol=1e-5)
    a = m.anchors.double()
    scale = (mu - centre).norm(dim=1).mean()
    assert torch.allclose(a.norm(dim=1), scale.expand(10), atol=1e-5)
    cos = F.normalize(a, dim=1) @ F.normalize(a, dim=1).t()
    off = cos[~torch.eye(10, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1 / 9), atol=1e-5)
    # the rotation brings the balanced anchors closer to the real class offsets than the unrotated ETF
    etf = simplex_etf(10, 12).double() * scale
    assert (a - (mu - centre)).norm() <= (etf - (mu - centre)).norm()


def test_krdistill_handles_narrow_teacher_and_missing_classes():
    x, y = krd_data(dim=4)
    keep = y != 9  # class 9 never seen in setup
    m = create_method("krdistill", ctx_for(student_dim=8, teacher_dim=4))
    with pytest.warns(RuntimeWarning, match="no simplex ETF"):
        m.setup(FeatureTeacher(4, 10), krd_batches(x[keep], y[keep]))
    assert torch.isfinite(m.anchors).all() and torch.allclose(m.prototypes[9], m.centre)
    terms = m(Outputs(torch.randn(4, 10), torch.randn(4, 8)), FeatureTeacher(4, 10)(x[:4]), y[:4], 30)
    assert all(torch.isfinite(v) for v in terms.values())


def test_krdistill_losses_match_numpy():
    x, y = krd_data()
    teacher = FeatureTeacher(12, 10)
    m = create_method("krdistill", ctx_for(student_dim=8, teacher_dim=12), alpha=0.7, beta=1.3, warmup=4)
    m.setup(teacher, krd_batches(x, y))
    idx = torch.tensor([0, 5, 31, 40, 55, 60, 70, 80, 90, 91])
    fs, zs = torch.randn(10, 8), torch.randn(10, 10) * 2
    t_out = teacher(x[idx])
    terms = m(Outputs(zs, fs), t_out, y[idx], 2)  # warm-up factor 2/4
    # representation term from the definition
    yy = y[idx].numpy()
    W, b = m.projector.weight.detach().double().numpy(), m.projector.bias.detach().double().numpy()
    ft = t_out.features.double().numpy()
    ft = ft / np.linalg.norm(ft, axis=1, keepdims=True)
    mu, c, a = (t.double().numpy() for t in (m.prototypes, m.centre, m.anchors))
    target = ft - mu[yy] + c + a[yy]
    l_rep = ((fs.double().numpy() @ W.T + b - target) ** 2).sum(1).mean()
    assert close(terms["rep"], 0.5 * 0.7 * l_rep, 1e-4)
    # logit term from the definition
    counts = np.array(COUNTS, dtype=np.float64)
    log_pi = np.log(counts / counts.sum())
    zt = np_rectify(t_out.logits.double().numpy(), yy, log_pi, 1.0)
    w = (counts.sum() / (10 * counts)) ** 0.5
    kl = np_kd_per_sample(zs.double().numpy(), zt, 4.0)
    assert close(terms["logit"], 0.5 * 1.3 * (w[yy] * kl).sum() / w[yy].sum(), 1e-4)
    assert close(terms["ce"], np_ce(zs.double().numpy(), yy))


def test_krdistill_state_dict_restores_geometry_and_setup_is_required():
    x, y = krd_data()
    ctx = ctx_for(student_dim=8, teacher_dim=12)
    m = create_method("krdistill", ctx)
    with pytest.raises(RuntimeError, match="setup"):
        m(Outputs(torch.randn(2, 10), torch.randn(2, 8)), FeatureTeacher(12, 10)(x[:2]), y[:2], 1)
    m.setup(FeatureTeacher(12, 10), krd_batches(x, y))
    state = m.state_dict()
    assert {"prototypes", "centre", "anchors", "projector.weight"} <= set(state)
    fresh = create_method("krdistill", ctx)
    fresh.load_state_dict(state)
    s, t = Outputs(torch.randn(3, 10), torch.randn(3, 8)), FeatureTeacher(12, 10)(x[:3])
    a, b = m(s, t, y[:3], 5), fresh(s, t, y[:3], 5)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_krdistill_variants():
    assert get_method("krdistill_rep").hparams["use_logit"] is False
    assert get_method("krdistill_logit").hparams["use_rep"] is False
    x, y = krd_data()
    rep = create_method("krdistill_rep", ctx_for())
    rep.setup(FeatureTeacher(12, 10), krd_batches(x, y))
    assert set(rep(Outputs(torch.randn(2, 10), torch.randn(2, 8)), FeatureTeacher(12, 10)(x[:2]), y[:2], 1)) == {"ce", "rep"}
    logit = create_method("krdistill_logit", ctx_for(teacher_dim=None))  # no projector, no setup needed
    assert not list(logit.parameters())
    assert set(logit(Outputs(torch.randn(2, 10), torch.randn(2, 8)), FeatureTeacher(12, 10)(x[:2]), y[:2], 1)) == {"ce", "logit"}
    for name in ("krdistill", "krdistill_rep", "krdistill_logit"):
        assert "reconstruction" in get_method(name).summary


def test_warmups_are_linear():
    zs, zt, y = logits_batch(seed=11)
    s, t = Outputs(tt(zs).float(), torch.zeros(16, 8)), Outputs(tt(zt).float(), torch.zeros(16, 12))
    dkd = create_method("dkd", ctx_for())
    full = dkd(s, t, tt(y), 40)["dkd"]
    assert close(dkd(s, t, tt(y), 1)["dkd"], full / 20) and close(dkd(s, t, tt(y), 20)["dkd"], full)
    ref_t, ref_n = np_dkd_per_sample(zs, zt, y, 4.0)
    assert close(full, (ref_t + 8 * ref_n).mean())
    assert close(create_method("dkd", ctx_for(), warmup=0)(s, t, tt(y), 1)["dkd"], full)


# ----------------------------------------------------------------------------- gradients, dtypes
class Toy(nn.Module):
    def __init__(self, in_dim=6, feat_dim=8, c=10, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(in_dim, feat_dim), nn.ReLU())
        self.head = nn.Linear(feat_dim, c)

    def forward(self, x):
        f = self.body(x)
        return Outputs(self.head(f), f)


def make_method(name, ctx, teacher):
    m = create_method(name, ctx)
    if m.requires_teacher:
        g = torch.Generator().manual_seed(1)
        xs, ys = torch.randn(40, 6, generator=g), torch.arange(40) % ctx.num_classes
        with torch.no_grad():
            m.setup(teacher, lambda: ((xs[i:i + 8], ys[i:i + 8]) for i in range(0, 40, 8)))
    return m


@pytest.mark.parametrize("name", LOGIT_METHODS)
def test_gradients_reach_student_and_method_never_teacher(name):
    student, teacher = Toy(feat_dim=8, seed=0), Toy(feat_dim=12, seed=1)
    m = make_method(name, ctx_for(student_dim=8, teacher_dim=12), teacher)
    x, y = torch.randn(16, 6), torch.arange(16) % 10
    t_out = teacher(x) if m.requires_teacher else None  # teacher outputs WITH a graph: the method must detach
    terms = m(student(x), t_out, y, 100)
    assert all(v.dim() == 0 and v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize("name", LOGIT_METHODS)
def test_methods_accept_inference_mode_teacher_and_bf16_autocast(name):
    student, teacher = Toy(feat_dim=8, seed=0), Toy(feat_dim=12, seed=1)
    m = make_method(name, ctx_for(student_dim=8, teacher_dim=12), teacher)
    x, y = torch.randn(16, 6), torch.arange(16) % 10
    with torch.inference_mode():
        t_out = teacher(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s_out = student(x)
        terms = m(s_out, t_out if m.requires_teacher else None, y, 3)
    assert s_out.logits.dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert student.head.weight.grad is not None


def test_methods_have_no_host_sync_calls():
    """Loss code must not call .item()/.tolist()/.cpu() (a host sync per step on GPU)."""
    src = Path(methods.__file__).parent
    for path in src.glob("*.py"):
        text = path.read_text()
        for bad in (".item()", ".tolist()", ".cpu()", ".numpy()"):
            assert bad not in text, f"{path.name} calls {bad}"


# ----------------------------------------------------------------------------- registry
def test_builtins_metadata():
    """Pinned facts of some builtins (every method's metadata: test_method_contract.py)."""
    assert not get_method("ce").requires_teacher and not get_method("balanced_softmax").requires_teacher
    assert get_method("kd").hparams == {"temperature": 4.0, "alpha": 0.9}
    assert get_method("dkd").hparams == {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup": 20}
    assert "reconstruction" in get_method("ltkd").summary


def test_unknown_method_lists_close_matches():
    with pytest.raises(KeyError, match="dkd"):
        get_method("dkdd")
    with pytest.raises(KeyError, match="Registered methods"):
        create_method("no_such_method", ctx_for())


def test_unknown_or_mistyped_hparam():
    with pytest.raises(ValueError, match="temperature"):
        create_method("kd", ctx_for(), temprature=2.0)
    with pytest.raises(TypeError, match="true/false"):
        create_method("krdistill", ctx_for(), use_rep="yes")
    with pytest.raises(TypeError, match="number"):
        create_method("kd", ctx_for(), alpha="0.5")
    m = create_method("kd", ctx_for(), alpha=1)
    assert m.alpha == 1.0 and isinstance(m.alpha, float) and m.config == {"temperature": 4.0, "alpha": 1.0}


def test_duplicate_registration_warns():
    class First(methods.Method):
        def forward(self, student, teacher, target, epoch):
            return {}

    class Second(First):
        pass

    try:
        register_method("tmp_duplicate")(First)
        with pytest.warns(RuntimeWarning, match="registered twice"):
            register_method("tmp_duplicate")(Second)
        assert get_method("tmp_duplicate") is Second
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            register_method("tmp_duplicate")(Second)  # re-registering the same class is silent
    finally:
        methods._REGISTRY.pop("tmp_duplicate", None)


def test_teacherless_call_of_teacher_method_is_clear():
    m = create_method("kd", ctx_for())
    with pytest.raises(ValueError, match="needs teacher"):
        m(Outputs(torch.randn(2, 10), torch.randn(2, 8)), None, torch.tensor([0, 1]), 1)


# ----------------------------------------------------------------------------- one step on real networks
@functools.lru_cache(maxsize=None)
def _zoo():
    """``benchmark.models`` (importing ``benchmark`` registers the CIFAR zoo into timm), or None."""
    try:
        import benchmark.models as zoo
    except ImportError:
        return None
    return zoo


def forward_with_features(model, x):
    if _zoo() is None:  # the zoo package not importable: timm's standard API
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        return model.get_classifier()(pooled), pooled
    return _zoo().forward_with_features(model, x)


def feature_dim(model):
    if _zoo() is None:
        return getattr(model, "head_hidden_size", None) or model.num_features
    return _zoo().feature_dim(model)


def create(name, num_classes=10):
    _zoo()
    return timm.create_model(name, num_classes=num_classes)


# the timm student has a conv head after pooling: its feature width is head_hidden_size, not num_features
PAIRS = {"zoo": ("cifar_resnet32x4", "cifar_resnet8x4"), "timm": ("resnet18", "mobilenetv3_small_050")}


@pytest.fixture(scope="module", params=sorted(PAIRS))
def pair(request):
    """Teacher, student (reset to its initial weights by each test: reusing the modules keeps the
    CPU kernels warm) and one tiny batch."""
    t_name, s_name = PAIRS[request.param]
    torch.manual_seed(0)
    teacher, student = create(t_name).eval(), create(s_name)
    for p in teacher.parameters():
        p.requires_grad_(False)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 3, 9])
    return teacher, student, copy.deepcopy(student.state_dict()), x, y


@pytest.mark.parametrize("name", LOGIT_METHODS)
def test_one_training_step(name, pair):
    teacher, student, init_state, x, y = pair
    student.load_state_dict(init_state)
    student.zero_grad(set_to_none=True)

    def teacher_fn(inp):
        with torch.inference_mode():
            logits, feats = forward_with_features(teacher, inp)
        return Outputs(logits.float().clone(), feats.float().clone())

    ctx = MethodContext(class_counts=COUNTS, student_dim=feature_dim(student), teacher_dim=feature_dim(teacher),
                        epochs=2)
    m = create_method(name, ctx)
    m.setup(teacher_fn if m.requires_teacher else None, lambda: iter([(x, y)]))
    own = list(m.parameters())
    params = list(student.parameters()) + own
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    student.train()
    logits, feats = forward_with_features(student, x)
    terms = m(Outputs(logits, feats), teacher_fn(x) if m.requires_teacher else None, y, 1)
    loss = sum(terms.values())
    assert torch.isfinite(loss) and all(v.dim() == 0 for v in terms.values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = [not torch.equal(p, b) for p, b in zip(params, before)]
    assert any(changed[: len(params) - len(own)])  # the student learned
    assert all(changed[len(params) - len(own):])  # and so did the method's own modules (projector)


# ----------------------------------------------------------------------------- contracts that mutation testing pins
# (docs/testing.md: each test below kills mutants that survived the numeric tests above)
from methods.base import as_target, linear_warmup  # noqa: E402
from methods.bkd import effective_number_weights  # noqa: E402

NO_LEARNED_STATE = ["balanced_softmax", "bkd", "ce", "dist", "dkd", "kd", "krdistill_logit", "la_kd", "ltkd"]


def test_as_target_detaches_and_never_returns_an_inference_tensor():
    with torch.inference_mode():
        frozen = torch.randn(4, 10)
    target = as_target(frozen)
    assert not target.is_inference() and torch.equal(target, frozen)
    student = torch.randn(4, 10, requires_grad=True)
    (student * target).sum().backward()  # the raw target is saved for backward: fails for an inference tensor
    assert torch.equal(student.grad, frozen)
    live = torch.randn(4, 10, requires_grad=True)
    out = as_target(live)
    assert not out.requires_grad and out.data_ptr() == live.data_ptr()  # no copy of an ordinary float32 tensor


def test_linear_warmup_values():
    assert [linear_warmup(e, 4) for e in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert linear_warmup(1, 0) == 1.0 and linear_warmup(3, -2) == 1.0


def test_counts_buffer_and_log_prior():
    ctx = ctx_for(counts=[6, 3, 1])
    m = create_method("kd", ctx)
    assert m.class_counts.dtype == torch.float32 and m.class_counts.tolist() == [6.0, 3.0, 1.0]
    assert torch.allclose(m.log_prior, torch.log(torch.tensor([0.6, 0.3, 0.1])))


@pytest.mark.parametrize("name", NO_LEARNED_STATE)
def test_methods_without_learned_state_checkpoint_nothing(name):
    """Buffers derived from the class counts (counts, weights, groups) are rebuilt from the run's context,
    never read back from a checkpoint: a state_dict holds learned state only."""
    assert create_method(name, ctx_for(teacher_dim=None)).state_dict() == {}


def test_krdistill_checkpoints_its_geometry_but_not_derived_weights():
    keys = set(create_method("krdistill", ctx_for()).state_dict())
    assert keys == {"prototypes", "centre", "anchors", "projector.weight", "projector.bias"}


def test_extra_repr_lists_hyperparameters():
    assert repr(create_method("kd", ctx_for())).endswith("KD(temperature=4.0, alpha=0.9)")


def test_bkd_weights_count_an_empty_class_as_one():
    got = effective_number_weights(torch.tensor([5000.0, 1.0, 0.0]), 0.9999).double().numpy()
    w = 1.0 / (1.0 - 0.9999 ** np.array([5000.0, 1.0, 1.0]))
    assert np.allclose(got, w / w.mean(), rtol=1e-6)
    assert got[1] == got[2]
    assert torch.equal(effective_number_weights(torch.tensor([7.0, 1.0, 0.0]), 0.0), torch.ones(3))


def test_bkd_hyperparameter_checks():
    assert create_method("bkd", ctx_for(), beta=0.0).class_weights.tolist() == [1.0] * 10
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"method 'bkd'.*'beta'.*\[0, 1\)"):
            create_method("bkd", ctx_for(), beta=bad)
    with pytest.raises(ValueError, match=r"method 'bkd'.*'drw_epoch'.*>= 0"):
        create_method("bkd", ctx_for(), drw_epoch=-1)


def test_ltkd_groups_break_ties_by_class_index():
    """Ties in the counts go to the lower class id first (many equal counts, beyond numpy's small-array sort)."""
    counts = [7] * 20 + [3] * 20 + [7] * 20 + [3] * 20
    # 26 head / 28 medium / 26 tail; the 7s rank 0-19 then 40-59, the 3s 20-39 then 60-79 (written out by hand)
    expected = [0] * 20 + [1] * 14 + [2] * 6 + [0] * 6 + [1] * 14 + [2] * 20
    assert frequency_groups(counts).tolist() == expected


def test_ltkd_loss_follows_the_logits_device():
    """The group ids may live elsewhere (a CPU tensor): the loss moves them to the logits' device. The "meta"
    device stands in for a GPU: mixing it with a CPU tensor fails like cuda + cpu does."""
    meta = torch.device("meta")
    out = ltkd_loss(torch.randn(4, 9, device=meta), torch.randn(4, 9, device=meta), torch.tensor(LTKD_GROUPS), 3, 4.0)
    assert out.device == meta and out.shape == ()


def test_ltkd_loss_defaults_are_the_method_defaults():
    zs, zt, _ = logits_batch(c=9, seed=12)
    groups = torch.tensor(LTKD_GROUPS)
    default = ltkd_loss(tt(zs), tt(zt), groups, 3, 4.0)
    assert close(default, ltkd_loss(tt(zs), tt(zt), groups, 3, 4.0, 1.0, 1.0, True, True))
    assert close(default, np_ltkd(zs, zt, LTKD_GROUPS, 4.0, 1.0, 1.0, True, True))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name", LOGIT_METHODS)
def test_losses_are_warning_free(name):
    """No deprecated implicit softmax dimension or other warning on the training path."""
    x, y = krd_data()
    teacher = FeatureTeacher(12, 10)
    m = create_method(name, ctx_for(student_dim=8, teacher_dim=12))
    m.setup(teacher, krd_batches(x, y))
    terms = m(Outputs(torch.randn(6, 10), torch.randn(6, 8)), teacher(x[:6]), y[:6], 3)
    assert all(torch.isfinite(v) for v in terms.values())


def test_simplex_etf_on_the_requested_device():
    assert simplex_etf(10, 12, device=torch.device("meta")).device.type == "meta"


@pytest.mark.parametrize("c", [3, 10])
def test_simplex_etf_dimension_boundary(c):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dim in (c - 1, c, c + 1):  # an exact simplex ETF exists from dim C - 1 up
            e = simplex_etf(c, dim).double()
            off = (e @ e.t())[~torch.eye(c, dtype=torch.bool)]
            assert torch.allclose(off, torch.full_like(off, -1.0 / (c - 1)), atol=1e-6)
    with pytest.warns(RuntimeWarning) as record:
        simplex_etf(c, c - 2)
    assert str(record[0].message) == (f"simplex_etf: dim {c - 2} < C - 1 = {c - 1}, no simplex ETF exists; "
                                      "using a best-effort equiangular code instead")
    assert not record[0].filename.endswith("krdistill.py")  # attributed to the caller (stacklevel=2)
    with pytest.raises(ValueError, match="^simplex_etf needs at least 2 classes, got 1$"):
        simplex_etf(1, 4)


def test_equiangular_code_is_deterministic_centred_and_unit():
    with pytest.warns(RuntimeWarning):
        a = simplex_etf(12, 5)
    with pytest.warns(RuntimeWarning):
        b = simplex_etf(12, 5)
    assert torch.equal(a, b)  # seeded: the same geometry in every run
    assert torch.allclose(a.norm(dim=1), torch.ones(12), atol=1e-5)
    assert a.mean(0).norm() < 0.05


def test_krdistill_class_weights_and_messages():
    m = create_method("krdistill_logit", ctx_for(counts=[8, 1, 0, 1], teacher_dim=None))
    n = torch.tensor([8.0, 1.0, 1.0, 1.0])
    assert torch.allclose(m.class_weights, (n.sum() / (4 * n)) ** 0.5)
    with pytest.raises(ValueError, match=r"^method 'krdistill' with use_rep needs the teacher feature width "
                                         r"\(ctx.teacher_dim\)$"):
        create_method("krdistill", ctx_for(teacher_dim=None))
    x, y = krd_data()
    with pytest.raises(RuntimeError, match=r"^method 'krdistill': call setup\(teacher, train_batches\) "
                                           r"before training$"):
        create_method("krdistill", ctx_for())(Outputs(torch.randn(2, 10), torch.randn(2, 8)),
                                              FeatureTeacher(12, 10)(x[:2]), y[:2], 1)
