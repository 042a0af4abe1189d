"""How RePro's process advantage joins an algorithm's advantage (spec 12): the loop's fold hook.

    token_rewards += dense_rewards(cfg, repro_out, T)    # before the estimator; PPO 'dense_reward' only
    adv = fold(adv, process_advantage(cfg, repro_out, mask, values, reduce), cfg.repro.alpha)  # after it
    (each returns None where it does not apply, and the loop skips that line)

RePro itself (`repro/`) never learns which algorithm runs; the choices that depend on it are read here:
`repro.ppo_process_reward` (advantage, dense_reward, second_gae) for PPO, while the other estimators' folds
are normalisation choices (`repro.process_norm`). `mc_advantages` does the same with the Monte-Carlo value
increments of RePro's cuts (process.source: mc_value). docs/repro.md, step 12, "Presets" and "Monte-Carlo
step values".
"""

from __future__ import annotations

import torch

from ..algos.advantages import AdvantageInputs, AdvantageParams, Reduce, estimator_facts, gae
from ..core.seeds import mix_seed
from ..core.timing import phase_timer
from ..eval.mc_values import cut_values
from ..repro.mc import mc_process_output
from ..repro.pipeline import ReProOutput
from ..repro.scores import dense_process_rewards

MC_SEED_TAG = 31
"""Ends the seeds of the Monte-Carlo continuations, so they never equal a rollout's (train.seed, step, slot)."""


def _ppo(cfg, fold_name: str) -> bool:
    return estimator_facts(cfg.algo.estimator).needs_critic and cfg.repro.ppo_process_reward == fold_name


def dense_rewards(cfg, out: ReProOutput, T: int) -> torch.Tensor | None:
    """alpha * r'_j on token c_j - 1 (B, T), for PPO with 'dense_reward'; None for every other fold."""
    if not _ppo(cfg, "dense_reward"):
        return None
    return cfg.repro.alpha * dense_process_rewards(out.r_norm, out.cuts, out.mask, T)


def process_advantage(
    cfg, out: ReProOutput, mask: torch.Tensor, values: torch.Tensor | None, reduce: Reduce
) -> torch.Tensor | None:
    """The (B, T) process advantage to fold for `cfg` (a Config): A_tilde, or its second GAE; None
    with 'dense_reward' (already in the token rewards)."""
    if _ppo(cfg, "dense_reward"):
        return None
    if _ppo(cfg, "second_gae"):
        return second_gae(out.r_norm, out.cuts, out.mask, mask, values, cfg.algo.gamma, cfg.algo.lam, reduce)
    return out.process_adv.to(mask.device)


def second_gae(
    r_norm: torch.Tensor,
    cuts: torch.Tensor,
    step_mask: torch.Tensor,
    mask: torch.Tensor,
    values: torch.Tensor,
    gamma: float,
    lam: float,
    reduce: Reduce,
) -> torch.Tensor:
    """The authors' PPO fold: GAE over the process rewards r'_j at tokens c_j - 1 with the critic's
    values V, then whitened over the batch's valid tokens. (B, T); r_norm, cuts, step_mask (B, M)."""
    dense = dense_process_rewards(r_norm, cuts, step_mask, mask.shape[1]).to(mask.device)  # (B, T)
    zeros = torch.zeros(mask.shape[0], dtype=dense.dtype, device=mask.device)
    inp = AdvantageInputs(
        rewards=zeros, mask=mask, group_ids=zeros.long(), token_rewards=dense, values=values.to(dense.dtype)
    )
    return gae(inp, AdvantageParams(gamma=gamma, lam=lam, whiten=True), reduce).advantages


def mc_advantages(rt, batch, batch_stats: Reduce) -> ReProOutput:
    """RePro's cuts and scores of the batch with the Monte-Carlo value increments as the step rewards
    (process.source: mc_value), normalised like J's. Continuations are sampled from the policy that sampled the
    rollouts (the weights are not updated yet); seeds come from (train.seed, the weights' version, the prompt's slot,
    the rollout in its group, the cut): the prompt alone is its group's, so a group shares V_b. Time: time/mc_s."""
    cfg, G = rt.cfg, rt.cfg.rollout.group_size
    out = rt.repro.rewards(batch.plan, batch.probes)
    lengths = batch.mask.sum(-1).tolist()
    responses = [row[:n] for row, n in zip(batch.seqs.response_ids.tolist(), lengths)]
    prompts = [rt.prompts.prompt_ids[i] for i in batch.prompt_index]
    slots = batch.group_ids.tolist()

    def seed_of(i: int, c: int) -> int:  # rows of a rank are whole groups of G in order: i % G is the rollout's place
        return mix_seed(cfg.train.seed, rt.optimizer_steps, slots[i], -1 if c == 0 else i % G, c, MC_SEED_TAG)

    def grade(rows: list[int], texts: list[str]) -> list[bool]:  # as rollout_phase grades the rollouts
        idx = [batch.prompt_index[i] for i in rows]
        columns = {k: [v[j] for j in idx] for k, v in rt.prompts.columns.items()}
        res = rt.reward([rt.prompts.prompts[j] for j in idx], texts, [batch.answers[i] for i in rows], columns)
        return res.correct.tolist()

    def decode(ids: list[list[int]]) -> list[str]:
        return rt.tokenizer.batch_decode(ids, skip_special_tokens=True)

    with phase_timer(batch.timings, "mc_s"):
        rt.rollout.push_weights(rt.optimizer_steps, rt.policy_weights)  # a no-op unless the engine dropped them
        mc = cut_values(
            rt.rollout,
            grade,
            decode,
            prompts,
            responses,
            out.cuts,
            out.mask,
            cfg.process.mc_continuations,
            cfg.rollout.max_new_tokens,
            seed_of,
        )
        rt.rollout.release()
    return mc_process_output(rt.repro, out, mc, batch.group_ids, batch.mask.shape[1], batch_stats)
