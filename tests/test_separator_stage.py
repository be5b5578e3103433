"""SeparatorStage: the pipeline contract (fields, stems, lag, flush, state) on real components."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vibescope.stream.cards import card
from vibescope.stream.separator.model import MODEL_ID, CausalMaskSeparator, load_shared
from vibescope.stream.separator.stage import SeparatorStage
from vibescope.stream.separator.streamer import SeparatorStreamer, probe_signal, stream_in_chunks
from vibescope.stream.stage import Tick
from vibescope.stream.timebase import TICK_SAMPLES
from vibescope.stream.weights import models_dir

from conftest import untrained_separator


@pytest.fixture(scope="module", params=[0, 2], ids=["no-lookahead", "lookahead-2"])
def model(request) -> CausalMaskSeparator:
    return untrained_separator(seed=1, lookahead=request.param)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return probe_signal(seed=5, seconds=1.6)  # 16 ticks


def ticks(audio: np.ndarray) -> list[Tick]:
    return [
        Tick(index=i, audio=audio[i * TICK_SAMPLES : (i + 1) * TICK_SAMPLES].copy())
        for i in range(len(audio) // TICK_SAMPLES)
    ]


def run(stage: SeparatorStage, items: list[Tick]) -> list[Tick]:
    out = []
    for t in items:
        out += stage.push(t)
    return out + stage.flush()


def test_each_tick_gets_music_fields_model_id_and_stems(model, audio):
    out = run(SeparatorStage(model), ticks(audio))
    assert [t.index for t in out] == list(range(16))
    for t in out:
        music = t.fields["music"]
        assert set(music) == {"probability", "level_db", "ost_to_music_db"}
        assert 0.0 <= music["probability"] <= 1.0
        assert isinstance(music["level_db"], float) and isinstance(music["ost_to_music_db"], float)
        assert t.models["music"] == MODEL_ID
        for stem in ("ost", "music"):
            assert t.stems[stem].dtype == np.float32 and t.stems[stem].shape == (TICK_SAMPLES,)


def test_stems_are_aligned_with_the_tick_media_time(model, audio):
    out = run(SeparatorStage(model), ticks(audio))
    ref = stream_in_chunks(SeparatorStreamer(model), audio, TICK_SAMPLES)
    np.testing.assert_array_equal(np.concatenate([t.stems["ost"] for t in out]), ref[0])
    np.testing.assert_array_equal(np.concatenate([t.stems["music"] for t in out]), ref[1])
    for t in out:  # the stems of a tick add up to that tick's audio
        np.testing.assert_allclose(t.stems["ost"] + t.stems["music"], t.audio, atol=1e-6)


@pytest.mark.parametrize("kept", [(), ("ost",)])
def test_only_the_stems_asked_for_reach_the_ticks_and_the_fields_stay(model, audio, kept):
    """A session that wants no audio back (the server's default) keeps no stem on its ticks, so
    none is carried through the later stages' lag or stored with the state; the fields, which are
    measured on the stems, are the same."""
    full = run(SeparatorStage(model), ticks(audio))
    stage = SeparatorStage(model)
    stage.stems = kept
    out = run(stage, ticks(audio))
    assert [t.fields for t in out] == [t.fields for t in full]
    for a, b in zip(out, full, strict=False):
        assert set(a.stems) == set(kept)
        for name in kept:
            np.testing.assert_array_equal(a.stems[name], b.stems[name])


def test_holds_back_exactly_one_tick(model, audio):
    stage = SeparatorStage(model)
    items = ticks(audio)
    assert stage.lag_ticks == 1
    assert stage.push(items[0]) == []
    for i in range(1, 5):
        released = stage.push(items[i])
        assert [t.index for t in released] == [i - 1]
    assert [t.index for t in stage.flush()] == [4]


def test_level_follows_the_music_stem(model, audio):
    quiet = run(SeparatorStage(model), ticks(audio * 0.01))
    loud = run(SeparatorStage(model), ticks(audio))
    diff = np.mean(
        [a.fields["music"]["level_db"] - b.fields["music"]["level_db"] for a, b in zip(loud, quiet, strict=True)]
    )
    assert 30 < diff < 50  # 40 dB louder input


def test_video_only_ticks_pass_through_with_null_music(model):
    stage = SeparatorStage(model)
    out = stage.push(Tick(index=0, audio=None, video_seen=True)) + stage.flush()
    assert len(out) == 1
    assert out[0].fields["music"] == {"probability": None, "level_db": None, "ost_to_music_db": None}
    assert "ost" not in out[0].stems


def test_state_dict_pickles_small_and_continues_bit_identically(model, audio):
    items = ticks(audio)
    whole = run(SeparatorStage(model), [Tick(t.index, t.audio.copy()) for t in items])

    first = SeparatorStage(model)
    part = []
    for t in items[:7]:
        part += first.push(Tick(t.index, t.audio.copy()))
    blob = pickle.dumps(first.state_dict())
    assert len(blob) < 100_000
    fresh = SeparatorStage(model)
    fresh.load_state_dict(pickle.loads(blob))
    part += run(fresh, [Tick(t.index, t.audio.copy()) for t in items[7:]])
    assert [t.index for t in part] == [t.index for t in whole]
    for a, b in zip(part, whole, strict=False):
        assert a.fields == b.fields
        np.testing.assert_array_equal(a.stems["ost"], b.stems["ost"])


def test_default_constructor_loads_checkpoint_from_VIBESCOPE_MODELS_once(model, tmp_path, monkeypatch):
    torch.save(model.checkpoint(), tmp_path / "separator.pt")
    monkeypatch.setenv("VIBESCOPE_MODELS", str(tmp_path))
    assert models_dir() == tmp_path
    a, b = SeparatorStage(), SeparatorStage()
    assert a.model is b.model is load_shared()  # weights shared between sessions
    assert a.streamer is not b.streamer


def test_shipped_checkpoint_is_small_and_loads():
    path = Path(__file__).resolve().parents[1] / "models" / "separator.pt"
    if not path.exists():
        pytest.skip("no shipped checkpoint in models/")
    assert path.stat().st_size < 20e6
    m = load_shared(path)
    assert sum(p.numel() for p in m.parameters()) <= 5_000_000


def test_model_info_names_the_model_and_its_card(model):
    info = SeparatorStage(model).model_info()
    assert info["music"]["id"] == MODEL_ID and "separator.md" in info["music"]["card"]
    assert info["music"]["card"] == card("separator").summary  # the card's own words, read from models/
    assert info["music"]["lag_ms"] == 32 + 16 * model.lookahead  # the loaded weights' own lag
