"""``TagfStage``: the last pipeline stage; valence, arousal and confidence for every tick.

Reads what the stages before it filled: ``tick.fields["expression"]`` (ExpressionStage),
``["speech"]`` and ``["loudness"]`` (SignalStage), ``["music"]`` (SeparatorStage; missing or None
until it exists), plus ``tick.audio``. Builds the per-frame feature vectors
(``vibescope.stream.tagf.features``) and runs a :class:`TagfStreamer`; a tick is held until its output is
final (``lag_ticks`` = hop + lookahead − 1 = 4 ticks = 400 ms by default).

Fields written (documented in docs/models.md by the lead):
  ``valence``, ``arousal``  in [−1, 1], or None when the session has neither audio nor video;
  ``confidence``            in [0, 1]: evidence coverage × the model's status cap (see below);
  ``va_status``             what the model learned from: ``"simulated-teacher"`` for the shipped
                            weights (NOT validated on human ratings; models/tagf.md), or the
                            checkpoint's own status, e.g. ``"affwild2"``;
  ``models["valence"]``, ``models["arousal"]``: the checkpoint's model id.

Confidence: c = cap × (0.15 + 0.55·face + 0.30·speech), where face and speech are the fractions of
frames with a face / with speech probability > 0.5 among the 8 frames before and the lookahead
frames after the tick. cap = 0.6 for ``simulated-teacher`` weights (a prior, not a measurement),
1.0 for weights trained on human ratings. It falls when faces or speech are missing.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from vibescope.stream import state as st
from vibescope.stream.cards import card
from vibescope.stream.stage import Tick, apply_each, check_tick, single
from vibescope.stream.tagf.features import AudioFrontEnd, visual_vector
from vibescope.stream.tagf.model import TagfModel, load_shared
from vibescope.stream.tagf.streamer import TagfStreamer

STATUS_CAPS = {"simulated-teacher": 0.6}
PRESENCE_BEFORE = 8


class TagfStage:
    """Pipeline stage for valence/arousal; see the module docstring."""

    name = "tagf"

    def __init__(self, model: TagfModel | None = None) -> None:
        self.model = model if model is not None else load_shared()
        meta = self.model.meta
        self.model_id = str(meta.get("model_id", self.model.model_id))
        self.status = str(meta.get("status", "simulated-teacher"))
        self.cap = STATUS_CAPS.get(self.status, 1.0)
        self.streamer = TagfStreamer(self.model)
        self.audio_frontend = AudioFrontEnd()
        self.lag_ticks = self.streamer.lag_frames
        self.pending: deque[tuple[int, Tick]] = deque()  # (frame index, tick) awaiting output
        # per received frame: (face present, speech present, any media); the last W frames
        self.presence: deque[tuple[int, int, int]] = deque(maxlen=self.model.config.window)
        self.frames_in = 0

    def model_info(self) -> dict[str, dict[str, Any]]:
        info = card("tagf").info(self.model_id)
        # what the loaded weights learned from decides, not the shipped card
        info.update(validated=self.status not in STATUS_CAPS, status=self.status)
        return {"valence": info, "arousal": dict(info)}

    def _features(self, tick: Tick, aud: np.ndarray) -> np.ndarray:
        """The tick's visual vector; both vectors' presence flags go into ``presence``."""
        vis = visual_vector(tick.fields.get("expression"))
        speech_p = float(aud[1])
        self.presence.append((int(vis[0] > 0), int(speech_p > 0.5), int(tick.audio is not None or tick.video_seen)))
        self.frames_in += 1
        return vis

    def _finish(self, outputs: np.ndarray) -> list[Tick]:
        done = []
        la = self.model.config.lookahead
        for y in outputs:
            index, tick = self.pending.popleft()
            flags = list(self.presence)  # the last len(flags) received frames
            pos = len(flags) - (self.frames_in - index)
            lo, hi = max(0, pos - PRESENCE_BEFORE), min(len(flags), pos + la + 1)
            near = np.asarray(flags[lo:hi], np.float32).reshape(-1, 3)
            face, speech, media = near.mean(axis=0) if near.size else (0.0, 0.0, 0.0)
            if media == 0:
                tick.fields.update(valence=None, arousal=None, confidence=None)
            else:
                conf = self.cap * (0.15 + 0.55 * float(face) + 0.30 * float(speech))
                tick.fields.update(
                    valence=round(float(y[0]), 4), arousal=round(float(y[1]), 4), confidence=round(conf, 3)
                )
                tick.models["valence"] = self.model_id
                tick.models["arousal"] = self.model_id
            tick.fields["va_status"] = self.status
            done.append(tick)
        return done

    def push(self, tick: Tick) -> list[Tick]:
        return single(TagfStage.push_batch([self], [tick]))

    @staticmethod
    def push_batch(stages: list[TagfStage], ticks: list[Tick]) -> list[list[Tick] | Exception]:
        """One tick per session; the audio front-ends and the streamers of all sessions run as
        one batch each."""
        try:
            auds = AudioFrontEnd.tick_vectors(
                [s.audio_frontend for s in stages], [t.audio for t in ticks], [t.fields for t in ticks]
            )
        except Exception as exc:
            return [exc] * len(stages)
        feats = apply_each(TagfStage._take, stages, ticks, auds)
        ok = [i for i, f in enumerate(feats) if not isinstance(f, Exception)]
        try:
            ys = TagfStreamer.feed_many(
                [stages[i].streamer for i in ok], [feats[i][0][None] for i in ok], [feats[i][1][None] for i in ok]
            )
        except Exception as exc:
            return [exc] * len(stages)
        for i, y in zip(ok, ys, strict=False):
            feats[i] = y
        return apply_each(TagfStage._after, stages, feats)

    def _take(self, tick: Tick, aud: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vis = self._features(tick, aud)
        tick.frame = None  # never keep frames in held ticks (ExpressionStage drops them too)
        tick.audio = None  # nor the samples: the features hold what is needed (smaller saved state)
        self.pending.append((self.frames_in - 1, tick))
        return vis, aud

    def _after(self, outputs: np.ndarray | Exception) -> list[Tick]:
        if isinstance(outputs, Exception):
            raise outputs
        return self._finish(outputs)

    def flush(self) -> list[Tick]:
        return self._finish(self.streamer.flush())

    def state_dict(self) -> dict[str, Any]:
        return {
            "streamer": self.streamer.state_dict(),
            "audio_frontend": self.audio_frontend.state_dict(),
            "pending": list(self.pending),
            "presence": list(self.presence),
            "frames_in": self.frames_in,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        s = st.keys(s, {"streamer", "audio_frontend", "pending", "presence", "frames_in"}, "TAGF stage")
        self.streamer.load_state_dict(s["streamer"])
        self.audio_frontend.load_state_dict(s["audio_frontend"])
        pending = st.instance(s["pending"], list, "TAGF pending ticks")
        if len(pending) > self.model.config.window:
            raise st.StateError("TAGF stage holds more ticks than its window")
        self.pending = deque()
        for pair in pending:
            frame, tick = st.seq(pair, 2, "TAGF pending tick")
            self.pending.append((st.integer(frame, "TAGF frame", 0), check_tick(tick)))
        presence = st.instance(s["presence"], list, "TAGF presence")
        if len(presence) > self.model.config.window:
            raise st.StateError("TAGF presence longer than its window")
        flags = []
        for p in presence:
            flags.append(tuple(st.integer(v, "TAGF presence flag", 0, 1) for v in st.seq(p, 3, "TAGF presence")))
        self.presence = deque(flags, maxlen=self.model.config.window)
        self.frames_in = st.integer(s["frames_in"], "TAGF frames", 0)
