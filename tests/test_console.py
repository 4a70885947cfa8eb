"""The console: one aligned table per cell (no run ids), tqdm only on a terminal, a short verdict summary."""
import json
import os
import subprocess
import sys
import pytest

from benchmark.console import CellTable, short_names, top_rows, verdict_summary
from benchmark.verdict import Verdict
from conftest import REPO, tiny_suite

FIVE = ("ce", "kd", "dkd", "bkd", "la_kd")
DKD_WARMUP = "method_params: {dkd: {warmup: 1}}\n"


def test_table_rows_are_aligned_and_name_methods_not_runs():
    keys = [f"fmnist-lt_if100_a-b_{m}_s0_0123456789" for m in ("ce", "kd")]
    table = CellTable(short_names(keys, ["ce", "kd"]), epochs=2, log=print)
    first = table.lines(1, [(keys[0], {"loss": 1.23456, "train_acc": 50.04, "test_acc": 40.126}),
                            (keys[1], {"loss": 0.5, "train_acc": 60.0})], 1234.4)
    second = table.lines(2, [(keys[0], {"loss": 1.0, "train_acc": 1.0})], 99.0)
    assert [line.split() for line in first] == [
        ["epoch", "method", "loss", "train", "%", "test", "%", "img/s"],
        ["1/2", "ce", "1.2346", "50.0", "40.13", "1234"],
        ["kd", "0.5000", "60.0", "-", "1234"]]  # no test accuracy where the epoch was not evaluated
    assert len({len(line) for line in first + second}) == 1  # one width: the columns line up
    assert second[0].split()[:2] == ["2/2", "ce"]  # the header is printed once per cell


def test_a_method_twice_in_a_cell_is_told_apart_by_its_hash():
    names = short_names(["x_kd_s0_abcdef1234", "x_kd_s0_99887766aa", "x_ce_s0_1111111111"], ["kd", "kd", "ce"])
    assert names == {"x_kd_s0_abcdef1234": "kd#abcd", "x_kd_s0_99887766aa": "kd#9988", "x_ce_s0_1111111111": "ce"}


def test_verdict_summary_counts_kinds_and_lists_only_off_runs_in_full():
    vs = [Verdict("a/kd/s0", 0, "exact", text="  reproduced a/kd/s0"),
          Verdict("a/ce/s0", 0, "within", text="  within a/ce/s0"),
          Verdict("a/dkd/s0", 0, "off", text="  OFF        a/dkd/s0: overall 50.00 (reference 60.00, -10.00 OFF)"),
          Verdict("a/bkd/s0", 0, "exact", text="  reproduced a/bkd/s0"),
          Verdict("a/at/s0", 0, "failed", text="  FAILED a/at/s0")]
    assert verdict_summary(vs) == ["reproduction: 5 runs: 2 exact, 1 within, 1 off, 1 failed",
                                   "  OFF        a/dkd/s0: overall 50.00 (reference 60.00, -10.00 OFF)"]


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """A 5-method, 2-epoch cell run in this process with --no-progress: (stdout, results folder)."""
    base = tmp_path_factory.mktemp("console")
    (base / "s.yaml").write_text(tiny_suite(FIVE, epochs=2, n_max=300, extra=DKD_WARMUP))
    import contextlib
    import io

    from benchmark.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["run", "--suite", str(base / "s.yaml"), "--out", str(base / "out"), "--no-progress"])
    assert rc == 0, buf.getvalue()
    return buf.getvalue(), base / "out"


@pytest.mark.slow  # trains a 5-method, 2-epoch cell (about a minute on 2 busy cores)
def test_the_cell_prints_no_run_id_and_fewer_lines_than_one_per_run_and_epoch(five):
    text, out = five
    ids = [json.loads(p.read_text())["run_id"] for p in (out / "runs").glob("*.json")]
    assert len(ids) == 6 and not any(i in text for i in ids)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("==> cifar_cnn_tiny->cifar_cnn_tiny"))
    end = next(i for i, line in enumerate(lines) if line.startswith("done:"))
    cell = lines[start:end]
    # before: one line per run and epoch, one closing line per run, the cell's header line (5*2 + 5 + 1 = 16)
    assert len(cell) < len(FIVE) * 2 + len(FIVE) + 1
    assert [line.split()[1] if line.split()[0] == "1/2" else line.split()[0] for line in cell[2:7]] == list(FIVE)
    assert "\r" not in text and "it/s" not in text  # --no-progress: plain lines


@pytest.mark.slow  # trains a 5-method, 2-epoch cell (about a minute on 2 busy cores)
def test_the_per_run_logs_keep_every_epoch_line_and_the_result(five):
    _, out = five
    log = next((out / "logs").glob("*-cifar_cnn_tiny_kd_s0_*.log")).read_text()
    assert "epoch 1/2 loss " in log and "epoch 2/2 loss " in log and " img/s" in log
    assert "<== fmnist-lt_if100_cifar_cnn_tiny-cifar_cnn_tiny_kd_s0_" in log and "overall" in log


@pytest.mark.slow  # trains a 5-method, 2-epoch cell (about a minute on 2 busy cores)
def test_the_end_shows_the_leaderboards_top_rows(five):
    text, out = five
    assert top_rows(out)[0].startswith("top 5 of 6: fmnist-lt")
    assert "\n".join(top_rows(out)) in text


@pytest.mark.slow
def test_tqdm_bars_only_on_a_terminal(tmp_path, cli_env):
    """A pseudo-terminal gets tqdm's bars; a pipe (not a terminal) gets plain lines, without --no-progress."""
    import fcntl
    import pty
    import struct
    import termios

    (tmp_path / "s.yaml").write_text(tiny_suite(("ce", "kd"), n_max=300, extra=DKD_WARMUP))
    env = dict(cli_env, OMP_NUM_THREADS="1", COLUMNS="120")
    cmd = [sys.executable, "-m", "benchmark", "run", "--suite", str(tmp_path / "s.yaml")]
    piped = subprocess.run(cmd + ["--out", str(tmp_path / "a")], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)
    assert piped.returncode == 0 and "\r" not in piped.stdout + piped.stderr and "it/s" not in piped.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a new pty is 0 columns wide
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "b")], cwd=REPO, env=env, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=600) == 0
    seen = b"".join(chunks).decode(errors="replace")
    assert "\r" in seen and "ep 1/1" in seen  # the bar's description, redrawn in place
