"""The speed benchmark in reduced mode, and the CUDA-only branches (guarded: they run where a GPU is)."""
import json

import pytest
import torch

from benchmark.speed import measure
from benchmark.device import resolve_device
from conftest import call_cli


def test_speed_reduced_mode_reports_three_paths():
    res = measure(steps=3, warmup=1, batch_size=16, n_images=128, workers=0, rounds=1)
    for key in ("a_ltkd_ips", "b_eager_ips", "c_compute_ips"):
        assert res[key] > 0
    assert "synthetic" in res["data"]


def test_speed_cli_prints_ratios_and_writes_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    rc, stdout, err = call_cli(capsys, ["speed", "--steps", "3", "--batch-size", "16", "--device", "cpu", "--json", out])
    assert rc == 0, err[-2000:]
    assert "a/b =" in stdout and "a/c =" in stdout and "synthetic" in stdout
    assert json.loads(out.read_text())["steps"] == 3


def test_cuda_request_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_bf16_channels_last_matches_cpu_shapes():
    from benchmark.data import TensorData

    dev = torch.device("cuda")
    imgs = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    data = TensorData(imgs, torch.arange(256) % 10, (0.5,) * 3, (0.25,) * 3, dev, padding=4)
    x, y = next(data.train_batches(64, 0, 1))
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    res = measure("cifar_resnet8x4", "cifar_resnet8x4", 32, 3, 100, 64, steps=5, device=dev, n_images=512)
    assert res["a_ltkd_ips"] > 0


def test_speed_grid_times_a_cell_in_lockstep_and_one_at_a_time():
    from benchmark.speed import measure_cell

    res = measure_cell("cifar_cnn_tiny", "cifar_cnn_tiny", 28, 1, 10, 32, method_names=["ce", "kd", "dkd"],
                       steps=2, warmup=1, rounds=1)
    assert res["methods"] == ["ce", "kd", "dkd"]
    assert res["lockstep_s_per_batch"] > 0 and res["one_at_a_time_s_per_batch"] > 0
