"""timm's own model checks, written for this repository in the spirit of timm's tests/test_models.py, over the
whole zoo: ``features_only`` wrappers (feature_info channels and reductions), ``forward_intermediates`` vs
``forward_features``, default cfgs with ``reset_classifier(0, '')``, TorchScript, gradient checkpointing,
``prune_intermediate_layers`` and the zoo's pre-activation maps.

Inputs are the default cfg's 3x32x32 at batch 1 (2 where BatchNorm trains), single-threaded.
"""
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import FeatureInfo

import benchmark  # noqa: F401  (registers the zoo)
from benchmark.models import ZOO_MODULES, list_zoo

ZOO = list_zoo()
# one model per family (module) for the wrappers timm's tests do not run on every model
FAMILY = [timm.list_models(module=m)[0] for m in ZOO_MODULES]
# levels whose output is relu(pre-activation): all but MobileNetV2's linear bottlenecks and the pre-act WRN
POST_ACT = [n for n in ZOO if not n.startswith(("cifar_mobilenetv2", "cifar_wrn"))]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: single-threaded


def _input(model, batch: int = 1) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


def _create(name: str, **kwargs):
    """Same seed, same weights: a wrapper built by timm computes what the plain model computes."""
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def _check_levels(outputs, channels, reductions, size: int, batch: int) -> None:
    assert len(outputs) == len(channels) >= 3
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[0] == batch and o.shape[1] == c, (o.shape, c)
        assert o.shape[2] == o.shape[3] == math.ceil(size / r), (o.shape, r)
        assert torch.isfinite(o).all()


@pytest.mark.parametrize("name", ZOO)
def test_features_only_default_wrapper(name):
    """timm's test_model_forward_features: ``features_only=True`` gives every level, as ``feature_info`` says."""
    model = _create(name, features_only=True)
    x = _input(model)
    with torch.no_grad():
        outputs = model(x)
    _check_levels(outputs, model.feature_info.channels(), model.feature_info.reduction(), x.shape[-1], 1)
    plain = _create(name)
    with torch.no_grad():
        ref = plain.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(outputs, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ZOO)
def test_forward_intermediates(name):
    """timm's test_model_forward_intermediates(+_features): levels match feature_info, the final output is
    forward_features, the 'getter' wrapper agrees, indices / stop_early select, checkpointing changes nothing."""
    model = _create(name)
    info = FeatureInfo(model.feature_info, len(model.feature_info))
    x = _input(model)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        _check_levels(inter, info.channels(), info.reduction(), x.shape[-1], 1)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2 and all(torch.equal(a, b) for a, b in zip(last_two, inter[-2:]))
        stop, first = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert torch.equal(stop, inter[0]) and torch.equal(first[0], inter[0])
        getter = _create(name, features_only=True, feature_cls="getter")
        for a, b in zip(getter(x), inter):
            torch.testing.assert_close(a, b)
        model.set_grad_checkpointing()
        final_ckpt, inter_ckpt = model.forward_intermediates(x)
        torch.testing.assert_close(final_ckpt, final, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.forward_features(x), final, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ZOO)
def test_default_cfg_and_reset_classifier(name):
    """timm's test_model_default_cfgs: pool_size, num_features / head_hidden_size, reset_classifier(0) and
    (0, ''), num_classes=0 + global_pool='' at creation, classifier and first conv named by the cfg."""
    model = _create(name)
    cfg = model.pretrained_cfg
    x = _input(model)
    with torch.no_grad():
        fmap = model.forward_features(x)
        assert tuple(fmap.shape[-2:]) == tuple(cfg["pool_size"]) and fmap.shape[1] == model.num_features
        pre = model.forward_head(fmap, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        state = model.state_dict()
        assert cfg["classifier"] + ".weight" in state and cfg["first_conv"] + ".weight" in state
        model.reset_classifier(0)
        out = model(x)
        assert out.shape == pre.shape
        torch.testing.assert_close(out, pre)
        model.reset_classifier(0, "")
        out = model(x)
        assert out.ndim == 4 and tuple(out.shape[-2:]) == tuple(cfg["pool_size"])
        unpooled = _create(name, num_classes=0, global_pool="")
        assert unpooled(x).shape == fmap.shape
        model.reset_classifier(5, "max")
        assert model(x).shape == (1, 5)
    with pytest.raises(ValueError, match="global_pool='' .*needs num_classes=0"):
        model.reset_classifier(5, "")
    with pytest.raises(ValueError, match="unknown global_pool 'median'"):
        model.reset_classifier(0, "median")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ZOO)
def test_torchscript(name):
    """timm's test_model_forward_torchscript: ``torch.jit.script`` compiles the model and computes the same."""
    with timm.layers.set_scriptable(True):
        model = _create(name)
    x = _input(model)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("feature_cls", ["hook", "dict", "fx"])
@pytest.mark.parametrize("name", FAMILY)
def test_other_feature_wrappers(name, feature_cls):
    """timm's hook / dict / FX feature wrappers reach the same levels (one model per family)."""
    model = _create(name, features_only=True, feature_cls=feature_cls)
    x = _input(model)
    with torch.no_grad():
        outputs = model(x)
        ref = _create(name).forward_intermediates(x, intermediates_only=True)
    outputs = list(outputs.values()) if isinstance(outputs, dict) else list(outputs)
    assert len(outputs) == len(ref)
    for a, b in zip(outputs, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["cifar_resnet8", "cifar_wrn_16_1", "cifar_mobilenetv2", "cifar_vgg8"])
def test_prune_intermediate_layers(name):
    """Pruning keeps the requested levels (same values) and drops the rest, the tail and the head."""
    model = _create(name)
    x = _input(model)
    with torch.no_grad():
        ref = model.forward_intermediates(x, intermediates_only=True)
    n = len(ref)
    take = model.prune_intermediate_layers([0, 1])
    assert take == [0, 1] and model.num_classes == 0
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in _create(name).parameters())
    with torch.no_grad():
        kept = model.forward_intermediates(x, indices=take, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(kept, ref[:2]))
        assert torch.equal(model.forward_features(x), ref[1])  # the pruned levels are pass-through now
    assert n > 2


def test_norm_applies_the_final_norm_to_the_last_level():
    """WRN's levels are taken before its final BN-ReLU; ``norm=True`` applies it to the last one."""
    model = _create("cifar_wrn_16_1")
    x = _input(model)
    with torch.no_grad():
        final, raw = model.forward_intermediates(x)
        _, normed = model.forward_intermediates(x, norm=True)
    assert not torch.equal(raw[-1], final) and torch.equal(normed[-1], final)
    for a, b in zip(raw[:-1], normed[:-1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ZOO)
def test_preact_maps_in_the_same_pass(name):
    """forward_intermediates_preact: the same final output and levels; relu(pre-activation) = level output for
    post-activation networks, the next BN's output for the WRN, the output itself for linear bottlenecks."""
    model = _create(name)
    x = _input(model, batch=2)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        final_p, maps_p, pres = model.forward_intermediates_preact(x)
    assert torch.equal(final_p, final) and all(torch.equal(a, b) for a, b in zip(maps_p, maps))
    assert len(pres) == len(maps) and all(p.shape == m.shape for p, m in zip(pres, maps))
    if name in POST_ACT:
        for m, p in zip(maps, pres):
            assert torch.equal(F.relu(p), m)
            assert (p < 0).any()  # a real pre-activation, not the output again
    elif name.startswith("cifar_wrn"):
        bns = [model.block1[0].bn1, model.block2[0].bn1, model.block3[0].bn1, model.bn1]
        with torch.no_grad():
            for bn, m, p in zip(bns, maps, pres):
                torch.testing.assert_close(p, bn(m))
    else:  # MobileNetV2: the stem ends in conv-BN-ReLU, the block groups in linear bottlenecks
        assert torch.equal(F.relu(pres[0]), maps[0]) and (pres[0] < 0).any()
        for m, p in zip(maps[1:], pres[1:]):
            assert torch.equal(p, m)


def test_wrn_preact_in_training_leaves_running_stats_alone():
    """The WRN's pre-activations use the next BN as the forward does, without a second running-stat update."""
    model = _create("cifar_wrn_16_1").train()
    x = _input(model, batch=4)
    plain = _create("cifar_wrn_16_1").train()
    with torch.no_grad():
        plain.forward_features(x)
        _, maps, pres = model.forward_intermediates_preact(x)
    for a, b in zip(model.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    ref = F.batch_norm(maps[1], None, None, model.block2[0].bn1.weight, model.block2[0].bn1.bias, True)
    torch.testing.assert_close(pres[1], ref)
