"""Finding and loading suites: the ones shipped in ``configs/`` by name, or any ``.yaml`` path, read, overridden,
converted to a :class:`SuiteConfig` and validated.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import List, Optional

from ..errors import unknown_name
from .convert import from_dict
from .exceptions import ConfigError
from .overrides import apply_overrides
from .schema import SuiteConfig
from .validation import validate_suite
from .yaml_io import yaml_load

__all__ = ["CONFIG_DIR", "list_suites", "resolve_suite_path", "load_suite"]

CONFIG_DIR = Path(str(importlib.resources.files("configs")))  # shipped with the package (wheel installs too)


def list_suites() -> List[str]:
    """Names of the suites shipped in ``configs/`` (``published.yaml`` holds published numbers, not a suite)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.endswith("_reference")
                  and p.stem != "published")


def resolve_suite_path(suite: str) -> Path:
    """A suite name (``quick``) or a path to a YAML file."""
    path = Path(suite).expanduser()
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))
        hint = f" (it holds {', '.join(inside[:5])})" if inside else ""
        raise ConfigError(f"--suite {suite}: is a folder{hint}; give a suite name or a .yaml file")
    if path.suffix in (".yaml", ".yml"):
        if path.is_file():
            return path
        raise ConfigError(f"--suite {suite}: no such file; give a suite name ({', '.join(list_suites())}) or "
                          "an existing .yaml file")
    candidate = CONFIG_DIR / f"{suite}.yaml"
    if candidate.exists() and suite in list_suites():
        return candidate
    raise ConfigError(unknown_name("--suite", "suite", suite, list_suites()) + " (or a path to a .yaml file)")


def load_suite(suite: str, overrides: Optional[List[str]] = None, validate_names: bool = True,
               validate: bool = True) -> SuiteConfig:
    """Load, override and validate a suite; every invalid value fails here, before any training.

    With ``validate_names=False`` only the checks that need no registry run (``list`` reads every suite);
    with ``validate=False`` only keys and types are checked (the CLI validates after applying its options).
    """
    path = resolve_suite_path(suite)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the suite ({err})") from None
    raw = yaml_load(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (datasets:, pairs:, methods:, ...)")
    raw.setdefault("name", path.stem)
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = from_dict(SuiteConfig, raw, "")
    except ConfigError as err:
        raise ConfigError(f"{path.name}: {err}") from None
    if validate:
        validate_suite(cfg, names=validate_names)
    return cfg
