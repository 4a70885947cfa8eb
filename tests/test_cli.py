"""CLI commands besides run/check: list, report, prepare, help, and the Hugging Face `datasets` shadow check."""
import os
import subprocess
import sys

from conftest import REPO, call_cli


def test_help_lists_every_command(capsys):
    rc, out, _ = call_cli(capsys, ["--help"])
    assert rc == 0
    for cmd in ("run", "list", "report", "check", "prepare", "speed", "eval"):
        assert cmd in out


def test_list_shows_suites_methods_datasets_models(capsys):
    rc, out, err = call_cli(capsys, ["list"])
    assert rc == 0, err
    for name in ("quick", "cifar100_lt", "krdistill", "la_kd", "temperature=4.0", "fmnist-lt", "places-lt",
                 "cifar_resnet8x4", "cifar_wrn_40_2"):
        assert name in out
    assert "reconstruction" in out


def test_report_without_records_says_what_to_do(tmp_path, capsys):
    rc, _, err = call_cli(capsys, ["report", "--out", tmp_path / "empty"])
    assert rc == 1 and "run `python -m benchmark run` first" in err


def test_prepare_reports_missing_cifar_folder(tmp_path, capsys):
    rc, out, err = call_cli(capsys, ["prepare", "--dataset", "cifar100-lt", "--root", tmp_path / "nowhere"])
    assert rc == 1
    assert "cifar-100-python" in out + err


def test_prepare_fashion_mnist_from_debian_package(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./data/fmnist here: the Debian copy is used
    rc, out, err = call_cli(capsys, ["prepare", "--dataset", "fmnist-lt"])
    assert rc == 0, out + err
    assert "14,886" in out


def test_prepare_unknown_dataset_suggests(capsys):
    rc, _, err = call_cli(capsys, ["prepare", "--dataset", "cifar10lt"])
    assert rc == 2 and "cifar10-lt" in err


def test_shadowing_hugging_face_datasets_fails_clearly(tmp_path):
    fake = tmp_path / "datasets"
    fake.mkdir()
    (fake / "__init__.py").write_text("def load_dataset(*a, **k):\n    pass\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", "import benchmark"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "Hugging Face" in proc.stderr and "pip uninstall datasets" in proc.stderr
