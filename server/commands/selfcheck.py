"""`vibescope selfcheck`: streaming == offline, lag, stride and RTF of every streamer."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_selfcheck(args: argparse.Namespace) -> int:
    from vibescope.stream.selfcheck import DELTA_LIMIT, run_all

    rows = run_all(seed=args.seed)
    if args.json:
        for row in rows:
            print(json.dumps({k: row[k] for k in ("name", "lag_ms", "stride_ms", "rtf", "delta")}))
    else:
        print(f"{'streamer':12s} {'lag ms':>8s} {'stride ms':>10s} {'RTF':>8s} {'delta':>10s}  ok")
        for r in rows:
            print(
                f"{r['name']:12s} {r['lag_ms']:8.1f} {r['stride_ms']:10.1f} {r['rtf']:8.4f} {r['delta']:10.2e}  "
                f"{'yes' if r['delta'] <= DELTA_LIMIT else 'NO'}"
            )
    return 0 if all(r["delta"] <= DELTA_LIMIT for r in rows) else 1


def register(groups: dict[str, Any]) -> None:
    p = groups["root"].add_parser(
        "selfcheck",
        help="check every streamer against its offline model",
        description="For every streamer: algorithmic lag, stride, real-time factor (one "
        "thread) and the relative streaming-vs-offline delta over several "
        "random chunkings. Exit 1 when a delta exceeds 1e-5.",
    )
    p.add_argument("--json", action="store_true", help="one JSON line per streamer")
    p.add_argument("--seed", type=int, default=0, help="seed of the random chunkings")
    p.set_defaults(func=cmd_selfcheck)
