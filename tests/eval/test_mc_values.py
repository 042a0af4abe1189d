"""Monte-Carlo values of cuts (eval/mc_values.py): a stub engine with known continuation outcomes gives V by hand;
seeds fix V; the hf engine on the tiny model equals sampling each prefix by hand; `inspect --mc-values` adds V."""

import importlib.util
import json
import math
import random
import subprocess
import sys

import pytest
import torch

from repro_train.commands.inspect import main as inspect_main
from repro_train.config import RolloutConfig
from repro_train.core.seeds import mix_seed
from repro_train.eval.mc_values import add_mc_values, cut_prefixes, cut_values
from repro_train.repro.mc import increments
from repro_train.rollout.base import Rollouts
from repro_train.rollout.hf import HFEngine, sample

CORRECT, WRONG = 1, 0


class TableEngine:
    """Continuation k of a prefix is [CORRECT] for k < table[prefix], else [WRONG]; records what it was asked."""

    name = "stub"

    def __init__(self, table: dict[tuple, int]):
        self.table, self.calls = table, []

    def sample(self, prompts, group_size, seeds):
        self.calls.append(([tuple(p) for p in prompts], group_size, list(seeds)))
        rows = [[[CORRECT] if k < self.table[tuple(p)] else [WRONG] for k in range(group_size)] for p in prompts]
        return Rollouts(token_ids=rows)


class CoinEngine:
    """Each continuation is [CORRECT] with probability 1/2, drawn from the prefix's seed alone."""

    name = "coin"

    def sample(self, prompts, group_size, seeds):
        rows = []
        for s in seeds:
            rng = random.Random(s)
            rows.append([[CORRECT if rng.random() < 0.5 else WRONG] for _ in range(group_size)])
        return Rollouts(token_ids=rows)


def decode(ids):
    return [" ".join(map(str, row)) for row in ids]


def grade_last_token(rows, texts):
    """Correct when the text's last token is CORRECT (the continuation's, unless the budget left none)."""
    return [t.split(" ")[-1] == str(CORRECT) for t in texts]


# One prompt (a group of two rollouts), cuts (2, 4) and (2, 3): rollout 1's first prefix equals rollout 0's.
PROMPTS = [[7, 7], [7, 7]]
RESPONSES = [[5, 6, 8, 9, 4], [5, 6, 3]]
CUTS = torch.tensor([[2, 4], [2, 3]])
MASK = torch.tensor([[True, True], [True, True]])
TABLE = {(7, 7): 2, (7, 7, 5, 6): 3, (7, 7, 5, 6, 8, 9): 4, (7, 7, 5, 6, 3): 1}  # correct continuations of 4


def seed_of(i, c):
    return 1000 * i + c


def test_values_by_hand_from_known_continuation_outcomes():
    engine = TableEngine(TABLE)
    mc = cut_values(engine, grade_last_token, decode, PROMPTS, RESPONSES, CUTS, MASK, 4, 100, seed_of)
    # V = correct / 4 per prefix; the prompt alone is shared: V_b = 2/4 for both rollouts
    assert mc.V_b.tolist() == [0.5, 0.5]
    assert mc.V.tolist() == [[0.75, 1.0], [0.75, 0.25]]
    # SE = sqrt(V (1 - V) / 3): sqrt(1/12); .25; 0; .25
    assert mc.V_b_se.tolist() == pytest.approx([math.sqrt(1 / 12)] * 2)
    assert torch.allclose(mc.V_se, torch.tensor([[0.25, 0.0], [0.25, 0.25]], dtype=torch.float64))
    # one engine call: the 4 distinct prefixes (prompt + y[:c]), K = 4 each, each with its first rollout's seed
    ((asked, K, seeds),) = engine.calls
    assert asked == [(7, 7), (7, 7, 5, 6), (7, 7, 5, 6, 8, 9), (7, 7, 5, 6, 3)] and K == 4
    assert seeds == [seed_of(0, 0), seed_of(0, 2), seed_of(0, 4), seed_of(1, 3)]
    assert (mc.K, mc.prefixes, mc.tokens) == (4, 4, 16)
    # the MC step rewards: V's increments from V_b
    assert increments(mc.V_b, mc.V, MASK).tolist() == [[0.25, 0.25], [0.25, -0.5]]


def test_continuations_are_cut_to_the_rollouts_budget():
    """With a budget of 4 tokens, the prefix y[:4] leaves no room: its continuations are empty and the text (the
    prefix alone, ending in 9) is wrong, so V = 0 where the engine's untrimmed samples were all correct."""
    mc = cut_values(TableEngine(TABLE), grade_last_token, decode, PROMPTS, RESPONSES, CUTS, MASK, 4, 4, seed_of)
    assert mc.V.tolist() == [[0.75, 0.0], [0.75, 0.25]]
    assert mc.tokens == 12  # 4 prefixes x 4 continuations of 1 token, less the 4 trimmed


def test_rollouts_without_cuts_are_not_sampled_and_masked_cuts_are_zero():
    mask = torch.tensor([[True, False], [False, False]])
    prefixes, where = cut_prefixes(PROMPTS, RESPONSES, CUTS, mask)
    assert prefixes == [(0, 0), (0, 2)] and where == {(0, 0): 0, (0, 1): 1}
    engine = TableEngine(TABLE)
    mc = cut_values(engine, grade_last_token, decode, PROMPTS, RESPONSES, CUTS, mask, 4, 100, seed_of)
    assert mc.V.tolist() == [[0.75, 0.0], [0.0, 0.0]] and math.isnan(mc.V_b[1])
    # no cut at all: the engine is still called (a collective under TP or ZeRO-3), with nothing
    none = torch.zeros(2, 2, dtype=torch.bool)
    engine = TableEngine(TABLE)
    mc = cut_values(engine, grade_last_token, decode, PROMPTS, RESPONSES, CUTS, none, 4, 100, seed_of)
    assert engine.calls == [([], 4, [])] and mc.prefixes == 0 and torch.isnan(mc.V_b).all()


def test_same_seeds_same_values_other_seeds_other_values():
    prompts, responses = [[3]] * 4, [[10 + i, 20 + i, 30 + i, 40 + i] for i in range(4)]
    cuts, mask = torch.tensor([[1, 2, 3]] * 4), torch.ones(4, 3, dtype=torch.bool)

    def run(base):
        return cut_values(
            CoinEngine(),
            grade_last_token,
            decode,
            prompts,
            responses,
            cuts,
            mask,
            16,
            100,
            lambda i, c: mix_seed(base, i, c),
        )

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.V, b.V) and torch.equal(a.V_b, b.V_b)
    assert not torch.equal(a.V, c.V)


def test_hf_engine_equals_sampling_each_prefix_by_hand(tiny):
    """The hf engine on the tiny model (CPU): V of each prefix is the share of K = 3 continuations, sampled after
    torch.manual_seed(its seed), whose decoded text (prefix + continuation) has an odd length."""
    model, tok = tiny
    cfg = RolloutConfig(max_new_tokens=6, temperature=1.0)
    eos = [tok.eos_token_id]
    engine = HFEngine(lambda: _null(model), cfg, eos, tok.pad_token_id, "cpu")
    prompts = [tok("Q: 3 + 4?").input_ids] * 2
    responses = [
        tok("Add 3\n\n+ 4 = 7.\n\nok", add_special_tokens=False).input_ids,
        tok("7\n\nso", add_special_tokens=False).input_ids,
    ]
    cuts = torch.tensor([[2, 4], [1, 0]])
    mask = torch.tensor([[True, True], [True, False]])

    def dec(ids):
        return tok.batch_decode(ids, skip_special_tokens=True)

    def odd(rows, texts):
        return [len(t) % 2 == 1 for t in texts]

    budget = 8
    mc = cut_values(engine, odd, dec, prompts, responses, cuts, mask, 3, budget, seed_of)
    again = cut_values(engine, odd, dec, prompts, responses, cuts, mask, 3, budget, seed_of)
    assert torch.equal(mc.V, again.V) and torch.equal(mc.V_b, again.V_b)

    def by_hand(i, c):
        (conts,) = sample(model, [prompts[i] + responses[i][:c]], 3, cfg, eos, tok.pad_token_id, "cpu", [seed_of(i, c)])
        texts = dec([responses[i][:c] + k[: budget - c] for k in conts])
        return sum(odd(None, texts)) / 3

    assert mc.V_b[0].item() == mc.V_b[1].item() == by_hand(0, 0)
    assert mc.V[0].tolist() == [by_hand(0, 2), by_hand(0, 4)]
    assert mc.V[1, 0].item() == by_hand(1, 1) and mc.V[1, 1].item() == 0.0
    assert mc.tokens > 0


def _null(model):
    import contextlib

    return contextlib.nullcontext(model)


def test_add_mc_values_to_inspect_rows():
    results = [
        {"row": 3, "prompt_ids": [7, 7], "response_ids": [5, 6, 8, 9, 4], "cuts": [2, 4], "answer": "x"},
        {"row": 4, "prompt_ids": [7, 7], "response_ids": [1, 2], "cuts": [], "answer": "x"},
    ]
    engine = TableEngine(TABLE)
    add_mc_values(results, engine, grade_last_token, decode, 4, 100, seed=5)
    first, skipped = results
    assert (first["V_b"], first["V"], first["r_mc"]) == (0.5, [0.75, 1.0], [0.25, 0.25])
    assert first["V_se"] == [0.25, 0.0] and first["mc_K"] == 4
    assert skipped["V_b"] is None and skipped["V"] == skipped["r_mc"] == []
    # prefix c of row i is seeded by mix_seed(seed, i, c), i the row's line
    assert engine.calls[0][2] == [mix_seed(5, 3, 0), mix_seed(5, 3, 2), mix_seed(5, 3, 4)]


ODD = "def odd_length(prompts, completions, answers, **columns):\n    return [float(len(t) % 2) for t in completions]\n"


def test_inspect_mc_values_flag(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [
        {
            "prompt": "Q: 3+4+1?",
            "response": "Add 3 + 4 = 7.\n\nThen 7 + 1 = 8.\n\nSo 8.\n\n</think>\n\nFinal answer: 8",
            "answer": "8",
        },
        {"prompt": "x", "response": "</think> no thinking", "answer": "3"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "odd.py").write_text(ODD)
    out, plots = tmp_path / "out.jsonl", tmp_path / "plots"
    args = ["--model", tiny_model_dir, "--input", str(src), "--output", str(out), "--plot", str(plots), "--top-k", "2"]
    mc = ["--mc-values", "4", "--mc-reward", f"{tmp_path / 'odd.py'}:odd_length", "--mc-max-new-tokens", "40"]
    assert inspect_main(args + mc) == 0
    first, second = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(first["V"]) == len(first["V_se"]) == len(first["r_mc"]) == len(first["cuts"]) == 2
    # shares of 4: multiples of 1/4; the increments are V's differences from V_b
    for v in [first["V_b"]] + first["V"]:
        assert v in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert first["r_mc"] == pytest.approx([first["V"][0] - first["V_b"], first["V"][1] - first["V"][0]])
    assert second["V_b"] is None and second["V"] == []
    assert sorted(p.name for p in plots.iterdir()) == [
        "row00001-mc.png",
        "row00001.png",
        "row00002-mc.png",
        "row00002.png",
    ]
    # the same seed gives the same values
    out2 = tmp_path / "out2.jsonl"
    assert inspect_main(args[:4] + ["--output", str(out2), "--top-k", "2"] + mc) == 0
    assert json.loads(out2.read_text().splitlines()[0])["V"] == first["V"]


# ---------------------------------------------------------------------------------------------
# GPU: the same values through vLLM (bash bench/vllm_device.sh tests OUT runs it)
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None, reason="needs a CUDA GPU and vLLM"
)
def test_vllm_engine_values_are_shares_and_repeat_under_seeds(tmp_path):
    """experiments/mc_vs_j.py on the toy with the vllm engine, twice in fresh processes (one engine each): every V
    is a share of K, and the same seeds give the same values."""
    from tests.helpers import REPO

    def run(out):
        cmd = [sys.executable, f"{REPO}/experiments/mc_vs_j.py", "--recipe", f"{REPO}/recipes/toy/grpo_repro.yaml"]
        cmd += ["--out", str(out), "--problems", "6", "--rollouts", "4", "--k", "8", "--device", "cuda"]
        cmd += ["--override", "rollout.engine=vllm", "rollout.vllm.gpu_memory_utilization=0.2"]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        return [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert a and all(round(r["V"] * 8) == r["V"] * 8 and 0 <= r["V"] <= 1 for r in a)
    assert [(r["rollout"], r["cut"], r["V"]) for r in a] == [(r["rollout"], r["cut"], r["V"]) for r in b]
