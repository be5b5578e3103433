"""CLI for valence/arousal: `train tagf`, `eval tagf` (synthetic benchmark or Aff-Wild2)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

FUSION_CHOICES = ("gate_steps", "gate_time", "last", "concat_lstm")
BENCH_DIR = "artifacts/tagf-bench"
DEFAULT_FUSION = "gate_steps"


def _fail(message: str) -> int:
    print(f"vibescope: error: {message}", file=sys.stderr)
    return 2


def _setup(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.nice:
        os.nice(args.nice)


def _train(args: argparse.Namespace) -> int:
    from vibescope.stream.tagf.train import save_checkpoint, train_affwild2, train_synthetic

    _setup(args)
    fusions = list(FUSION_CHOICES) if args.fusion == "all" else [args.fusion]
    if args.default and (args.affwild2 or len(fusions) != 1):
        return _fail("--default trains one fusion on the synthetic teacher data")
    for fusion in fusions:
        if args.default:
            from vibescope.stream.weights import weights_path

            out = args.out or str(weights_path("tagf.pt"))
        elif args.out and len(fusions) == 1:
            out = args.out
        else:
            out = str(Path(args.out or BENCH_DIR) / f"{fusion}.pt")
        if args.affwild2:
            model, meta = train_affwild2(
                args.affwild2,
                fusion=fusion,
                steps=args.steps,
                batch=args.batch,
                n_frames=args.frames,
                seed=args.seed,
                lr=args.lr,
                out=out,
                progress=not args.quiet,
                features_cache=args.features_cache,
            )
            meta.update(status="affwild2", model_id=f"tagf-{fusion}-affwild2")
        else:
            model, meta = train_synthetic(
                fusion,
                steps=args.steps,
                batch=args.batch,
                n_frames=args.frames,
                seed=args.seed,
                lr=args.lr,
                out=out,
                progress=not args.quiet,
                misalign_max_s=args.train_misalign,
            )
            meta.update(status="simulated-teacher", model_id=f"tagf-{fusion.replace('_', '-')}-sim-v1")
        save_checkpoint(model, out, meta)
        print(json.dumps({"out": out, **meta}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vibescope.stream.tagf.evaluate import evaluate_synthetic, format_table
    from vibescope.stream.tagf.model import load_checkpoint
    from vibescope.stream.tagf.train import train_synthetic

    _setup(args)
    if args.affwild2:
        from vibescope.stream.tagf.affwild2 import evaluate_affwild2
        from vibescope.stream.weights import weights_path

        model, meta = load_checkpoint(args.checkpoint or weights_path("tagf.pt"))
        row = evaluate_affwild2(
            model, args.affwild2, split=args.split, features_cache=args.features_cache, progress=not args.quiet
        )
        row = {"model": meta.get("model_id", model.model_id), **row}
        print(json.dumps(row) if args.json else f"{row}")
        return 0
    if not args.synthetic:
        return _fail("choose --synthetic or --affwild2 ROOT")
    bench = Path(args.checkpoints)
    models = {}
    for fusion in FUSION_CHOICES:
        path = bench / f"{fusion}.pt"
        if not path.exists():
            if args.no_train:
                return _fail(f"{path} missing (run without --no-train, or `vibescope train tagf --fusion all`)")
            print(f"training {fusion} ({args.train_steps} steps) → {path}", file=sys.stderr)
            train_synthetic(
                fusion,
                steps=args.train_steps,
                n_frames=120,
                seed=args.seed,
                out=str(path),
                progress=not args.quiet,
                misalign_max_s=args.train_misalign,
            )
        models[fusion] = load_checkpoint(path)[0]
    levels = tuple(float(x) for x in args.levels.split(","))
    rows = evaluate_synthetic(models, levels, n_sequences=args.sequences)
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(format_table(rows))
    return 0


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    common.add_argument("--nice", type=int, default=10, help="niceness to add (default 10; 0 = none)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument(
        "--features-cache",
        default=None,
        help="where Aff-Wild2 features are cached (default $VIBESCOPE_CACHE/affwild2-features)",
    )

    p = groups["train"].add_parser(
        "tagf",
        parents=[common],
        help="train the TAGF valence/arousal model",
        description="Train TAGF (or a baseline) on simulated teacher-labelled cue "
        "trajectories (default) or on Aff-Wild2 (--affwild2 ROOT).",
    )
    p.add_argument("--synthetic", action="store_true", help="simulated cue trajectories (the default data)")
    p.add_argument("--affwild2", metavar="ROOT", help="Aff-Wild2 root (annotations + videos; your licence)")
    p.add_argument("--fusion", default=DEFAULT_FUSION, choices=(*FUSION_CHOICES, "all"))
    p.add_argument("--default", action="store_true", help="train the shipped default → models/tagf.pt")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=120, help="frames (10 Hz) per training sequence")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-misalign",
        type=float,
        default=0.0,
        metavar="S",
        help="synthetic: delay each batch's audio by a random benchmark level up to S seconds (default 0: aligned)",
    )
    p.add_argument("--out", help=f"checkpoint path (a directory with --fusion all; default {BENCH_DIR}/FUSION.pt)")
    p.set_defaults(func=_train)

    e = groups["eval"].add_parser(
        "tagf",
        parents=[common],
        help="evaluate TAGF: CCC per dimension",
        description="CCC of valence and arousal: the controlled synthetic benchmark "
        "(--synthetic: TAGF with both gates and the baselines at each audio/video "
        "misalignment) or Aff-Wild2 (--affwild2 ROOT).",
    )
    e.add_argument("--synthetic", action="store_true")
    e.add_argument("--affwild2", metavar="ROOT")
    e.add_argument("--split", default="validation", choices=("train", "validation"))
    e.add_argument("--checkpoint", default=None, help="model for --affwild2 (default: the shipped models/tagf.pt)")
    e.add_argument(
        "--checkpoints",
        default=BENCH_DIR,
        help="directory of FUSION.pt for --synthetic; missing ones are trained first",
    )
    e.add_argument("--train-steps", type=int, default=400)
    e.add_argument("--seed", type=int, default=0, help="training seed for missing checkpoints")
    e.add_argument(
        "--train-misalign",
        type=float,
        default=0.0,
        metavar="S",
        help="missing checkpoints: train with audio delays up to S seconds (default 0: aligned)",
    )
    e.add_argument("--no-train", action="store_true")
    e.add_argument("--levels", default="0,0.5,1,2", help="misalignments in seconds (audio delayed)")
    e.add_argument("--sequences", type=int, default=48, help="test sequences of 30 s per level")
    e.add_argument("--json", action="store_true", help="one JSON line per model and level")
    e.set_defaults(func=_eval)
