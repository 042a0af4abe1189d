#!/usr/bin/env bash
# The vLLM engine's GPU runs on a lent machine (docs/performance.md, section "vLLM engine").
# vLLM 0.25.1 is carried as wheels (../shared/tools/vllm-wheels, ../shared/tools/device-bundle) and
# installed into /tmp/site once per machine.
#
#   bash bench/vllm_device.sh checks OUTDIR      # (a) log-prob gap, (b) weights move, sleep 0 and 2
#   bash bench/vllm_device.sh tests OUTDIR       # every GPU-marked test
#   bash bench/vllm_device.sh learn OUTDIR       # (c) toy GRPO + RePro, vllm vs hf, 2 seeds, 40 steps each
#   bash bench/vllm_device.sh bench OUTDIR N     # (d) bench_step --compare engine, N prompts x 8 x 1,024 tokens
set -uo pipefail
mode=$1; out=$2; mkdir -p "$out"
wheels=/root/carry/vllm/.whl-vllm
if [ ! -d /tmp/site/vllm ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl 2>&1 | tail -2
fi
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 \
  HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
case $mode in
  checks)
    for lvl in 0 2; do
      python3 bench/check_vllm.py --sleep-level $lvl --out "$out/check_s$lvl.json" > "$out/check_s$lvl.log" 2>&1
      echo "check sleep $lvl: exit $?"; tail -22 "$out/check_s$lvl.log"
    done
    ;;
  tests)  # every GPU-marked test (vLLM's included)
    python3 -m pytest -q -p no:cacheprovider -m gpu tests > "$out/gpu_tests.log" 2>&1
    tail -15 "$out/gpu_tests.log" ;;
  learn)
    run() {  # engine seed
      python3 -m repro_train train --config recipes/toy/grpo_repro.yaml rollout.engine=$1 train.seed=$2 \
        train.steps=40 train.save_every=0 log.wandb=false log.progress=false rollout.per_prompt_seed=true \
        rollout.vllm.gpu_memory_utilization=0.15 train.output_dir=/tmp/learn/$1-$2 > "/tmp/learn-$1-$2.log" 2>&1
      echo "$1 seed $2: exit $?"; cp /tmp/learn/$1-$2/metrics.jsonl "$out/metrics-$1-$2.jsonl"
    }
    for e in ${3:-vllm hf}; do run $e 0 & sleep 40; run $e 1 & sleep 40; done; wait
    for f in /tmp/learn-*.log; do echo "== $f"; tail -n 5 "$f"; done > "$out/learn.log"; grep -h "Error\|error" /tmp/learn-*.log | head -20 ;;
  bench)
    python3 bench/bench_step.py --compare engine --prompts "$3" --group-size 8 --new-tokens 1024 --warmup 1 --steps 2 \
      --out "$out/bench_engine_$3x8.json" > "$out/bench_engine_$3x8.log" 2>&1
    echo "bench exit $?"; tail -14 "$out/bench_engine_$3x8.log" ;;
esac
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
