"""The mixture builder on a tiny real build (small Debian packages, cached in $VIBESCOPE_CACHE)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vibescope.stream.debian import RESERVED_FOR_EVALUATION, DataError, fetch_package
from vibescope.stream.separator import sources, synthesis
from vibescope.stream.separator.dataset import build_mixtures, load_clips
from vibescope.stream.separator.sources import split_of
from vibescope.stream.separator.wavio import read_wav
from vibescope.stream.source import decode_audio

TINY = {
    "music": {"drascula-music": ("usr/share/scummvm/drascula/**/*.ogg",)},
    "speech": {"klettres-data": ("usr/share/klettres/en/alpha/*.ogg", "usr/share/klettres/fr/alpha/*.ogg")},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("sep") / "tiny"
    index = build_mixtures(out, hours=0.02, seed=3, table=TINY, tts=False, midi=False)
    return out, index


def test_layout_has_three_stems_and_meta_per_clip(tiny):
    out, index = tiny
    ids = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(ids) == sum(index["clips"].values()) == 18
    for clip_id in ids:
        for name in ("mixture.wav", "music.wav", "ost.wav", "meta.json"):
            assert (out / clip_id / name).is_file()
        audio, rate = read_wav(out / clip_id / "mixture.wav")
        assert rate == 16000 and audio.dtype == np.float32 and len(audio) == 64000


def test_mixture_is_exactly_music_plus_ost(tiny):
    for clip in load_clips(tiny[0]):
        np.testing.assert_array_equal(clip.mixture, clip.music + clip.ost)
        assert np.abs(clip.mixture).max() <= 0.9901


def test_split_is_by_source_file_never_by_clip(tiny):
    out, index = tiny
    train, val = set(index["sources"]["train"]), set(index["sources"]["val"])
    assert train and val and not train & val
    for clip in load_clips(out):
        used = [clip.meta.get("music_source", "").split("@")[0]] + clip.meta.get("ost_sources", [])
        allowed = train if clip.split == "train" else val
        assert all(u in allowed for u in used if u), clip.id


def test_clip_kinds_and_levels(tiny):
    kinds = {}
    for clip in load_clips(tiny[0]):
        kinds[clip.meta["kind"]] = kinds.get(clip.meta["kind"], 0) + 1
        if clip.meta["kind"] == "music_only":
            assert not clip.ost.any()
        if clip.meta["kind"] == "ost_only":
            assert not clip.music.any()
        if clip.meta["kind"] == "both":
            assert -15.0 <= clip.meta["music_to_ost_db"] <= 10.0
            measured = 20 * np.log10(np.sqrt(np.mean(clip.music**2)) / np.sqrt(np.mean(clip.ost**2)))
            assert abs(measured - clip.meta["music_to_ost_db"]) < 0.01
    assert kinds.get("both", 0) > 0


def test_same_seed_rebuilds_identical_audio(tiny, tmp_path):
    again = tmp_path / "again"
    build_mixtures(again, hours=0.02, seed=3, table=TINY, tts=False, midi=False)
    for clip_dir in sorted(p for p in tiny[0].iterdir() if p.is_dir())[:5]:
        assert (again / clip_dir.name / "mixture.wav").read_bytes() == (clip_dir / "mixture.wav").read_bytes()
        assert json.loads((again / clip_dir.name / "meta.json").read_text()) == json.loads(
            (clip_dir / "meta.json").read_text()
        )


def test_reserved_packages_are_refused_outside_test_builds():
    with pytest.raises(DataError, match="reserved for evaluation"):
        fetch_package("singularity-music")


def test_the_separators_test_sources_are_all_reserved_for_evaluation():
    assert sources.RESERVED_PACKAGES and sources.RESERVED_PACKAGES <= RESERVED_FOR_EVALUATION
    assert not {p for kind in sources.TRAIN_SOURCES.values() for p in kind} & RESERVED_FOR_EVALUATION


def test_nonpositive_hours_is_a_user_error(tmp_path):
    with pytest.raises(DataError):
        build_mixtures(tmp_path / "x", hours=0, table=TINY, tts=False, midi=False)


def _one_note_midi(path, note=69, seconds=2.0):
    """A type-0 MIDI file: one piano note held for ``seconds`` at 120 bpm (480 ticks/quarter)."""

    def vlq(n):
        out = [n & 0x7F]
        while n > 0x7F:
            n >>= 7
            out.insert(0, (n & 0x7F) | 0x80)
        return bytes(out)

    ticks = int(seconds * 2 * 480)
    track = (
        b"\x00\xff\x51\x03\x07\xa1\x20"  # tempo 500000 us per quarter
        + b"\x00\xc0\x00"
        + b"\x00\x90"
        + bytes([note, 100])
        + vlq(ticks)
        + b"\x80"
        + bytes([note, 0])
        + b"\x00\xff\x2f\x00"
    )
    path.write_bytes(
        b"MThd"
        + (6).to_bytes(4, "big")
        + (0).to_bytes(2, "big")
        + (1).to_bytes(2, "big")
        + (480).to_bytes(2, "big")
        + b"MTrk"
        + len(track).to_bytes(4, "big")
        + track
    )


def test_midi_render_is_the_note_at_16k_for_its_length(tmp_path):
    """fluidsynth from the unpacked package renders a 2 s piano A4 to 16 kHz: sounding while the
    note is held, silent after its release, and its strongest partial is 440 Hz."""
    _one_note_midi(tmp_path / "a4.mid")
    assert synthesis.render_midi(tmp_path / "a4.mid", tmp_path / "a4.wav")
    with open(tmp_path / "a4.wav", "rb") as f:
        header = f.read(64)
    assert int.from_bytes(header[24:28], "little") == 16000  # rendered at 16 kHz, not resampled
    audio = decode_audio(tmp_path / "a4.wav")
    assert 2.0 <= len(audio) / 16000 <= 6.0  # the note, then the synth's release/reverb tail

    def db(x):
        return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)

    held = audio[1600:16000]
    assert db(held) > -40.0 and db(audio[40000:]) < db(held) - 40.0  # note off at 2 s
    held = audio[1600:30000]
    spec = np.abs(np.fft.rfft(held * np.hanning(len(held))))
    assert abs(np.argmax(spec) * 16000 / len(held) - 440.0) < 5.0


def test_midi_sources_are_music_split_by_file_and_feed_clips(tmp_path):
    midi = synthesis.midi_sources()
    assert len(midi) >= 30 and all(s.kind == "music" and s.key.startswith("openttd-openmsx/") for s in midi)
    assert {s.split for s in midi} == {"train", "val"}
    assert all(s.split == split_of(s.key) for s in midi)
    # a build whose only music is the MIDI renders: every clip with music uses one, of its split
    table = {"music": {}, "speech": TINY["speech"]}
    index = build_mixtures(tmp_path / "m", hours=0.02, seed=4, table=table, tts=False, midi=True)
    used = 0
    for clip in load_clips(tmp_path / "m"):
        if clip.meta["kind"] != "ost_only":
            key = clip.meta["music_source"].split("@")[0]
            assert key.startswith("openttd-openmsx/") and key in index["sources"][clip.split]
            assert np.sqrt(np.mean(clip.music**2)) > 1e-4
            used += 1
    assert used > 0


def test_espeak_sources_cover_languages_with_a_split_and_no_dutch():
    srcs = synthesis.espeak_sources()
    assert len(srcs) >= 500 and all(s.kind == "tts" for s in srcs)
    langs = {s.key.split("/")[1].split("+")[0] for s in srcs}
    assert len(langs) >= 10 and "nl" not in langs
    assert {s.split for s in srcs} == {"train", "val"}
    for s in srcs[::97]:
        audio = decode_audio(s.path)
        assert len(audio) > 8000 and np.sqrt(np.mean(audio**2)) > 1e-3, s.key


def test_translations_of_a_line_share_the_split_of_its_english_text():
    root = fetch_package("fillets-ng-data")
    pairs = synthesis.dialogue_lines(root, "de")
    assert len(pairs) > 100
    english = {e for e, _ in synthesis.dialogue_lines(root, "en")}
    assert len({e for e, _ in pairs} & english) > 50  # the German lines pair with the English ones


def test_recipe_v2_builds_without_the_v3_sources(tmp_path):
    index = build_mixtures(tmp_path / "v2", hours=0.01, seed=1, table=TINY, tts=False, recipe="v2")
    keys = index["sources"]["train"] + index["sources"]["val"]
    assert index["recipe"] == "v2" and not any(k.startswith(("openttd-openmsx/", "espeak/")) for k in keys)
    index = build_mixtures(tmp_path / "v3", hours=0.01, seed=1, table=TINY, tts=False, recipe="v3")
    assert any(k.startswith("openttd-openmsx/") for k in index["sources"]["train"])
    with pytest.raises(DataError, match="unknown recipe"):
        build_mixtures(tmp_path / "x", hours=0.01, table=TINY, tts=False, recipe="v9")


def test_recipe_v4_adds_recorded_voices_and_no_reserved_package():
    v3, v4 = sources.source_table("v3"), sources.source_table("v4")
    assert v3 == sources.TRAIN_SOURCES
    assert v4["speech"]["hedgewars-data"] and "hedgewars-data" not in v3["speech"]
    assert {k: {p: g for p, g in v.items() if p != "hedgewars-data"} for k, v in v4.items()} == v3
    assert not {p for kind in v4.values() for p in kind} & sources.RESERVED_PACKAGES


def test_loud_music_draws_more_drowned_speech_in_training_clips_only(tmp_path):
    index = build_mixtures(tmp_path / "v5", hours=0.2, seed=4, table=TINY, tts=False, recipe="v5")
    clips = load_clips(tmp_path / "v5")
    ratios = {
        sp: [c.meta["music_to_ost_db"] for c in clips if c.split == sp and c.meta["kind"] == "both"]
        for sp in ("train", "val")
    }
    assert index["recipe"] == "v5" and len(ratios["train"]) > 60
    loud = np.mean(np.array(ratios["train"]) >= 0.0)
    assert 0.45 < loud < 0.75  # 30 % from 0..+10 dB plus 40 % of the rest from the plain range
    assert all(-15.0 <= r <= 10.0 for r in ratios["train"] + ratios["val"])
    plain = build_mixtures(tmp_path / "v4", hours=0.2, seed=4, table=TINY, tts=False, recipe="v4")
    assert plain["recipe"] == "v4"
    plain_ratios = [
        c.meta["music_to_ost_db"]
        for c in load_clips(tmp_path / "v4")
        if c.split == "train" and c.meta["kind"] == "both"
    ]
    assert np.mean(np.array(plain_ratios) >= 0.0) < 0.6


def test_recipe_v7_adds_asterisk_prompts_to_v5_and_they_decode_at_16k():
    v5, v7 = sources.source_table("v5"), sources.source_table("v7")
    added = {p for p in v7["speech"] if p not in v5["speech"]}
    assert added == {f"asterisk-core-sounds-{lang}-g722" for lang in ("en", "es", "fr", "it", "ru")}
    assert {k: {p: g for p, g in v.items() if p not in added} for k, v in v7.items()} == v5
    assert not {p for kind in v7.values() for p in kind} & sources.RESERVED_PACKAGES
    assert sources.RECIPES["v7"]["loud_music"] == sources.RECIPES["v5"]["loud_music"]
    root = fetch_package("asterisk-core-sounds-en-g722")
    prompts = sorted(root.glob(v7["speech"]["asterisk-core-sounds-en-g722"][0]))
    assert len(prompts) > 400
    audio = decode_audio(next(p for p in prompts if p.name == "hello-world.g722"))
    assert 0.5 < len(audio) / 16000 < 5.0  # "hello world", raw G.722 read by PyAV at 16 kHz
    assert 0.01 < float(np.sqrt(np.mean(audio**2))) < 0.5


def test_cache_dir_ignores_an_empty_variable(monkeypatch, tmp_path):
    from vibescope.stream import cache_dir

    monkeypatch.setenv("VIBESCOPE_CACHE", "")
    assert cache_dir() == Path("~/.cache/vibescope").expanduser()
    monkeypatch.setenv("VIBESCOPE_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path


def test_recipe_v8_adds_megaglest_voice_lines_to_v7():
    v7, v8 = sources.source_table("v7"), sources.source_table("v8")
    assert set(v8["speech"]) - set(v7["speech"]) == {"megaglest-data"}
    assert {k: {p: g for p, g in v.items() if p != "megaglest-data"} for k, v in v8.items()} == v7
    globs = v8["speech"]["megaglest-data"]
    assert all(g.endswith(".wav") and ("_ack" in g or "_select" in g) for g in globs)  # voices, not grunts
    assert "megaglest-data" not in sources.RESERVED_PACKAGES


def test_recipe_v10_adds_a_prompt_voice_and_on_hold_music_to_v8():
    v8, v10 = sources.source_table("v8"), sources.source_table("v10")
    assert set(v10["speech"]) - set(v8["speech"]) == {"asterisk-prompt-it-menardi-wav"}
    assert set(v10["music"]) - set(v8["music"]) == {"asterisk-moh-opsound-g722"}
    assert v10["effect"] == v8["effect"]
    assert not {p for kind in v10.values() for p in kind} & sources.RESERVED_PACKAGES


def test_the_cli_offers_every_recipe():
    from vibescope.server.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.choices and "data" in a.choices)
    data = sub.choices["data"]
    mixtures = next(a for a in data._actions if a.choices and "sep-mixtures" in a.choices).choices["sep-mixtures"]
    recipe = next(a for a in mixtures._actions if a.dest == "recipe")
    assert set(recipe.choices) == set(sources.RECIPES) and recipe.default == "v3"
