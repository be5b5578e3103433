"""Training TAGF and its baselines: CCC loss, Adam, seeds, checkpoints, progress bars.

``train_synthetic`` trains on fresh simulated sequences each step (``vibescope.stream.tagf.synthetic``);
``train_affwild2`` on Aff-Wild2 features (``vibescope.stream.tagf.affwild2``) for users who hold its licence.
Both train the streaming computation itself (``TagfModel.forward_sliding``), so what is trained is
exactly what runs live.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vibescope.stream.tagf.model import TagfConfig, TagfModel, ccc_loss


def save_checkpoint(model: TagfModel, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """{"config", "state_dict", "meta"} via torch.save; written to a temp file then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"config": model.config.to_dict(), "state_dict": state, "meta": meta}, tmp)
    tmp.replace(path)


def _fit(
    model: TagfModel,
    next_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]],
    steps: int,
    lr: float,
    weight_decay: float,
    out: str | None,
    meta: dict[str, Any],
    progress: bool,
    checkpoint_every: int,
) -> dict[str, Any]:
    from tqdm import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    t0 = time.time()
    bar = tqdm(range(steps), desc=f"train {model.model_id}", disable=not progress, mininterval=2.0)
    ema = None
    for step in bar:
        vis, aud, tgt, mask = next_batch(step)
        pred = model.forward_sliding(vis, aud)
        loss = ccc_loss(pred, tgt, mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}")
        if out and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save_checkpoint(model, out, {**meta, "steps_done": step + 1})
    model.eval()
    meta = {
        **meta,
        "steps_done": steps,
        "final_loss_ema": round(float(ema), 4),
        "train_seconds": round(time.time() - t0, 1),
    }
    if out:
        save_checkpoint(model, out, meta)
    return meta


def train_synthetic(
    fusion: str = "gate_steps",
    steps: int = 600,
    batch: int = 8,
    n_frames: int = 150,
    seed: int = 0,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    out: str | None = None,
    progress: bool = True,
    checkpoint_every: int = 100,
    config: TagfConfig | None = None,
    misalign_max_s: float = 0.0,
) -> tuple[TagfModel, dict[str, Any]]:
    """Train on simulated cue trajectories labelled by the teacher; audio and video aligned, or,
    with ``misalign_max_s`` > 0, each batch's audio delayed by a random benchmark level up to it."""
    from vibescope.stream.tagf.synthetic import MISALIGN_LEVELS_S, make_batch

    torch.manual_seed(seed)
    np.random.seed(seed)
    cfg = config or TagfConfig(fusion=fusion)
    model = TagfModel(cfg)

    levels = [m for m in MISALIGN_LEVELS_S if m <= misalign_max_s]
    rng = np.random.default_rng(seed)

    def next_batch(step: int):
        m = float(rng.choice(levels)) if misalign_max_s > 0 else 0.0
        b = make_batch(seed * 1_000_003 + step, batch, n_frames, m)
        return torch.from_numpy(b.visual), torch.from_numpy(b.audio), torch.from_numpy(b.target), None

    aligned = "aligned" if misalign_max_s <= 0 else f"audio delayed by a random level in {levels} s"
    meta = {
        "data": f"synthetic cue trajectories labelled by vibescope.stream.tagf.teacher ({aligned})",
        "fusion": cfg.fusion,
        "steps": steps,
        "batch": batch,
        "n_frames": n_frames,
        "seed": seed,
        "lr": lr,
        "misalign_max_s": misalign_max_s,
        "weight_decay": weight_decay,
        "params": model.n_params(),
    }
    return model, _fit(model, next_batch, steps, lr, weight_decay, out, meta, progress, checkpoint_every)


def train_affwild2(
    root: str,
    fusion: str = "gate_steps",
    steps: int = 2000,
    batch: int = 8,
    n_frames: int = 150,
    seed: int = 0,
    lr: float = 1e-3,
    weight_decay: float = 1e-3,
    out: str | None = None,
    progress: bool = True,
    checkpoint_every: int = 200,
    features_cache: str | None = None,
) -> tuple[TagfModel, dict[str, Any]]:
    """Train on Aff-Wild2's training split (features extracted once and cached)."""
    from vibescope.stream.tagf.affwild2 import AffWild2

    torch.manual_seed(seed)
    data = AffWild2(root, features_cache=features_cache)
    train = data.load_split("train", progress=progress)
    if not train:
        raise SystemExit(f"no annotated training videos found under {root}")
    rng = np.random.default_rng(seed)
    model = TagfModel(TagfConfig(fusion=fusion))

    def next_batch(step: int):
        vs, as_, ts, ms = [], [], [], []
        for _ in range(batch):
            s = train[int(rng.integers(len(train)))]
            n = s.visual.shape[0]
            start = int(rng.integers(0, max(1, n - n_frames)))
            sl = slice(start, start + n_frames)
            v, a, t = s.visual[sl], s.audio[sl], s.target[sl]
            pad = n_frames - v.shape[0]
            v, a = np.pad(v, ((0, pad), (0, 0))), np.pad(a, ((0, pad), (0, 0)))
            t = np.pad(t, ((0, pad), (0, 0)), constant_values=np.nan)
            vs.append(v), as_.append(a), ts.append(np.nan_to_num(t)), ms.append(~np.isnan(t).any(-1))
        return (
            torch.from_numpy(np.stack(vs)),
            torch.from_numpy(np.stack(as_)),
            torch.from_numpy(np.stack(ts)),
            torch.from_numpy(np.stack(ms)),
        )

    meta = {
        "data": f"Aff-Wild2 train split under {root}",
        "fusion": fusion,
        "steps": steps,
        "batch": batch,
        "seed": seed,
        "lr": lr,
        "weight_decay": weight_decay,
        "params": model.n_params(),
    }
    return model, _fit(model, next_batch, steps, lr, weight_decay, out, meta, progress, checkpoint_every)
