"""TagfStreamer: streaming == offline sliding window, lag/stride contract, carried gate state."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vibescope.stream.tagf.model import FUSIONS, TagfConfig, TagfModel
from vibescope.stream.tagf.streamer import TagfStreamer, selfcheck
from vibescope.stream.tagf.train import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(fusion: str, seed: int = 0) -> TagfModel:
    torch.manual_seed(seed)
    m = TagfModel(TagfConfig(fusion=fusion))
    for mod in m.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.normal_(0, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _offline(model: TagfModel, vis: np.ndarray, aud: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.forward_sliding(torch.from_numpy(vis)[None], torch.from_numpy(aud)[None])[0].numpy()


def _stream(model: TagfModel, vis: np.ndarray, aud: np.ndarray, sizes: list[int]) -> np.ndarray:
    st, outs, pos = TagfStreamer(model), [], 0
    for s in sizes:
        outs.append(st.feed(vis[pos : pos + s], aud[pos : pos + s]))
        pos += s
    outs.append(st.flush())
    return np.concatenate(outs)


def _data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12)).astype(np.float32), rng.normal(size=(n, 25)).astype(np.float32)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_streaming_equals_offline_for_any_chunking(fusion: str) -> None:
    report = selfcheck(seed=3, model=_model(fusion), n_frames=97)
    assert report["delta"] <= 1e-5
    assert report["name"] == "tagf"


def test_chunks_of_one_frame_and_larger_than_the_window_match_offline() -> None:
    model = _model("gate_time")
    vis, aud = _data(133)
    ref = _offline(model, vis, aud)
    for sizes in ([1] * 133, [95, 38], [133]):
        out = _stream(model, vis, aud, sizes)
        assert out.shape == ref.shape
        assert np.linalg.norm(out - ref) / np.linalg.norm(ref) <= 1e-5


def test_latency_and_output_rate_meet_the_streaming_contract() -> None:
    st = TagfStreamer(_model("gate_steps"))
    assert st.lag_ms <= 500  # lookahead at most 0.5 s
    assert st.stride_ms <= 200  # an output at least every 200 ms of media
    vis, aud = _data(60)
    emitted_at = []
    for i in range(60):
        if len(st.feed(vis[i : i + 1], aud[i : i + 1])):
            emitted_at.append(i)
    assert np.diff(emitted_at).max() * 100 <= 200


def test_outputs_do_not_depend_on_frames_beyond_the_lookahead() -> None:
    for fusion in FUSIONS:
        model = _model(fusion)
        vis, aud = _data(80)
        ref = _offline(model, vis, aud)
        cfg = model.config
        f = 40  # an output frame
        reach = f + cfg.lookahead + cfg.hop  # first frame it must not see (f is the first of its hop at worst)
        vis2, aud2 = vis.copy(), aud.copy()
        vis2[reach:] += 3.0
        aud2[reach:] -= 3.0
        out = _offline(model, vis2, aud2)
        assert np.allclose(out[: f + 1], ref[: f + 1], atol=1e-6), fusion
        assert not np.allclose(out[reach:], ref[reach:])


def test_time_gate_output_depends_on_the_carried_forward_state() -> None:
    """The time-axis gate (and the LSTM baseline) continue a forward LSTM state from the previous
    window; the recursion-axis gate and RJCMA have none."""
    vis, aud = _data(60)
    for fusion, carries in (("gate_time", True), ("concat_lstm", True), ("gate_steps", False), ("last", False)):
        model = _model(fusion)
        st = TagfStreamer(model)
        st.feed(vis, aud)
        assert (st.state is not None) == carries, fusion
        if not carries:
            continue
        dv = model.config.visual_channels[-1]
        w = torch.nn.functional.normalize(torch.randn(1, model.config.window, st.buffer.shape[1]), dim=-1)
        with torch.no_grad():
            feats = model.window_features(w[..., :dv], w[..., dv:])
            y_carried, _ = model.emit(feats, st.state)
            y_fresh, _ = model.emit(feats, None)
        assert not torch.allclose(y_carried, y_fresh), fusion


def test_state_restored_in_a_fresh_process_continues_bit_identically(tmp_path: Path) -> None:
    model = _model("gate_time")
    ckpt = tmp_path / "m.pt"
    save_checkpoint(model, ckpt, {})
    vis, aud = _data(90)
    st = TagfStreamer(model)
    first = st.feed(vis[:47], aud[:47])
    (tmp_path / "state.pkl").write_bytes(pickle.dumps(st.state_dict()))
    np.save(tmp_path / "vis.npy", vis[47:])
    np.save(tmp_path / "aud.npy", aud[47:])
    rest_here = np.concatenate([st.feed(vis[47:], aud[47:]), st.flush()])
    code = (
        "import pickle, sys, numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from vibescope.stream.tagf.model import load_checkpoint\n"
        "from vibescope.stream.tagf.streamer import TagfStreamer\n"
        "d = sys.argv[1]\n"
        "m, _ = load_checkpoint(d + '/m.pt')\n"
        "st = TagfStreamer(m)\n"
        "st.load_state_dict(pickle.loads(open(d + '/state.pkl', 'rb').read()))\n"
        "y = np.concatenate([st.feed(np.load(d + '/vis.npy'), np.load(d + '/aud.npy')), st.flush()])\n"
        "np.save(d + '/rest.npy', y)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, check=True)
    rest_there = np.load(tmp_path / "rest.npy")
    assert len(first) + len(rest_there) == 90
    assert np.array_equal(rest_here, rest_there)


def test_state_dict_is_small_and_picklable() -> None:
    st = TagfStreamer(_model("gate_time"))
    vis, aud = _data(70)
    st.feed(vis, aud)
    assert len(pickle.dumps(st.state_dict())) < 64_000
