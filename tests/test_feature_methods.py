"""Feature-level distillation: AT and RKD against golden values of the reference implementation, independent
numeric checks of FitNet / ReviewKD / CRD, one training step of every feature method on a zoo pair and a
stock timm pair, ``forward_outputs`` computing only what a method needs, and the data path's indices."""
import dataclasses
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import benchmark  # noqa: F401  (registers the zoo)
from benchmark.data import LoaderData, TensorData
from benchmark.models import create_model, feature_dim, forward_outputs, map_shapes
from benchmark.step import DistillStep, frozen_outputs, needs_of
from methods import MethodContext, Outputs, create_method, get_method, list_methods
from methods.base import DEFAULT_NEEDS, NEEDS, filled_fields
from methods.at import at_loss, attention_map
from methods.crd import bank_dots, nce_loss
from methods.fitnet import ConvRegressor, hint_level
from methods.reviewkd import ABF, hcl_loss
from methods.rkd import rkd_loss

FIXTURE = Path(__file__).parent / "fixtures" / "reference_values.json"
# every registered method that needs more than logits and pooled features (feature maps, indices), from the
# registry: a new feature method is tested without editing a list (the others: test_methods.py)
FEATURE_METHODS = [name for name in list_methods() if get_method(name).needs - DEFAULT_NEEDS]
AT_KEY = "mdistiller.at_loss(p=2) summed over stages"
RKD_KEY = "mdistiller.rkd_loss(distance 25, angle 50) on pooled features"


pytestmark = pytest.mark.usefixtures("one_thread", "torch_seed")  # conftest: single-threaded, seeded with 0


def _cases():
    return json.loads(FIXTURE.read_text())["feature_cases"]


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def _ctx(num_classes=4, n=40, student_dim=8, teacher_dim=16, s_shapes=None, t_shapes=None, targets=None):
    targets = torch.arange(n) % num_classes if targets is None else torch.as_tensor(targets)
    return MethodContext(class_counts=torch.bincount(targets, minlength=num_classes).tolist(),
                         student_dim=student_dim, teacher_dim=teacher_dim, num_train=n, train_targets=targets,
                         student_shapes=s_shapes, teacher_shapes=t_shapes)


# ----------------------------------------------------------------------------- golden values: AT and RKD
@pytest.mark.parametrize("case", range(2))
def test_at_loss_matches_reference(case):
    c = _cases()[case]
    got = at_loss([_t(m) for m in c["feature_maps_student"]], [_t(m) for m in c["feature_maps_teacher"]], 2.0)
    assert got.item() == pytest.approx(c["values"][AT_KEY], rel=1e-5)


@pytest.mark.parametrize("case", range(2))
def test_rkd_loss_matches_reference(case):
    c = _cases()[case]
    got = rkd_loss(_t(c["pooled_student"]), _t(c["pooled_teacher"]), False, 1e-12, 25.0, 50.0)
    assert got.item() == pytest.approx(c["values"][RKD_KEY], rel=1e-5)


@pytest.mark.parametrize("case", range(2))
def test_at_and_rkd_methods_total_with_defaults(case):
    """Through the public API: AT's term is 1000 x the reference over the stages after the stem, RKD's is
    1 x the reference on the pooled features; each adds CE with weight 1."""
    c = _cases()[case]
    b = c["B"]
    torch.manual_seed(case)
    logits, target = torch.randn(b, 5), torch.randint(0, 5, (b,))
    stem_s, stem_t = torch.randn(b, 3, 8, 8), torch.randn(b, 3, 8, 8)  # level 0 is skipped, as mdistiller's feats[0]
    maps_s = [stem_s] + [_t(m).float() for m in c["feature_maps_student"]]
    maps_t = [stem_t] + [_t(m).float() for m in c["feature_maps_teacher"]]
    s = Outputs(logits, _t(c["pooled_student"]).float(), feature_maps=maps_s)
    t = Outputs(torch.randn(b, 5), _t(c["pooled_teacher"]).float(), feature_maps=maps_t)
    ce = F.cross_entropy(logits, target).item()
    ctx = _ctx(num_classes=5)
    at = create_method("at", ctx)(s, t, target, 1)
    assert at["at"].item() == pytest.approx(1000.0 * c["values"][AT_KEY], rel=1e-5)
    assert at["ce"].item() == pytest.approx(ce, rel=1e-6)
    rkd = create_method("rkd", ctx)(s, t, target, 1)
    assert rkd["rkd"].item() == pytest.approx(c["values"][RKD_KEY], rel=1e-5)
    assert sum(rkd.values()).item() == pytest.approx(ce + c["values"][RKD_KEY], rel=1e-5)


def test_attention_map_hand_computed():
    f = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # (1, 2 channels, 1, 2)
    q = np.array([(1 + 9) / 2, (4 + 0) / 2])
    np.testing.assert_allclose(attention_map(f).numpy()[0], q / np.linalg.norm(q), rtol=1e-6)


# ----------------------------------------------------------------------------- FitNet
@pytest.mark.parametrize("s_shape,t_shape,kind", [
    ((4, 8, 8), (6, 8, 8), "conv1x1"),
    ((4, 9, 9), (6, 8, 8), "conv2x2"),
    ((4, 16, 16), (6, 8, 8), "stride2"),
    ((4, 4, 4), (6, 8, 8), "transpose"),
    ((4, 32, 32), (6, 8, 8), "pool"),
    ((4, 2, 2), (6, 7, 7), "upsample"),
])
def test_fitnet_connector_adapts_channels_and_size(s_shape, t_shape, kind):
    reg = ConvRegressor(s_shape, t_shape)
    expected = {"conv1x1": (nn.Conv2d, (1, 1)), "conv2x2": (nn.Conv2d, (2, 2)), "stride2": (nn.Conv2d, (3, 3)),
                "transpose": (nn.ConvTranspose2d, (4, 4)), "pool": (nn.Conv2d, (1, 1)),
                "upsample": (nn.Conv2d, (1, 1))}[kind]
    assert isinstance(reg.conv, expected[0]) and tuple(reg.conv.kernel_size) == expected[1]
    assert reg(torch.randn(2, *s_shape)).shape == (2, *t_shape)


def test_fitnet_loss_hand_computed():
    """With the connector made the identity (1x1 conv = I, BN in eval with unit stats), the hint term is
    100 x mean((relu(f_s) - f_t)^2)."""
    s_shapes, t_shapes = [(3, 8, 8), (4, 4, 4), (5, 2, 2)], [(3, 8, 8), (4, 4, 4), (5, 2, 2)]
    method = create_method("fitnet", _ctx(s_shapes=s_shapes, t_shapes=t_shapes))
    assert (method.level_s, method.level_t) == (1, 1)  # the middle of 3 levels
    with torch.no_grad():
        method.connector.conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        method.connector.conv.bias.zero_()
    method.eval()
    f_s, f_t = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    out_s = Outputs(torch.randn(2, 4), torch.randn(2, 8), feature_maps=[None, f_s, None])
    out_t = Outputs(torch.randn(2, 4), torch.randn(2, 16), feature_maps=[None, f_t, None])
    terms = method(out_s, out_t, torch.tensor([0, 1]), 1)
    bn = method.connector.bn
    expected = ((np.maximum(f_s.numpy() / np.sqrt(1 + bn.eps), 0) - f_t.numpy()) ** 2).mean()
    assert terms["hint"].item() == pytest.approx(100.0 * expected, rel=1e-5)


def test_fitnet_hint_level():
    assert [hint_level(-1, n, "student") for n in (3, 4, 5)] == [1, 2, 2]  # mdistiller's 2 on 4 and 5 levels
    assert hint_level(0, 4, "student") == 0
    with pytest.raises(ValueError, match="hint_layer=4 is out of range for the teacher"):
        hint_level(4, 4, "teacher")
    with pytest.raises(ValueError, match="student_shapes and teacher_shapes"):
        create_method("fitnet", _ctx())


# ----------------------------------------------------------------------------- ReviewKD
def _np_hcl(fs, ft):
    total = 0.0
    for a, b in zip(fs, ft):
        h = a.shape[-1]
        loss, w, norm = ((a - b) ** 2).mean(), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            w /= 2
            pa = a.reshape(*a.shape[:2], size, h // size, size, h // size).mean((3, 5))
            pb = b.reshape(*b.shape[:2], size, h // size, size, h // size).mean((3, 5))
            loss += w * ((pa - pb) ** 2).mean()
            norm += w
        total += loss / norm
    return total


def test_hcl_loss_hand_computed():
    rng = np.random.default_rng(0)
    fs = [rng.normal(size=(2, 3, h, h)) for h in (8, 4, 1)]
    ft = [rng.normal(size=(2, 3, h, h)) for h in (8, 4, 1)]
    got = hcl_loss([torch.tensor(a) for a in fs], [torch.tensor(b) for b in ft]).item()
    assert got == pytest.approx(_np_hcl(fs, ft), rel=1e-5)
    assert hcl_loss([torch.tensor(fs[0])], [torch.tensor(fs[0])]).item() == 0.0


@pytest.mark.parametrize("w_x,w_res", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_abf_fuses_with_the_attention_weights(w_x, w_res):
    """Attention saturated to (w_x, w_res): output = conv2(w_x conv1(x) + w_res nearest-upsampled residual)."""
    abf = ABF(3, 4, 5, fuse=True).eval()
    with torch.no_grad():
        abf.att_conv[0].weight.zero_()
        abf.att_conv[0].bias.copy_(torch.tensor([50.0 if w_x else -50.0, 50.0 if w_res else -50.0]))
    x, res = torch.randn(2, 3, 4, 4), torch.randn(2, 4, 2, 2)
    out, new_res = abf(x, res, (4, 4))
    expected = w_x * abf.conv1(x) + w_res * res.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(new_res, expected)
    torch.testing.assert_close(out, abf.conv2(expected))
    out, _ = abf(x, res, (8, 8))  # resized to the teacher's size
    assert out.shape == (2, 5, 8, 8)


def test_reviewkd_levels_warmup_and_alignment():
    """Deepest min(stages) paired + pooled features; channels follow student -> teacher; the review term
    grows linearly over the warm-up."""
    s_shapes = [(4, 8, 8), (6, 8, 8), (8, 4, 4)]  # stem + 2 stages
    t_shapes = [(3, 16, 16), (5, 16, 16), (7, 8, 8), (9, 4, 4)]  # stem + 3 stages
    method = create_method("reviewkd", _ctx(s_shapes=s_shapes, t_shapes=t_shapes))
    assert method.num_stages == 2 and len(method.abfs) == 3
    assert [a.conv2[0].out_channels for a in method.abfs] == [16, 9, 7]  # deepest first: pooled, stage 3, 2
    assert [a.conv1[0].in_channels for a in method.abfs] == [8, 8, 6]
    assert method.abfs[0].att_conv is None and method.abfs[1].att_conv is not None
    s = Outputs(torch.randn(2, 4), torch.randn(2, 8), feature_maps=[torch.randn(2, *x) for x in s_shapes])
    t = Outputs(torch.randn(2, 4), torch.randn(2, 16), preact_maps=[torch.randn(2, *x) for x in t_shapes])
    y = torch.tensor([0, 1])
    method.eval()
    r5, r10, r40 = (method(s, t, y, e)["review"].item() for e in (5, 10, 40))
    assert r5 == pytest.approx(r10 / 2, rel=1e-5) and r40 == pytest.approx(r10 * 2, rel=1e-5)


# ----------------------------------------------------------------------------- CRD
def test_nce_loss_hand_computed():
    x = np.array([[0.5, 0.1, 0.2], [0.05, 0.3, 0.01]])
    n, k = 10, 2
    pn = k / n
    expected = -(np.log(x[:, 0] / (x[:, 0] + pn + 1e-7)).sum() + np.log(pn / (x[:, 1:] + pn + 1e-7)).sum()) / 2
    assert nce_loss(torch.tensor(x), n).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("k", [4, 30])  # 4 x 5 rows < 50: gather the rows; 4 x 31 >= 50: one matrix product
def test_crd_bank_dots_both_routes(k):
    memory, rows = torch.randn(50, 8), torch.randint(0, 50, (4, k + 1))
    v = torch.randn(4, 8, requires_grad=True)
    got = bank_dots(memory, v, rows)
    ref = torch.einsum("bkd,bd->bk", memory[rows], v)
    torch.testing.assert_close(got, ref)
    memory.add_(1.0)  # CRD updates the bank in place between forward and backward
    (g,) = torch.autograd.grad((got * torch.arange(k + 1.0)).sum(), v)
    (g_ref,) = torch.autograd.grad((ref * torch.arange(k + 1.0)).sum(), v)
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("mode", ["exact", "relax"])
def test_crd_negatives_come_from_other_classes(mode):
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    method = create_method("crd", _ctx(n=10, targets=targets), nce_k=4000, mode=mode)
    index = torch.tensor([0, 4, 8, 9])
    rows = method.contrast_indices(index, targets[index])
    assert rows.shape == (4, 4001)
    for b, i in enumerate(index):
        neg = rows[b, 1:]
        assert (targets[neg] != targets[i]).all()
        others = torch.nonzero(targets != targets[i]).flatten()
        counts = torch.bincount(neg, minlength=10)[others].float()
        assert (counts > 0).all() and counts.max() / counts.min() < 1.3  # uniform over the other rows
        if mode == "exact":
            assert rows[b, 0] == i
        else:
            assert targets[rows[b, 0]] == targets[i]


def test_crd_loss_memory_and_normaliser_hand_computed():
    """One step by hand: embeddings, scores against the other network's bank, Z from the first batch, NCE,
    then the momentum update of both banks at the batch's rows; Z stays fixed afterwards."""
    ctx = _ctx(num_classes=2, n=6, student_dim=3, teacher_dim=4)
    method = create_method("crd", ctx, feat_dim=2, nce_k=3, nce_momentum=0.3)
    rows = torch.tensor([[1, 2, 3, 5], [4, 0, 1, 3]])
    index = rows[:, 0]
    f_s, f_t = torch.randn(2, 3), torch.randn(2, 4)
    mem_s, mem_t = method.memory_s.clone().numpy(), method.memory_t.clone().numpy()
    s = Outputs(torch.randn(2, 2), f_s)
    t = Outputs(torch.randn(2, 2), f_t)
    with mock.patch.object(method, "contrast_indices", return_value=rows):
        terms = method(s, t, torch.tensor([1, 0]), 1, index=index)

    def embed(lin, f):
        v = f.numpy() @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    v_s, v_t = embed(method.embed_s.linear, f_s), embed(method.embed_t.linear, f_t)
    e_s = np.exp(np.einsum("bkd,bd->bk", mem_t[rows.numpy()], v_s) / 0.07)
    e_t = np.exp(np.einsum("bkd,bd->bk", mem_s[rows.numpy()], v_t) / 0.07)
    z_s, z_t = e_s.mean() * 6, e_t.mean() * 6

    def nce(x):
        pn = 3 / 6
        return -(np.log(x[:, 0] / (x[:, 0] + pn + 1e-7)).sum() + np.log(pn / (x[:, 1:] + pn + 1e-7)).sum()) / 2

    assert terms["crd"].item() == pytest.approx(0.8 * (nce(e_s / z_s) + nce(e_t / z_t)), rel=1e-4)
    np.testing.assert_allclose(method.z.numpy(), [z_s, z_t], rtol=1e-4)
    for mem, old, v in ((method.memory_s, mem_s, v_s), (method.memory_t, mem_t, v_t)):
        mixed = 0.3 * old[index.numpy()] + 0.7 * v
        np.testing.assert_allclose(mem[index].numpy(), mixed / np.linalg.norm(mixed, axis=1, keepdims=True),
                                   rtol=1e-5)
        untouched = [r for r in range(6) if r not in index.tolist()]
        np.testing.assert_array_equal(mem[untouched].numpy(), old[untouched])
    z_before = method.z.clone()
    method(s, t, torch.tensor([1, 0]), 1, index=torch.tensor([2, 3]))
    assert torch.equal(method.z, z_before)


def test_crd_errors_are_one_line():
    ctx = _ctx()
    ctx.train_targets = None
    with pytest.raises(ValueError, match="needs MethodContext.train_targets"):
        create_method("crd", ctx)
    with pytest.raises(ValueError, match="mode must be one of exact, relax"):
        create_method("crd", _ctx(), mode="loose")
    method = create_method("crd", _ctx())
    with pytest.raises(ValueError, match="needs the batch's dataset indices"):
        method(Outputs(torch.randn(2, 4), torch.randn(2, 8)), Outputs(torch.randn(2, 4), torch.randn(2, 16)),
               torch.tensor([0, 1]), 1)


# ----------------------------------------------------------------------------- a training step, zoo and timm
PAIRS = [("cifar_cnn_small", "cifar_cnn_tiny", 1, 28), ("resnet18", "resnet10t", 3, 32)]


def _pair(teacher, student, in_chans, size, num_classes=5):
    torch.manual_seed(0)
    t = create_model(teacher, num_classes=num_classes, in_chans=in_chans).eval()
    s = create_model(student, num_classes=num_classes, in_chans=in_chans).train()
    for p in t.parameters():
        p.requires_grad_(False)
    return t, s


@pytest.mark.parametrize("pair", PAIRS, ids=[p[1] for p in PAIRS])
@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_one_training_step(name, pair):
    """Through the harness's DistillStep: finite loss; the student's and the method's own parameters
    (connectors, fusion blocks, embeddings) move; the teacher gets no gradient and does not change."""
    teacher, student, in_chans, size = pair
    t, s = _pair(teacher, student, in_chans, size)
    n = 32
    targets = torch.arange(n) % 5
    ctx = MethodContext(class_counts=[n // 5 + (c < n % 5) for c in range(5)], student_dim=feature_dim(s),
                        teacher_dim=feature_dim(t), num_train=n, train_targets=targets,
                        student_shapes=map_shapes(s, (in_chans, size, size)),
                        teacher_shapes=map_shapes(t, (in_chans, size, size)))
    method = create_method(name, ctx, **({"nce_k": 16} if name == "crd" else {}))
    step = DistillStep(s, method, t)
    params = [p for p in step.parameters() if p.requires_grad]
    own = [p for p in method.parameters() if p.requires_grad]
    assert len(own) == len(list(method.parameters()))  # every module the method owns is trained
    assert not any(p is q for p in params for q in t.parameters())
    opt = torch.optim.SGD(params, lr=0.05)
    before_s = [p.detach().clone() for p in s.parameters()]
    before_own = [p.detach().clone() for p in own]
    before_t = {k: v.clone() for k, v in t.state_dict().items()}
    index = torch.randperm(n)[:8]
    x = torch.randn(8, in_chans, size, size)
    terms, logits = step(x, targets[index], 25, index=index)
    assert logits.shape == (8, 5)
    loss = sum(terms.values())
    assert torch.isfinite(loss) and all(v.ndim == 0 for v in terms.values())
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in t.parameters())
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before_s, s.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_own, own) if a.numel() > 1)
    for k, v in t.state_dict().items():
        assert torch.equal(v, before_t[k]), k


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_bf16_autocast_step(name):
    """The harness's AMP path (bf16 autocast; here on the CPU): finite float32 terms; RKD's and CRD's
    similarity computations run in float32 whatever the autocast."""
    t, s = _pair("cifar_cnn_small", "cifar_cnn_tiny", 1, 28)
    ctx = _ctx(num_classes=5, n=20, student_dim=feature_dim(s), teacher_dim=feature_dim(t),
               s_shapes=map_shapes(s, (1, 28, 28)), t_shapes=map_shapes(t, (1, 28, 28)))
    step = DistillStep(s, create_method(name, ctx, **({"nce_k": 8} if name == "crd" else {})), t)
    x, index = torch.randn(4, 1, 28, 28), torch.tensor([3, 9, 14, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms, _ = step(x, ctx.train_targets[index], 1, index=index)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()


def test_rkd_loss_under_bf16_autocast_is_the_reference():
    """RKD's distances and angles run in float32 whatever the autocast: still the reference value."""
    c = _cases()[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rkd_loss(_t(c["pooled_student"]), _t(c["pooled_teacher"]))
    assert got.item() == pytest.approx(c["values"][RKD_KEY], rel=1e-5)


# ----------------------------------------------------------------------------- forward_outputs: only what is needed
class _Spy:
    """Counts calls of a model's forward_features / forward_intermediates(_preact) without changing them."""

    def __init__(self, model):
        self.calls = {}
        for attr in ("forward_features", "forward_intermediates", "forward_intermediates_preact"):
            if hasattr(model, attr):
                setattr(model, attr, self._wrap(attr, getattr(model, attr)))

    def _wrap(self, attr, fn):
        def wrapped(*a, **k):
            self.calls[attr] = self.calls.get(attr, 0) + 1
            return fn(*a, **k)
        return wrapped


@pytest.mark.parametrize("name", ["cifar_resnet8", "resnet18"])
def test_forward_outputs_computes_only_what_is_needed(name):
    model = timm.create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref_logits = model(x)
        ref_maps = model.forward_intermediates(x, intermediates_only=True)
    spy = _Spy(model)
    with torch.no_grad():
        out = forward_outputs(model, x, {"logits", "features"})
    assert spy.calls == {"forward_features": 1}
    assert out.feature_maps is None and out.preact_maps is None
    torch.testing.assert_close(out.logits, ref_logits)
    spy.calls.clear()
    with torch.no_grad():
        out = forward_outputs(model, x, {"logits", "features", "feature_maps"})
    assert spy.calls == {"forward_intermediates": 1}  # one pass: no separate forward_features
    assert out.preact_maps is None and len(out.feature_maps) == len(ref_maps)
    torch.testing.assert_close(out.logits, ref_logits)
    assert out.features.shape == (2, feature_dim(model))
    for a, b in zip(out.feature_maps, ref_maps):
        torch.testing.assert_close(a, b)
    spy.calls.clear()
    with torch.no_grad():
        out = forward_outputs(model, x, {"logits", "features", "preact_maps"})
    zoo = name.startswith("cifar_")
    assert spy.calls == ({"forward_intermediates_preact": 1} if zoo else {"forward_intermediates": 1})
    assert out.feature_maps is None
    if zoo:
        assert all(torch.equal(F.relu(p), m) for p, m in zip(out.preact_maps, ref_maps))
    else:  # stock timm: no pre-activations exposed, the feature maps stand in (documented)
        assert all(torch.equal(p, m) for p, m in zip(out.preact_maps, ref_maps))
    with pytest.raises(ValueError, match="unknown needs \\['maps'\\]"):
        forward_outputs(model, x, {"logits", "maps"})


@pytest.mark.parametrize("needs", [{"logits"}, {"logits", "features", "index"}, {"logits", "feature_maps"},
                                   {"logits", "preact_maps"}, set(NEEDS)], ids=lambda n: "+".join(sorted(n)))
def test_forward_outputs_fills_what_the_method_contract_promises(needs):
    """The zoo fills exactly the :class:`Outputs` fields ``methods.base.filled_fields(needs)`` names; the rest
    are None (what ``Method.forward`` may rely on, per ``needs``)."""
    model = create_model("cifar_cnn_tiny", num_classes=5, in_chans=1).eval()
    with torch.no_grad():
        out = forward_outputs(model, torch.randn(2, 1, 28, 28), needs)
    filled = {f.name for f in dataclasses.fields(out) if getattr(out, f.name) is not None}
    assert filled == filled_fields(needs)


def test_logit_method_step_never_touches_intermediates():
    """The feature path costs the logit methods nothing: kd's step runs forward_features once per network."""
    t, s = _pair("cifar_cnn_small", "cifar_cnn_tiny", 1, 28)
    ctx = MethodContext(class_counts=[10] * 5, student_dim=feature_dim(s), teacher_dim=feature_dim(t))
    step = DistillStep(s, create_method("kd", ctx), t)
    spy_s, spy_t = _Spy(s), _Spy(t)
    step(torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), 1)
    assert spy_s.calls == {"forward_features": 1} and spy_t.calls == {"forward_features": 1}
    assert not step.needs_index


def test_distill_step_needs_index_and_shared_teacher_maps():
    t, s = _pair("cifar_cnn_small", "cifar_cnn_tiny", 1, 28)
    shapes_s, shapes_t = map_shapes(s, (1, 28, 28)), map_shapes(t, (1, 28, 28))
    ctx = _ctx(num_classes=5, n=20, student_dim=feature_dim(s), teacher_dim=feature_dim(t), s_shapes=shapes_s,
               t_shapes=shapes_t)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    crd = DistillStep(s, create_method("crd", ctx, nce_k=8), t)
    assert crd.needs_index
    with pytest.raises(ValueError, match="with_index=True"):
        crd(x, y, 1)
    index = torch.tensor([7, 3, 12, 0])
    with mock.patch.object(crd.method, "forward", wraps=crd.method.forward) as fwd:
        crd(x, y, 1, index=index)
    assert fwd.call_args.kwargs["index"] is index
    at = DistillStep(s, create_method("at", ctx), t)
    logit_only = frozen_outputs(t, x)  # what a cell computes for logit methods only
    with pytest.raises(ValueError, match="needs the teacher's feature_maps"):
        at(x, y, 1, logit_only)
    union = needs_of([crd.method, at.method, get_method("reviewkd")])
    assert union == {"logits", "features", "index", "feature_maps", "preact_maps"}
    shared = frozen_outputs(t, x, union)
    assert not shared.logits.is_inference() and not shared.feature_maps[0].is_inference()
    assert not any(m.requires_grad for m in shared.feature_maps)
    terms, _ = at(x, y, 1, shared)
    assert torch.isfinite(sum(terms.values()))
    # Method.setup's teacher callable is DistillStep.teacher_outputs: it carries the maps the method needs
    assert at.teacher_outputs(x).feature_maps is not None and at.teacher_outputs(x).preact_maps is None


def test_map_shapes_matches_intermediates_and_restores_mode():
    model = timm.create_model("cifar_wrn_16_1", num_classes=5).train()
    shapes = map_shapes(model, (3, 32, 32))
    assert shapes == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert model.training
    assert map_shapes(timm.create_model("resnet10t", num_classes=5), (3, 64, 64))[-1] == (512, 2, 2)


# ----------------------------------------------------------------------------- the data path's indices
def test_tensor_data_yields_dataset_rows():
    images = torch.randint(0, 256, (20, 1, 6, 6), dtype=torch.uint8)
    targets = torch.arange(20) % 3
    data = TensorData(images, targets, (0.5,), (0.25,), "cpu", padding=1, channels_last=False)
    plain = list(data.train_batches(4, seed=1, epoch=2, augment="none"))
    indexed = list(data.train_batches(4, seed=1, epoch=2, augment="none", with_index=True))
    assert len(plain) == len(indexed) == 5
    seen = torch.cat([idx for _, _, idx in indexed])
    assert sorted(seen.tolist()) == list(range(20))
    for (x0, y0), (x, y, idx) in zip(plain, indexed):
        assert torch.equal(x, x0) and torch.equal(y, y0)
        assert idx.dtype == torch.long and torch.equal(y, targets[idx])
        assert torch.equal(x, data.normalise(images[idx]))
    shards = [list(data.train_batches(2, 1, 2, "crop_flip", rank=r, world_size=2, with_index=True)) for r in (0, 1)]
    for r, shard in enumerate(shards):
        for x, y, idx in shard:
            assert torch.equal(y, targets[idx])
    assert not set(torch.cat([i for *_, i in shards[0]]).tolist()) & set(torch.cat([i for *_, i in shards[1]]).tolist())


class _ToyDataset(torch.utils.data.Dataset):
    def __init__(self, n):
        self.targets = [(7 * i) % 4 for i in range(n)]
        self.transform = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(i)), self.targets[i]


def test_loader_data_yields_dataset_rows():
    data = LoaderData(_ToyDataset(23), None, None, "cpu", workers=0, channels_last=False)
    batches = list(data.train_batches(5, seed=3, epoch=1, with_index=True))
    assert len(batches) == 4  # the last incomplete batch is dropped
    for x, y, idx in batches:
        assert torch.equal(x[:, 0, 0, 0].long(), idx)  # each image encodes its row
        assert torch.equal(y, data.targets[idx])
    plain = [y for _, y in data.train_batches(5, seed=3, epoch=1)]
    assert all(torch.equal(a, b) for a, (_, b, _) in zip(plain, batches))
