"""Mono WAV files for the separation data sets: written as 32-bit float so that
``mixture == music + ost`` holds bit for bit on disk; read back as float32.

Reading accepts 16-bit PCM and 32-bit float mono/multi-channel files (channels are averaged).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = 16000) -> None:
    """Write ``audio`` (float32, shape ``(n_samples,)``) as a mono IEEE-float WAV file."""
    data = np.ascontiguousarray(audio, dtype="<f4").reshape(-1)
    raw = data.tobytes()
    fmt = struct.pack("<HHIIHH", _FLOAT, 1, sample_rate, sample_rate * 4, 4, 32)
    header = b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(raw)) + b"WAVE"
    header += b"fmt " + struct.pack("<I", len(fmt)) + fmt
    header += b"data" + struct.pack("<I", len(raw))
    Path(path).write_bytes(header + raw)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV file; returns ``(audio float32 (n_samples,), sample_rate)``."""
    blob = Path(path).read_bytes()
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(blob):
        cid, size = blob[pos : pos + 4], struct.unpack("<I", blob[pos + 4 : pos + 8])[0]
        body = blob[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
            if fmt[0] == _EXTENSIBLE and len(body) >= 26:
                fmt = (struct.unpack("<H", body[24:26])[0],) + fmt[1:]
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise ValueError(f"{path}: missing fmt or data chunk")
    tag, channels, rate, _, _, bits = fmt
    if tag == _FLOAT and bits == 32:
        audio = np.frombuffer(data, dtype="<f4").astype(np.float32)
    elif tag == _PCM and bits == 16:
        audio = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    else:
        raise ValueError(f"{path}: unsupported WAV format (tag {tag}, {bits} bits)")
    if channels > 1:
        audio = audio[: len(audio) // channels * channels].reshape(-1, channels).mean(axis=1)
    return audio.astype(np.float32), int(rate)
