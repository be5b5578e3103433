"""``plot_timeline``: valence/arousal over media time, with the music level beneath (``analyze --plot``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _series(events: list[dict[str, Any]], get) -> np.ndarray:
    out = []
    for e in events:
        try:
            v = get(e)
        except (KeyError, TypeError):
            v = None
        out.append(np.nan if v is None else float(v))
    return np.asarray(out, float)


def plot_timeline(events: list[dict[str, Any]], out_png: str) -> None:
    """Overlay events (dicts with "t", "valence", "arousal", "confidence", "music": {"level_db",
    "probability"}) → a PNG with two panels: V/A in [−1, 1] with the confidence (gaps where null)
    and the music level in dBFS with music probability; models and status in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = [e for e in events if e.get("type", "overlay") == "overlay" and e.get("t") is not None]
    t = _series(ev, lambda e: e["t"])
    val = _series(ev, lambda e: e["valence"])
    aro = _series(ev, lambda e: e["arousal"])
    conf = _series(ev, lambda e: e["confidence"])
    level = _series(ev, lambda e: e["music"]["level_db"])
    prob = _series(ev, lambda e: e["music"]["probability"])
    fig, (ax, axm) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    ax.axhline(0, color="0.8", lw=0.8)
    ax.plot(t, val, color="tab:green", lw=1.6, label="valence")
    ax.plot(t, aro, color="tab:red", lw=1.6, label="arousal")
    if np.isfinite(conf).any():
        ax.plot(t, conf, color="0.45", lw=1.0, ls=":", label="confidence")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("valence / arousal")
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    models = sorted({m for e in ev for k, m in (e.get("models") or {}).items() if k in ("valence", "arousal")})
    status = sorted({str(e.get("va_status")) for e in ev if e.get("va_status")})
    title = (
        "valence / arousal"
        + (f" — {', '.join(models)}" if models else "")
        + (f" [{', '.join(status)}]" if status else "")
    )
    ax.set_title(title, fontsize=10)
    if np.isfinite(level).any():
        axm.plot(t, level, color="tab:purple", lw=1.2, label="music level (dBFS)")
        axm.set_ylabel("dBFS")
    else:
        axm.text(0.5, 0.5, "no music estimate", transform=axm.transAxes, ha="center", va="center", color="0.5")
    if np.isfinite(prob).any():
        ax2 = axm.twinx()
        ax2.plot(t, prob, color="0.4", lw=0.8, ls="--", label="music probability")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("p(music)")
    axm.set_xlabel("media time (s)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
