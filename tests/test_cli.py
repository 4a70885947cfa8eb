"""CLI commands besides run/check: list, report, prepare, help, and the Hugging Face `datasets` shadow check."""
import os
import subprocess
import sys

from conftest import REPO, run_cli


def test_help_lists_every_command(tmp_path, cli_env):
    proc = run_cli(["--help"], cli_env, tmp_path, timeout=120)
    assert proc.returncode == 0
    for cmd in ("run", "list", "report", "check", "prepare", "speed"):
        assert cmd in proc.stdout


def test_list_shows_suites_methods_datasets_models(tmp_path, cli_env):
    proc = run_cli(["list"], cli_env, tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in ("quick", "cifar100_lt", "krdistill", "la_kd", "temperature=4.0", "fmnist-lt", "places-lt",
                 "cifar_resnet8x4", "cifar_wrn_40_2"):
        assert name in out
    assert "reconstruction" in out


def test_report_without_records_says_what_to_do(tmp_path, cli_env):
    proc = run_cli(["report", "--out", str(tmp_path / "empty")], cli_env, tmp_path, timeout=120)
    assert proc.returncode == 1 and "run `python -m benchmark run` first" in proc.stderr


def test_prepare_reports_missing_cifar_folder(tmp_path, cli_env):
    proc = run_cli(["prepare", "--dataset", "cifar100-lt", "--root", str(tmp_path / "nowhere")], cli_env, tmp_path,
                   timeout=120)
    assert proc.returncode == 1
    assert "cifar-100-python" in proc.stdout + proc.stderr


def test_prepare_fashion_mnist_from_debian_package(tmp_path, cli_env):
    proc = run_cli(["prepare", "--dataset", "fmnist-lt"], cli_env, tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "14,886" in proc.stdout


def test_prepare_unknown_dataset_suggests(tmp_path, cli_env):
    proc = run_cli(["prepare", "--dataset", "cifar10lt"], cli_env, tmp_path, timeout=120)
    assert proc.returncode == 2 and "cifar10-lt" in proc.stderr


def test_shadowing_hugging_face_datasets_fails_clearly(tmp_path):
    fake = tmp_path / "datasets"
    fake.mkdir()
    (fake / "__init__.py").write_text("def load_dataset(*a, **k):\n    pass\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", "import benchmark"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "Hugging Face" in proc.stderr and "pip uninstall datasets" in proc.stderr
