"""The causal BGM/OST separator: a magnitude mask on a causal STFT with a GRU core.

Why this shape: a mask on a short STFT keeps the algorithmic lag at one frame (32 ms), and a
unidirectional GRU carries the long context that tells sustained music from speech and effects,
at a cost of one small matrix product per 16 ms frame (the open-unmix recipe made causal, in the
spirit of DTLN/RNNoise). The OST estimate is ``mask * X``; the music estimate is the rest
(``mixture - ost``), so the two stems always sum to the mixture. A second head gives a per-frame
music-presence logit for ``music.probability``.

Shapes: waveforms ``(nb_samples, nb_timesteps)`` at 16 kHz; frames ``(nb_samples, nb_frames,
N_FFT)``; spectra ``(nb_samples, nb_frames, N_BINS)``.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import transforms as T

MODEL_ID = "vibescope-sep-v12"  # the id new checkpoints get; a loaded model keeps its own


@dataclass
class SeparatorConfig:
    hidden: int = 256
    layers: int = 2
    embed: int = 256


@dataclass
class Calibration:
    """Platt scaling of the per-tick mean music logit, fitted on the validation split."""

    scale: float = 1.0
    bias: float = 0.0


class CausalMaskSeparator(nn.Module):
    def __init__(self, config: SeparatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or SeparatorConfig()
        self.model_id = MODEL_ID
        c = self.config
        # per-bin normalisation of log power, set from training data before training
        self.register_buffer("feat_mean", torch.zeros(T.N_BINS))
        self.register_buffer("feat_std", torch.ones(T.N_BINS))
        self.encoder = nn.Sequential(nn.Linear(T.N_BINS, c.embed), nn.LayerNorm(c.embed), nn.Tanh())
        self.rnn = nn.GRU(c.embed, c.hidden, num_layers=c.layers, batch_first=True)
        self.mask_head = nn.Linear(c.hidden + c.embed, T.N_BINS)
        self.music_head = nn.Linear(c.hidden, 1)
        self.calibration = Calibration()

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        logpow = torch.log(spec.real.square() + spec.imag.square() + 1e-10)
        return (logpow - self.feat_mean) / self.feat_std

    def forward_frames(
        self, frames: torch.Tensor, h: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Separate frames causally.

        Args:
            frames: ``(B, K, N_FFT)`` input frames (see transforms.frame_signal).
            h: GRU state ``(layers, B, hidden)`` or None for zeros.
        Returns:
            ost synthesis frames ``(B, K, N_FFT)`` (overlap-add them), music logits ``(B, K)``,
            and the new GRU state.
        """
        spec = T.stft(frames)
        z = self.encoder(self.features(spec))
        r, h = self.rnn(z, h)
        mask = torch.sigmoid(self.mask_head(torch.cat([r, z], dim=-1)))
        return T.istft(spec * mask), self.music_head(r).squeeze(-1), h

    def forward(self, mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Offline separation of ``(B, T)`` mixtures -> ``(ost, music, music_logits)``.

        ``ost`` and ``music`` are ``(B, T)``, aligned with the input; ``music_logits`` is
        ``(B, K)`` with frame ``k`` centred on sample ``k * HOP``.
        """
        n = mixture.shape[-1]
        ost_frames, logits, _ = self.forward_frames(T.frame_signal(mixture))
        ost = T.overlap_add(ost_frames, n)
        return ost, mixture - ost, logits

    def checkpoint(self, **extra) -> dict:
        return {
            "model_id": MODEL_ID,  # what this code trains and writes
            "config": asdict(self.config),
            "calibration": asdict(self.calibration),
            "state_dict": self.state_dict(),
            **extra,
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "CausalMaskSeparator":
        model = cls(SeparatorConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        model.calibration = Calibration(**ckpt.get("calibration", {}))
        model.model_id = ckpt.get("model_id", MODEL_ID)  # the overlay names the weights, not the code
        model.eval()
        return model


def models_dir() -> Path:
    import os

    env = os.environ.get("VIBESCOPE_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


_SHARED: dict[str, CausalMaskSeparator] = {}
_SHARED_LOCK = threading.Lock()


def load_shared(path: str | Path | None = None) -> CausalMaskSeparator:
    """Load a checkpoint once per process; every session shares the same (read-only) weights."""
    path = Path(path) if path else models_dir() / "separator.pt"
    key = str(path.resolve())
    with _SHARED_LOCK:
        if key not in _SHARED:
            if not path.exists():
                raise FileNotFoundError(f"separator checkpoint not found: {path} (train one with `vibescope train separator`)")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model = CausalMaskSeparator.from_checkpoint(ckpt)
            for p in model.parameters():
                p.requires_grad_(False)
            _SHARED[key] = model
        return _SHARED[key]
