"""Causal framing, STFT and overlap-add shared by the offline model and its streamer.

Frames are ``N_FFT`` = 512 samples (32 ms at 16 kHz) every ``HOP`` = 256 samples (16 ms), with a
square-root periodic Hann window for analysis *and* synthesis: at 50 % overlap the squared window
sums to one, so overlap-add reconstructs the input exactly. The signal is left-padded with
``N_FFT - HOP`` zeros, so frame ``k`` covers input samples ``[k*HOP - 256, k*HOP + 256)`` and
output samples ``[(k-1)*HOP, k*HOP)`` are final once frame ``k`` is done: the algorithmic lag is
``N_FFT`` samples (32 ms). Nothing here looks at future frames.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_BINS = N_FFT // 2 + 1
PAD = N_FFT - HOP  # left context of the first frame
assert N_FFT == 2 * HOP  # 50 % overlap: the streamer's overlap-add adds two half frames per hop


@lru_cache(maxsize=4)
def window(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """sqrt-Hann, periodic; shape ``(N_FFT,)`` (one shared tensor per dtype: never modify it).
    Made outside inference mode, whoever asks first: training saves it for backward."""
    with torch.inference_mode(False):
        return torch.hann_window(N_FFT, periodic=True, dtype=dtype).sqrt()


def n_frames(n_samples: int) -> int:
    """Frames needed so that every one of ``n_samples`` input samples is final."""
    return math.ceil(n_samples / HOP) + 1


def frame_signal(x: torch.Tensor, extra: int = 0) -> torch.Tensor:
    """``(B, T)`` waveform -> ``(B, K, N_FFT)`` frames, ``K = n_frames(T) + extra``, zero-padded
    (``extra`` frames of silence after the end: the look-ahead of the last ones)."""
    t = x.shape[-1]
    k = n_frames(t) + extra
    right = (k - 1) * HOP + N_FFT - PAD - t
    padded = torch.nn.functional.pad(x, (PAD, right))
    return padded.unfold(-1, N_FFT, HOP)


def stft(frames: torch.Tensor) -> torch.Tensor:
    """``(..., N_FFT)`` frames -> complex ``(..., N_BINS)`` spectra."""
    return torch.fft.rfft(frames * window(frames.dtype).to(frames.device), dim=-1)


def istft(spec: torch.Tensor) -> torch.Tensor:
    """complex ``(..., N_BINS)`` -> windowed ``(..., N_FFT)`` frames ready for overlap-add."""
    return torch.fft.irfft(spec, n=N_FFT, dim=-1) * window().to(spec.device)


def overlap_add(frames: torch.Tensor, n_samples: int) -> torch.Tensor:
    """``(B, K, N_FFT)`` synthesis frames -> ``(B, n_samples)``, undoing ``frame_signal``'s pad."""
    b, k, n = frames.shape
    total = (k - 1) * HOP + n
    out = torch.nn.functional.fold(
        frames.transpose(1, 2), output_size=(1, total), kernel_size=(1, n), stride=(1, HOP)
    ).reshape(b, total)
    return out[:, PAD : PAD + n_samples]
