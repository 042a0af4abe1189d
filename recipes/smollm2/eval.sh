#!/usr/bin/env bash
# Evaluate SmolLM2 models on held-out arithmetic and on GSM8K-100 (docs/models-and-data.md).
#
#   bash recipes/smollm2/eval.sh [LABEL=]MODEL_DIR ...     e.g.
#   bash recipes/smollm2/eval.sh base=models/smollm2-135m-instruct rl=runs/smollm2/grpo_repro/checkpoint-000100/policy
#
# Held-out: chain_sum problems made from other seeds, without any question of the training set of
# recipes/smollm2/grpo_repro.yaml (--exclude); the 3-term set is harder than training (not memorisable).
# The sampling settings (system prompt, temperature 0.7, 96 tokens) match the recipes' rollouts.
# Environment: OUT (default runs/smollm2/eval); EXTRA, more `repro-train eval` options for every set
# (e.g. EXTRA="--n-problems 20 --device cpu").
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,11p' "$0"; exit 2; }
OUT=${OUT:-runs/smollm2/eval}
TRAIN='reasoning-gym:chain_sum?size=100&seed=1&min_terms=2&max_terms=2&min_digits=1&max_digits=1'
SYS="Solve the arithmetic problem. Write the steps, one per line, then end with a line of the form 'Final answer: <number>'."
mkdir -p "$OUT/data"
repro-train data export "$TRAIN" --out "$OUT/data/train.jsonl"
repro-train data export 'reasoning-gym:chain_sum?size=1000&seed=1001&min_terms=2&max_terms=2&min_digits=1&max_digits=1' \
  --exclude "$OUT/data/train.jsonl" --unique --out "$OUT/data/heldout_2term.jsonl"
repro-train data export 'reasoning-gym:chain_sum?size=300&seed=1002&min_terms=3&max_terms=3&min_digits=1&max_digits=1' \
  --unique --out "$OUT/data/heldout_3term.jsonl"
models=(); for m in "$@"; do models+=(--model "$m"); done
for set in heldout_2term heldout_3term; do
  repro-train eval "${models[@]}" --data "$OUT/data/$set.jsonl" --samples 4 --temperature 0.7 \
    --max-new-tokens 96 --reward last_number --system-prompt "$SYS" --k 1,4 --out "$OUT/$set" ${EXTRA:-}
done
repro-train eval "${models[@]}" --data gsm8k-100 --samples 4 --temperature 0.7 --max-new-tokens 256 \
  --reward last_number --system-prompt "Solve the problem step by step, one short step per line. End with a line of the form 'Final answer: <number>'." \
  --k 1,4 --out "$OUT/gsm8k-100" ${EXTRA:-}
