"""Generate tests/vectors/protocol.json from server/protocol.py, the reference definition.

    .venv/bin/python tests/vectors/make_vectors.py          # rewrite the file
    .venv/bin/python tests/vectors/make_vectors.py --check  # exit 1 if the file is stale

Both tests/test_protocol_vectors.py (Python) and tests/js/protocol.test.mjs (JavaScript twin,
extension/lib/protocol.js) decode these bytes and must agree with what is written here.
Timestamps are written as decimal strings: JSON numbers lose precision above 2**53 in JS.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vibescope.server.protocol import (  # noqa: E402
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    AudioFormat,
    Hello,
    Kind,
    ProtocolError,
    decode_frame,
    encode_frame,
    parse_control,
    sniff_image,
)

OUT = Path(__file__).with_name("protocol.json")

JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600")
WEBP_HEAD = b"RIFF\x24\x00\x00\x00WEBPVP8 "


def _frame(name: str, kind: int, seq: int, ts: int, payload: bytes) -> dict[str, Any]:
    data = encode_frame(kind, seq, ts, payload)
    f = decode_frame(data)
    return {
        "name": name,
        "hex": data.hex(),
        "kind": int(f.kind),
        "seq": f.seq,
        "timestamp_us": str(f.timestamp_us),
        "payload_hex": f.payload.hex(),
        "image": sniff_image(f.payload) if f.kind == Kind.VIDEO else None,
    }


def _raw(magic: bytes, version: int, kind: int, seq: int, ts: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(magic, version, kind, seq, ts) + payload


def _invalid(name: str, data: bytes) -> dict[str, Any]:
    try:
        decode_frame(data)
    except ProtocolError as exc:
        return {"name": name, "hex": data.hex(), "error": exc.code, "seq": exc.seq}
    raise AssertionError(f"vector {name} decodes, expected an error")


def _hello(name: str, kwargs: dict[str, Any], js_args: dict[str, Any]) -> dict[str, Any]:
    text = Hello(**kwargs).to_json()
    Hello.from_dict(json.loads(text))  # every vector is a hello the server accepts
    return {"name": name, "js_args": js_args, "json": text}


def _control(text: str) -> dict[str, Any]:
    try:
        return {"text": text, "type": parse_control(text)["type"]}
    except ProtocolError as exc:
        return {"text": text, "error": exc.code}


def build() -> dict[str, Any]:
    pcm = struct.pack("<4h", 0, 32767, -32768, 1234)
    frames = [
        _frame("audio pcm16, first frame", Kind.AUDIO, 1, 0, pcm),
        _frame("audio 100 ms later", Kind.AUDIO, 2, 100_000, pcm[::-1]),
        _frame("video jpeg", Kind.VIDEO, 3, 66_666, JPEG_HEAD),
        _frame("video webp", Kind.VIDEO, 4, 133_333, WEBP_HEAD),
        _frame("container chunk", Kind.CONTAINER, 5, 0, bytes.fromhex("1a45dfa3")),
        _frame("empty payload", Kind.AUDIO, 6, 1, b""),
        _frame("largest seq", Kind.AUDIO, 2**32 - 1, 5_000_000, b"\x01\x02"),
        _frame("timestamp above 2**53", Kind.VIDEO, 7, 2**53 + 1, JPEG_HEAD),
        _frame("largest timestamp", Kind.AUDIO, 8, 2**63 - 1, b"\x00\x00"),
    ]
    invalid = [
        _invalid("empty", b""),
        _invalid("15 bytes", MAGIC + b"\x01" * 13),
        _invalid("bad magic", _raw(b"SV", PROTOCOL_VERSION, 1, 1, 0)),
        _invalid("bad magic and bad version: magic wins", _raw(b"XX", 9, 1, 1, 0)),
        _invalid("version 2", _raw(MAGIC, 2, 1, 5, 0)),
        _invalid("version 0 and kind 0: version wins", _raw(MAGIC, 0, 0, 5, 0)),
        _invalid("kind 0", _raw(MAGIC, PROTOCOL_VERSION, 0, 9, 0)),
        _invalid("kind 4", _raw(MAGIC, PROTOCOL_VERSION, 4, 9, 0)),
        _invalid("seq 0", _raw(MAGIC, PROTOCOL_VERSION, 1, 0, 0)),
        _invalid("seq 0 and negative timestamp: seq wins", _raw(MAGIC, PROTOCOL_VERSION, 2, 0, -1)),
        _invalid("negative timestamp", _raw(MAGIC, PROTOCOL_VERSION, 2, 3, -5)),
    ]
    hellos = [
        _hello("defaults", {"client": "vibescope-extension/0.1"}, {}),
        _hello(
            "token and ost audio",
            {"token": "s3cr\u00e9t", "want": ["ost_audio"], "client": "vibescope-extension/0.1"},
            {"token": "s3cr\u00e9t", "want": ["ost_audio"]},
        ),
        _hello(
            "resume",
            {
                "token": "t",
                "session_id": "abc",
                "resume_token": "r-1",
                "last_event_t": 12.3,
                "client": "vibescope-extension/0.1",
            },
            {"token": "t", "sessionId": "abc", "resumeToken": "r-1", "lastEventT": 12.3},
        ),
        _hello(
            "video only, webp",
            {"audio": None, "video": "webp", "client": "vibescope-demo/0.1"},
            {"audio": None, "video": "webp", "client": "vibescope-demo/0.1"},
        ),
        _hello(
            "48 kHz stereo float",
            {"audio": AudioFormat("f32", 48000, 2), "video": None, "client": "vibescope-extension/0.1"},
            {"audio": {"encoding": "f32", "sample_rate": 48000, "channels": 2}, "video": None},
        ),
        _hello(
            "container",
            {"audio": None, "video": None, "container": "video/webm", "client": "vibescope-extension/0.1"},
            {"audio": None, "video": None, "container": "video/webm"},
        ),
    ]
    controls = [
        _control('{"type": "ack", "seq": 12}'),
        _control('{"type": "overlay", "t": 0.1, "valence": null, "arousal": null, "confidence": null}'),
        _control('{"type": "welcome", "protocol": 1, "session_id": "s", "limits": {}}'),
        _control('{"type": "bye"}'),
        _control("not json"),
        _control("[1, 2]"),
        _control("null"),
        _control('{"seq": 3}'),
        _control('{"type": 3}'),
        _control(""),
    ]
    return {
        "protocol": PROTOCOL_VERSION,
        "header_size": HEADER.size,
        "generated_by": "tests/vectors/make_vectors.py from server/protocol.py",
        "frames": frames,
        "invalid_frames": invalid,
        "hellos": hellos,
        "controls": controls,
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run {Path(__file__).relative_to(ROOT)}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
