"""The causal BGM/OST separator: a magnitude mask on a causal STFT with a GRU core.

Why this shape: a mask on a short STFT keeps the algorithmic lag at one frame (32 ms), and a
unidirectional GRU carries the long context that tells sustained music from speech and effects,
at a cost of one small matrix product per 16 ms frame (the open-unmix recipe made causal, in the
spirit of DTLN/RNNoise). The OST estimate is ``mask * X``; the music estimate is the rest
(``mixture - ost``), so the two stems always sum to the mixture. A second head gives a per-frame
music-presence logit for ``music.probability``.

Optional look-ahead (``SeparatorConfig.lookahead`` = L frames): the mask of frame k also sees the
GRU and encoder outputs of frames k+1 .. k+L, through one more linear term on the mask's logits
(zero-initialised, so it can be added to trained weights without changing them). Each look-ahead
frame adds one hop (16 ms) to the lag: L = 2 gives 64 ms. The GRU itself stays causal and is not
delayed, nor is the music logit.

Shapes: waveforms ``(nb_samples, nb_timesteps)`` at 16 kHz; frames ``(nb_samples, nb_frames,
N_FFT)``; spectra ``(nb_samples, nb_frames, N_BINS)``.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from vibescope.stream.separator import transforms as T
from vibescope.stream.weights import weights_path

MODEL_ID = "vibescope-sep-v15"  # the id new checkpoints get; a loaded model keeps its own


@dataclass
class SeparatorConfig:
    hidden: int = 256
    layers: int = 2
    embed: int = 256
    lookahead: int = 0  # frames the mask sees ahead; each adds one 16 ms hop to the 32 ms lag


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
        if c.lookahead:
            # the mask of frame k also sees [GRU output, encoder output] of frames k+1 .. k+lookahead;
            # zero at first, so look-ahead added to trained weights starts from their exact outputs
            self.lookahead_head = nn.Linear(c.lookahead * (c.hidden + c.embed), T.N_BINS)
            nn.init.zeros_(self.lookahead_head.weight)
            nn.init.zeros_(self.lookahead_head.bias)
        self.calibration = Calibration()

    @property
    def lookahead(self) -> int:
        return self.config.lookahead

    @property
    def feature_size(self) -> int:
        """Width of one frame's [GRU output, encoder output], the streamer's look-ahead state."""
        return self.config.hidden + self.config.embed

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        logpow = torch.log(spec.real.square() + spec.imag.square() + 1e-10)
        return (logpow - self.feat_mean) / self.feat_std

    def forward_frames(
        self,
        frames: torch.Tensor,
        h: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Separate frames causally, ``lookahead`` frames behind the newest one.

        Args:
            frames: ``(B, K, N_FFT)`` new input frames (see transforms.frame_signal).
            h: GRU state ``(layers, B, hidden)`` or None for zeros.
            past: the frames not yet masked from the call before, ``(B, m, N_FFT)``, and their
                features ``(B, m, feature_size)``, ``m <= lookahead``; None for none.
        Returns:
            ost synthesis frames ``(B, m + K - lookahead, N_FFT)`` (at least zero of them; the
            oldest of the past and new frames: overlap-add them), music logits ``(B, K)`` of the
            new frames, the new GRU state, and the new ``past`` (the last ``min(lookahead, m +
            K)`` frames and features).
        """
        spec = T.stft(frames)
        z = self.encoder(self.features(spec))
        r, h = self.rnn(z, h)
        logits = self.music_head(r).squeeze(-1)
        feats = torch.cat([r, z], dim=-1)
        if past is not None and past[0].shape[1]:
            spec = torch.cat([T.stft(past[0]), spec], dim=1)
            frames, feats = torch.cat([past[0], frames], dim=1), torch.cat([past[1], feats], dim=1)
        la, total = self.lookahead, frames.shape[1]
        done = max(total - la, 0)
        past = (frames[:, done:], feats[:, done:])
        if done == 0:  # every frame still waits for its look-ahead (an FFT of nothing is an error)
            return frames.new_zeros(frames.shape[0], 0, T.N_FFT), logits, h, past
        spec = spec[:, :done]
        mask_logit = self.mask_head(feats[:, :done])
        if la:
            ahead = torch.cat([feats[:, j : j + done] for j in range(1, la + 1)], dim=-1)
            mask_logit = mask_logit + self.lookahead_head(ahead)
        return T.istft(spec * torch.sigmoid(mask_logit)), logits, h, past

    def forward(self, mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Offline separation of ``(B, T)`` mixtures -> ``(ost, music, music_logits)``.

        ``ost`` and ``music`` are ``(B, T)``, aligned with the input; ``music_logits`` is
        ``(B, K)`` with frame ``k`` centred on sample ``k * HOP``.
        """
        n = mixture.shape[-1]
        frames = T.frame_signal(mixture, extra=self.lookahead)  # the look-ahead of the last frames is silence
        ost_frames, logits, _, _ = self.forward_frames(frames)
        ost = T.overlap_add(ost_frames, n)
        return ost, mixture - ost, logits[:, : ost_frames.shape[1]]

    @staticmethod
    def lookahead_of(state_dict: dict) -> int:
        """The look-ahead (frames) of the weights in ``state_dict``, read off its tensors' shapes."""
        head = state_dict.get("lookahead_head.weight")
        return 0 if head is None else head.shape[1] // state_dict["mask_head.weight"].shape[1]

    def with_lookahead(self, frames: int) -> CausalMaskSeparator:
        """A copy of this model with ``frames`` of look-ahead, its look-ahead term zero: the same
        offline outputs, streamed ``frames`` hops later. Where look-ahead fine-tuning starts."""
        if self.lookahead:
            raise ValueError("this model already has look-ahead")
        model = CausalMaskSeparator(SeparatorConfig(**{**asdict(self.config), "lookahead": frames}))
        missing, unexpected = model.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("lookahead_head.") for k in missing), (missing, unexpected)
        model.calibration = Calibration(**asdict(self.calibration))
        model.model_id = self.model_id
        return model.train(self.training)

    def checkpoint(self, **extra) -> dict:
        return {
            "model_id": MODEL_ID,  # what this code trains and writes
            "config": asdict(self.config),
            "calibration": asdict(self.calibration),
            "state_dict": self.state_dict(),
            **extra,
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> CausalMaskSeparator:
        model = cls(SeparatorConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        model.calibration = Calibration(**ckpt.get("calibration", {}))
        model.model_id = ckpt.get("model_id", MODEL_ID)  # the overlay names the weights, not the code
        model.eval()
        return model


_SHARED: dict[str, CausalMaskSeparator] = {}
_SHARED_LOCK = threading.Lock()


def load_shared(path: str | Path | None = None) -> CausalMaskSeparator:
    """Load a checkpoint once per process; every session shares the same (read-only) weights."""
    path = Path(path) if path else weights_path("separator.pt")
    key = str(path.resolve())
    with _SHARED_LOCK:
        if key not in _SHARED:
            if not path.exists():
                raise FileNotFoundError(
                    f"separator checkpoint not found: {path} (train one with `vibescope train separator`)"
                )
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model = CausalMaskSeparator.from_checkpoint(ckpt)
            for p in model.parameters():
                p.requires_grad_(False)
            _SHARED[key] = model
        return _SHARED[key]
