"""Golden values: every method's total loss, through the public API, against the reference implementations.

``tests/fixtures/reference_values.json`` holds losses computed by running the public reference code
(mdistiller, the official DIST, BKD and BalancedMetaSoftmax code, google-research's logit
adjustment) in float64 on fixed logits; ``tests/fixtures/README.md`` names repository, commit and file
of each. The methods compute in float32, hence rel 1e-5.

Methods without a reference implementation: ``krdistill*`` and ``ltkd`` are our reconstructions from
the papers' abstracts (no code or equations published to us), so their defaults have no golden value;
``ltkd`` is pinned where its docstring says it reduces to KD, ``krdistill*`` by the numpy references of
tests/test_methods.py.
"""
import functools
import json
import math
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch

from methods import MethodContext, Outputs, create_method
from methods.bkd import bkd_loss, effective_number_weights
from methods.dist import dist_loss
from methods.dkd import dkd_loss
from methods.kd import kd_loss

# the golden path must be warning-free (e.g. no deprecated implicit softmax dimension)
pytestmark = pytest.mark.filterwarnings("error")

REFERENCE = Path(__file__).parent / "fixtures" / "reference_values.json"
REL = 1e-5
DKD_KEY = "mdistiller.DKD total (ce 1, alpha 1, beta {beta}, T 4, warmup 20) epoch {epoch}"
DIST_TOTAL = "DIST official CIFAR total: CE + 2*DIST(1,1,4)"
DIST_2X_11 = "DIST official: 2*DIST(beta=1,gamma=1,tau=4)"
DIST_12 = "DIST official: DIST(beta=1,gamma=2,tau=4) (beta != gamma)"
BKD_TOTAL = "BKD reference total: CE + 1.0 * BKD KD term (T=2, effective-number weights beta 0.9999)"
BALANCED_SOFTMAX = "BalancedMetaSoftmax balanced_softmax_loss (mean)"
LA_CE = "logit_adjustment CE with log(prior**tau + 1e-12), tau={tau}"


@functools.lru_cache(maxsize=1)
def cases() -> List[dict]:
    return json.loads(REFERENCE.read_text())["cases"]


def case_id(case: dict) -> str:
    return f"C{case['C']}-B{case['B']}"


@pytest.fixture(params=range(3), ids=lambda i: case_id(cases()[i]))
def case(request) -> dict:
    return cases()[request.param]


def logits(case: dict, key: str) -> torch.Tensor:
    return torch.tensor(case[key], dtype=torch.float64)


def reference_ce(case: dict) -> float:
    """Plain CE of the case, taken out of the official DIST total (CE + 2 DIST(1,1,4)): no separate entry."""
    return case["values"][DIST_TOTAL] - case["values"][DIST_2X_11]


def total(name: str, case: dict, epoch: int = 1, teacher_logits=None, **hparams) -> float:
    """Sum of the loss terms of ``create_method(name, ...)`` on the case, as the harness sums them."""
    ctx = MethodContext(class_counts=case["class_counts"], student_dim=3, teacher_dim=5, epochs=240)
    method = create_method(name, ctx, **hparams)
    b = case["B"]
    student = Outputs(logits(case, "logits_student"), torch.zeros(b, 3, dtype=torch.float64))
    teacher = Outputs(logits(case, "logits_teacher") if teacher_logits is None else teacher_logits,
                      torch.zeros(b, 5, dtype=torch.float64))
    terms: Dict[str, torch.Tensor] = method(student, teacher, torch.tensor(case["target"]), epoch)
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values()), terms
    return float(sum(terms.values()))


def log_prior64(case: dict) -> torch.Tensor:
    counts = torch.tensor(case["class_counts"], dtype=torch.float64)
    return torch.log(counts / counts.sum())


def test_fixture_is_self_consistent():
    """The plain CE recovered from the DIST total equals the one in mdistiller's DKD totals."""
    for c in cases():
        dkd_ce = c["values"][DKD_KEY.format(beta=8.0, epoch=240)] - c["values"]["mdistiller.dkd_loss(alpha=1,beta=8.0,T=4)"]
        assert reference_ce(c) == pytest.approx(dkd_ce, rel=1e-9)


# ----------------------------------------------------------------------------- totals with defaults
def test_ce_total(case):
    assert total("ce", case) == pytest.approx(reference_ce(case), rel=REL)


def test_kd_total_is_mdistillers(case):
    """mdistiller KD: 0.1 * CE + 0.9 * kd_loss(T=4), our defaults."""
    assert total("kd", case) == pytest.approx(case["values"]["mdistiller.KD total (ce 0.1, kd 0.9, T=4)"], rel=REL)


@pytest.mark.parametrize("epoch", [1, 10, 20, 240])
def test_dkd_total_default_beta_8(case, epoch):
    """mdistiller DKD, resnet32x4->resnet8x4 config (beta 8), with its 20-epoch linear warm-up."""
    assert total("dkd", case, epoch) == pytest.approx(case["values"][DKD_KEY.format(beta=8.0, epoch=epoch)], rel=REL)


@pytest.mark.parametrize("beta", [6.0, 2.0])
@pytest.mark.parametrize("epoch", [1, 10, 20, 240])
def test_dkd_total_per_pair_betas(case, beta, epoch):
    """mdistiller's wrn_40_2->wrn_16_2 (beta 6) and resnet56->resnet20 (beta 2) configs."""
    got = total("dkd", case, epoch, beta=beta)
    assert got == pytest.approx(case["values"][DKD_KEY.format(beta=beta, epoch=epoch)], rel=REL)


def test_dist_total_is_official_cifar_setting(case):
    """Official DIST on CIFAR: CE + kd_loss_weight 2 * DIST(beta=1, gamma=1, tau=4) = our beta=gamma=2."""
    assert total("dist", case) == pytest.approx(case["values"][DIST_TOTAL], rel=REL)


def test_dist_total_beta_differs_from_gamma(case):
    """beta weighs the inter-class (per-sample) term, gamma the intra-class (per-class) term."""
    got = total("dist", case, beta=1.0, gamma=2.0)
    assert got == pytest.approx(reference_ce(case) + case["values"][DIST_12], rel=REL)


def test_bkd_total_is_reference(case):
    """BKD's CIFAR-100 setting: weights from the first epoch, CE + 1.0 * T^2 KL(re-weighted teacher), T=2."""
    assert total("bkd", case) == pytest.approx(case["values"][BKD_TOTAL], rel=REL)


def test_bkd_deferred_reweighting(case):
    """BKD's CIFAR-10 script (DRW): plain KD at T=2 through epoch ``drw_epoch``, the re-weighted teacher after."""
    plain = reference_ce(case) + case["values"]["mdistiller.kd_loss(T=2.0)"]
    assert total("bkd", case, 160, drw_epoch=160) == pytest.approx(plain, rel=REL)
    assert total("bkd", case, 161, drw_epoch=160) == pytest.approx(case["values"][BKD_TOTAL], rel=REL)


def test_bkd_class_weights(case):
    ctx = MethodContext(class_counts=case["class_counts"], student_dim=3, teacher_dim=5)
    got = create_method("bkd", ctx).class_weights.double().numpy()
    assert np.allclose(got, case["bkd_class_weights"], rtol=REL, atol=0)
    assert np.allclose(effective_number_weights(torch.tensor(case["class_counts"]), 0.9999).double().numpy(),
                       case["bkd_class_weights"], rtol=REL, atol=0)


def test_balanced_softmax_total(case):
    assert total("balanced_softmax", case) == pytest.approx(case["values"][BALANCED_SOFTMAX], rel=REL)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_la_kd_total(case, tau):
    """la_kd = logit-adjusted CE (google-research) + KD from the debiased teacher z_t - tau log pi.

    Feeding z_t + tau log pi as the teacher makes the debiased teacher the fixture's teacher, so the
    KD part is mdistiller's kd_loss(T=4). The reference adds 1e-12 inside the log: below float32."""
    shifted = logits(case, "logits_teacher") + tau * log_prior64(case)
    got = total("la_kd", case, teacher_logits=shifted, tau=tau)
    want = case["values"][LA_CE.format(tau=tau)] + case["values"]["mdistiller.kd_loss(T=4.0)"]
    assert got == pytest.approx(want, rel=REL)


def test_ltkd_reduces_to_kd(case):
    """No reference code exists for LTKD (a reconstruction); with rebalancing and equal weights off its
    KD term is Hinton's KD by the chain rule, so the total is CE + kd_loss(T=4)."""
    got = total("ltkd", case, rebalance=False, uniform_within=False)
    assert got == pytest.approx(reference_ce(case) + case["values"]["mdistiller.kd_loss(T=4.0)"], rel=REL)


TERMS = {"ce": {"ce"}, "kd": {"ce", "kd"}, "dkd": {"ce", "dkd"}, "dist": {"ce", "dist"}, "bkd": {"ce", "kd"},
         "balanced_softmax": {"ce"}, "la_kd": {"ce", "kd"}, "ltkd": {"ce", "ltkd"}}


@pytest.mark.parametrize("name", sorted(TERMS))
def test_loss_term_names(name):
    """The term names become the run history's loss_<name> entries: renaming one breaks comparisons across runs."""
    c = cases()[0]
    ctx = MethodContext(class_counts=c["class_counts"], student_dim=3, teacher_dim=5)
    out = Outputs(logits(c, "logits_student"), torch.zeros(c["B"], 3))
    terms = create_method(name, ctx)(out, Outputs(logits(c, "logits_teacher"), torch.zeros(c["B"], 5)),
                                     torch.tensor(c["target"]), 1)
    assert set(terms) == TERMS[name]


# ----------------------------------------------------------------------------- the pure loss functions
@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_loss(case, T):
    got = float(kd_loss(logits(case, "logits_student"), logits(case, "logits_teacher"), T))
    assert got == pytest.approx(case["values"][f"mdistiller.kd_loss(T={T})"], rel=REL)


@pytest.mark.parametrize("beta", [8.0, 6.0, 2.0])
def test_dkd_loss(case, beta):
    got = float(dkd_loss(logits(case, "logits_student"), logits(case, "logits_teacher"),
                         torch.tensor(case["target"]), 1.0, beta, 4.0))
    assert got == pytest.approx(case["values"][f"mdistiller.dkd_loss(alpha=1,beta={beta},T=4)"], rel=REL)


def test_dist_loss(case):
    zs, zt = logits(case, "logits_student"), logits(case, "logits_teacher")
    assert 2 * float(dist_loss(zs, zt, 1.0, 1.0, 4.0)) == pytest.approx(case["values"][DIST_2X_11], rel=REL)
    assert float(dist_loss(zs, zt, 1.0, 2.0, 4.0)) == pytest.approx(case["values"][DIST_12], rel=REL)


def test_bkd_loss(case):
    zs, zt = logits(case, "logits_student"), logits(case, "logits_teacher")
    weights = torch.tensor(case["bkd_class_weights"])
    want = case["values"][BKD_TOTAL] - reference_ce(case)
    assert float(bkd_loss(zs, zt, weights, 2.0)) == pytest.approx(want, rel=REL)


def test_golden_values_are_not_degenerate():
    """Guards the guards: the totals must differ enough that a swapped weight or dropped term shows."""
    for c in cases():
        v = c["values"]
        assert not math.isclose(v[DKD_KEY.format(beta=8.0, epoch=1)], v[DKD_KEY.format(beta=8.0, epoch=10)], rel_tol=1e-3)
        inter_plus_intra = v[DIST_2X_11] / 2
        intra, inter = v[DIST_12] - inter_plus_intra, 2 * inter_plus_intra - v[DIST_12]
        assert not math.isclose(inter, intra, rel_tol=1e-3)  # swapping beta and gamma changes DIST(1, 2)
        assert reference_ce(c) > 1e-3 * v[DIST_TOTAL]  # dropping CE is visible


# ----------------------------------------------------------------------------- the suites' literature settings
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MDISTILLER_DKD_BETA = {("cifar_resnet32x4", "cifar_resnet8x4"): 8, ("cifar_wrn_40_2", "cifar_wrn_16_2"): 6,
                       ("cifar_resnet56", "cifar_resnet20"): 2}


def suite_yaml(name: str) -> dict:
    import yaml

    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


@pytest.mark.parametrize("suite", ["cifar10_lt", "cifar100_lt"])
def test_cifar_suites_use_mdistillers_per_pair_dkd_beta(suite):
    pairs = suite_yaml(suite)["pairs"]
    got = {(p["teacher"], p["student"]): p["method_params"]["dkd"]["beta"] for p in pairs}
    assert got == MDISTILLER_DKD_BETA


def test_cifar10_bkd_defers_reweighting_to_the_first_lr_decay():
    cfg = suite_yaml("cifar10_lt")
    assert cfg["method_params"]["bkd"]["drw_epoch"] == cfg["student_train"]["milestones"][0] == 150
    assert "bkd" not in (suite_yaml("cifar100_lt").get("method_params") or {})  # BKD's CIFAR-100 script: no DRW


@pytest.mark.parametrize("suite", ["imagenet_lt", "places_lt"])
def test_imagenet_scale_suites_use_mdistillers_imagenet_settings(suite):
    params = suite_yaml(suite)["method_params"]
    assert params["kd"] == {"temperature": 1.0, "alpha": 0.5}
    assert params["dkd"] == {"beta": 0.5, "temperature": 1.0, "warmup": 1}
