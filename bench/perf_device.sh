#!/usr/bin/env bash
# Issue 26's GPU measurements in one call on a lent H100/H200 (docs/performance.md, "The training phases"):
#
#   bash bench/perf_device.sh OUTDIR [PHASES]     # PHASES: any of tests path paper paperv fusedtests fused overlap
#                                                 (default: tests path paper)
#
#   tests  the GPU tests of the log-prob head (tests/models/test_logprobs.py: the Triton kernel against torch) and of
#          the probe's kernels (tests/repro/probe/test_kernels.py: bf16, and bf16 autocast over float32 weights)
#   path   bench_step --compare path at 32 x 8 x 1,024 (Qwen2-1.5B dims, RePro on, vllm engine, the recipes'
#          precision): the training phases now against the path of 2026-12-07 (logits head, separate old-log-prob
#          pass, rows of 4), one warm-up and one timed step each, then a fresh vLLM process with the same options
#          (P_FRESH=0 leaves the fresh process out)
#   paper  the paper's shape: 8 x 8 x 8,192 tokens, gradient checkpointing, a 32k-token micro-batch budget, one step
#   paperv the same with realistic lengths (--vary-lengths: responses cut to seeded lengths in [1,024, 8,192]): tokens/s
#          and the padding share
#   fusedtests  model.fused_ops' GPU tests (tests/models/test_fused_ops.py -m gpu: inductor's Triton kernels; Liger's
#          where a .whl-liger is carried)
#   fused  bench_step --compare fused at 32 x 8 x 1,024 (Qwen2-1.5B dims, RePro on, vllm engine, the recipes'
#          precision, 4k-token micro-batches): model.fused_ops compile (FUSED_OPS=liger: Liger) against none
#   overlap bench_step --compare overlap at the same shape: rollout.overlap_cpu_tail true against false
#
# vLLM comes from the carried wheel set (/root/carry/*/.whl-vllm, as bench/thinker_device.sh installs it), Liger from
# a carried .whl-liger (in the checkout or /root/carry/*/). What comes back in OUTDIR: gpu_tests.log, path.json/.log, paper.json/.log,
# fused_tests.log, fused.json/.log, overlap.json/.log; the summary tables print last.
set -uo pipefail
out=$(mkdir -p "${1:?OUTDIR}" && cd "$1" && pwd); phases=${2:-tests path paper}
T0=$(date +%s)
say() { echo "[perf $(($(date +%s) - T0)) s] $*"; }
if [ ! -d /tmp/site/vllm ]; then
  wheels=$(find /root/carry -type d -name .whl-vllm 2>/dev/null | head -n 1)
  [ -n "$wheels" ] || { say "no .whl-vllm under /root/carry"; exit 3; }
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl 2>&1 | tail -2
fi
liger=""
for d in "$PWD/.whl-liger" /root/carry/*/.whl-liger; do [ -d "$d" ] && { liger=$d; break; }; done
if [ -n "$liger" ] && [ ! -d /tmp/site/liger_kernel ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$liger"/*.whl 2>&1 | tail -2
fi
export PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false WANDB_MODE=offline PYTHONUNBUFFERED=1
for phase in $phases; do
  case $phase in
    tests)
      timeout "${P_TESTS:-120}" python3 -m pytest -q -p no:cacheprovider -m gpu tests/models/test_logprobs.py \
        tests/repro/probe/test_kernels.py > "$out/gpu_tests.log" 2>&1
      say "gpu tests: exit $?; $(tail -n 1 "$out/gpu_tests.log")" ;;
    path)
      timeout "${P_PATH:-330}" python3 bench/bench_step.py --compare path --prompts 32 --group-size 8 \
        --new-tokens 1024 --warmup 1 --steps 1 --schedule sequential --max-tokens 4096 $([ "${P_FRESH:-1}" = 1 ] && echo --fresh-engine) \
        --out "$out/path.json" > "$out/path.log" 2>&1
      say "path: exit $?" ;;
    paper)
      timeout "${P_PAPER:-240}" python3 bench/bench_step.py --compare path --only new --prompts 8 --group-size 8 \
        --new-tokens 8192 --warmup 0 --steps 1 --grad-ckpt --max-tokens 32768 --out "$out/paper.json" \
        > "$out/paper.log" 2>&1
      say "paper: exit $?" ;;
    paperv)
      timeout "${P_PAPERV:-240}" python3 bench/bench_step.py --compare path --only new --prompts 8 --group-size 8 \
        --new-tokens 8192 --warmup 0 --steps 1 --grad-ckpt --max-tokens 32768 --vary-lengths --out "$out/paperv.json" \
        > "$out/paperv.log" 2>&1
      say "paper, varied lengths: exit $?" ;;
    fusedtests)
      timeout "${P_FUSED_TESTS:-240}" python3 -m pytest -q -p no:cacheprovider -m gpu tests/models/test_fused_ops.py \
        > "$out/fused_tests.log" 2>&1
      say "fused gpu tests: exit $?; $(tail -n 1 "$out/fused_tests.log")" ;;
    fused)
      timeout "${P_FUSED:-480}" python3 bench/bench_step.py --compare fused --fused-ops "${FUSED_OPS:-compile}" \
        --prompts 32 --group-size 8 --new-tokens 1024 --warmup 1 --steps 2 --schedule sequential --max-tokens 4096 \
        --out "$out/fused.json" > "$out/fused.log" 2>&1
      say "fused: exit $?" ;;
    overlap)
      timeout "${P_OVERLAP:-420}" python3 bench/bench_step.py --compare overlap --prompts 32 --group-size 8 \
        --new-tokens 1024 --warmup 1 --steps 2 --schedule sequential --max-tokens 4096 --out "$out/overlap.json" \
        > "$out/overlap.log" 2>&1
      say "overlap: exit $?" ;;
  esac
done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
for f in path paper paperv fused overlap; do [ -f "$out/$f.log" ] && { echo "== $f"; grep -v "^\[" "$out/$f.log" | tail -n 14; }; done
say done
