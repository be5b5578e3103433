"""Which host a benchmark ran on, and how fast it is: numbers from two hosts compare only through this.

The development machines of this project are all "2 cores" but not equally fast: the same
`frontends.py` run measured a whole session at 107 ms of CPU per media second on one and 59 on
another. `host_info()` names the CPU and times a fixed reference workload on one thread — the
per-image models that dominate a session and do not batch (RetinaFace on a 256x144 frame, the
FER tflite on a 64x64 crop) — so a table's capacity can be scaled to another host by the ratio
of their ``ref_ms``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reference_ms(repeats: int = 40) -> float:
    """Median ms of one RetinaFace pass on a 256x144 frame plus one FER pass (one thread)."""
    from vibescope.stream.face import FaceDetector
    from vibescope.stream.stage import FaceObservation
    from vibescope.stream.tagf.expression import classify_expression

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (144, 256, 3), dtype=np.uint8)
    face = FaceObservation(
        score=1.0,
        box=(100.0, 40.0, 60.0, 60.0),
        landmarks=[(115.0, 60.0), (145.0, 60.0), (130.0, 75.0), (118.0, 88.0), (142.0, 88.0)],
        frame_size=(256, 144),
    )
    detector = FaceDetector()
    detector.detect_all(frame)  # load the models before timing
    classify_expression(frame, face)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        detector.detect_all(frame)
        classify_expression(frame, face)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


def host_info() -> dict:
    """``{"cpu", "cores", "ref_ms"}`` for a benchmark's JSON line."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ref_ms": round(reference_ms(), 3)}


if __name__ == "__main__":
    import json

    print(json.dumps(host_info()))
