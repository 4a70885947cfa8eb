"""Code shape: no function in the harness, the methods or the datasets over 60 lines or complexity 15 (issue 23).

Lines run from the ``def`` line to the last line of the body, docstring included (decorators not counted).
Cyclomatic complexity is counted by a small AST walk rather than ``mccabe`` (not a dependency of this project):
1, plus one per ``if``/``elif``, ``for``, ``while``, ``except`` clause, ternary, ``match`` case, comprehension
``for`` and each of its ``if`` filters, and each operand of ``and``/``or`` after the first (``with``, ``finally``
and ``assert`` add nothing). Nested functions and lambdas count toward the function that holds them (and are
checked on their own as well). This is stricter than mccabe, which skips boolean operators, ternaries and
comprehensions, and gives the figures issue 23 quotes (``verify_txt_split`` 39, ``verify_cifar`` 21).
"""
import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("benchmark", "methods", "datasets", "ltkd_core")
MAX_LINES, MAX_COMPLEXITY = 60, 15


_BRANCHES = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.IfExp, ast.ExceptHandler) + (
    (ast.match_case,) if hasattr(ast, "match_case") else ())
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Shape:
    """One function's size: ``where`` is ``path:qualified.name``."""

    where: str
    lines: int
    complexity: int

    @property
    def too_big(self) -> bool:
        return self.lines > MAX_LINES or self.complexity > MAX_COMPLEXITY

    def __str__(self) -> str:
        return f"{self.where}: {self.lines} lines, complexity {self.complexity}"


def complexity(fn: ast.AST) -> int:
    """Cyclomatic complexity of ``fn`` by the rules in the module docstring."""
    count = 1
    for node in ast.walk(fn):
        if isinstance(node, _BRANCHES):
            count += 1
        elif isinstance(node, ast.BoolOp):
            count += len(node.values) - 1
        elif isinstance(node, ast.comprehension):
            count += 1 + len(node.ifs)
    return count


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple]:
    """(qualified name, node) of every function and method under ``node``, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _FUNCTIONS):
            yield prefix + child.name, child
            yield from _functions(child, prefix + child.name + ".")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, prefix + child.name + ".")
        else:
            yield from _functions(child, prefix)


def shapes_of(source: str, path: str) -> List[Shape]:
    """The shape of every function in ``source`` (shown as living in ``path``)."""
    return [Shape(f"{path}:{name}", fn.end_lineno - fn.lineno + 1, complexity(fn))
            for name, fn in _functions(ast.parse(source, filename=path))]


def scan(repo: Path, roots: Sequence[str] = ROOTS) -> List[Shape]:
    """The shape of every function in the ``roots`` packages of ``repo`` that exist."""
    found: List[Shape] = []
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            found += shapes_of(path.read_text(encoding="utf-8"), path.relative_to(repo).as_posix())
    return found


@pytest.fixture(scope="module")
def repo_shapes() -> List[Shape]:
    return scan(REPO)


def test_no_function_over_60_lines_or_complexity_15(repo_shapes):
    over = [str(s) for s in repo_shapes if s.too_big]
    assert not over, (f"{len(over)} function(s) over {MAX_LINES} lines or complexity {MAX_COMPLEXITY}; extract "
                      f"well-named helpers:\n" + "\n".join(over))


def test_the_scan_reads_every_package(repo_shapes):
    """A wrong root or an empty walk would pass the first test vacuously."""
    files = {s.where.split(":")[0].split("/")[0] for s in repo_shapes}
    assert {"benchmark", "methods", "datasets"} <= files
    names = {s.where for s in repo_shapes}
    assert {"datasets/txt_split.py:verify_txt_split", "datasets/cifar.py:verify_cifar"} <= names


# --- the checker itself, on snippets ---

def _body(n: int) -> str:
    return "".join(f"    x{i} = {i}\n" for i in range(n))


def test_lines_run_from_def_to_the_last_line_with_the_docstring():
    source = '@decorator\ndef f():\n    """Doc."""\n' + _body(57) + "    return x0\n"  # def + doc + 57 + return
    (shape,) = shapes_of(source, "m.py")
    assert shape.lines == 60 and not shape.too_big
    (shape,) = shapes_of(source.replace("    return", "    x = 1\n    return"), "m.py")
    assert shape.lines == 61 and shape.too_big and str(shape) == "m.py:f: 61 lines, complexity 1"


@pytest.mark.parametrize("snippet, expected", [
    ("pass", 1),
    ("if a:\n    pass", 2),
    ("if a:\n    pass\nelif b:\n    pass\nelse:\n    pass", 3),
    ("for i in a:\n    pass\nelse:\n    pass", 2),
    ("while a:\n    pass", 2),
    ("try:\n    pass\nexcept ValueError:\n    pass\nexcept OSError:\n    pass\nfinally:\n    pass", 3),
    ("with a, b:\n    pass", 1),
    ("x = a if b else c", 2),
    ("x = a and b and c", 3),
    ("x = (a or b) and c", 3),
    ("x = [i for i in a]", 2),
    ("x = {i for i in a if i if i > 1}", 4),
    ("x = [i for r in a for i in r]", 3),
    ("match a:\n    case 1:\n        pass\n    case _:\n        pass", 3),
    ("def inner():\n    if a:\n        pass\nf = lambda: a or b", 3),
])
def test_each_branch_adds_one(snippet, expected):
    shapes = shapes_of("def f():\n" + textwrap.indent(snippet, "    ") + "\n", "m.py")
    assert shapes[0].where == "m.py:f" and shapes[0].complexity == expected


def test_the_scan_lists_a_long_function_and_a_branchy_method(tmp_path):
    pkg = tmp_path / "datasets"
    pkg.mkdir()
    branches = "".join(f"        if a == {i}:\n            return {i}\n" for i in range(15))
    (pkg / "x.py").write_text("def long():\n" + _body(69) + "\n\nclass C:\n    def branchy(self, a):\n"
                              + branches + "        return a\n\n    def small(self):\n        return 1\n")
    shapes = scan(tmp_path)
    assert [str(s) for s in shapes if s.too_big] == ["datasets/x.py:long: 70 lines, complexity 1",
                                                     "datasets/x.py:C.branchy: 32 lines, complexity 16"]
    assert [s.where for s in shapes] == ["datasets/x.py:long", "datasets/x.py:C.branchy", "datasets/x.py:C.small"]
