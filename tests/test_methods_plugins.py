"""Methods from outside the repository: a module in a suite's ``plugins:`` list, an installed package's
entry point (group ``ltkd_bench.methods``), and the README's "add your method" example, verbatim."""
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import methods
from methods import MethodContext, Outputs, create_method, get_method, list_methods

FIXTURES = Path(__file__).parent / "plugin_fixtures"
README_EXAMPLE = (FIXTURES / "my_methods.py").read_text()
COUNTS = [100, 40, 16, 6, 2]
PLUGIN_MODULES = {"my_methods", "my_plugin_pkg", "ltkd_ep_plugin_mod", "ltkd_broken_plugin_mod"}


@pytest.fixture
def isolated_registry(monkeypatch):
    """Whatever a test registers or imports is forgotten afterwards."""
    list_methods()  # builtins and installed entry points registered before the snapshot
    with methods.REGISTRY.isolated():
        yield monkeypatch
    for mod in [m for m in sys.modules if m.split(".")[0] in PLUGIN_MODULES]:
        del sys.modules[mod]


def one_step(name, **hparams):
    """Run a registered teacher method for one SGD step on a linear student; return the loss terms."""
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(6, 5), torch.nn.Linear(6, 5)
    x, y = torch.randn(8, 6), torch.arange(8) % 5
    m = create_method(name, MethodContext(class_counts=COUNTS, student_dim=6, teacher_dim=6), **hparams)
    with torch.no_grad():
        t_out = Outputs(teacher(x), x)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    before = student.weight.detach().clone()
    terms = m(Outputs(student(x), x), t_out, y, 1)
    sum(terms.values()).backward()
    opt.step()
    assert not torch.equal(student.weight, before)
    return terms


def test_readme_example_plugin_loads_and_trains(tmp_path, isolated_registry):
    (tmp_path / "my_methods.py").write_text(README_EXAMPLE)
    isolated_registry.syspath_prepend(str(tmp_path))
    methods.load_plugins(["my_methods"])
    assert "my_kd" in list_methods()
    cls = get_method("my_kd")
    assert cls.hparams == {"temperature": 4.0, "tau": 0.5} and cls.summary
    terms = one_step("my_kd", tau=1.0)
    assert set(terms) == {"ce", "kd"} and all(torch.isfinite(v) for v in terms.values())


def test_plugin_module_registering_a_method(tmp_path, isolated_registry):
    pkg = tmp_path / "my_plugin_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(textwrap.dedent('''
        import torch.nn.functional as F
        from methods import Method, register_method
        from methods.kd import kd_loss

        @register_method("my_plugin_kd")
        class MyPluginKD(Method):
            hparams = {"temperature": 2.0}
            summary = "plugin test"

            def forward(self, student, teacher, target, epoch):
                return {"ce": F.cross_entropy(student.logits, target),
                        "kd": kd_loss(student.logits, teacher.logits, self.temperature)}
    '''))
    isolated_registry.syspath_prepend(str(tmp_path))
    methods.load_plugins(["my_plugin_pkg.mod"])
    assert "my_plugin_kd" in list_methods()
    one_step("my_plugin_kd")


def test_missing_plugin_module_says_how_to_fix():
    with pytest.raises(ModuleNotFoundError, match="PYTHONPATH"):
        methods.load_plugins(["no_such_plugin_module_xyz"])


def _write_dist(root: Path, dist: str, module: str, body: str, entry: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{methods.ENTRY_POINT_GROUP}]\n{entry}\n")


def test_entry_point_plugin_is_listed(tmp_path, isolated_registry):
    _write_dist(tmp_path, "ltkd_ep_plugin", "ltkd_ep_plugin_mod", '''
        import torch.nn.functional as F
        from methods import Method, register_method

        @register_method("ep_plugin_ce")
        class EPPluginCE(Method):
            requires_teacher = False
            summary = "entry-point plugin test"

            def forward(self, student, teacher, target, epoch):
                return {"ce": F.cross_entropy(student.logits, target)}
    ''', "ep_plugin_ce = ltkd_ep_plugin_mod")
    isolated_registry.syspath_prepend(str(tmp_path))
    methods.REGISTRY.refresh()  # the entry points are read again on the next lookup
    assert "ep_plugin_ce" in list_methods()
    assert get_method("ep_plugin_ce").summary == "entry-point plugin test"


def test_broken_entry_point_warns_and_the_rest_still_works(tmp_path, isolated_registry):
    _write_dist(tmp_path, "ltkd_broken_plugin", "ltkd_broken_plugin_mod", "raise ImportError('boom')\n",
                "broken = ltkd_broken_plugin_mod")
    isolated_registry.syspath_prepend(str(tmp_path))
    methods.REGISTRY.refresh()  # the entry points are read again on the next lookup
    with pytest.warns(RuntimeWarning, match="boom"):
        names = list_methods()
    assert "kd" in names


def test_readme_shows_the_tested_example():
    """The README's "Add your method" example is the plugin tested here, verbatim."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    assert README_EXAMPLE.strip() in readme.read_text()
