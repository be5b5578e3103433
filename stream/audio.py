"""Audio front-end measures on 16 kHz mono ticks: speech probability (silero-vad) and loudness."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import onnxruntime as ort

from stream.pipeline import SAMPLE_RATE

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
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def feed(self, x: np.ndarray) -> list[float]:
        """float32 (n,) at 16 kHz -> probabilities of the windows that became complete."""
        buf = np.concatenate([self._pending, x.astype(np.float32)])
        n_windows = len(buf) // self.WINDOW
        probs = []
        session = _vad_session()
        for i in range(n_windows):
            window = buf[i * self.WINDOW:(i + 1) * self.WINDOW][None, :]
            inp = np.concatenate([self._context, window], axis=1)
            out, self._state = session.run(None, {"input": inp, "state": self._state, "sr": self._sr})
            self._context = inp[:, -self.CONTEXT:]
            probs.append(float(out[0, 0]))
        self._pending = buf[n_windows * self.WINDOW:].copy()
        return probs

    def state_dict(self) -> dict[str, Any]:
        return {"state": self._state.copy(), "context": self._context.copy(), "pending": self._pending.copy()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self._state, self._context, self._pending = s["state"].copy(), s["context"].copy(), s["pending"].copy()


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dB relative to a full-scale square wave (sine at full scale: -3 dBFS)."""
    if len(x) == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return float(max(SILENCE_DBFS, 20.0 * np.log10(rms + 1e-12)))

