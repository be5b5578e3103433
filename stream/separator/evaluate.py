"""Side-by-side evaluation of our separator and the peers on a sep-mixtures directory.

Per method: mean and median SI-SDR (dB) of the OST and music estimates, their improvement over
the unprocessed mixture (SI-SDRi), and the real-time factor on one thread: CPU seconds of this
process per second of audio (``time.process_time``, so other users' load on a shared machine does
not inflate it; a method that spread work over several threads would be charged for all of
them). SI-SDR is only defined where the reference is present and is unbounded where the
mixture *is* the reference, so the scores are over the clips where both stems are present (the
"both" clips, music-to-OST level -15..+10 dB); ``n`` counts them. Music-only and OST-only clips
are used for the calibration of ``music.probability`` instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vibescope.stream.separator.dataset import Clip, load_clips
from vibescope.stream.separator.streamer import SeparatorStreamer, stream_in_chunks

METHODS = ("ours", "mixture", "oracle-irm", "dfn3", "rnnoise", "hpss", "repet", "noisereduce")
SILENT_DB = -60.0  # a stem below this RMS (dBFS) is absent from the clip


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019); ``(n,)`` arrays."""
    est = est.astype(np.float64)
    ref = ref.astype(np.float64)
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    target = alpha * ref
    return float(10 * np.log10((np.sum(target**2) + 1e-12) / (np.sum((est - target) ** 2) + 1e-12)))


def _present(x: np.ndarray) -> bool:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20) > SILENT_DB


def _method(name: str, checkpoint: str | None) -> Callable[[Clip], tuple[np.ndarray, np.ndarray]]:
    from vibescope.stream.separator import peers

    if name == "ours":
        from vibescope.stream.separator.model import load_shared

        model = load_shared(checkpoint)

        def ours(c: Clip) -> tuple[np.ndarray, np.ndarray]:
            y = stream_in_chunks(SeparatorStreamer(model), c.mixture, 1600)  # the live path: 100 ms ticks
            return y[0], y[1]

        return ours
    if name == "oracle-irm":
        return lambda c: peers.oracle_irm(c.mixture, c.ost, c.music)
    simple = {
        "mixture": peers.mixture,
        "hpss": peers.hpss,
        "repet": peers.repet_sim,
        "noisereduce": peers.noisereduce_peer,
    }
    if name in simple:
        f = simple[name]
        return lambda c: f(c.mixture)
    if name == "dfn3":
        dfn = peers.DeepFilterNet3()
        return lambda c: dfn(c.mixture)
    if name == "rnnoise":
        rnn = peers.RNNoise()
        return lambda c: rnn(c.mixture)
    raise ValueError(f"unknown method {name!r}")


def default_split(data: str | Path) -> str:
    import json

    index = Path(data) / "index.json"
    if index.exists() and json.loads(index.read_text()).get("test"):
        return "test"
    return "val"


def evaluate(
    data: str | Path, method: str, split: str | None = None, checkpoint: str | None = None, limit: int | None = None
) -> dict:
    """Evaluate one method; returns ``{"method", "n", "ost_si_sdr", "ost_si_sdri", "music_si_sdr",
    "music_si_sdri", "rtf"}`` (means, dB) plus ``"_median"`` with the medians for the table."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    split = split or default_split(data)
    clips = [c for c in load_clips(data, split) if _present(c.music) and _present(c.ost)]
    if limit:
        clips = clips[:limit]
    run = _method(method, checkpoint)
    run(clips[0])  # warm-up (lazy imports, native library load) outside the timing
    scores: dict[str, list[float]] = {k: [] for k in ("ost", "ost_i", "music", "music_i")}
    busy = 0.0
    for c in clips:
        start = time.process_time()
        ost, music = run(c)
        busy += time.process_time() - start
        assert ost.shape == c.ost.shape and music.shape == c.music.shape, method
        for stem, est, ref in (("ost", ost, c.ost), ("music", music, c.music)):
            s = si_sdr(est, ref)
            scores[stem].append(s)
            scores[stem + "_i"].append(s - si_sdr(c.mixture, ref))
    seconds = sum(len(c.mixture) for c in clips) / 16000
    mean = lambda v: round(float(np.mean(v)), 3) if v else None  # noqa: E731
    median = lambda v: round(float(np.median(v)), 3) if v else None  # noqa: E731
    return {
        "method": method,
        "n": len(clips),
        "ost_si_sdr": mean(scores["ost"]),
        "ost_si_sdri": mean(scores["ost_i"]),
        "music_si_sdr": mean(scores["music"]),
        "music_si_sdri": mean(scores["music_i"]),
        "rtf": round(busy / seconds, 5),
        "_median": {k: median(v) for k, v in scores.items()},
        "_split": split,
        "_clips": {"id": [c.id for c in clips], "ost_i": scores["ost_i"], "music_i": scores["music_i"]},
    }


def paired(a: dict, b: dict) -> dict:
    """``a`` against ``b`` (two ``evaluate`` results on the same clips), clip by clip: the mean
    difference of OST and of music SI-SDRi and its 95 % interval (mean ± 1.96 standard errors of
    the per-clip differences). A difference whose interval excludes 0 is one the clips show; one
    whose interval straddles 0 is a tie at this many clips."""
    if a["_clips"]["id"] != b["_clips"]["id"]:
        raise ValueError("paired comparison needs both methods scored on the same clips")
    out: dict = {"method": a["method"], "versus": b["method"], "n": len(a["_clips"]["id"])}
    for stem in ("ost", "music"):
        d = np.asarray(a["_clips"][stem + "_i"]) - np.asarray(b["_clips"][stem + "_i"])
        mean = float(np.mean(d))
        se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        out[f"{stem}_si_sdri_diff"] = round(mean, 3)
        out[f"{stem}_ci95"] = [round(mean - 1.96 * se, 3), round(mean + 1.96 * se, 3)]
    return out


def public_row(row: dict) -> dict:
    """The JSON-line form: exactly the documented keys."""
    return {k: row[k] for k in ("method", "n", "ost_si_sdr", "ost_si_sdri", "music_si_sdr", "music_si_sdri", "rtf")}


def format_table(rows: list[dict]) -> str:
    head = (
        "| method | n | OST SI-SDR mean / median | OST SI-SDRi mean / median "
        "| music SI-SDR mean / median | music SI-SDRi mean / median | RTF (1 thread) |"
    )
    lines = [head, "|" + "---|" * 7]
    f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        m = r.get("_median", {})
        lines.append(
            f"| {r['method']} | {r['n']} | {f(r['ost_si_sdr'])} / {f(m.get('ost'))} "
            f"| {f(r['ost_si_sdri'])} / {f(m.get('ost_i'))} "
            f"| {f(r['music_si_sdr'])} / {f(m.get('music'))} "
            f"| {f(r['music_si_sdri'])} / {f(m.get('music_i'))} | {r['rtf']:.4f} |"
        )
    return "\n".join(lines)


def calibration_report(
    data: str | Path, split: str | None = None, checkpoint: str | None = None, bins: int = 10
) -> dict:
    """Reliability of ``music.probability`` per 100 ms tick over *all* clips of the split
    (music-only and OST-only clips included): expected calibration error, Brier score, accuracy
    at 0.5, and per-bin (count, mean predicted, observed frequency)."""
    from vibescope.stream.separator.model import load_shared
    from vibescope.stream.separator.train import tick_logits_and_labels

    torch.set_num_threads(1)
    split = split or default_split(data)
    model = load_shared(checkpoint)
    z, y = tick_logits_and_labels(model, load_clips(data, split))
    cal = model.calibration
    p = 1.0 / (1.0 + np.exp(-(cal.scale * z + cal.bias)))
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            conf, freq = float(p[sel].mean()), float(y[sel].mean())
            ece += sel.mean() * abs(conf - freq)
            table.append(
                {
                    "bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}",
                    "n": int(sel.sum()),
                    "mean_p": round(conf, 3),
                    "observed": round(freq, 3),
                }
            )
    return {
        "split": split,
        "ticks": int(len(y)),
        "positive_rate": round(float(y.mean()), 3),
        "ece": round(float(ece), 4),
        "brier": round(float(np.mean((p - y) ** 2)), 4),
        "accuracy": round(float(np.mean((p > 0.5) == (y > 0.5))), 4),
        "bins": table,
    }
