"""One wording for "unknown name" errors: close-match hints shared by config, CLI and registries.

The functions live in :mod:`ltkd_core.errors` (standard library only, so that ``methods`` and ``datasets``
use them without importing the harness); this module re-exports them for the harness and existing imports.
"""
from ltkd_core.errors import close_matches, did_you_mean, unknown_name

__all__ = ["close_matches", "did_you_mean", "unknown_name"]
