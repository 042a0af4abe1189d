"""The RL loop. One step reads top to bottom:

    prompts -> rollouts -> outcome rewards                       rollout_phase
    policy pass: old log-probs, entropies, J probes (RePro),     score_phase
        reference log-probs (KL), values (PPO)
    RePro process advantage, outcome advantage (registered       advantage_phase
        estimator), fold: A_hat = A + alpha * A_tilde
    policy (and critic) updates                                  update_phase
    log, checkpoint                                              log_phase, save_checkpoint

GRPO, PPO, REINFORCE++, REINFORCE++-baseline and RLOO differ only by `algo.estimator` and the
presence of the critic (estimator 'gae'). RePro never knows which one runs.

Batch layout: every rank holds rollout.prompts_per_step / world prompts and all G responses of
each (groups stay on one rank), packed as `Sequences` (prompt left-padded, response right-padded).
Losses are normalised by global token/sequence counts, so micro-batches and ranks sum to the
global mean exactly.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch

from ..algos.advantages import AdvantageInputs, AdvantageParams, get_estimator
from ..algos.kl import kl_penalty
from ..algos.losses import agg_loss, get_policy_loss, value_loss
from ..dist import gathered_for_generation
from ..modeling import Sequences, forward_logprobs, pack
from ..repro.pipeline import Plan, ReProOutput
from ..repro.probe import score_pass
from ..repro.scores import dense_process_rewards, fold
from ..rewards.shapers import ShapingResult, shape_advantages, shape_rewards
from ..rollout.hf import sample
from .runtime import Runtime


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions)."""
    h = hashlib.sha256(",".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


@dataclass
class Batch:
    """One rank's rollouts of a step and everything computed from them (rows = B on this rank)."""

    seqs: Sequences
    group_ids: torch.Tensor  # (B,)
    prompt_index: list[int]  # dataset index of each row's prompt
    texts: list[str]  # decoded responses
    answers: list[str | None]
    truncated: torch.Tensor  # (B,) bool: no EOS
    rewards: torch.Tensor = None  # (B,) outcome reward
    correct: torch.Tensor = None  # (B,) bool
    reward_parts: dict = field(default_factory=dict)
    unscorable: int = 0
    old_logprobs: torch.Tensor = None  # (B, R)
    entropy: torch.Tensor = None  # (B, R)
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    plan: Plan | None = None
    repro: ReProOutput | None = None
    probes: list = field(default_factory=list)
    advantages: torch.Tensor = None  # (B, R)
    returns: torch.Tensor | None = None
    timings: dict = field(default_factory=dict)
    shaping: ShapingResult | None = None  # what the length shapers added (rewards/shapers.py)

    @property
    def mask(self) -> torch.Tensor:
        return self.seqs.response_mask


def sync(rt: Runtime) -> None:
    """Wait for the device, so that phase timers measure the phase's work, not its queueing."""
    if rt.dist.device.type == "cuda":
        torch.cuda.synchronize(rt.dist.device)


def micro_batches(n_rows: int, size: int) -> list[list[int]]:
    return [list(range(s, min(s + size, n_rows))) for s in range(0, n_rows, size)]


def scatter_rows(dst: torch.Tensor, rows: list[int], src: torch.Tensor) -> None:
    """dst[rows, :src.shape[1]] = src (a micro-batch's trimmed columns back into the batch)."""
    dst[rows, : src.shape[1]] = src.to(dst.device, dst.dtype)


# ----------------------------------------------------------------------------------------------
# rollout
# ----------------------------------------------------------------------------------------------

def rollout_phase(rt: Runtime, step: int) -> Batch:
    """Sample G responses for this rank's prompts and score their outcome."""
    cfg, d = rt.cfg, rt.dist
    t0 = time.perf_counter()
    per_rank = cfg.rollout.prompts_per_step // d.world
    global_idx = rt.sampler.take(cfg.rollout.prompts_per_step)  # same on every rank
    mine = global_idx[d.rank * per_rank:(d.rank + 1) * per_rank]
    prompts = [rt.prompts.prompt_ids[i] for i in mine]
    slots = list(range(d.rank * per_rank, (d.rank + 1) * per_rank))  # position in the step's prompt list
    seeds = [mix_seed(cfg.train.seed, step, s) for s in slots] if cfg.rollout.per_prompt_seed else None
    if seeds is None:
        torch.manual_seed(mix_seed(cfg.train.seed, step, d.rank, 7))
    with gathered_for_generation(rt.engine, rt.acc) as ac:
        groups = sample(ac.policy, prompts, cfg.rollout.group_size, cfg.rollout, rt.eos_ids, rt.pad_id, d.device, seeds)
    G = cfg.rollout.group_size
    row_prompts = [p for p in prompts for _ in range(G)]
    responses = [r for g in groups for r in g]
    seqs = pack(row_prompts, responses, rt.pad_id, d.device)
    eos = set(rt.eos_ids)
    batch = Batch(
        seqs=seqs,
        group_ids=torch.tensor([s for s in slots for _ in range(G)]),
        prompt_index=[i for i in mine for _ in range(G)],
        texts=rt.tokenizer.batch_decode(responses, skip_special_tokens=True),
        answers=[rt.prompts.answers[i] for i in mine for _ in range(G)],
        truncated=torch.tensor([not (len(r) and r[-1] in eos) for r in responses]))
    batch.timings["generate_s"] = time.perf_counter() - t0
    outcome_rewards(rt, batch)
    batch.timings["rollout_s"] = time.perf_counter() - t0
    return batch


def outcome_rewards(rt: Runtime, batch: Batch) -> None:
    idx = batch.prompt_index
    prompts = [rt.prompts.prompts[i] for i in idx]
    columns = {k: [v[i] for i in idx] for k, v in rt.prompts.columns.items()}
    res = rt.reward(prompts, batch.texts, batch.answers, columns)
    batch.rewards, batch.correct = res.total.float(), res.correct.bool()
    batch.reward_parts, batch.unscorable = res.per_fn, res.unscorable


# ----------------------------------------------------------------------------------------------
# score: the policy pass (old log-probs, entropies, J), reference, values
# ----------------------------------------------------------------------------------------------

def score_phase(rt: Runtime, batch: Batch) -> None:
    cfg, d = rt.cfg, rt.dist
    t0 = time.perf_counter()
    B, R = batch.mask.shape
    use_repro = cfg.repro.enabled
    if use_repro:
        responses = [row[:n] for row, n in zip(batch.seqs.response_ids.tolist(), batch.mask.sum(-1).tolist())]
        batch.plan = rt.repro.plan(responses, batch.answers, batch.correct.tolist())
        batch.timings["plan_s"] = time.perf_counter() - t0
    batch.old_logprobs = torch.zeros(B, R, device=d.device)
    batch.entropy = torch.zeros(B, R, device=d.device)
    probes, probe_s = [], 0.0
    for rows in micro_batches(B, cfg.algo.micro_batch_size):
        seqs = batch.seqs.select(rows)
        plan_rows = [batch.plan.rows[i] for i in rows] if use_repro else None
        with rt.acc.autocast():  # what the wrapped forward applies, for the probe's layer-by-layer path too
            out = score_pass(rt.policy, seqs, plan_rows, rt.repro.forcing_ids if use_repro else (), cfg.repro.top_k,
                             cfg.rollout.temperature, cfg.repro.probe_impl, rt.pad_id, cfg.repro.probe_batch_size,
                             sync_calls=d.max_int if d.sharded else None, forward=cfg.repro.probe_forward,
                             attention=cfg.repro.probe_attention, graph=cfg.repro.probe_cuda_graph)
        scatter_rows(batch.old_logprobs, rows, out.lp.logprobs)
        scatter_rows(batch.entropy, rows, out.lp.entropy)
        probes += out.probes
        probe_s += out.probe_s
    batch.probes = probes
    batch.timings["probe_s"] = probe_s
    if rt.ref is not None:
        batch.ref_logprobs = torch.zeros(B, R, device=d.device)
        with torch.no_grad():
            for rows in micro_batches(B, cfg.algo.micro_batch_size):
                seqs = batch.seqs.select(rows)
                lp = forward_logprobs(rt.ref, seqs, cfg.rollout.temperature, with_entropy=False)
                scatter_rows(batch.ref_logprobs, rows, lp.logprobs)
    if rt.has_critic:
        batch.values = torch.zeros(B, R, device=d.device)
        rt.engine.eval()
        with torch.no_grad():
            for rows in micro_batches(B, cfg.algo.micro_batch_size):
                seqs = batch.seqs.select(rows)
                v = rt.engine(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask,
                              position_ids=seqs.position_ids, values_only=True)
                v = v[:, seqs.prompt_width - 1:-1].float().masked_fill(~seqs.response_mask, 0.0)
                scatter_rows(batch.values, rows, v)
        rt.engine.train()
    sync(rt)
    batch.timings["score_s"] = time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# advantages
# ----------------------------------------------------------------------------------------------

def advantage_phase(rt: Runtime, batch: Batch) -> None:
    """Outcome advantage from the registered estimator, then A_hat = A + alpha * A_tilde."""
    cfg, d, a = rt.cfg, rt.dist, rt.cfg.algo
    t0 = time.perf_counter()
    mask = batch.mask
    R = mask.shape[1]
    token_rewards = torch.zeros(mask.shape, device=d.device)
    if rt.ref is not None and a.kl_mode == "reward":
        kl = kl_penalty(batch.old_logprobs, batch.ref_logprobs, a.kl_estimator)
        token_rewards = token_rewards - a.kl_coef * kl.masked_fill(~mask, 0.0)
    if cfg.repro.enabled:
        batch.repro = rt.repro.advantages(batch.plan, batch.probes, batch.group_ids, R, batch_stats=d.sum)
        # RePro's own cost: segmentation, selection + probe (device time), scores and advantages
        batch.timings["repro_s"] = batch.timings["plan_s"] + batch.timings["probe_s"] + (time.perf_counter() - t0)
        dense = a.estimator == "gae" and cfg.repro.ppo_process_reward == "dense_reward"
        if dense:
            r = dense_process_rewards(batch.repro.r_norm, batch.repro.cuts, batch.repro.mask, R)
            token_rewards = token_rewards + cfg.repro.alpha * r.to(token_rewards)
    inputs = AdvantageInputs(rewards=batch.rewards.to(d.device), mask=mask, group_ids=batch.group_ids.to(d.device),
                             token_rewards=token_rewards, values=batch.values)
    params = AdvantageParams(gamma=a.gamma, lam=a.lam, grpo_std_norm=a.grpo_std_norm, whiten=a.whiten_advantages)
    out = get_estimator(a.estimator)(inputs, params, d.sum)
    adv = shape_advantages(rt, batch, out.advantages)  # GRPO-LEAD's difficulty weights; identity otherwise
    if cfg.repro.enabled and not (a.estimator == "gae" and cfg.repro.ppo_process_reward == "dense_reward"):
        adv = fold(adv, batch.repro.process_adv.to(adv), cfg.repro.alpha)
    batch.advantages = adv.masked_fill(~mask, 0.0)
    batch.returns = out.returns
    sync(rt)
    batch.timings["advantage_s"] = time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# update
# ----------------------------------------------------------------------------------------------

def update_phase(rt: Runtime, batch: Batch) -> dict:
    """algo.update_epochs passes; each mini-batch is one optimizer step accumulated over micro-batches."""
    cfg, d, a = rt.cfg, rt.dist, rt.cfg.algo
    t0 = time.perf_counter()
    B = batch.mask.shape[0]
    mini = (a.mini_batch_size or cfg.rollout.prompts_per_step * cfg.rollout.group_size) // d.world
    sums: dict[str, float] = {}  # loss terms: shares of the global mean, summed over micro-batches
    means: dict[str, list[float]] = {}  # per-micro-batch means (clip fractions, ratios, ...)
    n_steps = 0
    rt.engine.train()
    for _ in range(a.update_epochs):
        for m0 in range(0, B, mini):
            rows_m = list(range(m0, m0 + mini))
            m = batch.mask[rows_m]
            norms = dict(global_tokens=float(d.sum(m.sum().float())),
                         global_seqs=float(d.sum((m.sum(-1) > 0).sum().float())),
                         max_len=cfg.rollout.max_new_tokens)
            micro = [rows_m[i:i + a.micro_batch_size] for i in range(0, mini, a.micro_batch_size)]
            for rows in micro:
                with rt.acc.accumulate(rt.engine):
                    loss, mstats = micro_loss(rt, batch, rows, norms)
                    # The loss is already a share of the global mean; the wrappers average over
                    # ranks and accelerate divides by the accumulation steps, so undo both.
                    rt.acc.backward(loss * d.world * len(micro))
                    if rt.acc.sync_gradients:
                        mstats["grad_norm"] = grad_norm(rt)
                        mstats["lr"] = rt.scheduler.get_last_lr()[0]
                    rt.optimizer.step()
                    rt.optimizer.zero_grad(set_to_none=True)
                for k, v in mstats.items():
                    if k in LOSS_TERMS:
                        sums[k] = sums.get(k, 0.0) + float(v)
                    else:
                        means.setdefault(k, []).append(float(v))
            rt.scheduler.step()
            rt.optimizer_steps += 1
            n_steps += 1
    sync(rt)
    out = {k: d.sum(torch.tensor(v / n_steps, dtype=torch.float64)).item() for k, v in sorted(sums.items())}
    out.update({k: sum(v) / len(v) for k, v in means.items()})  # this rank's mean
    out["update_s"] = time.perf_counter() - t0
    return out


# Loss terms are per-micro-batch shares of the global mean: summed over micro-batches and ranks.
LOSS_TERMS = ("pg_loss", "kl", "entropy_bonus", "value_loss")


def grad_norm(rt: Runtime) -> float:
    clip = rt.cfg.optim.grad_clip
    if rt.dist.strategy in ("zero2", "zero3"):  # DeepSpeed clips inside its step (config gradient_clipping)
        n = rt.engine.get_global_grad_norm() if hasattr(rt.engine, "get_global_grad_norm") else None
        return float(n) if n is not None else float("nan")
    n = rt.acc.clip_grad_norm_(rt.engine.parameters(), clip if clip > 0 else float("inf"))
    return float(n)


def micro_loss(rt: Runtime, batch: Batch, rows: list[int], norms: dict) -> tuple[torch.Tensor, dict]:
    """Policy loss (+ KL loss, - entropy bonus, + value loss) of one micro-batch."""
    cfg, a = rt.cfg, rt.cfg.algo
    seqs = batch.seqs.select(rows)
    Rm = seqs.response_mask.shape[1]
    sl = lambda t: t[rows, :Rm]  # noqa: E731 - this micro-batch's rows, trimmed like seqs
    mask = seqs.response_mask
    want_entropy = a.entropy_coef > 0
    out = forward_logprobs(rt.policy, seqs, cfg.rollout.temperature, with_entropy=want_entropy,
                           **({"with_values": True} if rt.has_critic else {}))
    pg, m = get_policy_loss(a.policy_loss)(out.logprobs, sl(batch.old_logprobs), sl(batch.advantages), mask,
                                           clip_low=a.clip_low, clip_high=a.clip_high, dual_clip=a.dual_clip,
                                           agg=a.loss_agg, **norms)
    loss = pg
    stats = {"pg_loss": pg.item(), **{k: float(v) for k, v in m.items()}}
    if rt.ref is not None:
        kl = kl_penalty(out.logprobs, sl(batch.ref_logprobs), a.kl_estimator)
        kl_term = agg_loss(kl, mask, a.loss_agg, **norms)
        stats["kl"] = kl_term.item()
        if a.kl_mode == "loss":
            loss = loss + a.kl_coef * kl_term
    if want_entropy:
        ent = agg_loss(out.entropy, mask, a.loss_agg, **norms)
        loss = loss - a.entropy_coef * ent
        stats["entropy_bonus"] = ent.item()
    if rt.has_critic:
        vl, vm = value_loss(out.values, sl(batch.values), sl(batch.returns), mask, clip=a.value_clip,
                            agg=a.loss_agg, **norms)
        loss = loss + a.vf_coef * vl
        stats["value_loss"] = vl.item()
        stats.update({k: float(v) for k, v in vm.items()})
    return loss, stats


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------

def train(cfg) -> str:
    """Run RL training for `cfg` (a resolved Config); returns the run folder."""
    from tqdm import tqdm

    from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
    from .metrics import NullLogger, RunLogger, sample_rows, step_metrics
    from .runtime import build_runtime

    rt = build_runtime(cfg)
    d = rt.dist
    if d.is_main:
        print(f"repro-train: {d.strategy} on {d.world} process(es), device {d.device}; "
              f"algo {cfg.algo.estimator}, RePro {'on' if cfg.repro.enabled else 'off'}; run folder {rt.out_dir}", flush=True)
    try:
        resume = resolve_resume(cfg.train.resume, cfg.train.output_dir)
        state = load_checkpoint(rt, resume) if resume else {}
        logger = RunLogger(cfg, rt.out_dir, state.get("wandb_id")) if d.is_main else NullLogger()
        bar = tqdm(total=cfg.train.steps, initial=rt.start_step, desc="train", unit="step",
                   disable=not (d.is_main and cfg.log.progress), dynamic_ncols=True)
        for step in range(rt.start_step, cfg.train.steps):
            t0 = time.perf_counter()
            batch = rollout_phase(rt, step)
            shape_rewards(rt, batch, step)  # length-control shapers (shaping.methods): rewards before the estimator
            score_phase(rt, batch)
            advantage_phase(rt, batch)
            upd = update_phase(rt, batch)
            batch.timings["step_s"] = time.perf_counter() - t0
            metrics = step_metrics(rt, batch, upd)
            logger.log(step + 1, metrics, sample_rows(rt, batch, cfg.log.sample_rollouts) if d.is_main else [])
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", acc=f"{metrics['accuracy']:.2f}",
                            len=f"{metrics['response_length/mean']:.0f}")
            done = step + 1
            if done == cfg.train.steps or (cfg.train.save_every and done % cfg.train.save_every == 0):
                save_checkpoint(rt, done, logger.wandb_id)
        bar.close()
        logger.close()
    finally:
        rt.close()
    return rt.out_dir
