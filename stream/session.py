"""The analyzer's session: one per client stream, media chunks in, overlay events out.

Media time is cut into 100 ms ticks (:mod:`vibescope.stream.timebase`). Audio closes ticks: once
a tick's samples are in, the tick (with the last video frame that falls in it) goes down the
session's stage chain (:mod:`vibescope.stream.pipelines`). A video-only stream closes ticks from
the video timestamps instead. Every event carries media time, never wall time, so the same media
gives the same events wherever it is analysed.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vibescope.stream.events import FeedResult, OverlayEvent
from vibescope.stream.lockstep import feed_many
from vibescope.stream.media import (
    Chunk,
    ContainerDecoder,
    MediaError,
    Picture,
    Resampler,
    decode_picture,
    encode_jpeg,
    pcm_to_float,
)
from vibescope.stream.pipelines import build
from vibescope.stream.stage import Stage, Tick
from vibescope.stream.timebase import SAMPLE_RATE, TICK_SAMPLES, TICK_SECONDS

STATE_VERSION = 1


@dataclass(frozen=True)
class SessionConfig:
    """What a stream carries; fixed for the session's life (it is part of the saved state)."""

    audio_encoding: str | None = "pcm16"  # "pcm16" | "f32" | None (no separate audio)
    audio_rate: int = SAMPLE_RATE
    audio_channels: int = 1
    video: bool = True
    container: str | None = None  # MIME type when media arrives as container chunks
    max_video_width: int = 1920
    max_video_height: int = 1080
    max_audio_seconds_per_chunk: float = 1.0
    stages: str = "default"  # name of a pipeline (vibescope.stream.pipelines.PIPELINES)
    # audio stems the session returns (FeedResult.stems); a stem nobody asked for is not kept in
    # the ticks a stage holds, so it is neither pickled nor stored with the session's state
    stems: tuple[str, ...] = ("ost", "music")

    @property
    def has_audio(self) -> bool:
        return self.container is not None or self.audio_encoding is not None


class Session:
    """Analysis state of one media stream.

    ``feed(chunk)`` decodes the chunk, advances the pipeline and returns the events (and audio
    stems) that became final; ``flush()`` ends the stream. ``state_dict()`` / ``to_bytes()``
    capture everything needed to continue in another process.
    """

    MAX_VIDEO_LEAD_TICKS = 100  # video may run at most 10 s ahead of audio

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        self.stages: list[Stage] = build(self.config.stages)
        for stage in self.stages:
            if hasattr(stage, "stems"):  # the stages that make audio stems make only those asked for
                stage.stems = tuple(self.config.stems)
        self.resampler = Resampler(self.config.audio_rate) if self.config.audio_encoding else None
        self.container = ContainerDecoder() if self.config.container else None
        self._audio = np.zeros(0, dtype=np.float32)  # 16 kHz samples not yet in a tick
        self._next_tick = 0
        self._frames: dict[int, tuple[float, bytes | None, np.ndarray | Picture]] = {}  # tick -> latest frame
        self.video_seen = False
        self.dropped_video_frames = 0
        self.chunks = 0
        self.audio_seconds = 0.0
        self.video_frames = 0
        self.flushed = False

    # --- feeding ---------------------------------------------------------------------------

    def feed(self, chunk: Chunk) -> FeedResult:
        """Raises :class:`MediaError` for undecodable or out-of-limits media (state untouched)."""
        out = feed_many([(self, [chunk])])[0][0]
        if isinstance(out, BaseException):
            raise out
        return out

    def cut(self, chunk: Chunk) -> list[Tick]:
        """Decode a chunk and cut the ticks it completes; the stages have not seen them yet
        (:func:`~vibescope.stream.lockstep.feed_many` pushes them through). Raises
        :class:`MediaError` for undecodable or out-of-limits media, leaving the state as it was."""
        if self.flushed:
            raise MediaError("session already flushed")
        ticks: list[Tick] = []
        if chunk.kind == "audio":
            if self.resampler is None:
                raise MediaError("this session announced no raw audio")
            x = pcm_to_float(chunk.payload, self.config.audio_encoding, self.config.audio_channels)
            if len(x) > self.config.max_audio_seconds_per_chunk * self.config.audio_rate:
                raise MediaError(f"audio frame longer than {self.config.max_audio_seconds_per_chunk} s")
            ticks = self._add_audio(self.resampler.feed(x))
        elif chunk.kind == "video":
            if not self.config.video:
                raise MediaError("this session announced no video")
            picture = decode_picture(chunk.payload, self.config.max_video_width, self.config.max_video_height)
            ticks = self._add_frame(chunk.t, chunk.payload, picture)
        elif chunk.kind == "container":
            if self.container is None:
                raise MediaError("this session announced no container stream")
            ticks = self._add_container(self.container.feed(chunk.payload))
        else:
            raise MediaError(f"unknown chunk kind {chunk.kind!r}")
        self.chunks += 1
        return ticks

    def flush(self) -> FeedResult:
        """End of media: pad the last partial tick, drain every stage."""
        started = time.perf_counter()
        ticks: list[Tick] = []
        if self.container is not None:
            ticks += self._add_container(self.container.flush())
        if self.resampler is not None:
            ticks += self._add_audio(self.resampler.flush())
        if len(self._audio):
            ticks += self._add_audio(np.zeros(TICK_SAMPLES - len(self._audio), dtype=np.float32))
        if self._frames:  # video that outlasts the audio (or a video-only stream) ends in silent ticks
            ticks += self._close_ticks_until(max(self._frames) + 1)
        out = self._run(ticks, started, flush=True)
        self.flushed = True
        return out

    def note_dropped_video(self, n: int = 1) -> None:
        """The server skipped ``n`` video frames of this session because analysis fell behind."""
        self.dropped_video_frames += n

    def _add_audio(self, x: np.ndarray) -> list[Tick]:
        self.audio_seconds += len(x) / SAMPLE_RATE
        self._audio = np.concatenate([self._audio, x])
        n = len(self._audio) // TICK_SAMPLES
        ticks = []
        for i in range(n):
            ticks.append(self._make_tick(self._audio[i * TICK_SAMPLES : (i + 1) * TICK_SAMPLES].copy()))
        self._audio = self._audio[n * TICK_SAMPLES :].copy()
        return ticks

    def _add_frame(self, t: float, payload: bytes | None, image: np.ndarray | Picture) -> list[Tick]:
        self.video_seen = True
        self.video_frames += 1
        index = max(int(np.floor(t / TICK_SECONDS + 1e-9)), self._next_tick)  # late frames join the open tick
        if self.config.has_audio and index > self._next_tick + self.MAX_VIDEO_LEAD_TICKS:
            raise MediaError(
                f"video frame at {t:.2f} s is more than "
                f"{self.MAX_VIDEO_LEAD_TICKS * TICK_SECONDS:.0f} s ahead of the audio"
            )
        self._frames[index] = (t, payload, image)
        if not self.config.has_audio:
            return self._close_ticks_until(index)
        return []

    def _add_container(self, media: Any) -> list[Tick]:
        ticks: list[Tick] = []
        for t, rgb in media.video:
            ticks += self._add_frame(t, None, rgb)
        if media.audio:
            if self.resampler is None or self.resampler.rate_in != media.audio_rate:
                self.resampler = Resampler(media.audio_rate)
            for _, x in media.audio:
                ticks += self._add_audio(self.resampler.feed(x))
        return ticks

    def _close_ticks_until(self, index: int) -> list[Tick]:
        return [self._make_tick(None) for _ in range(self._next_tick, index)]

    def _make_tick(self, audio: np.ndarray | None) -> Tick:
        index = self._next_tick
        self._next_tick += 1
        tick = Tick(index=index, audio=audio, video_seen=self.video_seen)
        if index in self._frames:
            t, _, rgb = self._frames.pop(index)
            tick.frame, tick.frame_t = rgb, t
        return tick

    def _run(self, ticks: list[Tick], started: float, flush: bool = False) -> FeedResult:
        for stage in self.stages:
            out: list[Tick] = []
            for tick in ticks:
                out += stage.push(tick)
            if flush:
                out += stage.flush()
            ticks = out
        return self.collect(ticks, started)

    def collect(self, ticks: list[Tick], started: float) -> FeedResult:
        """The events (and stems) of ticks that left the last stage; ``started``: when the feed began
        (``time.perf_counter()``), for ``latency_ms``."""
        latency = round((time.perf_counter() - started) * 1000.0, 2)
        events, stems = [], {}
        for tick in ticks:
            ev = OverlayEvent.from_tick(tick, self.dropped_video_frames)
            ev.latency_ms = latency
            events.append(ev)
            for name, x in tick.stems.items():
                stems.setdefault(name, []).append(x)
        return FeedResult(events, {k: np.concatenate(v) for k, v in stems.items()})

    # --- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        frames = {
            i: (t, payload, None if payload is not None else rgb) for i, (t, payload, rgb) in self._frames.items()
        }
        return {
            "version": STATE_VERSION,
            "config": self.config,
            "resampler": None if self.resampler is None else self.resampler.state_dict(),
            "container": None if self.container is None else self.container.state_dict(),
            "audio": self._audio.copy(),
            "next_tick": self._next_tick,
            "frames": frames,
            "video_seen": self.video_seen,
            "counters": (self.dropped_video_frames, self.chunks, self.audio_seconds, self.video_frames),
            "flushed": self.flushed,
            "stages": [(stage.name, stage.state_dict()) for stage in self.stages],
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        if s.get("version") != STATE_VERSION:
            raise ValueError(f"session state version {s.get('version')} is not {STATE_VERSION}")
        if s["config"] != self.config:
            raise ValueError("session state of another configuration (use Session.from_bytes)")
        if s["resampler"] is not None:
            self.resampler = Resampler(s["resampler"]["rate_in"])
            self.resampler.load_state_dict(s["resampler"])
        if self.container is not None:
            self.container.load_state_dict(s["container"])
        self._audio = s["audio"].copy()
        self._next_tick = s["next_tick"]
        self._frames = {}
        for i, (t, payload, image) in s["frames"].items():
            if payload is not None:
                image = decode_picture(payload, self.config.max_video_width, self.config.max_video_height)
            self._frames[i] = (t, payload, image)
        self.video_seen = s["video_seen"]
        self.dropped_video_frames, self.chunks, self.audio_seconds, self.video_frames = s["counters"]
        self.flushed = s["flushed"]
        names = [n for n, _ in s["stages"]]
        if names != [stage.name for stage in self.stages]:
            raise ValueError(f"saved stages {names} differ from this pipeline's")
        for stage, (_, st) in zip(self.stages, s["stages"], strict=False):
            stage.load_state_dict(st)

    def to_bytes(self) -> bytes:
        return pickle.dumps(self.state_dict(), protocol=5)

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        # pickle: the state store is trusted infrastructure (docs/operations.md)
        state = pickle.loads(data)
        session = cls(state["config"])
        session.load_state_dict(state)
        return session


def warm_up(pipeline: str = "default") -> None:
    """Load every model of a pipeline once (ONNX sessions, checkpoints) so the first real session
    does not pay for it: 0.2 s of silence and one grey frame through a throwaway session."""
    session = Session(SessionConfig(stages=pipeline))
    session.feed(Chunk("video", encode_jpeg(np.full((64, 64, 3), 128, np.uint8)), 0.0))
    session.feed(Chunk("audio", np.zeros(2 * TICK_SAMPLES, dtype="<i2").tobytes(), 0.0))
    session.flush()
