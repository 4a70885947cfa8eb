"""The first step's loss (``first_loss`` in epoch 1's history row): what it is, and the committed CI teacher
that makes it a function of the seed alone (configs/ci.yaml uses it as is)."""
import hashlib
import json

import pytest
import torch

from benchmark.config import CONFIG_DIR, ConfigError, load_suite
from benchmark.runner import RunOptions, expand_grid, run_specs, teacher_init, weights_file

CPU = torch.device("cpu")


def _train(cfg, out):
    opts = RunOptions(out, CPU, progress=False, log=lambda m: None)
    return [o.record for o in run_specs(cfg, expand_grid(cfg, CPU), opts)]


@pytest.mark.slow
def test_first_loss_is_the_loss_of_the_first_step(tmp_path, write_suite):
    cfg = load_suite(str(write_suite(methods=("ce", "kd"), epochs=2)))
    recs = {r["method"] if r["role"] == "student" else "teacher": r for r in _train(cfg, tmp_path / "a")}
    for rec in recs.values():
        first, second = rec["history"]
        assert "first_loss" in first and "first_loss" not in second  # epoch 1's row only
        assert first["first_loss"] != pytest.approx(first["loss"])  # one step of 23, not the epoch's mean
    # one step per epoch (batch > half the 1,485 images): the first step's loss is the epoch's mean loss
    cfg.teacher_train.batch_size = cfg.student_train.batch_size = 1000
    for rec in _train(cfg, tmp_path / "b"):
        row = rec["history"][0]
        assert row["first_loss"] == pytest.approx(row["loss"], rel=1e-6)


def test_a_relative_weights_path_falls_back_to_configs(tmp_path, monkeypatch):
    import benchmark.runner as runner

    (tmp_path / "t.pth").write_bytes(b"x")
    monkeypatch.setattr(runner, "CONFIG_DIR", tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    assert weights_file("t.pth") == tmp_path / "t.pth"  # not in the working folder: found under configs/
    assert weights_file(str(tmp_path / "t.pth")) == tmp_path / "t.pth"
    assert weights_file("missing.pth").name == "missing.pth" and not weights_file("missing.pth").exists()


def test_a_missing_teacher_weights_file_is_one_clear_error():
    from benchmark.config import Pair

    with pytest.raises(ConfigError, match="teacher_weights 'nowhere.pth' is not a file"):
        teacher_init(Pair("cifar_cnn_small", "cifar_cnn_tiny", teacher_weights="nowhere.pth"))


def test_the_ci_teacher_is_the_file_its_record_describes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # found from any working folder
    cfg = load_suite("ci")
    (pair,) = cfg.pairs
    assert pair.teacher_weights == "ci_teacher.pth" and pair.teacher_finetune is False
    path = weights_file(pair.teacher_weights)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    record = json.loads((CONFIG_DIR / "ci_teacher.json").read_text())
    assert record["sha256"] == digest and record["arch"] == pair.teacher
    assert teacher_init(pair) == f"sha256:{digest}"  # the run id follows the weights' content
