"""The teacher mapping and the controlled synthetic benchmark's data."""

from __future__ import annotations

import numpy as np
import pytest

from vibescope.stream.tagf.expression import EXPRESSION_CLASSES
from vibescope.stream.tagf.synthetic import make_batch
from vibescope.stream.tagf.teacher import EXPRESSION_VA, face_va, teacher_trajectory, vocal_va


def _onehot(name: str, n: int = 1) -> np.ndarray:
    p = np.zeros((n, 7), np.float32)
    p[:, EXPRESSION_CLASSES.index(name)] = 1
    return p


def test_expression_points_lie_in_their_circumplex_quadrants() -> None:
    assert EXPRESSION_VA["happy"][0] > 0.5 and -0.2 <= EXPRESSION_VA["happy"][1] <= 0.5  # AffectNet's happy region
    assert EXPRESSION_VA["sad"][0] < 0 and EXPRESSION_VA["sad"][1] < 0
    for c in ("angry", "fear"):
        assert EXPRESSION_VA[c][0] < 0 and EXPRESSION_VA[c][1] > 0.5
    assert EXPRESSION_VA["neutral"] == (0.0, 0.0)


def test_a_neutral_face_is_weak_evidence_and_a_smile_strong() -> None:
    (_, w_neutral), (va_happy, w_happy) = face_va(_onehot("neutral")), face_va(_onehot("happy"))
    assert w_neutral[0] < 0.2 < 0.9 < w_happy[0]
    assert va_happy[0, 0] == pytest.approx(EXPRESSION_VA["happy"][0])


def test_loud_high_varied_voice_means_high_arousal() -> None:
    va_hi, w_hi = vocal_va(np.array([1.5]), np.array([1.0]), np.array([1.0]))
    va_lo, _ = vocal_va(np.array([-1.5]), np.array([-1.0]), np.array([-1.0]))
    assert va_hi[0, 1] > 0.6 and va_lo[0, 1] < -0.6 and w_hi[0] > 0.8


def test_teacher_trajectory_follows_a_smile_smoothly() -> None:
    n = 40
    probs = np.concatenate([_onehot("neutral", 20), _onehot("happy", 20)])
    y = teacher_trajectory(probs, np.ones(n, np.float32), np.zeros((n, 3), np.float32), np.zeros(n, np.float32))
    assert abs(y[19, 0]) < 0.05 and y[-1, 0] > 0.6
    assert np.all(np.diff(y[20:, 0]) > 0)  # rises gradually, not in one step
    assert y[21, 0] < 0.5


def test_misalignment_delays_only_the_audio() -> None:
    a, b = make_batch(5, 3, 80, 0.0), make_batch(5, 3, 80, 1.0)
    assert np.array_equal(a.visual, b.visual) and np.array_equal(a.target, b.target)
    assert np.array_equal(b.audio[:, 10:], a.audio[:, :-10])
    assert not np.array_equal(a.audio, b.audio)


def test_synthetic_data_has_face_and_speech_dropouts() -> None:
    b = make_batch(0, 32, 200)
    face = b.visual[..., 0]
    speech = b.audio[..., 1] > 0.5
    assert 0.05 < 1 - face.mean() < 0.6
    assert not b.visual[face == 0].any()  # no face → all-zero vector, never a pretend face
    assert 0.1 < 1 - speech.mean() < 0.8
    assert (b.audio[..., 0] == 0).all(axis=1).any()  # some sequences have no audio at all
    assert b.target.std() > 0.1 and np.abs(b.target).max() <= 1
