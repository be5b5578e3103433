"""The shared protocol vectors (tests/vectors/protocol.json) against server/protocol.py.

tests/js/protocol.test.mjs checks the same file against extension/lib/protocol.js, so a byte
sequence decodes the same way on both sides of the wire.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vibescope.server.protocol import Hello, ProtocolError, decode_frame, encode_frame, parse_control, sniff_image

VECTORS_DIR = Path(__file__).parent / "vectors"
VECTORS = json.loads((VECTORS_DIR / "protocol.json").read_text(encoding="utf-8"))


def test_vectors_file_is_what_server_protocol_generates_today():
    proc = subprocess.run(
        [sys.executable, str(VECTORS_DIR / "make_vectors.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("vec", VECTORS["frames"], ids=lambda v: v["name"])
def test_valid_frame_decodes_to_the_recorded_fields(vec):
    frame = decode_frame(bytes.fromhex(vec["hex"]))
    assert int(frame.kind) == vec["kind"]
    assert frame.seq == vec["seq"]
    assert frame.timestamp_us == int(vec["timestamp_us"])
    assert frame.payload.hex() == vec["payload_hex"]
    if vec["image"] is not None:
        assert sniff_image(frame.payload) == vec["image"]


@pytest.mark.parametrize("vec", VECTORS["frames"], ids=lambda v: v["name"])
def test_valid_frame_reencodes_to_the_same_bytes(vec):
    data = encode_frame(vec["kind"], vec["seq"], int(vec["timestamp_us"]), bytes.fromhex(vec["payload_hex"]))
    assert data.hex() == vec["hex"]


@pytest.mark.parametrize("vec", VECTORS["invalid_frames"], ids=lambda v: v["name"])
def test_invalid_frame_is_refused_with_the_recorded_code(vec):
    with pytest.raises(ProtocolError) as info:
        decode_frame(bytes.fromhex(vec["hex"]))
    assert info.value.code == vec["error"]
    assert info.value.seq == vec["seq"]


@pytest.mark.parametrize("vec", VECTORS["hellos"], ids=lambda v: v["name"])
def test_hello_vector_is_accepted_by_the_server_parser(vec):
    hello = Hello.from_dict(json.loads(vec["json"]))
    assert hello.to_json() == vec["json"]
    # "audio": null means no audio; the key absent means the default format
    assert (hello.audio is None) == ('"audio": null' in vec["json"])


@pytest.mark.parametrize("vec", VECTORS["controls"], ids=lambda v: v["text"] or "<empty>")
def test_control_text_parses_or_fails_as_recorded(vec):
    if "error" in vec:
        with pytest.raises(ProtocolError) as info:
            parse_control(vec["text"])
        assert info.value.code == vec["error"]
    else:
        assert parse_control(vec["text"])["type"] == vec["type"]
