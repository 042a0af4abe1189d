"""RePro end to end on the tiny model: every option moves the output the way the spec says."""

import dataclasses
import math

import pytest
import torch

from repro_train.config import ModelConfig
from repro_train.core.text import ResponseFormat
from repro_train.models.forward import pack
from repro_train.repro.config import ReProConfig
from repro_train.repro.pipeline import RePro, merge_plans
from repro_train.repro.probe import ProbeSettings
from repro_train.repro.scores import empty_prefix_score
from repro_train.repro.types import ProbeResult
from tests.helpers.repro import fmt

RESPONSES = [
    "Add 3 + 4 = 7.\n\nThen 7 + 1 = 8.\n\nSo 8.\n\n</think>\n\nFinal answer: 8",
    "First 3 + 4 = 7.\n\nWait 7 + 1 = 8.\n\nok\n\nfine\n\ndone",
    "one segment only",
    "</think> nothing to think",
]


def run(
    tiny, cfg, answers=("8", "8", "8", "8"), correct=None, groups=(0, 0, 0, 0), think_end="</think>", excluded=None
):
    model, tok = tiny
    repro = RePro(cfg, tok, fmt(tok, think_end))
    prompt = tok("Q: 3 + 4 + 1?").input_ids
    resp = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in RESPONSES]
    plan = repro.plan(resp, list(answers), correct, excluded)
    seqs = pack([prompt] * len(resp), resp, tok.pad_token_id)
    scored = repro.policy_pass(model, seqs, plan.requests)
    out = repro.advantages(plan, scored.probes, torch.tensor(groups), seqs.response_mask.shape[1])
    return plan, scored, out


def test_defaults_shapes_and_skips(tiny):
    plan, scored, out = run(tiny, ReProConfig())
    assert plan.skip == [None, None, None, "no_segment"]
    assert out.skipped["no_segment"] == 1 and sum(out.skipped.values()) == 1
    assert out.n_segments == [3, 5, 1, 0]
    assert out.mask.sum(-1).tolist() == [3, 5, 1, 0]
    assert torch.all(out.process_adv[3] == 0)
    # A_tilde is the return to go of r' over each step; zero at and after the last cut
    for b in range(3):
        m = int(out.mask[b].sum())
        last = int(out.cuts[b, m - 1])
        assert torch.all(out.process_adv[b, last:] == 0)
        assert out.process_adv[b, 0].item() == pytest.approx(out.r_norm[b, :m].sum().item(), abs=1e-6)
    # the group pool has mean 0 and population std 1 over all 9 rewards
    vals = out.r_norm[out.mask]
    assert vals.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert vals.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_skip_reasons_are_counted(tiny):
    _, _, out = run(tiny, ReProConfig(), answers=("8", None, "  ", "8"))
    assert out.skipped == {
        "no_answer": 2,
        "empty_answer_tokens": 0,
        "no_segment": 1,
        "zero_baseline": 0,
        "apply_to": 0,
        "truncated": 0,
    }
    assert torch.all(out.process_adv[1:] == 0) and out.mask[0].any()
    assert math.isnan(out.J_b[1].item()) and not math.isnan(out.J_b[0].item())


@pytest.mark.parametrize("apply_to", ["all", "correct"])
def test_a_plan_made_a_part_at_a_time_merges_to_the_whole_batch_plan(tiny, apply_to):
    # The trainer plans a micro-batch at a time (trainer/experience.py plan_ahead): rows in any order and grouping.
    _, tok = tiny
    repro = RePro(ReProConfig(apply_to=apply_to), tok, fmt(tok, "</think>"))
    resp = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in RESPONSES]
    answers, correct, excluded = ["8", None, "8", "8"], [True, True, False, True], [False, False, False, True]
    whole = repro.plan(resp, answers, correct, excluded)
    assert whole.skip == (
        [None, "no_answer", "apply_to", "truncated"]
        if apply_to == "correct"
        else [None, "no_answer", None, "truncated"]
    )
    partition = [[3, 0], [2], [1]]
    parts = [
        (
            rows,
            repro.plan(
                [resp[i] for i in rows],
                [answers[i] for i in rows],
                [correct[i] for i in rows],
                [excluded[i] for i in rows],
            ),
        )
        for rows in partition
    ]
    assert merge_plans(parts, 4) == whole
    with pytest.raises(ValueError, match=r"cover 0..3 once each, got \[0, 2, 3\]"):
        merge_plans(parts[:2], 4)


def test_answer_that_tokenizes_to_nothing_and_zero_baseline(tiny):
    _, tok = tiny

    class NoTokens:
        """A tokenizer that maps the answer text to no ids."""

        eos_token_id = tok.eos_token_id

        def __call__(self, text, add_special_tokens=False):
            return type(
                "E", (), {"input_ids": [] if text == "EMPTY" else tok(text, add_special_tokens=False).input_ids}
            )()

        def decode(self, ids, **kw):
            return tok.decode(ids, **kw)

    repro = RePro(ReProConfig(), NoTokens(), ResponseFormat((0,)))
    resp = [tok("a\n\nb", add_special_tokens=False).input_ids] * 2
    plan = repro.plan(resp, ["EMPTY", "3"])
    assert plan.skip == ["empty_answer_tokens", None]
    probe = ProbeResult(H=torch.zeros(2), selected=[True, True], cuts=[1, 2], J_b=0.0, J=torch.tensor([-1.0, -0.5]))
    out = repro.advantages(plan, [None, probe], torch.tensor([0, 0]), 4)
    assert out.skipped["empty_answer_tokens"] == 1 and out.skipped["zero_baseline"] == 1
    assert torch.all(out.process_adv == 0)


def test_top_k_limits_cuts(tiny):
    _, _, out = run(tiny, ReProConfig(top_k=2))
    assert out.mask.sum(-1).tolist() == [2, 2, 1, 0]


def test_delimiter_and_think_end_options(tiny):
    plan, _, _ = run(tiny, ReProConfig(segment_delimiter=r"\n"))  # any newline run: same here
    assert [len(s.starts) if s else 0 for s in plan.segmentations] == [3, 5, 1, 0]
    plan, _, _ = run(tiny, ReProConfig(segment_delimiter=r"\+"))
    assert len(plan.segmentations[0].starts) == 3  # "+" twice, split after " + "... and '\n\n' not
    plan, _, _ = run(tiny, ReProConfig(), think_end="Final")
    # the span now runs past </think> up to "Final", so row 0 gains a segment; row 3 gets one too
    assert len(plan.segmentations[0].starts) == 4
    assert plan.skip[3] is None


def test_probe_text_options_change_J(tiny):
    _, _, base = run(tiny, ReProConfig())
    _, _, other_prefix = run(tiny, ReProConfig(probe_prefix="\nThe answer is "))
    _, _, other_format = run(tiny, ReProConfig(probe_answer_format="{answer}}$"))
    assert not torch.allclose(base.J_b[:3], other_prefix.J_b[:3])
    assert not torch.allclose(base.J_b[:3], other_format.J_b[:3])


def test_answer_format_keeps_literal_braces(tiny):
    _, tok = tiny
    repro = RePro(ReProConfig(probe_answer_format="\\boxed{{answer}}$"), tok, fmt(tok))
    assert tok.decode(list(repro.answer_ids("42"))) == "\\boxed{42}$"


def test_probe_impl_naive_equals_fused(tiny):
    _, _, fused = run(tiny, ReProConfig())
    _, _, naive = run(tiny, ReProConfig(probe=ProbeSettings(impl="naive", batch_size=3)))
    assert torch.allclose(fused.J_b[:3], naive.J_b[:3], atol=1e-5)
    assert torch.allclose(fused.J, naive.J, atol=1e-5)
    assert torch.allclose(fused.process_adv, naive.process_adv, atol=1e-4)


def test_w_first_step_and_norm_options(tiny):
    _, _, w0 = run(tiny, ReProConfig(w=0.0))
    assert torch.allclose(w0.S, w0.S_magn)
    _, _, w1 = run(tiny, ReProConfig(w=1.0))
    assert torch.allclose(w1.S, w1.S_stab)
    _, _, zero = run(tiny, ReProConfig(first_step_baseline="zero", process_norm="none"))
    _, _, score = run(tiny, ReProConfig(process_norm="none"))
    s0 = empty_prefix_score(0.2, "score")
    assert torch.allclose(zero.r[:3, 0], zero.S[:3, 0])
    assert torch.allclose(score.r[:3, 0], score.S[:3, 0] - s0)
    assert torch.allclose(score.r_norm, score.r)  # 'none' leaves r as is
    _, _, batch = run(tiny, ReProConfig(process_norm="batch"), groups=(0, 1, 2, 3))
    _, _, group = run(tiny, ReProConfig(process_norm="group"), groups=(0, 1, 2, 3))
    # one rollout per group: group pools normalise each rollout alone; the batch pool mixes them
    assert torch.allclose(batch.r_norm[batch.mask].mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-9)
    assert torch.all(group.r_norm[2] == 0)  # a pool of one (row 2 has a single cut)
    assert not torch.allclose(batch.r_norm, group.r_norm)


def test_stability_ema_option_changes_S_stab_only(tiny):
    _, _, base = run(tiny, ReProConfig())
    _, _, ema = run(tiny, ReProConfig(stability_ema=0.9))
    assert torch.allclose(base.S_magn, ema.S_magn)
    assert not torch.allclose(base.S_stab, ema.S_stab)


def test_apply_to(tiny):
    correct = [True, False, True, True]
    plan, _, out = run(tiny, ReProConfig(apply_to="correct"), correct=correct)
    assert plan.skip == [None, "apply_to", None, "no_segment"]
    assert torch.all(out.process_adv[1] == 0) and out.skipped["apply_to"] == 1
    plan, _, _ = run(tiny, ReProConfig(apply_to="incorrect"), correct=correct)
    assert plan.skip == ["apply_to", None, "apply_to", "apply_to"]


def test_excluded_rollouts_leave_the_pools(tiny):
    """algo.mask_truncated's exclusion: row 1 is not probed, gets no process advantage and is counted
    as 'truncated'; the group pool is then rows 0 and 2 only, exactly as if row 1 were absent."""
    plan, scored, out = run(tiny, ReProConfig(), excluded=[False, True, False, False])
    assert plan.skip == [None, "truncated", None, "no_segment"] and plan.requests[1] is None
    assert scored.probes[1] is None and out.skipped["truncated"] == 1
    assert torch.all(out.process_adv[1] == 0) and not out.mask[1].any()
    # the pool: 3 rewards of row 0 and 1 of row 2 -> mean 0 and population std 1 over those 4
    vals = out.r_norm[out.mask]
    assert vals.numel() == 4
    assert vals.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert vals.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    # against the full pool (9 rewards), row 0's normalised rewards move
    _, _, full = run(tiny, ReProConfig())
    assert not torch.allclose(full.r_norm[0, :3], out.r_norm[0, :3])


def test_config_is_frozen_and_complete():
    cfg = ReProConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.alpha = 1.0
    # every spec option is a field with the spec's default
    assert (cfg.alpha, cfg.top_k, cfg.w, cfg.segment_delimiter) == (0.1, 10, 0.2, r"\n\n")
    assert ModelConfig().think_end == "</think>"  # the marker is the model's (spec 1)
    assert (cfg.probe_prefix, cfg.probe_answer_format) == ("\n\nFinal answer: ", "{answer}")
    assert (cfg.stability_ema, cfg.first_step_baseline, cfg.process_norm) == (0.0, "score", "group")
    assert (cfg.apply_to, cfg.ppo_process_reward, cfg.magnitude_eps, cfg.norm_eps) == ("all", "advantage", 1e-6, 1e-6)
