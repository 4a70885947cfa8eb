"""Shared fixtures: tiny suites that train in seconds on Fashion-MNIST-LT (real data, offline)."""
import os
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TINY_SUITE = """
name: tiny
description: "test suite: 1 epoch, tiny CNNs"
datasets:
  - name: fmnist-lt
    imbalance_factors: [100]
    options: {{n_max: {n_max}}}  # 600: 1,485 training images, seconds per run
pairs:
  - {{teacher: cifar_cnn_tiny, student: cifar_cnn_tiny}}
methods: {methods}
seeds: [0]
deterministic: true
plugins: {plugins}
teacher_train: &r
  epochs: {epochs}
  batch_size: 64
  lr: 0.05
  schedule: cosine
  augment: flip
  eval_every: 1
  eval_batch_size: 2000
student_train: *r
"""


def tiny_suite(methods=("ce", "kd"), epochs=1, plugins=(), n_max=600, extra=""):
    """The YAML of ``TINY_SUITE`` with these methods, epochs, plugins and n_max, then ``extra`` (dedented) appended."""
    text = TINY_SUITE.format(methods="[" + ", ".join(methods) + "]", epochs=epochs,
                             plugins="[" + ", ".join(plugins) + "]", n_max=n_max)
    return text + textwrap.dedent(extra)


@pytest.fixture
def write_suite(tmp_path):
    """Write a tiny suite YAML (methods, epochs and plugins adjustable) and return its path."""

    def _write(methods=("ce", "kd"), epochs=1, plugins=(), name="tiny.yaml", extra=""):
        path = tmp_path / name
        path.write_text(tiny_suite(methods, epochs, plugins, extra=extra))
        return path

    return _write


@pytest.fixture(scope="module")
def one_thread():
    """Run a module single-threaded (``pytestmark = pytest.mark.usefixtures("one_thread")``): batches of 2 gain
    nothing from intra-op threads, and on a busy 2-core machine OpenMP's spin-waiting makes 2 threads 10-100x
    slower than 1 (measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def torch_seed():
    """Seed torch's global generator with 0 before each test of a module that asks for it."""
    import torch

    torch.manual_seed(0)


@pytest.fixture
def cli_env():
    """Environment for `python -m benchmark` subprocesses: the repo importable, no tqdm noise."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(args, env, cwd, timeout=600):
    import subprocess

    return subprocess.run([sys.executable, "-m", "benchmark", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def call_cli(capsys, args):
    """Run ``benchmark.cli.main(args)`` in this process (no interpreter start, no torch re-import):
    returns (exit code, stdout, stderr)."""
    from benchmark.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err
