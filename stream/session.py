"""The analyzer's session: one per client stream, media chunks in, overlay events out.

Media time is cut into 100 ms ticks (:mod:`vibescope.stream.timebase`). Audio closes ticks: once
a tick's samples are in, the tick (with the last video frame that falls in it) goes down the
session's stage chain (:mod:`vibescope.stream.pipelines`). A video-only stream closes ticks from
the video timestamps instead. Every event carries media time, never wall time, so the same media
gives the same events wherever it is analysed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vibescope.stream import state as st
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
from vibescope.stream.pipelines import PIPELINES, build
from vibescope.stream.stage import Stage, Tick
from vibescope.stream.timebase import SAMPLE_RATE, TICK_SAMPLES, TICK_SECONDS

STATE_VERSION = 2
# the raw PCM rates a session takes: real rates only, so resampler tables stay small
AUDIO_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
AUDIO_ENCODINGS = ("pcm16", "f32")
CONTAINER_TYPES = ("video/webm", "audio/webm", "video/mp4", "audio/mp4", "video/x-matroska")
STEMS = ("ost", "music")
GAP_TOLERANCE_S = 0.25  # audio stamped this much later than the samples so far say: a gap


class TimestampError(MediaError):
    """A chunk stamped too far ahead of the session's media clock."""

    code = "bad_timestamp"


def _config_fields(f: dict[str, Any]) -> dict[str, Any]:
    if isinstance(f.get("stems"), list):
        f["stems"] = tuple(f["stems"])
    return f


@st.register(convert=_config_fields)
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
    # the ticks a stage holds, so it is not saved with the session's state
    stems: tuple[str, ...] = STEMS
    max_lead_s: float = 5.0  # a chunk may be stamped at most this far ahead of the media clock

    @property
    def has_audio(self) -> bool:
        return self.container is not None or self.audio_encoding is not None

    def validate(self) -> SessionConfig:
        """Itself, or ``ValueError`` (a :class:`~vibescope.stream.state.StateError`) naming the
        first field out of range: configs come from clients and from stored state."""

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise st.StateError(f"session config: {what}")

        need(self.audio_encoding in (None, *AUDIO_ENCODINGS), f"audio_encoding must be one of {AUDIO_ENCODINGS}")
        need(self.audio_rate in AUDIO_RATES, f"audio_rate must be one of {AUDIO_RATES}")
        need(type(self.audio_channels) is int and 1 <= self.audio_channels <= 8, "audio_channels must be 1..8")
        need(type(self.video) is bool, "video must be true or false")
        need(
            self.container is None
            or (
                type(self.container) is str and len(self.container) <= 200 and _mime(self.container) in CONTAINER_TYPES
            ),
            f"container must be one of {CONTAINER_TYPES}",
        )
        for name in ("max_video_width", "max_video_height"):
            value = getattr(self, name)
            need(type(value) is int and 16 <= value <= 8192, f"{name} must be 16..8192")
        for name, high in (("max_audio_seconds_per_chunk", 10.0), ("max_lead_s", 60.0)):
            value = getattr(self, name)
            need(type(value) in (int, float) and 0 < value <= high, f"{name} must be in (0, {high}]")
        need(self.stages in PIPELINES, f"stages must be one of {tuple(PIPELINES)}")
        need(type(self.stems) is tuple and set(self.stems) <= set(STEMS), f"stems must be drawn from {STEMS}")
        return self


def _mime(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


class Session:
    """Analysis state of one media stream.

    ``feed(chunk)`` decodes the chunk, advances the pipeline and returns the events (and audio
    stems) that became final; ``flush()`` ends the stream. ``to_bytes()`` / ``from_bytes()``
    carry everything needed to continue in another process, as data only
    (:mod:`vibescope.stream.state`).

    The media clock starts at the first chunk's timestamp (a session may begin mid-stream, e.g.
    a client that starts over after its server lost the session) and then follows the audio's
    sample count. A chunk stamped more than ``config.max_lead_s`` ahead of the clock is refused
    (:class:`TimestampError`); audio stamped later than its samples say by more than
    ``GAP_TOLERANCE_S`` is a gap: the ticks in between carry no audio, and the first of them says
    ``gap: {from_t, to_t}``. A longer gap a resuming client declares goes through :meth:`skip_to`
    (the first tick after it says so).
    """

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = (config or SessionConfig()).validate()
        self.stages: list[Stage] = self._build_stages()
        self.resampler = Resampler(self.config.audio_rate) if self.config.audio_encoding else None
        self.container = ContainerDecoder() if self.config.container else None
        self._audio = np.zeros(0, dtype=np.float32)  # 16 kHz samples not yet in a tick
        self._next_tick = 0
        self._started = False  # has the media clock been set by a first chunk?
        self._audio_next_t: float | None = None  # where the next raw audio chunk should be stamped, s
        self._gap: tuple[float, float] | None = None  # to mark on the next tick
        self._frames: dict[int, tuple[float, bytes | None, np.ndarray | Picture]] = {}  # tick -> latest frame
        self.video_seen = False
        self.dropped_video_frames = 0
        self.chunks = 0
        self.audio_seconds = 0.0
        self.video_frames = 0
        self.flushed = False

    def _build_stages(self) -> list[Stage]:
        stages = build(self.config.stages)
        for stage in stages:
            if hasattr(stage, "stems"):  # the stages that make audio stems make only those asked for
                stage.stems = tuple(self.config.stems)
        return stages

    @property
    def clock(self) -> float:
        """Media time of the next sample to be cut into a tick, seconds."""
        return (self._next_tick * TICK_SAMPLES + len(self._audio)) / SAMPLE_RATE

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
        if chunk.kind == "audio":
            if self.resampler is None:
                raise MediaError("this session announced no raw audio")
            x = pcm_to_float(chunk.payload, self.config.audio_encoding, self.config.audio_channels)
            if len(x) > self.config.max_audio_seconds_per_chunk * self.config.audio_rate:
                raise MediaError(f"audio frame longer than {self.config.max_audio_seconds_per_chunk} s")
            self._check_lead(chunk.t)
            ticks = self._start(chunk.t)
            expected = chunk.t if self._audio_next_t is None else self._audio_next_t
            if chunk.t > expected + GAP_TOLERANCE_S:
                ticks += self._gap_until(chunk.t)
            self._audio_next_t = max(expected, chunk.t) + len(x) / self.config.audio_rate
            ticks += self._add_audio(self.resampler.feed(x))
        elif chunk.kind == "video":
            if not self.config.video:
                raise MediaError("this session announced no video")
            self._check_lead(chunk.t)
            picture = decode_picture(chunk.payload, self.config.max_video_width, self.config.max_video_height)
            ticks = self._start(chunk.t) + self._add_frame(chunk.t, chunk.payload, picture)
        elif chunk.kind == "container":
            if self.container is None:
                raise MediaError("this session announced no container stream")
            ticks = self._add_container(self.container.feed(chunk.payload))
        else:
            raise MediaError(f"unknown chunk kind {chunk.kind!r}")
        self.chunks += 1
        return ticks

    def _check_lead(self, t: float) -> None:
        if not math.isfinite(t):
            raise TimestampError("timestamp is not a finite number")
        if self._started and t > self.clock + self.config.max_lead_s:
            raise TimestampError(
                f"chunk stamped {t:.2f} s is more than {self.config.max_lead_s:g} s ahead of the "
                f"session's media clock ({self.clock:.2f} s)"
            )

    def _start(self, t: float) -> list[Tick]:
        """The first chunk sets the media clock: the session begins at the tick ``t`` falls in."""
        if not self._started:
            self._started = True
            self._next_tick = max(0, math.floor(t / TICK_SECONDS + 1e-9))
        return []

    def _gap_until(self, t: float) -> list[Tick]:
        """No media from the clock up to ``t``: close the partial tick, then ticks without audio."""
        start = self.clock
        ticks = []
        if len(self._audio):
            ticks += self._add_audio(np.zeros(TICK_SAMPLES - len(self._audio), dtype=np.float32))
        self._gap = (round(start, 3), round(t, 3))
        target = math.floor(t / TICK_SECONDS + 1e-9)
        ticks += self._close_ticks_until(target)
        return ticks

    def skip_to(self, t: float) -> FeedResult:
        """A resuming client declares that it has no media before ``t`` (it was lost while it was
        away): what the stages hold comes out, and the session goes on at ``t`` with fresh stages
        (nothing they hold would still be context after a long gap). Returns the events that came
        out. Does nothing when ``t`` is not ahead of the clock."""
        started = time.perf_counter()
        if not self._started or t <= self.clock + GAP_TOLERANCE_S:
            return self.collect([], started)
        ticks = []
        if len(self._audio):
            ticks += self._add_audio(np.zeros(TICK_SAMPLES - len(self._audio), dtype=np.float32))
        ticks += self._close_ticks_until(max(self._frames, default=-1) + 1)
        out = self._run(ticks, started, flush=True)
        gap = (round(self.clock, 3), round(t, 3))
        self.stages = self._build_stages()
        if self.resampler is not None:
            self.resampler = Resampler(self.resampler.rate_in)
        self._frames.clear()
        self._next_tick = math.floor(t / TICK_SECONDS + 1e-9)
        self._audio_next_t = t if self._audio_next_t is not None else None
        self._gap = gap
        return out

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
        index = max(math.floor(t / TICK_SECONDS + 1e-9), self._next_tick)  # late frames join the open tick
        self._frames[index] = (t, payload, image)
        if not self.config.has_audio:
            return self._close_ticks_until(index)
        return []

    def _add_container(self, media: Any) -> list[Tick]:
        ticks: list[Tick] = []
        if not self._started and (media.video or media.audio):
            self._started = True  # container media carries its own time, from 0
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
        if self._gap is not None:
            tick.fields["gap"] = {"from_t": self._gap[0], "to_t": self._gap[1]}
            self._gap = None
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
        frames = [
            [i, t, payload, None if payload is not None else rgb] for i, (t, payload, rgb) in self._frames.items()
        ]
        return {
            "version": STATE_VERSION,
            "config": self.config,
            "resampler": None if self.resampler is None else self.resampler.state_dict(),
            "container": None if self.container is None else self.container.state_dict(),
            "audio": self._audio.copy(),
            "next_tick": self._next_tick,
            "started": self._started,
            "audio_next_t": self._audio_next_t,
            "gap": self._gap,
            "frames": frames,
            "video_seen": self.video_seen,
            "counters": (self.dropped_video_frames, self.chunks, self.audio_seconds, self.video_frames),
            "flushed": self.flushed,
            "stages": [(stage.name, stage.state_dict()) for stage in self.stages],
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        """Continue from ``state_dict()``; :class:`~vibescope.stream.state.StateError` (a
        ``ValueError``) when it is not a state this code wrote for this configuration."""
        s = st.keys(s, set(self.state_dict()), "session state")
        if s["version"] != STATE_VERSION:
            raise st.StateError(f"session state version {s['version']!r} is not {STATE_VERSION}")
        if s["config"] != self.config:
            raise st.StateError("session state of another configuration (use Session.from_bytes)")
        if s["resampler"] is not None:
            rate = st.integer(
                st.keys(s["resampler"], set(Resampler(SAMPLE_RATE).state_dict()), "resampler")["rate_in"],
                "resampler rate",
                1,
                192000,
            )
            if rate not in AUDIO_RATES:
                raise st.StateError(f"resampler rate {rate} is not one of {AUDIO_RATES}")
            self.resampler = Resampler(rate)
            self.resampler.load_state_dict(s["resampler"])
        elif self.config.audio_encoding:
            raise st.StateError("session state has no resampler for its raw audio")
        if self.container is not None:
            self.container.load_state_dict(s["container"])
        self._audio = st.array(s["audio"], np.float32, (None,), "pending audio")
        if len(self._audio) >= TICK_SAMPLES:
            raise st.StateError("pending audio is longer than a tick")
        self._next_tick = st.integer(s["next_tick"], "next tick", 0)
        self._started = st.instance(s["started"], bool, "started")
        self._audio_next_t = st.number(s["audio_next_t"], "audio clock", optional=True)
        gap = None if s["gap"] is None else st.seq(s["gap"], 2, "gap")
        self._gap = None if gap is None else (st.number(gap[0], "gap"), st.number(gap[1], "gap"))
        self._frames = {}
        for frame in st.seq(s["frames"], None, "frames"):
            i, t, payload, image = st.seq(frame, 4, "frame")
            st.number(t, "frame time")
            if payload is not None:
                image = decode_picture(
                    st.instance(payload, bytes, "frame bytes"),
                    self.config.max_video_width,
                    self.config.max_video_height,
                )
            else:
                image = st.array(image, np.uint8, (None, None, 3), "frame pixels")
            self._frames[st.integer(i, "frame tick", 0)] = (t, payload, image)
        self.video_seen = st.instance(s["video_seen"], bool, "video_seen")
        counters = st.seq(s["counters"], 4, "counters")
        self.dropped_video_frames = st.integer(counters[0], "dropped", 0)
        self.chunks = st.integer(counters[1], "chunks", 0)
        self.audio_seconds = st.number(counters[2], "audio seconds")
        self.video_frames = st.integer(counters[3], "video frames", 0)
        self.flushed = st.instance(s["flushed"], bool, "flushed")
        saved = [st.seq(pair, 2, "stage") for pair in st.seq(s["stages"], None, "stages")]
        names = [name for name, _ in saved]
        if names != [stage.name for stage in self.stages]:
            raise st.StateError(f"saved stages {names} differ from this pipeline's")
        for stage, (_, stage_state) in zip(self.stages, saved, strict=True):
            stage.load_state_dict(stage_state)

    def to_bytes(self) -> bytes:
        return st.dumps(self.state_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        """A session continued from :meth:`to_bytes`; ``StateError`` for anything else (the store
        is outside the process: what comes back is input, read as data only)."""
        tree = st.loads(data)
        if not isinstance(tree, dict) or "config" not in tree:
            raise st.StateError("session state has no config")
        session = cls(st.instance(tree["config"], SessionConfig, "session config").validate())
        session.load_state_dict(tree)
        return session


def warm_up(pipeline: str = "default") -> None:
    """Load every model of a pipeline once (ONNX sessions, checkpoints) so the first real session
    does not pay for it: 0.2 s of silence and one grey frame through a throwaway session."""
    session = Session(SessionConfig(stages=pipeline))
    session.feed(Chunk("video", encode_jpeg(np.full((64, 64, 3), 128, np.uint8)), 0.0))
    session.feed(Chunk("audio", np.zeros(2 * TICK_SAMPLES, dtype="<i2").tobytes(), 0.0))
    session.flush()
