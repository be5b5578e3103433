"""Start a fine-tuning run from existing separator weights.

``python -m vibescope.stream.separator.finetune_init SRC.pt OUT/separator.ckpt LR [--lookahead N]`` writes a
training-state checkpoint that ``vibescope train separator --out OUT --lr LR`` resumes at step 0:
the weights (including the per-bin feature statistics) of ``SRC.pt``, a fresh Adam optimiser and a
fresh 200-step warm-up + cosine schedule over ``--steps``. Pass the same LR to both commands.
With ``--lookahead N`` the weights get N frames of look-ahead, its term zero
(``CausalMaskSeparator.with_lookahead``): training starts from exactly SRC's outputs.
"""

from __future__ import annotations

import argparse

import torch

from vibescope.stream.separator.model import CausalMaskSeparator


def write_init(src: str, dst: str, lr: float, lookahead: int = 0) -> None:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    model = CausalMaskSeparator.from_checkpoint(ckpt)
    if lookahead:
        model = model.with_lookahead(lookahead)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # lambda is not saved; train.py supplies its own
    for g in opt.param_groups:
        g["lr"] = lr / 200  # train.py's warm-up factor at step 0
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "step": 0,
            "config": {"init": src, "lr": lr, "lookahead": lookahead},
        },
        dst,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vibescope.stream.separator.finetune_init", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("src", help="separator weights to start from (a separator.pt)")
    parser.add_argument("dst", help="training-state checkpoint to write (OUT/separator.ckpt)")
    parser.add_argument("lr", type=float, help="the learning rate train will be given")
    parser.add_argument(
        "--lookahead",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="add this many frames of look-ahead (zero-initialised)",
    )
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    write_init(args.src, args.dst, args.lr, args.lookahead)
    print("wrote", args.dst)
