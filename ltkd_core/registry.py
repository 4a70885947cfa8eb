"""One registry for methods, datasets and executors: name -> object, discovery of a package's modules,
entry-point plugins, a warning when a name is registered twice and close-match errors for unknown names.

Standard library only (torch-free), so ``import datasets`` stays cheap. Builtins and plugins are imported
on the first lookup, not when the registry is created; every import failure is one line naming the module,
the error and the ``file:line`` where it happened (the real exception stays chained as ``__cause__``).
"""
from __future__ import annotations

import importlib
import pkgutil
import traceback
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Generic, Iterable, Iterator, List, Optional, Sequence, TypeVar

from .errors import did_you_mean

__all__ = ["Registry", "load_plugins"]

T = TypeVar("T")


def _origin(err: BaseException) -> str:
    """``file:line`` where an import failed: the syntax error's position, else the innermost traceback frame."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}"
    frames = traceback.extract_tb(err.__traceback__)
    frames = [f for f in frames if "importlib" not in f.filename] or frames
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _describe_import_error(err: BaseException) -> str:
    """``raised on import: Type: message (at file:line)`` (or ``has a syntax error: ...``), one line."""
    kind = "has a syntax error" if isinstance(err, SyntaxError) else "raised on import"
    msg = err.msg if isinstance(err, SyntaxError) else str(err)
    return f"{kind}: {type(err).__name__}: {' '.join(str(msg).split())} (at {_origin(err)})"


def load_plugins(modules: Iterable[str]) -> None:
    """Import modules that register methods, datasets or executors (a suite's ``plugins:`` list).

    Any failure becomes one ``ImportError`` line naming the module, the error and where it happened.
    """
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name and (mod == err.name or mod.startswith(err.name + ".")):
                raise ModuleNotFoundError(
                    f"plugin module '{mod}' could not be imported ({err}); make it importable "
                    f"(install it or add its folder to PYTHONPATH)") from err
            raise ImportError(f"plugin module '{mod}' failed to import: {err} (at {_origin(err)}); install what "
                              f"it needs or fix the module") from err
        except Exception as err:  # SyntaxError, or anything the module raises while it runs
            raise ImportError(f"plugin module '{mod}' {_describe_import_error(err)}; fix the module or remove it "
                              f"from plugins:") from err


def _qualified(obj: Any) -> str:
    """``module.QualName`` of a class or function, for messages."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _entry_points(group: str) -> Iterable[Any]:
    """The installed entry points of ``group`` (``importlib.metadata``, Python 3.9 included)."""
    from importlib.metadata import entry_points

    try:
        return entry_points(group=group)
    except TypeError:  # Python < 3.10
        return entry_points().get(group, [])


class Registry(Generic[T]):
    """Objects of one ``kind`` by name, filled by ``register`` calls in the modules that define them.

    ``package``: its modules (all but ``exclude`` and private ``_*`` ones) are the builtins, imported on the
    first lookup, so a new file is found without editing a list; one that fails to import raises, named.
    ``entry_point_group``: installed packages' plugins, loaded on the first lookup; a broken one only warns.
    ``unknown(name, names)``: the ``KeyError`` message for a missing name (default: close matches, then all).
    ``origin(obj)``: the class or function an entry stands for, in the registered-twice warning.
    """

    def __init__(self, kind: str, package: Optional[str] = None, exclude: Iterable[str] = (),
                 entry_point_group: Optional[str] = None,
                 unknown: Optional[Callable[[str, Sequence[str]], str]] = None,
                 origin: Optional[Callable[[T], Any]] = None) -> None:
        self.kind = kind
        self.package = package
        self.exclude = frozenset(exclude)
        self.entry_point_group = entry_point_group
        #: the live name -> object dict (filled by ``add``; ``names``/``get`` load the builtins first)
        self.entries: Dict[str, T] = {}
        self._unknown = unknown or self._default_unknown
        self._origin: Callable[[T], Any] = origin or (lambda obj: obj)
        self._builtins_loaded = package is None
        self._entry_points_loaded = entry_point_group is None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, package={self.package!r}, {len(self.entries)} registered)"

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` and return it; replacing another object warns, naming both."""
        if name in self.entries and self._origin(self.entries[name]) is not self._origin(obj):
            warnings.warn(f"{self.kind} '{name}' is registered twice; {_qualified(self._origin(obj))} replaces "
                          f"{_qualified(self._origin(self.entries[name]))}", RuntimeWarning, stacklevel=3)
        self.entries[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@registry.register("name")``."""
        return lambda obj: self.add(name, obj)

    def names(self) -> List[str]:
        """Every registered name (builtins and entry-point plugins loaded), sorted."""
        self.load()
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self.entries

    def get(self, name: str) -> T:
        """The object registered as ``name``; a ``KeyError`` names close matches and every registered name."""
        self.load()
        if name not in self.entries:
            raise KeyError(self._unknown(name, sorted(self.entries)))
        return self.entries[name]

    def _default_unknown(self, name: str, names: Sequence[str]) -> str:
        return (f"unknown {self.kind} '{name}'.{did_you_mean(name, names, cutoff=0.5)} Registered {self.kind}s: "
                f"{', '.join(names)}.")

    def builtin_modules(self) -> List[str]:
        """Names of the package's modules that may register (all but ``exclude`` and ``_*``), sorted."""
        if self.package is None:
            return []
        path = importlib.import_module(self.package).__path__
        return sorted(m.name for m in pkgutil.iter_modules(path)
                      if not m.name.startswith("_") and m.name not in self.exclude)

    def load(self) -> None:
        """Import the builtin modules, then the entry-point plugins, each once (each registers itself)."""
        if not self._builtins_loaded:
            for name in self.builtin_modules():
                self._import_builtin(f"{self.package}.{name}")
            self._builtins_loaded = True  # only once all imported: a broken module raises again next time
        if not self._entry_points_loaded:
            self._entry_points_loaded = True  # first: a plugin may look names up while it loads
            self._load_entry_points()

    def refresh(self) -> None:
        """Scan the package and the entry points again on the next lookup (a module or plugin added since)."""
        self._builtins_loaded = self.package is None
        self._entry_points_loaded = self.entry_point_group is None

    @contextmanager
    def isolated(self) -> Iterator[Registry[T]]:
        """Forget, on exit, whatever was registered or loaded inside (tests, trying a plugin in a notebook)."""
        saved = dict(self.entries), self._builtins_loaded, self._entry_points_loaded
        try:
            yield self
        finally:
            self.entries.clear()
            self.entries.update(saved[0])
            self._builtins_loaded, self._entry_points_loaded = saved[1], saved[2]

    def _import_builtin(self, module: str) -> None:
        try:
            importlib.import_module(module)
        except Exception as err:  # the real error stays chained as __cause__
            raise ImportError(f"builtin {self.kind} module '{module}' {_describe_import_error(err)}; fix "
                              f"{module.replace('.', '/')}.py or move it out of the package") from err

    def _load_entry_points(self) -> None:
        for ep in _entry_points(str(self.entry_point_group)):
            try:
                ep.load()
            except Exception as err:  # a broken plugin must not break the benchmark
                warnings.warn(f"could not load {self.kind} plugin '{ep.name}' ({ep.value}): {err}", RuntimeWarning)
