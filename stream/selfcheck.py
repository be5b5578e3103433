"""Every streamer's own check (DESIGN.md §5): lag, stride, real-time factor, and the relative
difference between streaming (several random chunkings) and offline output."""

from __future__ import annotations

import importlib
from typing import Any

# module with a ``selfcheck(seed) -> {"name", "lag_ms", "stride_ms", "rtf", "delta"}``
STREAMERS = ("vibescope.stream.separator.streamer", "vibescope.stream.tagf.streamer")
DELTA_LIMIT = 1e-5


def run_all(seed: int = 0) -> list[dict[str, Any]]:
    return [importlib.import_module(name).selfcheck(seed=seed) for name in STREAMERS]
