#!/usr/bin/env bash
# Retrain a shipped checkpoint with the recipe of docs/TRAINING.md: five stages, each starting
# from the previous one's best checkpoint, the learning-rate schedule resuming where it stopped.
#   scripts/train_shipped.sh dws|vanilla [OUT]   (one thread; run both variants side by side)
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:?usage: $0 dws|vanilla [OUT]}
out=${2:-tvm_conformer/assets/conformer_${variant}.pt}
work=build/train/${variant}
mkdir -p "$work"
train() { .venv/bin/tvm-conformer train --data data --threads 1 "$@"; }
# 1: dynamic chunks (4, 8, 16, 32, full context), from scratch
train --subsampling "$variant" --max-minutes 40 --out "$work/stage1.pt"
# 2: continue (fresh optimizer)
train --init "$work/stage1.pt" --max-minutes 30 --out "$work/stage2.pt"
# 3 to 5: chunks closer to deployment (8, 16, 32, full; 2-4 left chunks)
deploy=(--chunk-choices 8,16,16,16,32,-1 --left-choices 2,4,4,-1)
train --init "$work/stage2.pt" --max-minutes 25 "${deploy[@]}" --out "$work/stage3.pt"
train --init "$work/stage3.pt" --max-minutes 75 --seed 1 "${deploy[@]}" --out "$work/stage4.pt"
train --init "$work/stage4.pt" --max-minutes 62 --seed 2 "${deploy[@]}" --out "$out"
