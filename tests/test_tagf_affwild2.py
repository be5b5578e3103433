"""Aff-Wild2 loader on a small fixture written in the dataset's exact layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vibescope.stream.tagf.affwild2 import AffWild2, labels_at_ticks, read_va_annotation

from assets import write_small_mp4, write_va_annotation


def test_annotation_file_reads_minus_five_as_unlabelled(affwild2_root: Path) -> None:
    y = read_va_annotation(next(affwild2_root.rglob("12-24-1920x1080.txt")))
    assert y.shape == (60, 2)
    assert np.isnan(y[:15]).all() and not np.isnan(y[15:]).any()
    assert y[15, 0] == pytest.approx(-0.5)


def test_annotation_file_needs_the_header(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt"
    p.write_text("0.1,0.2\n")
    with pytest.raises(ValueError):
        read_va_annotation(p)


def test_tick_labels_take_the_last_frame_before_each_tick_end() -> None:
    labels = np.stack([np.arange(30), -np.arange(30)], 1).astype(np.float32)  # 1 s at 30 fps
    y = labels_at_ticks(labels, 30.0, 12)
    assert y[0, 0] == 2 and y[9, 0] == 29  # tick 0 = [0, 0.1) → frame 2; tick 9 → frame 29
    assert np.isnan(y[10:]).all()  # beyond the video


def test_split_loads_features_and_labels_through_the_real_front_ends(affwild2_root: Path, tmp_path: Path) -> None:
    data = AffWild2(affwild2_root, features_cache=tmp_path / "cache")  # the engine's RetinaFace
    train = data.load_split("train")
    val = data.load_split("validation")
    assert [s.name for s in train] == ["12-24-1920x1080"]
    assert [s.name for s in val] == ["video9_left"]  # _left maps to video9.mp4; the video-less file is skipped
    s = train[0]
    n = s.visual.shape[0]
    assert n == s.audio.shape[0] == s.target.shape[0] and n in (20, 21)  # 2 s at 10 Hz (+ AAC priming)
    assert np.isnan(s.target[:5]).all() and not np.isnan(s.target[5:20]).any()
    assert not s.visual.any()  # the real detector finds no face in grey frames: the explicit no-face state
    assert (s.audio[:, 0] == 1).all()  # audio present
    voiced = s.audio[2:, 3]
    assert voiced.mean() > 0.8  # the tone is pitched
    assert abs(np.median(s.audio[2:, 4]) * 12 - 12 * np.log2(220 / 160)) < 0.5
    assert list((tmp_path / "cache").glob("*.npz"))  # cached for the next epoch


def _grace_hopper(width: int = 320, height: int = 240) -> np.ndarray:
    """matplotlib's photograph of Grace Hopper, scaled to the frame's height, centred on a dark frame."""
    import matplotlib
    from PIL import Image

    face = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    face = face.resize((int(face.width * height / face.height), height))
    canvas = Image.new("RGB", (width, height), (40, 44, 60))
    canvas.paste(face, ((width - face.width) // 2, 0))
    return np.asarray(canvas)


def test_a_real_face_in_the_video_is_found_by_the_real_detector(tmp_path: Path) -> None:
    root = tmp_path / "Aff-Wild2"
    write_va_annotation(root / "VA_Estimation_Challenge" / "Train_Set" / "hopper.txt", [(0.3, 0.1)] * 60)
    write_small_mp4(root / "videos" / "hopper.mp4", image=_grace_hopper())
    (s,) = AffWild2(root, features_cache=tmp_path / "cache").load_split("train")
    framed = s.visual[:20]  # the 20 ticks of the 2 s of video (a tick beyond it may carry AAC priming)
    assert (framed[:, 0] == 1).all()  # a face in every tick with a frame
    assert np.allclose(framed[:, 1:8].sum(1), 1.0, atol=1e-3)  # FER's seven class probabilities
    assert (framed[:, 11] > 0.1).all()  # the face fills much of the frame
    assert not np.isnan(s.target[:20]).any()
