"""Mixtures for the separator: music and an original soundtrack (speech, TTS, effects, silences)
laid out on a timeline, coloured by random EQ, and mixed at a random music-to-OST level."""

from __future__ import annotations

import numpy as np

from vibescope.stream.debian import DataError
from vibescope.stream.separator.sources import CLIP_SECONDS, RECIPES, Source, cached_decode
from vibescope.stream.timebase import SAMPLE_RATE


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def random_eq(x: np.ndarray, rng: np.random.Generator, max_db: float) -> np.ndarray:
    """A random smooth EQ curve (tilt + one bell), applied in the frequency domain."""
    n = len(x)
    spec = np.fft.rfft(x)
    f = np.linspace(0.0, 1.0, len(spec))
    tilt = rng.uniform(-max_db, max_db) * (f - 0.5)
    centre, width = rng.uniform(0.02, 0.6), rng.uniform(0.03, 0.2)
    bell = rng.uniform(-max_db, max_db) * np.exp(-0.5 * ((f - centre) / width) ** 2)
    return np.fft.irfft(spec * 10 ** ((tilt + bell) / 20), n).astype(np.float32)


class SourcePool:
    """Decoded sources of one split, loaded lazily and kept in memory."""

    def __init__(self, sources: list[Source], ost_weights: dict[str, float] | None = None) -> None:
        self.ost_weights = ost_weights or RECIPES["v3"]["ost_weights"]
        self.by_kind: dict[str, list[Source]] = {}
        for s in sources:
            self.by_kind.setdefault(s.kind, []).append(s)
        self._audio: dict[str, np.ndarray] = {}

    def audio(self, src: Source) -> np.ndarray:
        if src.key not in self._audio:
            self._audio[src.key] = cached_decode(src.path, src.key)
        return self._audio[src.key]


def _music_track(pool: SourcePool, rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    tracks = pool.by_kind["music"]
    for _ in range(20):
        src = tracks[rng.integers(len(tracks))]
        audio = pool.audio(src)
        if len(audio) < n:
            continue
        start = int(rng.integers(0, len(audio) - n + 1))
        seg = audio[start : start + n].copy()
        if _rms(seg) > 3e-3:  # skip silent intros / endings
            return seg, f"{src.key}@{start / SAMPLE_RATE:.2f}"
    raise DataError("could not find a non-silent music segment")


def _ost_track(pool: SourcePool, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
    """Speech (real or TTS) and effects laid out on a timeline, with silences between them."""
    out = np.zeros(n, np.float32)
    used: list[str] = []
    t = int(rng.uniform(0.0, 0.8) * SAMPLE_RATE)
    kinds = [k for k in ("speech", "tts", "effect") if pool.by_kind.get(k)]
    weights = np.array([pool.ost_weights[k] for k in kinds])
    while t < n - SAMPLE_RATE // 4:
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        items = pool.by_kind[kind]
        src = items[rng.integers(len(items))]
        clip = pool.audio(src)
        if len(clip) < SAMPLE_RATE // 10 or _rms(clip) < 1e-4:
            t += SAMPLE_RATE // 10
            continue
        if len(clip) > n - t:
            off = int(rng.integers(0, len(clip) - (n - t) + 1)) if kind == "effect" else 0
            clip = clip[off : off + n - t]
        gain = 10 ** (rng.uniform(-26.0, -14.0) / 20) / _rms(clip)
        out[t : t + len(clip)] += clip * gain
        used.append(src.key)
        t += len(clip) + int(rng.uniform(0.05, 1.2) * SAMPLE_RATE)
    return out, used


def make_clip(
    pool: SourcePool, rng: np.random.Generator, seconds: float = CLIP_SECONDS, loud_music: float = 0.0
) -> tuple[dict[str, np.ndarray], dict]:
    """One mixture: ``({"mixture", "music", "ost"} float32 (n,), meta)``. With ``loud_music`` > 0,
    that fraction of the clips with both stems draws the music level from 0…+10 dB over the OST
    instead of −15…+10 dB (0: the same random draws as before the option existed)."""
    n = int(seconds * SAMPLE_RATE)
    r = rng.random()
    kind = "both" if r < 0.7 else ("music_only" if r < 0.85 else "ost_only")
    music = np.zeros(n, np.float32)
    ost = np.zeros(n, np.float32)
    meta: dict = {"kind": kind}
    if kind != "ost_only":
        music, meta["music_source"] = _music_track(pool, rng, n)
        music = random_eq(music, rng, 9.0)
    if kind != "music_only":
        ost, meta["ost_sources"] = _ost_track(pool, rng, n)
        ost = random_eq(ost, rng, 6.0)
    if kind == "both":
        loud = loud_music > 0 and rng.random() < loud_music
        ratio_db = float(rng.uniform(0.0, 10.0) if loud else rng.uniform(-15.0, 10.0))  # music-to-OST level
        music *= (_rms(ost) / _rms(music)) * 10 ** (ratio_db / 20)
        meta["music_to_ost_db"] = round(ratio_db, 3)
    mixture = music + ost
    gain = 10 ** (rng.uniform(-35.0, -15.0) / 20) / _rms(mixture)
    peak = float(np.abs(mixture).max()) * gain
    if peak > 0.99:
        gain *= 0.99 / peak
    music = (music * gain).astype(np.float32)
    ost = (ost * gain).astype(np.float32)
    mixture = music + ost  # float32 sum: bit-exact with the stems written to disk
    meta["mixture_rms_db"] = round(20 * np.log10(_rms(mixture)), 3)
    return {"mixture": mixture, "music": music, "ost": ost}, meta
