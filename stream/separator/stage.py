"""The separator as a pipeline stage (see stream/stage.py).

Per 100 ms tick it fills ``tick.fields["music"] = {"probability", "level_db", "ost_to_music_db"}``,
``tick.models["music"]`` and ``tick.stems["ost"|"music"]`` (float32 ``(1600,)``, aligned with the
tick's media time; only the stems named in ``stems``, which the session sets from its config).
The streamer's lag (32 ms, or 64 ms with two frames of look-ahead) is under one tick, so a tick is
released when the next one arrives (``lag_ticks = 1``), or on ``flush()``.

- ``probability``: P(music present in the tick), the Platt-calibrated mean of the model's
  per-frame music logits over the frames centred in the tick.
- ``level_db``: RMS level of the separated music stem in the tick, dBFS.
- ``ost_to_music_db``: energy ratio of the OST stem to the music stem in the tick, dB.
Ticks without audio (video-only media) pass through with these fields set to None.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vibescope.stream import state as st
from vibescope.stream.cards import card
from vibescope.stream.separator import transforms as T
from vibescope.stream.separator.model import CausalMaskSeparator, load_shared
from vibescope.stream.separator.streamer import SeparatorStreamer
from vibescope.stream.stage import Tick, apply_each, check_tick, single
from vibescope.stream.timebase import TICK_SAMPLES

EPS = 1e-10


class SeparatorStage:
    """BGM/OST separation of every session's audio; per-session state only, shared weights."""

    name = "separator"
    lag_ticks = 1

    def __init__(self, model: CausalMaskSeparator | None = None) -> None:
        self.model = model if model is not None else load_shared()
        self.model_id = self.model.model_id
        self.streamer = SeparatorStreamer(self.model)
        if self.streamer.lag_samples >= TICK_SAMPLES:
            raise ValueError(f"separator lag {self.streamer.lag_ms} ms is not under one tick (lag_ticks = 1)")
        self._held: list[Tick] = []
        self._audio_ticks: list[bool] = []  # per held tick: did it carry audio?
        self._stems = np.zeros((2, 0), np.float32)  # final stems not yet given to a tick
        self._stem_start = 0  # stream sample index of self._stems[:, 0]
        self._logits = np.zeros(0, np.float32)
        self._logit_start = 0  # frame index of self._logits[0]
        self._started = False  # has any audio reached the streamer?
        self._first_index = 0  # tick index of stream sample 0
        self.stems: tuple[str, ...] = ("ost", "music")  # the stems put on ticks

    def model_info(self) -> dict[str, dict[str, Any]]:
        """field -> {id, card, validated}, for the server's ``welcome``."""
        info = card("separator").info(self.model_id)
        info["lag_ms"] = self.streamer.lag_ms  # the loaded weights' own lag
        return {"music": info}

    # -- Stage protocol -------------------------------------------------------------------
    def push(self, tick: Tick) -> list[Tick]:
        return single(SeparatorStage.push_batch([self], [tick]))

    @staticmethod
    def push_batch(stages: list[SeparatorStage], ticks: list[Tick]) -> list[list[Tick] | Exception]:
        """One tick per session; the model runs once for all sessions' new frames."""
        audio = apply_each(SeparatorStage._take_audio, stages, ticks)
        fed = [i for i, a in enumerate(audio) if isinstance(a, np.ndarray)]
        try:
            stems = SeparatorStreamer.feed_many([stages[i].streamer for i in fed], [audio[i] for i in fed])
        except Exception as exc:
            return [exc] * len(stages)
        for i, stem in zip(fed, stems, strict=True):
            audio[i] = stem
        return apply_each(SeparatorStage._after, stages, ticks, audio)

    def _take_audio(self, tick: Tick) -> np.ndarray | list[Tick]:
        """The tick's samples for the streamer, or the finished tick when there is nothing to feed."""
        if tick.audio is None and not self._started:
            return [self._fill_none(tick)]
        if not self._started:
            self._started = True
            self._first_index = tick.index
        audio = np.zeros(TICK_SAMPLES, np.float32)
        if tick.audio is not None:  # a short (last) tick is zero-padded so media time stays aligned
            a = np.asarray(tick.audio, np.float32).reshape(-1)[:TICK_SAMPLES]
            audio[: len(a)] = a
        self._held.append(tick)
        self._audio_ticks.append(tick.audio is not None)
        return audio

    def _after(self, tick: Tick, stems: np.ndarray | list[Tick] | Exception) -> list[Tick]:
        if isinstance(stems, Exception):
            raise stems
        if isinstance(stems, list):
            return stems
        self._take(stems)
        return self._release()

    def flush(self) -> list[Tick]:
        if self._held:
            self._take(self.streamer.flush())
        return self._release(final=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "streamer": self.streamer.state_dict(),
            "held": list(self._held),
            "audio_ticks": list(self._audio_ticks),
            "stems": self._stems.copy(),
            "stem_start": int(self._stem_start),
            "logits": self._logits.copy(),
            "logit_start": int(self._logit_start),
            "started": bool(self._started),
            "first_index": int(self._first_index),
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        s = st.keys(s, set(self.state_dict()), "separator stage")
        self.streamer.load_state_dict(s["streamer"])
        held = st.instance(s["held"], list, "separator held ticks")
        audio_ticks = st.instance(s["audio_ticks"], list, "separator audio flags")
        if len(held) > 4 or len(audio_ticks) != len(held) or not all(isinstance(a, bool) for a in audio_ticks):
            raise st.StateError("separator stage holds more ticks than its lag")
        self._held = [check_tick(t) for t in held]
        self._audio_ticks = audio_ticks
        self._stems = st.array(s["stems"], np.float32, (2, None), "separator stems")
        self._stem_start = st.integer(s["stem_start"], "separator stem start", 0)
        self._logits = st.array(s["logits"], np.float32, (None,), "separator stage logits")
        self._logit_start = st.integer(s["logit_start"], "separator stage logit start", 0)
        self._started = st.instance(s["started"], bool, "separator started")
        self._first_index = st.integer(s["first_index"], "separator first tick", 0)

    # -- internals ------------------------------------------------------------------------
    def _take(self, stems: np.ndarray) -> None:
        self._stems = np.concatenate([self._stems, stems], axis=1)
        start, logits = self.streamer.drain_music_logits()
        if len(self._logits) == 0:
            self._logit_start = start
        self._logits = np.concatenate([self._logits, logits])

    def _release(self, final: bool = False) -> list[Tick]:
        out = []
        while self._held:
            pos = (self._held[0].index - self._first_index) * TICK_SAMPLES  # stream sample of tick start
            end = pos + TICK_SAMPLES
            last_frame = (end - 1) // T.HOP  # last frame centred inside the tick
            have_frames = self._logit_start + len(self._logits) - 1 >= last_frame
            if self._stem_start + self._stems.shape[1] < end or not (have_frames or final):
                break
            tick = self._held.pop(0)
            had_audio = self._audio_ticks.pop(0)
            a, b = pos - self._stem_start, end - self._stem_start
            ost, music = self._stems[0, a:b].copy(), self._stems[1, a:b].copy()
            self._stems = self._stems[:, b:]
            self._stem_start = end
            first_frame = -(-pos // T.HOP)  # first frame centred at or after the tick start
            i, j = first_frame - self._logit_start, last_frame + 1 - self._logit_start
            logits = self._logits[max(i, 0) : max(j, 0)]
            self._logits = self._logits[max(j, 0) :]
            self._logit_start = max(self._logit_start, last_frame + 1)
            if had_audio:
                self._fill(tick, ost, music, logits)
            else:
                self._fill_none(tick)
            out.append(tick)
        return out

    def _fill(self, tick: Tick, ost: np.ndarray, music: np.ndarray, logits: np.ndarray) -> None:
        cal = self.model.calibration
        z = float(np.mean(logits)) if len(logits) else 0.0
        p = 1.0 / (1.0 + math.exp(-(cal.scale * z + cal.bias)))
        e_music = float(np.mean(music.astype(np.float64) ** 2))
        e_ost = float(np.mean(ost.astype(np.float64) ** 2))
        tick.fields["music"] = {
            "probability": round(p, 4),
            "level_db": round(10 * math.log10(e_music + EPS), 2),
            "ost_to_music_db": round(10 * math.log10((e_ost + EPS) / (e_music + EPS)), 2),
        }
        tick.models["music"] = self.model_id
        for name, x in (("ost", ost), ("music", music)):
            if name in self.stems:
                tick.stems[name] = x.astype(np.float32)

    def _fill_none(self, tick: Tick) -> Tick:
        tick.fields["music"] = {"probability": None, "level_db": None, "ost_to_music_db": None}
        return tick
