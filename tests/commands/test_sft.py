"""The tiny reasoner: tokenizer and chat format, the SFT script, and the shipped model folder."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from repro_train.commands.sft import report as sft_report
from repro_train.commands.sft import train as sft
from repro_train.core.typed_config import ConfigError, to_dict
from repro_train.tasks.arithmetic import TaskConfig, generate
from repro_train.tasks.reasoner import TOY_PROBE_PREFIX, build_tokenizer, format_prompt, reasoner_path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy" / "sft.yaml"


@pytest.fixture(scope="module")
def tok():
    rows = generate(300, 0)
    return build_tokenizer([f"Question: {r['question']}\n{r['response']}" for r in rows], 512)


# ----------------------------------------------------------------------------- tokenizer


def test_digits_are_single_tokens(tok):
    for d in "0123456789":
        assert tok.convert_ids_to_tokens(tok(d, add_special_tokens=False)["input_ids"]) == [d]
    ids = tok("= 907", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[-3:] == ["9", "0", "7"]


def test_think_markers_survive_skip_special(tok):
    text = "<think>\n3 + 4 = 7\n\n</think>\n\nFinal answer: 7"
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok.convert_ids_to_tokens(ids).count("</think>") == 1  # one whole token
    assert tok.decode(ids, skip_special_tokens=True) == text  # EOS dropped, markers kept
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<|pad|>", "<|bos|>", "<|eos|>")


def test_chat_template(tok):
    q = "Start with 4. Add 3. What is the result?"
    user = [{"role": "user", "content": q}]
    assert (
        tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == f"<|bos|>Question: {q}\n<think>\n"
    )
    assert (
        tok.apply_chat_template(
            [{"role": "system", "content": "Be brief."}] + user, tokenize=False, add_generation_prompt=True
        )
        == f"<|bos|>System: Be brief.\nQuestion: {q}\n<think>\n"
    )


def test_trace_round_trip_and_probe_prefix(tok):
    for row in generate(20, 5):
        ids = tok(row["response"], add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == row["response"]
        assert TOY_PROBE_PREFIX in row["response"]
    # A prompt encodes with no automatic BOS (the template writes it) and ends in <think>, "\n".
    ids, n_prompt = sft.encode_example(tok, row)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.convert_ids_to_tokens(ids[n_prompt - 2 : n_prompt]) == ["<think>", "Ċ"]
    assert ids[-1] == tok.eos_token_id


# ----------------------------------------------------------------------------- pieces of sft/train.py


def test_lr_factor_warmup_and_cosine():
    t = sft.SFTTrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert sft.lr_factor(0, t) == pytest.approx(0.1)  # (0 + 1) / 10
    assert sft.lr_factor(10, t) == pytest.approx(1.0)  # cosine starts at the peak
    assert sft.lr_factor(60, t) == pytest.approx(0.55)  # half way: 0.1 + 0.9 * 0.5
    assert sft.lr_factor(110, t) == pytest.approx(0.1)


def test_batch_indices_cover_each_epoch_once():
    lengths = [i % 7 for i in range(50)]
    batches = list(sft.batch_indices(lengths, 8, 12, 3, torch.Generator().manual_seed(0)))
    assert all(len(b) == 8 for b in batches)
    first_epoch = [i for b in batches[:6] for i in b]  # 50 // 8 = 6 full batches
    assert len(set(first_epoch)) == 48

    # Windows of 3 batches are sorted by length: a batch spans fewer lengths than unbucketed.
    def spread(bs):
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in bs)

    plain = list(sft.batch_indices(lengths, 8, 12, 1, torch.Generator().manual_seed(0)))
    assert spread(batches) < spread(plain) / 2


def test_collate_masks_prompt_and_padding():
    batch = sft.collate([([1, 5, 6, 7, 2], 2), ([1, 5, 8], 2)], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 2], [1, 5, 8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 6, 7, 2], [-100, -100, 8, -100, -100]]


def test_bad_key_is_config_error():
    with pytest.raises(ConfigError, match="did you mean 'train.steps'"):
        sft.load(None, ["train.stpes=3"])
    with pytest.raises(ConfigError, match="eval.seed"):
        sft.load(None, ["eval.seed=0"])
    assert sft.main(["train.batch_size=0"]) == 2


# ----------------------------------------------------------------------------- a 5-step run

TINY = [
    "data.n_train=64",
    "model.layers=1",
    "model.hidden=32",
    "model.heads=2",
    "model.kv_heads=1",
    "model.intermediate=64",
    "model.context_length=256",
    "train.steps=5",
    "train.batch_size=8",
    "train.warmup_steps=1",
    "train.lr=0.01",
    "train.threads=1",
    "train.log_every=1",
    "train.progress=false",
    "eval.n_problems=2",
    "eval.sampled_problems=1",
    "eval.samples=2",
    "eval.max_new_tokens=12",
]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_five_step_run_saves_loadable_deterministic_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("a", "b"):
        assert sft.main([*TINY, f"output_dir={tmp_path / name}"]) == 0
    out = tmp_path / "a"
    losses = [json.loads(line)["loss"] for line in (out / "sft_log.jsonl").read_text().splitlines()]
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.tie_word_embeddings and model.config.vocab_size == len(tok)
    assert model.generation_config.do_sample and model.generation_config.top_k == 0
    # Greedy stays greedy although the saved generation_config.json samples (generate fills
    # unset fields from it): two torch seeds, same tokens.
    prompts = [format_prompt(tok, r["question"]) for r in generate(3, 9)]
    greedy = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        greedy.append(sft_report.generate_responses(model, tok, prompts, False, 8, 3))
    assert greedy[0] == greedy[1]
    record = (out / "RECORD.md").read_text()
    assert "repro-train sft data.n_train=64" in record and "| greedy |" in record
    assert sft_report.sha256(out / "model.safetensors") in record

    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


# ----------------------------------------------------------------------------- the shipped model


def test_recipe_is_what_built_the_shipped_model():
    """recipes/toy/sft.yaml resolves to the config in the shipped RECORD.md (output folder aside)."""
    record = (Path(reasoner_path()) / "RECORD.md").read_text()
    shipped = yaml.safe_load(re.search(r"```yaml\n(.*?)```", record, re.S).group(1))
    recipe = to_dict(sft.load(str(RECIPE)))
    shipped.pop("output_dir"), recipe.pop("output_dir")
    assert recipe == shipped


def test_shipped_model_solves_heldout_problems():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(reasoner_path())
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size <= 20 * 2**20, f"{path} is {size / 2**20:.1f} MB"

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    cfg = sft.SFTConfig()
    seen = {r["question"] for r in generate(cfg.data.n_train, cfg.data.seed, TaskConfig())}
    rows = [r for r in generate(40, 2026) if r["question"] not in seen][:10]
    assert len(rows) == 10
    responses = sft_report.generate_responses(
        model,
        tok,
        [format_prompt(tok, r["question"]) for r in rows],
        do_sample=False,
        max_new_tokens=160,
        batch_size=10,
    )
    texts = [tok.decode(r, skip_special_tokens=True) for r in responses]
    solved = sum(t.endswith(f"</think>\n\nFinal answer: {r['answer']}") for t, r in zip(texts, rows))
    assert solved >= 6, list(zip(texts, [r["answer"] for r in rows]))
