"""algo.mask_truncated (DAPO's overlong filtering): truncated responses leave the loss, its normalisers and
RePro's pools; a batch with such rows gives the loss of the batch without them."""

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from repro_train.config import load
from repro_train.models.forward import forward_logprobs, pack
from repro_train.tasks.arithmetic import generate, write_jsonl
from repro_train.trainer.experience import Batch
from repro_train.trainer.loop import micro_loss
from tests.helpers.trainer_utils import last_checkpoint, make_recipe, metrics, policy_weights, run_inprocess

PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
RESPONSES = [[20, 21, 22], [23, 24, 25, 26, 27], [28], [29, 30]]


def batch_of(rows, truncated, mask_truncated, adv, old):
    seqs = pack([PROMPTS[i] for i in rows], [RESPONSES[i] for i in rows], pad_id=0)
    R = seqs.response_mask.shape[1]
    return Batch(
        seqs=seqs,
        response_ids=[RESPONSES[i] for i in rows],
        group_ids=torch.zeros(len(rows), dtype=torch.long),
        prompt_index=list(rows),
        texts=[""] * len(rows),
        answers=[None] * len(rows),
        truncated=torch.tensor([truncated[i] for i in rows]),
        mask_truncated=mask_truncated,
        old_logprobs=old[rows, :R] * seqs.response_mask,
        advantages=adv[rows, :R] * seqs.response_mask,
    )


def test_loss_mask_by_hand():
    b = batch_of([0, 1, 2, 3], [False, True, False, True], True, torch.ones(4, 5), torch.zeros(4, 5))
    assert b.excluded.tolist() == [False, True, False, True]
    # response lengths 3, 5, 1, 2; rows 1 and 3 leave the loss
    assert b.loss_mask.sum(-1).tolist() == [3, 0, 1, 0]
    off = batch_of([0, 1, 2, 3], [False, True, False, True], False, torch.ones(4, 5), torch.zeros(4, 5))
    assert off.excluded.tolist() == [False] * 4 and torch.equal(off.loss_mask, off.mask)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_excluded_rows_give_the_loss_of_the_batch_without_them(tiny, agg):
    """The update's mask point: micro_loss over rows 0-3 with row 1 truncated and excluded, normalisers counted
    on `loss_mask` as optimizer_step does, equals micro_loss over rows 0, 2, 3 alone."""
    model, _ = tiny
    cfg = load(None, [f"algo.loss_agg={agg}", "algo.entropy_coef=0.01", "rollout.max_new_tokens=5"])
    # old log-probs from the forward phase (not on-policy: they differ from the current ones), the reference head
    rt = SimpleNamespace(
        cfg=cfg,
        policy=model,
        ref=None,
        has_critic=False,
        on_policy=False,
        head="logits",
        dist=SimpleNamespace(device="cpu"),
    )
    g = torch.Generator().manual_seed(0)
    adv = torch.randn(4, 5, generator=g)
    with torch.no_grad():  # old log-probs near the current ones, so the ratio is not clipped everywhere
        full = pack(PROMPTS, RESPONSES, pad_id=0)
        old = forward_logprobs(model, full, 1.0, with_entropy=False).logprobs + 0.1 * torch.randn(4, 5, generator=g)
    truncated = [False, True, False, False]

    def loss(batch, rows):
        m = batch.loss_mask[rows]
        norms = dict(
            global_tokens=max(float(m.sum()), 1.0),
            global_seqs=max(float((m.sum(-1) > 0).sum()), 1.0),
            max_len=cfg.rollout.max_new_tokens,
        )
        return micro_loss(rt, batch, rows, norms)[0]

    excluded = loss(batch_of([0, 1, 2, 3], truncated, True, adv, old), [0, 1, 2, 3])
    without = loss(batch_of([0, 2, 3], truncated, False, adv, old), [0, 1, 2])
    kept = loss(batch_of([0, 1, 2, 3], truncated, False, adv, old), [0, 1, 2, 3])
    assert excluded.item() == pytest.approx(without.item(), abs=1e-6)
    assert abs(kept.item() - without.item()) > 1e-3  # the truncated row does weigh when it is kept


def test_all_truncated_leaves_nothing_to_learn(tmp_path, tiny_model_dir):
    """min_new_tokens = max_new_tokens: no response reaches EOS, so with mask_truncated every rollout is excluded
    (counted, and skipped by RePro as 'truncated'); the loss is 0 and the weights do not move. Without it they do."""
    data = tmp_path / "d.jsonl"
    write_jsonl(generate(4, seed=5, with_traces=False), str(data))
    sections = dict(
        rollout={"max_new_tokens": 8, "min_new_tokens": 8},
        repro={"enabled": True, "probe_prefix": "\n\nFinal answer: "},
        train={"steps": 2},
    )
    on = run_inprocess(make_recipe(tmp_path / "on", tiny_model_dir, str(data), **sections), "algo.mask_truncated=true")
    off = run_inprocess(make_recipe(tmp_path / "off", tiny_model_dir, str(data), **sections))
    for r in metrics(on):
        assert r["truncated_frac"] == 1.0 and r["loss/excluded"] == 8
        assert r["repro/skipped/truncated"] == 8 and r["repro/scored_frac"] == 0.0
        assert r["train/pg_loss"] == 0.0 and r["train/grad_norm"] == 0.0
    assert "loss/excluded" not in metrics(off)[0] and metrics(off)[0]["repro/skipped/truncated"] == 0
    start = load_file(f"{tiny_model_dir}/model.safetensors")
    w_on, w_off = policy_weights(last_checkpoint(on)), policy_weights(last_checkpoint(off))
    assert all(torch.equal(start[k], w_on[k]) for k in start)
    assert not all(torch.equal(start[k], w_off[k]) for k in start)
