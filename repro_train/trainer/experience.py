"""A step's experience: the rollouts and everything computed from them before the update, in phase order.

    batch = make_experience(rt, step)
        rollout_phase     prompts -> G rollouts each -> outcome rewards
        shape_rewards     the length shapers (trainer/shaping.py; none by default)
        forward_phase     no-grad forwards: old log-probs and entropies (RePro on: J at the cuts), ref, values
        refill            rollout.dynamic_sampling (dynamic_sampling.py; the batch as it is when off)
        advantage_phase   the registered estimator's advantage, then A_hat = A + alpha * A_tilde

The loop (loop.py), `repro-train signal` and bench/bench_step.py all call `make_experience`. What each phase
does and the batch's layout over ranks: docs/architecture.md, "One step, top to bottom".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..algos.advantages import AdvantageInputs, AdvantageParams, get_estimator
from ..algos.correction import is_weights
from ..algos.kl import kl_penalty
from ..core.seeds import mix_seed
from ..core.timing import phase_timer
from ..models.forward import Sequences, forward_logprobs, index_on, logprob_pass, pack
from ..repro.pipeline import Plan, ReProOutput
from ..repro.scores import fold
from ..repro.types import ProbeResult
from ..shaping import ShapingResult
from .batching import plan_micro_batches
from .dynamic_sampling import Draw, refill
from .process_fold import dense_rewards, mc_advantages, process_advantage
from .runtime import Runtime
from .shaping import shape_advantages, shape_rewards


def make_experience(rt: Runtime, step: int) -> Batch:
    """One rank's experience of RL step `step` (0-based): rollouts, rewards, shapers, forwards, advantages."""
    batch = rollout_phase(rt, step)
    shape_rewards(rt, batch, step)
    forward_phase(rt, batch)
    batch = refill(rt, batch, step, more_experience)
    advantage_phase(rt, batch)
    return batch


def more_experience(rt: Runtime, step: int, draw: Draw) -> Batch:
    """The refill's extra groups (dynamic_sampling.py) through the phases before the advantages."""
    batch = rollout_phase(rt, step, draw)
    shape_rewards(rt, batch, step)
    forward_phase(rt, batch)
    return batch


@dataclass
class Batch:
    """One rank's rollouts of a step and everything computed from them (rows = B on this rank)."""

    seqs: Sequences
    response_ids: list[list[int]]  # each row's response token ids, on the host (EOS included)
    group_ids: torch.Tensor  # (B,)
    prompt_index: list[int]  # dataset index of each row's prompt
    texts: list[str]  # decoded responses
    answers: list[str | None]
    truncated: torch.Tensor  # (B,) bool: no EOS
    mask_truncated: bool = False  # algo.mask_truncated: truncated rows leave the loss and RePro's pools
    engine_logprobs: torch.Tensor | None = None  # (B, R) the rollout engine's log-probs (None: not reported)
    # Filled by the phases in order; None until the phase that computes it has run.
    rewards: torch.Tensor | None = None  # (B,) outcome reward, length shapers included (rollout_phase)
    correct: torch.Tensor | None = None  # (B,) bool (rollout_phase)
    reward_parts: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) per reward function
    unscorable: int = 0  # rollouts no reward function could check
    shaping: ShapingResult | None = None  # what the length shapers added (shaping/)
    old_logprobs: torch.Tensor | None = None  # (B, R) (forward_phase)
    entropy: torch.Tensor | None = None  # (B, R) (forward_phase)
    ref_logprobs: torch.Tensor | None = None  # (B, R), with a reference model (forward_phase)
    values: torch.Tensor | None = None  # (B, R), with a critic (forward_phase)
    plan: Plan | None = None  # RePro's per-rollout inputs (forward_phase, RePro on)
    probes: list[ProbeResult | None] = field(default_factory=list)  # per rollout (forward_phase, RePro on)
    repro: ReProOutput | None = None  # every RePro quantity (advantage_phase, RePro on)
    advantages: torch.Tensor | None = None  # (B, R) (advantage_phase)
    returns: torch.Tensor | None = None  # (B, R), with a critic (advantage_phase)
    is_weights: torch.Tensor | None = None  # (B, R) weights for the engine mismatch (forward_phase)
    is_stats: dict[str, torch.Tensor] = field(default_factory=dict)  # their metrics (algos/correction.py)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (`timing.phase_timer`)
    sampling: dict[str, float] = field(default_factory=dict)  # dynamic sampling's counts (dynamic_sampling.py)

    @property
    def mask(self) -> torch.Tensor:
        return self.seqs.response_mask

    @property
    def excluded(self) -> torch.Tensor:
        """(B,) bool: rows left out of the loss and of RePro's pools (truncated ones, with algo.mask_truncated)."""
        return self.truncated.bool() & self.mask_truncated

    @property
    def loss_mask(self) -> torch.Tensor:
        """(B, R) the tokens the update's losses and normalisers count: the response mask less excluded rows."""
        return self.mask & ~self.excluded.to(self.mask.device)[:, None]


def micro_batch_plan(rt: Runtime, batch: Batch) -> list[list[int]]:
    """The micro-batches of this step's forwards and updates (`batching.plan_micro_batches`); ranks agree on their
    number."""
    algo = rt.cfg.algo
    plens, rlens = batch.seqs.host_lengths()
    agree = rt.dist.max_int if rt.dist.sharded else None  # forwards are collectives only under ZeRO-3 and FSDP2
    return plan_micro_batches(plens, rlens, algo.micro_batch_size, algo.max_tokens_per_micro_batch, agree)


def scatter_rows(dst: torch.Tensor, rows: torch.Tensor, src: torch.Tensor) -> None:
    """dst[rows, :src.shape[1]] = src (a micro-batch's trimmed columns back into the batch); `rows` on dst's device."""
    dst[rows, : src.shape[1]] = src.to(dst.device, dst.dtype)


# ----------------------------------------------------------------------------------------------
# rollout
# ----------------------------------------------------------------------------------------------


def rollout_phase(rt: Runtime, step: int, draw: Draw | None = None) -> Batch:
    """Sample G responses for this rank's prompts (or the refill's `draw`) and check their outcome."""
    timings: dict[str, float] = {}
    with phase_timer(timings, "rollout_s"):
        with phase_timer(timings, "generate_s"):
            batch = _generate(rt, step, draw)
        batch.timings = timings
        outcome_rewards(rt, batch)
    return batch


def _draw(rt: Runtime, step: int) -> Draw:
    """This rank's share of the step's prompts: dataset indices, slots (positions in the step's prompt list, the
    group ids) and per-prompt seeds (None: the rank's generator is seeded here)."""
    cfg, d = rt.cfg, rt.dist
    per_rank = cfg.rollout.prompts_per_step // d.world
    global_idx = rt.sampler.take(cfg.rollout.prompts_per_step)  # same on every rank
    mine = global_idx[d.rank * per_rank : (d.rank + 1) * per_rank]
    slots = list(range(d.rank * per_rank, (d.rank + 1) * per_rank))  # position in the step's prompt list
    seeds = [mix_seed(cfg.train.seed, step, s) for s in slots] if cfg.rollout.per_prompt_seed else None
    if seeds is None:
        torch.manual_seed(mix_seed(cfg.train.seed, step, d.rank, 7))
    return mine, slots, seeds


def _generate(rt: Runtime, step: int, draw: Draw | None = None) -> Batch:
    """G sampled responses for each prompt of the draw (default: this rank's prompts of the step), packed and
    decoded."""
    cfg, d = rt.cfg, rt.dist
    mine, slots, seeds = draw if draw is not None else _draw(rt, step)
    prompts = [rt.prompts.prompt_ids[i] for i in mine]
    rt.rollout.push_weights(rt.optimizer_steps, rt.policy_weights)  # a no-op when the engine has them
    out = rt.rollout.sample(prompts, cfg.rollout.group_size, seeds)
    rt.rollout.release()  # the engine's memory goes to the forward and update phases
    G = cfg.rollout.group_size
    row_prompts = [p for p in prompts for _ in range(G)]
    responses = [r for g in out.token_ids for r in g]
    seqs = pack(row_prompts, responses, rt.pad_id, d.device)
    eos = set(rt.response_format.eos_ids)
    batch = Batch(
        seqs=seqs,
        response_ids=responses,
        group_ids=torch.tensor([s for s in slots for _ in range(G)]),
        prompt_index=[i for i in mine for _ in range(G)],
        texts=rt.tokenizer.batch_decode(responses, skip_special_tokens=True),
        answers=[rt.prompts.answers[i] for i in mine for _ in range(G)],
        truncated=torch.tensor([not (len(r) and r[-1] in eos) for r in responses]),
        mask_truncated=cfg.algo.mask_truncated,
    )
    if out.logprobs is not None:
        batch.engine_logprobs = pad_rows([lp for g in out.logprobs for lp in g], seqs.response_mask.shape[1], d.device)
    return batch


def pad_rows(rows: list[list[float]], width: int, device) -> torch.Tensor:
    """(len(rows), width) float32, each row left-aligned and zero-padded."""
    out = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out.to(device)


def outcome_rewards(rt: Runtime, batch: Batch) -> None:
    idx = batch.prompt_index
    prompts = [rt.prompts.prompts[i] for i in idx]
    columns = {k: [v[i] for i in idx] for k, v in rt.prompts.columns.items()}
    res = rt.reward(prompts, batch.texts, batch.answers, columns)
    batch.rewards, batch.correct = res.total.float(), res.correct.bool()
    batch.reward_parts, batch.unscorable = res.per_fn, res.unscorable


# ----------------------------------------------------------------------------------------------
# forwards: the policy pass (old log-probs, entropies, J), reference, values
# ----------------------------------------------------------------------------------------------


def forward_phase(rt: Runtime, batch: Batch) -> None:
    """The step's no-grad forwards over the rollouts, a micro-batch at a time, the model in eval mode throughout.
    On an on-policy step (`Runtime.on_policy`) the policy pass runs only for RePro (its KV cache and fork entropies):
    the old log-probs, entropies and importance weights come from the update's own pass (loop.py)."""
    plan = micro_batch_plan(rt, batch)
    with phase_timer(batch.timings, "forward_s", rt.dist.device):
        rt.model.eval()  # once for the phase (eval() walks every module)
        try:
            if rt.repro is not None:
                with phase_timer(batch.timings, "plan_s"):
                    batch.plan = rt.repro.plan(
                        batch.response_ids, batch.answers, batch.correct.tolist(), batch.excluded.tolist()
                    )
            if rt.repro is not None or not rt.on_policy:
                policy_pass(rt, batch, plan)
            if batch.engine_logprobs is not None and not rt.on_policy:  # the sampler's mismatch (algos/correction.py)
                batch.is_weights, batch.is_stats = is_weights(
                    batch.old_logprobs,
                    batch.engine_logprobs,
                    batch.mask,
                    rt.cfg.rollout.is_correction,
                    rt.cfg.rollout.is_cap,
                )
            if rt.ref is not None:
                reference_pass(rt, batch, plan)
            if rt.has_critic:
                value_pass(rt, batch, plan)
        finally:
            rt.model.train()


def policy_pass(rt: Runtime, batch: Batch, plan: list[list[int]]) -> None:
    """Old log-probs and entropies (unless on-policy): a plain pass with RePro off; RePro's pass (J at the selected
    cuts as well) with it on."""
    cfg, d = rt.cfg, rt.dist
    B, R = batch.mask.shape
    keep = not rt.on_policy
    if keep:
        batch.old_logprobs = torch.zeros(B, R, device=d.device)
        batch.entropy = torch.zeros(B, R, device=d.device)
    if rt.repro is not None:
        batch.probes = [None] * B
    probe_s = 0.0
    for rows in plan:
        seqs = batch.seqs.select(rows)
        with rt.acc.autocast():  # what the wrapped forward applies, for the probe's layer-by-layer path too
            if rt.repro is None:
                lp = logprob_pass(rt.policy, seqs, cfg.rollout.temperature, head=rt.head)
            else:
                requests = [batch.plan.requests[i] for i in rows]
                out = rt.repro.policy_pass(rt.policy, seqs, requests, head=rt.head, logprobs=keep)
                lp, probe_s = out.lp, probe_s + out.probe_s
                for i, p in zip(rows, out.probes):
                    batch.probes[i] = p
        if keep:
            idx = index_on(rows, d.device)
            scatter_rows(batch.old_logprobs, idx, lp.logprobs)
            scatter_rows(batch.entropy, idx, lp.entropy)
    batch.timings["probe_s"] = probe_s  # RePro's device time in the pass (0 with RePro off)


def reference_pass(rt: Runtime, batch: Batch, plan: list[list[int]]) -> None:
    """Log-probs of the responses under the frozen reference model (for the KL term)."""
    B, R = batch.mask.shape
    batch.ref_logprobs = torch.zeros(B, R, device=rt.dist.device)
    with torch.no_grad():
        for rows in plan:
            seqs = batch.seqs.select(rows)
            lp = forward_logprobs(rt.ref, seqs, rt.cfg.rollout.temperature, with_entropy=False, head=rt.head)
            scatter_rows(batch.ref_logprobs, index_on(rows, rt.dist.device), lp.logprobs)


def value_pass(rt: Runtime, batch: Batch, plan: list[list[int]]) -> None:
    """Critic values V(s_t) before each response token (PPO)."""
    B, R = batch.mask.shape
    batch.values = torch.zeros(B, R, device=rt.dist.device)
    with torch.no_grad():
        for rows in plan:
            seqs = batch.seqs.select(rows)
            v = rt.model(
                input_ids=seqs.input_ids,
                attention_mask=seqs.attention_mask,
                position_ids=seqs.position_ids,
                values_only=True,
            )
            v = v[:, seqs.prompt_width - 1 : -1].float().masked_fill(~seqs.response_mask, 0.0)
            scatter_rows(batch.values, index_on(rows, rt.dist.device), v)


# ----------------------------------------------------------------------------------------------
# advantages
# ----------------------------------------------------------------------------------------------


def advantage_phase(rt: Runtime, batch: Batch) -> None:
    """Outcome advantage from the registered estimator, then A_hat = A + alpha * A_tilde."""
    cfg, d, algo = rt.cfg, rt.dist, rt.cfg.algo
    with phase_timer(batch.timings, "advantage_s", d.device) as elapsed:
        mask = batch.mask
        R = mask.shape[1]
        token_rewards = torch.zeros(mask.shape, device=d.device)
        if rt.ref is not None and algo.kl_mode == "reward":
            kl = kl_penalty(batch.old_logprobs, batch.ref_logprobs, algo.kl_estimator)
            token_rewards = token_rewards - algo.kl_coef * kl.masked_fill(~mask, 0.0)
        if cfg.repro.enabled:
            batch.repro = (
                mc_advantages(rt, batch, d.sum)  # process.source mc_value: MC value increments on RePro's cuts
                if cfg.process.source == "mc_value"
                else rt.repro.advantages(batch.plan, batch.probes, batch.group_ids, R, batch_stats=d.sum)
            )
            # RePro's own cost: segmentation, selection + probe (device time), scores and advantages
            batch.timings["repro_s"] = batch.timings["plan_s"] + batch.timings["probe_s"] + elapsed()
            dense = dense_rewards(cfg, batch.repro, R)  # PPO's 'dense_reward' fold (process_fold.py); None otherwise
            if dense is not None:
                token_rewards = token_rewards + dense.to(token_rewards)
        inputs = AdvantageInputs(
            rewards=batch.rewards.to(d.device),
            mask=mask,
            group_ids=batch.group_ids.to(d.device),
            token_rewards=token_rewards,
            values=batch.values,
        )
        params = AdvantageParams(
            gamma=algo.gamma, lam=algo.lam, grpo_std_norm=algo.grpo_std_norm, whiten=algo.whiten_advantages
        )
        out = get_estimator(algo.estimator)(inputs, params, d.sum)
        adv = shape_advantages(rt, batch, out.advantages)  # GRPO-LEAD's difficulty weights; identity otherwise
        if cfg.repro.enabled:
            process_adv = process_advantage(cfg, batch.repro, mask, batch.values, d.sum)  # (process_fold.py)
            if process_adv is not None:
                adv = fold(adv, process_adv.to(adv), cfg.repro.alpha)
        batch.advantages = adv.masked_fill(~mask, 0.0)
        batch.returns = out.returns
