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
    SESSION_BUSY = "session_busy"
    BAD_HEADER = "bad_header"
    BAD_SEQ = "bad_seq"
    TOO_BIG = "too_big"
    RATE_LIMITED = "rate_limited"
    BAD_MEDIA = "bad_media"
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
VIDEO_ENCODINGS = ("jpeg", "webp")
CONTAINER_MIMES = ("video/webm", "audio/webm", "video/mp4", "audio/mp4", "video/x-matroska")
WANTS = ("ost_audio",)


@dataclass
class AudioFormat:
    encoding: str = "pcm16"
    sample_rate: int = 16000
    channels: int = 1


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
        if not isinstance(proto, int):
            raise bad("hello.protocol must be an integer")
        if proto != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION, f"client speaks protocol {proto}, server speaks {PROTOCOL_VERSION}"
            )
        for key in ("token", "session_id", "resume_token", "video", "container", "client"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise bad(f"hello.{key} must be a string")
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
            if not isinstance(audio.sample_rate, int) or not 8000 <= audio.sample_rate <= 192000:
                raise bad("hello.audio.sample_rate must be an integer in 8000..192000")
            if not isinstance(audio.channels, int) or not 1 <= audio.channels <= 8:
                raise bad("hello.audio.channels must be an integer in 1..8")
        video = d.get("video")
        if video is not None and video not in VIDEO_ENCODINGS:
            raise bad(f"hello.video must be one of {VIDEO_ENCODINGS}")
        container = d.get("container")
        if container is not None and container.split(";")[0].strip() not in CONTAINER_MIMES:
            raise bad(f"hello.container must be one of {CONTAINER_MIMES}")
        want = d.get("want", [])
        if not isinstance(want, list) or any(w not in WANTS for w in want):
            raise bad(f"hello.want must be a list drawn from {WANTS}")
        last_t = d.get("last_event_t")
        if last_t is not None and (isinstance(last_t, bool) or not isinstance(last_t, (int, float))):
            raise bad("hello.last_event_t must be a number")
        catch_up = d.get("catch_up_until_t")
        if catch_up is not None and (isinstance(catch_up, bool) or not isinstance(catch_up, (int, float))):
            raise bad("hello.catch_up_until_t must be a number")
        return cls(
            protocol=proto,
            token=d.get("token"),
            session_id=d.get("session_id"),
            resume_token=d.get("resume_token"),
            last_event_t=None if last_t is None else float(last_t),
            catch_up_until_t=None if catch_up is None else float(catch_up),
            audio=audio,
            video=video,
            container=container,
            want=list(want),
            client=d.get("client"),
        )


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 4 * 1024 * 1024
    max_video_fps: float = 30.0
    max_video_width: int = 1920
    max_video_height: int = 1080
    max_audio_seconds_per_frame: float = 1.0
    max_unacked_frames: int = 600
    idle_timeout_s: float = 30.0
    session_ttl_s: int = 3600


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
