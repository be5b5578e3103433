"""Training of the causal separator on a `vibescope data sep-mixtures` directory.

Each batch item is a random 3 s crop. Half of the items are the data set's own pairs, the
other half are *re-mixed* on the fly (dynamic mixing): the music stem of one training clip and
the OST stem of another. Half of the music crops are also re-pitched (playback speed 0.85-1.15)
and re-equalised (±6 dB); 30 % of the OST crops are re-pitched (speed 0.9-1.1), 30 % re-equalised
(±4 dB) and 25 % reverberated (synthetic exponential-decay room response, RT60 0.1-0.5 s) — the
OST *target* is the augmented one, so the mixture is always music + OST; re-mixed items and half of
the others get a new music-to-OST level (-15..+10 dB) and loudness (-35..-15 dBFS). Validation
clips are never seen by the optimiser; they are used to pick nothing but the Platt calibration
of ``music.probability`` (fitted after training).

Loss per stem: a soft-thresholded negative SNR (Wisdom et al., MixIT): ``10 log10(|s - ŝ|² +
τ|x|²) - 10 log10(|s|² + τ|x|²)`` with τ = 1e-3, which is defined for silent stems too, plus a
binary cross-entropy on per-frame music presence. ``ost_weight`` (default 1) scales the OST
stem's term: the stems always sum to the mixture, so weighting one trades the other's accuracy for
its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vibescope.stream.debian import DataError
from vibescope.stream.separator import transforms as T
from vibescope.stream.separator.dataset import Clip, load_clips
from vibescope.stream.separator.mixing import random_eq
from vibescope.stream.separator.model import CausalMaskSeparator, SeparatorConfig

CROP = 3 * T.SAMPLE_RATE
TAU = 1e-3
PRESENCE_FLOOR_DB = -60.0  # music quieter than this (dBFS) is absent
PRESENCE_REL_DB = -20.0  # ... or more than 20 dB below the mixture
OST_SPEED_P = 0.3  # share of OST crops played 0.9-1.1x (pitch and tempo together)
OST_SPEED_RANGE = (0.9, 1.1)
OST_REVERB_P = 0.25  # share of OST crops convolved with a synthetic room response
OST_RT60_RANGE = (0.1, 0.5)  # seconds


@dataclass
class TrainConfig:
    steps: int = 6000
    batch: int = 16
    lr: float = 1e-3
    threads: int = 2
    seed: int = 0
    checkpoint_every: int = 250
    hidden: int = 256
    layers: int = 2
    ost_weight: float = 1.0  # weight of the OST stem's loss; the music stem's is 1
    lookahead: int = 0  # frames of look-ahead of the mask (16 ms of lag each); a resumed run keeps its own


def presence_labels(music: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` stems -> ``(B, K)`` 0/1 music presence per STFT frame (32 ms window)."""
    e_music = T.frame_signal(music).square().mean(-1)
    e_mix = T.frame_signal(mixture).square().mean(-1)
    db_music = 10 * torch.log10(e_music + 1e-12)
    db_mix = 10 * torch.log10(e_mix + 1e-12)
    return ((db_music > PRESENCE_FLOOR_DB) & (db_music > db_mix + PRESENCE_REL_DB)).float()


def thresholded_snr_loss(est: torch.Tensor, ref: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the soft-thresholded negative SNR, dB; inputs ``(B, T)``."""
    floor = TAU * mixture.square().sum(-1)
    err = (ref - est).square().sum(-1)
    return (10 * torch.log10(err + floor + 1e-9) - 10 * torch.log10(ref.square().sum(-1) + floor + 1e-9)).mean()


class BatchSampler:
    """Random crops with dynamic re-mixing; deterministic given the seed and the step."""

    def __init__(self, clips: list[Clip], seed: int) -> None:
        self.music = np.stack([c.music for c in clips])
        self.ost = np.stack([c.ost for c in clips])
        self.music_rms = np.sqrt(np.mean(self.music**2, axis=1))
        self.ost_rms = np.sqrt(np.mean(self.ost**2, axis=1))
        self.seed = seed

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        n_clips, n = self.music.shape
        music = np.zeros((size, CROP), np.float32)
        ost = np.zeros((size, CROP), np.float32)
        for b in range(size):
            i = int(rng.integers(n_clips))
            j = i if rng.random() < 0.5 else int(rng.integers(n_clips))
            si, sj = int(rng.integers(0, n - CROP + 1)), int(rng.integers(0, n - CROP + 1))
            m, o = self.music[i, si : si + CROP].copy(), self.ost[j, sj : sj + CROP].copy()
            if rng.random() < 0.5:  # augmentation: other keys/tempi and timbres of the music
                m = _resample(self.music[i], rng.uniform(0.85, 1.15), si, CROP)
                m = random_eq(m, rng, 6.0)
            if rng.random() < OST_SPEED_P:  # other voices: speed/pitch of the OST 0.9-1.1
                o = _resample(self.ost[j], rng.uniform(*OST_SPEED_RANGE), sj, CROP)
            if rng.random() < 0.3:
                o = random_eq(o, rng, 4.0)
            if rng.random() < OST_REVERB_P:  # other rooms: the OST target itself is reverberant
                o = add_reverb(o, rng)
            if i != j or rng.random() < 0.5:
                rm, ro = np.sqrt(np.mean(m**2)), np.sqrt(np.mean(o**2))
                if rm > 1e-5 and ro > 1e-5:
                    m *= ro / rm * 10 ** (rng.uniform(-15, 10) / 20)
                mix_rms = np.sqrt(np.mean((m + o) ** 2))
                if mix_rms > 1e-6:
                    g = 10 ** (rng.uniform(-35, -15) / 20) / mix_rms
                    g = min(g, 0.99 / (np.abs(m + o).max() + 1e-9))
                    m, o = m * g, o * g
            music[b], ost[b] = m, o
        music_t, ost_t = torch.from_numpy(music), torch.from_numpy(ost)
        return music_t + ost_t, music_t, ost_t


def synthetic_rir(rng: np.random.Generator, rt60: float, sample_rate: int = T.SAMPLE_RATE) -> np.ndarray:
    """A room impulse response: a unit direct path, then exponentially decaying Gaussian noise
    (-60 dB after ``rt60`` seconds) starting after a 1-5 ms pre-delay, with a random
    direct-to-reverberant ratio of 0..+12 dB. Length ``min(rt60, 0.6)`` s."""
    n = max(2, int(min(rt60, 0.6) * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[: int(rng.uniform(0.001, 0.005) * sample_rate)] = 0.0
    drr_db = rng.uniform(0.0, 12.0)
    tail *= 10 ** (-drr_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    tail[0] = 1.0
    return tail.astype(np.float32)


def add_reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` convolved with a :func:`synthetic_rir` (RT60 uniform in ``OST_RT60_RANGE``), cut to
    ``len(x)`` (causal: the tail runs past the end) and scaled back to ``x``'s RMS."""
    h = synthetic_rir(rng, rng.uniform(*OST_RT60_RANGE))
    n = len(x) + len(h) - 1
    nfft = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[: len(x)]
    rx, ry = np.sqrt(np.mean(x.astype(np.float64) ** 2)), np.sqrt(np.mean(y**2))
    return (y * (rx / ry) if ry > 1e-12 else y).astype(np.float32)


def _resample(x: np.ndarray, factor: float, start: int, n: int) -> np.ndarray:
    """``n`` samples of ``x`` played ``factor`` times faster from ``start`` (linear
    interpolation): shifts pitch and tempo together; wraps around at the end."""
    pos = start + np.arange(n) * factor
    return np.interp(pos % (len(x) - 1), np.arange(len(x)), x).astype(np.float32)


def feature_stats(clips: list[Clip], n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean/std of log power over (a sample of) the training mixtures."""
    model = CausalMaskSeparator()
    idx = np.linspace(0, len(clips) - 1, min(n, len(clips))).astype(int)
    x = torch.from_numpy(np.stack([clips[i].mixture for i in idx]))
    with torch.no_grad():
        f = model.features(T.stft(T.frame_signal(x))).reshape(-1, T.N_BINS)
    return f.mean(0), f.std(0).clamp_min(1e-3)


def fit_calibration(model: CausalMaskSeparator, clips: list[Clip]) -> tuple[float, float]:
    """Platt-scale the per-tick mean music logit against per-tick presence labels."""
    z, y = tick_logits_and_labels(model, clips)
    a = torch.tensor(1.0, requires_grad=True)
    b = torch.tensor(0.0, requires_grad=True)
    opt = torch.optim.LBFGS([a, b], max_iter=200)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a * zt + b, yt)
        loss.backward()
        return loss

    opt.step(closure)
    return a.item(), b.item()


def tick_logits_and_labels(model: CausalMaskSeparator, clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
    """Per 100 ms tick: mean music logit of the frames centred in it, and the presence label."""
    tick = int(T.SAMPLE_RATE * 0.1)
    zs, ys = [], []
    with torch.inference_mode():
        for c in clips:
            x = torch.from_numpy(c.mixture)[None]
            _, _, logits = model(x)
            logits = logits[0].numpy()
            n_ticks = len(c.mixture) // tick
            centres = np.arange(len(logits)) * T.HOP
            for t in range(n_ticks):
                sel = (centres >= t * tick) & (centres < (t + 1) * tick)
                zs.append(float(logits[sel].mean()))
                ys.append(tick_label(c.music[t * tick : (t + 1) * tick], c.mixture[t * tick : (t + 1) * tick]))
    return np.array(zs, np.float32), np.array(ys, np.float32)


def tick_label(music: np.ndarray, mixture: np.ndarray) -> float:
    db_m = 10 * np.log10(np.mean(music.astype(np.float64) ** 2) + 1e-12)
    db_x = 10 * np.log10(np.mean(mixture.astype(np.float64) ** 2) + 1e-12)
    return float(db_m > PRESENCE_FLOOR_DB and db_m > db_x + PRESENCE_REL_DB)


def train(
    data: str | Path,
    out: str | Path,
    config: TrainConfig,
    resume: bool = True,
    progress: Callable | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train (or resume) and write ``out/separator.pt``; returns its path.

    The full training state (model, optimiser, step) goes to ``out/separator.ckpt`` every
    ``checkpoint_every`` steps; with ``resume`` an existing one is continued.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_clips = load_clips(data, "train")
    val_clips = load_clips(data, "val")
    sampler = BatchSampler(train_clips, config.seed)
    ckpt_path = out / "separator.ckpt"
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False) if resume and ckpt_path.exists() else None
    lookahead = config.lookahead
    if state is not None:  # the checkpoint decides (finetune_init --lookahead writes one with it)
        lookahead = CausalMaskSeparator.lookahead_of(state["model"])
        if config.lookahead and config.lookahead != lookahead:
            raise DataError(
                f"{ckpt_path} has look-ahead {lookahead}, not {config.lookahead}: "
                "resume it without --lookahead, or use --no-resume"
            )
    model = CausalMaskSeparator(SeparatorConfig(hidden=config.hidden, layers=config.layers, lookahead=lookahead))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps))
    )
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        log(f"resumed from {ckpt_path} at step {step}")
    else:
        mean, std = feature_stats(train_clips)
        model.feat_mean.copy_(mean)
        model.feat_std.copy_(std)
    bar = progress(total=config.steps, initial=step) if progress else None
    t0, ema = time.time(), None
    model.train()
    while step < config.steps:
        mixture, music, ost = sampler.batch(step, config.batch)
        est_ost, est_music, logits = model(mixture)
        loss_ost = thresholded_snr_loss(est_ost, ost, mixture)
        loss_music = thresholded_snr_loss(est_music, music, mixture)
        sep = config.ost_weight * loss_ost + loss_music
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, presence_labels(music, mixture))
        loss = sep + 5.0 * bce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        step += 1
        sep_sum = loss_ost.item() + loss_music.item()  # unweighted, comparable across weights
        ema = sep_sum if ema is None else 0.98 * ema + 0.02 * sep_sum
        if bar is not None:
            bar.update(1)
            bar.set_postfix(sep_loss=f"{ema:.2f}", bce=f"{bce.item():.3f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "step": step,
                    "config": config.__dict__,
                },
                tmp,
            )
            tmp.replace(ckpt_path)
    if bar is not None:
        bar.close()
    model.eval()
    a, b = fit_calibration(model, val_clips)
    model.calibration.scale, model.calibration.bias = a, b
    final = out / "separator.pt"
    torch.save(
        model.checkpoint(
            train={
                "steps": step,
                "batch": config.batch,
                "lr": config.lr,
                "seed": config.seed,
                "ost_weight": config.ost_weight,
                "lookahead": lookahead,
                "data": str(data),
                "seconds": round(time.time() - t0, 1),
            }
        ),
        final,
    )
    log(f"wrote {final} (calibration scale {a:.3f} bias {b:.3f})")
    return final
