"""Mixture data sets on disk: building them from the sources, and loading their clips.

Layout written by :func:`build_mixtures` (all audio 16 kHz mono float32 WAV)::

    DIR/index.json                 build parameters + which source files went to which split
    DIR/<id>/mixture.wav           mixture == music + ost, bit for bit
    DIR/<id>/music.wav             the background music (BGM) stem
    DIR/<id>/ost.wav               the original soundtrack stem: speech, TTS, effects, silences
    DIR/<id>/meta.json             split, kind, music-to-OST level (dB), the source files used

``test=True`` builds from the packages reserved for evaluation only (never train or tune on such
a set).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vibescope.stream.debian import DataError
from vibescope.stream.separator import synthesis
from vibescope.stream.separator.mixing import SourcePool, make_clip
from vibescope.stream.separator.sources import CLIP_SECONDS, RECIPES, discover_sources, source_table
from vibescope.stream.separator.wavio import read_wav, write_wav
from vibescope.stream.timebase import SAMPLE_RATE


def build_mixtures(
    out: str | Path,
    hours: float = 1.5,
    seed: int = 0,
    test: bool = False,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    table: dict | None = None,
    tts: bool = True,
    midi: bool = True,
    recipe: str = "v3",
) -> dict:
    """Write ``round(hours * 900)`` 4-second clips to ``out``; returns the index dict.

    Without ``test``, every tenth clip (``i % 10 == 0``) is a validation clip built only from
    validation source files; with ``test`` every clip is a test clip from reserved packages.
    """
    if hours <= 0:
        raise DataError("--hours must be positive")
    out = Path(out)
    if recipe not in RECIPES:
        raise DataError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    r = RECIPES[recipe]
    if table is None and not test:
        table = source_table(recipe)
    sources = discover_sources(test=test, table=table)
    if not test:  # test sets are recordings from reserved packages only
        if tts:
            sources += synthesis.tts_sources()
            if r["espeak"]:
                sources += synthesis.espeak_sources()
        if midi and r["midi"]:
            sources += synthesis.midi_sources()
    splits = ("test",) if test else ("train", "val")
    pools = {sp: SourcePool([s for s in sources if s.split == sp], r["ost_weights"]) for sp in splits}
    for sp, pool in pools.items():
        if not pool.by_kind.get("music") or not (pool.by_kind.get("speech") or pool.by_kind.get("tts")):
            raise DataError(f"split {sp!r} has no music or no speech sources")
    n_clips = max(1, round(hours * 3600 / CLIP_SECONDS))
    out.mkdir(parents=True, exist_ok=True)
    counts = {sp: 0 for sp in splits}
    for i in progress(range(n_clips)):
        split = "test" if test else ("val" if i % 10 == 0 else "train")
        rng = np.random.default_rng([seed, i, 1 if test else 0])
        # validation clips keep the plain level range, so recipes compare on the same footing
        stems, meta = make_clip(pools[split], rng, loud_music=r.get("loud_music", 0.0) if split == "train" else 0.0)
        clip_id = f"{split}-{i:05d}"
        d = out / clip_id
        d.mkdir(exist_ok=True)
        for name, audio in stems.items():
            write_wav(d / f"{name}.wav", audio)
        meta.update({"id": clip_id, "split": split, "seed": seed, "seconds": CLIP_SECONDS, "sample_rate": SAMPLE_RATE})
        (d / "meta.json").write_text(json.dumps(meta, indent=1))
        counts[split] += 1
    index = {
        "seed": seed,
        "hours": hours,
        "recipe": recipe,
        "test": test,
        "clips": counts,
        "sources": {sp: sorted(s.key for s in sources if s.split == sp) for sp in splits},
    }
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


@dataclass
class Clip:
    id: str
    split: str
    mixture: np.ndarray
    music: np.ndarray
    ost: np.ndarray
    meta: dict


def load_clips(data: str | Path, split: str | None = None) -> list[Clip]:
    """Load every clip of a data directory (optionally one split), sorted by id."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"{data}: no such data directory (build it with `vibescope data sep-mixtures`)")
    clips = []
    for meta_path in sorted(data.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if split not in (None, "all") and meta["split"] != split:
            continue
        d = meta_path.parent
        stems = {k: read_wav(d / f"{k}.wav")[0] for k in ("mixture", "music", "ost")}
        clips.append(Clip(meta["id"], meta["split"], stems["mixture"], stems["music"], stems["ost"], meta))
    if not clips:
        raise DataError(f"{data}: no clips" + (f" in split {split!r}" if split else ""))
    return clips
