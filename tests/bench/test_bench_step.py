"""bench/bench_step.py on the CPU: the smoke run (as the GPU image would run it, without trl,
datasets, deepspeed, wandb or math-verify) and the tokenizer it builds."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench_step.py"
ABSENT_ON_GPU_IMAGE = ("trl", "datasets", "deepspeed", "wandb", "math_verify")
SMOKE = [
    "--model-size",
    "tiny",
    "--device",
    "cpu",
    "--steps",
    "1",
    "--warmup",
    "0",
    "--new-tokens",
    "16",
    "--paragraph-every",
    "4",
]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_step", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def test_smoke_both_settings_finite_without_gpu_image_absentees(tmp_path):
    out = tmp_path / "smoke.json"
    # sys.modules[name] = None makes `import name` fail, as on the GPU image where they are not installed
    code = (
        f"import sys, runpy; sys.modules.update(dict.fromkeys({ABSENT_ON_GPU_IMAGE!r})); "
        f"sys.argv = {[str(BENCH), *SMOKE, '--out', str(out)]!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.monotonic() - t0 < 40
    assert "bar: step time RePro on / off" in proc.stdout.strip().splitlines()[-2]  # the summary comes last
    res = json.loads(out.read_text())
    assert res["complete"] and res["args"]["device"] == "cpu"
    for s in ("on", "off"):
        (row,) = res["settings"][s]["steps"]
        assert not row["warmup"] and row["rollouts"] == 32
        assert row["response_len_min"] == row["response_len_max"] == 16 and row["truncated_frac"] == 1.0
        for k, v in row["wall_s"].items():
            assert math.isfinite(v) and v >= 0, (s, k)
        assert row["wall_s"]["step"] == pytest.approx(sum(v for k, v in row["wall_s"].items() if k != "step"))
        m = res["summary"][s]
        assert math.isfinite(m["step_s"]) and m["step_s"] > 0
    on, off = res["summary"]["on"], res["summary"]["off"]
    # RePro really ran on the on side (paragraph tokens give cuts) and not at all on the off side
    assert on["cuts_per_rollout"] > 0 and on["probe_s"] > 0 and on["repro_s"] >= on["probe_s"]
    assert off["probe_s"] == off["repro_s"] == off["plan_s"] == 0 and "cuts_per_rollout" not in off
    assert math.isfinite(res["summary"]["ratio"]) and res["summary"]["ratio"] > 0
    assert res["summary"]["ratio"] == pytest.approx(on["step_s"] / off["step_s"])
    assert res["summary"]["bar"] in ("PASS", "FAIL")


def test_tokenizer_covers_the_vocabulary_with_paragraphs(bench, tmp_path):
    """Every id decodes to its ASCII piece after a save/reload next to a Qwen2 config, and
    paragraph tokens come 1 in `paragraph_every` words."""
    from transformers import AutoTokenizer, Qwen2Config

    V, every = 512, 4
    bench.build_tokenizer(V, every).save_pretrained(tmp_path)
    Qwen2Config(
        vocab_size=V,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=16,
    ).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    bench.check_tokenizer(tok, V, every)  # raises on any id that decodes otherwise
    pieces = bench.tokenizer_pieces(V, every)
    assert len(pieces) == V and all(p.isascii() for p in pieces)
    words = pieces[3 + 128 :]
    assert sum("\n\n" in p for p in words) == math.ceil(len(words) / every)
    # prompts, the forcing text and answers encode byte by byte into the same ids
    assert tok("\n\nFinal answer: 42", add_special_tokens=False).input_ids == [3 + b for b in b"\n\nFinal answer: 42"]
    with pytest.raises(RuntimeError, match="does not decode"):
        bench.check_tokenizer(tok, V, every + 1)


def test_summary_ratio_and_bar(bench):
    def row(step, warm, on):
        wall = dict(rollout=10.0, forward=1.0 + 0.5 * on, advantage=0.1, update=2.0)
        wall["step"] = sum(wall.values())
        return dict(
            warmup=warm,
            wall_s=wall,
            plan_s=0.05 * on,
            response_len_min=8,
            response_len_max=8,
            trainer_s=dict(generate_s=9.0, probe_s=0.4 * on, repro_s=0.45 * on),
            **({"cuts_per_rollout": 10.0} if on else {}),
        )

    payload = {"settings": {s: {"steps": [row(i, i == 0, s == "on") for i in range(3)]} for s in ("on", "off")}}
    s = bench.summarize(payload)
    assert s["on"]["n"] == s["off"]["n"] == 2
    assert s["ratio"] == pytest.approx(13.6 / 13.1) and s["bar"] == "FAIL"  # 1.038
    assert s["paired_ratios"] == pytest.approx([13.6 / 13.1] * 2)
    assert s["ratio_no_generate"] == pytest.approx(4.6 / 4.1)
    # repro_s already counts plan_s (the trainer's advantage_phase)
    assert s["on"]["repro_share"] == pytest.approx(0.45 / 13.6) and s["off"]["repro_share"] == 0
    assert s["extra_s"]["forward"] == pytest.approx(0.5)


def test_engine_summary_ratio_and_standalone_bar(bench):
    """--compare engine: vllm / hf step ratio against 0.45, and rollout tok/s in the trainer against
    vLLM alone: 8,000 tokens in a 2.0 s rollout phase = 4,000 tok/s; alone 8,000 in 1.6 s = 5,000
    tok/s; 4,000 / 5,000 = 0.8 < 0.9 (FAIL); step 2.0 + 3.0 = 5.0 s against 10.0 + 3.0 = 13.0 s."""

    def row(warm, rollout):
        wall = dict(rollout=rollout, forward=1.0, advantage=0.0, update=2.0)
        wall["step"] = sum(wall.values())
        return dict(
            warmup=warm,
            wall_s=wall,
            plan_s=0.0,
            response_len_min=8,
            response_len_max=8,
            tokens=8000,
            trainer_s=dict(generate_s=rollout, probe_s=0.0, repro_s=0.0),
        )

    payload = {
        "args": {"compare": "engine"},
        "settings": {
            "vllm": {"steps": [row(True, 2.0), row(False, 2.0)]},
            "hf": {"steps": [row(True, 10.0), row(False, 10.0)]},
        },
        "standalone_vllm": [dict(wall_s=1.6, tokens=8000)],
    }
    s = bench.summarize(payload)
    assert s["vllm"]["rollout_tok_s"] == pytest.approx(4000.0) and s["hf"]["rollout_tok_s"] == pytest.approx(800.0)
    assert s["ratio"] == pytest.approx(5.0 / 13.0) and s["bar"] == "PASS"
    assert s["standalone_tok_s"] == pytest.approx(5000.0)
    assert s["in_trainer_over_standalone"] == pytest.approx(0.8) and s["bar_standalone"] == "FAIL"


def test_precision_is_the_recipes_and_named(bench, tmp_path):
    """--dtype / --mixed-precision become model.dtype / dist.mixed_precision of the written recipe, and the
    summary names the setting (issue 25: the bench ran pure bf16 weights, the recipes float32 + bf16 autocast)."""
    import yaml

    cpu = ["--device", "cpu", "--model-size", "tiny"]
    args = bench.parse_args(cpu)
    assert (args.dtype, args.mixed_precision) == ("float32", "no") and bench.precision(args) == "float32 weights"
    args = bench.parse_args([*cpu, "--mixed-precision", "bf16"])
    assert bench.precision(args) == "float32 weights + bf16 autocast (the math recipes)"
    recipe = yaml.safe_load(Path(bench.write_recipe(str(tmp_path), "on", args)).read_text())
    assert recipe["model"]["dtype"] == "float32" and recipe["dist"]["mixed_precision"] == "bf16"
    old = bench.parse_args([*cpu, "--dtype", "bfloat16", "--mixed-precision", "no"])  # the tables before issue 25
    assert bench.precision(old) == "bfloat16 weights"


def test_fused_ops_flag_reaches_the_recipes(bench, tmp_path):
    """--compare fused: model.fused_ops = --fused-ops (compile unless given) against none, with the vllm engine on a
    GPU; any other comparison runs both settings with --fused-ops (none unless given)."""
    import yaml

    def fused_ops(args, setting):
        return yaml.safe_load(Path(bench.write_recipe(str(tmp_path), setting, args)).read_text())["model"]["fused_ops"]

    cpu = ["--device", "cpu", "--model-size", "tiny"]
    args = bench.parse_args([*cpu, "--compare", "fused"])
    assert args.settings == ("fused", "eager") and args.fused_ops == "compile"
    assert (fused_ops(args, "fused"), fused_ops(args, "eager")) == ("compile", "none")
    assert bench.fused_note(args) == ", fused ops compile (eager: none)"
    args = bench.parse_args([*cpu, "--compare", "fused", "--fused-ops", "liger"])
    assert (fused_ops(args, "fused"), fused_ops(args, "eager")) == ("liger", "none")
    args = bench.parse_args([*cpu, "--fused-ops", "compile"])  # --compare repro
    assert (fused_ops(args, "on"), fused_ops(args, "off")) == ("compile", "compile")
    assert bench.fused_note(bench.parse_args(cpu)) == "" and fused_ops(bench.parse_args(cpu), "on") == "none"
    gpu = bench.parse_args(cpu)
    gpu.compare, gpu.device = "fused", "cuda"
    assert bench.engine_of("fused", gpu) == bench.engine_of("eager", gpu) == "vllm"
    with pytest.raises(SystemExit):
        bench.parse_args([*cpu, "--compare", "fused", "--fused-ops", "none"])


def test_logprob_gap_of_a_step(bench):
    """Hand-computed: |0 - 0.1| = 0.1 and |-1 - (-1.5)| = 0.5 on the two response tokens; the masked third (7.0 apart)
    counts in neither the mean (0.6 / 2) nor the max. No engine log-probs (hf): no entry."""
    from types import SimpleNamespace

    import torch

    batch = SimpleNamespace(
        old_logprobs=torch.tensor([[0.0, -1.0, -2.0]]),
        engine_logprobs=torch.tensor([[0.1, -1.5, -9.0]]),
        mask=torch.tensor([[True, True, False]]),
    )
    gap = bench.gap_of(batch)
    assert gap["logprob_gap_mean"] == pytest.approx(0.3) and gap["logprob_gap_max"] == pytest.approx(0.5)
    assert bench.gap_of(SimpleNamespace(old_logprobs=batch.old_logprobs, engine_logprobs=None, mask=batch.mask)) == {}
