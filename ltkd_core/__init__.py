"""What ``methods/``, ``datasets/`` and the harness share without importing one another.

``registry``: the one name -> object registry (module discovery, entry-point plugins, close-match errors);
``errors``: the close-match wording of "unknown name" errors; ``outputs``: what a network produced for a
batch (``Outputs``) and what a method may ask for (``NEEDS``). Only ``outputs`` imports torch, so importing
this package, ``registry`` or ``errors`` stays cheap; none of them imports ``benchmark``, ``methods`` or
``datasets``.
"""
from .errors import close_matches, did_you_mean, unknown_name
from .registry import Registry, load_plugins

__all__ = ["Registry", "load_plugins", "close_matches", "did_you_mean", "unknown_name"]
