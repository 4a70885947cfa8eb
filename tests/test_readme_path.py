"""The README's two commands, in order: a run into the default ``results/`` must not break the test command.

The fast guard checks that no test reads this checkout's own ``results/`` (only the committed
``results/reference/``); the slow test runs a tiny suite into a copy's default ``results/`` and then the
reporting tests from that copy.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_suite

REPO = Path(__file__).resolve().parent.parent
# REPO / "results" / <anything but "reference">, or a relative Path("results"): the checkout's own outputs
_LOCAL_RESULTS = re.compile(r"""REPO\s*/\s*["']results["']\s*(\)|/\s*["'](?!reference))|Path\(\s*["']results["']""")


def test_no_test_reads_the_checkouts_own_results():
    """``REPO / "results" / "runs"`` (or any results/ path but reference/) in a test is what broke the README path."""
    offenders = [f"{p.name}:{i}" for p in sorted(Path(__file__).parent.glob("*.py")) if p.name != Path(__file__).name
                 for i, line in enumerate(p.read_text().splitlines(), 1) if _LOCAL_RESULTS.search(line)]
    assert offenders == [], f"tests reading the checkout's own results/: {offenders}"


def test_the_guard_catches_the_old_pattern():
    old = 'sorted((REPO / "results" / "runs").glob("*.json"))'  # the line that broke the README path
    assert _LOCAL_RESULTS.search(old) and _LOCAL_RESULTS.search("Path(" + '"results") / "runs"')
    assert not _LOCAL_RESULTS.search('REPO / "results" / "reference" / "quick"')
    assert not _LOCAL_RESULTS.search('(src / "results" / "big.pt")')  # a temp folder's results/ is fine


def _copy_checkout(dst: Path) -> None:
    """The working tree without local outputs (results/ but its committed reference/, caches, .git)."""
    def ignore(folder: str, names: list) -> set:
        skip = {n for n in names if n in (".git", "__pycache__", ".pytest_cache", "data") or n.endswith(".egg-info")}
        if Path(folder).resolve() == (REPO / "results").resolve():
            skip |= {n for n in names if n != "reference"}
        return skip

    shutil.copytree(REPO, dst, ignore=ignore)


@pytest.mark.slow
def test_readme_commands_in_order_stay_green(tmp_path, cli_env):
    """Command 1 (a tiny suite standing in for the quick one) writes the copy's default results/; command 2's
    reporting and integrity tests then pass from that copy."""
    repo = tmp_path / "checkout"
    _copy_checkout(repo)
    (repo / "tiny.yaml").write_text(tiny_suite(("ce", "kd")))
    env = dict(cli_env, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "benchmark", "run", "--suite", "tiny.yaml", "--no-progress"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(list((repo / "results" / "runs").glob("*.json"))) == 3  # teacher, ce, kd: in the default folder
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_reporting.py",
                            "tests/test_integrity.py", "tests/test_readme_path.py", "-m", "not slow"],
                           cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout
