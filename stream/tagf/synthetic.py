"""Controlled benchmark: simulated cue trajectories in the front-ends' feature space.

Each sequence has a latent affect trajectory (valence, arousal). It is expressed through a face
(FER class probabilities + landmark geometry, absent at times) and a voice (loudness, pitch,
pitch variability, log-mel bands, silent at times), each with its own *expressivity* that switches
between low and high every few seconds, independently: at any moment the face, the voice, both or
neither carry the affect (weak complementarity). Music comes and goes as a nuisance that raises
loudness and fills the mel bands. The ground truth is the teacher (``vibescope.stream.tagf.teacher``) applied
to the clean cues: a known temporal function of the audio and visual cues. Models see noisy
observations of those cues (FER jitter, VAD and pitch noise), in exactly the layout of
``vibescope.stream.tagf.features``.

Misalignment: the audio feature stream is delayed by ``misalign_s`` relative to video and labels.
Modality dropouts: 10 % of sequences have no video, 10 % no audio, and faces/speech come and go.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vibescope.stream.tagf import features as F
from vibescope.stream.tagf.teacher import EXPRESSION_VA_ARRAY, teacher_trajectory

FPS = 10
MISALIGN_LEVELS_S = (0.0, 0.5, 1.0, 2.0)
N_CLASSES = EXPRESSION_VA_ARRAY.shape[0]
_NEUTRAL = 6


@dataclass
class SyntheticBatch:
    visual: np.ndarray  # (B, T, VISUAL_DIM) float32
    audio: np.ndarray  # (B, T, AUDIO_DIM) float32
    target: np.ndarray  # (B, T, 2) float32 valence, arousal


def _segments(rng: np.random.Generator, n: int, mean_on_s: float, mean_off_s: float, p_start: float) -> np.ndarray:
    """Alternating on/off segments with exponential durations (seconds) → (n,) float 0/1."""
    out = np.zeros(n, np.float32)
    t, on = 0, rng.random() < p_start
    while t < n:
        d = max(1, int(rng.exponential((mean_on_s if on else mean_off_s) * FPS)))
        out[t : t + d] = float(on)
        t += d
        on = not on
    return out


def _piecewise(rng: np.random.Generator, n: int, mean_s: float, values: np.ndarray, probs: np.ndarray) -> np.ndarray:
    out = np.zeros(n, np.float32)
    t = 0
    while t < n:
        d = max(2, int(rng.exponential(mean_s * FPS)))
        out[t : t + d] = rng.choice(values, p=probs)
        t += d
    return out


def _smooth(x: np.ndarray, tau_frames: float) -> np.ndarray:
    a = 1.0 - np.exp(-1.0 / tau_frames)
    out = np.empty_like(x)
    acc = x[0]
    for i in range(x.shape[0]):
        acc = acc + a * (x[i] - acc)
        out[i] = acc
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


MAX_MISALIGN_FRAMES = int(max(MISALIGN_LEVELS_S) * FPS)


def simulate_sequence(
    rng: np.random.Generator,
    n_frames: int,
    misalign_frames: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sequence → visual (T, 12), audio (T, 25), target (T, 2); audio delayed by ``misalign_frames``.

    The same ``rng`` state gives the same media at every delay up to ``MAX_MISALIGN_FRAMES``.
    """
    if not 0 <= misalign_frames <= MAX_MISALIGN_FRAMES:
        raise ValueError(f"misalignment must be within 0..{MAX_MISALIGN_FRAMES} frames")
    n = n_frames + MAX_MISALIGN_FRAMES
    # latent affect: episodes around random points of the V/A plane, smoothed (~1 s)
    va = np.zeros((n, 2), np.float32)
    t = 0
    while t < n:
        d = max(5, int(rng.exponential(4.0 * FPS)))
        va[t : t + d] = np.clip(rng.normal(0, 0.55, 2), -1, 1)
        t += d
    va = _smooth(va, 8.0)
    # face channel
    has_video = rng.random() > 0.1
    face = _segments(rng, n, 6.0, 1.5, 0.85) if has_video else np.zeros(n, np.float32)
    e_face = _piecewise(rng, n, 3.0, np.array([0.1, 0.5, 1.0]), np.array([0.35, 0.25, 0.4]))
    d2 = ((e_face[:, None, None] * va[:, None, :] - EXPRESSION_VA_ARRAY[None]) ** 2).sum(-1)  # (n, 7)
    p_true = _softmax(-d2 / 0.08)
    jitter = rng.normal(0, 0.7, (n, N_CLASSES))
    p_obs = _softmax(1.6 * (np.log(p_true + 1e-4) + jitter))
    # voice channel (speaker-relative z-scores of loudness, pitch level, pitch variability)
    has_audio = rng.random() > 0.1
    speaking = _segments(rng, n, 3.0, 1.5, 0.7) if has_audio else np.zeros(n, np.float32)
    e_voice = _piecewise(rng, n, 3.0, np.array([0.1, 0.5, 1.0]), np.array([0.35, 0.25, 0.4]))
    wander = _smooth(rng.normal(0, 0.6, (n, 3)).astype(np.float32), 10.0)
    z = np.stack([1.3 * va[:, 1], 1.0 * va[:, 1] + 0.4 * va[:, 0], 0.6 * va[:, 1] + 1.0 * va[:, 0]], -1)
    z = (e_voice[:, None] * z + 0.3 * wander).astype(np.float32)
    target = teacher_trajectory(p_true, face, z, speaking)

    # observed visual features
    vis = np.zeros((n, F.VISUAL_DIM), np.float32)
    vis[:, 0] = face
    vis[:, 1:8] = p_obs * face[:, None]
    person_mw = rng.normal(0, 0.04)
    vis[:, 8] = (-0.05 + person_mw + 0.22 * p_obs[:, 3] + 0.05 * p_obs[:, 5] + rng.normal(0, 0.015, n)) * face
    vis[:, 9] = (rng.normal(0, 0.05) + 0.1 * p_obs[:, 5] + rng.normal(0, 0.02, n)) * face
    vis[:, 10] = (_smooth(rng.normal(0, 0.08, n).astype(np.float32), 5.0)) * face
    vis[:, 11] = (
        np.clip(rng.uniform(0.15, 0.7) + _smooth(rng.normal(0, 0.02, n).astype(np.float32), 10.0), 0.05, 1) * face
    )

    # observed audio features
    aud = np.zeros((n, F.AUDIO_DIM), np.float32)
    if has_audio:
        music = _segments(rng, n, 5.0, 5.0, 0.4) if rng.random() < 0.5 else np.zeros(n, np.float32)
        music_db = rng.uniform(-38, -22) + rng.normal(0, 1.0, n)
        speech_db = -28.0 + 5.0 * z[:, 0] + rng.normal(0, 1.5, n)
        floor_db = rng.uniform(-75, -55)
        power = speaking * 10 ** (speech_db / 10) + music * 10 ** (music_db / 10) + 10 ** (floor_db / 10)
        loud_db = 10 * np.log10(power)
        vad = np.clip(
            np.where(speaking > 0, rng.beta(8, 1.5, n), rng.beta(1, 12, n)) - 0.25 * music * rng.random(n), 0, 1
        )
        base_st = rng.uniform(-6, 5)  # speaker's pitch relative to 160 Hz, semitones
        f0_st = base_st + 2.0 * z[:, 1] + rng.normal(0, 0.7, n)
        voiced = speaking * np.clip(rng.normal(0.65, 0.15, n), 0, 1)
        aud[:, 0] = 1.0
        aud[:, 1] = vad
        aud[:, 2] = (np.maximum(loud_db, -100) - F.LOUD_REF_DB) / F.LOUD_SCALE_DB
        aud[:, 3] = voiced
        aud[:, 4] = np.where(voiced > 0.1, f0_st / 12.0, 0.0)
        var_st = np.clip(2.5 + 1.2 * z[:, 2] + rng.normal(0, 0.4, n), 0.2, None)
        aud[:, 5] = np.where(speaking > 0, var_st / F.F0_VAR_SCALE_ST, 0.0)
        if rng.random() < 0.6:  # separator output available
            aud[:, 6] = 1.0
            aud[:, 7] = np.clip(music * rng.beta(6, 1.5, n) + (1 - music) * rng.beta(1, 10, n), 0, 1)
            aud[:, 8] = np.where(
                music > 0, (music_db - F.LOUD_REF_DB) / F.LOUD_SCALE_DB, (floor_db - F.LOUD_REF_DB) / F.LOUD_SCALE_DB
            )
        bands = np.arange(F.N_BANDS)[None, :]
        tilt = (1.6 - 0.35 * z[:, 0])[:, None]
        speech_band_db = speech_db[:, None] - 4.0 - 2.0 * np.abs(bands - 3) - tilt * bands
        music_shape = rng.normal(0, 2.0, F.N_BANDS)[None, :] - 0.9 * bands
        music_band_db = music_db[:, None] - 6.0 + music_shape
        pw = (
            speaking[:, None] * 10 ** (speech_band_db / 10)
            + music[:, None] * 10 ** (music_band_db / 10)
            + 10 ** ((floor_db - 8) / 10)
        )
        mel_db = 10 * np.log10(pw) + rng.normal(0, 1.0, pw.shape)
        aud[:, 9:] = (np.maximum(mel_db, -100) - F.MEL_REF_DB) / F.MEL_SCALE_DB
    m0, m = MAX_MISALIGN_FRAMES, misalign_frames
    return vis[m0:], aud[m0 - m : m0 - m + n_frames], target[m0:]


def make_batch(seed: int, batch: int, n_frames: int, misalign_s: float = 0.0) -> SyntheticBatch:
    """``batch`` sequences from one seed (deterministic)."""
    rng = np.random.default_rng(seed)
    m = int(round(misalign_s * FPS))
    vs, as_, ts = zip(*(simulate_sequence(rng, n_frames, m) for _ in range(batch)), strict=False)
    return SyntheticBatch(np.stack(vs), np.stack(as_), np.stack(ts))


def test_set(misalign_s: float, n_sequences: int = 48, n_frames: int = 300, seed: int = 10_000) -> SyntheticBatch:
    """The benchmark's fixed test set at one misalignment level. The same seed at every level, so
    the levels differ only by the audio delay."""
    return make_batch(seed, n_sequences, n_frames, misalign_s)
