"""Turn a media file into the chunk sequence a live client sends (what `vibescope push` streams
and `vibescope analyze` feeds): PCM16 16 kHz mono audio chunks of ~100 ms and JPEG frames at a
fixed rate, interleaved in media-time order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from vibescope.stream.media import Chunk, MediaError, encode_jpeg, frame_to_rgb
from vibescope.stream.timebase import SAMPLE_RATE, TICK_SAMPLES


def _audio_chunks(path: Path) -> Iterator[Chunk]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        pending = np.zeros(0, dtype=np.int16)
        sent = 0
        frames = container.decode(audio=0)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                frame = None
            except av.FFmpegError as exc:
                raise MediaError(f"{path}: audio decoding failed: {exc}") from None
            for out in resampler.resample(frame):
                pending = np.concatenate([pending, out.to_ndarray().reshape(-1)])
            while len(pending) >= TICK_SAMPLES or (frame is None and len(pending)):
                block, pending = pending[:TICK_SAMPLES], pending[TICK_SAMPLES:]
                yield Chunk("audio", block.astype("<i2").tobytes(), sent / SAMPLE_RATE)
                sent += len(block)
            if frame is None:
                return


def _video_chunks(path: Path, fps: float, short_side: int) -> Iterator[Chunk]:
    with av.open(str(path)) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        next_t = 0.0
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * frame.time_base) - float((stream.start_time or 0) * stream.time_base)
                if t + 1e-6 < next_t:
                    continue
                yield Chunk("video", encode_jpeg(frame_to_rgb(frame, short_side)), round(max(t, 0.0), 6))
                next_t += 1.0 / fps
                while next_t <= t:
                    next_t += 1.0 / fps
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: video decoding failed: {exc}") from None


def iter_chunks(path: str | Path, fps: float = 10.0, short_side: int = 360) -> Iterator[Chunk]:
    """Chunks of a media file in media-time order, as a live client sends them.

    An audio chunk is ordered by its end time (a live client has it only then), so the video
    frames that fall inside it come first and join the tick that chunk completes.
    """
    path = Path(path)
    probe(path)
    audio = ((c.t + len(c.payload) / 2 / SAMPLE_RATE, 0, i, c) for i, c in enumerate(_audio_chunks(path)))
    video = ((c.t, 1, i, c) for i, c in enumerate(_video_chunks(path, fps, short_side)))
    for _, _, _, chunk in heapq.merge(audio, video, key=lambda x: x[:3]):
        yield chunk


def probe(path: str | Path) -> dict[str, bool]:
    """Which kinds of media a file has; raises :class:`MediaError` when it is not readable media."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        with av.open(str(path)) as c:
            kinds = {"audio": bool(c.streams.audio), "video": bool(c.streams.video)}
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: not a media file PyAV can read ({exc})") from None
    if not any(kinds.values()):
        raise MediaError(f"{path}: no audio or video stream")
    return kinds


def looped(chunks: list[Chunk], seconds: float) -> list[Chunk]:
    """``chunks`` of a short clip repeated, media times shifted: every chunk that starts before ``seconds`` (for
    benchmarks that need long real streams from a short real clip)."""
    if not chunks:
        return []
    audio = [c for c in chunks if c.kind == "audio"]
    length = (
        (max(c.t for c in audio) + len(audio[-1].payload) / 2 / SAMPLE_RATE)
        if audio
        else max(c.t for c in chunks) + 0.1
    )
    out: list[Chunk] = []
    k = 0
    while k * length < seconds - 1e-9:
        out += [Chunk(c.kind, c.payload, round(c.t + k * length, 6)) for c in chunks if c.t + k * length < seconds]
        k += 1
    return out


def decode_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any file PyAV reads to mono float32 at ``sample_rate``; shape ``(n_samples,)``."""
    chunks: list[np.ndarray] = []
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
