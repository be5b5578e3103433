"""Where the separator's training and test audio comes from: Debian packages' recordings by kind
(music, speech, effects), the builder recipes that add sources, and the split of every source file.

The split is by *source file* (a hash of package + path): no file feeds both train and val.
Test sets come only from packages reserved for evaluation (``vibescope.stream.debian``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from vibescope.stream import cache_dir
from vibescope.stream.debian import fetch_package
from vibescope.stream.source import decode_audio

CLIP_SECONDS = 4.0
VAL_BUCKETS = 10  # one source file in ten goes to validation

# kind -> package -> glob patterns (relative to the unpacked package root)
TRAIN_SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "music": {
        "wesnoth-1.16-music": ("**/*.ogg",),
        "warzone2100-music": ("**/*.opus",),
        "drascula-music": ("**/*.ogg",),
        "fillets-ng-data": ("usr/share/games/fillets-ng/music/*.ogg",),
    },
    "speech": {
        "fillets-ng-data-cs": ("**/*.ogg",),
        "fillets-ng-data": ("usr/share/games/fillets-ng/sound/*/en/*.ogg",),
        "klettres-data": ("**/*.ogg",),
        "ktuberling-data": ("**/sounds/**/*.ogg", "**/sounds/**/*.wav", "**/sounds/**/*.opus"),
    },
    "effect": {
        "fillets-ng-data": ("usr/share/games/fillets-ng/sound/share/*.ogg",),
    },
}
# Reserved for evaluation (shared/ASSETS.md): only ever used by ``test=True`` builds.
RESERVED_SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "music": {
        "singularity-music": ("**/*.ogg",),
        "planetblupi-music-ogg": ("**/*.ogg",),
    },
    "speech": {
        "fillets-ng-data-nl": ("**/*.ogg",),
        "codec2-examples": ("usr/share/codec2/wav/*.wav",),
    },
    "effect": {},
}
RESERVED_PACKAGES = frozenset(p for kinds in RESERVED_SOURCES.values() for p in kinds)
# Builder recipes. "v3" (default) adds the MIDI renders and espeak-ng speech and draws the OST as
# speech 0.5 / TTS 0.3 / effects 0.2; "v2" is the builder that made the v1/v2 training and
# validation sets (flite is the only TTS, no MIDI, 0.6 / 0.2 / 0.2): it rebuilds those bit for bit.
# Each later recipe is the one before it with more sources (kind -> package -> globs) or another
# option: v4 = v3 + HEDGEWARS_VOICES; v5 = v4 + loud_music; v7 = v5 + ASTERISK_VOICES;
# v8 = v7 + MEGAGLEST_VOICES; v10 = v8 + ASTERISK_MORE.
# more real voices: hedgewars-data's 15 voice packs (839 lines, 15 min; English, Spanish, Polish,
# Russian, Ukrainian; GFDL-1.3), speakers none of the other packages has
HEDGEWARS_VOICES = {"speech": {"hedgewars-data": ("usr/share/games/hedgewars/Data/Sounds/voices/*/*.ogg",)}}
# clean studio speech: Asterisk's core voice prompts, G.722 (16 kHz wideband), 2831 prompts, about
# 2.4 h, five speakers in English, Spanish, French, Italian and Russian (CC-BY-SA-3.0 / CC-BY-3.0)
ASTERISK_VOICES = {
    "speech": {
        f"asterisk-core-sounds-{lang}-g722": ("usr/share/asterisk/sounds/**/*.g722",)
        for lang in ("en", "es", "fr", "it", "ru")
    }
}
# more actors: MegaGlest's unit voice lines (acknowledge / select: 399 lines, 6 min, seven factions'
# voice actors; CC-BY-SA-3.0); its attack/die/hit sounds are left out (grunts, weapons)
MEGAGLEST_VOICES = {
    "speech": {
        "megaglest-data": tuple(
            f"usr/share/games/megaglest/techs/megapack/factions/*/units/*/sounds/*_{what}*.wav"
            for what in ("ack", "select")
        )
    }
}
# one more studio speaker (Asterisk's Italian prompts by Paola Menardi, 555 prompts, 25 min, 8 kHz PCM,
# CC-BY-SA-3.0) and on-hold music in the style of added BGM (Asterisk's opsound tracks, 5 tracks,
# 18 min, 16 kHz G.722, CC-BY-SA-3.0)
ASTERISK_MORE = {
    "speech": {"asterisk-prompt-it-menardi-wav": ("usr/share/asterisk/sounds/it_IT_f_Menardi/**/*.wav",)},
    "music": {"asterisk-moh-opsound-g722": ("usr/share/asterisk/moh/*.g722",)},
}


def _extend(base: dict, sources: dict | None = None, **options) -> dict:
    """Recipe ``base`` with more extra sources (kind -> package -> globs, after its own) and options."""
    extra = {kind: dict(packages) for kind, packages in base.get("extra_sources", {}).items()}
    for kind, packages in (sources or {}).items():
        extra[kind] = {**extra.get(kind, {}), **packages}
    return {**base, **({"extra_sources": extra} if extra else {}), **options}


_V3 = {"midi": True, "espeak": True, "ost_weights": {"speech": 0.5, "tts": 0.3, "effect": 0.2}}
_V4 = _extend(_V3, HEDGEWARS_VOICES)
_V5 = _extend(_V4, loud_music=0.3)  # more mixtures where the music drowns the speech (training clips only)
_V7 = _extend(_V5, ASTERISK_VOICES)
_V8 = _extend(_V7, MEGAGLEST_VOICES)
RECIPES: dict[str, dict] = {
    "v10": _extend(_V8, ASTERISK_MORE),
    "v8": _V8,
    "v7": _V7,
    "v5": _V5,
    "v4": _V4,
    "v3": _V3,
    "v2": {"midi": False, "espeak": False, "ost_weights": {"speech": 0.6, "tts": 0.2, "effect": 0.2}},
}


def cached_decode(path: Path, key: str) -> np.ndarray:
    """Decoded audio, cached as int16-scaled .npy (peak-normalised to 0.9)."""
    target = cache_dir() / "decoded" / (hashlib.sha1(key.encode()).hexdigest() + ".npy")
    if target.exists():
        return np.load(target).astype(np.float32) / 32767.0
    try:
        audio = decode_audio(path)
    except (av.FFmpegError, UnicodeDecodeError, IndexError):
        audio = np.zeros(0, np.float32)  # undecodable source: skipped by the builder
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0:
        audio = audio * (0.9 / peak)
    target.parent.mkdir(parents=True, exist_ok=True)
    quantised = np.round(audio * 32767.0).astype(np.int16)
    tmp = target.with_suffix(".tmp.npy")
    np.save(tmp, quantised)
    tmp.replace(target)
    return quantised.astype(np.float32) / 32767.0  # same values as a cache hit: reproducible


@dataclass(frozen=True)
class Source:
    """One source file: ``key`` is ``package/relative/path`` (the unit of the split)."""

    key: str
    kind: str  # "music" | "speech" | "tts" | "effect"
    path: Path
    split: str  # "train" | "val" | "test"


def source_table(recipe: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """The packages a recipe's train/validation sets draw from (kind -> package -> globs)."""
    extra = RECIPES[recipe].get("extra_sources", {})
    return {
        kind: {**TRAIN_SOURCES.get(kind, {}), **extra.get(kind, {})} for kind in dict.fromkeys([*TRAIN_SOURCES, *extra])
    }


def split_of(key: str) -> str:
    bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % VAL_BUCKETS
    return "val" if bucket == 0 else "train"


def discover_sources(test: bool = False, table: dict | None = None) -> list[Source]:
    """Every recorded source file of the train/val packages (or, with ``test``, the reserved ones);
    the synthesized ones are in :mod:`vibescope.stream.separator.synthesis`.

    ``table`` overrides the package table (kind -> package -> globs), e.g. for a tiny build."""
    table = table or (RESERVED_SOURCES if test else TRAIN_SOURCES)
    sources: list[Source] = []
    seen: set[str] = set()
    for kind, packages in table.items():
        for package, patterns in packages.items():
            root = fetch_package(package, allow_reserved=test)
            files = sorted({p for pat in patterns for p in root.glob(pat) if p.is_file() and not p.is_symlink()})
            for path in files:
                # packages ship the same recording under several names (e.g. one copy per
                # language): keep one, so no recording can land in both splits
                digest = hashlib.sha1(path.read_bytes()).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                key = f"{package}/{path.relative_to(root).as_posix()}"
                sources.append(Source(key, kind, path, "test" if test else split_of(key)))
    return sources
