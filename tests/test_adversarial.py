"""Cases of issue 25's adversarial pass that broke (docs/testing.md "Adversarial pass"), one test each."""
import errno
from pathlib import Path

import pytest

from benchmark import cli
from benchmark.config import ConfigError
from conftest import call_cli


def test_a_full_disk_is_one_line_and_exit_1(monkeypatch, capsys):
    def fill(args):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as err:  # torch.save wraps it like this
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 24256 vs 24152") from err

    monkeypatch.setitem(cli.COMMANDS, "report", fill)
    rc, _, err = call_cli(capsys, ["report", "--out", "/tmp"])
    assert rc == 1
    assert err.strip().splitlines() == ["error: No space left on device; free space (or choose another --out) and "
                                        "rerun the same command to resume (records and checkpoints already written "
                                        "are intact)"]


def test_other_runtime_errors_still_raise(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "report", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        call_cli(capsys, ["report", "--out", "/tmp"])


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_out_on_a_virtual_file_system_is_refused_before_training():
    with pytest.raises(ConfigError, match=r"--out /proc/ltkd-out: cannot write in /proc"):
        cli.check_out(Path("/proc/ltkd-out"), "run")


def test_a_suite_name_with_a_path_is_refused(write_suite, tmp_path, capsys):
    suite = write_suite()
    suite.write_text(suite.read_text().replace("name: tiny", "name: ../../evil"))
    rc, _, err = call_cli(capsys, ["run", "--suite", suite, "--out", tmp_path / "o", "--dry-run"])
    assert rc == 2 and err.startswith("error: name: '../../evil' may hold only letters, digits")


def test_unreadable_teacher_weights_are_set_aside_with_one_line(tmp_path):
    from benchmark.runner import GridRunner, _CellFailed

    weights = tmp_path / "t.pt"
    weights.write_bytes(b"\x80\x04 not a state dict")
    with pytest.raises(_CellFailed, match=r"^the teacher weights t.pt are unreadable \(UnpicklingError: .*\); moved "
                                          r"to t.pt.unreadable: rerun the same command to retrain the teacher$"):
        GridRunner._teacher_state(object.__new__(GridRunner), weights)
    assert not weights.exists() and (tmp_path / "t.pt.unreadable").exists()
