"""The teacher: a documented mapping from expression classes and vocal cues to valence/arousal.

No human-rated valence/arousal data can be had for this project (Aff-Wild2, AffectNet, RECOLA,
SEWA all need a licence and a download). The shipped TAGF therefore learns from trajectories of
simulated cues labelled by this mapping. It is a *prior* with a documented basis, not a measurement:

Face (``EXPRESSION_VA``): each FER class gets a point in the valence/arousal plane placed in the
quadrant that the circumplex model gives it (Russell 1980, "A circumplex model of affect",
J. Pers. Soc. Psychol. 39(6):1161–1178: happy/pleased positive valence, moderate arousal;
angry/afraid negative valence, high arousal; sad/depressed negative valence, low arousal;
astonished/surprised high arousal, near-neutral valence). AffectNet's annotation protocol
(Mollahosseini, Hasani, Mahoor 2017, IEEE Trans. Affective Computing, arXiv 1708.03985, §3.2)
restricts each category to a region; the one region we could read, happy: valence in (0, 1],
arousal in [−0.2, 0.5], contains our happy point. The exact coordinates are ours, not copied
from a table; the face estimate is the probability-weighted mean of the class points.

Voice (``vocal_va``): in the review of Juslin & Laukka 2003 ("Communication of emotions in vocal
expression and music performance", Psychol. Bull. 129(5):770–814) high-arousal emotions (anger,
fear, joy) go with higher intensity, higher mean F0 and larger F0 variability, low-arousal ones
(sadness, tenderness) with the opposite; valence is conveyed far less reliably by the voice. Our
vocal mapping follows those directions with gains of our choosing: arousal from loudness, pitch
level and pitch variability (speaker-relative z-scores); a weak valence term from pitch variability
minus shouting.

Fusion over time (``teacher_trajectory``): evidence-weighted mean of the face and voice estimates
per frame (a neutral face or a flat voice is weak evidence), then exponential smoothing with time
constants of 0.7 s (valence) and 0.4 s (arousal), because annotated affect is smooth and lags cues.
"""

from __future__ import annotations

import numpy as np

from vibescope.stream.tagf.expression import EXPRESSION_CLASSES
from vibescope.stream.timebase import TICK_SECONDS as FRAME_S

# (valence, arousal) in [−1, 1] per FER class; see the module docstring for the basis.
EXPRESSION_VA: dict[str, tuple[float, float]] = {
    "angry": (-0.60, 0.65),
    "disgust": (-0.65, 0.30),
    "fear": (-0.55, 0.70),
    "happy": (0.75, 0.35),
    "sad": (-0.65, -0.40),
    "surprise": (0.20, 0.75),
    "neutral": (0.00, 0.00),
}
EXPRESSION_VA_ARRAY = np.array([EXPRESSION_VA[c] for c in EXPRESSION_CLASSES], np.float32)  # (7, 2)

TAU_VALENCE_S, TAU_AROUSAL_S = 0.7, 0.4


def face_va(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 7) class probabilities → (T, 2) V/A estimate and (T,) evidence weight in [0.1, 1]."""
    p = np.asarray(probabilities, np.float32)
    va = p @ EXPRESSION_VA_ARRAY
    weight = 0.1 + 0.9 * (1.0 - p[:, EXPRESSION_CLASSES.index("neutral")])
    return va, weight


def vocal_va(z_loudness: np.ndarray, z_f0: np.ndarray, z_f0_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Speaker-relative z-scores of speech loudness, pitch level, pitch variability (T,) each →
    (T, 2) V/A estimate and (T,) evidence weight in [0.1, 1]."""
    arousal = np.tanh(0.6 * z_loudness + 0.5 * z_f0 + 0.4 * z_f0_var)
    valence = 0.6 * np.tanh(0.7 * z_f0_var + 0.3 * z_f0 - 0.8 * np.maximum(z_loudness - 0.5, 0.0))
    strength = np.sqrt(z_loudness**2 + z_f0**2 + z_f0_var**2)
    weight = 0.1 + 0.9 * np.tanh(strength / 1.5)
    return np.stack([valence, arousal], axis=-1).astype(np.float32), weight.astype(np.float32)


def smooth(x: np.ndarray, tau_s: float, frame_s: float = FRAME_S) -> np.ndarray:
    """Causal exponential smoothing along axis 0 with time constant ``tau_s`` seconds."""
    alpha = 1.0 - np.exp(-frame_s / tau_s)
    out = np.empty_like(x)
    acc = np.zeros_like(x[0])
    for t in range(x.shape[0]):
        acc = acc + alpha * (x[t] - acc)
        out[t] = acc
    return out


def teacher_trajectory(
    face_probs: np.ndarray, face_present: np.ndarray, vocal_z: np.ndarray, speech: np.ndarray
) -> np.ndarray:
    """Per-frame cues (T, 7), (T,), (T, 3) z-scores, (T,) speech activity in [0, 1] → (T, 2) V/A."""
    fva, fw = face_va(face_probs)
    vva, vw = vocal_va(vocal_z[:, 0], vocal_z[:, 1], vocal_z[:, 2])
    fw = fw * face_present
    vw = vw * speech
    inst = (fva * fw[:, None] + vva * vw[:, None]) / (fw + vw + 0.05)[:, None]
    return np.stack([smooth(inst[:, 0], TAU_VALENCE_S), smooth(inst[:, 1], TAU_AROUSAL_S)], axis=-1).astype(np.float32)
