"""Saved state is data only (vibescope.stream.state): what goes out comes back equal, and anything
that is not a state this code wrote is refused with a clear error, never executed."""

from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest

from vibescope.stream import state
from vibescope.stream.media import Chunk, encode_jpeg
from vibescope.stream.session import Session, SessionConfig
from vibescope.stream.stage import FaceObservation, Tick

BASE = SessionConfig(stages="base")


def test_plain_values_arrays_and_registered_dataclasses_round_trip_exactly():
    face = FaceObservation(0.93, (1.0, 2.0, 30.0, 40.0), [(3.0, 4.0)] * 5, (640, 360))
    tree = {
        "none": None,
        "flags": [True, False],
        "n": 2**40,
        "x": 0.1,
        "nan": float("nan"),
        "s": "é",
        "raw": b"\x00\xff",
        "pair": (1, "a"),
        "frames": [[3, 0.25, b"jpeg", None]],
        "f32": np.float32(0.1),
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "tick": Tick(7, np.ones(4, np.float32), face=face, fields={"music": {"probability": 0.5}}),
    }
    back = state.loads(state.dumps(tree))
    assert back.keys() == tree.keys()
    assert back["pair"] == [1, "a"]  # JSON's model: tuples come back as lists, which loaders convert
    assert back["frames"] == [[3, 0.25, b"jpeg", None]]
    assert type(back["f32"]) is np.float32 and back["f32"] == np.float32(0.1)  # precision kept
    assert back["a"].dtype == np.float32 and np.array_equal(back["a"], tree["a"])
    assert np.isnan(back["nan"]) and back["raw"] == b"\x00\xff" and back["n"] == 2**40
    assert back["tick"].face == face and back["tick"].fields == tree["tick"].fields


def test_objects_of_other_types_cannot_be_saved():
    with pytest.raises(TypeError):
        state.dumps({"f": lambda: 0})
    with pytest.raises(TypeError):
        state.dumps({"a": np.array([object()])})


def _raw_header(header: bytes) -> bytes:
    return struct.pack("<4sHI", b"VSST", 1, len(header)) + header


def _payload(tree: object, blobs: bytes = b"") -> bytes:
    header = json.dumps(tree).encode()
    return struct.pack("<4sHI", b"VSST", 1, len(header)) + header + blobs


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "not a vibescope state"),
        (pickle.dumps({"version": 1}), "not a vibescope state"),
        (struct.pack("<4sHI", b"VSST", 9, 2) + b"{}", "format 9"),
        (_payload({"$c": "Popen", "f": {}}), "not allowed"),
        (_payload({"$c": "Tick", "f": {"index": 0, "audio": None, "__class__": 1}}), "unknown fields"),
        (_payload({"$a": [0, 8], "dtype": "|O", "shape": [1]}, b"\x00" * 8), "dtype"),
        (_payload({"$a": [0, 8], "dtype": "<f4", "shape": [1000]}, b"\x00" * 8), "does not match"),
        (_payload({"$b": 5}), "blob reference"),
        (_payload({"$b": [0, 1 << 30]}), "runs past"),
        (_payload({"$x": 1}), "malformed"),
        (_raw_header(b"[" * 300_000 + b"]" * 300_000), "too many nested values"),
        (_raw_header(b"[" * 5_000 + b"]" * 5_000), "nests too deeply"),
    ],
)
def test_what_this_code_did_not_write_is_refused_with_a_clear_error(payload, message):
    with pytest.raises(state.StateError, match=message):
        state.loads(payload)


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with pytest.raises(ValueError, match="not a vibescope state"):
        Session.from_bytes(pickle.dumps(Exploit()))
    assert not marker.exists()


def _fed_session() -> Session:
    session = Session(BASE)
    tone = (0.1 * np.sin(np.arange(3200) * 0.2) * 32767).astype("<i2").tobytes()
    session.feed(Chunk("video", encode_jpeg(np.full((64, 96, 3), 90, np.uint8)), 0.05))
    session.feed(Chunk("audio", tone, 0.0))
    session.feed(Chunk("audio", tone[:1000], 0.2))
    return session


def test_a_session_continues_from_its_saved_state_exactly():
    a = _fed_session()
    b = Session.from_bytes(a.to_bytes())
    more = Chunk("audio", (np.ones(4000) * 900).astype("<i2").tobytes(), 0.2 + 500 / 16000)
    ea, eb = a.feed(more).events, b.feed(more).events
    for e in ea + eb:
        e.latency_ms = None  # wall time, not analysis
    assert [e.to_dict() for e in ea] == [e.to_dict() for e in eb] and len(ea) == 2
    assert a.to_bytes() == b.to_bytes()


def test_a_state_of_the_right_types_but_the_wrong_shapes_is_refused_at_load():
    tree = state.loads(_fed_session().to_bytes())
    _, signal = tree["stages"][0]
    signal["vad"]["state"] = np.zeros((2, 1, 7), np.float32)  # silero's LSTM state is (2, 1, 128)
    with pytest.raises(state.StateError, match="speech detector state"):
        Session.from_bytes(state.dumps(tree))


def test_a_crafted_config_is_refused_at_load():
    tree = state.loads(_fed_session().to_bytes())
    tree["config"] = SessionConfig.__new__(SessionConfig)
    object.__setattr__(tree["config"], "__dict__", {**BASE.__dict__, "audio_rate": 7})
    with pytest.raises(state.StateError, match="audio_rate"):
        Session.from_bytes(state.dumps(tree))
