"""Stateless learning-rate schedule of the harness."""
import math

import pytest

from benchmark.config import TrainRecipe
from benchmark.train import lr_at


def test_multistep_matches_literature_semantics():
    r = TrainRecipe(epochs=240, lr=0.05, milestones=[150, 180, 210], gamma=0.1)
    assert lr_at(r, 1) == pytest.approx(0.05)
    assert lr_at(r, 150) == pytest.approx(0.05)  # decayed only after the milestone epoch
    assert lr_at(r, 151) == pytest.approx(0.005)
    assert lr_at(r, 181) == pytest.approx(0.0005)
    assert lr_at(r, 240) == pytest.approx(0.00005)
    assert lr_at(r, 151, student_lr=0.01) == pytest.approx(0.001)


def test_cosine_with_warmup():
    r = TrainRecipe(epochs=10, lr=0.1, schedule="cosine", warmup_epochs=2)
    assert lr_at(r, 1) == pytest.approx(0.05)
    assert lr_at(r, 2) == pytest.approx(0.1)
    assert lr_at(r, 3) == pytest.approx(0.1)
    assert lr_at(r, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(lr_at(r, e) >= lr_at(r, e + 1) for e in range(2, 10))


def test_constant():
    assert lr_at(TrainRecipe(schedule="constant", lr=0.3), 77) == 0.3
