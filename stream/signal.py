"""``SignalStage``: the first pipeline stage, the signal measures every session gets.

Speech probability (silero-vad), loudness (RMS of the tick) and face presence (RetinaFace) per
tick; the later stages read what it writes (``tick.fields``, ``tick.face``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vibescope.stream import state
from vibescope.stream.audio import LOUDNESS_ID, SpeechDetector, rms_dbfs
from vibescope.stream.cards import card
from vibescope.stream.face import FaceDetector
from vibescope.stream.media import Picture
from vibescope.stream.stage import FaceObservation, Tick, apply_each, check_face, single


class SignalStage:
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

    name = "signal"
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
        if SignalStage._detector is None:
            SignalStage._detector = FaceDetector()

    @staticmethod
    def model_info() -> dict[str, dict[str, Any]]:
        return {
            "speech": card("silero-vad").info(SpeechDetector.model_id),
            "face": card("retinaface").info(FaceDetector.model_id),
            "loudness": card("loudness").info(LOUDNESS_ID),
        }

    def push(self, tick: Tick) -> list[Tick]:
        return single(SignalStage.push_batch([self], [tick]))

    @staticmethod
    def push_batch(stages: Sequence[SignalStage], ticks: Sequence[Tick]) -> list[list[Tick] | Exception]:
        """One tick per session; silero-vad runs once per 32 ms window for all of them."""
        with_audio = [i for i, tick in enumerate(ticks) if tick.audio is not None]
        try:
            found = SpeechDetector.feed_many([stages[i].vad for i in with_audio], [ticks[i].audio for i in with_audio])
        except Exception as exc:
            return [exc] * len(stages)
        probs: list[list[float] | None] = [None] * len(stages)
        for i, p in zip(with_audio, found, strict=False):
            probs[i] = p
        return apply_each(SignalStage._finish_tick, stages, ticks, probs)

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
            tick.fields["face"] = {
                "present": tick.face is not None,
                "score": None if tick.face is None else round(tick.face.score, 3),
            }
            if tick.face is not None:  # where it is, as fractions of the frame (viewers keep clear of it)
                fw, fh = tick.face.frame_size
                x, y, w, h = tick.face.box
                tick.fields["face"]["box"] = [round(v, 3) for v in (x / fw, y / fh, w / fw, h / fh)]
            tick.models["face"] = FaceDetector.model_id
        elif tick.video_seen:
            tick.fields["face"] = {"present": None, "score": None}  # no frame in this tick
        return [tick]

    def _track_face(self, frame: np.ndarray | Picture, t: float) -> FaceObservation | None:
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

    def load_state_dict(self, s: dict[str, Any]) -> None:
        s = state.keys(s, {"vad", "face_t", "face", "full_t"}, "signal stage")
        self.vad.load_state_dict(s["vad"])
        self._face_t = state.number(s["face_t"], "face detection time", optional=True)
        self._face = check_face(s["face"])
        self._full_t = state.number(s["full_t"], "whole-frame detection time", optional=True)
