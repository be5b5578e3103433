"""TagfStage in the tick pipeline: fields, provenance, confidence, lag, state."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vibescope.stream.stage import Tick
from vibescope.stream.tagf.model import TagfConfig, TagfModel, load_shared
from vibescope.stream.tagf.stage import TagfStage
from vibescope.stream.tagf.train import save_checkpoint
from vibescope.stream.timebase import SAMPLE_RATE, TICK_SAMPLES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TagfModel:
    """Random weights saved as a checkpoint and loaded as the server loads the shipped one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tagf") / "tagf.pt"
    save_checkpoint(
        TagfModel(TagfConfig(fusion="gate_time")), path, {"model_id": "tagf-test", "status": "simulated-teacher"}
    )
    return load_shared(path)


def _ticks(n: int, face: bool, speech: bool, seed: int = 0) -> list[Tick]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = (np.arange(TICK_SAMPLES) + i * TICK_SAMPLES) / SAMPLE_RATE
        audio = (0.2 * np.sin(2 * np.pi * 180 * t) if speech else rng.normal(0, 0.001, TICK_SAMPLES)).astype(np.float32)
        tick = Tick(index=i, audio=audio, video_seen=True)
        tick.fields["speech"] = {"probability": 0.95 if speech else 0.02}
        tick.fields["loudness"] = {"dbfs": -20.0 if speech else -60.0}
        if i % 3 == 0:
            tick.fields["music"] = None  # separator not there yet / 1-tick lag
        tick.fields["expression"] = (
            {"label": "happy", "probabilities": {"happy": 0.9, "neutral": 0.1}, "geometry": None} if face else None
        )
        out.append(tick)
    return out


def _run(stage: TagfStage, ticks: list[Tick]) -> list[Tick]:
    out = []
    for t in ticks:
        out += stage.push(t)
    return out + stage.flush()


def test_every_tick_comes_back_in_order_with_va_and_provenance(model: Path) -> None:
    stage = TagfStage(model)
    held = []
    out = []
    for t in _ticks(23, face=True, speech=True):
        out += stage.push(t)
        held.append(t.index + 1 - len(out))
    out += stage.flush()
    assert [t.index for t in out] == list(range(23))
    assert max(held) <= stage.lag_ticks <= 5
    for t in out:
        assert -1 <= t.fields["valence"] <= 1 and -1 <= t.fields["arousal"] <= 1
        assert 0 < t.fields["confidence"] <= 1
        assert t.fields["va_status"] == "simulated-teacher"
        assert t.models["valence"] == t.models["arousal"] == "tagf-test"


def test_confidence_falls_when_faces_and_speech_are_missing(model: Path) -> None:
    both = _run(TagfStage(model), _ticks(20, face=True, speech=True))
    none = _run(TagfStage(model), _ticks(20, face=False, speech=False))
    voice = _run(TagfStage(model), _ticks(20, face=False, speech=True))
    c = lambda ticks: np.mean([t.fields["confidence"] for t in ticks[8:]])  # noqa: E731
    assert c(none) < c(voice) < c(both)
    assert c(both) <= 0.6  # teacher-trained weights never claim more


def test_no_media_at_all_gives_null_values(model: Path) -> None:
    ticks = [Tick(index=i, audio=None, video_seen=False) for i in range(6)]
    out = _run(TagfStage(model), ticks)
    assert len(out) == 6 and all(t.fields["valence"] is None and t.fields["confidence"] is None for t in out)


def test_state_roundtrip_through_bytes_continues_bit_identically(model: Path) -> None:
    ticks_a = _ticks(30, face=True, speech=True, seed=1)
    ticks_b = _ticks(30, face=True, speech=True, seed=1)
    ref = [(t.fields["valence"], t.fields["arousal"], t.fields["confidence"]) for t in _run(TagfStage(model), ticks_a)]
    s1 = TagfStage(model)
    out = []
    for t in ticks_b[:13]:
        out += s1.push(t)
    blob = pickle.dumps(s1.state_dict())
    assert len(blob) < 200_000
    s2 = TagfStage(model)
    s2.load_state_dict(pickle.loads(blob))
    out += _run(s2, ticks_b[13:])
    assert [(t.fields["valence"], t.fields["arousal"], t.fields["confidence"]) for t in out] == ref


def test_stage_drops_frames_so_they_never_reach_saved_state(model: Path) -> None:
    stage = TagfStage(model)
    tick = _ticks(1, face=True, speech=True)[0]
    tick.frame = np.zeros((32, 32, 3), np.uint8)
    stage.push(tick)
    assert all(t.frame is None for _, t in stage.pending)
