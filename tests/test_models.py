"""The model zoo (benchmark.models): timm registration, timm's head API, parameter counts, features API,
checkpoint compatibility. timm's own feature / TorchScript checks are in test_timm_conformance.py."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

import benchmark  # noqa: F401  (registers the zoo)
from benchmark.models import create_model, feature_dim, forward_with_features, list_zoo

REPO = Path(__file__).resolve().parent.parent
ZOO = list_zoo()

# Parameter counts with 100 classes as reported in the KD literature (CRD, Tian et al. 2020; DKD,
# Zhao et al. 2022; ReviewKD): ours must be within 2%.
LITERATURE_PARAMS_M = {
    "cifar_resnet8x4": 1.23,
    "cifar_resnet32x4": 7.43,
    "cifar_wrn_40_2": 2.26,
    "cifar_wrn_16_2": 0.70,
    "cifar_wrn_40_1": 0.57,
    "cifar_resnet20": 0.28,
    "cifar_resnet32": 0.47,
    "cifar_resnet56": 0.86,
    "cifar_resnet110": 1.73,
    "cifar_vgg8": 3.96,
    "cifar_vgg13": 9.46,
    "cifar_mobilenetv2": 0.81,
    "cifar_shufflenetv1": 0.95,
    "cifar_shufflenetv2": 1.36,
}

EXPECTED_ZOO = {
    "cifar_resnet8", "cifar_resnet14", "cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56",
    "cifar_resnet110", "cifar_resnet8x4", "cifar_resnet32x4", "cifar_wrn_16_1", "cifar_wrn_16_2",
    "cifar_wrn_40_1", "cifar_wrn_40_2", "cifar_vgg8", "cifar_vgg11", "cifar_vgg13", "cifar_mobilenetv2",
    "cifar_shufflenetv1", "cifar_shufflenetv2", "cifar_cnn_tiny", "cifar_cnn_small",
}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


pytestmark = pytest.mark.usefixtures("one_thread", "torch_seed")  # conftest: single-threaded, seeded with 0


def test_zoo_registered_in_timm():
    assert set(ZOO) == EXPECTED_ZOO
    assert set(timm.list_models("cifar_*")) >= EXPECTED_ZOO
    for name in ZOO:
        assert timm.is_model(name)


def test_timm_create_model_after_import_benchmark_fresh_interpreter():
    code = ("import benchmark, timm; m = timm.create_model('cifar_resnet8x4', num_classes=100); "
            "print(type(m).__name__, m.num_classes)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["CifarResNet", "100"]


@pytest.mark.parametrize("name", ZOO)
def test_forward_backward(name):
    """One training step's forward/backward on 2x3x32x32 and on 2x1x28x28 (in_chans=1, Fashion-MNIST)."""
    for in_chans, size, num_classes in ((3, 32, 10), (1, 28, 7)):
        model = timm.create_model(name, num_classes=num_classes, in_chans=in_chans, drop_rate=0.1)
        model.train()
        x = torch.randn(2, in_chans, size, size)
        fmap = model.forward_features(x)
        assert fmap.ndim == 4 and fmap.shape[:2] == (2, model.num_features), fmap.shape
        logits = model(x)
        assert logits.shape == (2, num_classes)
        assert model.num_classes == num_classes
        logits.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"no gradient for {missing[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(LITERATURE_PARAMS_M))
def test_param_count_matches_literature(name):
    model = timm.create_model(name, num_classes=100)
    n = _n_params(model) / 1e6
    ref = LITERATURE_PARAMS_M[name]
    assert abs(n - ref) / ref < 0.02, f"{name}: {n:.3f}M params, literature {ref}M"


def test_cnn_sizes_for_the_cpu_suites():
    tiny = _n_params(timm.create_model("cifar_cnn_tiny", num_classes=10, in_chans=1))
    small = _n_params(timm.create_model("cifar_cnn_small", num_classes=10, in_chans=1))
    assert 20_000 <= tiny <= 30_000, tiny
    assert 150_000 <= small <= 300_000, small


@pytest.mark.parametrize("name", ZOO + ["resnet18", "mobilenetv2_100"])
def test_forward_with_features_matches_forward(name):
    model = timm.create_model(name, num_classes=10, pretrained=False).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = forward_with_features(model, x)
        ref = model(x)
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    assert feats.shape == (2, feature_dim(model))
    assert feature_dim(model) == model.num_features


def test_forward_with_features_in_train_mode_keeps_graph():
    model = timm.create_model("cifar_resnet8", num_classes=5).train()
    logits, feats = forward_with_features(model, torch.randn(4, 3, 32, 32))
    (logits.sum() + feats.sum()).backward()
    assert model.conv1.weight.grad is not None


@pytest.mark.parametrize("name", ["cifar_wrn_16_2", "resnet18"])
def test_forward_with_features_num_classes_zero(name):
    model = timm.create_model(name, num_classes=0).eval()
    assert isinstance(model.get_classifier(), nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = forward_with_features(model, x)
        ref = model(x)
    torch.testing.assert_close(logits, ref)
    torch.testing.assert_close(feats, ref)
    assert feats.shape == (2, feature_dim(model))


def test_feature_dim_uses_pre_logits_width_of_extra_head_layers():
    # MobileNetV3's head has a 1x1 conv after pooling: pre_logits width (1024) != num_features (576)
    model = timm.create_model("mobilenetv3_small_100", num_classes=10).eval()
    with torch.no_grad():
        logits, feats = forward_with_features(model, torch.randn(2, 3, 32, 32))
    assert feats.shape[1] == feature_dim(model) == 1024 != model.num_features


def test_create_model_wrapper_and_unknown_name():
    model = create_model("cifar_resnet8x4", num_classes=10, in_chans=1)
    assert model.num_classes == 10 and model.conv1.in_channels == 1
    with pytest.raises(ValueError) as err:
        create_model("cifar_resnet8x3", num_classes=10)
    msg = str(err.value)
    assert "\n" not in msg and "cifar_resnet8x3" in msg and "cifar_resnet8x4" in msg
    with pytest.raises(ValueError, match="unknown model"):
        create_model("no_such_net_at_all", num_classes=10)


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_cnn_tiny"])
def test_pretrained_true_raises_clearly(name):
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model(name, pretrained=True)


def test_unsupported_kwargs_raise():
    with pytest.raises(ValueError, match="drop_path_rate"):
        timm.create_model("cifar_resnet20", drop_path_rate=0.1)
    with pytest.raises(TypeError):
        timm.create_model("cifar_resnet20", not_an_arg=1)


def test_default_cfg_and_head_api():
    model = timm.create_model("cifar_resnet8x4")
    assert model.num_classes == 100  # the default cfg's class count
    cfg = model.pretrained_cfg
    assert model.default_cfg == cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["num_classes"] == 100
    assert cfg["mean"] == pytest.approx((0.5071, 0.4865, 0.4409))
    assert cfg["std"] == pytest.approx((0.2673, 0.2564, 0.2762))
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (3, 32, 32)
    assert model.get_classifier() is model.fc and model.get_classifier(name_only=True) == "fc"
    model.reset_classifier(7)
    assert model.num_classes == 7 and model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    model.reset_classifier(0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 256)


# sha256 (first 12 hex) of the state dict's "key:shape" lines at 10 classes: the layout of every checkpoint the
# harness has saved (equal to the zoo before it gained timm's feature API). A change here breaks old checkpoints.
STATE_DICT_LAYOUT = {
    "cifar_cnn_small": "dea538d13c66", "cifar_cnn_tiny": "c714b398860f", "cifar_mobilenetv2": "2737c5d8d4e3",
    "cifar_resnet8": "23664d4d1c65", "cifar_resnet8x4": "688e07bfb6c0", "cifar_resnet14": "c870ffdf5dd7",
    "cifar_resnet20": "301aa5a51c65", "cifar_resnet32": "30550ba3c1a8", "cifar_resnet32x4": "0dc17b73134a",
    "cifar_resnet44": "0ce9b35a3ec8", "cifar_resnet56": "4cd1e2f80073", "cifar_resnet110": "a10e8e1a9a53",
    "cifar_shufflenetv1": "29ba105e3283", "cifar_shufflenetv2": "6084ca2259de", "cifar_vgg8": "f13867689cae",
    "cifar_vgg11": "ee1a8f3363c8", "cifar_vgg13": "a0963d9f9ebe", "cifar_wrn_16_1": "0954dc4df575",
    "cifar_wrn_16_2": "42a704a3d21e", "cifar_wrn_40_1": "9b719a7d821e", "cifar_wrn_40_2": "f61df4f6f1f3",
}


@pytest.mark.parametrize("name", ZOO)
def test_state_dict_layout_is_stable(name):
    sd = timm.create_model(name, num_classes=10).state_dict()
    layout = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    assert hashlib.sha256(layout.encode()).hexdigest()[:12] == STATE_DICT_LAYOUT[name]


def test_checkpoint_path_round_trip(tmp_path):
    model = timm.create_model("cifar_wrn_16_1", num_classes=10).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = timm.create_model("cifar_wrn_16_1", num_classes=10, checkpoint_path=str(tmp_path / "w.pt")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_channels_last_matches():
    model = timm.create_model("cifar_wrn_16_1", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
