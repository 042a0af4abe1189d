#!/usr/bin/env bash
# The thinker (or any model trained from it) on held-out `thinking:` problems, next to the trace mix it learned from
# (docs/results.md, "The thinker"): accuracy, mean tokens, re-check and backtrack rates, tokens after the first
# correct answer, on in-distribution problems (split=test) and harder ones (split=hard: 6-8 steps).
#
#   bash recipes/thinker/eval.sh [LABEL=]MODEL_DIR ...     e.g.
#   bash recipes/thinker/eval.sh thinker=models/thinker rl=runs/thinker/grpo_repro     # a run folder: its last checkpoint
#
# The sets and sampling settings are recipes/compare/thinker.yaml's (100 problems each, 2 samples at temperature 0.7,
# 1,536 new tokens, the strict `numeric` check of the "Final answer:" line). The row labelled 'reference' scores the
# problems' own generated traces (--reference response): the trace mix, measured like a model.
# Environment: OUT (default runs/thinker/eval), ENGINE (hf or vllm; default vllm, eager, when vLLM is installed and a
# GPU is visible, else hf), REPRO (default: repro-train), EXTRA (more `repro-train eval` options, e.g.
# EXTRA="--n-problems 4 --max-new-tokens 64 --device cpu").
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,16p' "$0"; exit 2; }
OUT=${OUT:-runs/thinker/eval}
REPRO=${REPRO:-repro-train}
if [ -z "${ENGINE:-}" ]; then
  ENGINE=hf
  python3 -c "import importlib.util as u, torch; assert u.find_spec('vllm') and torch.cuda.is_available()" 2>/dev/null \
    && ENGINE=vllm
fi
ENGINE_ARGS=(--engine "$ENGINE")
[ "$ENGINE" = vllm ] && ENGINE_ARGS+=(--dtype bfloat16 --vllm-memory 0.3 --vllm-eager)
models=(); for m in "$@"; do models+=(--model "$m"); done
$REPRO eval "${models[@]}" \
  --data 'test=thinking:all?n=100&seed=2&split=test&max_digits=2' \
  --data 'hard=thinking:all?n=100&seed=2&split=hard&max_digits=2' \
  --samples 2 --temperature 0.7 --max-new-tokens 1536 --reward numeric --k 1,2 --reference response \
  "${ENGINE_ARGS[@]}" --out "$OUT" ${EXTRA:-}
