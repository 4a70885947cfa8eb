"""What produced a number: the code's fingerprint and family, git state, versions and device.

* ``RESULTS_FAMILY``: bumped by hand when a change alters the numbers of existing runs on purpose (a fixed
  loss, a new data rule). It is part of every run id, so records of an older family are never reused as
  if they were current; they stay readable, and their leaderboard rows are labelled apart.
* the *fingerprint*: a hash of every source file of ``benchmark/``, ``methods/``, ``datasets/`` and of the
  plugin modules a suite loads. It is recorded with each run, and ``run`` says when a reused record came
  from other code.
"""
import hashlib
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import timm
import torch
import torchvision

from . import __version__
from .distributed import world_size

__all__ = ["RESULTS_FAMILY", "REPO_DIR", "code_fingerprint", "git_state", "code_info", "environment_info"]

RESULTS_FAMILY = "3"  # 3: one frequency-group rule (LTKD groups and thirds 3/4/3 for 10 classes), declared epoch params
REPO_DIR = Path(__file__).resolve().parent.parent
_PACKAGES = ("benchmark", "methods", "datasets", "ltkd_core")  # the code a run executes


def _package_files(plugins: Iterable[str]) -> List[Tuple[str, Path]]:
    files: List[Tuple[str, Path]] = []
    for pkg in _PACKAGES:
        mod = sys.modules.get(pkg) or __import__(pkg)
        root = Path(mod.__file__).resolve().parent
        files += [(f"{pkg}/{p.relative_to(root).as_posix()}", p) for p in sorted(root.rglob("*.py"))]
    for name in plugins:
        mod = sys.modules.get(name)
        path = getattr(mod, "__file__", None)
        if path:
            files.append((f"plugin:{name}", Path(path)))
    return files


@lru_cache(maxsize=None)
def _fingerprint(plugins: Tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for rel, path in _package_files(plugins):
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def code_fingerprint(plugins: Iterable[str] = ()) -> str:
    """12 hex digits over the source of the harness, methods, datasets and the given plugin modules."""
    return _fingerprint(tuple(sorted(plugins)))


@lru_cache(maxsize=1)
def git_state() -> Tuple[Optional[str], Optional[bool]]:
    """(commit, dirty) of the checkout the code runs from; (None, None) outside git. Dirty counts
    uncommitted changes to tracked files and untracked source files."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True,
                                  timeout=10).stdout.strip()

        commit = git("rev-parse", "HEAD") or None
        if commit is None:
            return None, None
        dirty = bool(git("status", "--porcelain", "--", *_PACKAGES, "configs"))
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def code_info(plugins: Iterable[str] = ()) -> Dict[str, Any]:
    """The ``code`` block of a run record."""
    commit, dirty = git_state()
    return {"family": RESULTS_FAMILY, "fingerprint": code_fingerprint(plugins), "version": __version__,
            "git_commit": commit, "git_dirty": dirty}


def environment_info(device: torch.device) -> Dict[str, Any]:
    """Versions and the device: what a reader needs to repeat a run."""
    if device.type == "cuda":
        dev_name = f"cuda: {torch.cuda.get_device_name(device)}"
    else:
        dev_name = f"cpu: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    return {"device": dev_name, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "python": platform.python_version(), "hostname": platform.node(),
            "world_size": world_size(), "threads": torch.get_num_threads()}
