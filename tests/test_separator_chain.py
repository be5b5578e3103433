"""models/separator_chain.sh, the one command behind the shipped separator weights.

The chain itself trains for about 2.5 h, so here its `vibescope` and `python` are stand-ins that
check every command line with the real CLI parser (and the real finetune_init's arguments) and
write the files the next step reads; what is tested is the script: that every command is valid,
that each fine-tune starts from the weights the step before it produced, and that a re-run
repeats no finished step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "models" / "separator_chain.sh"

FAKE = r"""
import json, os, sys
sys.path.insert(0, {root!r})
log = os.environ["CHAIN_LOG"]
argv = sys.argv[1:]
if argv[:2] == ["-m", "vibescope.stream.separator.finetune_init"]:
    from vibescope.stream.separator.finetune_init import build_parser
    init = build_parser().parse_args(argv[2:])  # exits 2 on an invalid command line
    assert os.path.exists(init.src), "fine-tune from weights that do not exist: " + init.src
    open(init.dst, "w").write(init.src)
else:
    from vibescope.server.cli import build_parser
    args = build_parser().parse_args(argv)  # exits 2 on an invalid command line
    if args.command == "data":
        os.makedirs(args.out, exist_ok=True)
    elif args.command == "train":
        ckpt = os.path.join(args.out, "separator.ckpt")
        start = open(ckpt).read() if os.path.exists(ckpt) else None
        os.makedirs(args.out, exist_ok=True)
        open(os.path.join(args.out, "separator.pt"), "w").write("trained")
        argv = argv + ["#from", str(start)]
with open(log, "a") as f:
    f.write(json.dumps(argv) + "\n")
"""


def run_chain(tmp_path, v3: str | None = None):
    fake = tmp_path / "fake.py"
    fake.write_text(FAKE.format(root=str(ROOT)))
    log = tmp_path / "log.jsonl"
    if v3 is not None:  # the shipped v3 weights, placed where the chain's v3 step writes its own
        (tmp_path / "work" / "v3").mkdir(parents=True, exist_ok=True)
        (tmp_path / "work" / "v3" / "separator.pt").write_text(v3)
    env = {
        **os.environ,
        "CHAIN_LOG": str(log),
        "VIBESCOPE": f"{sys.executable} {fake}",
        "PYTHON": f"{sys.executable} {fake}",
    }
    out = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "work")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    log.unlink()
    return lines


def test_the_chain_runs_every_step_in_order_from_the_step_before(tmp_path):
    work = str(tmp_path / "work")
    lines = run_chain(tmp_path)
    trains = [x for x in lines if x[:2] == ["train", "separator"]]
    outs = [x[x.index("--out") + 1].removeprefix(work + "/") for x in trains]
    assert outs == ["v1", "v2a", "v2", "v3", "v4", "v5", "v7", "v8", "v11", "v12", "v14", "v15"]
    # v1 starts from scratch; every other run resumes the checkpoint finetune_init made from the
    # weights of the run before it
    assert trains[0][-1] == "None"
    for prev, train in zip(outs, trains[1:], strict=False):
        assert train[-1] == f"{work}/{prev}/separator.pt"
    assert all("--ost-weight" in t for t in trains[-4:]) and not any("--ost-weight" in t for t in trains[:-4])
    # look-ahead is added once, by finetune_init on v12's weights for v14; v15 inherits it from v14
    inits = [x for x in lines if x[:2] == ["-m", "vibescope.stream.separator.finetune_init"]]
    assert [x[x.index("--lookahead") + 1] for x in inits if "--lookahead" in x] == ["2"]
    assert inits[-2][2] == f"{work}/v12/separator.pt" and "--lookahead" in inits[-2]
    assert inits[-1][2] == f"{work}/v14/separator.pt" and "--lookahead" not in inits[-1]
    assert [t[t.index("--out") + 1].removeprefix(work + "/") for t in trains if "--lookahead" in t] == ["v14"]
    evals = [x for x in lines if x[:2] == ["eval", "separator"]]
    assert len(evals) == 5 and all(x[x.index("--checkpoint") + 1] == f"{work}/v15/separator.pt" for x in evals)
    assert [x[x.index("--versus") + 1] for x in evals if "--versus" in x] == ["dfn3", "dfn3"]  # both test sets
    # a second run repeats no data build and no training, only the evaluations
    again = run_chain(tmp_path)
    assert [x[0] for x in again] == ["eval"] * 5


def test_from_placed_v3_weights_the_chain_replays_v4_to_v15_only(tmp_path):
    work = str(tmp_path / "work")
    lines = run_chain(tmp_path, v3="shipped v3")
    trains = [x for x in lines if x[:2] == ["train", "separator"]]
    outs = [x[x.index("--out") + 1].removeprefix(work + "/") for x in trains]
    assert outs == ["v4", "v5", "v7", "v8", "v11", "v12", "v14", "v15"]
    assert trains[0][-1] == f"{work}/v3/separator.pt"  # v4 starts from the placed weights
    built = [x[x.index("--out") + 1].removeprefix(work + "/") for x in lines if x[:2] == ["data", "sep-mixtures"]]
    assert "sepdata4h" not in built and "sepdata4h3" not in built  # only v2 needs them
    assert {"sepdata", "sepdata5"} <= set(built)  # validation sets of the card's evaluations
    assert len([x for x in lines if x[:2] == ["eval", "separator"]]) == 5
