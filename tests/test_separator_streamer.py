"""SeparatorStreamer: streaming == offline for any chunking, state round-trips, lag contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vibescope.stream.separator import transforms as T
from vibescope.stream.separator.model import CausalMaskSeparator
from vibescope.stream.separator.streamer import (
    SeparatorStreamer,
    offline,
    probe_signal,
    relative_delta,
    selfcheck,
    stream_in_chunks,
)

from conftest import untrained_separator


@pytest.fixture(scope="module", params=[0, 2], ids=["no-lookahead", "lookahead-2"])
def model(request) -> CausalMaskSeparator:
    """Every test runs on a model without look-ahead and on one with two frames of it."""
    return untrained_separator(seed=0, lookahead=request.param)


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return probe_signal(seed=3, seconds=1.3)


@pytest.mark.parametrize(
    "chunks",
    [1, 7, 255, 256, 257, 1600, 5000, [1, 900, 3, 511, 2048, 17], 10**6],
    ids=lambda c: str(c)[:20],
)
def test_streaming_matches_offline_for_any_chunking(model, signal, chunks):
    ref = offline(model, signal)
    out = stream_in_chunks(SeparatorStreamer(model), signal, chunks)
    assert out.shape == ref.shape == (2, len(signal))
    assert relative_delta(out, ref) <= 1e-5


def test_stems_sum_to_the_mixture(model, signal):
    out = stream_in_chunks(SeparatorStreamer(model), signal, 1600)
    np.testing.assert_allclose(out[0] + out[1], signal, atol=1e-6)


def test_output_is_never_ahead_of_the_lag(model, signal):
    streamer = SeparatorStreamer(model)
    for n in (100, 1000, 1600, 3000):
        streamer.feed(signal[:n] if streamer.fed == 0 else signal[streamer.fed : n])
        assert streamer.emitted <= streamer.fed
        assert streamer.fed - streamer.emitted <= streamer.lag_samples
    assert streamer.lag_ms <= 64.0


def test_causal_future_input_does_not_change_past_output(model, signal):
    a = stream_in_chunks(SeparatorStreamer(model), signal, 1600)
    changed = signal.copy()
    changed[12000:] = 0.3 * np.sign(changed[12000:])
    b = stream_in_chunks(SeparatorStreamer(model), changed, 1600)
    # samples more than the lag before the change are final before it arrives
    lag = SeparatorStreamer(model).lag_samples
    np.testing.assert_array_equal(a[:, : 12000 - lag], b[:, : 12000 - lag])
    assert not np.array_equal(a[:, 12000 - lag : 12000], b[:, 12000 - lag : 12000])  # but no earlier
    assert not np.array_equal(a[:, 12000:], b[:, 12000:])


def test_state_bytes_continue_bit_identically_in_a_fresh_streamer(model, signal):
    whole = SeparatorStreamer(model)
    first = whole.feed(signal[:7777])
    rest = [whole.feed(signal[7777:13000]), whole.flush()]

    part = SeparatorStreamer(model)
    first_again = part.feed(signal[:7777])
    blob = part.to_bytes()
    assert isinstance(blob, bytes) and len(blob) < 64_000
    fresh = SeparatorStreamer.from_bytes(blob, model)
    rest_again = [fresh.feed(signal[7777:13000]), fresh.flush()]
    np.testing.assert_array_equal(first, first_again)
    for x, y in zip(rest, rest_again, strict=False):
        np.testing.assert_array_equal(x, y)
    assert fresh.drain_music_logits()[0] == whole.drain_music_logits()[0]


def test_music_logits_one_per_frame_in_order(model, signal):
    streamer = SeparatorStreamer(model)
    stream_in_chunks(streamer, signal, 999)
    start, logits = streamer.drain_music_logits()
    assert start == 0 and len(logits) == T.n_frames(len(signal))
    with torch.inference_mode():
        _, _, ref = model(torch.from_numpy(signal)[None])
    np.testing.assert_allclose(logits, ref[0].numpy(), atol=1e-4)


def test_selfcheck_reports_lag_stride_rtf_and_delta(model):
    report = selfcheck(seed=1, model=model)
    assert set(report) == {"name", "lag_ms", "stride_ms", "rtf", "delta"}
    assert report["name"] == "separator"
    assert report["lag_ms"] == 32.0 + 16.0 * model.lookahead and report["stride_ms"] == 16.0
    assert report["delta"] <= 1e-5
    assert report["rtf"] > 0


def test_the_shared_window_is_a_normal_tensor_even_when_made_in_inference_mode():
    import torch

    from vibescope.stream.separator import transforms as T

    T.window.cache_clear()
    with torch.inference_mode():
        first = T.window()
    assert not first.is_inference()  # training multiplies by it and saves it for backward
    x = torch.ones(T.N_FFT, requires_grad=True)
    (x * T.window()).sum().backward()
    assert torch.allclose(x.grad, T.window())


def test_zero_lookahead_added_to_weights_keeps_their_outputs_and_delays_them():
    """``with_lookahead`` (how look-ahead fine-tuning starts): offline, the same stems as the
    weights it extends; streamed, each sample comes out two hops later."""
    base = untrained_separator(seed=4)
    ahead = base.with_lookahead(2)
    assert ahead.lookahead == 2 and base.lookahead == 0
    assert not torch.any(ahead.lookahead_head.weight) and not torch.any(ahead.lookahead_head.bias)
    x = probe_signal(seed=6, seconds=1.0)
    np.testing.assert_allclose(offline(ahead, x), offline(base, x), atol=1e-6)
    a, b = SeparatorStreamer(base), SeparatorStreamer(ahead)
    assert (a.lag_samples, b.lag_samples) == (T.N_FFT, T.N_FFT + 2 * T.HOP)
    out_a, out_b = a.feed(x[:8000]), b.feed(x[:8000])
    assert out_a.shape[1] - out_b.shape[1] == 2 * T.HOP
    np.testing.assert_allclose(out_b, out_a[:, : out_b.shape[1]], atol=1e-6)


def test_streams_at_different_points_share_a_batch(model):
    """feed_many over streams whose look-ahead queues hold different numbers of frames (one just
    started, one long running) gives each the values it gets alone."""
    x = probe_signal(seed=8, seconds=1.5)
    together, alone = [SeparatorStreamer(model) for _ in range(3)], [SeparatorStreamer(model) for _ in range(3)]
    starts = [0, 300, 5000]  # samples each stream has had before the shared calls
    for s, t, n in zip(together, alone, starts, strict=False):
        s.feed(x[:n]), t.feed(x[:n])
    got, want = [[] for _ in starts], [[] for _ in starts]
    for r in range(8):
        pieces = [x[n + 512 * r : n + 512 * (r + 1)] for n in starts]
        for i, y in enumerate(SeparatorStreamer.feed_many(together, pieces)):
            got[i].append(y)
        for i, (t, piece) in enumerate(zip(alone, pieces, strict=False)):
            want[i].append(t.feed(piece))
    for g, w in zip(got, want, strict=False):
        g, w = np.concatenate(g, axis=1), np.concatenate(w, axis=1)
        assert g.shape == w.shape and w.shape[1] > 0
        np.testing.assert_allclose(g, w, atol=1e-6)


def test_a_state_saved_before_lookahead_existed_continues_the_same():
    """Sessions saved in Redis by the previous server version (no look-ahead keys in the streamer
    state) go on exactly as they would have."""
    model = untrained_separator(seed=2)
    x = probe_signal(seed=9, seconds=1.2)
    whole = SeparatorStreamer(model)
    whole.feed(x[:6001])
    rest = np.concatenate([whole.feed(x[6001:]), whole.flush()], axis=1)
    part = SeparatorStreamer(model)
    part.feed(x[:6001])
    old = {k: v for k, v in part.state_dict().items() if k not in ("past_frames", "past_feats", "mix", "out_frames")}
    fresh = SeparatorStreamer(model)
    fresh.load_state_dict(old)
    again = np.concatenate([fresh.feed(x[6001:]), fresh.flush()], axis=1)
    np.testing.assert_array_equal(again, rest)
