"""The method contract of ``methods/base.py``, checked for EVERY registered method: the builtins the registry finds
in ``methods/``, installed entry-point plugins, and the example plugins of ``tests/plugin_fixtures`` (loaded as a
suite's ``plugins:`` would load them). A new method file or plugin is tested here without editing a list.

Each method constructs with its default hyper-parameters on a tiny :class:`MethodContext`; its ``forward``, given
tiny :class:`Outputs` holding exactly the fields its ``needs`` promise (the rest None), returns finite 0-dim
float tensors (:data:`LossTerms`) whose sum back-propagates to the student's logits and never to the teacher;
its ``needs`` are known; its ``hparams``, ``hparam_bounds`` and ``epoch_params`` agree with one another; its
checkpoint holds nothing derived from the class counts."""
import dataclasses
import sys
from pathlib import Path
from typing import Dict, Tuple, get_args

import pytest
import torch

import methods
from methods import MethodContext, Outputs, get_method, list_methods
from methods.base import (ALWAYS_FILLED, DEFAULT_NEEDS, FIELD_NEEDS, KEYWORD_NEEDS, NEEDS, LossTerms, Need,
                          check_loss_terms, filled_fields, forward_keywords)

PLUGIN_DIR = Path(__file__).parent / "plugin_fixtures"
PLUGIN_MODULES = sorted(p.stem for p in PLUGIN_DIR.glob("*.py"))

COUNTS = [12, 8, 6, 4, 2]  # the TRAIN class counts of the tiny task: 5 classes, 32 rows
TARGETS = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
STUDENT_SHAPES = [(4, 8, 8), (8, 4, 4), (8, 2, 2)]  # (C, H, W) of each feature level; pooled features: 8
TEACHER_SHAPES = [(6, 8, 8), (12, 4, 4), (12, 2, 2)]  # pooled features: 12
BATCH = 6


def _plugin_methods() -> Dict[str, type]:
    """The methods the plugin fixtures register, loaded through ``load_plugins`` with their folder on the path,
    then forgotten by the registry (other tests count the registered methods)."""
    list_methods()  # the builtins and entry points, registered before the snapshot
    sys.path.insert(0, str(PLUGIN_DIR))
    try:
        with methods.REGISTRY.isolated():
            before = set(list_methods())
            methods.load_plugins(PLUGIN_MODULES)
            return {name: get_method(name) for name in list_methods() if name not in before}
    finally:
        sys.path.remove(str(PLUGIN_DIR))
        for module in PLUGIN_MODULES:
            sys.modules.pop(module, None)


PLUGINS = _plugin_methods()
ALL = {**{name: get_method(name) for name in list_methods()}, **PLUGINS}


@pytest.fixture(params=sorted(ALL))
def method_cls(request):
    """Each registered method class in turn (builtins, entry points, plugin fixtures)."""
    return ALL[request.param]


def tiny_context() -> MethodContext:
    """A 5-class task of 32 training rows, with feature widths and level shapes for feature methods."""
    return MethodContext(class_counts=COUNTS, student_dim=STUDENT_SHAPES[-1][0], teacher_dim=TEACHER_SHAPES[-1][0],
                         epochs=10, num_train=len(TARGETS), train_targets=TARGETS.tolist(),
                         student_shapes=STUDENT_SHAPES, teacher_shapes=TEACHER_SHAPES)


def tiny_outputs(shapes, needs, rows: int, seed: int, requires_grad: bool = False) -> Outputs:
    """Random :class:`Outputs` of a network with level ``shapes``: the fields ``filled_fields(needs)`` names,
    every other field None (so reading an undeclared one fails); leaves that require grad when asked."""
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return (torch.randn(*shape, generator=g) * 2).requires_grad_(requires_grad)

    filled = filled_fields(needs)
    maps = {kind: [leaf(rows, *s) for s in shapes] if kind in filled else None for kind in FIELD_NEEDS}
    return Outputs(leaf(rows, len(COUNTS)), leaf(rows, shapes[-1][0]), **maps)


def _teacher_fn(needs):
    """``setup``'s frozen-teacher callable: inputs are dataset row ids, outputs fixed per row."""
    bank = tiny_outputs(TEACHER_SHAPES, needs, len(TARGETS), seed=1)

    def teacher(x):
        rows = x.long()
        return Outputs(bank.logits[rows], bank.features[rows],
                       **{k: None if getattr(bank, k) is None else [m[rows] for m in getattr(bank, k)]
                          for k in FIELD_NEEDS})
    return teacher


def ready_method(cls):
    """``cls`` with its default hyper-parameters on the tiny context, after its one-time ``setup``."""
    method = cls(tiny_context())
    rows = torch.arange(len(TARGETS))
    batches = lambda: ((rows[i:i + 8], TARGETS[i:i + 8]) for i in range(0, len(rows), 8))  # noqa: E731
    method.setup(_teacher_fn(cls.needs) if cls.requires_teacher else None, batches)
    return method


def one_forward(method) -> Tuple[LossTerms, Outputs, Outputs]:
    """``forward`` on one tiny batch built from the method's ``needs`` (student and teacher leaves require grad)."""
    needs = type(method).needs
    student = tiny_outputs(STUDENT_SHAPES, needs, BATCH, seed=2, requires_grad=True)
    teacher = tiny_outputs(TEACHER_SHAPES, needs, BATCH, seed=3, requires_grad=True)
    index = torch.tensor([0, 13, 21, 27, 30, 5])
    extra = {"index": index} if "index" in forward_keywords(needs) else {}
    terms = method(student, teacher if type(method).requires_teacher else None, TARGETS[index], 10, **extra)
    return terms, student, teacher


# ----------------------------------------------------------------------------- the contract's own constants
def test_need_sets_partition_the_needs():
    assert frozenset(get_args(Need)) == NEEDS
    assert ALWAYS_FILLED | FIELD_NEEDS | KEYWORD_NEEDS == NEEDS
    assert len(ALWAYS_FILLED) + len(FIELD_NEEDS) + len(KEYWORD_NEEDS) == len(NEEDS)  # disjoint
    fields = {f.name for f in dataclasses.fields(Outputs)}
    assert ALWAYS_FILLED | FIELD_NEEDS == fields  # every Outputs field is named by the contract
    assert DEFAULT_NEEDS <= NEEDS


def test_filled_fields_and_forward_keywords():
    assert filled_fields(DEFAULT_NEEDS) == {"logits", "features"}
    assert filled_fields({"logits"}) == {"logits", "features"}  # one forward pass gives both
    assert filled_fields({"logits", "preact_maps", "index"}) == {"logits", "features", "preact_maps"}
    assert forward_keywords({"logits", "features", "feature_maps"}) == frozenset()
    assert forward_keywords({"logits", "index"}) == {"index"}


def test_plugin_fixtures_are_among_the_tested_methods():
    assert "my_kd" in PLUGINS and "my_kd" not in list_methods()  # loaded for these tests, then forgotten


# ----------------------------------------------------------------------------- every registered method
def test_needs_are_known(method_cls):
    assert isinstance(method_cls.needs, frozenset) and method_cls.needs <= NEEDS, sorted(method_cls.needs - NEEDS)


def test_metadata(method_cls):
    assert ALL[method_cls.name] is method_cls  # registered under its own name
    assert isinstance(method_cls.summary, str) and method_cls.summary.strip()
    assert isinstance(method_cls.requires_teacher, bool)


def test_hparams_bounds_and_epoch_params_agree(method_cls):
    hparams = method_cls.hparams
    assert all(isinstance(k, str) for k in hparams)
    assert set(method_cls.hparam_bounds) <= set(hparams)
    assert set(method_cls.epoch_params) <= set(hparams)
    # every default passes the method's own type and range checks (given back as overrides, it is checked)
    assert method_cls.validate_hparams(dict(hparams)) == hparams


def test_constructs_with_default_hparams(method_cls):
    method = method_cls(tiny_context())
    assert method.config == method_cls.hparams
    assert all(getattr(method, k) == v for k, v in method_cls.hparams.items())


def test_checkpoint_holds_nothing_derived_from_the_class_counts(method_cls):
    """A buffer computed from the TRAIN class counts (prior, class weights, groups) is rebuilt from the run's
    context, never read back from a checkpoint: only what does not depend on the counts is in the state_dict."""
    def build(counts):
        torch.manual_seed(0)  # the same random initialisation for both
        targets = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
        ctx = dataclasses.replace(tiny_context(), class_counts=counts, train_targets=targets.tolist())
        return method_cls(ctx)

    a, b = build(COUNTS), build(COUNTS[::-1])
    saved = a.state_dict()
    for name, buf in b.named_buffers():
        if buf.shape != a.get_buffer(name).shape or not torch.equal(buf, a.get_buffer(name)):
            assert name not in saved, f"{method_cls.name}: buffer '{name}' depends on the class counts but is saved"


def test_forward_returns_finite_scalar_terms(method_cls):
    terms, _, _ = one_forward(ready_method(method_cls))
    assert check_loss_terms(terms, method_cls.name) is terms
    for name, value in terms.items():
        assert value.dtype.is_floating_point and torch.isfinite(value), (name, value)


def test_backward_reaches_student_logits_never_teacher(method_cls):
    method = ready_method(method_cls)
    terms, student, teacher = one_forward(method)
    sum(terms.values()).backward()
    assert student.logits.grad is not None and student.logits.grad.abs().sum() > 0
    frozen = [teacher.logits, teacher.features] + [m for k in FIELD_NEEDS for m in (getattr(teacher, k) or [])]
    assert all(t.grad is None for t in frozen)  # teacher outputs are targets (as_target), never trained


# ----------------------------------------------------------------------------- the harness-side check
def test_check_loss_terms_accepts_the_contract():
    terms = {"ce": torch.tensor(1.0), "kd": torch.tensor(0.5, dtype=torch.bfloat16)}
    assert check_loss_terms(terms, "kd") is terms


def test_check_loss_terms_rejects_a_non_scalar_term():
    with pytest.raises(TypeError, match=r"^method 'my_kd': loss term 'kd' has shape \(6,\), not 0-dim; reduce it"):
        check_loss_terms({"ce": torch.tensor(1.0), "kd": torch.ones(6)}, "my_kd")


def test_check_loss_terms_rejects_a_non_tensor_term():
    with pytest.raises(TypeError, match=r"^method 'my_kd': loss term 'kd' is float 0.5, not a tensor"):
        check_loss_terms({"kd": 0.5}, "my_kd")


def test_check_loss_terms_rejects_a_bare_tensor():
    with pytest.raises(TypeError, match=r"^method 'my_kd': forward returned Tensor tensor\(2\.\); return a non-empty "
                                        r"dict of named loss terms"):
        check_loss_terms(torch.tensor(2.0), "my_kd")


def test_check_loss_terms_rejects_no_terms():
    with pytest.raises(TypeError, match=r"^method 'my_kd': forward returned dict \{\}; return a non-empty dict"):
        check_loss_terms({}, "my_kd")


def test_the_harness_step_checks_the_terms():
    """``DistillStep`` (the harness's training forward) rejects a per-sample loss before summing it."""
    import torch.nn.functional as F

    from benchmark.models import create_model, feature_dim
    from benchmark.step import DistillStep

    class PerSampleCE(methods.Method):
        name = "per_sample_ce"
        requires_teacher = False

        def forward(self, student, teacher, target, epoch):
            return {"ce": F.cross_entropy(student.logits, target, reduction="none")}

    model = create_model("cifar_cnn_tiny", num_classes=5, in_chans=1)
    step = DistillStep(model, PerSampleCE(MethodContext(COUNTS, feature_dim(model))))
    with pytest.raises(TypeError, match=r"^method 'per_sample_ce': loss term 'ce' has shape \(3,\), not 0-dim"):
        step(torch.randn(3, 1, 28, 28), torch.tensor([0, 1, 2]), 1)


def test_require_teacher_is_a_deprecated_alias_that_warns_once(monkeypatch):
    """Plugins written before the rename keep working: ``require_teacher`` is ``checked_teacher`` plus one warning."""
    import warnings

    import methods.base

    monkeypatch.setattr(methods.base, "_DEPRECATION_WARNED", set())
    method = get_method("kd")(tiny_context())
    teacher = tiny_outputs(TEACHER_SHAPES, DEFAULT_NEEDS, BATCH, seed=3)
    with pytest.warns(FutureWarning, match=r"^method 'kd': Method.require_teacher\(teacher\) is deprecated, renamed "
                                           r"checked_teacher\(teacher\)"):
        assert method.require_teacher(teacher) is teacher
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert method.require_teacher(teacher) is teacher  # once per process
    with pytest.raises(ValueError, match=r"^method 'kd' needs teacher outputs \(requires_teacher=True\), got None$"):
        method.require_teacher(None)
