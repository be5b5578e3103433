"""The benchmarks the README's numbers come from still run and print what the README reads."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_host_reference_times_the_per_image_models() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.host import host_info

    info = host_info()
    assert info["cpu"] and isinstance(info["cpu"], str)
    assert info["cores"] >= 1
    # one RetinaFace pass at 256x144 plus one FER pass: a few ms on any x86 core of this decade
    assert math.isfinite(info["ref_ms"]) and 0.05 < info["ref_ms"] < 500


def test_sessions_benchmark_prints_the_readme_columns() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/sessions.py",
            "--pipeline",
            "base",
            "--sessions",
            "2",
            "--seconds",
            "2",
            "--redis",
            "",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    row = json.loads(out.strip().splitlines()[-1])
    for key in (
        "sessions",
        "seconds",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "dropped_audio_chunks",
        "dropped_video_frames",
        "cpu_per_session",
        "rss_mb_per_session",
        "redis_kb_per_session",
        "sessions_per_round",
    ):
        assert key in row, key
    assert row["sessions"] == 2
    assert row["dropped_audio_chunks"] == 0  # 2 sessions of signal measures are far below capacity
    assert row["p50_ms"] is not None and row["p50_ms"] > 0
    assert row["redis_kb_per_session"] is None  # in-memory store: nothing to read in Redis
    assert row["host"]["ref_ms"] > 0
    assert "metric" in out  # the table before the JSON line


def test_separator_benchmark_measures_each_checkpoint_in_one_run(tmp_path) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from vibescope.stream.separator.model import CausalMaskSeparator

    shipped = ROOT / "models" / "separator.pt"
    shipped_lookahead = torch.load(shipped, weights_only=True)["config"].get("lookahead", 0)
    torch.manual_seed(0)
    plain = CausalMaskSeparator().checkpoint()  # no look-ahead: 32 ms
    plain["model_id"] = "plain-probe"
    torch.save(plain, tmp_path / "plain.pt")
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/separator.py",
            "--seconds",
            "1",
            "--checkpoint",
            str(tmp_path / "plain.pt"),
            str(shipped),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = [json.loads(line) for line in out.strip().splitlines()[-2:]]
    assert [r["lag_ms"] for r in rows] == [32.0, 32.0 + 16.0 * shipped_lookahead]
    assert rows[0]["model_id"] == "plain-probe" and rows[0]["params"] == 988162
    assert rows[1]["params"] == 988162 + shipped_lookahead * (256 + 256) * 257 + (257 if shipped_lookahead else 0)
    assert all(r["rtf_stage"] > 0 and r["delta"] <= 1e-5 for r in rows)
    assert "plain-probe" in out.splitlines()[0]  # the table's header names each column's weights
