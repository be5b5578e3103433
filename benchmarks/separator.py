"""Speed of the separator's live path: one thread, 100 ms ticks, many sessions sharing weights.

RTF = CPU seconds (time.process_time) per second of audio, so a loaded shared machine does not
inflate it.

Prints a table and one JSON line:
``{"name": "separator", "lag_ms", "stride_ms", "params", "rtf_tick", "rtf_stage", "ms_per_tick", "delta"}``.
Usage: ``python benchmarks/separator.py [--seconds 30] [--checkpoint PT ...]`` (default
models/separator.pt; several checkpoints are measured one after the other in one run, a row each,
so their costs compare on the same machine state).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from vibescope.stream.separator.model import load_shared
from vibescope.stream.separator.stage import SeparatorStage
from vibescope.stream.separator.streamer import SeparatorStreamer, probe_signal, selfcheck
from vibescope.stream.stage import Tick
from vibescope.stream.timebase import TICK_SAMPLES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--checkpoint", nargs="*", default=[None], help="separator weights (default models/separator.pt)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [measure(load_shared(path), args.seconds) for path in args.checkpoint]
    keys = [k for k in rows[0] if k != "name"]
    print(f"{'metric':<14}" + "".join(f"{r['model_id']:>22}" for r in rows))
    for k in keys:
        if k != "model_id":
            print(f"{k:<14}" + "".join(f"{r[k]:>22}" for r in rows))
    for row in rows:
        print(json.dumps(row))


def measure(model, seconds: float) -> dict:
    x = probe_signal(seed=2, seconds=seconds)
    n_ticks = len(x) // TICK_SAMPLES

    streamer = SeparatorStreamer(model)
    start = time.process_time()
    for i in range(n_ticks):
        streamer.feed(x[i * TICK_SAMPLES : (i + 1) * TICK_SAMPLES])
    rtf_tick = (time.process_time() - start) / seconds

    stage = SeparatorStage(model)
    start = time.process_time()
    for i in range(n_ticks):
        stage.push(Tick(index=i, audio=x[i * TICK_SAMPLES : (i + 1) * TICK_SAMPLES]))
    stage.flush()
    rtf_stage = (time.process_time() - start) / seconds

    check = selfcheck(seed=0, model=model)
    return {
        "name": "separator",
        "model_id": model.model_id,
        "lag_ms": check["lag_ms"],
        "stride_ms": check["stride_ms"],
        "params": sum(p.numel() for p in model.parameters()),
        "rtf_tick": round(rtf_tick, 5),
        "rtf_stage": round(rtf_stage, 5),
        "ms_per_tick": round(1000 * rtf_stage * 0.1, 3),
        "delta": check["delta"],
    }


if __name__ == "__main__":
    main()
