"""The session's media clock (vibescope.stream.session): it starts at the first chunk, follows
the audio's samples, marks gaps, and refuses chunks stamped too far ahead."""

from __future__ import annotations

import numpy as np
import pytest

from vibescope.stream.media import Chunk, MediaError, encode_jpeg
from vibescope.stream.session import Session, SessionConfig

BASE = SessionConfig(stages="base")
TICK = (0.1 * np.sin(np.arange(1600) * 0.3) * 32767).astype("<i2").tobytes()
JPEG = encode_jpeg(np.full((64, 96, 3), 100, np.uint8))


def feed_audio(session: Session, start: float, ticks: int) -> list[dict]:
    events = []
    for k in range(ticks):
        events += [e.to_dict() for e in session.feed(Chunk("audio", TICK, round(start + 0.1 * k, 6))).events]
    return events


def test_a_session_that_begins_mid_stream_reports_the_streams_own_times():
    """A client that starts over (its server lost the session) keeps its capture clock: events
    come at the media time of the audio, and its video is not refused as being ahead."""
    session = Session(BASE)
    session.feed(Chunk("video", JPEG, 15.02))
    events = feed_audio(session, 15.0, 5)
    assert [e["t"] for e in events] == pytest.approx([15.1, 15.2, 15.3, 15.4, 15.5])
    assert events[0]["face"]["present"] is False  # the frame at 15.02 s was analysed in its tick


def test_audio_stamped_later_than_its_samples_leaves_a_marked_gap_without_audio():
    session = Session(BASE)
    before = feed_audio(session, 0.0, 3)
    after = feed_audio(session, 1.0, 2)  # 0.3 .. 1.0 s never came
    times = [e["t"] for e in before + after]
    assert times == pytest.approx([0.1 * k for k in range(1, 13)])
    gap = [e for e in after if e["t"] <= 1.0 + 1e-9]
    assert all(e["speech"]["probability"] is None and e["loudness"]["dbfs"] is None for e in gap)
    assert gap[0]["gap"] == {"from_t": 0.3, "to_t": 1.0}
    assert "gap" not in after[-1] and after[-1]["loudness"]["dbfs"] is not None


def test_a_chunk_stamped_far_ahead_of_the_clock_is_refused_and_changes_nothing():
    session = Session(BASE)
    feed_audio(session, 0.0, 2)
    state = session.to_bytes()
    for kind, payload in (("audio", TICK), ("video", JPEG)):
        with pytest.raises(MediaError, match="ahead of the session's media clock") as refused:
            session.feed(Chunk(kind, payload, 2**62 / 1e6))
        assert refused.value.code == "bad_timestamp"
    assert session.to_bytes() == state


def test_a_video_only_session_closes_no_more_ticks_than_the_allowed_lead():
    session = Session(SessionConfig(stages="base", audio_encoding=None))
    session.feed(Chunk("video", JPEG, 0.0))
    with pytest.raises(MediaError, match="ahead"):
        session.feed(Chunk("video", JPEG, 3600.0))
    events = session.feed(Chunk("video", JPEG, 4.0)).events  # within the lead: 40 ticks, once
    assert len(events) == 40


def test_audio_stamped_behind_its_samples_follows_the_samples():
    """Clients that stamp every chunk sloppily (or with 0) are placed by their sample count."""
    session = Session(BASE)
    events = []
    for _ in range(4):
        events += [e.to_dict() for e in session.feed(Chunk("audio", TICK, 0.0)).events]
    assert [e["t"] for e in events] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_a_declared_long_gap_restarts_the_stages_at_its_end():
    session = Session(BASE)
    feed_audio(session, 0.0, 3)
    out = session.skip_to(60.0)
    assert out.events == []  # the signal stage holds nothing back
    events = feed_audio(session, 60.0, 2)
    assert [e["t"] for e in events] == pytest.approx([60.1, 60.2])
    assert events[0]["gap"] == {"from_t": 0.3, "to_t": 60.0}
    restored = Session.from_bytes(session.to_bytes())
    assert restored.clock == pytest.approx(60.2)
