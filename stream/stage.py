"""Ticks and the stage protocol: the per-tick pipeline a :class:`~vibescope.stream.session.Session` drives.

Media time is cut into ticks (:mod:`vibescope.stream.timebase`). Each tick flows through a chain
of stages, in order; a stage may hold ticks back (its algorithmic lag) and returns the ticks that
became final for it. A tick that leaves the last stage becomes one overlay event. Stages fill
``Tick.fields`` with the event fields they own and ``Tick.models`` with the id of the component
that produced each field.

Every stage's state (held ticks included) goes into ``state_dict()``, which must be small: a stage
drops heavy inputs (``Tick.frame``) once it has used them.

A stage class may also have a static ``push_batch(stages, ticks)``: one tick into each of several
instances (one per session) at once, returning per instance what ``push`` would (or the exception
it raised, see :func:`apply_each`). :func:`vibescope.stream.lockstep.feed_many` uses it to run the
stage's models once for all the sessions a server process analyses in the same round; ``push`` is
then ``single(Cls.push_batch([self], [tick]))``, so one code path serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vibescope.stream import state
from vibescope.stream.timebase import TICK_SECONDS


def _face_fields(f: dict[str, Any]) -> dict[str, Any]:
    """A loaded FaceObservation's lists back into the tuples it holds (sizes checked by check_face)."""
    for name in ("box", "frame_size"):
        if isinstance(f.get(name), list):
            f[name] = tuple(f[name])
    if isinstance(f.get("landmarks"), list):
        f["landmarks"] = [tuple(p) if isinstance(p, list) else p for p in f["landmarks"]]
    return f


@state.register(convert=_face_fields)
@dataclass
class FaceObservation:
    """Largest face of one video frame, in the frame's pixel coordinates."""

    score: float
    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: list[tuple[float, float]]  # 5 points: eyes, nose, mouth corners
    frame_size: tuple[int, int]  # width, height


@state.register
@dataclass
class Tick:
    """One 100 ms slice of media time, ``[t_start, t_end)`` in seconds."""

    index: int
    audio: np.ndarray | None  # float32 (TICK_SAMPLES,) at 16 kHz mono, or None for video-only media
    # last video frame decoded in this tick: RGB uint8 (H, W, 3), or a vibescope.stream.media.Picture that
    # makes those pixels on first use (read them with vibescope.stream.media.sample_rgb or luma)
    frame: Any = None
    frame_t: float | None = None  # its media time, seconds
    face: FaceObservation | None = None  # None: no face in `frame` (or no frame)
    video_seen: bool = False  # True once any video frame reached the session
    fields: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    # audio stems a stage produced for this tick, e.g. {"ost": float32 (TICK_SAMPLES,)};
    # returned by Session.feed beside the events (never put into the event JSON)
    stems: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def t_start(self) -> float:
        return round(self.index * TICK_SECONDS, 6)

    @property
    def t_end(self) -> float:
        return round((self.index + 1) * TICK_SECONDS, 6)


def check_face(face: Any, what: str = "face") -> FaceObservation | None:
    """A loaded ``FaceObservation`` (or None) with the types and sizes one has; ``StateError`` else."""
    if face is None:
        return None
    state.instance(face, FaceObservation, what)
    state.number(face.score, f"{what} score")
    if not (isinstance(face.box, tuple) and len(face.box) == 4):
        raise state.StateError(f"{what}: box is not 4 numbers")
    for v in face.box:
        state.number(v, f"{what} box")
    if not (isinstance(face.landmarks, list) and len(face.landmarks) <= 16):
        raise state.StateError(f"{what}: landmarks are not a short list")
    for point in face.landmarks:
        if not (isinstance(point, tuple) and len(point) == 2):
            raise state.StateError(f"{what}: a landmark is not a point")
        state.number(point[0], f"{what} landmark")
        state.number(point[1], f"{what} landmark")
    if not (isinstance(face.frame_size, tuple) and len(face.frame_size) == 2):
        raise state.StateError(f"{what}: frame size is not (width, height)")
    for v in face.frame_size:
        state.integer(v, f"{what} frame size", 1, 1 << 16)
    return face


def check_tick(tick: Any, what: str = "held tick") -> Tick:
    """A loaded ``Tick`` a stage held: right types, no frame, audio and stems at most a tick long."""
    from vibescope.stream.timebase import TICK_SAMPLES

    state.instance(tick, Tick, what)
    state.integer(tick.index, f"{what} index", 0)
    if tick.audio is not None:
        tick.audio = state.array(tick.audio, np.float32, (None,), f"{what} audio")
        if len(tick.audio) > TICK_SAMPLES:
            raise state.StateError(f"{what}: audio longer than a tick")
    if tick.frame is not None:
        raise state.StateError(f"{what}: held ticks keep no frame")
    state.number(tick.frame_t, f"{what} frame time", optional=True)
    check_face(tick.face, f"{what} face")
    state.instance(tick.video_seen, bool, f"{what} video_seen")
    state.instance(tick.fields, dict, f"{what} fields")
    models = state.instance(tick.models, dict, f"{what} models")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in models.items()):
        raise state.StateError(f"{what}: models are not names")
    for name, x in state.instance(tick.stems, dict, f"{what} stems").items():
        tick.stems[name] = state.array(x, np.float32, (None,), f"{what} stem")
        if not isinstance(name, str) or len(x) > TICK_SAMPLES:
            raise state.StateError(f"{what}: stem longer than a tick")
    return tick


class Stage(Protocol):
    """One component of the pipeline; see the module docstring."""

    name: str
    lag_ticks: int  # how many ticks a tick may be held back, at most

    def push(self, tick: Tick) -> list[Tick]: ...

    def flush(self) -> list[Tick]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def apply_each(fn: Callable[..., list[Tick]], *columns: Sequence[Any]) -> list[list[Tick] | Exception]:
    """``fn(*row)`` for every row of the columns, for a stage's ``push_batch``: an exception is
    kept in its row's slot, so one session's failure never touches the others'."""
    out: list[list[Tick] | Exception] = []
    for row in zip(*columns, strict=False):
        try:
            out.append(fn(*row))
        except Exception as exc:
            out.append(exc)
    return out


def single(results: list[list[Tick] | Exception]) -> list[Tick]:
    """The one result of a one-stage ``push_batch`` (what ``push`` returns), raising its exception."""
    out = results[0]
    if isinstance(out, Exception):
        raise out
    return out
