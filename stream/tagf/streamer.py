"""``TagfStreamer``: TAGF over a live stream of per-frame features, chunk by chunk.

Like ``DemucsStreamer`` for ``Demucs`` (facebookresearch/denoiser): ``feed`` takes any number of
frames and returns the outputs that became final, ``flush`` ends the stream, and the result equals
:meth:`TagfModel.forward_sliding` on the whole stream (``selfcheck`` measures the difference).

Per frame (10 Hz) the causal encoders run once, incrementally (each convolution keeps the last
``(kernel − 1) · dilation`` frames of its input).
Every ``hop`` frames a window of the last ``window`` encoded frames goes through the recursive
joint cross-attention and the gate, and yields the outputs of ``hop`` frames that lie ``lookahead``
frames before the window's end. The time-axis gate's forward LSTM state is carried from window to
window; its backward direction sees only the ``hop + lookahead`` frames from the first emitted
frame to the window's end. Algorithmic lag: ``hop + lookahead − 1`` frames.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from vibescope.stream import state as stored
from vibescope.stream.tagf.model import TagfConfig, TagfModel, load_shared
from vibescope.stream.timebase import TICK_SECONDS as FRAME_S


class TagfStreamer:
    """Streaming wrapper of a :class:`TagfModel` (switched to eval mode).

    ``feed(visual (n, DV_IN), audio (n, DA_IN)) -> (m, 2)`` valence/arousal of the next m frames.
    """

    def __init__(self, model: TagfModel) -> None:
        self.model = model.eval()
        self.cfg: TagfConfig = model.config
        self.reset()

    def reset(self) -> None:
        cfg, m = self.cfg, self.model
        self.cache: dict[str, list] | None = None
        with torch.no_grad():
            # the same zero frames that precede the stream in forward_sliding; the first
            # encoder_context outputs are context only
            v, a = self._encode(torch.zeros(m.encoder_context + m.left_pad, cfg.visual_dim + cfg.audio_dim))
            v, a = v[m.encoder_context :], a[m.encoder_context :]
        self.buffer = torch.cat([v, a], dim=-1)  # encoded frames not yet slid past: (≤ W, Dv+Da)
        self.raw = torch.zeros(0, cfg.visual_dim + cfg.audio_dim)  # frames received, not yet encoded
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.finished = False

    # -- properties (denoiser's names) ------------------------------------------------------------
    @property
    def lag_frames(self) -> int:
        return self.cfg.hop + self.cfg.lookahead - 1

    @property
    def lag_ms(self) -> float:
        return self.lag_frames * FRAME_S * 1000

    @property
    def stride_ms(self) -> float:
        return self.cfg.hop * FRAME_S * 1000

    @property
    def window_ms(self) -> float:
        return self.cfg.window * FRAME_S * 1000

    # -- streaming ---------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New raw frames (n, DV_IN + DA_IN) → their encodings, using and updating the conv caches."""
        dv = self.cfg.visual_dim
        v, a, self.cache = self.model.encode_step(x[None, :, :dv], x[None, :, dv:], self.cache)
        return v[0], a[0]

    def feed(self, visual: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """visual (n, DV_IN), audio (n, DA_IN) float32 → (m, 2) float32: outputs that became final."""
        return TagfStreamer.feed_many([self], [visual], [audio])[0]

    @staticmethod
    def feed_many(streamers: list[TagfStreamer], visual: list[np.ndarray], audio: list[np.ndarray]) -> list[np.ndarray]:
        """``feed`` for several streams at once: the encoders run once for the streams that reach
        a hop with as many new frames, the attention and gate once for all their windows. Same
        values as ``feed``, up to the last bits."""
        out = [np.zeros((0, 2), np.float32) for _ in streamers]
        ready = []
        for i, (st, v, a) in enumerate(zip(streamers, visual, audio, strict=False)):
            if st.finished:
                raise RuntimeError("feed after flush")
            x = torch.cat([torch.as_tensor(np.asarray(v, np.float32)), torch.as_tensor(np.asarray(a, np.float32))], -1)
            if x.shape[0] == 0:
                continue
            st.raw = torch.cat([st.raw, x], dim=0)
            st.frames_in += x.shape[0]
            if st.buffer.shape[0] + st.raw.shape[0] >= st.cfg.window:
                ready.append(i)  # otherwise encode lazily, once per hop: same values, less work
        if not ready:
            return out
        with torch.inference_mode():
            encode: dict[tuple[int, int], list[TagfStreamer]] = {}
            for i in ready:
                encode.setdefault((id(streamers[i].model), streamers[i].raw.shape[0]), []).append(streamers[i])
            for group in encode.values():
                TagfStreamer._encode_group(group)
            windows: dict[int, list[int]] = {}
            for i in ready:
                windows.setdefault(id(streamers[i].model), []).append(i)
            for members in windows.values():
                outputs = TagfStreamer._run_windows_group([streamers[i] for i in members])
                for i, y in zip(members, outputs, strict=True):
                    streamers[i].frames_out += y.shape[0]
                    out[i] = y.numpy().astype(np.float32)
        return out

    @staticmethod
    def _encode_group(group: list[TagfStreamer]) -> None:
        """Encode the raw frames of streams of one model with as many raw frames, in one batch."""
        first = group[0]
        dv = first.cfg.visual_dim
        x = torch.stack([st.raw for st in group])  # (B, n, DV_IN + DA_IN)
        # every stream has its convolution caches (made by reset(), or loaded): stack them
        cache = {
            k: [
                (torch.cat([st.cache[k][j][0] for st in group]), torch.cat([st.cache[k][j][1] for st in group]))
                for j in range(len(first.cache[k]))
            ]
            for k in first.cache
        }
        v, a, cache = first.model.encode_step(x[..., :dv], x[..., dv:], cache)
        for b, st in enumerate(group):
            st.cache = {
                k: [(c0[b : b + 1].clone(), c1[b : b + 1].clone()) for c0, c1 in layers] for k, layers in cache.items()
            }
            st.buffer = torch.cat([st.buffer, torch.cat([v[b], a[b]], dim=-1)], dim=0)
            st.raw = st.raw[:0]

    @staticmethod
    def _run_windows_group(group: list[TagfStreamer]) -> list[torch.Tensor]:
        """Every full window of streams of one model: attention (and a stateless gate) in one
        batch, then each stream's ``emit`` over its own windows, in order."""
        cfg, model = group[0].cfg, group[0].model
        dv = cfg.visual_channels[-1]
        wins, counts = [], []
        for st in group:
            n = 0
            while st.buffer.shape[0] - n * cfg.hop >= cfg.window:
                wins.append(st.buffer[n * cfg.hop : n * cfg.hop + cfg.window])
                n += 1
            counts.append(n)
        if not wins:
            return [torch.zeros(0, 2) for _ in group]
        w = torch.stack(wins)
        feats = model.window_features(w[..., :dv], w[..., dv:])
        outs, pos = [], 0
        for st, n in zip(group, counts, strict=False):
            if n == 0:
                outs.append(torch.zeros(0, 2))
                continue
            y, st.state = model.emit({k: val[pos : pos + n] for k, val in feats.items()}, st.state)
            st.buffer = st.buffer[n * cfg.hop :]
            outs.append(y)
            pos += n
        return outs

    def flush(self) -> np.ndarray:
        """End of stream: zero frames as lookahead (and to complete the hop) → the remaining outputs."""
        cfg = self.cfg
        n_pad = (-self.frames_in) % cfg.hop + cfg.lookahead
        real_in = self.frames_in
        y = self.feed(np.zeros((n_pad, cfg.visual_dim), np.float32), np.zeros((n_pad, cfg.audio_dim), np.float32))
        keep = max(0, real_in - (self.frames_out - y.shape[0]))
        self.frames_in = real_in
        self.frames_out = real_in
        self.finished = True
        return y[:keep]

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically (numpy arrays, ints): ~25 kB."""
        return {
            "cache": {k: [(c0.numpy().copy(), c1.numpy().copy()) for c0, c1 in v] for k, v in self.cache.items()},
            "buffer": self.buffer.numpy().copy(),
            "raw": self.raw.numpy().copy(),
            "lstm": None if self.state is None else (self.state[0].numpy().copy(), self.state[1].numpy().copy()),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "finished": self.finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``; the shapes must be this model's (``StateError`` else)."""
        fresh = TagfStreamer(self.model).state_dict()
        state = stored.keys(state, set(fresh), "TAGF streamer")
        cache = stored.instance(state["cache"], dict, "TAGF encoder caches")
        if set(cache) != set(fresh["cache"]):
            raise stored.StateError("TAGF encoder caches: unexpected encoders")
        self.cache = {}
        for k, ref in fresh["cache"].items():
            layers = stored.instance(cache[k], list, "TAGF encoder cache")
            if len(layers) != len(ref):
                raise stored.StateError("TAGF encoder cache: wrong number of layers")
            self.cache[k] = [
                tuple(
                    torch.from_numpy(stored.array(pair[j], np.float32, r[j].shape, "TAGF encoder cache"))
                    for j in (0, 1)
                )
                for pair, r in zip((stored.seq(p, 2, "TAGF cache pair") for p in layers), ref, strict=True)
            ]
        width = fresh["buffer"].shape[1]
        self.buffer = torch.from_numpy(stored.array(state["buffer"], np.float32, (None, width), "TAGF window buffer"))
        self.raw = torch.from_numpy(stored.array(state["raw"], np.float32, (None, fresh["raw"].shape[1]), "TAGF input"))
        if self.buffer.shape[0] > self.cfg.window or self.raw.shape[0] > self.cfg.window:
            raise stored.StateError("TAGF streamer holds more frames than its window")
        lstm = None if state["lstm"] is None else stored.seq(state["lstm"], 2, "TAGF gate state")
        if lstm is not None:
            h = stored.array(lstm[0], np.float32, (None, 1, None), "TAGF gate state")
            c = stored.array(lstm[1], np.float32, h.shape, "TAGF gate state")
            if h.shape[0] > 4 or h.shape[2] > 4096:
                raise stored.StateError("TAGF gate state has too many layers")
            lstm = (torch.from_numpy(h), torch.from_numpy(c))
        self.state = lstm
        self.frames_in = stored.integer(state["frames_in"], "TAGF frames in", 0)
        self.frames_out = stored.integer(state["frames_out"], "TAGF frames out", 0)
        self.finished = stored.instance(state["finished"], bool, "TAGF finished")


def _random_chunks(rng: np.random.Generator, n: int, window: int) -> list[int]:
    sizes, left = [], n
    while left > 0:
        s = int(min(left, rng.choice([1, 1, 2, 3, 5, window + 7, 2 * window + 1])))
        sizes.append(s)
        left -= s
    return sizes


def selfcheck(seed: int = 0, model: TagfModel | None = None, n_frames: int = 157) -> dict[str, Any]:
    """Streaming vs offline sliding-window output on random features, over several chunkings
    (all 1-frame chunks, chunks larger than the window, random mixes, and a state save/load in the
    middle). → ``{"name": "tagf", "lag_ms", "stride_ms", "window_ms", "rtf", "delta", "fusion"}``,
    ``delta`` = max over chunkings of ‖stream − offline‖ / ‖offline‖; ``rtf`` = compute time per
    media time of streaming, one thread."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if model is None:
        model = load_shared()
    model = model.eval()
    cfg = model.config
    vis = rng.normal(0, 1, (n_frames, cfg.visual_dim)).astype(np.float32)
    aud = rng.normal(0, 1, (n_frames, cfg.audio_dim)).astype(np.float32)
    with torch.no_grad():
        ref = model.forward_sliding(torch.from_numpy(vis)[None], torch.from_numpy(aud)[None])[0].numpy()
    chunkings = [
        [1] * n_frames,
        [cfg.window + 5] * (n_frames // (cfg.window + 5)) + [n_frames % (cfg.window + 5)],
        [n_frames],
    ] + [_random_chunks(rng, n_frames, cfg.window) for _ in range(3)]
    deltas, compute_s = [], 0.0
    for ci, sizes in enumerate(chunkings):
        st = TagfStreamer(model)
        outs, pos = [], 0
        t0 = time.perf_counter()
        for j, s in enumerate(sizes):
            if s == 0:
                continue
            outs.append(st.feed(vis[pos : pos + s], aud[pos : pos + s]))
            pos += s
            if ci == len(chunkings) - 1 and j == len(sizes) // 2:  # save/load through bytes mid-stream
                blob = stored.dumps(st.state_dict())
                st = TagfStreamer(model)
                st.load_state_dict(stored.loads(blob))
        outs.append(st.flush())
        if ci == 0:
            compute_s = time.perf_counter() - t0
        out = np.concatenate(outs)
        assert out.shape == ref.shape, (out.shape, ref.shape)
        deltas.append(float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12)))
    return {
        "name": "tagf",
        "fusion": cfg.fusion,
        "lag_ms": TagfStreamer(model).lag_ms,
        "stride_ms": TagfStreamer(model).stride_ms,
        "window_ms": TagfStreamer(model).window_ms,
        "rtf": compute_s / (n_frames * FRAME_S),
        "delta": max(deltas),
    }
