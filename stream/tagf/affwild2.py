"""Aff-Wild2 (ABAW VA track) in its own layout, for users who hold its licence.

Annotations: one text file per video (``<video>.txt``, or ``<video>_left.txt`` / ``_right.txt``
when two people are annotated), under folders named ``Train_Set`` and ``Validation_Set`` (e.g.
``VA_Estimation_Challenge/Train_Set``). The first line is the header ``valence,arousal``; then one
``valence,arousal`` line per video frame, values in [−1, 1], and −5 for frames without a label.
Videos (``.mp4``/``.avi``/``.mkv``) with the matching name anywhere under the root.

Labels are taken at our 10 Hz ticks: tick i gets the label of the last video frame that starts
before its end (the frame the engine would analyse). Features are extracted with the product's
own front-ends and cached as ``.npz``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vibescope.stream import cache_dir
from vibescope.stream.stage import FaceObservation, Tick
from vibescope.stream.timebase import SAMPLE_RATE, TICK_SAMPLES, TICK_SECONDS

UNLABELLED = -5.0
SPLIT_DIRS = {"train": "Train_Set", "validation": "Validation_Set"}
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov")


def read_va_annotation(path: str | os.PathLike) -> np.ndarray:
    """One Aff-Wild2 VA file → (frames, 2) float32 valence, arousal; NaN where unlabelled (−5)."""
    rows = []
    with open(path) as f:
        header = f.readline().strip().replace(" ", "").lower()
        if header != "valence,arousal":
            raise ValueError(f"{path}: first line must be 'valence,arousal', not {header!r}")
        for line in f:
            line = line.strip()
            if not line:
                continue
            v, a = (float(x) for x in line.split(","))
            rows.append((v, a))
    y = np.asarray(rows, np.float32).reshape(-1, 2)
    y[(y[:, 0] <= UNLABELLED + 1e-6) | (y[:, 1] <= UNLABELLED + 1e-6)] = np.nan
    return y


def labels_at_ticks(labels: np.ndarray, fps: float, n_ticks: int) -> np.ndarray:
    """Per-frame labels (F, 2) of a video at ``fps`` → (n_ticks, 2): the last frame starting before each tick's end."""
    idx = np.ceil((np.arange(1, n_ticks + 1) * TICK_SECONDS) * fps - 1e-6).astype(int) - 1
    out = np.full((n_ticks, 2), np.nan, np.float32)
    ok = (idx >= 0) & (idx < labels.shape[0])
    out[ok] = labels[idx[ok]]
    return out


def video_name(annotation: Path) -> str:
    stem = annotation.stem
    for suffix in ("_left", "_right"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


@dataclass
class Sequence:
    name: str
    visual: np.ndarray  # (T, VISUAL_DIM)
    audio: np.ndarray  # (T, AUDIO_DIM)
    target: np.ndarray  # (T, 2), NaN = unlabelled


def extract_features(
    video: str | os.PathLike,
    detector: Callable[[np.ndarray], FaceObservation | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Run the product's front-ends over a video file at 10 Hz ticks.

    → visual (T, VISUAL_DIM), audio (T, AUDIO_DIM), the video's frame rate. Face detector: the
    engine's RetinaFace (``vibescope.stream.face.FaceDetector``) unless ``detector`` is given; speech
    probability from silero-vad (``vibescope.stream.audio.SpeechDetector``); no music features (no separator
    offline here, so ``music_known`` = 0).
    """
    import av

    from vibescope.stream.audio import SpeechDetector, rms_dbfs
    from vibescope.stream.tagf.expression import ExpressionStage
    from vibescope.stream.tagf.features import AUDIO_DIM, AudioFrontEnd, visual_vector

    if detector is None:
        from vibescope.stream.face import FaceDetector

        detector = FaceDetector().detect
    frames: dict[int, np.ndarray] = {}
    chunks: list[np.ndarray] = []
    fps = 30.0
    with av.open(str(video)) as c:
        vstream = c.streams.video[0] if c.streams.video else None
        if vstream is not None and vstream.average_rate:
            fps = float(vstream.average_rate)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        streams = [s for s in (vstream, c.streams.audio[0] if c.streams.audio else None) if s is not None]
        for frame in c.decode(*streams):
            if isinstance(frame, av.VideoFrame):
                t = float(frame.pts * frame.time_base)
                frames[int(math.floor(t / TICK_SECONDS + 1e-9))] = frame.to_ndarray(format="rgb24")
            else:
                for r in resampler.resample(frame):
                    chunks.append(r.to_ndarray().reshape(-1))
        for r in resampler.resample(None):
            chunks.append(r.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks).astype(np.float32) if chunks else None
    n_ticks = max((max(frames) + 1) if frames else 0, (len(audio) // TICK_SAMPLES) if audio is not None else 0)
    expression, vad, front = ExpressionStage(), SpeechDetector(), AudioFrontEnd()
    vis = np.zeros((n_ticks, len(visual_vector(None))), np.float32)
    aud = np.zeros((n_ticks, AUDIO_DIM), np.float32)
    for i in range(n_ticks):
        tick = Tick(index=i, audio=None, video_seen=bool(frames))
        if audio is not None and (i + 1) * TICK_SAMPLES <= len(audio):
            tick.audio = audio[i * TICK_SAMPLES : (i + 1) * TICK_SAMPLES]
            probs = vad.feed(tick.audio)
            tick.fields["speech"] = {"probability": float(np.mean(probs)) if probs else None}
            tick.fields["loudness"] = {"dbfs": rms_dbfs(tick.audio)}
        if i in frames:
            tick.frame = frames.pop(i)
            tick.face = detector(tick.frame)
        expression.push(tick)
        vis[i] = visual_vector(tick.fields.get("expression"))
        aud[i] = front.tick_vector(tick.audio, tick.fields)
    return vis, aud, fps


class AffWild2:
    """Aff-Wild2 under ``root``: annotation files by split, their videos, cached features."""

    def __init__(
        self,
        root: str | os.PathLike,
        features_cache: str | os.PathLike | None = None,
        detector: Callable[[np.ndarray], FaceObservation | None] | None = None,
    ) -> None:
        self.root = Path(root)
        cache = features_cache or cache_dir() / "affwild2-features"
        self.cache = Path(cache)
        self.detector = detector
        self._videos: dict[str, Path] | None = None

    def annotations(self, split: str) -> list[Path]:
        """All annotation files of a split ("train" or "validation"), sorted."""
        name = SPLIT_DIRS[split]
        return sorted(p for d in self.root.rglob(name) if d.is_dir() for p in d.glob("*.txt"))

    def video_for(self, annotation: Path) -> Path | None:
        if self._videos is None:
            self._videos = {p.stem: p for p in self.root.rglob("*") if p.suffix.lower() in VIDEO_EXTS}
        return self._videos.get(video_name(annotation))

    def features(self, video: Path) -> tuple[np.ndarray, np.ndarray, float]:
        self.cache.mkdir(parents=True, exist_ok=True)
        path = self.cache / f"{video.stem}.npz"
        if path.exists():
            z = np.load(path)
            return z["visual"], z["audio"], float(z["fps"])
        vis, aud, fps = extract_features(video, self.detector)
        tmp = path.with_suffix(".part.npz")
        np.savez_compressed(tmp, visual=vis, audio=aud, fps=fps)
        tmp.replace(path)
        return vis, aud, fps

    def load_split(self, split: str, progress: bool = False, limit: int | None = None) -> list[Sequence]:
        from tqdm import tqdm

        out = []
        files = self.annotations(split)[:limit]
        for ann in tqdm(files, desc=f"aff-wild2 {split}", disable=not progress):
            video = self.video_for(ann)
            if video is None:
                continue
            vis, aud, fps = self.features(video)
            target = labels_at_ticks(read_va_annotation(ann), fps, vis.shape[0])
            out.append(Sequence(ann.stem, vis, aud, target))
        return out


def evaluate_affwild2(
    model: Any, root: str, split: str = "validation", features_cache: str | None = None, progress: bool = False
) -> dict[str, Any]:
    """CCC per dimension over all labelled ticks of a split (streaming-equivalent predictions)."""
    from vibescope.stream.tagf.evaluate import ccc_scores, predict

    seqs = AffWild2(root, features_cache=features_cache).load_split(split, progress=progress)
    if not seqs:
        raise SystemExit(f"no annotated {split} videos found under {root}")
    preds, targets = [], []
    for s in seqs:
        preds.append(predict(model, s.visual[None], s.audio[None])[0])
        targets.append(s.target)
    p, t = np.concatenate(preds), np.concatenate(targets)
    mask = ~np.isnan(t).any(-1)
    return {"split": split, "videos": len(seqs), "frames": int(mask.sum()), **ccc_scores(p, np.nan_to_num(t), mask)}
