"""The one exception of the config layer, shared by every part of it (loading, conversion, overrides, checks)."""
from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A suite file or override is invalid; the message names the key and the fix."""
