#!/usr/bin/env bash
# The open-vocabulary recipe (docs/TRAINING.md): one resumable run per model, 180 min of wall
# time, one thread, niced, checkpoints every 10 min into a directory outside the work tree.
#   scripts/train_open.sh dws|vanilla      starts the run, or resumes it where it stopped
#   (the same command both times: a run directory holding last.pt is resumed)
# Builds the corpus first if it is missing (make-data --corpus open, resumable too).
# Environment: TVM_CONFORMER_CACHE (default ~/.cache/tvm-conformer) holds data/ and runs/;
# PYTHON (default .venv/bin/python); MINUTES (default 180) is the run's total budget.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:?usage: $0 dws|vanilla}
cache=${TVM_CONFORMER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tvm-conformer}
data=$cache/data/open-v1
run=$cache/runs/open-v1-$variant
py=${PYTHON:-.venv/bin/python}
tc() { nice -n 19 "$py" -m tvm_conformer "$@"; }
# With sched_autogroup (Linux's default for desktop-style kernels, on here) `nice` only ranks
# processes inside one session: a run started from its own session (setsid, nohup from
# another terminal) took an equal share of the CPU against a CI run in another session. The
# session's autogroup gets the nice value too.
echo 19 > /proc/self/autogroup 2>/dev/null || true
# bf16 autocast where the CPU has bf16 arithmetic (AVX-512-BF16 or AMX): 1.27x faster steps on
# this znver4, the same loss (docs/TRAINING.md); BF16=0 turns it off
bf16=""
if [ "${BF16:-1}" = 1 ] && grep -qE "avx512_bf16|amx_bf16" /proc/cpuinfo; then bf16=--bf16; fi
if [ ! -f "$data/test_grammar/feats.npz" ] && ! pgrep -f "make-data --corpus open --out $data" >/dev/null; then
  tc make-data --corpus open --out "$data" --train 12000 --valid 400 --test 300 --seed 0 --workers 2
fi
mkdir -p "$run"
if [ -f "$run/last.pt" ]; then
  exec nice -n 19 "$py" -m tvm_conformer train --resume "$run" ${MINUTES:+--max-minutes "$MINUTES"} >>"$run/train.log" 2>&1
fi
exec nice -n 19 "$py" -m tvm_conformer train --data "$data" --run-dir "$run" --subsampling "$variant" \
  --threads 1 --max-minutes "${MINUTES:-180}" --save-minutes 10 --valid-every 400 $bf16 \
  --warmup-steps 400 --lr 2e-3 --curriculum-steps 600 --model-config '{"feat_floor": 1.0}' --chunk-choices 4,8,16,16,16,32,-1 --left-choices 1,2,4,4,4,-1 \
  >>"$run/train.log" 2>&1
