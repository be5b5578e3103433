"""Media decoding for the engine: raw PCM, still images, container chunks; resampling to 16 kHz.

Everything here that keeps state between calls (the resampler, the container decoder) exposes
``state_dict()`` / ``load_state_dict()`` so a session continues bit-identically in a fresh
process. That is why resampling is our own windowed-sinc filter (PyAV's libswresample context
cannot be saved) while all codec and container work goes through PyAV.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import av
import numpy as np

from vibescope.stream import state
from vibescope.stream.timebase import SAMPLE_RATE

ChunkKind = Literal["audio", "video", "container"]


@dataclass(frozen=True)
class Chunk:
    """One piece of a session's media, as a client sends it."""

    kind: ChunkKind
    payload: bytes
    t: float = 0.0  # capture media time of the chunk's start, seconds (ignored for containers)


class MediaError(ValueError):
    """Undecodable or out-of-limits media; the message is safe to show to the client, ``code`` is
    the protocol's error code for it."""

    code = "bad_media"


# --- PCM ---------------------------------------------------------------------------------------


def pcm_to_float(payload: bytes, encoding: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> float32 mono, shape (n_samples,), range about [-1, 1]."""
    width = 2 if encoding == "pcm16" else 4
    if len(payload) % (width * channels):
        raise MediaError(
            f"audio payload of {len(payload)} bytes is not a whole number of {channels}-channel {encoding} samples"
        )
    if encoding == "pcm16":
        x = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
    elif encoding == "f32":
        x = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise MediaError("f32 audio contains NaN or infinity")
        x = np.clip(x, -4.0, 4.0)
    else:
        raise MediaError(f"unknown audio encoding {encoding!r}")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x


def float_to_pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()


# --- resampling --------------------------------------------------------------------------------


class Resampler:
    """Streaming rational resampler (Kaiser-windowed sinc), any rate -> ``SAMPLE_RATE``.

    Output sample n lies at input time n * rate_in / rate_out; it is emitted once the input covers
    the filter's right half, so the output is time-aligned with the input (no shift), only later.
    Pass-through (exact) when the rates are equal.
    """

    ZERO_CROSSINGS = 16
    BETA = 8.0

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        self.rate_in = rate_in
        self.rate_out = rate_out
        ratio = Fraction(rate_out, rate_in)
        self.up, self.down = ratio.numerator, ratio.denominator  # n_out * down / up = input position
        fc = 0.5 * min(1.0, rate_out / rate_in) * 0.95  # cutoff, cycles per input sample
        self.half = int(math.ceil(self.ZERO_CROSSINGS / (2 * fc)))
        taps = np.arange(-self.half + 1, self.half + 1)  # input offsets j - floor(tau)
        phases = np.arange(self.up) / self.up  # fractional part of tau
        u = taps[None, :] - phases[:, None]  # input offset minus tau
        w = np.kaiser(2 * self.half + 1, self.BETA)
        win = np.interp(u, np.arange(-self.half, self.half + 1), w)
        g = 2 * fc * np.sinc(2 * fc * u) * win
        self._table = (g / g.sum(axis=1, keepdims=True)).astype(np.float64)
        self._offsets = taps
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(self.half, dtype=np.float64)  # zeros before the stream starts
        self._buf_start = -self.half  # absolute input index of _buf[0]
        self._n_in = 0
        self._n_out = 0

    @property
    def passthrough(self) -> bool:
        return self.up == self.down

    def feed(self, x: np.ndarray) -> np.ndarray:
        """float32 (n,) at rate_in -> float32 (m,) at rate_out: every output that became final."""
        if self.passthrough:
            return x.astype(np.float32, copy=False)
        self._buf = np.concatenate([self._buf, x.astype(np.float64)])
        self._n_in += len(x)
        return self._drain(self._n_in)

    def flush(self) -> np.ndarray:
        """Zero-pad the end and return the outputs up to the input's duration."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        total_out = (self._n_in * self.up) // self.down
        self._buf = np.concatenate([self._buf, np.zeros(self.half + 1)])
        out = self._drain(self._n_in + self.half + 1, limit=total_out)
        return out

    def _drain(self, available: int, limit: int | None = None) -> np.ndarray:
        # output n needs input up to floor(n*down/up) + half
        last = ((available - self.half) * self.up - 1) // self.down if available > self.half else -1
        if limit is not None:
            last = min(last, limit - 1)
        n = np.arange(self._n_out, last + 1)
        if len(n) == 0:
            return np.zeros(0, dtype=np.float32)
        pos = n * self.down
        base = pos // self.up
        phase = pos % self.up
        idx = base[:, None] + self._offsets[None, :] - self._buf_start
        y = np.einsum("ij,ij->i", self._buf[idx], self._table[phase])
        self._n_out = int(n[-1]) + 1
        keep_from = (self._n_out * self.down) // self.up - self.half + 1
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return y.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rate_in": self.rate_in,
            "buf": self._buf.copy(),
            "buf_start": self._buf_start,
            "n_in": self._n_in,
            "n_out": self._n_out,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        s = state.keys(s, set(self.state_dict()), "resampler")
        if s["rate_in"] != self.rate_in:
            raise state.StateError("resampler state for another input rate")
        self._buf = state.array(s["buf"], np.float64, (None,), "resampler buffer")
        if len(self._buf) > 4 * self.half + self.rate_in:
            raise state.StateError("resampler buffer longer than its filter needs")
        self._buf_start = state.integer(s["buf_start"], "resampler position", -self.half)
        self._n_in = state.integer(s["n_in"], "resampler input count", 0)
        self._n_out = state.integer(s["n_out"], "resampler output count", 0)


# --- images ------------------------------------------------------------------------------------

_decoders = threading.local()  # per analysis thread: one still-image decoder per codec


def _image_decoder(codec: str) -> av.CodecContext:
    ctx = getattr(_decoders, codec, None)
    if ctx is None:
        ctx = av.CodecContext.create(codec, "r")
        ctx.thread_count = 1  # parallelism comes from sessions, not from one frame
        setattr(_decoders, codec, ctx)
    return ctx


class Picture:
    """A decoded video frame whose RGB pixels are made on first use.

    Converting a decoded JPEG to RGB costs about half as much again as decoding it, and a session
    looks at most frames only to reuse the last face (the detector runs at 2.5-5 Hz): those frames
    never need their pixels. And the stages that do look need few of them: the face detector a
    256-pixel grid or a 96-pixel region, the expression classifier the gray levels around a face.
    For a full-range YCbCr JPEG already at its final size (what browsers send), ``sample_rgb``
    converts only the sampled pixels and ``luma`` reads the Y plane, which *is* the BT.601 gray
    image; other frames are converted to RGB once. Decoding itself stays eager, so a broken image
    is refused when it arrives. Pickles as its RGB pixels.
    """

    def __init__(self, frame: av.VideoFrame, short_side: int = 360) -> None:
        self._frame: av.VideoFrame | None = frame
        self._short_side = short_side
        self._rgb: np.ndarray | None = None
        self._planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        scale = min(1.0, short_side / max(1, min(frame.width, frame.height)))
        self.shape = (frame.height, frame.width) if scale == 1.0 else _scaled_size(frame, scale)[::-1]

    def rgb(self) -> np.ndarray:
        """RGB uint8 (H, W, 3), short side <= ``short_side`` (made once)."""
        if self._rgb is None:
            self._rgb = frame_to_rgb(self._frame, self._short_side)
            self._frame = None
            self._planes = None
        return self._rgb

    def _yuv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Y, Cb, Cr planes (uint8, chroma at its own resolution) of a full-range frame at its
        final size, or None when the frame is of another kind (or already converted)."""
        if self._planes is None and self._rgb is None:
            f = self._frame
            if f is None or f.format.name not in _FULL_RANGE_YUV or self.shape != (f.height, f.width):
                return None
            planes = []
            for plane in f.planes[:3]:
                a = np.frombuffer(plane, np.uint8, count=plane.height * plane.line_size).reshape(
                    plane.height, plane.line_size
                )[:, : plane.width]
                planes.append(a)
            self._planes = (planes[0], planes[1], planes[2])
        return self._planes

    def sample_rgb(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """RGB uint8 (len(ys), len(xs), 3) of the pixels at rows ``ys`` × columns ``xs``."""
        yuv = self._yuv()
        if yuv is None:
            return self.rgb()[ys][:, xs]
        y, cb, cr = yuv
        fy, fx = y.shape[0] // cb.shape[0], y.shape[1] // cb.shape[1]
        luma = y[ys][:, xs].astype(np.float32)
        u = cb[ys // fy][:, xs // fx].astype(np.float32) - 128.0
        v = cr[ys // fy][:, xs // fx].astype(np.float32) - 128.0
        out = np.stack([luma + 1.402 * v, luma - 0.344136 * u - 0.714136 * v, luma + 1.772 * u], axis=-1)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def luma(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Gray levels float32 (y1-y0, x1-x0) in [0, 255] of a region (BT.601 luma)."""
        yuv = self._yuv()
        if yuv is None:
            return rgb_to_luma(self.rgb()[y0:y1, x0:x1])
        return yuv[0][y0:y1, x0:x1].astype(np.float32)

    def __getstate__(self) -> dict:
        return {
            "_frame": None,
            "_short_side": self._short_side,
            "_rgb": self.rgb(),
            "_planes": None,
            "shape": self.shape,
        }


_FULL_RANGE_YUV = ("yuvj420p", "yuvj422p", "yuvj444p")


def _scaled_size(frame: av.VideoFrame, scale: float) -> tuple[int, int]:
    return max(2, int(round(frame.width * scale))), max(2, int(round(frame.height * scale)))


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) → float32 luma in [0, 255] (ITU-R BT.601 weights, as OpenCV and JPEG's Y)."""
    rgb = rgb.astype(np.float32)
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def image_shape(image: np.ndarray | Picture) -> tuple[int, int]:
    """(height, width) of an RGB array or a :class:`Picture`."""
    return image.shape[:2] if isinstance(image, np.ndarray) else image.shape


def sample_rgb(image: np.ndarray | Picture, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """RGB uint8 (len(ys), len(xs), 3) at rows ``ys`` × columns ``xs`` (nearest-pixel sampling)."""
    return image[ys][:, xs] if isinstance(image, np.ndarray) else image.sample_rgb(ys, xs)


def luma(image: np.ndarray | Picture, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Gray levels float32 of the region [y0, y1) × [x0, x1) of an RGB array or a Picture."""
    return rgb_to_luma(image[y0:y1, x0:x1]) if isinstance(image, np.ndarray) else image.luma(y0, y1, x0, x1)


def decode_image(payload: bytes, max_width: int, max_height: int, short_side: int = 360) -> np.ndarray:
    """JPEG/WebP bytes -> RGB uint8 (H, W, 3), scaled down so its short side is <= ``short_side``."""
    return decode_picture(payload, max_width, max_height, short_side).rgb()


def image_dimensions(payload: bytes) -> tuple[int, int]:
    """(width, height) read from a JPEG's frame header or a WebP's VP8/VP8L/VP8X header, without
    decoding anything; :class:`MediaError` when the header is not there or malformed."""
    kind = image_kind(payload)
    if kind == "jpeg":
        pos = 2
        while pos + 4 <= len(payload):
            if payload[pos] != 0xFF:
                raise MediaError("JPEG: malformed marker segment")
            marker = payload[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
                pos += 2
                continue
            length = int.from_bytes(payload[pos + 2 : pos + 4], "big")
            # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): the frame header with the size
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if pos + 9 > len(payload) or length < 8:
                    break
                height = int.from_bytes(payload[pos + 5 : pos + 7], "big")
                width = int.from_bytes(payload[pos + 7 : pos + 9], "big")
                return width, height
            if marker == 0xDA or length < 2:  # scan data before any frame header
                break
            pos += 2 + length
        raise MediaError("JPEG without a frame header (SOF) before its image data")
    if kind == "webp":
        chunk = payload[12:16]
        if chunk == b"VP8 " and len(payload) >= 30 and payload[23:26] == b"\x9d\x01\x2a":
            w = int.from_bytes(payload[26:28], "little") & 0x3FFF
            h = int.from_bytes(payload[28:30], "little") & 0x3FFF
            return w, h
        if chunk == b"VP8L" and len(payload) >= 25 and payload[20] == 0x2F:
            bits = int.from_bytes(payload[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X" and len(payload) >= 30:
            return int.from_bytes(payload[24:27], "little") + 1, int.from_bytes(payload[27:30], "little") + 1
        raise MediaError("WebP without a VP8/VP8L/VP8X header")
    raise MediaError("video frame is neither JPEG nor WebP")


def decode_picture(payload: bytes, max_width: int, max_height: int, short_side: int = 360) -> Picture:
    """JPEG/WebP bytes -> :class:`Picture` (decoded and checked now, converted to RGB on first use).

    The size is read from the image's header and checked before anything is decoded."""
    codec = _image_codec(payload)
    width, height = image_dimensions(payload)
    if width > max_width or height > max_height or width < 1 or height < 1:
        raise MediaError(f"image {width}x{height} exceeds the limit {max_width}x{max_height}")
    try:
        frames = _image_decoder(codec).decode(av.Packet(payload))
    except (av.FFmpegError, ValueError, OSError) as exc:
        setattr(_decoders, codec, None)  # start the next image from a clean decoder
        raise MediaError(f"cannot decode image: {exc}") from None
    if not frames:
        raise MediaError("cannot decode image: no picture in the payload")
    frame = frames[0]
    if (frame.width, frame.height) != (width, height):  # the header lied about the size
        raise MediaError(f"image decodes to {frame.width}x{frame.height}, its header says {width}x{height}")
    return Picture(frame, short_side)


def image_kind(payload: bytes) -> str | None:
    """'jpeg', 'webp' or None from an image's magic bytes (the protocol's sniffing rule too)."""
    if payload[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if payload[:4] == b"RIFF" and payload[8:12] == b"WEBP":
        return "webp"
    return None


def _image_codec(payload: bytes) -> str:
    kind = image_kind(payload)
    if kind is None:
        raise MediaError("video frame is neither JPEG nor WebP")
    return {"jpeg": "mjpeg", "webp": "webp"}[kind]


def frame_to_rgb(frame: av.VideoFrame, short_side: int = 360) -> np.ndarray:
    scale = min(1.0, short_side / max(1, min(frame.width, frame.height)))
    if scale == 1.0:
        return frame.to_ndarray(format="rgb24")
    w, h = _scaled_size(frame, scale)
    return frame.to_ndarray(format="rgb24", width=w, height=h)


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG bytes (PyAV's mjpeg encoder)."""
    h, w = rgb.shape[:2]
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = w - w % 2, h - h % 2
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"qscale": str(max(2, min(31, (100 - quality) // 3 + 2)))}
    ctx.flags |= av.codec.context.Flags.qscale
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: ctx.height, : ctx.width]), format="rgb24").reformat(
        format="yuvj420p"
    )
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets)


# --- containers --------------------------------------------------------------------------------


@dataclass
class DecodedMedia:
    audio: list[tuple[float, np.ndarray]]  # (media time s, float32 mono at the stream's rate)
    audio_rate: int | None
    video: list[tuple[float, np.ndarray]]  # (media time s, RGB uint8)


_EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # first element of every Matroska/WebM file
_CLUSTER_ID = b"\x1f\x43\xb6\x75"  # Matroska/WebM Cluster element
_MOOF = b"moof"  # fragmented MP4 fragment box


class ContainerDecoder:
    """Incremental WebM/Matroska/fragmented-MP4 decoding of MediaRecorder-style chunks.

    PyAV's demuxer state cannot be saved, so the decoder keeps only bytes: the header (first
    chunk) and the tail since the last fragment boundary (a Matroska Cluster or an MP4 ``moof``).
    Each ``feed`` re-demuxes header + tail and emits what lies past what was already emitted; the
    last packet of each stream is held back until more data (or ``flush``) shows it is complete.

    Bounded for outside input: only the Matroska/WebM and MP4 demuxers are opened, only the codecs
    MediaRecorder writes are decoded (``CODECS``), the tail may not grow past ``MAX_TAIL`` (checked
    before appending), one chunk may decode to at most ``MAX_CHUNK_SECONDS`` of audio and
    ``MAX_CHUNK_FRAMES`` video frames, and a chunk that fails leaves the state as it was.
    """

    MAX_TAIL = 8 * 1024 * 1024
    MAX_UNOPENED = 1024 * 1024  # bytes to wait for a header that opens
    MAX_CHUNK_SECONDS = 10.0
    MAX_CHUNK_FRAMES = 300
    # the decoders of Opus, Vorbis, AAC, VP8, VP9, AV1 and H.264 (FFmpeg's own or the libraries')
    CODECS = frozenset(
        {
            "opus",
            "libopus",
            "vorbis",
            "libvorbis",
            "aac",
            "vp8",
            "libvpx",
            "vp9",
            "libvpx-vp9",
            "av1",
            "libdav1d",
            "libaom-av1",
            "h264",
        }
    )

    def __init__(self, short_side: int = 360) -> None:
        self.short_side = short_side
        self.header = b""
        self.tail = b""
        self.audio_done_until = -1.0  # media time (s) up to which audio was emitted
        self.video_done_until = -1.0  # media time of the last emitted video frame
        self.audio_rate: int | None = None

    def feed(self, chunk: bytes) -> DecodedMedia:
        if not self.header:
            if not (chunk[:4] == _EBML_MAGIC or chunk[4:8] == b"ftyp"):
                raise MediaError("container stream must start with a WebM/Matroska (EBML) or MP4 (ftyp) header")
            starts = [b for b in _boundaries(chunk) if b > 0]  # the header ends where a fragment starts
            header, tail = (chunk, b"") if not starts else (chunk[: starts[0]], chunk[starts[0] :])
        else:
            if len(self.tail) + len(chunk) > self.MAX_TAIL:
                raise MediaError(
                    f"container fragment would grow past {self.MAX_TAIL >> 20} MiB without a new cluster/moof"
                )
            header, tail = self.header, self.tail + chunk
        if len(tail) > self.MAX_TAIL or len(header) > self.MAX_TAIL:
            raise MediaError(f"container header or fragment larger than {self.MAX_TAIL >> 20} MiB")
        out, done = self._decode(header, tail, final=False)
        self.header, self.tail = header, tail  # the chunk decoded within bounds: keep it
        self.audio_done_until, self.video_done_until, self.audio_rate = done
        self._trim()
        return out

    def flush(self) -> DecodedMedia:
        if not self.header:
            return DecodedMedia([], None, [])
        out, done = self._decode(self.header, self.tail, final=True)
        self.audio_done_until, self.video_done_until, self.audio_rate = done
        return out

    def _decode(self, header: bytes, tail: bytes, final: bool) -> tuple[DecodedMedia, tuple]:
        data = header + tail
        done = [self.audio_done_until, self.video_done_until, self.audio_rate]
        out = DecodedMedia([], self.audio_rate, [])
        fmt = "matroska" if data[:4] == _EBML_MAGIC else "mp4"
        try:
            container = av.open(io.BytesIO(data), mode="r", format=fmt)
        except (av.FFmpegError, ValueError, OSError) as exc:
            if len(data) < self.MAX_UNOPENED and not final:
                return out, tuple(done)  # the header may not be complete yet
            raise MediaError(
                f"cannot open container ({exc}); WebM or fragmented MP4 as MediaRecorder "
                "writes them can be streamed, an MP4 with its index at the end cannot"
            ) from None
        with container:
            streams = [s for s in container.streams if s.type in ("audio", "video")]
            for stream in streams:
                name = stream.codec_context.name
                if name not in self.CODECS:
                    raise MediaError(
                        f"container stream codec {name!r} is not one MediaRecorder writes "
                        "(Opus, Vorbis, AAC, VP8, VP9, AV1, H.264)"
                    )
            packets: dict[int, list[Any]] = {s.index: [] for s in streams}
            try:
                for packet in container.demux(streams):
                    if packet.size and packet.pts is not None:
                        packets[packet.stream.index].append(packet)
            except (av.FFmpegError, ValueError, OSError):
                pass  # a truncated last element: what came before is still good
            for stream in streams:
                plist = packets[stream.index]
                if not final and plist:
                    plist = plist[:-1]  # may be incomplete
                self._decode_stream(stream, plist, out, final, done)
        return out, tuple(done)

    def _decode_stream(self, stream: Any, plist: list[Any], out: DecodedMedia, final: bool, done: list) -> None:
        ctx = stream.codec_context
        frames: list[Any] = []
        for packet in plist:
            try:
                frames.extend(ctx.decode(packet))
            except (av.FFmpegError, ValueError):
                continue  # e.g. an inter frame whose reference lies before the tail
        if final:
            try:
                frames.extend(ctx.decode(None))
            except (av.FFmpegError, ValueError):
                pass
        new_seconds, new_frames = 0.0, 0
        for frame in frames:
            if frame.pts is None:
                continue
            t = float(frame.pts * (frame.time_base or stream.time_base))  # some demuxers leave it unset
            if stream.type == "audio":
                if t + 1e-6 < done[0]:
                    continue
                new_seconds += frame.samples / frame.sample_rate
                if new_seconds > self.MAX_CHUNK_SECONDS:
                    raise MediaError(f"container chunk decodes to more than {self.MAX_CHUNK_SECONDS:g} s of new audio")
                raw = frame.to_ndarray()
                pcm = raw.astype(np.float32)
                if np.issubdtype(raw.dtype, np.integer):
                    pcm /= float(np.iinfo(raw.dtype).max + 1)
                if frame.format.is_planar:
                    mono = pcm.mean(axis=0)
                else:
                    mono = pcm.reshape(-1, len(frame.layout.channels)).mean(axis=1)
                done[2] = out.audio_rate = frame.sample_rate
                out.audio.append((t, mono.astype(np.float32)))
                done[0] = t + frame.samples / frame.sample_rate
            elif t > done[1] + 1e-6:
                new_frames += 1
                if new_frames > self.MAX_CHUNK_FRAMES:
                    raise MediaError(f"container chunk decodes to more than {self.MAX_CHUNK_FRAMES} new video frames")
                out.video.append((t, frame_to_rgb(frame, self.short_side)))
                done[1] = t

    def _trim(self) -> None:
        # Keep the tail from the second-to-last fragment boundary: a packet held back at the end of
        # the previous fragment stays decodable, and its decoder warms up on what precedes it.
        bounds = _boundaries(self.tail)
        if len(bounds) >= 2 and bounds[-2] > 0:
            self.tail = self.tail[bounds[-2] :]

    def state_dict(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "tail": self.tail,
            "audio_done_until": self.audio_done_until,
            "video_done_until": self.video_done_until,
            "audio_rate": self.audio_rate,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        s = state.keys(s, set(self.state_dict()), "container decoder")
        self.header = state.instance(s["header"], bytes, "container header")
        self.tail = state.instance(s["tail"], bytes, "container tail")
        if len(self.header) > self.MAX_TAIL or len(self.tail) > self.MAX_TAIL:
            raise state.StateError("container decoder state larger than its limits")
        self.audio_done_until = state.number(s["audio_done_until"], "container audio time")
        self.video_done_until = state.number(s["video_done_until"], "container video time")
        self.audio_rate = (
            None if s["audio_rate"] is None else state.integer(s["audio_rate"], "container rate", 1, 384000)
        )


def _boundaries(data: bytes) -> list[int]:
    """Offsets of every fragment start (Matroska Cluster or MP4 moof) in ``data``, ascending."""
    found = []
    for marker, back in ((_CLUSTER_ID, 0), (_MOOF, 4)):
        pos = data.find(marker)
        while pos >= 0:
            if pos - back >= 0:
                found.append(pos - back)
            pos = data.find(marker, pos + 1)
    return sorted(found)
