"""`vibescope train tagf` / `vibescope eval tagf` as a user runs them (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

from vibescope.server.cli import main


def test_train_then_synthetic_benchmark_prints_one_json_line_per_model_and_level(tmp_path: Path, capsys) -> None:
    bench = tmp_path / "bench"
    assert (
        main(
            [
                "train",
                "tagf",
                "--fusion",
                "gate_time",
                "--steps",
                "2",
                "--frames",
                "40",
                "--quiet",
                "--nice",
                "0",
                "--out",
                str(bench / "gate_time.pt"),
            ]
        )
        == 0
    )
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["fusion"] == "gate_time" and trained["status"] == "simulated-teacher"
    # the other three are missing: eval trains them first
    assert (
        main(
            [
                "eval",
                "tagf",
                "--synthetic",
                "--json",
                "--quiet",
                "--nice",
                "0",
                "--checkpoints",
                str(bench),
                "--train-steps",
                "2",
                "--levels",
                "0,2",
                "--sequences",
                "2",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 8
    assert {(r["model"], r["gate"]) for r in rows} == {
        ("tagf", "steps"),
        ("tagf", "time"),
        ("rjcma", None),
        ("concat-lstm", None),
    }
    assert {r["misalign_s"] for r in rows} == {0.0, 2.0}
    assert all(set(r) == {"model", "gate", "misalign_s", "ccc_valence", "ccc_arousal"} for r in rows)
    assert all(-1 <= r["ccc_valence"] <= 1 and -1 <= r["ccc_arousal"] <= 1 for r in rows)


def test_eval_on_affwild2_layout_reports_ccc_over_labelled_frames(affwild2_root: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "eval",
                "tagf",
                "--affwild2",
                str(affwild2_root),
                "--split",
                "train",
                "--json",
                "--quiet",
                "--nice",
                "0",
                "--features-cache",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["videos"] == 1 and row["frames"] == 15  # ticks 5-19 carry labels; the -5 frames do not count
    assert row["model"] == "tagf-gate-steps-sim-v1"
    assert -1 <= row["ccc_valence"] <= 1


def test_eval_without_a_data_source_fails_cleanly(capsys) -> None:
    assert main(["eval", "tagf", "--nice", "0"]) == 2
    assert "--synthetic" in capsys.readouterr().err


def test_train_on_affwild2_layout_writes_a_checkpoint_with_its_status(
    affwild2_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "aw2.pt"
    assert (
        main(
            [
                "train",
                "tagf",
                "--affwild2",
                str(affwild2_root),
                "--steps",
                "2",
                "--frames",
                "30",
                "--batch",
                "2",
                "--quiet",
                "--nice",
                "0",
                "--out",
                str(out),
                "--features-cache",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    meta = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out.exists() and meta["status"] == "affwild2" and meta["steps_done"] == 2
