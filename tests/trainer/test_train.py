"""The trainer on CPU with the tiny model: every algorithm, RePro on and off, bad recipes, resume."""

import time

import pytest
import torch

from repro_train.tasks.arithmetic import generate, write_jsonl
from tests.helpers.trainer_utils import (
    all_finite,
    last_checkpoint,
    make_recipe,
    metrics,
    policy_weights,
    run_cli,
    run_inprocess,
    trainer_state,
)

ALGOS = ["grpo", "gae", "reinforce_pp", "reinforce_pp_baseline", "rloo"]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


@pytest.fixture(scope="module")
def initial_weights(tiny_model_dir):
    from safetensors.torch import load_file

    return load_file(f"{tiny_model_dir}/model.safetensors")


@pytest.mark.parametrize("repro", [True, False], ids=["repro", "plain"])
@pytest.mark.parametrize("algo", ALGOS)
def test_three_steps_change_weights_and_log_finite_metrics(
    tmp_path, tiny_model_dir, data_path, initial_weights, algo, repro
):
    recipe = make_recipe(
        tmp_path,
        tiny_model_dir,
        data_path,
        algo={"estimator": algo, "micro_batch_size": 4},
        repro={"enabled": repro, "probe_prefix": "\n\nFinal answer: "},
    )
    run = run_inprocess(recipe)
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert not all_finite(r), all_finite(r)
        assert r["response_length/mean"] > 0 and 0 <= r["reward/mean"] <= 1
        assert ("repro/J_b" in r) == repro
    if repro:
        assert rows[-1]["repro/cuts_per_rollout"] > 0 and rows[-1]["repro/scored_frac"] > 0
        assert rows[-1]["time/repro_s"] >= rows[-1]["time/probe_s"] > 0
    ckpt = last_checkpoint(run)
    after = policy_weights(ckpt)
    unchanged = [k for k in initial_weights if torch.equal(initial_weights[k], after[k])]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    if algo == "gae":
        critic = policy_weights(ckpt, "critic")
        assert "score.weight" in critic and torch.isfinite(critic["score.weight"]).all()
        assert "train/value_loss" in rows[-1]


@pytest.mark.parametrize("algo", ["grpo", "gae"])
def test_repro_with_alpha_zero_is_exactly_the_plain_algorithm(tmp_path, tiny_model_dir, data_path, algo):
    base = dict(algo={"estimator": algo}, train={"steps": 2})
    plain = run_inprocess(make_recipe(tmp_path / "a", tiny_model_dir, data_path, repro={"enabled": False}, **base))
    zero = run_inprocess(
        make_recipe(tmp_path / "b", tiny_model_dir, data_path, repro={"enabled": True, "alpha": 0.0}, **base)
    )
    for k in ("train/pg_loss", "adv/abs_mean", "reward/mean"):
        assert [r[k] for r in metrics(plain)] == [r[k] for r in metrics(zero)], k
    a, b = policy_weights(last_checkpoint(plain)), policy_weights(last_checkpoint(zero))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and alpha > 0 does change the update
    some = run_inprocess(
        make_recipe(tmp_path / "c", tiny_model_dir, data_path, repro={"enabled": True, "alpha": 0.5}, **base)
    )
    c = policy_weights(last_checkpoint(some))
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_ppo_dense_process_reward_mode_runs(tmp_path, tiny_model_dir, data_path):
    run = run_inprocess(
        make_recipe(
            tmp_path,
            tiny_model_dir,
            data_path,
            algo={"estimator": "gae"},
            repro={"ppo_process_reward": "dense_reward", "alpha": 0.5},
            train={"steps": 1},
        )
    )
    assert not all_finite(metrics(run)[-1])


def test_kl_reference_and_entropy_terms(tmp_path, tiny_model_dir, data_path):
    run = run_inprocess(
        make_recipe(
            tmp_path,
            tiny_model_dir,
            data_path,
            train={"steps": 2},
            algo={"kl_coef": 0.1, "entropy_coef": 0.01, "loss_agg": "seq-mean-token-mean"},
        )
    )
    rows = metrics(run)
    assert rows[0]["policy/kl_ref"] == pytest.approx(0.0, abs=1e-6)  # the reference is the initial policy
    assert rows[1]["train/kl"] > 0 and rows[1]["train/entropy_bonus"] > 0


@pytest.mark.parametrize(
    "override,needle",
    [
        ("algo.estimatr=gae", "unknown key 'algo.estimatr': did you mean 'algo.estimator'?"),
        ("algo.estimator=ppo", "unknown advantage estimator 'ppo'; choices: gae, grpo"),
        ("algo.mini_batch_size=7", "'algo.mini_batch_size' = 7 must divide the batch"),
        ("algo.micro_batch_size=3", "split evenly"),
        ("rollout.group_size=1", "'rollout.group_size' must be >= 2 for algo.estimator = grpo"),
        ("repro.w=2", "'repro.w' must be in [0, 1]"),
        ("repro.process_norm=prompt", "'repro.process_norm' must be one of group, batch, group_mean, none"),
        ("rollout.temperature=hot", "'rollout.temperature' must be a number"),
        ("data.answer_field=solution", "'data.answer_field' = 'solution' is not a column"),
    ],
)
def test_bad_recipe_fails_fast_with_a_message_naming_the_key(tmp_path, tiny_model_dir, data_path, override, needle):
    """Recipe errors are caught before anything heavy: config errors without importing
    transformers, accelerate or deepspeed at all (so they take the time of importing torch, about
    1.5 s on 2 cores); data errors with the tokenizer only, before any model weights load."""
    recipe = make_recipe(tmp_path, tiny_model_dir, data_path)
    heavy = () if override.startswith("data.") else ("transformers", "accelerate", "deepspeed", "trl", "datasets")
    t0 = time.perf_counter()
    res = run_cli(["train", "--config", recipe, override], block_imports=heavy, tmp_path=tmp_path)
    print(f"{override}: failed in {time.perf_counter() - t0:.1f} s")
    assert res.returncode == 2, res.stderr[-2000:]
    assert needle in res.stderr, res.stderr[-2000:]
    assert "Loading weights" not in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("n_prompts", [4, 6], ids=["epoch-boundary", "mid-epoch"])
def test_resume_continues_exactly(tmp_path, tiny_model_dir, data_path, n_prompts):
    data = tmp_path / "d.jsonl"
    write_jsonl(generate(n_prompts, seed=5, with_traces=False), str(data))
    common = dict(train={"steps": 4, "deterministic": True}, rollout={"per_prompt_seed": False})
    straight = run_inprocess(make_recipe(tmp_path / "s", tiny_model_dir, str(data), **common))
    # 2 prompts per step: with 4 prompts step 2 ends exactly at the epoch boundary
    part = make_recipe(tmp_path / "r", tiny_model_dir, str(data), **common)
    run_inprocess(part, "train.steps=2", "train.save_every=2")
    resumed = run_inprocess(part, "train.resume=auto")
    m1, o1 = trainer_state(last_checkpoint(straight))
    m2, o2 = trainer_state(last_checkpoint(resumed))
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
    assert o1["state"].keys() == o2["state"].keys()
    for i in o1["state"]:
        for k, v in o1["state"][i].items():
            assert torch.equal(v, o2["state"][i][k]), (i, k)
    assert [r["reward/mean"] for r in metrics(straight)] == [r["reward/mean"] for r in metrics(resumed)]
    assert [r["step"] for r in metrics(resumed)] == [1, 2, 3, 4]


def test_rollouts_ignore_the_checkpoints_generation_config(tiny):
    """A model's generation_config.json (top_k=50, top_p, repetition penalty) must not change what
    RL samples from: with the same seed, sampling equals plain multinomial sampling from
    softmax(logits / T) over the full vocabulary."""
    import copy

    from repro_train.config import RolloutConfig
    from repro_train.rollout.hf import sample

    model, tok = tiny
    model = copy.deepcopy(model)
    prompt = tok("Q: 3+4+1?").input_ids
    cfg = RolloutConfig(temperature=1.3, max_new_tokens=6, top_k=0, top_p=1.0)
    ours = sample(model, [prompt], 3, cfg, [tok.eos_token_id], tok.pad_token_id, "cpu", seeds=[11])[0]
    model.generation_config.top_k = 5
    model.generation_config.top_p = 0.5
    model.generation_config.repetition_penalty = 2.0
    polluted = sample(model, [prompt], 3, cfg, [tok.eos_token_id], tok.pad_token_id, "cpu", seeds=[11])[0]
    assert polluted == ours and model.generation_config.top_k == 5  # restored afterwards
    # the reference: step-by-step multinomial from the full tempered distribution
    torch.manual_seed(11)
    ids = torch.tensor([prompt] * 3)
    done = torch.zeros(3, dtype=torch.bool)
    ref = [[] for _ in range(3)]
    with torch.no_grad():
        for _ in range(6):
            probs = torch.softmax(model(ids).logits[:, -1].float() / 1.3, dim=-1)
            nxt = torch.multinomial(probs, 1).squeeze(-1)
            nxt = torch.where(done, torch.full_like(nxt, tok.pad_token_id), nxt)
            for i in range(3):
                if not done[i]:
                    ref[i].append(int(nxt[i]))
            done |= nxt == tok.eos_token_id
            ids = torch.cat([ids, nxt.view(-1, 1)], dim=1)
    assert ours == ref
