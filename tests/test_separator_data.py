"""The mixture builder on a tiny real build (small Debian packages, cached in $VIBESCOPE_CACHE)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stream.separator.data import DataError, build_mixtures, fetch_package, load_clips
from stream.separator.wavio import read_wav

TINY = {
    "music": {"drascula-music": ("usr/share/scummvm/drascula/**/*.ogg",)},
    "speech": {"klettres-data": ("usr/share/klettres/en/alpha/*.ogg", "usr/share/klettres/fr/alpha/*.ogg")},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("sep") / "tiny"
    index = build_mixtures(out, hours=0.02, seed=3, table=TINY, tts=False)
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
            measured = 20 * np.log10(np.sqrt(np.mean(clip.music ** 2)) / np.sqrt(np.mean(clip.ost ** 2)))
            assert abs(measured - clip.meta["music_to_ost_db"]) < 0.01
    assert kinds.get("both", 0) > 0


def test_same_seed_rebuilds_identical_audio(tiny, tmp_path):
    again = tmp_path / "again"
    build_mixtures(again, hours=0.02, seed=3, table=TINY, tts=False)
    for clip_dir in sorted(p for p in tiny[0].iterdir() if p.is_dir())[:5]:
        assert (again / clip_dir.name / "mixture.wav").read_bytes() == (clip_dir / "mixture.wav").read_bytes()
        assert json.loads((again / clip_dir.name / "meta.json").read_text()) == json.loads((clip_dir / "meta.json").read_text())


def test_reserved_packages_are_refused_outside_test_builds():
    with pytest.raises(DataError, match="reserved for evaluation"):
        fetch_package("singularity-music")


def test_nonpositive_hours_is_a_user_error(tmp_path):
    with pytest.raises(DataError):
        build_mixtures(tmp_path / "x", hours=0, table=TINY, tts=False)
