"""The analyzer engine (stream/session.py) on real media: events, measures, state."""

from __future__ import annotations

import numpy as np
import pytest

from vibescope.stream.media import Chunk, MediaError, encode_jpeg
from vibescope.stream.session import Session, SessionConfig
from vibescope.stream.source import iter_chunks

from assets import pyfeat_file, speech_clip

BASE = SessionConfig(stages="base")


def run(chunks, config=BASE, split_at=None):
    """Events of a session; with split_at, the state moves to a fresh Session (bytes) there."""
    session = Session(config)
    events = []
    for i, chunk in enumerate(chunks):
        if i == split_at:
            session = Session.from_bytes(session.to_bytes())
        events += [e.to_dict() for e in session.feed(chunk).events]
    events += [e.to_dict() for e in session.flush().events]
    for e in events:
        e.pop("latency_ms")
    return events


@pytest.fixture(scope="module")
def face_chunks():
    return list(iter_chunks(pyfeat_file("single_face.mp4")))


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    return speech_clip(tmp_path_factory.mktemp("speech") / "speech.wav")


def test_an_event_every_100_ms_of_media_with_media_times(face_chunks):
    events = run(face_chunks)
    assert [e["t"] for e in events] == pytest.approx([0.1 * (i + 1) for i in range(len(events))])
    assert 24 <= len(events) <= 26  # the clip lasts 2.42 s


def test_fields_no_component_computes_stay_null_and_every_value_names_its_model(face_chunks):
    for e in run(face_chunks):
        assert e["valence"] is None and e["arousal"] is None and e["confidence"] is None
        assert e["music"] == {"probability": None, "level_db": None}
        assert e["models"]["speech"] == "silero-vad-6" and e["models"]["loudness"] == "rms-dbfs"
        if e["face"]["present"] is not None:
            assert e["models"]["face"] == "retinaface-mnet025"


def test_face_presence_on_real_clips():
    with_face = run(iter_chunks(pyfeat_file("single_face.mp4")))
    without = run(iter_chunks(pyfeat_file("no_face.mp4")))
    assert sum(e["face"]["present"] is True for e in with_face) >= 0.9 * len(with_face)
    assert all(e["face"]["present"] is False for e in without)


def test_face_goes_away_in_face_noface_clip_and_video_outlasting_audio_still_gets_events():
    events = run(iter_chunks(pyfeat_file("face_noface.mov")))
    present = [e["face"]["present"] for e in events]
    assert present[:10] == [True] * 10 and present[-10:] == [False] * 10
    assert events[-1]["t"] >= 6.3  # video is 6.4 s, audio 4.0 s
    assert events[-1]["speech"]["probability"] is None  # no audio there: nothing invented


def test_speech_probability_is_high_on_real_speech_and_low_on_a_tone(speech_wav):
    speech = run(iter_chunks(speech_wav), SessionConfig(video=False, stages="base"))
    probs = np.array([e["speech"]["probability"] for e in speech])
    loud = np.array([e["loudness"]["dbfs"] for e in speech])
    assert probs[loud > -35].mean() > 0.6
    t = np.arange(32000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    session = Session(SessionConfig(video=False, stages="base"))
    events = session.feed(Chunk("audio", tone[: 16000 * 2 // 2], 0.0)).events + session.flush().events
    assert max(e.speech["probability"] for e in events) < 0.3


def test_loudness_follows_the_signal_level():
    session = Session(SessionConfig(video=False, stages="base"))
    t = np.arange(1600) / 16000
    for amp in (0.5, 0.05):
        x = (amp * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
        ev = session.feed(Chunk("audio", x, 0.0)).events[0]
        assert ev.loudness["dbfs"] == pytest.approx(20 * np.log10(amp / np.sqrt(2)), abs=0.1)


def test_state_moved_to_a_fresh_session_mid_stream_gives_identical_events(face_chunks):
    whole = run(face_chunks)
    for split in (1, 7, 20, 33):
        assert run(face_chunks, split_at=split) == whole


def test_any_audio_rate_and_chunking_gives_the_same_ticks():
    rng = np.random.default_rng(0)
    x48 = (rng.standard_normal(48000) * 0.1).astype(np.float32)
    config = SessionConfig(audio_encoding="f32", audio_rate=48000, audio_channels=1, video=False, stages="base")

    def events(sizes):
        s = Session(config)
        out, i = [], 0
        for n in sizes:
            out += s.feed(Chunk("audio", x48[i : i + n].tobytes(), i / 48000)).events
            i += n
        out += s.flush().events
        return [(e.t, e.loudness["dbfs"], e.speech["probability"]) for e in out]

    assert events([4800] * 10) == events([1000] * 48) == events([48000])
    assert len(events([48000])) == 10


def test_a_corrupted_jpeg_is_refused_and_the_session_goes_on(face_chunks):
    session = Session(BASE)
    session.feed(face_chunks[0])
    with pytest.raises(MediaError):
        session.feed(Chunk("video", b"\xff\xd8\xff" + bytes(500), 0.1))
    before = session.to_bytes()
    with pytest.raises(MediaError):
        session.feed(Chunk("audio", b"\x01\x02\x03", 0.1))  # half a sample
    assert session.to_bytes() == before
    # the next chunk (the first 100 ms of audio) closes tick 0 as if nothing had been refused ...
    out = session.feed(face_chunks[1])
    first = [e.to_dict() for e in out.events]
    assert [e["t"] for e in first] == pytest.approx([0.1])
    assert first[0]["face"]["present"] is True and first[0]["speech"]["probability"] is not None
    # ... and the rest of the stream gives exactly the events of a session that never saw the bad chunks
    events = first + [e.to_dict() for c in face_chunks[2:] for e in session.feed(c).events]
    events += [e.to_dict() for e in session.flush().events]
    for e in events:
        e.pop("latency_ms")
    assert events == run(face_chunks)


def test_video_only_stream_gets_events_from_video_times():
    config = SessionConfig(audio_encoding=None, video=True, stages="base")
    session = Session(config)
    frame = encode_jpeg(np.full((120, 160, 3), 90, np.uint8))
    events = []
    for i in range(10):
        events += session.feed(Chunk("video", frame, i * 0.1)).events
    events += session.flush().events
    assert [round(e.t, 1) for e in events] == [round(0.1 * (i + 1), 1) for i in range(10)]
    assert all(e.face["present"] is False and e.speech["probability"] is None for e in events)


def test_container_stream_gives_events_for_its_whole_duration(test_video):
    data = test_video.read_bytes()
    config = SessionConfig(container="video/webm", audio_encoding=None, stages="base")
    chunked = []
    session = Session(config)
    for i in range(0, len(data), 3000):
        chunked += [e.to_dict() for e in session.feed(Chunk("container", data[i : i + 3000])).events]
    chunked += [e.to_dict() for e in session.flush().events]
    assert len(chunked) == 30
    levels = [e["loudness"]["dbfs"] for e in chunked]
    # the tone's level steps up each second: 0.05, 0.10, 0.15 amplitude
    assert np.mean(levels[12:18]) - np.mean(levels[2:8]) == pytest.approx(6.0, abs=1.0)


def test_video_far_ahead_of_audio_is_refused():
    session = Session(BASE)
    session.feed(Chunk("audio", np.zeros(1600, "<i2").tobytes(), 0.0))  # the media clock starts at 0
    with pytest.raises(MediaError, match="ahead") as refused:
        session.feed(Chunk("video", encode_jpeg(np.zeros((64, 64, 3), np.uint8)), 60.0))
    assert refused.value.code == "bad_timestamp"


def _iou(a, b) -> float:
    ax, ay, aw, ah = a.box
    bx, by, bw, bh = b.box
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy / (aw * ah + bw * bh - ix * iy)


def test_tracking_finds_the_same_face_in_the_region_and_nothing_where_it_is_gone():
    from vibescope.stream.face import FaceDetector

    det = FaceDetector()
    frames = [c for c in iter_chunks(pyfeat_file("single_face.mp4")) if c.kind == "video"]
    from vibescope.stream.media import decode_image

    rgbs = [decode_image(c.payload, 1920, 1080) for c in frames]
    full = [det.detect(f) for f in rgbs]
    assert all(f is not None for f in full)
    prev = full[0]
    for rgb, ref in zip(rgbs[1:], full[1:], strict=False):
        near = det.detect_near(rgb, prev)
        assert near is not None and _iou(near, ref) > 0.75
        assert near.frame_size == ref.frame_size
        prev = near
    empty = [decode_image(c.payload, 1920, 1080) for c in iter_chunks(pyfeat_file("no_face.mp4")) if c.kind == "video"]
    assert det.detect_near(empty[0], full[0]) is None


def test_base_stage_tracks_between_whole_frame_looks_once_a_second(monkeypatch):
    from vibescope.stream.signal import SignalStage

    SignalStage()  # the shared detector exists
    det = SignalStage._detector
    calls = []
    real_detect, real_near = det.detect, det.detect_near
    monkeypatch.setattr(det, "detect", lambda rgb: calls.append("full") or real_detect(rgb))
    monkeypatch.setattr(det, "detect_near", lambda rgb, prev: calls.append("near") or real_near(rgb, prev))
    events = run(iter_chunks(pyfeat_file("single_face.mp4")))
    assert sum(e["face"]["present"] is True for e in events) >= 0.9 * len(events)
    # 2.4 s at 5 Hz: 12-13 looks; the whole frame at 0, 1 and 2 s, the region around the face between
    assert 11 <= len(calls) <= 13
    assert calls.count("full") == 3 and calls[0] == "full"
    calls.clear()
    chunks = list(iter_chunks(pyfeat_file("no_face.mp4")))
    run(chunks)
    assert calls and set(calls) == {"full"}  # nothing to follow: every look is at the whole frame
    seconds = max(c.t for c in chunks if c.kind == "video")
    assert seconds / 0.5 <= len(calls) <= seconds / 0.4 + 1  # and only every 0.4 s (frames are 0.1 s apart)


def test_a_looped_clip_is_one_continuous_stream_of_its_length(face_chunks):
    from vibescope.stream.source import looped

    chunks = looped(face_chunks, 6.0)
    audio = [c for c in chunks if c.kind == "audio"]
    samples = sum(len(c.payload) // 2 for c in audio)
    assert 5.9 * 16000 <= samples <= 6.1 * 16000  # every chunk that starts before 6 s
    times = [c.t for c in audio]
    assert times == sorted(times) and max(c.t for c in chunks) < 6.0
    # each repeat starts where the clip's audio ended: no gap, no overlap
    clip_s = sum(len(c.payload) // 2 for c in face_chunks if c.kind == "audio") / 16000
    assert any(abs(t - clip_s) < 1e-6 for t in times)
    assert len(run(chunks)) == pytest.approx(samples / 1600, abs=1)  # an event per 100 ms of the whole stream


def test_frames_the_detector_does_not_look_at_are_never_converted_to_rgb(monkeypatch):
    import vibescope.stream.media as media

    chunks = list(iter_chunks(pyfeat_file("no_face.mp4")))
    conversions, looks = [], []
    real_convert, real_sample = media.frame_to_rgb, media.Picture.sample_rgb
    monkeypatch.setattr(media, "frame_to_rgb", lambda *a: conversions.append(1) or real_convert(*a))
    monkeypatch.setattr(media.Picture, "sample_rgb", lambda self, ys, xs: looks.append(1) or real_sample(self, ys, xs))
    events = run(chunks)
    frames = sum(c.kind == "video" for c in chunks)
    assert all(e["face"]["present"] is False for e in events)
    assert 0 < len(looks) <= frames / 3  # only the whole-frame looks (every 0.4 s) need pixels
    # full-range JPEGs at their final size: the detector's grid is converted, never a whole frame
    assert conversions == []


def test_a_session_keeps_only_the_audio_stems_it_asks_for(face_chunks):
    """The server's sessions ask for no stem unless the client wants the OST back: same events,
    no stems in the results, and a smaller saved state (stems held through TAGF's 400 ms lag
    would be most of it)."""
    results = {}
    for stems in (("ost", "music"), ("ost",), ()):
        session = Session(SessionConfig(stems=stems))
        got, sizes, names = [], [], set()
        for chunk in face_chunks:
            out = session.feed(chunk)
            got += [e.to_dict() for e in out.events]
            names |= set(out.stems)
            sizes.append(len(session.to_bytes()))
        for e in got:
            e.pop("latency_ms")
        assert names == set(stems)
        results[stems] = (got, max(sizes))
    (full, big), (ost, mid), (none, small) = results.values()
    assert full == ost == none and len(full) > 10
    assert small < mid < big and small < 0.75 * big
