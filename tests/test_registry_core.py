"""ltkd_core: the one registry (names, close-match errors, registered-twice warning, discovery, entry points,
plugins) and the package boundaries it makes possible: methods/ and datasets/ import nothing from benchmark,
the model zoo nothing from methods."""
import ast
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

import ltkd_core.registry as registry_mod
from ltkd_core.registry import Registry, load_plugins

REPO = Path(__file__).resolve().parent.parent


def widget_registry(**kw):
    reg = Registry("widget", **kw)
    for name in ("gadget", "sprocket"):
        reg.add(name, type(name.title(), (), {}))
    return reg


def test_get_returns_what_was_added():
    reg = Registry("widget")
    obj = object()
    assert reg.add("thing", obj) is obj
    assert reg.get("thing") is obj and "thing" in reg and "other" not in reg
    assert reg.names() == ["thing"]


def test_register_decorator_returns_the_object():
    reg = Registry("widget")

    @reg.register("fn")
    def fn():
        return 3

    assert fn() == 3 and reg.get("fn") is fn


def test_unknown_name_lists_close_matches_and_every_name():
    with pytest.raises(KeyError) as err:
        widget_registry().get("gadgte")
    assert err.value.args[0] == "unknown widget 'gadgte'. Did you mean gadget? Registered widgets: gadget, sprocket."


def test_unknown_name_without_close_match():
    with pytest.raises(KeyError) as err:
        widget_registry().get("zzz")
    assert err.value.args[0] == "unknown widget 'zzz'. Registered widgets: gadget, sprocket."


def test_custom_unknown_message():
    reg = widget_registry(unknown=lambda name, names: f"no {name}; have {'/'.join(names)}")
    with pytest.raises(KeyError) as err:
        reg.get("x")
    assert err.value.args[0] == "no x; have gadget/sprocket"


def test_registered_twice_warns_naming_both_at_the_callers_line():
    reg = Registry("widget")

    class First:
        pass

    class Second:
        pass

    reg.register("w")(First)
    with pytest.warns(RuntimeWarning) as caught:
        reg.register("w")(Second)
    msg = str(caught[0].message)
    assert msg == (f"widget 'w' is registered twice; {__name__}.{Second.__qualname__} replaces "
                   f"{__name__}.{First.__qualname__}")
    assert caught[0].filename == __file__  # stacklevel: the line that registered, not the registry
    assert reg.get("w") is Second


def test_registering_the_same_object_again_is_silent():
    reg = Registry("widget", origin=lambda entry: entry[0])

    def build():
        pass

    reg.add("w", (build, "info"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg.add("w", (build, "other info"))  # same origin: a re-import, not a replacement
    assert reg.get("w") == (build, "other info")


def test_isolated_forgets_what_was_registered_inside():
    reg = widget_registry()
    with reg.isolated():
        reg.add("temp", 1)
        reg.entries.pop("gadget")
        assert reg.names() == ["sprocket", "temp"]
    assert reg.names() == ["gadget", "sprocket"]


# --- entry points -------------------------------------------------------------------------------------------


class FakeEntryPoint(SimpleNamespace):
    """What ``importlib.metadata`` returns: ``name``, ``value`` and ``load()``."""

    def load(self):
        return self.loader()


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Replace the installed entry points with a list the test fills; records which groups were read."""
    eps, groups = [], []

    def fake(group):
        groups.append(group)
        return list(eps)

    monkeypatch.setattr(registry_mod, "_entry_points", fake)
    return eps, groups


def test_entry_point_plugins_register_on_first_lookup(fake_entry_points):
    eps, groups = fake_entry_points
    reg = Registry("widget", entry_point_group="ltkd_test.widgets")
    eps.append(FakeEntryPoint(name="good", value="pkg.good", loader=lambda: reg.add("from_plugin", 7)))
    assert groups == []  # nothing is read when the registry is made
    assert reg.names() == ["from_plugin"] and reg.get("from_plugin") == 7
    reg.names()
    assert groups == ["ltkd_test.widgets"]  # read once


def test_broken_entry_point_warns_and_the_rest_still_load(fake_entry_points):
    eps, _ = fake_entry_points
    reg = Registry("widget", entry_point_group="ltkd_test.widgets")

    def broken():
        raise ImportError("boom")

    eps.extend([FakeEntryPoint(name="bad", value="pkg.bad", loader=broken),
                FakeEntryPoint(name="good", value="pkg.good", loader=lambda: reg.add("ok", 1))])
    with pytest.warns(RuntimeWarning) as caught:
        assert reg.names() == ["ok"]
    assert str(caught[0].message) == "could not load widget plugin 'bad' (pkg.bad): boom"


def test_refresh_reads_entry_points_again(fake_entry_points):
    eps, groups = fake_entry_points
    reg = Registry("widget", entry_point_group="ltkd_test.widgets")
    assert reg.names() == []
    eps.append(FakeEntryPoint(name="late", value="pkg.late", loader=lambda: reg.add("late", 1)))
    assert reg.names() == []  # installed after the first lookup: not seen until refresh
    reg.refresh()
    assert reg.names() == ["late"] and len(groups) == 2


def test_no_group_reads_no_entry_points(fake_entry_points):
    _, groups = fake_entry_points
    assert widget_registry().names() == ["gadget", "sprocket"] and groups == []


# --- discovery of a package's modules -----------------------------------------------------------------------

PKG_INIT = """
    from ltkd_core.registry import Registry

    REGISTRY = Registry("widget", package=__name__, exclude={"helpers"})
"""
REGISTERS = """
    from {pkg} import REGISTRY

    REGISTRY.add("{name}", "{name} object")
"""


@pytest.fixture
def widget_package(tmp_path, monkeypatch):
    """Write a package ``ltkd_tmp_widgets`` (its modules given by the test) and return a function importing it."""
    pkg = "ltkd_tmp_widgets"

    def make(modules):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(textwrap.dedent(PKG_INIT))
        for name, body in modules.items():
            (tmp_path / pkg / f"{name}.py").write_text(textwrap.dedent(body.format(pkg=pkg, name=name)))
        monkeypatch.syspath_prepend(str(tmp_path))
        __import__(pkg)
        return sys.modules[pkg]

    yield make
    for mod in [m for m in sys.modules if m.split(".")[0] == pkg]:
        del sys.modules[mod]


def test_discovery_imports_every_module_but_excluded_and_private(widget_package):
    never = "raise RuntimeError('must not be imported')\n"
    package = widget_package({"alpha": REGISTERS, "beta": REGISTERS, "helpers": never, "_private": never})
    assert "ltkd_tmp_widgets.alpha" not in sys.modules  # nothing imported before the first lookup
    assert package.REGISTRY.builtin_modules() == ["alpha", "beta"]
    assert package.REGISTRY.names() == ["alpha", "beta"]
    assert package.REGISTRY.get("beta") == "beta object"


@pytest.mark.parametrize("body,cause,wording", [
    ("raise RuntimeError('boom  in\\n the module')\n", RuntimeError,
     "raised on import: RuntimeError: boom in the module (at "),
    ("import ltkd_no_such_dependency_xyz\n", ModuleNotFoundError,
     "raised on import: ModuleNotFoundError: No module named 'ltkd_no_such_dependency_xyz' (at "),
    ("def broken(:\n", SyntaxError, "has a syntax error: SyntaxError: "),
])
def test_broken_builtin_raises_one_line_naming_module_error_and_place(widget_package, body, cause, wording):
    package = widget_package({"alpha": REGISTERS, "broken": body})
    with pytest.raises(ImportError) as err:
        package.REGISTRY.names()
    msg = str(err.value)
    assert msg.startswith(f"builtin widget module 'ltkd_tmp_widgets.broken' {wording}") and "\n" not in msg
    assert "broken.py:1)" in msg and msg.endswith("; fix ltkd_tmp_widgets/broken.py or move it out of the package")
    assert isinstance(err.value.__cause__, cause)
    with pytest.raises(ImportError):  # still broken: the next lookup raises again instead of listing a part
        package.REGISTRY.names()


# --- load_plugins --------------------------------------------------------------------------------------------


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("ltkd_tmp_plugin", None)


def test_load_plugins_imports_the_module(plugin_dir):
    (plugin_dir / "ltkd_tmp_plugin.py").write_text("LOADED = True\n")
    load_plugins(["ltkd_tmp_plugin"])
    assert sys.modules["ltkd_tmp_plugin"].LOADED


def test_missing_plugin_says_how_to_make_it_importable():
    with pytest.raises(ModuleNotFoundError, match=r"^plugin module 'ltkd_no_plugin_xyz' could not be imported "
                                                  r"\(.*\); make it importable \(install it or add its folder to "
                                                  r"PYTHONPATH\)$"):
        load_plugins(["ltkd_no_plugin_xyz"])


@pytest.mark.parametrize("body,start", [
    ("import ltkd_no_dep_xyz\n", "plugin module 'ltkd_tmp_plugin' failed to import: No module named 'ltkd_no_dep_xyz'"),
    ("raise RuntimeError('boom')\n", "plugin module 'ltkd_tmp_plugin' raised on import: RuntimeError: boom (at "),
    ("def broken(:\n", "plugin module 'ltkd_tmp_plugin' has a syntax error: SyntaxError: "),
])
def test_broken_plugin_is_one_line_naming_it(plugin_dir, body, start):
    (plugin_dir / "ltkd_tmp_plugin.py").write_text(body)
    with pytest.raises(ImportError) as err:
        load_plugins(["ltkd_tmp_plugin"])
    assert str(err.value).startswith(start) and "ltkd_tmp_plugin.py:1" in str(err.value)
    assert "\n" not in str(err.value)


# --- package boundaries --------------------------------------------------------------------------------------


def test_methods_datasets_and_core_do_not_import_the_harness():
    """Importing (and erroring through) methods and datasets leaves ``benchmark`` unimported; ltkd_core
    itself (registry, errors) does not even import torch."""
    code = textwrap.dedent("""
        import sys
        import ltkd_core, ltkd_core.errors, ltkd_core.registry
        light = "torch" not in sys.modules
        import methods, datasets
        methods.list_methods(); datasets.list_datasets()
        for call in (lambda: methods.get_method("kdd"), lambda: datasets.dataset_info("cifar10lt")):
            try:
                call()
            except KeyError:
                pass
        try:
            methods.get_method("kd").validate_hparams({"temprature": 1})
        except ValueError:
            pass
        print(light, sorted(m for m in sys.modules if m.split(".")[0] == "benchmark"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.split() == ["True", "[]"]


def _imported_roots(path: Path):
    """Top-level package names a file imports anywhere (module level or inside functions), relative imports
    resolved against the file's package."""
    parts = path.relative_to(REPO).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield parts[0] if node.level else (node.module or "").split(".")[0]


@pytest.mark.parametrize("folder,forbidden", [
    ("benchmark/models", {"methods"}),
    ("methods", {"benchmark"}),
    ("datasets", {"benchmark"}),
    ("ltkd_core", {"benchmark", "methods", "datasets", "timm"}),
])
def test_package_boundaries(folder, forbidden):
    files = sorted((REPO / folder).rglob("*.py"))
    assert files
    bad = {f"{p.relative_to(REPO)} imports {root}" for p in files for root in _imported_roots(p) if root in forbidden}
    assert not bad


def test_shared_names_are_one_object():
    """The old import paths still work and give the very same objects."""
    import benchmark.errors
    import ltkd_core.errors
    import ltkd_core.outputs
    import methods
    import methods.base
    from benchmark.models import features

    assert benchmark.errors.did_you_mean is ltkd_core.errors.did_you_mean
    assert benchmark.errors.unknown_name is ltkd_core.errors.unknown_name
    assert methods.Outputs is methods.base.Outputs is features.Outputs is ltkd_core.outputs.Outputs
    assert methods.base.NEEDS is ltkd_core.outputs.NEEDS and methods.load_plugins is load_plugins
