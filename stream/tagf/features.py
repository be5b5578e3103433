"""Per-frame (100 ms tick) feature vectors that TAGF consumes, and the audio front-end.

Visual vector (``VISUAL_FEATURES``, 12-d): face presence, the 7 FER class probabilities and
landmark geometry; all zeros when no face is seen (face_present = 0 is the explicit no-face state).
Audio vector (``AUDIO_FEATURES``, 25-d): presence flags, speech probability (silero-vad, from the
lead's SignalStage), loudness, pitch and its variability (our YIN), the separator's music features
when they exist, and a 16-band log-mel summary (torch.stft + our own mel filterbank).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import torch

from vibescope.stream import state as st
from vibescope.stream.tagf.expression import EXPRESSION_CLASSES
from vibescope.stream.timebase import SAMPLE_RATE, TICK_SAMPLES

VISUAL_FEATURES = (
    "face_present",
    *(f"p_{c}" for c in EXPRESSION_CLASSES),
    "mouth_width",
    "mouth_drop",
    "roll",
    "face_size",
)
N_MEL = 64
N_BANDS = 16
AUDIO_FEATURES = (
    "audio_present",
    "speech_prob",
    "loudness",
    "voiced_fraction",
    "f0",
    "f0_variability",
    "music_known",
    "music_prob",
    "music_level",
    *(f"mel{i:02d}" for i in range(N_BANDS)),
)
VISUAL_DIM, AUDIO_DIM = len(VISUAL_FEATURES), len(AUDIO_FEATURES)

# normalisation constants (documented units → roughly unit-scale inputs)
MOUTH_WIDTH_REF = 0.8  # mouth-corner distance / inter-ocular distance of a neutral face (about)
MOUTH_DROP_REF = 1.0
LOUD_REF_DB, LOUD_SCALE_DB = -40.0, 20.0  # dBFS
F0_REF_HZ = 160.0
F0_VAR_SCALE_ST = 4.0  # semitones
MEL_REF_DB, MEL_SCALE_DB = -60.0, 30.0

N_FFT, HOP = 512, 160  # 32 ms window, 10 ms hop at 16 kHz: 10 STFT frames per tick


def visual_vector(expression: dict | None) -> np.ndarray:
    """``tick.fields["expression"]`` (see ExpressionStage) → (VISUAL_DIM,) float32; zeros when None."""
    x = np.zeros(VISUAL_DIM, np.float32)
    if not expression:
        return x
    x[0] = 1.0
    probs = expression.get("probabilities") or {}
    for i, c in enumerate(EXPRESSION_CLASSES):
        x[1 + i] = float(probs.get(c, 0.0))
    g = expression.get("geometry")
    if g:
        x[8] = g["mouth_width"] - MOUTH_WIDTH_REF
        x[9] = g["mouth_drop"] - MOUTH_DROP_REF
        x[10] = g["roll"]
        x[11] = g["face_size"]
    return x


def mel_filterbank(
    n_mels: int = N_MEL, n_fft: int = N_FFT, sr: int = SAMPLE_RATE, fmin: float = 60.0, fmax: float = 7600.0
) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, area-normalised (Slaney). → (n_mels, n_fft // 2 + 1)."""

    def hz2mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel2hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel2hz(np.linspace(hz2mel(np.array(fmin)), hz2mel(np.array(fmax)), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[i] = np.maximum(0.0, np.minimum(up, down)) * 2.0 / (hi - lo)
    return torch.from_numpy(fb.astype(np.float32))


_MEL = mel_filterbank()
_WINDOW = torch.hann_window(N_FFT)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """float32 mono 16 kHz (n,) → log-mel power in dB, (frames, N_MEL), 10 ms hop, centred frames.
    A batch (B, n) of equal-length signals gives (B, frames, N_MEL)."""
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    spec = torch.stft(x, N_FFT, HOP, window=_WINDOW, center=True, pad_mode="constant", return_complex=True)
    power = spec.abs() ** 2 / _WINDOW.pow(2).sum()
    mel = _MEL @ power
    return (10.0 * torch.log10(mel + 1e-10)).transpose(-1, -2).numpy()


def yin_f0(
    frame: np.ndarray, sr: int = SAMPLE_RATE, fmin: float = 70.0, fmax: float = 400.0, threshold: float = 0.2
) -> float | None:
    """YIN (de Cheveigné & Kawahara 2002) on one frame: cumulative-mean-normalised difference, first
    dip under ``threshold``, parabolic refinement. → f0 in Hz, or None when unvoiced."""
    return yin_f0_frames(np.asarray(frame)[None], sr, fmin, fmax, threshold)[0]


def yin_f0_frames(
    frames: np.ndarray, sr: int = SAMPLE_RATE, fmin: float = 70.0, fmax: float = 400.0, threshold: float = 0.2
) -> list[float | None]:
    """:func:`yin_f0` of each row of ``frames`` (n, L); the FFTs of all rows in one call."""
    tmax = int(sr / fmin)
    tmin = int(sr / fmax)
    length = frames.shape[1]
    n = length - tmax
    out: list[float | None] = [None] * frames.shape[0]
    if n <= 0:
        return out
    x = frames.astype(np.float64)
    # difference function via FFT autocorrelation
    size = 1 << int(math.ceil(math.log2(length + tmax)))
    fx = np.fft.rfft(x, size, axis=-1)
    fw = np.fft.rfft(x[:, :n][:, ::-1], size, axis=-1)
    corr = np.fft.irfft(fx * fw, size, axis=-1)[:, n - 1 : n - 1 + tmax + 1]
    energy = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x * x, axis=-1)], axis=-1)
    lags = np.arange(tmax + 1)
    d = energy[:, n : n + 1] + (energy[:, lags + n] - energy[:, lags]) - 2.0 * corr
    d[:, 0] = 0.0
    cmnd = np.ones_like(d)
    cs = np.cumsum(d[:, 1:], axis=-1)
    cmnd[:, 1:] = d[:, 1:] * np.arange(1, tmax + 1) / np.maximum(cs, 1e-12)
    for r in range(x.shape[0]):
        if float(np.dot(frames[r], frames[r])) < 1e-6:
            continue
        c = cmnd[r]
        below = np.where(c[tmin:] < threshold)[0]
        if below.size == 0:
            continue
        tau = tmin + int(below[0])
        while tau + 1 <= tmax and c[tau + 1] < c[tau]:
            tau += 1
        if 1 <= tau < tmax:
            a, b, cc = c[tau - 1], c[tau], c[tau + 1]
            den = a - 2 * b + cc
            shift = 0.5 * (a - cc) / den if abs(den) > 1e-12 else 0.0
        else:
            shift = 0.0
        out[r] = float(sr / (tau + shift))
    return out


class AudioFrontEnd:
    """Audio features of one tick; keeps the last second of pitch values for the variability.

    State (``state_dict``): the previous tick's last 480 samples (pitch frames span tick borders)
    and up to 10 recent f0 values in semitones.
    """

    PITCH_FRAME = 800  # 50 ms: two periods of 70 Hz + margin
    PITCH_HOP = 400  # 4 pitch frames per tick
    HISTORY_TICKS = 10

    def __init__(self) -> None:
        self.tail = np.zeros(self.PITCH_FRAME - self.PITCH_HOP, np.float32)
        self.f0_history: deque[list[float]] = deque(maxlen=self.HISTORY_TICKS)

    def tick_vector(self, audio: np.ndarray | None, fields: dict[str, Any]) -> np.ndarray:
        """One tick's (TICK_SAMPLES,) audio + the tick's fields → (AUDIO_DIM,) float32."""
        return AudioFrontEnd.tick_vectors([self], [audio], [fields])[0]

    @staticmethod
    def tick_vectors(
        fronts: list[AudioFrontEnd], audios: list[np.ndarray | None], fields: list[dict[str, Any]]
    ) -> list[np.ndarray]:
        """``tick_vector`` for several streams at once: the pitch frames of all of them go
        through one batch of FFTs, their log-mel spectra through one STFT."""
        xs = [AudioFrontEnd._levels(a, f) for a, f in zip(audios, fields, strict=False)]
        live = [i for i, a in enumerate(audios) if a is not None and len(a) == TICK_SAMPLES]
        for i, a in enumerate(audios):  # a tick of another length (not made by the engine): alone
            if a is not None and i not in live:
                AudioFrontEnd._voice_and_mel_many([fronts[i]], [xs[i]], [np.asarray(a, np.float32)])
        if live:
            AudioFrontEnd._voice_and_mel_many(
                [fronts[i] for i in live], [xs[i] for i in live], [np.asarray(audios[i], np.float32) for i in live]
            )
        return xs

    @staticmethod
    def _levels(audio: np.ndarray | None, fields: dict[str, Any]) -> np.ndarray:
        """The vector with what needs no signal processing of ours: presence, speech, loudness, music."""
        x = np.zeros(AUDIO_DIM, np.float32)
        music = fields.get("music") or {}
        if music.get("probability") is not None:
            x[6] = 1.0
            x[7] = float(music["probability"])
            if music.get("level_db") is not None:
                x[8] = (float(music["level_db"]) - LOUD_REF_DB) / LOUD_SCALE_DB
        if audio is None:
            return x
        x[0] = 1.0
        speech = fields.get("speech") or {}
        x[1] = float(speech.get("probability") or 0.0)
        loud = (fields.get("loudness") or {}).get("dbfs")
        if loud is None:
            loud = 10.0 * math.log10(float(np.mean(np.asarray(audio, np.float64) ** 2)) + 1e-10)
        x[2] = (max(float(loud), -100.0) - LOUD_REF_DB) / LOUD_SCALE_DB
        return x

    @staticmethod
    def _voice_and_mel_many(fronts: list[AudioFrontEnd], xs: list[np.ndarray], audios: list[np.ndarray]) -> None:
        """Pitch (voiced fraction, f0, its variability) and log-mel bands into each ``x``, for
        streams whose ticks all have the same length."""
        frames, counts = [], []
        for fe, audio in zip(fronts, audios, strict=False):
            buf = np.concatenate([fe.tail, audio])
            fe.tail = buf[-(fe.PITCH_FRAME - fe.PITCH_HOP) :].copy()
            n_frames = (buf.size - fe.PITCH_FRAME) // fe.PITCH_HOP + 1
            frames.append(np.lib.stride_tricks.sliding_window_view(buf, fe.PITCH_FRAME)[:: fe.PITCH_HOP][:n_frames])
            counts.append(n_frames)
        f0_all = yin_f0_frames(np.concatenate(frames))
        mels = log_mel(np.stack(audios)).mean(axis=1)  # (B, N_MEL)
        pos = 0
        for fe, x, n_frames, mel in zip(fronts, xs, counts, mels, strict=False):
            f0s = [f for f in f0_all[pos : pos + n_frames] if f is not None]
            pos += n_frames
            x[3] = len(f0s) / n_frames
            st = [12.0 * math.log2(f / F0_REF_HZ) for f in f0s]
            fe.f0_history.append(st)
            if st:
                x[4] = float(np.median(st)) / 12.0
            recent = [v for tick in fe.f0_history for v in tick]
            if len(recent) >= 3:
                x[5] = float(np.std(recent)) / F0_VAR_SCALE_ST
            bands = mel.reshape(N_BANDS, N_MEL // N_BANDS).mean(axis=1)
            x[9:] = (np.maximum(bands, -100.0) - MEL_REF_DB) / MEL_SCALE_DB

    def state_dict(self) -> dict[str, Any]:
        return {"tail": self.tail.copy(), "f0_history": [list(v) for v in self.f0_history]}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        s = st.keys(s, {"tail", "f0_history"}, "TAGF audio front-end")
        self.tail = st.array(s["tail"], np.float32, (self.PITCH_FRAME - self.PITCH_HOP,), "TAGF audio tail")
        history = st.instance(s["f0_history"], list, "pitch history")
        if len(history) > self.HISTORY_TICKS:
            raise st.StateError("pitch history longer than kept")
        for v in history:
            for x in st.instance(v, list, "pitch history entry"):
                st.number(x, "pitch")
        self.f0_history = deque((list(v) for v in history), maxlen=self.HISTORY_TICKS)


assert TICK_SAMPLES % AudioFrontEnd.PITCH_HOP == 0
