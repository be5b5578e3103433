"""vibescope analyzer library: media in, results out (no sockets, no Redis)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where fetched packages, decoded sources and cached features live: ``$VIBESCOPE_CACHE``, or
    ``~/.cache/vibescope`` when it is unset or empty (an empty value must not mean the current
    directory, which would fill a checkout with gigabytes)."""
    return Path(os.environ.get("VIBESCOPE_CACHE") or "~/.cache/vibescope").expanduser()
