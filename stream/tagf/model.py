"""TAGF: time-aware gated fusion of recursive joint cross-modal attention, and its baselines.

Follows the authors' code (``leeyubin10/9th-ABAW``: ``models/TAGF.py``, ``models/layer.py``; the
attention is RJCMA's ``DenseCoAttn``/``DCNLayer`` reduced to two modalities) where the paper is
silent. Shapes: ``B`` batch, ``T`` frames (10 Hz here), ``W`` window length in frames.

Pipeline per window of ``W`` frames (offline ``forward``):
  visual (B, T, DV_IN) ─ causal TCN ─ L2 norm ─┐
                                               ├─ recursive joint cross-attention, R iterations,
  audio  (B, T, DA_IN) ─ causal TCN ─ L2 norm ─┘   keeping {X⁰, X¹, …, X^R} per modality
  ─ fusion (one of FUSIONS) ─ head: Linear → BatchNorm → LeakyReLU → Linear → tanh → (B, T, 2)
  with output channel 0 = valence, 1 = arousal, both in [−1, 1].

Fusions:
  ``gate_steps``  the authors' code: per frame, a BiLSTM runs over the R+1 recursion steps; the
                  score of a step is the mean of its encoding; weights = softmax(score / 0.1).
  ``gate_time``   the paper's text ("temporal importance"; the unused ``TemporalGating`` class in
                  ``layer.py``): a BiLSTM over *time* on the stacked features, FC → R+1 scores per
                  frame, softmax(score / 0.1). Its forward state is what the streamer carries.
  ``last``        RJCMA-style baseline: no gate, the last iteration's output.
  ``concat_lstm`` plain baseline: concat of the encoders' outputs → BiLSTM over time (no attention).

Deviations from the authors' code, each for a stated reason:
  * one model predicts both valence and arousal (the authors train one model per dimension);
  * small dimensions (TCN 48/32 channels instead of 256/128; the inputs are 12-d/25-d front-end
    features, not IResNet/VGGish embeddings) to keep 32 live sessions on 2 CPU cores;
  * attention dropout 0.2 instead of 0.6 (tiny model, simulated data);
  * the RJCMA code computes ``query_linear(joint)`` but then attends with the raw ``joint``; we do
    the same (``query_linear`` omitted since it is unused).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vibescope.stream.weights import weights_path

FUSIONS = ("gate_steps", "gate_time", "last", "concat_lstm")
GATE_TEMPERATURE = 0.1


@dataclass
class TagfConfig:
    """Hyper-parameters; ``window``/``hop``/``lookahead`` are in frames (10 Hz)."""

    visual_dim: int = 12
    audio_dim: int = 25
    visual_channels: list[int] = field(default_factory=lambda: [48, 48, 48])
    audio_channels: list[int] = field(default_factory=lambda: [32, 32, 32])
    kernel_size: int = 5
    recursions: int = 2
    window: int = 40
    hop: int = 2
    lookahead: int = 3
    gate_hidden: int = 32
    head_hidden: int = 64
    dropout: float = 0.1
    attn_dropout: float = 0.2
    fusion: str = "gate_steps"

    def to_dict(self) -> dict:
        return asdict(self)


class CausalTemporalBlock(nn.Module):
    """Residual block of two dilated causal 1-D convolutions (the TCN of Bai et al. 2018)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, dilation=dilation)
        self.drop = nn.Dropout(dropout)
        self.down = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        y = self.drop(F.relu(self.conv1(F.pad(x, (self.pad, 0)))))
        y = self.drop(F.relu(self.conv2(F.pad(y, (self.pad, 0)))))
        return F.relu(y + self.down(x))

    def step(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Streaming: new frames x (B, C, n) with the last ``pad`` frames of both convolutions'
        inputs (zeros at stream start, as ``forward``'s padding) → output (B, C_out, n), new cache."""
        xin = torch.cat([cache[0], x], dim=2)
        y1 = self.drop(F.relu(self.conv1(xin)))
        y1in = torch.cat([cache[1], y1], dim=2)
        y = self.drop(F.relu(self.conv2(y1in)))
        return F.relu(y + self.down(x)), (xin[:, :, xin.shape[2] - self.pad :], y1in[:, :, y1in.shape[2] - self.pad :])


class TemporalConvNet(nn.Module):
    """Causal TCN, dilation 2^i at level i. (B, T, C_in) → (B, T, channels[-1])."""

    def __init__(self, c_in: int, channels: list[int], kernel: int, dropout: float) -> None:
        super().__init__()
        layers, c = [], c_in
        for i, ch in enumerate(channels):
            layers.append(CausalTemporalBlock(c, ch, kernel, 2**i, dropout))
            c = ch
        self.net = nn.Sequential(*layers)
        self.receptive_field = 1 + 2 * (kernel - 1) * (2 ** len(channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)

    def initial_cache(self, batch: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cache = []
        for block in self.net:
            c_in = block.conv1.in_channels
            c_out = block.conv1.out_channels
            cache.append((torch.zeros(batch, c_in, block.pad), torch.zeros(batch, c_out, block.pad)))
        return cache

    def step(
        self,
        x: torch.Tensor,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Streaming form of ``forward``: new frames (B, n, C_in) → (B, n, C_out), new cache."""
        h, new = x.transpose(1, 2), []
        for block, c in zip(self.net, cache, strict=False):
            h, c = block.step(h, c)
            new.append(c)
        return h.transpose(1, 2), new


class JointCrossAttention(nn.Module):
    """One iteration of joint cross-attention (RJCMA ``NormalSubLayer`` for two modalities).

    J = [X_v, X_a] (B, W, Dv+Da); K_m = Linear_W(X_mᵀ) (B, D_m, W); S_m = tanh(K_m J / √(Dv+Da));
    A_m = ReLU(tanh(Linear(X_m) S_m)) (B, W, Dv+Da); X_m ← X_m + Dropout(ReLU(Linear(A_m))).
    The key projection mixes the window's frames, so the window length is fixed.
    """

    def __init__(self, dv: int, da: int, window: int, attn_dropout: float, dropout: float) -> None:
        super().__init__()
        dj = dv + da
        self.scale = 1.0 / math.sqrt(dj)
        self.key_v = nn.Linear(window, window)
        self.key_a = nn.Linear(window, window)
        self.value_v = nn.Linear(dv, dv)
        self.value_a = nn.Linear(da, da)
        self.drop_sv = nn.Dropout(attn_dropout)
        self.drop_sa = nn.Dropout(attn_dropout)
        self.out_v = nn.Sequential(nn.Linear(dj, dv), nn.ReLU(), nn.Dropout(dropout))
        self.out_a = nn.Sequential(nn.Linear(dj, da), nn.ReLU(), nn.Dropout(dropout))

    def _attend(
        self, key: nn.Linear, value: nn.Linear, drop: nn.Dropout, x: torch.Tensor, joint: torch.Tensor
    ) -> torch.Tensor:
        k = key(x.transpose(1, 2))  # (B, D_m, W)
        s = drop(torch.tanh(torch.bmm(k, joint) * self.scale))  # (B, D_m, Dv+Da)
        return F.relu(torch.tanh(torch.bmm(value(x), s)))  # (B, W, Dv+Da)

    def forward(self, xv: torch.Tensor, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joint = torch.cat([xv, xa], dim=-1)
        av = self._attend(self.key_v, self.value_v, self.drop_sv, xv, joint)
        aa = self._attend(self.key_a, self.value_a, self.drop_sa, xa, joint)
        return xv + self.out_v(av), xa + self.out_a(aa)


class StepGateEncoder(nn.Module):
    """The authors' ``layer.LSTM``: BiLSTM with a learned initial state, [input, output] → Linear → L2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.rnn = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.init_hidden = nn.Parameter(nn.init.xavier_uniform_(torch.empty(4, hidden)))
        self.linear = nn.Linear(dim + 2 * hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, M, D) → (N, M, D)
        n = x.shape[0]
        h0 = self.init_hidden[:2].unsqueeze(1).expand(2, n, self.hidden).contiguous()
        c0 = self.init_hidden[2:].unsqueeze(1).expand(2, n, self.hidden).contiguous()
        y, _ = self.rnn(x, (h0, c0))
        return F.normalize(self.linear(torch.cat([x, y], dim=-1)), dim=-1)


class StepGate(nn.Module):
    """Gate over the recursion axis, per frame (as in the authors' ``TAGF.forward``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.encoder = StepGateEncoder(dim, hidden)

    def forward(self, stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """stack (B, T, M, D) → fused (B, T, D), weights (B, T, M)."""
        b, t, m, d = stack.shape
        flat = stack.reshape(b * t, m, d)
        score = self.encoder(flat).mean(dim=-1)  # (B·T, M)
        w = F.softmax(score / GATE_TEMPERATURE, dim=1)
        fused = (flat * w.unsqueeze(-1)).sum(dim=1)
        return fused.view(b, t, d), w.view(b, t, m)


class TimeGate(nn.Module):
    """Gate over time: BiLSTM over frames of the flattened stack → FC → M scores → softmax(/0.1).

    The two directions are separate LSTMs so that streaming can carry the forward state across
    windows and restrict the backward one to the window's lookahead (``forward_parts``).
    """

    def __init__(self, dim: int, steps: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.fwd = nn.LSTM(dim * steps, hidden, batch_first=True)
        self.bwd = nn.LSTM(dim * steps, hidden, batch_first=True)
        self.fc = nn.Linear(2 * hidden, steps)

    def weights(self, hf: torch.Tensor, hb: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.fc(torch.cat([hf, hb], dim=-1)) / GATE_TEMPERATURE, dim=-1)

    def forward(self, stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Offline, whole window: stack (B, T, M, D) → fused (B, T, D), weights (B, T, M)."""
        b, t, m, d = stack.shape
        flat = stack.reshape(b, t, m * d)
        hf, _ = self.fwd(flat)
        hb, _ = self.bwd(flat.flip(1))
        w = self.weights(hf, hb.flip(1))
        return (stack * w.unsqueeze(-1)).sum(dim=2), w


class SequenceFusion(nn.Module):
    """Concat + LSTM baseline: forward and backward LSTMs over time, outputs concatenated."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.fwd = nn.LSTM(dim, hidden, batch_first=True)
        self.bwd = nn.LSTM(dim, hidden, batch_first=True)


class TagfModel(nn.Module):
    """TAGF and baselines over per-frame front-end features; see the module docstring.

    ``forward(visual (B, T, DV_IN), audio (B, T, DA_IN)) → (B, T, 2)`` treats the input as one
    window (T == ``window`` for the attention fusions). ``forward_sliding`` is the streaming
    computation done offline; :class:`vibescope.stream.tagf.streamer.TagfStreamer` reproduces it chunk by chunk.
    """

    def __init__(self, config: TagfConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or TagfConfig()
        self.meta: dict[str, Any] = {}  # the checkpoint's meta (model_id, status, ...), once loaded
        if cfg.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {cfg.fusion!r}")
        if not 1 <= cfg.hop and cfg.hop + cfg.lookahead <= cfg.window:
            raise ValueError("need 1 <= hop and hop + lookahead <= window")
        dv, da = cfg.visual_channels[-1], cfg.audio_channels[-1]
        self.visual_encoder = TemporalConvNet(cfg.visual_dim, cfg.visual_channels, cfg.kernel_size, cfg.dropout)
        self.audio_encoder = TemporalConvNet(cfg.audio_dim, cfg.audio_channels, cfg.kernel_size, cfg.dropout)
        self.visual_norm = nn.BatchNorm1d(dv)
        self.audio_norm = nn.BatchNorm1d(da)
        m = cfg.recursions + 1
        if cfg.fusion != "concat_lstm":
            self.attention = nn.ModuleList(
                [JointCrossAttention(dv, da, cfg.window, cfg.attn_dropout, cfg.dropout) for _ in range(cfg.recursions)]
            )
        if cfg.fusion == "gate_steps":
            self.gate_v, self.gate_a = StepGate(dv, cfg.gate_hidden), StepGate(da, cfg.gate_hidden)
        elif cfg.fusion == "gate_time":
            self.gate_v, self.gate_a = TimeGate(dv, m, cfg.gate_hidden), TimeGate(da, m, cfg.gate_hidden)
        if cfg.fusion == "concat_lstm":
            self.sequence = SequenceFusion(dv + da, cfg.gate_hidden)
            head_in = 2 * cfg.gate_hidden
        else:
            head_in = dv + da
        self.head = nn.Sequential(
            nn.Linear(head_in, cfg.head_hidden),
            nn.BatchNorm1d(cfg.head_hidden),
            nn.LeakyReLU(),
            nn.Linear(cfg.head_hidden, 2),
        )

    # -- shared pieces -------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return {"gate_steps": "tagf-steps", "gate_time": "tagf-time", "last": "rjcma", "concat_lstm": "concat-lstm"}[
            self.config.fusion
        ]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @staticmethod
    def _bn(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        return norm(x.transpose(1, 2)).transpose(1, 2)

    def encode(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality temporal encoders: (B, T, DV_IN), (B, T, DA_IN) → (B, T, Dv), (B, T, Da), L2-normalised."""
        v = self._bn(self.visual_norm, self.visual_encoder(visual))
        a = self._bn(self.audio_norm, self.audio_encoder(audio))
        return F.normalize(v, dim=-1), F.normalize(a, dim=-1)

    def stacks(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recursive joint cross-attention → (B, T, R+1, Dv), (B, T, R+1, Da): input and every iteration."""
        sv, sa = [v], [a]
        for layer in self.attention:
            v, a = layer(v, a)
            sv.append(v)
            sa.append(a)
        return torch.stack(sv, dim=2), torch.stack(sa, dim=2)

    def regress(self, fused: torch.Tensor) -> torch.Tensor:
        b, t, d = fused.shape
        return torch.tanh(self.head(fused.reshape(b * t, d))).view(b, t, 2)

    # -- offline, one window -------------------------------------------------------------------
    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """(B, T, DV_IN), (B, T, DA_IN) → (B, T, 2) valence, arousal in [−1, 1]."""
        v, a = self.encode(visual, audio)
        fusion = self.config.fusion
        if fusion == "concat_lstm":
            x = torch.cat([v, a], dim=-1)
            hf, _ = self.sequence.fwd(x)
            hb, _ = self.sequence.bwd(x.flip(1))
            return self.regress(torch.cat([hf, hb.flip(1)], dim=-1))
        sv, sa = self.stacks(v, a)
        if fusion == "last":
            return self.regress(torch.cat([sv[:, :, -1], sa[:, :, -1]], dim=-1))
        fv, _ = self.gate_v(sv)
        fa, _ = self.gate_a(sa)
        return self.regress(torch.cat([fv, fa], dim=-1))

    # -- streaming computation -----------------------------------------------------------------
    @property
    def carries_state(self) -> bool:
        """True when a forward LSTM state is carried from window to window."""
        return self.config.fusion in ("gate_time", "concat_lstm")

    @property
    def encoder_context(self) -> int:
        """Past input frames the causal encoders look at (receptive field − 1)."""
        return max(self.visual_encoder.receptive_field, self.audio_encoder.receptive_field) - 1

    def encode_step(
        self,
        visual: torch.Tensor,
        audio: torch.Tensor,
        cache: dict[str, list] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, list]]:
        """Streaming encoders: new frames (B, n, ·) and the convolution caches (None at stream
        start) → encoded (B, n, Dv), (B, n, Da) and the new caches. Same values as ``encode``."""
        if cache is None:
            cache = {
                "v": self.visual_encoder.initial_cache(visual.shape[0]),
                "a": self.audio_encoder.initial_cache(audio.shape[0]),
            }
        v, cv = self.visual_encoder.step(visual, cache["v"])
        a, ca = self.audio_encoder.step(audio, cache["a"])
        v = self._bn(self.visual_norm, v)
        a = self._bn(self.audio_norm, a)
        return F.normalize(v, dim=-1), F.normalize(a, dim=-1), {"v": cv, "a": ca}

    def encode_frames(self, visual: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoders over inputs whose first ``encoder_context`` frames are context only.

        (B, C+T, DV_IN), (B, C+T, DA_IN) → (B, T, Dv), (B, T, Da). Each output frame sees its full
        receptive field of real (or explicitly zero) input frames, so computing a stream in pieces
        with C frames of history gives exactly the same values as computing it at once.
        """
        c = self.encoder_context
        v, a = self.encode(visual, audio)
        return v[:, c:], a[:, c:]

    def window_features(self, v: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything of a batch of windows that does not depend on carried state.

        Encoded windows v (K, W, Dv), a (K, W, Da) → for the frames from the first emitted frame to
        the window's end: the per-frame input of the recurrent part, or ``"fused"`` (K, H, Dv+Da)
        directly for the stateless fusions.
        """
        cfg = self.config
        h, la = cfg.hop, cfg.lookahead
        s = cfg.window - la - h  # first emitted frame in the window
        if cfg.fusion == "concat_lstm":
            return {"seq": torch.cat([v, a], dim=-1)[:, s:]}
        sv, sa = self.stacks(v, a)
        if cfg.fusion == "last":
            return {"fused": torch.cat([sv[:, s : s + h, -1], sa[:, s : s + h, -1]], dim=-1)}
        if cfg.fusion == "gate_steps":
            fv, _ = self.gate_v(sv[:, s : s + h])
            fa, _ = self.gate_a(sa[:, s : s + h])
            return {"fused": torch.cat([fv, fa], dim=-1)}
        return {"sv": sv[:, s:], "sa": sa[:, s:]}  # gate_time

    def _recurrent(self, fwd: nn.LSTM, bwd: nn.LSTM, seq: torch.Tensor, fwd_out: torch.Tensor) -> torch.Tensor:
        """Backward LSTM over emitted + lookahead frames of each window (zero state), joined with
        the already computed forward outputs of the emitted frames. seq (K, H+L, F), fwd_out (K, H, Hd)."""
        hb, _ = bwd(seq.flip(1))
        return torch.cat([fwd_out, hb.flip(1)[:, : self.config.hop]], dim=-1)

    def emit(
        self,
        feats: dict[str, torch.Tensor],
        state: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Outputs of K consecutive windows of ONE stream, in order: → (K·H, 2) and the new forward state.

        The forward LSTM runs over the emitted frames of the windows one after the other, continuing
        ``state`` (h, c) each (1, 1, hidden); this is exactly what carrying it window by window does.
        """
        h = self.config.hop
        fusion = self.config.fusion
        if fusion in ("last", "gate_steps"):
            fused = feats["fused"]
            return self.regress(fused.reshape(1, -1, fused.shape[-1]))[0], None
        if fusion == "concat_lstm":
            seq = feats["seq"]
            k = seq.shape[0]
            hf, (hn, cn) = self.sequence.fwd(seq[:, :h].reshape(1, k * h, -1), state)
            x = self._recurrent(self.sequence.fwd, self.sequence.bwd, seq, hf.view(k, h, -1))
            return self.regress(x.reshape(1, k * h, -1))[0], (hn, cn)
        outs, new_state = [], []
        for i, (gate, stack) in enumerate(((self.gate_v, feats["sv"]), (self.gate_a, feats["sa"]))):
            k, n, m, d = stack.shape
            flat = stack.reshape(k, n, m * d)
            st = (
                None
                if state is None
                else (
                    state[0][:, :, i * gate.hidden : (i + 1) * gate.hidden].contiguous(),
                    state[1][:, :, i * gate.hidden : (i + 1) * gate.hidden].contiguous(),
                )
            )
            hf, (hn, cn) = gate.fwd(flat[:, :h].reshape(1, k * h, m * d), st)
            hb, _ = gate.bwd(flat.flip(1))
            w = gate.weights(hf.view(k, h, -1), hb.flip(1)[:, :h])  # (K, H, M)
            outs.append((stack[:, :h] * w.unsqueeze(-1)).sum(dim=2))
            new_state.append((hn, cn))
        fused = torch.cat(outs, dim=-1)
        st = (
            torch.cat([new_state[0][0], new_state[1][0]], dim=-1),
            torch.cat([new_state[0][1], new_state[1][1]], dim=-1),
        )
        return self.regress(fused.reshape(1, -1, fused.shape[-1]))[0], st

    @property
    def left_pad(self) -> int:
        """Zero frames before the stream, so that the first window emits frame 0."""
        return self.config.window - self.config.lookahead - self.config.hop

    def forward_sliding(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The streaming computation, offline. (B, N, DV_IN), (B, N, DA_IN) → (B, N, 2).

        The stream is preceded by ``encoder_context + left_pad`` zero frames (nothing seen yet) and
        followed by zero frames up to whole hops plus ``lookahead``. Window k covers encoded padded
        frames [kH, kH+W) and emits original frames [kH, kH+H), each with ``lookahead`` to
        ``lookahead + H − 1`` future frames; see :class:`vibescope.stream.tagf.streamer.TagfStreamer`.
        """
        cfg = self.config
        n = visual.shape[1]
        left = self.encoder_context + self.left_pad
        right = (-n) % cfg.hop + cfg.lookahead
        v, a = self.encode_frames(F.pad(visual, (0, 0, left, right)), F.pad(audio, (0, 0, left, right)))
        b = v.shape[0]
        wv = v.unfold(1, cfg.window, cfg.hop).transpose(2, 3)  # (B, K, W, Dv)
        wa = a.unfold(1, cfg.window, cfg.hop).transpose(2, 3)
        k = wv.shape[1]
        feats = self.window_features(wv.reshape(b * k, cfg.window, -1), wa.reshape(b * k, cfg.window, -1))
        outs = []
        for i in range(b):
            part = {key: val[i * k : (i + 1) * k] for key, val in feats.items()}
            y, _ = self.emit(part, None)
            outs.append(y[:n])
        return torch.stack(outs)


def ccc(pred: torch.Tensor, target: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Concordance correlation coefficient along ``dim`` (Lin 1989)."""
    pm, tm = pred.mean(dim, keepdim=True), target.mean(dim, keepdim=True)
    pv = ((pred - pm) ** 2).mean(dim)
    tv = ((target - tm) ** 2).mean(dim)
    cov = ((pred - pm) * (target - tm)).mean(dim)
    return 2 * cov / (pv + tv + (pm.squeeze(dim) - tm.squeeze(dim)) ** 2 + 1e-8)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 − CCC per (sequence, dimension), averaged. pred/target (B, T, 2); mask (B, T) of labelled frames."""
    if mask is None:
        return 1 - ccc(pred.transpose(1, 2), target.transpose(1, 2)).mean()
    losses = []
    for i in range(pred.shape[0]):
        m = mask[i]
        if m.sum() < 2:
            continue
        losses.append(1 - ccc(pred[i][m].T, target[i][m].T).mean())
    return torch.stack(losses).mean() if losses else pred.sum() * 0


def load_checkpoint(path: str | os.PathLike) -> tuple[TagfModel, dict[str, Any]]:
    """(model in eval mode, the checkpoint's meta) from a file ``save_checkpoint`` wrote."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = TagfModel(TagfConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    model.meta = dict(ckpt.get("meta", {}))
    return model.eval(), model.meta


_SHARED: dict[str, TagfModel] = {}
_SHARED_LOCK = threading.Lock()


def load_shared(path: str | Path | None = None) -> TagfModel:
    """A checkpoint (default: the shipped ``tagf.pt``) loaded once per process, in eval mode, shared
    read-only by every session; its meta in ``model.meta``."""
    p = Path(path) if path else weights_path("tagf.pt")
    key = str(p.resolve())
    with _SHARED_LOCK:
        if key not in _SHARED:
            if not p.exists():
                raise FileNotFoundError(f"{p} missing: `vibescope train tagf --synthetic --default` writes it")
            model, _ = load_checkpoint(p)
            for q in model.parameters():
                q.requires_grad_(False)
            _SHARED[key] = model
        return _SHARED[key]
