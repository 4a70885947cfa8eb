"""One wording for "unknown name" errors: close-match hints shared by the registries, config and CLI.

Standard library only, so that ``datasets`` (which must import without torch) and the config layer can use
it before anything heavy is loaded. ``benchmark.errors`` re-exports it.
"""
from __future__ import annotations

import difflib
from typing import Dict, Iterable, List

__all__ = ["close_matches", "did_you_mean", "unknown_name"]


def close_matches(name: object, known: Iterable[str], n: int = 3, cutoff: float = 0.6) -> List[str]:
    """The names in ``known`` closest to ``name`` (case-insensitive, best first, ``name`` itself left out).

    For messages whose wording is fixed elsewhere; :func:`did_you_mean` is the usual sentence.
    """
    lowered: Dict[str, str] = {}
    for k in (str(k) for k in known):
        lowered.setdefault(k.lower(), k)
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=cutoff)
    return [lowered[c] for c in close if lowered[c] != str(name)]


def did_you_mean(name: object, known: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``" Did you mean a, b?"`` for the closest names in ``known`` (case-insensitive), else ``""``.

    The leading space lets callers append it straight after a sentence: ``f"unknown key 'x'.{hint}"``.
    """
    close = close_matches(name, known, n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(close)}?" if close else ""


def unknown_name(where: str, kind: str, name: object, known: Iterable[str], limit: int = 40,
                 cutoff: float = 0.6) -> str:
    """The one-line message ``"<where>: unknown <kind> '<name>'. Did you mean X? Allowed: a, b, c"``.

    ``known`` is listed in full up to ``limit`` names (then ``...``) so the fix is on the same line.
    """
    names = [str(k) for k in known]
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") if names else "(none)"
    prefix = f"{where}: " if where else ""
    return f"{prefix}unknown {kind} '{name}'.{did_you_mean(name, names, cutoff=cutoff)} Allowed: {shown}"
