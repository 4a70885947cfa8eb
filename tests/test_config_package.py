"""The config package's structure rules, checked on its source: no ``eval``/``exec``, no private member of
another package (``datasets``, ``methods``, the rest of ``benchmark``, third parties); and the public pieces
that replaced those (``datasets.dataset_builder``, ``registries.parameter_type``). Function size: test_code_shape.py.
"""
import ast
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest

import benchmark.config

CONFIG_PKG = Path(benchmark.config.__file__).parent


def _modules() -> List[Path]:
    """Every module of the config package (the scan below must see a new one without editing this list)."""
    paths = sorted(CONFIG_PKG.glob("*.py"))
    assert len(paths) >= 5, paths  # the package, not a stray single module
    return paths


def eval_calls(tree: ast.AST) -> List[Tuple[int, str]]:
    """``(line, name)`` of every call of ``eval`` / ``exec``, plain or as ``builtins.eval``."""
    found = []
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
            found.append((node.lineno, func.id))
        elif isinstance(func, ast.Attribute) and func.attr in ("eval", "exec") and \
                isinstance(func.value, ast.Name) and func.value.id == "builtins":
            found.append((node.lineno, func.attr))
    return found


def _outside(module: Optional[str], level: int) -> bool:
    """Whether an ``import`` names code outside the config package (``..errors``, ``datasets``, ``yaml``, ...)."""
    if level:
        return level > 1  # `.schema` is a sibling; `..errors` is the rest of benchmark
    return module != "benchmark.config" and not (module or "").startswith("benchmark.config.")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(tree: ast.AST) -> List[Tuple[int, str]]:
    """``(line, text)`` of every private name from outside the config package this module imports or reads:
    ``from datasets import _entry``, ``import datasets as ds; ds._entry``, ``methods._REGISTRY``."""
    aliases = set()  # local names bound to outside modules or to names imported from them
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named = [a for a in node.names if _outside(a.name, 0)]
            aliases.update((a.asname or a.name).split(".")[0] for a in named)
            found.extend((node.lineno, a.name) for a in named if any(map(_private, a.name.split("."))))
        elif isinstance(node, ast.ImportFrom) and _outside(node.module, node.level):
            module = "." * node.level + (node.module or "")
            aliases.update(a.asname or a.name for a in node.names)
            found.extend((node.lineno, (f"{module}." if node.module else module) + a.name) for a in node.names
                         if _private(a.name) or any(map(_private, module.split("."))))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and _private(node.attr):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_no_config_module_calls_eval(path):
    assert eval_calls(ast.parse(path.read_text())) == [], f"{path.name}: resolve types with typing.get_type_hints"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_config_touches_no_private_member_of_another_package(path):
    assert private_uses(ast.parse(path.read_text())) == [], f"{path.name}: use (or add) a public function"


@pytest.mark.parametrize("source, expected", [
    ("x = eval(ann, g)", [(1, "eval")]),
    ("import builtins\nbuiltins.eval('1')", [(2, "eval")]),
    ("exec('x = 1')", [(1, "exec")]),
    ("import re\nre.compile('a')\nt.evaluate()", []),
])
def test_eval_scan_finds_calls(source, expected):
    """The scan itself: it must flag eval/exec (else the test above proves nothing) and not re.compile."""
    assert eval_calls(ast.parse(source)) == expected


@pytest.mark.parametrize("source, expected", [
    ("import datasets as ds\nb = ds._entry(name).builder", [(2, "ds._entry")]),
    ("def f():\n    import datasets\n    return datasets._REGISTRY", [(3, "datasets._REGISTRY")]),
    ("from datasets import _entry", [(1, "datasets._entry")]),
    ("from methods.base import _x", [(1, "methods.base._x")]),
    ("import methods\nmethods.get_method('kd')._hidden", []),  # an attribute of a returned object, not the package
    ("import datasets as ds\nds.dataset_builder(n).__name__", []),
    ("from ..errors import _close", [(1, "..errors._close")]),
    ("import re\nre._compile('a')", [(2, "re._compile")]),
    ("from .schema import _FIXED\nfrom . import convert\nconvert._as_int", []),  # inside the config package
    ("from benchmark.config.convert import _as_int", []),
])
def test_private_scan_finds_uses(source, expected):
    assert private_uses(ast.parse(source)) == expected


# ----------------------------------------------------------------------------- the public replacements


def test_dataset_builder_is_the_registered_builder():
    import datasets as ds
    from datasets.cifar import build_cifar10_lt

    assert ds.dataset_builder("cifar10-lt") is build_cifar10_lt
    with pytest.raises(KeyError, match=r"unknown dataset 'cifar10lt'; did you mean 'cifar10-lt'"):
        ds.dataset_builder("cifar10lt")


def _builder(root=None, n_max: "Optional[int]" = None, ref: "Missing" = None, plain=3):  # noqa: F821
    """A stand-in dataset builder with string annotations, one of them unresolvable (TYPE_CHECKING-only)."""


def test_parameter_type_resolves_each_annotation_on_its_own():
    """String annotations resolve in the function's module; an unresolvable one gives ``Any`` for itself only;
    an unannotated or absent parameter is ``Any``."""
    from benchmark.config.registries import parameter_type

    assert parameter_type(_builder, "n_max") == Optional[int]
    assert parameter_type(_builder, "ref") is Any
    assert parameter_type(_builder, "plain") is Any
    assert parameter_type(_builder, "nope") is Any


def test_config_dir_is_the_repository_configs_folder():
    assert benchmark.config.CONFIG_DIR.resolve() == (Path(__file__).parents[1] / "configs").resolve()
    assert (benchmark.config.CONFIG_DIR / "quick.yaml").is_file()


# the names `benchmark.config` offered as one module, all still importable from the package
PUBLIC_API = ["ConfigError", "TrainRecipe", "DatasetEntry", "Pair", "SuiteConfig", "CONFIG_DIR", "SuiteLoader",
              "load_suite", "list_suites", "apply_overrides", "parse_override", "yaml_load", "validate_suite",
              "validate_names_exist", "check_device", "check_data", "dataset_options", "effective_method_params",
              "method_names", "check_root", "resolve_suite_path"]


def test_the_package_keeps_the_modules_api():
    missing = [name for name in PUBLIC_API if not hasattr(benchmark.config, name)]
    assert missing == []
    assert set(benchmark.config.__all__) <= set(dir(benchmark.config))
    assert benchmark.config.ConfigError is benchmark.config.exceptions.ConfigError
    assert issubclass(benchmark.config.ConfigError, ValueError)
