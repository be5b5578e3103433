"""Evaluation: CCC per dimension over all frames of a test set (as the ABAW challenges compute it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vibescope.stream.tagf.model import TagfModel


def ccc_np(pred: np.ndarray, target: np.ndarray) -> float:
    """Concordance correlation coefficient of two 1-D arrays."""
    pm, tm = pred.mean(), target.mean()
    cov = ((pred - pm) * (target - tm)).mean()
    return float(2 * cov / (pred.var() + target.var() + (pm - tm) ** 2 + 1e-12))


def predict(model: TagfModel, visual: np.ndarray, audio: np.ndarray, batch: int = 16) -> np.ndarray:
    """Streaming-equivalent predictions (``forward_sliding``): (B, T, ·) → (B, T, 2)."""
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, visual.shape[0], batch):
            outs.append(
                model.forward_sliding(
                    torch.from_numpy(visual[i : i + batch]), torch.from_numpy(audio[i : i + batch])
                ).numpy()
            )
    return np.concatenate(outs)


def ccc_scores(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """pred/target (..., 2); mask (...) of labelled frames → {"ccc_valence", "ccc_arousal"}."""
    p, t = pred.reshape(-1, 2), target.reshape(-1, 2)
    if mask is not None:
        keep = mask.reshape(-1)
        p, t = p[keep], t[keep]
    return {"ccc_valence": round(ccc_np(p[:, 0], t[:, 0]), 4), "ccc_arousal": round(ccc_np(p[:, 1], t[:, 1]), 4)}


def evaluate_synthetic(
    models: dict[str, TagfModel], levels: tuple[float, ...] | None = None, n_sequences: int = 48, n_frames: int = 300
) -> list[dict[str, Any]]:
    """Each model at each misalignment level → rows {"model", "gate", "misalign_s", "ccc_valence", "ccc_arousal"}."""
    from vibescope.stream.tagf.synthetic import MISALIGN_LEVELS_S, test_set

    rows = []
    for level in levels or MISALIGN_LEVELS_S:
        data = test_set(level, n_sequences, n_frames)
        for _name, model in models.items():
            fusion = model.config.fusion
            gate = {"gate_steps": "steps", "gate_time": "time"}.get(fusion)
            family = "tagf" if gate else model.model_id
            rows.append(
                {
                    "model": family,
                    "gate": gate,
                    "misalign_s": level,
                    **ccc_scores(predict(model, data.visual, data.audio), data.target),
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'model':<12} {'gate':<6} {'misalign_s':>10} {'ccc_valence':>12} {'ccc_arousal':>12}"]
    for r in rows:
        lines.append(
            f"{r['model']:<12} {str(r['gate'] or '-'):<6} {r['misalign_s']:>10.1f} "
            f"{r['ccc_valence']:>12.3f} {r['ccc_arousal']:>12.3f}"
        )
    return "\n".join(lines)
