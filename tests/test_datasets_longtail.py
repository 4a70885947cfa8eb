"""Long-tail helpers: exponential profile totals, seeded subsampling, shot groups, frequency thirds."""
import math

import numpy as np
import pytest

from datasets.longtail import (class_counts_of, describe_profile, exponential_profile, frequency_thirds, ldam_subsample,
                               shot_groups, subsample_per_class)

PUBLISHED = [  # (n_max, classes, IF, total) from the LT-KD / LDAM literature
    (5000, 10, 100, 12406), (5000, 10, 50, 13996), (5000, 10, 10, 20431),
    (500, 100, 100, 10847), (500, 100, 50, 12608), (500, 100, 10, 19573),
    (6000, 10, 100, 14886),
]


@pytest.mark.parametrize("n_max,classes,imb,total", PUBLISHED)
def test_exponential_profile_published_totals(n_max, classes, imb, total):
    counts = exponential_profile(n_max, classes, imb)
    assert sum(counts) == total
    assert counts[0] == n_max and counts[-1] == math.floor(n_max / imb)
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_exponential_profile_values_and_edges():
    assert exponential_profile(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert exponential_profile(500, 100, 1) == [500] * 100
    assert exponential_profile(500, 100, 1.0) == [500] * 100
    assert exponential_profile(7, 1, 100) == [7]


@pytest.mark.parametrize("bad", [0.5, 0, -3, float("nan"), float("inf"), True, "100"])
def test_exponential_profile_rejects_bad_imbalance(bad):
    with pytest.raises(ValueError, match=r"imbalance_factor must be >= 1 \(1 = balanced\), got"):
        exponential_profile(500, 100, bad)


def test_exponential_profile_size_checks():
    assert exponential_profile(1, 3, 1) == [1, 1, 1]
    for n_max, classes in ((0, 3), (5, 0), (0, 0)):
        with pytest.raises(ValueError, match=rf"^need n_max >= 1 and num_classes >= 1, got n_max={n_max}, "
                                             rf"num_classes={classes}$"):
            exponential_profile(n_max, classes, 10)


def test_imbalance_message_names_the_value():
    with pytest.raises(ValueError) as err:
        exponential_profile(500, 100, 0.5)
    assert str(err.value) == "imbalance_factor must be >= 1 (1 = balanced), got 0.5"


@pytest.fixture(scope="module")
def ds_targets():
    return np.random.default_rng(0).permutation(np.repeat(np.arange(5), 40))


def test_subsample_counts_sorted_unique(ds_targets):
    counts = [40, 20, 10, 5, 0]
    idx = subsample_per_class(ds_targets, counts, seed=3)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert np.bincount(ds_targets[idx], minlength=5).tolist() == counts


def test_subsample_seeded(ds_targets):
    counts = [30, 20, 10, 5, 2]
    a = subsample_per_class(ds_targets, counts, seed=0)
    assert np.array_equal(a, subsample_per_class(ds_targets, counts, seed=0))
    assert not np.array_equal(a, subsample_per_class(ds_targets, counts, seed=1))


def test_subsample_nested_across_counts(ds_targets):
    small = set(subsample_per_class(ds_targets, [20, 10, 5, 2, 1], seed=7).tolist())
    large = set(subsample_per_class(ds_targets, [30, 20, 10, 5, 2], seed=7).tolist())
    assert small < large


def test_subsample_counts_of_zero_and_one(ds_targets):
    """A class may keep nothing or a single image; later classes are still drawn."""
    idx = subsample_per_class(ds_targets, [0, 1, 0, 3, 1], seed=5)
    assert np.bincount(ds_targets[idx], minlength=5).tolist() == [0, 1, 0, 3, 1]
    assert subsample_per_class(ds_targets, [], seed=0).tolist() == []
    assert subsample_per_class(ds_targets, [], seed=0).dtype == np.int64


def test_subsample_errors(ds_targets):
    with pytest.raises(ValueError, match="class 0 has 40 samples, cannot draw 41"):
        subsample_per_class(ds_targets, [41, 0, 0, 0, 0], seed=0)
    with pytest.raises(ValueError, match="^class 3: count must be >= 0, got -2$"):
        subsample_per_class(ds_targets, [0, 0, 0, -2, 0], seed=0)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="^seed must be a non-negative integer, got"):
            subsample_per_class(ds_targets, [1] * 5, seed=bad)


def ldam_reference(targets, counts, seed):
    """LDAM-DRW's gen_imbalanced_data written out: global legacy seed, one in-place shuffle per class."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        kept = []
        for c, n in zip(np.unique(targets), counts):
            idx = np.where(targets == c)[0]
            np.random.shuffle(idx)
            kept.append(idx[:n])
        return np.sort(np.concatenate(kept))
    finally:
        np.random.set_state(state)


@pytest.mark.parametrize("seed", [0, 1, 2 ** 32 - 1])
def test_ldam_subsample_matches_reference_loop(ds_targets, seed):
    counts = [40, 17, 9, 3, 0]
    idx = ldam_subsample(ds_targets, counts, seed)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert np.bincount(ds_targets[idx], minlength=5).tolist() == counts
    assert np.array_equal(idx, ldam_reference(ds_targets, counts, seed))


def test_ldam_subsample_class_zero_count_still_consumes_the_generator(ds_targets):
    """LDAM shuffles every class, even one it keeps nothing of: later classes must not change."""
    with_head = ldam_subsample(ds_targets, [5, 5, 5, 5, 5], seed=4)
    without_head = ldam_subsample(ds_targets, [0, 5, 5, 5, 5], seed=4)
    assert np.array_equal(with_head[ds_targets[with_head] != 0], without_head)


def test_ldam_subsample_nested_across_counts(ds_targets):
    small = set(ldam_subsample(ds_targets, [20, 10, 5, 2, 1], seed=7).tolist())
    large = set(ldam_subsample(ds_targets, [30, 20, 10, 5, 2], seed=7).tolist())
    assert small < large


def test_ldam_subsample_empty_and_errors(ds_targets):
    assert ldam_subsample(ds_targets, [], seed=0).tolist() == []
    assert ldam_subsample(ds_targets, [], seed=0).dtype == np.int64
    with pytest.raises(ValueError, match="^class 1 has 40 samples, cannot draw 41$"):
        ldam_subsample(ds_targets, [0, 41, 0, 0, 0], seed=0)
    with pytest.raises(ValueError, match="^class 2: count must be >= 0, got -1$"):
        ldam_subsample(ds_targets, [0, 0, -1, 0, 0], seed=0)
    for bad in (-1, 2 ** 32, 1.0, True):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
            ldam_subsample(ds_targets, [1] * 5, seed=bad)


def test_shot_groups_strict_boundaries():
    counts = [101, 100, 20, 19, 500, 0, 1]
    assert shot_groups(counts) == {"many": [0, 4], "medium": [1, 2], "few": [3, 5, 6]}
    assert shot_groups([11, 10, 3, 2], many=10, few=3) == {"many": [0], "medium": [1, 2], "few": [3]}


def test_shot_groups_literature_sizes():
    groups = shot_groups(exponential_profile(500, 100, 100))
    assert [len(groups[k]) for k in ("many", "medium", "few")] == [35, 35, 30]
    assert shot_groups(exponential_profile(5000, 10, 100))["few"] == []  # CIFAR-10-LT: empty few group


@pytest.mark.parametrize("n,sizes", [(10, (3, 4, 3)), (11, (3, 5, 3)), (12, (4, 4, 4)), (2, (0, 2, 0)), (1, (0, 1, 0))])
def test_frequency_thirds_sizes(n, sizes):
    thirds = frequency_thirds(exponential_profile(1000, n, 10))
    assert tuple(len(thirds[k]) for k in ("head", "middle", "tail")) == sizes
    assert sorted(sum(thirds.values(), [])) == list(range(n))


def test_frequency_thirds_rank_and_ties():
    # counts not sorted by class id; ties broken by class id (lower id ranks first)
    counts = [5, 50, 5, 20, 50, 1]
    assert frequency_thirds(counts) == {"head": [1, 4], "middle": [0, 3], "tail": [2, 5]}


def test_class_counts_of():
    assert class_counts_of([2, 0, 2, 2], 4) == [1, 0, 3, 0]  # absent classes, including the last, count 0
    assert class_counts_of(np.array([1.0, 1.0, 0.0]), 3) == [1, 2, 0]  # labels stored as floats count too
    assert class_counts_of([], 2) == [0, 0]


def test_describe_profile():
    counts = exponential_profile(5000, 10, 100)
    assert describe_profile(counts, 100) == ("IF 100: 12,406 images, max 5000, min 50, "
                                             "many/medium/few = 8/2/0 classes")
    assert describe_profile([150, 50, 5]) == "205 images, max 150, min 5, many/medium/few = 1/1/1 classes"
