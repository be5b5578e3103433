"""CLI for the BGM/OST separator: `data sep-mixtures`, `train separator`, `eval separator`."""

from __future__ import annotations

import argparse
import json
import sys


def _fail(message: str) -> int:
    print(f"vibescope: error: {message}", file=sys.stderr)
    return 2


def _data(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vibescope.stream.debian import DataError
    from vibescope.stream.separator.dataset import build_mixtures

    try:
        index = build_mixtures(
            args.out,
            hours=args.hours,
            seed=args.seed,
            test=args.test,
            recipe=args.recipe,
            progress=lambda it: tqdm(it, desc="mixtures", unit="clip", disable=args.quiet),
        )
    except DataError as exc:
        return _fail(str(exc))
    print(
        json.dumps(
            {"out": str(args.out), "clips": index["clips"], "sources": {k: len(v) for k, v in index["sources"].items()}}
        )
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    import os

    from tqdm import tqdm

    from vibescope.stream.debian import DataError
    from vibescope.stream.separator.train import TrainConfig, train

    if args.nice:
        os.nice(args.nice)
    config = TrainConfig(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        threads=args.threads,
        seed=args.seed,
        hidden=args.hidden,
        layers=args.layers,
        ost_weight=args.ost_weight,
        lookahead=args.lookahead,
    )
    try:
        path = train(
            args.data,
            args.out,
            config,
            resume=not args.no_resume,
            progress=None if args.quiet else (lambda **kw: tqdm(desc="train", unit="step", **kw)),
        )
    except DataError as exc:
        return _fail(str(exc))
    print(path)
    return 0


def _eval(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # RTF is reported for one thread
    from vibescope.stream.debian import DataError
    from vibescope.stream.separator.evaluate import METHODS, evaluate, format_table, public_row

    if args.calibration:
        from vibescope.stream.separator.evaluate import calibration_report

        try:
            print(json.dumps(calibration_report(args.data, split=args.split, checkpoint=args.checkpoint)))
        except (DataError, FileNotFoundError) as exc:
            return _fail(str(exc))
        return 0
    methods = list(METHODS) if args.all else [args.method]
    if args.versus:
        if args.all:
            return _fail("--versus compares one --method with one other, not --all")
        methods.append(args.versus)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        return _fail(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    rows = []
    try:
        for method in methods:
            row = evaluate(args.data, method, split=args.split, checkpoint=args.checkpoint, limit=args.limit)
            rows.append(row)
            if args.json:
                print(json.dumps(public_row(row)), flush=True)
    except DataError as exc:
        return _fail(str(exc))
    except (FileNotFoundError, ImportError) as exc:
        return _fail(str(exc))
    if not args.json:
        print(format_table(rows))
    if args.versus:
        from vibescope.stream.separator.evaluate import paired

        diff = paired(rows[0], rows[1])
        if args.json:
            print(json.dumps(diff))
        else:
            print(
                f"\n{diff['method']} - {diff['versus']}, clip by clip (n {diff['n']}): "
                f"OST SI-SDRi {diff['ost_si_sdri_diff']:+.3f} dB "
                f"(95 % CI {diff['ost_ci95'][0]:+.3f} .. {diff['ost_ci95'][1]:+.3f}), "
                f"music SI-SDRi {diff['music_si_sdri_diff']:+.3f} dB "
                f"(95 % CI {diff['music_ci95'][0]:+.3f} .. {diff['music_ci95'][1]:+.3f})"
            )
    return 0


def register(groups: dict) -> None:
    p = groups["data"].add_parser(
        "sep-mixtures",
        help="build BGM/OST separation mixtures from Debian packages",
        description="Fetch the source packages (apt-get download + dpkg -x, cached in $VIBESCOPE_CACHE), "
        "decode them with PyAV and write DIR/<id>/{mixture,music,ost}.wav + meta.json (16 kHz mono).",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--hours", type=float, default=1.5, help="total duration of the 4 s clips (default 1.5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--recipe",
        default="v3",
        choices=("v10", "v8", "v7", "v5", "v4", "v3", "v2"),
        help="v3 (default): with MIDI renders and espeak-ng speech; v4: + hedgewars voices; v5: + louder "
        "music in training; v7: + Asterisk's voice prompts; v8: + MegaGlest's voice lines; v10: + an Italian "
        "prompt voice and on-hold music; v2: the builder of the v1/v2 sets (rebuilds them bit for bit)",
    )
    p.add_argument(
        "--test",
        action="store_true",
        help="build a held-out TEST set from the evaluation-reserved packages (never train on it)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_data)

    p = groups["train"].add_parser(
        "separator",
        help="train the causal BGM/OST separator",
        description="Train on the train split of a sep-mixtures directory; checkpoints to OUT/separator.ckpt "
        "(resumed automatically), final weights to OUT/separator.pt.",
    )
    p.add_argument("--data", required=True, help="sep-mixtures directory")
    p.add_argument("--out", default="models", help="output directory (default models/)")
    p.add_argument("--steps", type=int, default=6000, help="optimiser steps (default 6000)")
    p.add_argument("--batch", type=int, default=16, help="batch size of 3 s crops (default 16)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=256, help="GRU width (default 256)")
    p.add_argument("--layers", type=int, default=2, help="GRU layers (default 2)")
    p.add_argument(
        "--ost-weight",
        type=float,
        default=1.0,
        help="weight of the OST stem's loss against the music stem's 1 (default 1)",
    )
    p.add_argument(
        "--lookahead",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="frames the mask sees ahead, 16 ms of lag each (default 0: 32 ms lag; 2: 64 ms); "
        "a resumed run keeps its checkpoint's",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--nice", type=int, default=10, help="lower the process priority by this much (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/separator.ckpt exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = groups["eval"].add_parser(
        "separator",
        help="evaluate the separator and its peers (SI-SDR, SI-SDRi, RTF)",
        description="Mean/median SI-SDR and SI-SDRi of the OST and music stems, "
        "and the single-thread real-time factor.",
    )
    p.add_argument("--data", required=True, help="sep-mixtures directory")
    p.add_argument(
        "--method", default="ours", help="ours, mixture, oracle-irm, dfn3, rnnoise, hpss, repet, noisereduce"
    )
    p.add_argument("--all", action="store_true", help="evaluate every method")
    p.add_argument("--split", default=None, help="val (default for train/val sets), test, train or all")
    p.add_argument("--checkpoint", default=None, help="separator checkpoint (default models/separator.pt)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N clips")
    p.add_argument("--json", action="store_true", help="one JSON object per method per line")
    p.add_argument(
        "--versus",
        default=None,
        metavar="M",
        help="also evaluate method M and print --method minus M clip by clip: "
        "mean SI-SDRi differences with 95 %% intervals",
    )
    p.add_argument(
        "--calibration",
        action="store_true",
        help="instead: reliability of music.probability per 100 ms tick (ECE, Brier, bins) as JSON",
    )
    p.set_defaults(func=_eval)
