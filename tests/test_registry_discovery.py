"""The method and dataset registries find their package's modules themselves (pkgutil): a new file is listed
without editing any list, and a builtin module that fails to import raises an ImportError naming it."""
import contextlib
import sys
import textwrap

import pytest

import datasets
import methods

NEW_METHOD = """
    from methods import register_method
    from methods.base import Method


    @register_method("my_new")
    class MyNew(Method):
        summary = "a method file dropped into methods/"

        def forward(self, s, t, y, epoch):
            return {}
"""

NEW_DATASET = """
    from datasets import register_dataset


    @register_dataset("my-new-lt")
    def build(root=None, split="train", imbalance_factor=None, seed=0, transform=None):
        return [root, split]
"""


@pytest.fixture
def extra_folder(tmp_path, monkeypatch):
    """A second folder on a package's ``__path__``, its registry rescanned; whatever it registers is forgotten."""
    added = []
    with contextlib.ExitStack() as stack:

        def add(package, files):
            package.REGISTRY.load()  # the real builtins are registered before the snapshot is taken
            stack.enter_context(package.REGISTRY.isolated())
            for name, text in files.items():
                (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
                added.append(f"{package.__name__}.{name}")
            monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
            package.REGISTRY.refresh()

        yield add
    for module in added:
        sys.modules.pop(module, None)


def test_new_method_module_is_listed(extra_folder):
    before = methods.list_methods()
    extra_folder(methods, {"my_new": NEW_METHOD, "_private_helper": "raise RuntimeError('never imported')"})
    assert "my_new" not in before
    assert methods.list_methods() == sorted(before + ["my_new"])
    assert methods.get_method("my_new").summary == "a method file dropped into methods/"


@pytest.mark.parametrize("package,some", [(methods, {"ce", "kd", "crd"}), (datasets, {"cifar", "fashion_mnist"})])
def test_base_and_private_modules_are_not_builtins(package, some):
    found = package.REGISTRY.builtin_modules()
    assert some <= set(found) and "base" not in found and not any(m.startswith("_") for m in found)


@pytest.mark.parametrize("body,cause", [("import no_such_dependency_xyz\n", ModuleNotFoundError),
                                        ("raise RuntimeError('boom in the module')\n", RuntimeError),
                                        ("def broken(:\n", SyntaxError)])
def test_broken_method_module_raises_naming_it(extra_folder, body, cause):
    extra_folder(methods, {"my_broken": body})
    with pytest.raises(ImportError, match=r"^builtin method module 'methods\.my_broken' ") as err:
        methods.list_methods()
    assert isinstance(err.value.__cause__, cause)  # the real exception, chained
    assert type(err.value.__cause__).__name__ in str(err.value) and "\n" not in str(err.value)
    assert "my_broken.py" in str(err.value)


def test_new_dataset_module_is_listed(extra_folder):
    extra_folder(datasets, {"my_new_family": NEW_DATASET})
    assert "my-new-lt" in datasets.list_datasets()
    assert datasets.build_dataset("my-new-lt", root="r") == ["r", "train"]


def test_broken_dataset_module_raises_naming_it(extra_folder):
    extra_folder(datasets, {"my_broken_family": "raise RuntimeError('boom in the family')\n"})
    with pytest.raises(ImportError, match=r"^builtin dataset module 'datasets\.my_broken_family' raised on import: "
                                          r"RuntimeError: boom in the family \(at .*my_broken_family\.py:1\)") as err:
        datasets.list_datasets()
    assert isinstance(err.value.__cause__, RuntimeError)
