"""The vibescope wire protocol, version 1: the one definition used by the server, the CLI and tests.

docs/protocol.md is the prose version; extension/lib/protocol.js is the JavaScript twin, and
tests/vectors/protocol.json holds byte vectors both sides must decode identically.

Binary media frame (little-endian), 16-byte header then payload::

    offset size field
    0      2    magic  b"VS"
    2      1    version (1)
    3      1    kind   (1 audio, 2 video frame, 3 container chunk)
    4      4    seq    uint32, strictly increasing per session across all kinds, starts at 1
    8      8    timestamp_us int64, capture media time in microseconds

Control messages are JSON text frames with a ``type`` field.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

# one sniffing rule for the protocol and the decoder (re-exported: clients check frames before sending)
from vibescope.stream.media import image_kind as sniff_image  # noqa: F401

PROTOCOL_VERSION = 1
MAGIC = b"VS"
HEADER = struct.Struct("<2sBBIq")
HEADER_SIZE = HEADER.size  # 16


class Kind(IntEnum):
    AUDIO = 1  # raw PCM: encoding/rate/channels announced in hello["audio"]
    VIDEO = 2  # one still image: JPEG or WebP (sniffed from its magic bytes)
    CONTAINER = 3  # WebM/Matroska or MP4 bytes as MediaRecorder produces them


KIND_NAMES = {Kind.AUDIO: "audio", Kind.VIDEO: "video", Kind.CONTAINER: "container"}  # as in stream.media.Chunk


class ErrorCode(StrEnum):
    """Error codes sent in ``error`` messages (stable strings, documented in docs/protocol.md)."""

    BAD_JSON = "bad_json"
    UNKNOWN_TYPE = "unknown_type"
    HELLO_REQUIRED = "hello_required"
    HELLO_TWICE = "hello_twice"
    BAD_HELLO = "bad_hello"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNAUTHORIZED = "unauthorized"
    UNKNOWN_SESSION = "unknown_session"
    SERVER_FULL = "server_full"
    SESSION_BUSY = "session_busy"
    BAD_HEADER = "bad_header"
    BAD_SEQ = "bad_seq"
    TOO_BIG = "too_big"
    RATE_LIMITED = "rate_limited"
    BAD_MEDIA = "bad_media"
    BAD_TIMESTAMP = "bad_timestamp"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (docs/protocol.md, Closing)."""

    NORMAL = 1000  # done (after bye)
    GOING_AWAY = 1001
    POLICY = 1008  # a limit or rule was broken (idle, no hello in time, frame flood)
    TOO_BIG = 1009  # a message over max_message_bytes
    INTERNAL = 1011  # a server bug; resume to continue
    TRY_AGAIN = 1013  # the server cannot serve the session now (shutdown, store down); resume later
    # the protocol's own (4000-4999)
    UNSUPPORTED_VERSION = 4000
    UNAUTHORIZED = 4001  # missing or wrong token
    HELLO_REQUIRED = 4002  # the first message was not a hello
    UNKNOWN_SESSION = 4004  # unknown or expired session, wrong resume token: start a new one
    SESSION_BUSY = 4009  # a newer connection took the session over


class ProtocolError(Exception):
    """A message broke the protocol; ``code`` is an :class:`ErrorCode` string."""

    def __init__(self, code: str, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.seq = seq


@dataclass(frozen=True)
class MediaFrame:
    kind: Kind
    seq: int
    timestamp_us: int
    payload: bytes

    @property
    def timestamp(self) -> float:
        """Capture media time in seconds."""
        return self.timestamp_us / 1e6


def encode_frame(kind: Kind | int, seq: int, timestamp_us: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, int(kind), seq, timestamp_us) + payload


def decode_frame(data: bytes) -> MediaFrame:
    """Parse one binary frame; raises :class:`ProtocolError` on anything malformed."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(
            ErrorCode.BAD_HEADER, f"binary frame of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header"
        )
    magic, version, kind, seq, ts = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(ErrorCode.BAD_HEADER, "binary frame does not start with b'VS'")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION, f"frame version {version}, server speaks {PROTOCOL_VERSION}", seq
        )
    try:
        k = Kind(kind)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_HEADER, f"unknown frame kind {kind}", seq) from None
    if seq == 0:
        raise ProtocolError(ErrorCode.BAD_SEQ, "seq starts at 1", seq)
    if ts < 0:
        raise ProtocolError(ErrorCode.BAD_HEADER, "negative timestamp", seq)
    return MediaFrame(k, seq, ts, bytes(data[HEADER_SIZE:]))


# --- control messages --------------------------------------------------------------------------

AUDIO_ENCODINGS = ("pcm16", "f32")
# real rates only, so the server's resampler tables stay small (the session checks the same list)
AUDIO_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
VIDEO_ENCODINGS = ("jpeg", "webp")
CONTAINER_MIMES = ("video/webm", "audio/webm", "video/mp4", "audio/mp4", "video/x-matroska")
WANTS = ("ost_audio",)
# the longest each hello string may be: more is refused before anything is looked up
STRING_CAPS = {"token": 512, "session_id": 64, "resume_token": 64, "video": 8, "container": 200, "client": 120}


@dataclass
class AudioFormat:
    encoding: str = "pcm16"
    sample_rate: int = 16000
    channels: int = 1


def _number(d: dict[str, Any], key: str, where: str = "hello") -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not -1e12 < v < 1e12:
        raise ProtocolError(
            ErrorCode.BAD_HELLO if where == "hello" else ErrorCode.BAD_JSON, f"{where}.{key} must be a finite number"
        )
    return float(v)


@dataclass
class Hello:
    protocol: int = PROTOCOL_VERSION
    token: str | None = None
    session_id: str | None = None  # set when resuming
    resume_token: str | None = None
    last_event_t: float | None = None  # media time of the last overlay event the client holds
    # on a resume: media before this time (seconds) came due while the client was away; the
    # server analyses it like live media, never skipping its video (server/shedding.py)
    catch_up_until_t: float | None = None
    # on a resume: the highest seq the client saw acknowledged. A store that lost writes (Redis
    # restarted from an older snapshot) holds less; welcome then says which frames were lost.
    acked_seq: int | None = None
    audio: AudioFormat | None = field(default_factory=AudioFormat)
    video: str | None = "jpeg"
    container: str | None = None  # MIME type when media arrives as container chunks
    want: list[str] = field(default_factory=list)
    client: str | None = None

    def to_json(self) -> str:
        d = asdict(self)
        d["type"] = "hello"
        # "audio": null is meaningful (no audio); an absent "audio" means the default format
        return json.dumps({k: v for k, v in d.items() if v is not None or k == "audio"})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hello:
        def bad(msg: str) -> ProtocolError:
            return ProtocolError(ErrorCode.BAD_HELLO, msg)

        proto = d.get("protocol")
        if not isinstance(proto, int) or isinstance(proto, bool):
            raise bad("hello.protocol must be an integer")
        if proto != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION, f"client speaks protocol {proto}, server speaks {PROTOCOL_VERSION}"
            )
        for key, cap in STRING_CAPS.items():
            if d.get(key) is not None:
                if not isinstance(d[key], str):
                    raise bad(f"hello.{key} must be a string")
                if len(d[key]) > cap:
                    raise bad(f"hello.{key} is longer than {cap} characters")
        audio = None if "audio" in d else AudioFormat()  # absent: the default; null: no audio
        if d.get("audio") is not None:
            a = d["audio"]
            if not isinstance(a, dict):
                raise bad("hello.audio must be an object")
            audio = AudioFormat(
                encoding=a.get("encoding", "pcm16"),
                sample_rate=a.get("sample_rate", 16000),
                channels=a.get("channels", 1),
            )
            if audio.encoding not in AUDIO_ENCODINGS:
                raise bad(f"hello.audio.encoding must be one of {AUDIO_ENCODINGS}")
            if not isinstance(audio.sample_rate, int) or audio.sample_rate not in AUDIO_RATES:
                raise bad(f"hello.audio.sample_rate must be one of {AUDIO_RATES}")
            if not isinstance(audio.channels, int) or isinstance(audio.channels, bool) or not 1 <= audio.channels <= 8:
                raise bad("hello.audio.channels must be an integer in 1..8")
        video = d.get("video")
        if video is not None and video not in VIDEO_ENCODINGS:
            raise bad(f"hello.video must be one of {VIDEO_ENCODINGS}")
        container = d.get("container")
        if container is not None and container.split(";")[0].strip().lower() not in CONTAINER_MIMES:
            raise bad(f"hello.container must be one of {CONTAINER_MIMES}")
        want = d.get("want", [])
        if not isinstance(want, list) or len(want) > len(WANTS) or any(w not in WANTS for w in want):
            raise bad(f"hello.want must be a list drawn from {WANTS}")
        acked = d.get("acked_seq")
        if acked is not None and (not isinstance(acked, int) or isinstance(acked, bool) or not 0 <= acked < 2**32):
            raise bad("hello.acked_seq must be a seq (0 .. 2^32-1)")
        return cls(
            protocol=proto,
            token=d.get("token"),
            session_id=d.get("session_id"),
            resume_token=d.get("resume_token"),
            last_event_t=_number(d, "last_event_t"),
            catch_up_until_t=_number(d, "catch_up_until_t"),
            acked_seq=acked,
            audio=audio,
            video=video,
            container=container,
            want=list(dict.fromkeys(want)),
            client=d.get("client"),
        )


@dataclass(frozen=True)
class Skip:
    """``{"type": "skip", "to_seq": N, "to_t": T}``: the client no longer has the frames before seq
    N, nor the media before time T (they were lost with a store that lost writes); the server
    acknowledges up to N - 1 without them and the session's media clock goes on at T."""

    to_seq: int
    to_t: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Skip:
        seq = d.get("to_seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**32:
            raise ProtocolError(ErrorCode.BAD_JSON, "skip.to_seq must be a seq (1 .. 2^32-1)")
        t = _number(d, "to_t", "skip")
        if t is None or t < 0:
            raise ProtocolError(ErrorCode.BAD_JSON, "skip.to_t must be a media time in seconds")
        return cls(seq, t)


@dataclass(frozen=True)
class Limits:
    """What the server enforces, announced in ``welcome["limits"]`` and ``/healthz``."""

    max_message_bytes: int = 4 * 1024 * 1024
    max_hello_bytes: int = 64 * 1024  # every message before the hello is accepted
    max_video_fps: float = 30.0
    max_video_width: int = 1920
    max_video_height: int = 1080
    max_audio_seconds_per_frame: float = 1.0
    max_unacked_frames: int = 600  # frames received and not yet acknowledged, per session
    max_media_speed: float = 8.0  # media seconds a session may send per second, sustained
    max_media_burst_s: float = 30.0  # ... and in one burst (a reconnect's catch-up)
    max_bytes_per_s: int = 8 * 1024 * 1024  # media payload bytes a session may send per second, sustained
    max_lead_s: float = 5.0  # a frame may be stamped at most this far ahead of the session's clock
    idle_timeout_s: float = 30.0
    session_ttl_s: int = 3600
    max_sessions: int = 24  # live sessions per server process
    max_connections_per_peer: int = 16  # open connections per client address (0: no limit)


def parse_control(text: str) -> dict[str, Any]:
    """Parse a JSON text frame into a dict with a string ``type``."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "text frame is not valid JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_JSON, "control message must be a JSON object with a string 'type'")
    return msg


def error_message(code: str, message: str, seq: int | None = None) -> str:
    return json.dumps({"type": "error", "code": code, "message": message, "seq": seq})
