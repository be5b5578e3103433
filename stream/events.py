"""What the analyzer returns: the overlay event (the JSON on every surface) and a feed's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vibescope.stream.stage import Tick


@dataclass
class OverlayEvent:
    """One overlay event (docs/protocol.md, Events); ``to_dict()`` is the JSON on every surface."""

    t: float  # media time of the end of its tick, seconds
    valence: float | None = None
    arousal: float | None = None
    confidence: float | None = None
    music: dict[str, float | None] = field(default_factory=lambda: {"probability": None, "level_db": None})
    speech: dict[str, float | None] = field(default_factory=lambda: {"probability": None})
    face: dict[str, Any] = field(default_factory=lambda: {"present": None})
    loudness: dict[str, float | None] = field(default_factory=lambda: {"dbfs": None})
    latency_ms: float | None = None
    models: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=lambda: {"video_frames": 0})
    extra: dict[str, Any] = field(default_factory=dict)  # fields added by later stages

    KNOWN = ("valence", "arousal", "confidence", "music", "speech", "face", "loudness")

    @classmethod
    def from_tick(cls, tick: Tick, dropped_video: int) -> OverlayEvent:
        ev = cls(t=tick.t_end, models=dict(tick.models), dropped={"video_frames": dropped_video})
        for key, value in tick.fields.items():
            if key in cls.KNOWN:
                setattr(ev, key, value)
            else:
                ev.extra[key] = value
        return ev

    def to_dict(self) -> dict[str, Any]:
        d = {
            "type": "overlay",
            "t": self.t,
            "valence": self.valence,
            "arousal": self.arousal,
            "confidence": self.confidence,
            "music": self.music,
            "speech": self.speech,
            "face": self.face,
            "loudness": self.loudness,
            "latency_ms": self.latency_ms,
            "models": self.models,
            "dropped": self.dropped,
        }
        d.update(self.extra)
        return d


@dataclass
class FeedResult:
    """What one chunk made final: its events, and the audio stems of their ticks."""

    events: list[OverlayEvent]
    stems: dict[str, np.ndarray]  # e.g. {"ost": float32 (n,) at 16 kHz} for the ticks in `events`
