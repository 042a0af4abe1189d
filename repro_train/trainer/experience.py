"""A step's experience: the rollouts and everything computed from them before the update, in phase order.

    batch = make_experience(rt, step)
        rollout_phase     prompts -> G rollouts each; decoding and outcome rewards started (the CPU tail)
        forward_phase     no-grad forwards: old log-probs and entropies (RePro on: J at the cuts), ref, values
        reward_phase      the outcome rewards joined, then the length shapers (trainer/shaping.py; none by default)
        refill            rollout.dynamic_sampling (dynamic_sampling.py; the batch as it is when off)
        advantage_phase   the registered estimator's advantage, then A_hat = A + alpha * A_tilde

The loop (loop.py), `repro-train signal` and bench/bench_step.py all call `make_experience`. What each phase
does and the batch's layout over ranks: docs/architecture.md, "One step, top to bottom". Under
rollout.overlap_cpu_tail (cpu_tail.py) decoding, the rewards and RePro's plan run on background threads beside the
forward phase's passes; off, they run in this order on the main thread.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..algos.advantages import AdvantageInputs, AdvantageParams, get_estimator
from ..algos.correction import is_weights
from ..algos.kl import kl_penalty
from ..core.seeds import mix_seed
from ..core.timing import phase_timer
from ..models.forward import Sequences, forward_logprobs, index_on, logprob_pass, pack
from ..repro.pipeline import Plan, ReProOutput, merge_plans
from ..repro.scores import fold
from ..repro.types import ProbeResult
from ..shaping import ShapingResult
from .batching import plan_micro_batches
from .cpu_tail import CpuTail
from .dynamic_sampling import Draw, refill
from .process_fold import dense_rewards, mc_advantages, process_advantage
from .runtime import Runtime
from .shaping import shape_advantages, shape_rewards


def make_experience(rt: Runtime, step: int) -> Batch:
    """One rank's experience of RL step `step` (0-based): rollouts, rewards, shapers, forwards, advantages."""
    batch = rollout_phase(rt, step)
    with cpu_tail(batch):
        forward_phase(rt, batch)
        reward_phase(rt, batch, step)
    batch = refill(rt, batch, step, more_experience)
    advantage_phase(rt, batch)
    return batch


def more_experience(rt: Runtime, step: int, draw: Draw) -> Batch:
    """The refill's extra groups (dynamic_sampling.py) through the phases before the advantages."""
    batch = rollout_phase(rt, step, draw)
    with cpu_tail(batch):
        forward_phase(rt, batch)
        reward_phase(rt, batch, step)
    return batch


@contextlib.contextmanager
def cpu_tail(batch: Batch):
    """The phases that run beside the batch's CPU tail; its threads are joined on the way out, on an error or a stop
    too, and its times go to batch.timings."""
    try:
        yield
    finally:
        batch.tail.close(batch.timings)
        batch.tail = None


@dataclass
class Batch:
    """One rank's rollouts of a step and everything computed from them (rows = B on this rank)."""

    seqs: Sequences
    response_ids: list[list[int]]  # each row's response token ids, on the host (EOS included)
    group_ids: torch.Tensor  # (B,)
    prompt_index: list[int]  # dataset index of each row's prompt
    texts: list[str]  # decoded responses (with the outcome rewards)
    answers: list[str | None]
    truncated: torch.Tensor  # (B,) bool: no EOS
    mask_truncated: bool = False  # algo.mask_truncated: truncated rows leave the loss and RePro's pools
    engine_logprobs: torch.Tensor | None = None  # (B, R) the rollout engine's log-probs (None: not reported)
    # Filled by the phases in order; None until the phase that computes it has run.
    rewards: torch.Tensor | None = None  # (B,) outcome reward, length shapers included (reward_phase)
    correct: torch.Tensor | None = None  # (B,) bool (reward_phase; sooner with overlap off or repro.apply_to)
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
    tail: CpuTail | None = None  # decoding, rewards and plan under way (rollout_phase to reward_phase; cpu_tail.py)

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
    """Sample G responses for this rank's prompts (or the refill's `draw`) and start checking their outcome
    (`start_outcome`); the caller closes batch.tail (`cpu_tail`)."""
    timings: dict[str, float] = {}
    with phase_timer(timings, "rollout_s"):
        with phase_timer(timings, "generate_s"):
            batch = _generate(rt, step, draw)
        batch.timings = timings
        batch.tail = CpuTail(rt.cfg.rollout.overlap_cpu_tail)
        try:
            start_outcome(rt, batch)
        except BaseException:
            batch.tail.close()
            raise
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
        texts=[],  # decoded on the CPU tail (start_outcome)
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


def start_outcome(rt: Runtime, batch: Batch) -> None:
    """Decoding and the reward's thread-safe part (`OutcomeReward.prefetch`) on the tail's outcome thread; with
    overlap off, the whole outcome here (`finish_outcome`): the rewards before the forwards."""
    tail, idx = batch.tail, batch.prompt_index
    prompts = [rt.prompts.prompts[i] for i in idx]
    columns = {k: [v[i] for i in idx] for k, v in rt.prompts.columns.items()}
    decode = lambda: rt.tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)  # noqa: E731
    prefetch = lambda: rt.reward.prefetch(prompts, tail.texts.result(), batch.answers, columns)  # noqa: E731
    tail.texts = tail.submit("outcome", "decode_s", decode)
    tail.outcome = tail.submit("outcome", "reward_s", prefetch)  # after the decoding: one thread, jobs in order
    if not tail.overlap:
        finish_outcome(rt, batch)


def finish_outcome(rt: Runtime, batch: Batch) -> None:
    """batch.texts and the outcome rewards (once): the tail's jobs joined, then the reward functions that run on the
    main thread under their deadline (`OutcomeReward.finish`); a job's exception is raised here."""
    if batch.rewards is not None:
        return
    tail = batch.tail
    batch.texts = tail.wait(tail.texts)
    res = tail.run_here("reward_s", rt.reward.finish, tail.wait(tail.outcome))
    batch.rewards, batch.correct = res.total.float(), res.correct.bool()
    batch.reward_parts, batch.unscorable = res.per_fn, res.unscorable


def reward_phase(rt: Runtime, batch: Batch, step: int) -> None:
    """The outcome rewards joined (run beside the forwards under rollout.overlap_cpu_tail), then the length shapers,
    which read them (the forwards read neither)."""
    finish_outcome(rt, batch)
    shape_rewards(rt, batch, step)


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
                plan_ahead(rt, batch, plan)
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


def plan_ahead(rt: Runtime, batch: Batch, micro: list[list[int]]) -> None:
    """RePro's plan of each micro-batch's rows, in the order the policy pass takes them (batch.tail.plans): on the
    tail's plan thread, beside the passes, or here with overlap off. The plan reads the outcome only under
    repro.apply_to correct / incorrect: the rewards are joined first then."""
    tail, correct = batch.tail, None
    if rt.repro.cfg.apply_to != "all":
        finish_outcome(rt, batch)
        correct = batch.correct.tolist()
    excluded = batch.excluded.tolist()

    def part(rows: list[int]) -> Plan:
        pick = lambda xs: None if xs is None else [xs[i] for i in rows]  # noqa: E731
        return rt.repro.plan(pick(batch.response_ids), pick(batch.answers), pick(correct), pick(excluded))

    if tail.overlap:  # decoding uses the tokenizer too: the plan starts after it, never beside it
        tail.submit("plan", None, lambda: tail.texts.exception())
    tail.plans = [tail.submit("plan", "plan_s", part, rows) for rows in micro]


def policy_pass(rt: Runtime, batch: Batch, plan: list[list[int]]) -> None:
    """Old log-probs and entropies (unless on-policy): a plain pass with RePro off; RePro's pass (J at the selected
    cuts as well) with it on, each micro-batch's plan waited for before its forward (`plan_ahead`)."""
    cfg, d = rt.cfg, rt.dist
    B, R = batch.mask.shape
    keep = not rt.on_policy
    if keep:
        batch.old_logprobs = torch.zeros(B, R, device=d.device)
        batch.entropy = torch.zeros(B, R, device=d.device)
    if rt.repro is not None:
        batch.probes = [None] * B
    probe_s = 0.0
    parts: list[tuple[list[int], Plan]] = []
    for k, rows in enumerate(plan):
        seqs = batch.seqs.select(rows)
        if rt.repro is not None:
            parts.append((rows, batch.tail.wait(batch.tail.plans[k])))
        with rt.acc.autocast():  # what the wrapped forward applies, for the probe's layer-by-layer path too
            if rt.repro is None:
                lp = logprob_pass(rt.policy, seqs, cfg.rollout.temperature, head=rt.head)
            else:
                out = rt.repro.policy_pass(rt.policy, seqs, parts[-1][1].requests, head=rt.head, logprobs=keep)
                lp, probe_s = out.lp, probe_s + out.probe_s
                for i, p in zip(rows, out.probes):
                    batch.probes[i] = p
        if keep:
            idx = index_on(rows, d.device)
            scatter_rows(batch.old_logprobs, idx, lp.logprobs)
            scatter_rows(batch.entropy, idx, lp.entropy)
    batch.timings["probe_s"] = probe_s  # RePro's device time in the pass (0 with RePro off)
    if rt.repro is not None:
        batch.plan = merge_plans(parts, B)  # exactly the plan of the whole batch (RePro.plan treats rows alone)


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
