"""One head / middle / tail rule by training count (``datasets.longtail.frequency_groups``), used by LTKD, the
evaluation's head / middle / tail accuracies and the paired tail comparison (issue 22, item 2). Every expected
partition below is written out by hand from the counts, not recomputed with the rule."""
import ast
import inspect

import numpy as np
import pytest
import torch

import datasets.longtail as longtail
import methods.ltkd as ltkd_module
from benchmark.evaluate import summarize
from benchmark.paired import tail_classes
from datasets.longtail import exponential_profile, frequency_group_sizes, frequency_groups, frequency_rank
from methods import MethodContext, create_method

# 10 classes with ties: 100 (class 7), 50 (0, 2), 20 (1, 4, 5), 5 (3, 6, 9), 1 (8); the 5s straddle middle / tail
COUNTS_10 = [50, 20, 50, 5, 20, 20, 5, 100, 1, 5]
RANK_10 = [7, 0, 2, 1, 4, 5, 3, 6, 9, 8]
GROUPS_10 = {"head": [0, 2, 7], "middle": [1, 3, 4, 5], "tail": [6, 8, 9]}

# 100 classes in blocks of 10 equal counts, rarest first: class c has 10 * (1 + c // 10) images. By hand: the head
# is the 30 classes of blocks 90s/80s/70s plus the 3 lowest ids of the tied 60s block; the middle the other 7 of
# the 60s, the 50s, the 40s and the 7 lowest ids of the tied 30s block; the tail the rest.
COUNTS_100 = [10 * (1 + c // 10) for c in range(100)]
GROUPS_100 = {"head": [60, 61, 62] + list(range(70, 100)),
              "middle": list(range(30, 37)) + list(range(40, 60)) + list(range(63, 70)),
              "tail": list(range(0, 30)) + [37, 38, 39]}


@pytest.mark.parametrize("n,sizes", [(0, (0, 0, 0)), (1, (0, 1, 0)), (2, (0, 2, 0)), (3, (1, 1, 1)), (9, (3, 3, 3)),
                                     (10, (3, 4, 3)), (11, (3, 5, 3)), (100, (33, 34, 33)), (365, (121, 123, 121)),
                                     (1000, (333, 334, 333))])
def test_group_sizes(n, sizes):
    assert frequency_group_sizes(n) == sizes


def test_golden_10_classes_with_ties():
    assert frequency_rank(COUNTS_10) == RANK_10
    assert frequency_groups(COUNTS_10) == GROUPS_10


def test_golden_100_classes_with_ties():
    got = frequency_groups(COUNTS_100)
    assert [len(got[g]) for g in ("head", "middle", "tail")] == [33, 34, 33]  # LTKD's 33 / 34 / 33
    assert got == GROUPS_100


def test_cifar100_lt_profile_is_33_34_33_by_class_id():
    """CIFAR-100-LT IF 100 (LDAM-DRW profile, non-increasing in the class id, tied at the tail): ids 0-32 / 33-66 / 67-99."""
    counts = exponential_profile(500, 100, 100)
    assert counts[-2:] == [5, 5]  # ties present
    assert frequency_groups(counts) == {"head": list(range(33)), "middle": list(range(33, 67)),
                                        "tail": list(range(67, 100))}


def test_same_groups_from_any_sequence_type():
    for counts in (COUNTS_10, tuple(COUNTS_10), np.array(COUNTS_10), np.array(COUNTS_10, dtype=np.int32)):
        assert frequency_groups(counts) == GROUPS_10


def test_frequency_thirds_is_the_same_function():
    assert longtail.frequency_thirds is frequency_groups


# ----------------------------------------------------------------------------- every caller uses the one rule

def test_evaluation_head_middle_tail_follow_the_rule():
    acc = [float(c) for c in range(10)]  # class c's accuracy is c: a group's mean names its members
    out = summarize(acc, COUNTS_10)
    assert out["head"] == pytest.approx(3.0) and out["middle"] == pytest.approx(3.25) and out["tail"] == pytest.approx(23 / 3)
    assert {g: out["group_sizes"][g] for g in ("head", "middle", "tail")} == {"head": 3, "middle": 4, "tail": 3}


def test_paired_tail_follows_the_rule():
    assert tail_classes(COUNTS_10) == [6, 8, 9]


def test_ltkd_groups_follow_the_rule():
    m = create_method("ltkd", MethodContext(class_counts=COUNTS_10, student_dim=4, teacher_dim=4))
    assert m.groups.tolist() == [0, 1, 0, 1, 1, 1, 2, 0, 2, 2] and m.num_groups == 3
    assert ltkd_module.frequency_groups(COUNTS_100).tolist() == [
        0 if c in GROUPS_100["head"] else 1 if c in GROUPS_100["middle"] else 2 for c in range(100)]


def test_ltkd_takes_its_groups_from_the_shared_function(monkeypatch):
    """Replace the shared rule: LTKD's groups follow it (LTKD carries no rule of its own)."""
    fake = {"head": [4], "middle": [0, 1, 2], "tail": [3]}
    seen = []

    def rule(counts):
        seen.append(list(counts))
        return fake

    monkeypatch.setattr(longtail, "frequency_groups", rule)
    m = create_method("ltkd", MethodContext(class_counts=[1, 2, 3, 4, 5], student_dim=4, teacher_dim=4))
    assert seen == [[1, 2, 3, 4, 5]]
    assert m.groups.tolist() == [1, 1, 1, 2, 0] and m.num_groups == 3
    monkeypatch.setattr(longtail, "frequency_groups", lambda counts: {"head": [], "middle": [0, 1], "tail": []})
    two = create_method("ltkd", MethodContext(class_counts=[3, 5], student_dim=4, teacher_dim=4))
    assert two.groups.tolist() == [0, 0] and two.num_groups == 1  # empty groups dropped, ids consecutive
    z = torch.randn(4, 2)
    assert torch.isfinite(two(type("O", (), {"logits": z})(), type("O", (), {"logits": z + 1})(),
                              torch.tensor([0, 1, 0, 1]), 1)["ltkd"])


def test_ltkd_rejects_a_rule_that_leaves_a_class_out(monkeypatch):
    monkeypatch.setattr(longtail, "frequency_groups", lambda counts: {"head": [0], "middle": [1], "tail": []})
    with pytest.raises(ValueError, match=r"left classes \[2\] without a group"):
        create_method("ltkd", MethodContext(class_counts=[3, 2, 1], student_dim=4, teacher_dim=4))


def test_ltkd_source_has_no_ranking_of_its_own():
    """No sorting or splitting of classes in methods/ltkd.py: grouping lives in datasets.longtail only."""
    tree = ast.parse(inspect.getsource(ltkd_module))
    called = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
              for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not called & {"sorted", "sort", "argsort", "array_split", "split", "topk", "divmod"}
