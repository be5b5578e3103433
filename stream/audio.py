"""Audio front-end measures on 16 kHz mono ticks: speech probability (silero-vad) and loudness."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import onnxruntime as ort

from vibescope.stream import state
from vibescope.stream.timebase import SAMPLE_RATE

VAD_MODEL_ID = "silero-vad-6"
LOUDNESS_ID = "rms-dbfs"
SILENCE_DBFS = -100.0


@lru_cache(maxsize=1)
def _vad_session() -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    path = resources.files("silero_vad") / "data" / "silero_vad.onnx"
    with resources.as_file(path) as p:
        return ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])


class SpeechDetector:
    """Streaming silero-vad (ONNX, bundled in the silero-vad wheel) over 32 ms windows at 16 kHz.

    ``feed(x)`` returns the speech probability of every 512-sample window completed by ``x``.
    All state (LSTM state, 64-sample context, pending samples) is in ``state_dict()``.
    """

    WINDOW = 512
    CONTEXT = 64
    model_id = VAD_MODEL_ID

    def __init__(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, self.CONTEXT), dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, x: np.ndarray) -> list[float]:
        """float32 (n,) at 16 kHz -> probabilities of the windows that became complete."""
        return SpeechDetector.feed_many([self], [x])[0]

    @staticmethod
    def feed_many(detectors: list[SpeechDetector], xs: list[np.ndarray]) -> list[list[float]]:
        """``feed`` for several streams at once: each 32 ms step is one ONNX call with a batch row
        (and an LSTM state row) per stream that has a window there. Same values as ``feed``."""
        bufs = [np.concatenate([d._pending, np.asarray(x, np.float32)]) for d, x in zip(detectors, xs, strict=False)]
        counts = [len(b) // SpeechDetector.WINDOW for b in bufs]
        probs: list[list[float]] = [[] for _ in detectors]
        session, w = _vad_session(), SpeechDetector.WINDOW
        sr = np.array(SAMPLE_RATE, dtype=np.int64)
        for j in range(max(counts, default=0)):
            live = [i for i, n in enumerate(counts) if n > j]
            inp = np.stack([np.concatenate([detectors[i]._context[0], bufs[i][j * w : (j + 1) * w]]) for i in live])
            state = np.concatenate([detectors[i]._state for i in live], axis=1)
            out, state = session.run(None, {"input": inp, "state": state, "sr": sr})
            for k, i in enumerate(live):
                detectors[i]._state = state[:, k : k + 1].copy()
                detectors[i]._context = inp[k : k + 1, -SpeechDetector.CONTEXT :].copy()
                probs[i].append(float(out[k, 0]))
        for d, b, n in zip(detectors, bufs, counts, strict=False):
            d._pending = b[n * w :].copy()
        return probs

    def state_dict(self) -> dict[str, Any]:
        return {"state": self._state.copy(), "context": self._context.copy(), "pending": self._pending.copy()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        s = state.keys(s, {"state", "context", "pending"}, "speech detector")
        self._state = state.array(s["state"], np.float32, (2, 1, 128), "speech detector state")
        self._context = state.array(s["context"], np.float32, (1, self.CONTEXT), "speech detector context")
        self._pending = state.array(s["pending"], np.float32, (None,), "speech detector samples")
        if len(self._pending) >= self.WINDOW:
            raise state.StateError("speech detector holds more than a window of samples")


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dB relative to a full-scale square wave (sine at full scale: -3 dBFS)."""
    if len(x) == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return float(max(SILENCE_DBFS, 20.0 * np.log10(rms + 1e-12)))
