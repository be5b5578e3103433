"""Audio the separator's data sets make rather than find: speech read by TTS voices (flite,
espeak-ng) and music rendered from MIDI files (fluidsynth), all run from unpacked Debian packages.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import numpy as np

from vibescope.stream import cache_dir
from vibescope.stream.debian import DataError, fetch_package, run_env
from vibescope.stream.separator.sources import Source, split_of
from vibescope.stream.timebase import SAMPLE_RATE

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
    "libsdl2-2.0-0",
    "libpulse0",
    "libasyncns0",
    "libjack-jackd2-0",
    "libinstpatch-1.0-2",
    "libsndfile1",
    "libsamplerate0",
    "libwayland-egl1",
    "libwayland-cursor0",
    "libdecor-0-0",
    "libflac12",
    "libvorbis0a",
    "libvorbisenc2",
    "libopus0",
    "libogg0",
    "libmpg123-0",
    "libmp3lame0",
)


def render_midi(mid: Path, wav: Path) -> bool:
    """Render a MIDI file with the unpacked fluidsynth + FluidR3_GM to a 16 kHz WAV; True on success."""
    try:
        env = run_env(MIDI_PACKAGES[1:2] + RUNTIME_LIBS)
        binary = fetch_package(MIDI_PACKAGES[0]) / "usr/bin/fluidsynth"
        font = fetch_package(MIDI_PACKAGES[2]) / MIDI_SOUNDFONT
    except DataError:
        return False
    wav.parent.mkdir(parents=True, exist_ok=True)
    tmp = wav.with_suffix(".tmp.wav")
    cmd = [
        str(binary),
        "-ni",
        "-q",
        "-g",
        "0.6",
        "-r",
        str(SAMPLE_RATE),
        "-T",
        "wav",
        "-F",
        str(tmp),
        str(font),
        str(mid),
    ]
    try:
        proc = subprocess.run(["timeout", "120", *cmd], env=env, capture_output=True)
    except OSError:
        return False
    if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size < 1000:
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(wav)
    return True


def midi_sources() -> list[Source]:
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


def dialogue_lines(text_root: Path, lang: str) -> list[tuple[str, str]]:
    """``(english, line in lang)`` pairs of fillets-ng's dialogue scripts."""
    pairs: list[tuple[str, str]] = []
    for lua in sorted(text_root.glob(TTS_TEXT[1].format(lang=lang))):
        text = lua.read_text(errors="ignore")
        if lang == "en":
            pairs += [
                (m.group(1), m.group(1))
                for m in re.finditer(r'dialogId\("[^"]*",\s*"[^"]*",\s*"([^"]{12,200})"\)', text)
            ]
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
            lists.append((lang, ", ".join(syll[i : i + 6])))
    theme = ktuberling / "usr/share/ktuberling/sounds/en.soundtheme"
    names = (
        sorted({n.split("_")[-1] for n in re.findall(r'name="([^"]+)"', theme.read_text())}) if theme.exists() else []
    )
    for i in range(0, len(names) - 4, 5):
        lists.append(("en", ", ".join(names[i : i + 5])))
    if len(lists) > ESPEAK_MAX_WORD_LISTS:
        lists = [lists[i] for i in sorted(rng.choice(len(lists), ESPEAK_MAX_WORD_LISTS, replace=False))]
    return lists


def espeak_sources() -> list[Source]:
    """espeak-ng speech (kind ``tts``): dialogue lines in 12 languages and word lists, read by
    varied voices, pitches and speeds. All translations of one line share the split of its
    English text (the split flite's reading of that line has)."""
    try:
        env = run_env(ESPEAK_PACKAGES[2:] + RUNTIME_LIBS)
        binary = fetch_package(ESPEAK_PACKAGES[0]) / "usr/bin/espeak-ng"
        data_parent = next(iter(sorted(fetch_package(ESPEAK_PACKAGES[1]).glob("usr/lib/*-linux-gnu"))))
        text_root = fetch_package(TTS_TEXT[0])
    except (DataError, StopIteration):
        return []
    rng = np.random.default_rng(11)
    jobs: list[tuple[str, str, str]] = []  # (lang, text, split key)
    for lang in ESPEAK_LANGS:
        pairs = dialogue_lines(text_root, lang)
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
            cmd = [
                str(binary),
                f"--path={data_parent}",
                "-v",
                f"{lang}+{variant}",
                "-p",
                str(pitch),
                "-s",
                str(speed),
                "-w",
                str(wav),
                text,
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True)
            if proc.returncode != 0 or not wav.exists():
                wav.unlink(missing_ok=True)
                return sources
        sources.append(Source(key, "tts", wav, split_of(split_key)))
    return sources


def tts_sources() -> list[Source]:
    """Intelligible TTS speech: flite voices reading the English dialogue of fillets-ng."""
    try:
        binary = fetch_package(TTS_PACKAGES[0]) / "usr/bin/flite"
        env = run_env(TTS_PACKAGES[1:])
        text_root = fetch_package(TTS_TEXT[0])
    except DataError:
        return []  # TTS is an extra; real speech is the core
    sentences = [english for english, _ in dialogue_lines(text_root, "en")]
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
            proc = subprocess.run(
                [str(binary), "-voice", voice, "-t", text, "-o", str(wav)], env=env, capture_output=True
            )
            if proc.returncode != 0 or not wav.exists():
                return sources
        # split by sentence, so one sentence never feeds both splits
        sources.append(Source(key, "tts", wav, split_of("tts/" + text)))
    return sources
