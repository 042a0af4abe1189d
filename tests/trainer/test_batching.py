"""Micro-batches by a token budget (trainer/batching.py) and the on-policy update: hand-computed plans, and the same
gradient whatever the grouping, head or old-log-prob source."""

import pytest
import torch

from repro_train.config import load
from repro_train.tasks.arithmetic import generate, write_jsonl
from repro_train.trainer.batching import padded_tokens, plan_micro_batches
from repro_train.trainer.experience import make_experience
from repro_train.trainer.loop import update_phase
from repro_train.trainer.runtime import build_runtime
from tests.helpers.trainer_utils import make_recipe, reset_accelerate


def test_rows_without_a_budget_keep_the_batch_order():
    assert plan_micro_batches([3] * 5, [1] * 5, rows=2) == [[0, 1], [2, 3], [4]]


def test_a_budget_packs_the_longest_rows_first():
    # (prompt, response) lengths; totals 10, 4, 7, 3, 12. Sorted: 4 (12), 0 (10), 2 (7), 1 (4), 3 (3).
    # budget 20: [4] alone (2 x (max P + max R) = 2 x (4 + 8) = 24 > 20); [0, 2]: 2 x (4 + 6) = 20;
    # adding 1: 3 x 10 = 30 > 20 -> [1, 3]: 2 x (2 + 2) = 8.
    P, R = [4, 2, 3, 1, 4], [6, 2, 4, 2, 8]
    groups = plan_micro_batches(P, R, rows=99, max_tokens=20)
    assert groups == [[4], [0, 2], [1, 3]]
    assert padded_tokens(P, R, groups) == 12 + 20 + 8
    assert sorted(i for g in groups for i in g) == list(range(5))


def test_a_row_over_the_budget_goes_alone():
    assert plan_micro_batches([5, 1], [100, 1], rows=8, max_tokens=10) == [[0], [1]]


def test_ranks_agree_on_the_count_by_splitting_the_largest_group():
    groups = plan_micro_batches([1] * 6, [1] * 6, rows=99, max_tokens=100, agree=lambda n: 3)
    assert [len(g) for g in groups] == [2, 1, 3] or sorted(len(g) for g in groups) == [1, 2, 3]
    assert sorted(i for g in groups for i in g) == list(range(6)) and len(groups) == 3


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(path))
    return str(path)


def one_update_grads(tmp_path, model_dir, data, **algo) -> tuple[list[torch.Tensor], dict]:
    """The policy's gradient of step 1's (single) optimizer step, and the update's statistics."""
    recipe = make_recipe(
        tmp_path, model_dir, data, algo={"micro_batch_size": 4, **algo}, rollout={"max_new_tokens": 16}
    )
    reset_accelerate()
    try:
        rt = build_runtime(load(recipe))
        batch = make_experience(rt, 0)
        grads = []

        def record():  # stands in for the optimizer's step, which accelerate runs only at the last micro-batch
            if rt.acc.sync_gradients:
                grads.extend(p.grad.detach().clone() for p in rt.model.parameters() if p.grad is not None)

        rt.optimizer.step = record
        stats = update_phase(rt, batch)
        rt.close()
    finally:
        reset_accelerate()
    return grads, stats


@pytest.mark.parametrize(
    "variant",
    [
        {"max_tokens_per_micro_batch": 60},  # token budget, rows sorted by length
        {"logprob_head": "logits"},  # the model's own head and the float32 reference log-softmax
        {"old_logprobs": "recompute"},  # a separate no-grad pass first
    ],
)
def test_the_update_gradient_does_not_depend_on_how_it_is_computed(tmp_path, tiny_model_dir, data_path, variant):
    base, base_stats = one_update_grads(tmp_path / "a", tiny_model_dir, data_path)
    other, other_stats = one_update_grads(tmp_path / "b", tiny_model_dir, data_path, **variant)
    assert len(base) == len(other) > 0
    for g, h in zip(base, other):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)
    assert base_stats["pg_loss"] == pytest.approx(other_stats["pg_loss"], rel=1e-4, abs=1e-7)
    assert base_stats["ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # on-policy: ratio exactly 1 either way
