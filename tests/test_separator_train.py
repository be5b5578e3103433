"""`vibescope train separator`: checkpoints, resume, final weights a streamer can load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vibescope.server.cli import main
from vibescope.stream.separator.model import MODEL_ID, CausalMaskSeparator
from vibescope.stream.separator.streamer import SeparatorStreamer, stream_in_chunks
from vibescope.stream.separator.wavio import write_wav


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("traindata")
    rng = np.random.default_rng(0)
    t = np.arange(64000) / 16000
    for i in range(4):
        split = "val" if i == 0 else "train"
        music = (0.05 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32)
        ost = (0.05 * rng.standard_normal(64000) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
        d = out / f"{split}-{i:05d}"
        d.mkdir()
        for name, a in (("mixture", music + ost), ("music", music), ("ost", ost)):
            write_wav(d / f"{name}.wav", a)
        (d / "meta.json").write_text(json.dumps({"id": d.name, "split": split, "kind": "both"}))
    return str(out)


def test_train_writes_checkpoint_and_resumes(data_dir, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "models"
    args = [
        "train",
        "separator",
        "--data",
        data_dir,
        "--out",
        str(out),
        "--batch",
        "2",
        "--hidden",
        "32",
        "--nice",
        "0",
        "--quiet",
    ]
    assert main(args + ["--steps", "2"]) == 0
    assert torch.load(out / "separator.ckpt", weights_only=False)["step"] == 2
    assert main(args + ["--steps", "3"]) == 0  # resumes at step 2, runs one more
    assert torch.load(out / "separator.ckpt", weights_only=False)["step"] == 3
    ckpt = torch.load(out / "separator.pt", map_location="cpu", weights_only=True)
    assert ckpt["model_id"] == MODEL_ID and ckpt["train"]["steps"] == 3
    model = CausalMaskSeparator.from_checkpoint(ckpt)
    x = np.zeros(4000, np.float32)
    assert stream_in_chunks(SeparatorStreamer(model), x, 1600).shape == (2, 4000)


def test_train_without_data_is_a_clean_user_error(tmp_path, capsys):
    assert (
        main(["train", "separator", "--data", str(tmp_path / "none"), "--out", str(tmp_path), "--nice", "0", "--quiet"])
        == 2
    )
    assert "no such data directory" in capsys.readouterr().err


def test_finetune_init_starts_from_given_weights(data_dir, tmp_path):
    """`python -m vibescope.stream.separator.finetune_init` + `train --lr`: resumes at step 0 from the source
    weights (feature statistics kept), with a fresh optimiser and the warm-up learning rate."""
    from vibescope.stream.separator.finetune_init import write_init
    from vibescope.stream.separator.model import SeparatorConfig

    torch.set_num_threads(1)
    torch.manual_seed(1)
    src_model = CausalMaskSeparator(SeparatorConfig(hidden=32))
    src_model.feat_mean.fill_(-3.0)
    torch.save(src_model.checkpoint(), tmp_path / "src.pt")
    out = tmp_path / "ft"
    out.mkdir()
    write_init(str(tmp_path / "src.pt"), str(out / "separator.ckpt"), 3e-4)
    state = torch.load(out / "separator.ckpt", weights_only=False)
    assert state["step"] == 0 and state["opt"]["param_groups"][0]["lr"] == pytest.approx(3e-4 / 200)
    for k, v in src_model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    args = [
        "train",
        "separator",
        "--data",
        data_dir,
        "--out",
        str(out),
        "--batch",
        "2",
        "--hidden",
        "32",
        "--nice",
        "0",
        "--quiet",
        "--lr",
        "3e-4",
        "--steps",
        "2",
    ]
    assert main(args) == 0
    ckpt = torch.load(out / "separator.pt", map_location="cpu", weights_only=True)
    assert ckpt["train"]["steps"] == 2
    assert torch.equal(ckpt["state_dict"]["feat_mean"], src_model.feat_mean)  # not re-estimated


def _clicks_sampler(seed=0):
    from vibescope.stream.separator.dataset import Clip
    from vibescope.stream.separator.train import BatchSampler

    rng = np.random.default_rng(seed)
    t = np.arange(64000) / 16000
    clips = []
    for i in range(3):
        music = (0.05 * np.sin(2 * np.pi * (220 + 30 * i) * t)).astype(np.float32)
        ost = np.zeros(64000, np.float32)
        ost[rng.choice(64000, 40, replace=False)] = 0.5  # sparse clicks: a room smears them
        clips.append(Clip(f"train-{i}", "train", music + ost, music, ost, {}))
    return BatchSampler(clips, seed=1)


def test_ost_reverb_augmentation_changes_the_target_and_keeps_the_mixture_sum(monkeypatch):
    from vibescope.stream.separator import train as tr

    monkeypatch.setattr(tr, "OST_SPEED_P", 0.0)
    monkeypatch.setattr(tr, "OST_REVERB_P", 0.0)
    mixture, music, ost = _clicks_sampler().batch(0, 8)
    dry = (ost.abs() > 1e-7).float().mean().item()
    assert torch.equal(mixture, music + ost) and dry < 0.3  # (the OST EQ, p=0.3, also smears)
    monkeypatch.setattr(tr, "OST_REVERB_P", 1.0)
    mixture, music, ost = _clicks_sampler().batch(0, 8)
    assert torch.equal(mixture, music + ost)  # the reverberant OST is the target the mixture holds
    assert (ost.abs() > 1e-7).float().mean().item() > 0.5  # clicks smeared into room tails


def test_ost_speed_augmentation_moves_the_clicks(monkeypatch):
    from vibescope.stream.separator import train as tr

    monkeypatch.setattr(tr, "OST_REVERB_P", 0.0)
    monkeypatch.setattr(tr, "OST_SPEED_P", 0.0)
    _, _, plain = _clicks_sampler().batch(3, 4)
    monkeypatch.setattr(tr, "OST_SPEED_P", 1.0)
    mixture, music, fast = _clicks_sampler().batch(3, 4)
    assert torch.equal(mixture, music + fast)
    assert not torch.equal((plain.abs() > 1e-7), (fast.abs() > 1e-7))


def test_synthetic_rir_decays_60_db_in_rt60():
    from vibescope.stream.separator.train import synthetic_rir

    rng = np.random.default_rng(5)
    for rt60 in (0.15, 0.3):
        h = synthetic_rir(rng, rt60).astype(np.float64)
        assert h[0] == 1.0 and len(h) == int(rt60 * 16000)
        tail = h[1:]
        env = np.convolve(tail**2, np.ones(160) / 160, mode="valid")  # 10 ms energy envelope
        tt = np.arange(len(env)) / 16000
        sel = (tt > 0.01) & (tt < rt60 * 0.8)
        slope = np.polyfit(tt[sel], 10 * np.log10(env[sel] + 1e-30), 1)[0]  # dB per second
        assert abs(-60.0 / slope - rt60) < 0.25 * rt60


def test_ost_weight_changes_the_update_and_is_recorded(data_dir, tmp_path):
    """`--ost-weight` scales the OST stem's loss term: the same seed and data give other weights
    after one step, and the final checkpoint records the weight it was trained with."""
    torch.set_num_threads(1)
    states = {}
    for w in ("1", "3"):
        out = tmp_path / f"w{w}"
        args = [
            "train",
            "separator",
            "--data",
            data_dir,
            "--out",
            str(out),
            "--batch",
            "2",
            "--hidden",
            "32",
            "--nice",
            "0",
            "--quiet",
            "--steps",
            "1",
            "--ost-weight",
            w,
        ]
        assert main(args) == 0
        ckpt = torch.load(out / "separator.pt", map_location="cpu", weights_only=True)
        assert ckpt["train"]["ost_weight"] == float(w)
        states[w] = ckpt["state_dict"]
    diff = max(
        (states["1"][k] - states["3"][k]).abs().max().item() for k in states["1"] if states["1"][k].is_floating_point()
    )
    assert diff > 1e-6


def test_finetune_init_with_lookahead_trains_a_64_ms_model(data_dir, tmp_path, capsys):
    """`finetune_init --lookahead 2` + `train`: training starts from the source weights with a zero
    look-ahead term, resumes with the checkpoint's look-ahead, and ships a streamer with 64 ms lag."""
    from vibescope.stream.separator.finetune_init import write_init
    from vibescope.stream.separator.model import SeparatorConfig

    torch.set_num_threads(1)
    torch.manual_seed(2)
    src_model = CausalMaskSeparator(SeparatorConfig(hidden=32))
    torch.save(src_model.checkpoint(), tmp_path / "src.pt")
    out = tmp_path / "ft"
    out.mkdir()
    write_init(str(tmp_path / "src.pt"), str(out / "separator.ckpt"), 3e-4, lookahead=2)
    state = torch.load(out / "separator.ckpt", weights_only=False)
    assert state["model"]["lookahead_head.weight"].shape == (257, 2 * (32 + 256))
    assert not torch.any(state["model"]["lookahead_head.weight"])
    args = [
        "train",
        "separator",
        "--data",
        data_dir,
        "--out",
        str(out),
        "--batch",
        "2",
        "--hidden",
        "32",
        "--nice",
        "0",
        "--quiet",
        "--lr",
        "3e-4",
    ]
    assert main(args + ["--steps", "2", "--lookahead", "1"]) == 2  # not what the checkpoint holds
    assert "has look-ahead 2" in capsys.readouterr().err
    assert main(args + ["--steps", "2"]) == 0
    ckpt = torch.load(out / "separator.pt", map_location="cpu", weights_only=True)
    assert ckpt["config"]["lookahead"] == 2 and ckpt["train"]["lookahead"] == 2
    model = CausalMaskSeparator.from_checkpoint(ckpt)
    assert torch.any(model.lookahead_head.weight)  # trained, no longer zero
    streamer = SeparatorStreamer(model)
    assert streamer.lag_ms == 64.0
    assert stream_in_chunks(streamer, np.zeros(4000, np.float32), 1600).shape == (2, 4000)
