"""`vibescope train tagf` / `vibescope eval tagf` as a user runs them (tiny sizes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vibescope.server.cli import main
from vibescope.stream.weights import weights_path

from assets import write_va_annotation


def test_train_then_synthetic_benchmark_prints_one_json_line_per_model_and_level(tmp_path: Path, capsys) -> None:
    """The shipped model (models/tagf.pt, the card's tagf/steps row), one trained here for 15 small
    steps and two that eval trains for 2 steps (next to untrained), on the same synthetic test set."""
    bench = tmp_path / "bench"
    bench.mkdir()
    shutil.copy(weights_path("tagf.pt"), bench / "gate_steps.pt")
    assert (
        main(
            [
                "train",
                "tagf",
                "--fusion",
                "gate_time",
                "--steps",
                "15",
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
    assert trained["steps_done"] == 15
    # the other two are missing: eval trains them first
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
                "8",
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
    ccc = {(r["model"], r["gate"], r["misalign_s"]): (r["ccc_valence"], r["ccc_arousal"]) for r in rows}
    # the shipped model scores as its card says (48 sequences: V 0.899, A 0.859 aligned; A 0.632 at 2 s)
    shipped_v, shipped_a = ccc["tagf", "steps", 0.0]
    assert shipped_v > 0.85 and shipped_a > 0.8
    assert ccc["tagf", "steps", 2.0][1] < shipped_a - 0.1  # a 2 s audio delay costs arousal
    # 15 steps already learn arousal (0.3-0.5 with training seeds 0-2); 2 steps do not (about 0)
    barely = [ccc[m, None, 0.0][1] for m in ("rjcma", "concat-lstm")]
    assert ccc["tagf", "time", 0.0][1] > max(0.2, max(barely) + 0.15), (ccc["tagf", "time", 0.0], barely)


def _eval_affwild2(root: Path, cache: Path, capsys) -> dict:
    argv = ["eval", "tagf", "--affwild2", str(root), "--split", "train", "--json", "--quiet", "--nice", "0"]
    assert main([*argv, "--features-cache", str(cache)]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_on_affwild2_layout_reports_ccc_over_labelled_frames(affwild2_root: Path, tmp_path: Path, capsys) -> None:
    from vibescope.stream.tagf.affwild2 import AffWild2
    from vibescope.stream.tagf.evaluate import predict
    from vibescope.stream.tagf.model import load_checkpoint

    cache = tmp_path / "cache"
    row = _eval_affwild2(affwild2_root, cache, capsys)
    assert row["videos"] == 1 and row["frames"] == 15  # ticks 5-19 carry labels; the -5 frames do not count
    assert row["model"] == "tagf-gate-steps-sim-v1"
    # a known answer: relabel the video with the shipped model's own predictions, valence as they
    # are and arousal mirrored about its mean; CCC over the labelled ticks must then be +1 and -1
    # (CCC also counts a shift of the mean). An eval that mis-aligned labels and ticks, counted the
    # unlabelled frames or computed CCC wrongly would not get these.
    model = load_checkpoint(weights_path("tagf.pt"))[0]
    seq = AffWild2(affwild2_root, features_cache=cache).load_split("train")[0]  # the features eval cached
    pred = predict(model, seq.visual[None], seq.audio[None])[0]
    assert pred[5:20].std(0).min() > 0.01  # the predictions move, so CCC is defined
    mirror = 2 * float(pred[5:20, 1].mean())
    # the label of tick i is that of frame 3i + 2 (30 fps): frames 15-59 carry ticks 5-19
    rows = [(-5.0, -5.0)] * 15 + [
        (round(float(pred[f // 3, 0]), 5), round(mirror - float(pred[f // 3, 1]), 5)) for f in range(15, 60)
    ]
    write_va_annotation(next(affwild2_root.rglob("12-24-1920x1080.txt")), rows)
    row = _eval_affwild2(affwild2_root, cache, capsys)
    assert row["frames"] == 15
    assert row["ccc_valence"] > 0.999 and row["ccc_arousal"] < -0.999, row
    # one tick late, the same labels no longer agree perfectly
    late = [(-5.0, -5.0)] * 15 + [(round(float(pred[f // 3 - 1, 0]), 5), 0.25) for f in range(15, 60)]
    write_va_annotation(next(affwild2_root.rglob("12-24-1920x1080.txt")), late)
    assert _eval_affwild2(affwild2_root, cache, capsys)["ccc_valence"] < 0.99


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
