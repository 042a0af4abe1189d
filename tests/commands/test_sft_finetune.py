"""`repro-train sft` on a pretrained model (commands/sft/finetune.py): micro-batches under a token budget, the loss
on response tokens only and its independence of how a step is split, the recipe's checks and dispatch, and a run on
the tiny offline model that saves a folder the other commands load. The SmolLM2 thinker: tests/commands/test_thinker.py.
"""

import json
import math

import pytest
import torch
import yaml

from repro_train.commands.sft import finetune as ft
from repro_train.commands.sft import train as sft_main
from repro_train.commands.sft.finetune_config import (
    FinetuneConfig,
    FTDataConfig,
    FTModelConfig,
    FTTrainConfig,
    is_finetune,
    load_finetune,
    raw_recipe,
)
from repro_train.core.typed_config import ConfigError

# ----------------------------------------------------------------------------- pure functions


def test_micro_batches_sort_by_length_and_respect_the_budget():
    # lengths 5, 2, 9, 3, 4 (prompt counts do not matter); sorted: 2 (i1), 3 (i3), 4 (i4), 5 (i0), 9 (i2).
    # budget 10: [i1, i3] pads to 2 x 3 = 6, adding i4 would pad to 3 x 4 = 12 > 10 -> cut; [i4, i0] = 2 x 5 = 10;
    # [i2] = 9.
    ex = [([0] * n, 1) for n in (5, 2, 9, 3, 4)]
    assert ft.micro_batches(ex, 10) == [[1, 3], [4, 0], [2]]
    # every index once, and no group over the budget, on a larger random case
    g = torch.Generator().manual_seed(0)
    ex = [([0] * int(n), 1) for n in torch.randint(1, 50, (40,), generator=g)]
    groups = ft.micro_batches(ex, 64)
    assert sorted(i for grp in groups for i in grp) == list(range(40))
    assert all(len(grp) * max(len(ex[i][0]) for i in grp) <= 64 for grp in groups)


def test_collate_masks_prompt_and_padding():
    batch = ft.collate([([5, 6, 7, 8], 2), ([9, 10, 11], 1)], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 11, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [-100, 10, 11, -100]]


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


def test_token_nll_sum_is_the_response_tokens_cross_entropy(tiny_lm):
    """Against a per-token reference: -log softmax(logits at t - 1)[token t], summed over response tokens."""
    examples = [([3, 17, 40, 41, 2], 2), ([3, 18, 50, 2], 3)]
    batch = ft.collate(examples, pad_id=0)
    nll, n = ft.token_nll_sum(tiny_lm, batch, ft.nullcontext)
    assert n == 3 + 1  # (40, 41, 2) and (2)
    ref = 0.0
    with torch.no_grad():
        for ids, n_prompt in examples:
            logp = torch.log_softmax(tiny_lm(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            ref -= sum(logp[t - 1, ids[t]].item() for t in range(n_prompt, len(ids)))
    assert nll.item() == pytest.approx(ref, rel=1e-5)


def test_the_step_gradient_does_not_depend_on_the_micro_batch_budget(tiny_lm):
    """One step's mean response-token loss, split into 4 micro-batches or 1, gives the same gradient."""
    g = torch.Generator().manual_seed(1)
    chunk = [(torch.randint(3, 300, (int(n),), generator=g).tolist(), 2) for n in (6, 9, 4, 12, 7)]
    grads = []
    for budget in (12, 1000):
        tiny_lm.zero_grad(set_to_none=True)
        t = FTTrainConfig(micro_batch_tokens=budget)
        loss, n_tok, _ = ft.step_loss(tiny_lm, chunk, t, 0, torch.device("cpu"), ft.nullcontext)
        assert n_tok == sum(len(ids) - 2 for ids, _ in chunk)
        grads.append((loss, [p.grad.clone() for p in tiny_lm.parameters()]))
    assert len(ft.micro_batches(chunk, 12)) == 4  # sorted 4, 6 | 7 | 9 | 12: the split is real
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    tiny_lm.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- the recipe


def test_recipe_kind_dispatch_and_checks(tmp_path):
    assert is_finetune({"model": {"path": "m"}}) and not is_finetune({"model": {"layers": 4}}) and not is_finetune({})
    raw = raw_recipe("recipes/thinker/sft.yaml", ["train.steps=3"])
    cfg = load_finetune(raw)
    assert cfg.train.steps == 3 and cfg.model.think_end == "</think>" and cfg.data.response_field == "response"
    with pytest.raises(ConfigError, match="did you mean 'train.steps'"):
        load_finetune(raw_recipe("recipes/thinker/sft.yaml", ["train.stpes=3"]))
    with pytest.raises(ConfigError, match="'train.micro_batch_tokens'.*'data.max_tokens'"):
        load_finetune(raw_recipe("recipes/thinker/sft.yaml", ["train.micro_batch_tokens=100"]))
    with pytest.raises(ConfigError, match="'model.path' is empty"):
        load_finetune({"model": {"path": ""}, "data": {"source": "x.jsonl"}})
    # the CLI reports a bad recipe with exit 2, before loading anything
    assert sft_main.main(["--config", "recipes/thinker/sft.yaml", "train.batch_size=0"]) == 2


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_rows_need_a_response_and_a_prompt(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    d = FTDataConfig(source="x")
    with pytest.raises(ConfigError, match="no response text in field 'response'"):
        ft.encode_pair(tok, {"question": "q"}, d, 2, "row 0")
    with pytest.raises(ConfigError, match="missing field 'prompt'"):
        ft.encode_pair(tok, {"response": "r"}, d, 2, "row 0")
    # the prompt is the one RL and eval build: the question in the chat template (data/prompts.encode_prompt)
    from repro_train.data.prompts import encode_prompt

    ids, n = ft.encode_pair(tok, {"question": "What is 2 + 3?", "response": "5"}, d, 2, "row 0")
    assert ids[:n] == encode_prompt(tok, {"question": "What is 2 + 3?"}) and ids[-1] == 2
    assert ids[n:-1] == tok("5", add_special_tokens=False)["input_ids"]
    with pytest.raises(ConfigError, match="no such file and not a named set"):
        ft.read_rows(str(tmp_path / "missing.jsonl"))


# ----------------------------------------------------------------------------- a run on the tiny model


def test_tiny_run_saves_a_folder_the_other_commands_load(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repro_train.core.text import eos_ids

    rows = [
        {
            "question": f"What is {a} + {a}?",
            "response": f"<think>\n{a} + {a} = {2 * a}\n</think>\n\nFinal answer: {2 * a}",
            "answer": str(2 * a),
        }
        for a in range(1, 13)
    ]
    data = _jsonl(tmp_path / "d.jsonl", rows)
    recipe = tmp_path / "sft.yaml"
    spec = {
        "model": {"path": tiny_model_dir, "save_dtype": "float32"},
        "data": {"source": data, "eval_rows": 2, "max_tokens": 256},
        "train": {
            "steps": 6,
            "batch_size": 4,
            "micro_batch_tokens": 256,
            "lr": 3e-3,
            "warmup_steps": 1,
            "log_every": 2,
            "eval_every": 3,
            "progress": False,
            "device": "cpu",
        },
        "eval": {"problems": 2, "max_new_tokens": 8},
        "output_dir": str(tmp_path / "out"),
    }
    recipe.write_text(yaml.safe_dump(spec))
    assert sft_main.main(["--config", str(recipe)]) == 0
    out = tmp_path / "out"
    log = [json.loads(x) for x in (out / "sft_log.jsonl").read_text().splitlines()]
    train = [r for r in log if "loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6] and all(math.isfinite(r["loss"]) for r in train)
    assert train[-1]["loss"] < train[0]["loss"]
    assert [r["step"] for r in log if "eval_loss" in r] == [3, 6]
    result = json.loads((out / "sft_result.json").read_text())
    assert result["steps"] == 6 and result["n_examples"] == 10 and result["stopped_early_at"] is None
    assert result["generation"]["n_samples"] == 2 and result["bf16_autocast"] is False

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and eos_ids(model, tok) == [tok.eos_token_id]
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert (out / "sft_config.yaml").exists()
    # trained: the weights moved
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))


def test_time_limit_stops_after_the_first_step_past_it(tmp_path, tiny_model_dir):
    rows = [{"question": f"q{i}", "response": f"r{i}"} for i in range(10)]
    cfg = FinetuneConfig(
        model=FTModelConfig(path=tiny_model_dir),
        data=FTDataConfig(source=_jsonl(tmp_path / "d.jsonl", rows), eval_rows=2, max_tokens=64),
        train=FTTrainConfig(
            steps=50, batch_size=2, micro_batch_tokens=64, time_limit_s=1e-9, progress=False, device="cpu", eval_every=0
        ),
        output_dir=str(tmp_path / "out"),
    )
    result = ft.run_finetune(cfg)
    assert result["steps"] == 1 and result["stopped_early_at"] == 1 and "eval_loss" in result
