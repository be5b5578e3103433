"""The wire protocol's definition (server/protocol.py): frames and hello validation."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibescope.server.protocol import (
    HEADER_SIZE,
    Hello,
    Kind,
    ProtocolError,
    decode_frame,
    encode_frame,
    parse_control,
    sniff_image,
)


def test_frame_round_trips_header_fields_and_payload():
    data = encode_frame(Kind.VIDEO, 42, 1_234_567, b"\xff\xd8\xffpayload")
    frame = decode_frame(data)
    assert (frame.kind, frame.seq, frame.timestamp_us, frame.payload) == (
        Kind.VIDEO,
        42,
        1_234_567,
        b"\xff\xd8\xffpayload",
    )
    assert frame.timestamp == pytest.approx(1.234567)
    assert len(data) == HEADER_SIZE + len(b"\xff\xd8\xffpayload")


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "bad_header"),
        (b"VS\x01\x01\x01\x00", "bad_header"),  # truncated header
        (b"XX" + bytes(14), "bad_header"),  # bad magic
        (
            encode_frame(Kind.AUDIO, 1, 0, b"")[:2] + b"\x02" + encode_frame(Kind.AUDIO, 1, 0, b"")[3:],
            "unsupported_version",
        ),
        (encode_frame(9, 1, 0, b""), "bad_header"),  # unknown kind
        (encode_frame(Kind.AUDIO, 0, 0, b""), "bad_seq"),
        (encode_frame(Kind.AUDIO, 1, -5, b""), "bad_header"),
    ],
)
def test_malformed_frames_raise_protocol_errors_with_codes(data, code):
    with pytest.raises(ProtocolError) as err:
        decode_frame(data)
    assert err.value.code == code


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_decoder_never_fails_other_than_with_protocol_error(data):
    try:
        frame = decode_frame(data)
    except ProtocolError as exc:
        assert exc.code in {"bad_header", "unsupported_version", "bad_seq"}
    else:
        assert data[:2] == b"VS" and frame.seq >= 1 and frame.payload == data[HEADER_SIZE:]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(Kind)), st.integers(1, 2**32 - 1), st.integers(0, 2**62), st.binary(max_size=32))
def test_any_valid_frame_round_trips(kind, seq, ts, payload):
    frame = decode_frame(encode_frame(kind, seq, ts, payload))
    assert (frame.kind, frame.seq, frame.timestamp_us, frame.payload) == (kind, seq, ts, payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["protocol", "token", "audio", "video", "container", "want", "session_id", "last_event_t"]),
        json_values,
        max_size=6,
    )
)
def test_hello_validation_accepts_or_rejects_cleanly(d):
    try:
        hello = Hello.from_dict(d)
    except ProtocolError as exc:
        assert exc.code in {"bad_hello", "unsupported_version"}
    else:
        assert hello.protocol == 1


def test_hello_defaults_and_json_round_trip():
    hello = Hello.from_dict(json.loads(Hello(token="t", want=["ost_audio"]).to_json()))
    assert hello.token == "t" and hello.want == ["ost_audio"]
    assert hello.audio.encoding == "pcm16" and hello.audio.sample_rate == 16000


@pytest.mark.parametrize(
    "d, code",
    [
        ({"protocol": 2}, "unsupported_version"),
        ({"protocol": "1"}, "bad_hello"),
        ({"protocol": 1, "audio": {"encoding": "mp3"}}, "bad_hello"),
        ({"protocol": 1, "audio": {"sample_rate": 1000}}, "bad_hello"),
        ({"protocol": 1, "video": "png"}, "bad_hello"),
        ({"protocol": 1, "want": ["everything"]}, "bad_hello"),
        ({"protocol": 1, "container": "audio/ogg"}, "bad_hello"),
    ],
)
def test_hello_rejections(d, code):
    with pytest.raises(ProtocolError) as err:
        Hello.from_dict(d)
    assert err.value.code == code


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"no": "type"}', '{"type": 5}'])
def test_control_messages_must_be_objects_with_a_type(text):
    with pytest.raises(ProtocolError) as err:
        parse_control(text)
    assert err.value.code == "bad_json"


def test_image_sniffing():
    assert sniff_image(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_image(b"\x89PNG") is None
