"""Mixture data sets for the BGM/OST separator, built from real recordings in Debian packages.

Layout written by :func:`build_mixtures` (all audio 16 kHz mono float32 WAV)::

    DIR/index.json                 build parameters + which source files went to which split
    DIR/<id>/mixture.wav           mixture == music + ost, bit for bit
    DIR/<id>/music.wav             the background music (BGM) stem
    DIR/<id>/ost.wav               the original soundtrack stem: speech, TTS, effects, silences
    DIR/<id>/meta.json             split, kind, music-to-OST level (dB), the source files used

Packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (no root install)
into ``$VIBESCOPE_CACHE`` (default ``~/.cache/vibescope``); decoded sources are cached there
too, so a rebuild is fast. The split is by *source file* (a hash of package + path): no file
feeds both train and val. ``test=True`` builds from the packages shared/ASSETS.md reserves for
evaluation only (never train or tune on such a set).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import av
import numpy as np

from stream import cache_dir

from .wavio import read_wav, write_wav

SAMPLE_RATE = 16000
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
TTS_PACKAGES = ("flite", "libflite1")
TTS_VOICES = ("awb", "rms", "slt", "kal16")
TTS_TEXT = ("fillets-ng-data", "usr/share/games/fillets-ng/script/*/dialogs_{lang}.lua")  # package, glob per language
TTS_MAX_SENTENCES = 400
# MIDI music: openttd-openmsx's MIDI files rendered with fluidsynth (run from the unpacked package)
# and the FluidR3 General MIDI sound font. The library packages are the ones the binary needs
# beyond a bare Debian 12 system (checked with ldd); all are fetched like the data packages.
MIDI_SOURCE = ("openttd-openmsx", "usr/share/games/openttd/baseset/openmsx/*.mid")
MIDI_PACKAGES = ("fluidsynth", "libfluidsynth3", "fluid-soundfont-gm")
MIDI_SOUNDFONT = "usr/share/sounds/sf2/FluidR3_GM.sf2"
# espeak-ng reading the fillets-ng dialogue lines in several languages, and word lists from the
# klettres/ktuberling sound names. Dutch is left out on purpose: fillets-ng's Dutch lines are the
# transcripts of the evaluation-reserved fillets-ng-data-nl recordings.
ESPEAK_PACKAGES = ("espeak-ng", "espeak-ng-data", "libespeak-ng1", "libpcaudio0", "libsonic0")
ESPEAK_LANGS = ("en", "de", "es", "fr", "it", "pl", "ru", "sv", "cs", "bg", "sl", "eo")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3")
ESPEAK_MAX_PER_LANG = 60
ESPEAK_MAX_WORD_LISTS = 60
RUNTIME_LIBS = (  # shared libraries fluidsynth/espeak-ng need that a bare system lacks
    "libsdl2-2.0-0", "libpulse0", "libasyncns0", "libjack-jackd2-0", "libinstpatch-1.0-2", "libsndfile1",
    "libsamplerate0", "libwayland-egl1", "libwayland-cursor0", "libdecor-0-0", "libflac12", "libvorbis0a",
    "libvorbisenc2", "libopus0", "libogg0", "libmpg123-0", "libmp3lame0",
)


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
ASTERISK_VOICES = {"speech": {f"asterisk-core-sounds-{lang}-g722": ("usr/share/asterisk/sounds/**/*.g722",)
                              for lang in ("en", "es", "fr", "it", "ru")}}
# more actors: MegaGlest's unit voice lines (acknowledge / select: 399 lines, 6 min, seven factions'
# voice actors; CC-BY-SA-3.0); its attack/die/hit sounds are left out (grunts, weapons)
MEGAGLEST_VOICES = {"speech": {"megaglest-data": tuple(
    f"usr/share/games/megaglest/techs/megapack/factions/*/units/*/sounds/*_{what}*.wav" for what in ("ack", "select"))}}
# one more studio speaker (Asterisk's Italian prompts by Paola Menardi, 555 prompts, 25 min, 8 kHz PCM,
# CC-BY-SA-3.0) and on-hold music in the style of added BGM (Asterisk's opsound tracks, 5 tracks,
# 18 min, 16 kHz G.722, CC-BY-SA-3.0)
ASTERISK_MORE = {"speech": {"asterisk-prompt-it-menardi-wav": ("usr/share/asterisk/sounds/it_IT_f_Menardi/**/*.wav",)},
                 "music": {"asterisk-moh-opsound-g722": ("usr/share/asterisk/moh/*.g722",)}}


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


class DataError(RuntimeError):
    """A user-facing failure while building data (bad arguments, apt failure)."""


def fetch_package(name: str) -> Path:
    """Download (once) and unpack (once) a Debian package; returns the unpacked root."""
    if name in RESERVED_PACKAGES and os.environ.get("_VIBESCOPE_ALLOW_RESERVED") != "1":
        raise DataError(f"{name} is reserved for evaluation; only test builds may fetch it")
    root = cache_dir() / "pkgs" / name
    if (root / ".unpacked").exists():
        return root
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        proc = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if proc.returncode != 0 or not found:
            raise DataError(f"apt-get download {name} failed: {proc.stderr.strip()[-400:]}")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    proc = subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataError(f"dpkg -x {found[-1].name} failed: {proc.stderr.strip()[-400:]}")
    (root / ".unpacked").touch()
    return root


def decode_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any file PyAV reads to mono float32 at ``sample_rate``; shape ``(n_samples,)``."""
    chunks: list[np.ndarray] = []
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _cached_decode(path: Path, key: str) -> np.ndarray:
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
    return {kind: {**TRAIN_SOURCES.get(kind, {}), **extra.get(kind, {})} for kind in dict.fromkeys([*TRAIN_SOURCES, *extra])}


def split_of(key: str) -> str:
    bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % VAL_BUCKETS
    return "val" if bucket == 0 else "train"


def discover_sources(test: bool = False, table: dict | None = None, tts: bool = True, midi: bool = True,
                     espeak: bool = True) -> list[Source]:
    """Every source file of the train/val packages (or, with ``test``, the reserved ones).

    ``table`` overrides the package table (kind -> package -> globs), e.g. for a tiny build."""
    table = table or (RESERVED_SOURCES if test else TRAIN_SOURCES)
    sources: list[Source] = []
    seen: set[str] = set()
    for kind, packages in table.items():
        for package, patterns in packages.items():
            if test:
                os.environ["_VIBESCOPE_ALLOW_RESERVED"] = "1"
            try:
                root = fetch_package(package)
            finally:
                os.environ.pop("_VIBESCOPE_ALLOW_RESERVED", None)
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
    if tts and not test:
        sources += _tts_sources()
        if espeak:
            sources += _espeak_sources()
    if midi and not test:
        sources += _midi_sources()
    return sources


def _run_env(packages: Iterable[str]) -> dict[str, str]:
    """Environment to run a binary from unpacked packages: their library dirs on LD_LIBRARY_PATH."""
    dirs = []
    for name in packages:
        root = fetch_package(name)
        for d in sorted(root.glob("usr/lib/*-linux-gnu")) + sorted(root.glob("usr/lib/*-linux-gnu/pulseaudio")):
            dirs.append(str(d))
    return dict(os.environ, LD_LIBRARY_PATH=":".join(dirs + [os.environ.get("LD_LIBRARY_PATH", "")]))


def render_midi(mid: Path, wav: Path) -> bool:
    """Render a MIDI file with the unpacked fluidsynth + FluidR3_GM to a 16 kHz WAV; True on success."""
    try:
        env = _run_env(MIDI_PACKAGES[1:2] + RUNTIME_LIBS)
        binary = fetch_package(MIDI_PACKAGES[0]) / "usr/bin/fluidsynth"
        font = fetch_package(MIDI_PACKAGES[2]) / MIDI_SOUNDFONT
    except DataError:
        return False
    wav.parent.mkdir(parents=True, exist_ok=True)
    tmp = wav.with_suffix(".tmp.wav")
    cmd = [str(binary), "-ni", "-q", "-g", "0.6", "-r", str(SAMPLE_RATE), "-T", "wav", "-F", str(tmp), str(font), str(mid)]
    try:
        proc = subprocess.run(["timeout", "120", *cmd], env=env, capture_output=True)
    except OSError:
        return False
    if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size < 1000:
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(wav)
    return True


def _midi_sources() -> list[Source]:
    """openttd-openmsx MIDI music rendered to audio (kind ``music``; split by MIDI file)."""
    try:
        root = fetch_package(MIDI_SOURCE[0])
    except DataError:
        return []  # MIDI renders are an extra, like TTS
    out_dir = cache_dir() / "midi"
    sources = []
    for mid in sorted(root.glob(MIDI_SOURCE[1])):
        key = f"{MIDI_SOURCE[0]}/{mid.relative_to(root).as_posix()}"
        wav = out_dir / (hashlib.sha1(key.encode()).hexdigest()[:16] + "_" + mid.stem + ".wav")
        if not wav.exists() and not render_midi(mid, wav):
            continue  # this file did not render (fluidsynth missing or failed): skip it
        sources.append(Source(key, "music", wav, split_of(key)))
    return sources


def _dialogue_lines(text_root: Path, lang: str) -> list[tuple[str, str]]:
    """``(english, line in lang)`` pairs of fillets-ng's dialogue scripts."""
    pairs: list[tuple[str, str]] = []
    for lua in sorted(text_root.glob(TTS_TEXT[1].format(lang=lang))):
        text = lua.read_text(errors="ignore")
        if lang == "en":
            pairs += [(m.group(1), m.group(1)) for m in re.finditer(r'dialogId\("[^"]*",\s*"[^"]*",\s*"([^"]{12,200})"\)', text)]
        else:
            pat = r'dialogId\("[^"]*",\s*"[^"]*",\s*"([^"]{12,200})"\)\s*dialogStr\("([^"]{12,200})"\)'
            pairs += [(m.group(1), m.group(2)) for m in re.finditer(pat, text)]
    return sorted(set(pairs))


def _word_lists(rng: np.random.Generator) -> list[tuple[str, str]]:
    """``(language, text)``: klettres syllables (per language) and ktuberling object names (en)."""
    lists: list[tuple[str, str]] = []
    try:
        klettres, ktuberling = fetch_package("klettres-data"), fetch_package("ktuberling-data")
    except DataError:
        return lists
    for lang in ESPEAK_LANGS:
        syll = sorted({p.stem for p in klettres.glob(f"usr/share/klettres/{lang}/syllab/*.ogg")})
        for i in range(0, len(syll) - 5, 6):
            lists.append((lang, ", ".join(syll[i:i + 6])))
    theme = ktuberling / "usr/share/ktuberling/sounds/en.soundtheme"
    names = sorted({n.split("_")[-1] for n in re.findall(r'name="([^"]+)"', theme.read_text())}) if theme.exists() else []
    for i in range(0, len(names) - 4, 5):
        lists.append(("en", ", ".join(names[i:i + 5])))
    if len(lists) > ESPEAK_MAX_WORD_LISTS:
        lists = [lists[i] for i in sorted(rng.choice(len(lists), ESPEAK_MAX_WORD_LISTS, replace=False))]
    return lists


def _espeak_sources() -> list[Source]:
    """espeak-ng speech (kind ``tts``): dialogue lines in 12 languages and word lists, read by
    varied voices, pitches and speeds. All translations of one line share the split of its
    English text (the split flite's reading of that line has)."""
    try:
        env = _run_env(ESPEAK_PACKAGES[2:] + RUNTIME_LIBS)
        binary = fetch_package(ESPEAK_PACKAGES[0]) / "usr/bin/espeak-ng"
        data_parent = next(iter(sorted(fetch_package(ESPEAK_PACKAGES[1]).glob("usr/lib/*-linux-gnu"))))
        text_root = fetch_package(TTS_TEXT[0])
    except (DataError, StopIteration):
        return []
    rng = np.random.default_rng(11)
    jobs: list[tuple[str, str, str]] = []  # (lang, text, split key)
    for lang in ESPEAK_LANGS:
        pairs = _dialogue_lines(text_root, lang)
        if len(pairs) > ESPEAK_MAX_PER_LANG:
            pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), ESPEAK_MAX_PER_LANG, replace=False))]
        jobs += [(lang, line, "tts/" + english) for english, line in pairs]
    jobs += [(lang, text, f"words/{lang}/{text}") for lang, text in _word_lists(rng)]
    out_dir = cache_dir() / "espeak"
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = []
    for lang, text, split_key in jobs:
        h = int(hashlib.sha1(f"{lang}/{text}".encode()).hexdigest(), 16)
        variant = ESPEAK_VARIANTS[h % len(ESPEAK_VARIANTS)]
        pitch, speed = 30 + (h >> 8) % 41, 135 + (h >> 16) % 56
        key = f"espeak/{lang}+{variant}/{hashlib.sha1(text.encode()).hexdigest()[:16]}"
        wav = out_dir / (key.replace("/", "_").replace("+", "_") + f"_p{pitch}s{speed}.wav")
        if not wav.exists():
            cmd = [str(binary), f"--path={data_parent}", "-v", f"{lang}+{variant}", "-p", str(pitch), "-s", str(speed), "-w", str(wav), text]
            proc = subprocess.run(cmd, env=env, capture_output=True)
            if proc.returncode != 0 or not wav.exists():
                wav.unlink(missing_ok=True)
                return sources
        sources.append(Source(key, "tts", wav, split_of(split_key)))
    return sources


def _tts_sources() -> list[Source]:
    """Intelligible TTS speech: flite voices reading the English dialogue of fillets-ng."""
    try:
        binary = fetch_package(TTS_PACKAGES[0]) / "usr/bin/flite"
        env = _run_env(TTS_PACKAGES[1:])
        text_root = fetch_package(TTS_TEXT[0])
    except DataError:
        return []  # TTS is an extra; real speech is the core
    sentences = [english for english, _ in _dialogue_lines(text_root, "en")]
    rng = np.random.default_rng(7)
    if len(sentences) > TTS_MAX_SENTENCES:
        sentences = [sentences[i] for i in sorted(rng.choice(len(sentences), TTS_MAX_SENTENCES, replace=False))]
    out_dir = cache_dir() / "tts"
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = []
    for i, text in enumerate(sentences):
        voice = TTS_VOICES[i % len(TTS_VOICES)]
        key = f"tts/{voice}/{hashlib.sha1(text.encode()).hexdigest()[:16]}"
        wav = out_dir / (key.replace("/", "_") + ".wav")
        if not wav.exists():
            proc = subprocess.run([str(binary), "-voice", voice, "-t", text, "-o", str(wav)], env=env, capture_output=True)
            if proc.returncode != 0 or not wav.exists():
                return sources
        # split by sentence, so one sentence never feeds both splits
        sources.append(Source(key, "tts", wav, split_of("tts/" + text)))
    return sources


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


class _Pool:
    """Decoded sources of one split, loaded lazily and kept in memory."""

    def __init__(self, sources: list[Source], ost_weights: dict[str, float] | None = None) -> None:
        self.ost_weights = ost_weights or RECIPES["v3"]["ost_weights"]
        self.by_kind: dict[str, list[Source]] = {}
        for s in sources:
            self.by_kind.setdefault(s.kind, []).append(s)
        self._audio: dict[str, np.ndarray] = {}

    def audio(self, src: Source) -> np.ndarray:
        if src.key not in self._audio:
            self._audio[src.key] = _cached_decode(src.path, src.key)
        return self._audio[src.key]


def _music_track(pool: _Pool, rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    tracks = pool.by_kind["music"]
    for _ in range(20):
        src = tracks[rng.integers(len(tracks))]
        audio = pool.audio(src)
        if len(audio) < n:
            continue
        start = int(rng.integers(0, len(audio) - n + 1))
        seg = audio[start:start + n].copy()
        if _rms(seg) > 3e-3:  # skip silent intros / endings
            return seg, f"{src.key}@{start / SAMPLE_RATE:.2f}"
    raise DataError("could not find a non-silent music segment")


def _ost_track(pool: _Pool, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
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
            clip = clip[off:off + n - t]
        gain = 10 ** (rng.uniform(-26.0, -14.0) / 20) / _rms(clip)
        out[t:t + len(clip)] += clip * gain
        used.append(src.key)
        t += len(clip) + int(rng.uniform(0.05, 1.2) * SAMPLE_RATE)
    return out, used


def make_clip(pool: _Pool, rng: np.random.Generator, seconds: float = CLIP_SECONDS,
              loud_music: float = 0.0) -> tuple[dict[str, np.ndarray], dict]:
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
    sources = discover_sources(test=test, table=table, tts=tts, midi=midi and r["midi"], espeak=r["espeak"])
    splits = ("test",) if test else ("train", "val")
    pools = {sp: _Pool([s for s in sources if s.split == sp], r["ost_weights"]) for sp in splits}
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
