"""`vibescope eval separator`: metrics, the JSON-line format, peers' delay compensation, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vibescope.server.cli import main
from vibescope.stream.debian import fetch_package
from vibescope.stream.separator import peers
from vibescope.stream.separator.evaluate import si_sdr
from vibescope.stream.separator.model import CausalMaskSeparator
from vibescope.stream.separator.wavio import write_wav
from vibescope.stream.source import decode_audio

KEYS = {"method", "n", "ost_si_sdr", "ost_si_sdri", "music_si_sdr", "music_si_sdri", "rtf"}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~4 s of real speech (klettres-data words, fetched once into $VIBESCOPE_CACHE)."""
    root = fetch_package("klettres-data")
    words = [decode_audio(p) for p in sorted(root.glob("usr/share/klettres/en/alpha/*.ogg"))[:8]]
    x = np.concatenate([np.pad(w, (0, 1600)) for w in words])[:64000]
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, speech) -> str:
    """Three synthetic 'both' clips in the sep-mixtures layout: speech + a chord."""
    out = tmp_path_factory.mktemp("evaldata")
    t = np.arange(64000) / 16000
    for i in range(3):
        music = (0.05 * sum(np.sin(2 * np.pi * f * (i + 1) * t) for f in (220, 277, 330))).astype(np.float32)
        ost = np.roll(speech, 8000 * i).astype(np.float32)
        d = out / f"val-{i:05d}"
        d.mkdir()
        for name, a in (("mixture", music + ost), ("music", music), ("ost", ost)):
            write_wav(d / f"{name}.wav", a)
        (d / "meta.json").write_text(json.dumps({"id": d.name, "split": "val", "kind": "both"}))
    return str(out)


@pytest.fixture(scope="module")
def models_env(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models")
    torch.save(CausalMaskSeparator().checkpoint(), d / "separator.pt")
    return d


def test_si_sdr_is_scale_invariant_and_penalises_noise():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(16000).astype(np.float32)
    assert si_sdr(3.0 * ref, ref) > 80
    noisy = ref + 0.1 * rng.standard_normal(16000).astype(np.float32)
    assert 19 < si_sdr(noisy, ref) < 21


@pytest.mark.parametrize("method", ["mixture", "oracle-irm", "hpss", "repet", "ours"])
def test_json_line_per_method(method, data_dir, models_env, monkeypatch, capsys):
    monkeypatch.setenv("VIBESCOPE_MODELS", str(models_env))
    assert main(["eval", "separator", "--data", data_dir, "--method", method, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert set(row) == KEYS and row["method"] == method and row["n"] == 3
    assert all(isinstance(row[k], float) for k in KEYS - {"method", "n"})
    if method == "mixture":
        assert row["ost_si_sdri"] == 0.0 and row["music_si_sdri"] == 0.0
    if method == "oracle-irm":
        assert row["ost_si_sdri"] > 5 and row["music_si_sdri"] > 5


def test_table_without_json(data_dir, capsys):
    assert main(["eval", "separator", "--data", data_dir, "--method", "mixture"]) == 0
    out = capsys.readouterr().out
    assert "| method |" in out and "| mixture | 3 |" in out


@pytest.mark.parametrize("name", ["dfn3", "rnnoise"])
def test_peer_delay_compensation_is_right_by_cross_correlation(name, speech):
    peer = peers.DeepFilterNet3() if name == "dfn3" else peers.RNNoise()
    assert peers.measure_delay(peer.enhance, speech) == peers.DELAYS[name]
    ost, music = peer(speech)
    assert ost.shape == speech.shape
    assert peers.measure_delay(lambda x: peer(x)[0], speech) == 0  # aligned after compensation
    np.testing.assert_allclose(ost + music, speech, atol=1e-6)


@pytest.mark.parametrize("name", ["hpss", "repet", "noisereduce"])
def test_offline_peers_add_no_delay(name, speech):
    f = {"hpss": peers.hpss, "repet": peers.repet_sim, "noisereduce": peers.noisereduce_peer}[name]
    assert peers.measure_delay(lambda x: f(x)[0] + f(x)[1], speech) == 0
    ost, music = f(speech)
    np.testing.assert_allclose(ost + music, speech, atol=1e-4)


def test_missing_data_dir_is_a_clean_user_error(tmp_path, capsys):
    assert main(["eval", "separator", "--data", str(tmp_path / "nope"), "--method", "mixture", "--json"]) == 2
    err = capsys.readouterr().err
    assert "no such data directory" in err and "Traceback" not in err


def test_unknown_method_is_a_clean_user_error(data_dir, capsys):
    assert main(["eval", "separator", "--data", data_dir, "--method", "spleeter"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_versus_prints_the_paired_difference_with_its_interval(data_dir, capsys):
    """`--versus`: both rows, then the clip-by-clip difference. The oracle beats the unprocessed
    mixture on every clip, so its interval lies above 0 and equals the oracle's own SI-SDRi."""
    assert (
        main(["eval", "separator", "--data", data_dir, "--method", "oracle-irm", "--versus", "mixture", "--json"]) == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r.get("method") for r in rows] == ["oracle-irm", "mixture", "oracle-irm"]
    diff = rows[2]
    assert diff["versus"] == "mixture" and diff["n"] == 3
    for stem in ("ost", "music"):
        lo, hi = diff[f"{stem}_ci95"]
        assert 0 < lo <= diff[f"{stem}_si_sdri_diff"] <= hi
        assert diff[f"{stem}_si_sdri_diff"] == pytest.approx(rows[0][f"{stem}_si_sdri"], abs=2e-3)
    assert main(["eval", "separator", "--data", data_dir, "--method", "mixture", "--versus", "mixture"]) == 0
    out = capsys.readouterr().out
    assert "mixture - mixture, clip by clip (n 3): OST SI-SDRi +0.000 dB (95 % CI +0.000 .. +0.000)" in out


def test_versus_unknown_method_or_with_all_is_a_clean_user_error(data_dir, capsys):
    assert main(["eval", "separator", "--data", data_dir, "--method", "mixture", "--versus", "spleeter"]) == 2
    assert "unknown method 'spleeter'" in capsys.readouterr().err
    assert main(["eval", "separator", "--data", data_dir, "--all", "--versus", "mixture"]) == 2
    assert "--versus" in capsys.readouterr().err
