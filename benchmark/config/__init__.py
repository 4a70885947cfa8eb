"""Suite configuration: YAML -> validated dataclasses, with ``key=value`` overrides.

A suite names datasets, teacher->student pairs, methods, seeds and the two training recipes.
Validation happens before any training: an unknown key, a wrong type, an impossible value or an
unknown method/model/dataset/option fails with one line naming the key's path and the fix.

The parts, one job each:

- :mod:`.yaml_io`: YAML with ``yaml.safe_load`` semantics (no tag is ever executed), floats as people
  write them (``1e-2``, ``5.e-4``, ``.5``), a key given twice rejected, errors as ``file:line:col: ...``;
- :mod:`.schema`: the dataclasses (:class:`SuiteConfig`, :class:`TrainRecipe`, ...) and their defaults;
- :mod:`.convert`: plain YAML data -> those dataclasses, checked against their type hints;
- :mod:`.overrides`: the ``a.b.c=value`` override language;
- :mod:`.suites`: finding (``configs/`` or a path) and loading a suite;
- :mod:`.validation`: value checks, and names checked against the dataset/method/model registries;
- :mod:`.registries`: what those registries say about a suite (options, ``all``, effective hyper-parameters);
- :mod:`.environment`: checks against this machine (device, dataset roots, the data itself).
"""
from __future__ import annotations

from .convert import from_dict
from .environment import check_data, check_device, check_root
from .exceptions import ConfigError
from .overrides import apply_overrides, parse_override
from .registries import dataset_options, effective_method_params, method_names
from .schema import DatasetEntry, Pair, SuiteConfig, TrainRecipe
from .suites import CONFIG_DIR, list_suites, load_suite, resolve_suite_path
from .validation import validate_names_exist, validate_suite
from .yaml_io import SuiteLoader, yaml_load


__all__ = [
    "ConfigError", "TrainRecipe", "DatasetEntry", "Pair", "SuiteConfig", "CONFIG_DIR", "SuiteLoader",
    "load_suite", "list_suites", "apply_overrides", "parse_override", "yaml_load", "validate_suite",
    "validate_names_exist", "check_device", "check_data", "dataset_options", "effective_method_params",
    "method_names", "check_root", "resolve_suite_path", "from_dict",
]
