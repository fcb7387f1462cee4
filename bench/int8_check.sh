#!/bin/bash
# Retrieval cost of the dtypes for the shipped default on scifact-mini (issue 16): the same
# `ember eval beir` in fp32, bf16 and int8 (EMBER_DTYPE), dense and hybrid; JSON per run in
# bench/out/int8/. One torch thread, nice: the figures are nDCG@10, not speed.
#   bash bench/int8_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data/beir/scifact-mini
mkdir -p bench/out/int8
for dtype in float32 int8 bfloat16; do
  for mode in dense hybrid; do
    out=bench/out/int8/smollm2-ember-$dtype-$mode.json
    [ -s "$out" ] && continue
    start=$(date +%s)
    EMBER_DTYPE=$dtype OMP_NUM_THREADS=1 nice -n 15 .venv/bin/ember eval beir "$DATA" \
      --encoder smollm2-ember --mode $mode --json --no-progress > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "$dtype $mode $(( $(date +%s) - start ))s $(head -c 300 "$out")"
  done
done
