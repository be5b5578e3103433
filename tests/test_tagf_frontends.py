"""Front-ends of the V/A path: log-mel, pitch, expression stage, the feature vectors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from vibescope.stream.stage import FaceObservation, Tick
from vibescope.stream.tagf import features as F
from vibescope.stream.tagf.expression import EXPRESSION_CLASSES, ExpressionStage, face_crop
from vibescope.stream.timebase import SAMPLE_RATE, TICK_SAMPLES


def _tone(f0: float, n: int = TICK_SAMPLES, amp: float = 0.3) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    return (amp * (np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(2 * np.pi * 2 * f0 * t + 0.3))).astype(np.float32)


@pytest.mark.parametrize("f0", [85.0, 140.0, 230.0, 380.0])
def test_yin_recovers_the_pitch_of_a_harmonic_tone(f0: float) -> None:
    assert F.yin_f0(_tone(f0, 800)) == pytest.approx(f0, rel=0.01)


def test_yin_calls_noise_unvoiced() -> None:
    rng = np.random.default_rng(0)
    assert F.yin_f0(rng.normal(0, 0.1, 800).astype(np.float32)) is None


def test_yin_on_several_frames_at_once_gives_each_frame_its_own_answer() -> None:
    rng = np.random.default_rng(1)
    rows = np.stack(
        [_tone(110.0, 800), rng.normal(0, 0.1, 800).astype(np.float32), np.zeros(800, np.float32), _tone(300.0, 800)]
    )
    together = F.yin_f0_frames(rows)
    assert together == [F.yin_f0(r) for r in rows]  # batching does not change a frame's value
    assert together[0] == pytest.approx(110.0, rel=0.01) and together[1] is None and together[2] is None
    assert together[3] == pytest.approx(300.0, rel=0.01)


def test_log_mel_of_a_tone_peaks_in_the_band_of_its_frequency() -> None:
    fb = F.mel_filterbank()
    assert fb.shape == (F.N_MEL, F.N_FFT // 2 + 1) and float(fb.min()) >= 0
    freqs = np.linspace(0, SAMPLE_RATE / 2, F.N_FFT // 2 + 1)
    centre_hz = (fb.numpy() * freqs).sum(1) / fb.numpy().sum(1)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    mel = F.log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32)).mean(0)
    assert abs(centre_hz[int(np.argmax(mel))] - 1000) < 80


def test_audio_vector_reports_pitch_speech_and_missing_music() -> None:
    fe = F.AudioFrontEnd()
    fields = {"speech": {"probability": 0.9}, "loudness": {"dbfs": -20.0}}
    for _ in range(5):
        x = fe.tick_vector(_tone(200.0), fields)
    assert x[0] == 1 and x[1] == pytest.approx(0.9)
    assert x[3] == pytest.approx(1.0)  # all pitch frames voiced
    assert x[4] * 12 == pytest.approx(12 * np.log2(200 / F.F0_REF_HZ), abs=0.1)
    assert x[6] == 0 and x[7] == 0  # no separator yet: music unknown, not "no music"
    with_music = fe.tick_vector(_tone(200.0), {**fields, "music": {"probability": 0.7, "level_db": -30.0}})
    assert with_music[6] == 1 and with_music[7] == pytest.approx(0.7)


def test_audio_vector_without_audio_is_the_absent_state() -> None:
    x = F.AudioFrontEnd().tick_vector(None, {"music": None})
    assert not x.any()


def test_audio_frontend_state_roundtrip_continues_identically() -> None:
    a, rng = F.AudioFrontEnd(), np.random.default_rng(0)
    ticks = [_tone(150 + 20 * i) + rng.normal(0, 0.01, TICK_SAMPLES).astype(np.float32) for i in range(6)]
    for x in ticks[:3]:
        a.tick_vector(x, {})
    b = F.AudioFrontEnd()
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    for x in ticks[3:]:
        assert np.array_equal(a.tick_vector(x, {}), b.tick_vector(x, {}))


def test_visual_vector_is_zero_without_a_face_and_flags_a_face() -> None:
    assert not F.visual_vector(None).any()
    x = F.visual_vector({"probabilities": {"happy": 0.8, "neutral": 0.2}, "geometry": None})
    assert x[0] == 1 and x[1 + EXPRESSION_CLASSES.index("happy")] == pytest.approx(0.8)


def test_expression_stage_says_no_face_explicitly_and_drops_the_frame() -> None:
    stage = ExpressionStage()
    tick = Tick(index=0, audio=None, frame=np.zeros((90, 160, 3), np.uint8), face=None, video_seen=True)
    (out,) = stage.push(tick)
    assert out.fields["expression"] is None
    assert out.frame is None


def test_expression_stage_classifies_a_real_face() -> None:
    import matplotlib.cbook as cbook

    from tagf_realclip import face_detector

    rgb = np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    )
    face = face_detector()(rgb)
    assert face is not None
    (out,) = ExpressionStage().push(Tick(index=0, audio=None, frame=rgb, face=face, video_seen=True))
    expr = out.fields["expression"]
    assert set(expr["probabilities"]) == set(EXPRESSION_CLASSES)
    assert sum(expr["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert expr["label"] in EXPRESSION_CLASSES and expr["geometry"]["mouth_width"] > 0
    assert out.frame is None and out.models["expression"]


def test_face_crop_levels_the_eyes() -> None:
    yy, xx = np.mgrid[0:200, 0:200]
    img = np.where(np.abs(yy - xx) <= 3, 255.0, 0.0).astype(np.float32)  # a line through both eyes
    tilted = FaceObservation(
        0.9, (50, 50, 100, 100), [(60, 60), (140, 140), (100, 100), (80, 130), (120, 130)], (200, 200)
    )
    crop = face_crop(img, tilted, size=32)
    mid = crop.shape[0] // 2
    assert crop[mid - 1 : mid + 1].mean() > 150  # the eye line became the crop's horizontal midline
    assert crop[:, mid].mean() < 60


@pytest.mark.parametrize(
    "box, eyes",
    [
        ((40.0, 30.0, 110.0, 130.0), [(70.0, 80.0), (120.0, 88.0)]),  # inside, tilted
        ((-20.0, -10.0, 150.0, 180.0), [(20.0, 30.0), (60.0, 10.0)]),  # over two borders
        ((150.0, 120.0, 90.0, 90.0), [(190.0, 150.0), (160.0, 152.0)]),
    ],
)  # flipped eyes
def test_face_crop_is_bilinear_sampling_with_the_border_value_outside(box, eyes) -> None:
    """The crop equals scipy's order-1 spline (bilinear) sampling, edge mode, at the rotated grid."""
    from scipy.ndimage import map_coordinates

    img = np.random.default_rng(3).uniform(0, 255, (200, 220)).astype(np.float32)
    face = FaceObservation(0.9, box, eyes, (220, 200))
    (lx, ly), (rx, ry) = eyes
    angle = np.arctan2(ry - ly, rx - lx)
    angle = np.arctan2(ly - ry, lx - rx) if abs(angle) > np.pi / 2 else angle
    side, n = max(box[2], box[3]) + 20.0, 48
    g = ((np.arange(n) + 0.5) / n - 0.5) * side
    uu, vv = np.meshgrid(g, g)
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    sx = np.clip(cx + np.cos(angle) * uu - np.sin(angle) * vv - 0.5, 0, 219)
    sy = np.clip(cy + np.sin(angle) * uu + np.cos(angle) * vv - 0.5, 0, 199)
    ref = map_coordinates(img.astype(np.float64), [sy, sx], order=1, mode="nearest")
    np.testing.assert_allclose(face_crop(img, face, size=n), ref, atol=1e-3)


def test_ticks_without_a_frame_hold_the_last_expression_for_a_while() -> None:
    stage = ExpressionStage()
    stage.last = {"label": "happy", "probabilities": {"happy": 1.0}, "geometry": None}
    stage.last_index = 0
    near = stage.push(Tick(index=5, audio=None, video_seen=True))[0]
    far = stage.push(Tick(index=5 + ExpressionStage.HOLD_TICKS + 1, audio=None, video_seen=True))[0]
    assert near.fields["expression"]["held"] is True and near.fields["expression"]["label"] == "happy"
    assert far.fields["expression"] is None
    # a frame without a face ends the hold at once
    stage.push(Tick(index=30, audio=None, frame=np.zeros((8, 8, 3), np.uint8), face=None, video_seen=True))
    assert stage.push(Tick(index=31, audio=None, video_seen=True))[0].fields["expression"] is None
    assert pickle.loads(pickle.dumps(stage.state_dict()))["last"] is None
