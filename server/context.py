"""What a connection needs from the server process, passed in explicitly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from vibescope.server.config import ServerConfig
from vibescope.server.metrics import Metrics
from vibescope.server.pool import AnalysisPool
from vibescope.server.registry import ConnectionRegistry
from vibescope.server.shedding import Clock, SheddingLimits
from vibescope.server.store import StateStore


@dataclass
class ConnectionContext:
    config: ServerConfig
    store: StateStore
    pool: AnalysisPool  # every session's analysis, in lock-step
    metrics: Metrics
    registry: ConnectionRegistry
    models: dict[str, dict[str, Any]]  # welcome["models"]
    version: str
    clock: Clock = time.perf_counter  # arrival and answer times (VideoShedding, latency)
    shedding: SheddingLimits = field(default_factory=SheddingLimits)
