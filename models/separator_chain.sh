#!/usr/bin/env bash
# How the shipped separator weights (vibescope-sep-v15, models/separator.pt) were made, as one
# command: every data set and training run of the chain in models/separator.md, in order, each
# fine-tune starting from the weights the run before it produced.
#
#   bash models/separator_chain.sh [WORK]        # default WORK=/tmp/vibescope-sep-chain
#
# About 3.5 h of training on a 2-core machine (the last links, v14 and v15, about 30 min each on
# one thread), plus ~15 min of data building with a cold cache
# (needs `apt-get download`, i.e. Debian's package archive). Re-running skips finished steps: a
# step is done when its separator.pt exists; an interrupted `train` resumes its checkpoint.
# The result is WORK/v15/separator.pt (copy it to models/ yourself). From scratch it is the same
# recipe, not the same weights: the original v1 run was stopped at step 1000 and resumed with a longer schedule
# and the then-new re-pitch augmentation (models/separator.md, Training), which one command cannot
# replay, so expect numbers close to the card's, not equal. Afterwards it prints the card's
# validation and test evaluations.
#
# From v3 on, the chain replays the weights themselves: v4 and v5 bit for bit, v12 within 3e-5 of
# the shipped tensors (the later links were first trained on another host), and the card's
# numbers to 3 decimals (models/separator.md, Training). The v14 link, added after that replay,
# replays bit for bit from the shipped v12 weights, and v15 from the shipped v14 (stop 12). To
# replay that part from the shipped v3 weights (the v1-v3 steps and their own data sets are then
# skipped):
#
#   mkdir -p WORK/v3 && git show 88777ec:models/separator.pt > WORK/v3/separator.pt
set -euo pipefail
WORK=${1:-/tmp/vibescope-sep-chain}
VIBESCOPE=${VIBESCOPE:-vibescope}
PYTHON=${PYTHON:-python}
mkdir -p "$WORK"

data() {  # data NAME ARGS...: build WORK/NAME once
    local name=$1; shift
    [ -f "$WORK/$name/.done" ] || { $VIBESCOPE data sep-mixtures --out "$WORK/$name" --quiet "$@" && touch "$WORK/$name/.done"; }
}

finetune() {  # finetune NAME FROM DATA STEPS LR [train options...]: FROM's weights, fresh Adam
    local name=$1 from=$2 set=$3 steps=$4 lr=$5; shift 5
    [ -f "$WORK/$name/separator.pt" ] && return
    mkdir -p "$WORK/$name"
    local init=() args=("$@")  # a --lookahead N among the train options is added by finetune_init
    for i in "${!args[@]}"; do [ "${args[$i]}" = --lookahead ] && init=(--lookahead "${args[$((i + 1))]}"); done
    [ -f "$WORK/$name/separator.ckpt" ] || $PYTHON -m vibescope.stream.separator.finetune_init "$WORK/$from/separator.pt" "$WORK/$name/separator.ckpt" "$lr" "${init[@]}"
    $VIBESCOPE train separator --data "$WORK/$set" --out "$WORK/$name" --steps "$steps" --lr "$lr" --threads 2 "$@"
}

data sepdata --hours 1.5 --seed 0 --recipe v2  # v1's set, and one of the card's validation sets
data sepdata5 --hours 4 --seed 5 --recipe v3  # v3's set, and another
if [ ! -f "$WORK/v3/separator.pt" ]; then  # absent when the shipped v3 was placed there (above)
    # v1: from scratch on the v2 recipe's first set
    [ -f "$WORK/v1/separator.pt" ] || $VIBESCOPE train separator --data "$WORK/sepdata" --out "$WORK/v1" --steps 6000 --threads 2
    # v2: two short fine-tunes on more clips of the same sources
    data sepdata4h --hours 4 --seed 2 --recipe v2
    data sepdata4h3 --hours 4 --seed 3 --recipe v2
    finetune v2a v1 sepdata4h 2500 3e-4
    finetune v2 v2a sepdata4h3 1800 2e-4
    # v3: MIDI music, espeak-ng voices, OST speed/reverb augmentation
    finetune v3 v2 sepdata5 5000 3e-4
fi
# v4: hedgewars voices; v5: louder music; v7: Asterisk prompts; v8: MegaGlest lines
data sepdata_v4 --hours 4 --seed 7 --recipe v4
finetune v4 v3 sepdata_v4 2500 2e-4
data sepdata_v5 --hours 4 --seed 8 --recipe v5
finetune v5 v4 sepdata_v5 2500 1.5e-4
data sepdata_v7 --hours 4 --seed 10 --recipe v7
finetune v7 v5 sepdata_v7 3000 1.5e-4
data sepdata_v8 --hours 6 --seed 11 --recipe v8
finetune v8 v7 sepdata_v8 4000 1e-4
# v11 (not shipped, v12's parent) and v12: the OST's loss weighted 2
finetune v11 v8 sepdata_v8 4000 1e-4 --ost-weight 2
data sepdata_v9 --hours 8 --seed 12 --recipe v8
finetune v12 v11 sepdata_v9 4000 1e-4 --ost-weight 2
# v14: two frames of look-ahead on v12 (64 ms lag), trained on one thread as the shipped run was
finetune v14 v12 sepdata_v9 5000 1e-4 --ost-weight 2 --lookahead 2 --threads 1
# v15: one more round on a fresh draw of recipe v8 (the look-ahead comes with v14's weights)
data sepdata_v15 --hours 8 --seed 14 --recipe v8
finetune v15 v14 sepdata_v15 5000 1e-4 --ost-weight 2 --threads 1

# the card's evaluations: validation (selection) sets, then the two held-out test sets
data septest225 --hours 0.25 --seed 1 --test
data septest --hours 1.5 --seed 0 --test
for set in sepdata5 sepdata_v8 sepdata; do
    $VIBESCOPE eval separator --data "$WORK/$set" --split val --method ours --checkpoint "$WORK/v15/separator.pt" --json
done
for set in septest225 septest; do
    $VIBESCOPE eval separator --data "$WORK/$set" --split test --method ours --checkpoint "$WORK/v15/separator.pt" --versus dfn3 --json
done
echo "weights: $WORK/v15/separator.pt"
