"""Start a fine-tuning run from existing separator weights.

``python -m stream.separator.finetune_init SRC.pt OUT/separator.ckpt LR`` writes a training-state
checkpoint that ``vibescope train separator --out OUT --lr LR`` resumes at step 0: the weights
(including the per-bin feature statistics) of ``SRC.pt``, a fresh Adam optimiser and a fresh
200-step warm-up + cosine schedule over ``--steps``. Pass the same LR to both commands.
"""
from __future__ import annotations

import sys

import torch

from .model import CausalMaskSeparator


def write_init(src: str, dst: str, lr: float) -> None:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    model = CausalMaskSeparator.from_checkpoint(ckpt)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # lambda is not saved; train.py supplies its own
    for g in opt.param_groups:
        g["lr"] = lr / 200  # train.py's warm-up factor at step 0
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": 0, "config": {"init": src, "lr": lr}}, dst)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m stream.separator.finetune_init SRC.pt OUT/separator.ckpt LR")
    write_init(sys.argv[1], sys.argv[2], float(sys.argv[3]))
    print("wrote", sys.argv[2])
