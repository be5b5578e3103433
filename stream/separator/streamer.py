"""Streaming inference for :class:`CausalMaskSeparator`, in the style of denoiser's DemucsStreamer.

``feed(x)`` takes any number of 16 kHz samples and returns the stems of every sample that became
final, *aligned with the input* (output sample ``i`` is the estimate for input sample ``i``);
``flush()`` zero-pads and returns the rest, so the total output length equals the total input
length. A sample is final once the frame ending ``HOP`` samples after it is masked, and a frame is
masked once the model's ``lookahead`` frames after it are in: the algorithmic lag is ``N_FFT`` +
``lookahead * HOP`` samples (32 ms without look-ahead, 64 ms with two frames), the stride ``HOP``
= 256 samples (16 ms).

Everything needed to continue (pending input, left context, the frames waiting for their
look-ahead and their features, input not yet emitted, overlap-add tail, GRU state, counters,
undrained music logits) is in ``state_dict()`` as numpy arrays and ints; ``to_bytes``
/ ``from_bytes`` round-trip it through ``np.savez`` (no pickle).
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch

from vibescope.stream import state as st
from vibescope.stream.separator import transforms as T
from vibescope.stream.separator.model import CausalMaskSeparator, load_shared

STEMS = ("ost", "music")


class SeparatorStreamer:
    """Causal BGM/OST separation of a 16 kHz mono stream, chunk by chunk.

    Args:
        model: the (shared, read-only) model; default: the shipped checkpoint, loaded once.
    """

    stride_samples = T.HOP
    window_samples = T.N_FFT

    def __init__(self, model: CausalMaskSeparator | None = None) -> None:
        self.model = model if model is not None else load_shared()
        self.reset()

    @property
    def lag_samples(self) -> int:
        return T.N_FFT + self.model.lookahead * T.HOP

    @property
    def lag_ms(self) -> float:
        return 1000.0 * self.lag_samples / T.SAMPLE_RATE

    @property
    def stride_ms(self) -> float:
        return 1000.0 * self.stride_samples / T.SAMPLE_RATE

    def reset(self) -> None:
        c = self.model.config
        self._context = np.zeros(T.PAD, np.float32)  # input samples before the pending ones
        self._pending = np.zeros(0, np.float32)  # input not yet part of a full hop
        self._ola = np.zeros(T.N_FFT - T.HOP, np.float32)  # synthesis tail of the last frame
        self._h = np.zeros((c.layers, 1, c.hidden), np.float32)
        self._past_frames = np.zeros((0, T.N_FFT), np.float32)  # frames waiting for their look-ahead
        self._past_feats = np.zeros((0, self.model.feature_size), np.float32)  # ... and their features
        self._mix = np.zeros(0, np.float32)  # input from the next output sample on
        self._out_frames = 0  # frames masked so far (``lookahead`` fewer, once enough came in)
        self._fed = 0  # input samples received
        self._emitted = 0  # output samples returned
        self._logits = np.zeros(0, np.float32)  # music logits not yet drained
        self._logit_start = 0  # frame index of self._logits[0]

    @property
    def fed(self) -> int:
        return self._fed

    @property
    def emitted(self) -> int:
        return self._emitted

    def feed(self, x: np.ndarray) -> np.ndarray:
        """Feed ``(n,)`` float32 samples; returns ``(2, m)`` final stems ``[ost, music]``."""
        return SeparatorStreamer.feed_many([self], [x])[0]

    @staticmethod
    def feed_many(streamers: list[SeparatorStreamer], xs: list[np.ndarray]) -> list[np.ndarray]:
        """``feed`` for several streams at once: streams with as many new frames share one model
        call (a batch row and a GRU state row each). Same values as ``feed``, up to the last bits."""
        xs = [np.asarray(x, dtype=np.float32).reshape(-1) for x in xs]
        for s, x in zip(streamers, xs, strict=False):
            s._fed += len(x)
        return SeparatorStreamer._process_many(streamers, xs)

    def _process(self, x: np.ndarray) -> np.ndarray:
        return SeparatorStreamer._process_many([self], [x])[0]

    @staticmethod
    def _process_many(streamers: list[SeparatorStreamer], xs: list[np.ndarray]) -> list[np.ndarray]:
        cut = [s._cut_frames(x) for s, x in zip(streamers, xs, strict=False)]
        out: list[np.ndarray] = [np.zeros((2, 0), np.float32)] * len(streamers)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, c in enumerate(cut):
            if c is not None:
                key = (id(streamers[i].model), len(c[1]), len(streamers[i]._past_frames))
                groups.setdefault(key, []).append(i)
        for members in groups.values():
            frames = torch.from_numpy(np.stack([cut[i][1] for i in members]))
            h = torch.from_numpy(np.concatenate([streamers[i]._h for i in members], axis=1))
            past = (
                torch.from_numpy(np.stack([streamers[i]._past_frames for i in members])),
                torch.from_numpy(np.stack([streamers[i]._past_feats for i in members])),
            )
            with torch.inference_mode():
                ost_frames, logits, h, past = streamers[members[0]].model.forward_frames(frames, h, past)
            ost_frames, logits, h = ost_frames.numpy(), logits.numpy(), h.numpy()
            past_frames, past_feats = past[0].numpy(), past[1].numpy()
            for b, i in enumerate(members):
                s = streamers[i]
                s._h, s._past_frames, s._past_feats = (
                    h[:, b : b + 1].copy(),
                    past_frames[b].copy(),
                    past_feats[b].copy(),
                )
                s._logits = np.concatenate([s._logits, logits[b]])
                s._mix = np.concatenate([s._mix, cut[i][0]])
                out[i] = s._overlap_add(ost_frames[b])
        return out

    def _cut_frames(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Take the new full hops: → (their input, their frames (k, N_FFT)), or None."""
        buf = np.concatenate([self._pending, x]) if len(self._pending) else x
        k = len(buf) // T.HOP
        if k == 0:
            self._pending = buf.copy()
            return None
        full = np.concatenate([self._context, buf[: k * T.HOP]])  # input from (frames-1)*HOP on
        self._pending = buf[k * T.HOP :].copy()
        self._context = full[-T.PAD :].copy()
        frames = np.lib.stride_tricks.sliding_window_view(full, T.N_FFT)[:: T.HOP]
        return buf[: k * T.HOP].copy(), np.array(frames, dtype=np.float32)

    def _overlap_add(self, ost_frames: np.ndarray) -> np.ndarray:
        """The newly masked frames → the ``(2, m)`` stems that became final."""
        k = len(ost_frames)
        if k == 0:
            return np.zeros((2, 0), np.float32)
        # overlap-add at 50 % overlap: each hop is the second half of frame i-1 plus the first of frame i
        halves = ost_frames.reshape(k, 2, T.HOP)
        out = np.empty((k + 1) * T.HOP, np.float32)
        out[: T.HOP] = self._ola
        out[T.HOP :] = halves[:, 1].reshape(-1)
        out[: k * T.HOP] += halves[:, 0].reshape(-1)
        self._ola = out[k * T.HOP :].copy()
        ost = out[: k * T.HOP]
        if self._out_frames == 0:  # the first frame's first hop lies before the stream started
            ost = ost[T.HOP :]
        self._out_frames += k
        mixture, self._mix = self._mix[: len(ost)], self._mix[len(ost) :]
        n = min(len(ost), self._fed - self._emitted)
        self._emitted += n
        return np.stack([ost[:n], mixture[:n] - ost[:n]])

    def flush(self) -> np.ndarray:
        """Zero-pad the pending input and return the remaining ``(2, m)`` stems."""
        missing = self._fed - self._emitted
        if missing <= 0:
            return np.zeros((2, 0), np.float32)
        pad = (T.HOP - len(self._pending)) % T.HOP + T.HOP + self.model.lookahead * T.HOP
        out = self._process(np.zeros(pad, np.float32))[:, :missing]
        # the look-ahead frames made of padding alone are not frames of the stream: no logits
        self._logits = self._logits[: max(T.n_frames(self._fed) - self._logit_start, 0)]
        return out

    def drain_music_logits(self) -> tuple[int, np.ndarray]:
        """``(first frame index, logits (k,))`` computed since the last drain; frame ``f`` is
        centred on input sample ``f * HOP``."""
        start, logits = self._logit_start, self._logits
        self._logit_start += len(logits)
        self._logits = np.zeros(0, np.float32)
        return start, logits

    def state_dict(self) -> dict:
        return {
            "context": self._context.copy(),
            "pending": self._pending.copy(),
            "ola": self._ola.copy(),
            "h": self._h.copy(),
            "past_frames": self._past_frames.copy(),
            "past_feats": self._past_feats.copy(),
            "mix": self._mix.copy(),
            "frames": int(self._out_frames + len(self._past_frames)),  # the GRU's: masked + waiting
            "out_frames": int(self._out_frames),
            "fed": int(self._fed),
            "emitted": int(self._emitted),
            "logits": self._logits.copy(),
            "logit_start": int(self._logit_start),
        }

    def load_state_dict(self, state: dict) -> None:
        c, la = self.model.config, self.model.lookahead
        common = {"context", "pending", "ola", "h", "frames", "fed", "emitted", "logits", "logit_start"}
        newer = {"past_frames", "past_feats", "mix", "out_frames"}
        if not isinstance(state, dict) or set(state) not in (common, common | newer):
            raise st.StateError("separator state: unexpected keys")
        self._context = st.array(np.asarray(state["context"]), np.float32, (T.PAD,), "separator context")
        self._pending = st.array(np.asarray(state["pending"]), np.float32, (None,), "separator pending")
        if len(self._pending) >= T.HOP:
            raise st.StateError("separator holds more than a hop of pending input")
        self._ola = st.array(np.asarray(state["ola"]), np.float32, (T.N_FFT - T.HOP,), "separator synthesis tail")
        self._h = st.array(np.asarray(state["h"]), np.float32, (c.layers, 1, c.hidden), "separator GRU state")
        if "out_frames" in state:
            self._past_frames = st.array(
                np.asarray(state["past_frames"]).reshape(-1, T.N_FFT), np.float32, (None, T.N_FFT), "separator frames"
            )
            self._past_feats = st.array(
                np.asarray(state["past_feats"]).reshape(-1, self.model.feature_size),
                np.float32,
                (None, self.model.feature_size),
                "separator features",
            )
            if len(self._past_frames) > la or len(self._past_feats) != len(self._past_frames):
                raise st.StateError("separator state holds more frames than its look-ahead waits for")
            self._mix = st.array(np.asarray(state["mix"]), np.float32, (None,), "separator mixture")
            if len(self._mix) > T.N_FFT * (la + 2):
                raise st.StateError("separator state holds more mixture than its lag")
            self._out_frames = st.integer(state["out_frames"], "separator frames", 0)
        else:  # saved before look-ahead existed: no frame waits, and the one input hop not yet
            # emitted is the last hop of the left context
            self._past_frames = np.zeros((0, T.N_FFT), np.float32)
            self._past_feats = np.zeros((0, self.model.feature_size), np.float32)
            self._out_frames = st.integer(state["frames"], "separator frames", 0)
            self._mix = self._context[-T.HOP :].copy() if self._out_frames else np.zeros(0, np.float32)
        self._fed = st.integer(state["fed"], "separator input count", 0)
        self._emitted = st.integer(state["emitted"], "separator output count", 0)
        self._logits = st.array(np.asarray(state["logits"]), np.float32, (None,), "separator logits")
        self._logit_start = st.integer(state["logit_start"], "separator logit start", 0)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in self.state_dict().items()})
        return buf.getvalue()

    def load_bytes(self, blob: bytes) -> None:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            self.load_state_dict({k: z[k] for k in z.files})

    @classmethod
    def from_bytes(cls, blob: bytes, model: CausalMaskSeparator | None = None) -> SeparatorStreamer:
        streamer = cls(model)
        streamer.load_bytes(blob)
        return streamer


def stream_in_chunks(streamer: SeparatorStreamer, x: np.ndarray, sizes: list[int] | int) -> np.ndarray:
    """Feed ``x`` in chunks (a fixed size or a cycle of sizes) and flush; returns ``(2, len(x))``."""
    sizes = [sizes] if isinstance(sizes, int) else sizes
    outs, pos, i = [], 0, 0
    while pos < len(x):
        n = sizes[i % len(sizes)]
        outs.append(streamer.feed(x[pos : pos + n]))
        pos, i = pos + n, i + 1
    outs.append(streamer.flush())
    return np.concatenate(outs, axis=1)


def offline(model: CausalMaskSeparator, x: np.ndarray) -> np.ndarray:
    """The offline forward on one waveform: ``(n,)`` -> ``(2, n)`` stems ``[ost, music]``."""
    with torch.inference_mode():
        ost, music, _ = model(torch.from_numpy(np.asarray(x, np.float32))[None])
    return np.stack([ost[0].numpy(), music[0].numpy()])


def relative_delta(stream: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(stream - ref) / max(np.linalg.norm(ref), 1e-12))


def probe_signal(seed: int = 0, seconds: float = 3.0) -> np.ndarray:
    """A reproducible music-plus-noise-bursts signal for self-checks, float32 ``(n,)``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * T.SAMPLE_RATE)
    t = np.arange(n) / T.SAMPLE_RATE
    x = sum(0.05 * np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, 4))
    bursts = rng.standard_normal(n) * 0.03 * (np.sin(2 * np.pi * 3 * t) > 0.3)
    return (x + bursts).astype(np.float32)


def selfcheck(seed: int = 0, model: CausalMaskSeparator | None = None) -> dict:
    """Lag, stride, single-thread RTF and the worst streaming-vs-offline relative delta over
    several random chunkings (1-sample chunks, random sizes, ticks, chunks bigger than the
    window, everything at once). Returns ``{"name", "lag_ms", "stride_ms", "rtf", "delta"}``."""
    model = model if model is not None else load_shared()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(seed)
        x = probe_signal(seed, seconds=2.0)
        ref = offline(model, x)
        chunkings: list[list[int] | int] = [
            1,
            [int(v) for v in rng.integers(1, 700, 50)],
            1600,
            [int(v) for v in rng.integers(T.N_FFT + 1, 8000, 10)],
            len(x),
        ]
        delta = max(relative_delta(stream_in_chunks(SeparatorStreamer(model), x, c), ref) for c in chunkings)
        streamer = SeparatorStreamer(model)
        x_long = probe_signal(seed + 1, seconds=10.0)
        start = time.process_time()  # CPU time: robust to other load on a shared machine
        stream_in_chunks(streamer, x_long, 1600)
        rtf = (time.process_time() - start) / (len(x_long) / T.SAMPLE_RATE)
    finally:
        torch.set_num_threads(threads)
    return {
        "name": "separator",
        "lag_ms": streamer.lag_ms,
        "stride_ms": streamer.stride_ms,
        "rtf": round(rtf, 5),
        "delta": delta,
    }
