"""The RL loop: `train(cfg)` builds the runtime, then each step is

    batch = make_experience(rt, step)      rollouts, rewards, shapers, forwards, advantages (experience.py)
    guard.check_batch(batch)               a non-finite step is not applied (guard.py)
    update_phase(rt, batch)                policy (and critic) updates: clipped loss, KL, entropy, value loss
    log, checkpoint                        metrics.py, checkpoint.py

GRPO, PPO, REINFORCE++, REINFORCE++-baseline and RLOO differ only by `algo.estimator` and the presence of the critic
(an estimator that needs one); RePro never knows which one runs. Losses are normalised by global token/sequence
counts, so micro-batches and ranks sum to the global mean exactly (docs/algorithms.md).
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..algos.kl import kl_penalty
from ..algos.losses import agg_loss, get_policy_loss, value_loss
from ..core.timing import phase_timer
from ..models.forward import forward_logprobs
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .dist import clip_grad_norm
from .experience import Batch, make_experience
from .guard import NumericGuard
from .metrics import NullLogger, RunLogger, sample_rows, step_metrics
from .preempt import Preempted, Preemption, clear_marker
from .runtime import Runtime, build_runtime

# ----------------------------------------------------------------------------------------------
# update
# ----------------------------------------------------------------------------------------------


def update_phase(rt: Runtime, batch: Batch, guard=None) -> dict:
    """algo.update_epochs passes; each mini-batch is one optimizer step accumulated over micro-batches.
    `guard` (trainer/guard.py) skips an optimizer step whose loss or gradient norm is not finite."""
    cfg, d, algo = rt.cfg, rt.dist, rt.cfg.algo
    timings: dict[str, float] = {}
    with phase_timer(timings, "update_s", d.device):
        B = batch.mask.shape[0]
        mini = (algo.mini_batch_size or cfg.rollout.prompts_per_step * cfg.rollout.group_size) // d.world
        sums: dict[str, float] = {}  # loss terms: shares of the global mean, summed over micro-batches
        means: dict[str, list[float]] = {}  # per-micro-batch means (clip fractions, ratios, ...)
        n_steps = 0
        rt.model.train()
        for _ in range(algo.update_epochs):
            for m0 in range(0, B, mini):
                optimizer_step(rt, batch, list(range(m0, m0 + mini)), sums, means, guard)
                n_steps += 1
        out = {k: d.sum(torch.tensor(v / n_steps, dtype=torch.float64)).item() for k, v in sorted(sums.items())}
        out.update({k: sum(v) / len(v) for k, v in means.items()})  # this rank's mean
    return {**out, **timings}


def optimizer_step(
    rt: Runtime, batch: Batch, rows_m: list[int], sums: dict[str, float], means: dict[str, list[float]], guard=None
) -> None:
    """One optimizer step on the mini-batch `rows_m`, gradients accumulated over its micro-batches;
    adds the loss terms to `sums` and the other statistics to `means`. The step is not applied when
    `guard` finds its loss or gradient norm not finite."""
    cfg, d, algo = rt.cfg, rt.dist, rt.cfg.algo
    m = batch.mask[rows_m]
    norms = dict(
        global_tokens=float(d.sum(m.sum().float())),
        global_seqs=float(d.sum((m.sum(-1) > 0).sum().float())),
        max_len=cfg.rollout.max_new_tokens,
    )
    micro = [rows_m[i : i + algo.micro_batch_size] for i in range(0, len(rows_m), algo.micro_batch_size)]
    loss_bad, applied = False, True
    for rows in micro:
        with rt.acc.accumulate(rt.model):
            loss, mstats = micro_loss(rt, batch, rows, norms)
            # The loss is already a share of the global mean; the wrappers average over
            # ranks and accelerate divides by the accumulation steps, so undo both.
            with d.timed("backward (gradient all-reduce)"):
                rt.acc.backward(loss * d.world * len(micro))
            loss_bad = loss_bad or not torch.isfinite(loss.detach()).item()
            if rt.acc.sync_gradients:
                mstats["grad_norm"] = clip_grad_norm(rt.acc, rt.model, d.strategy, cfg.optim.grad_clip)
                mstats["lr"] = rt.scheduler.get_last_lr()[0]
                applied = guard is None or not guard.skip_update(loss_bad, mstats["grad_norm"])
            if applied:
                rt.optimizer.step()
            rt.optimizer.zero_grad(set_to_none=True)
        for k, v in mstats.items():
            if k in LOSS_TERMS:
                sums[k] = sums.get(k, 0.0) + float(v)
            else:
                means.setdefault(k, []).append(float(v))
    if applied:
        rt.scheduler.step()
        rt.optimizer_steps += 1  # also the weights' version the rollout engine follows


# Loss terms are per-micro-batch shares of the global mean: summed over micro-batches and ranks.
LOSS_TERMS = ("pg_loss", "kl", "entropy_bonus", "value_loss")


def micro_loss(rt: Runtime, batch: Batch, rows: list[int], norms: dict) -> tuple[torch.Tensor, dict]:
    """Policy loss (+ KL loss, - entropy bonus, + value loss) of one micro-batch."""
    cfg, algo = rt.cfg, rt.cfg.algo
    seqs = batch.seqs.select(rows)
    Rm = seqs.response_mask.shape[1]
    sl = lambda t: t[rows, :Rm]  # noqa: E731 - this micro-batch's rows, trimmed like seqs
    mask = seqs.response_mask
    want_entropy = algo.entropy_coef > 0
    out = forward_logprobs(
        rt.policy,
        seqs,
        cfg.rollout.temperature,
        with_entropy=want_entropy,
        **({"with_values": True} if rt.has_critic else {}),
    )
    pg, m = get_policy_loss(algo.policy_loss)(
        out.logprobs,
        sl(batch.old_logprobs),
        sl(batch.advantages),
        mask,
        clip_low=algo.clip_low,
        clip_high=algo.clip_high,
        dual_clip=algo.dual_clip,
        agg=algo.loss_agg,
        is_weights=None if batch.is_weights is None else sl(batch.is_weights),
        **norms,
    )
    loss = pg
    stats = {"pg_loss": pg.item(), **{k: float(v) for k, v in m.items()}}
    if rt.ref is not None:
        kl = kl_penalty(out.logprobs, sl(batch.ref_logprobs), algo.kl_estimator)
        kl_term = agg_loss(kl, mask, algo.loss_agg, **norms)
        stats["kl"] = kl_term.item()
        if algo.kl_mode == "loss":
            loss = loss + algo.kl_coef * kl_term
    if want_entropy:
        ent = agg_loss(out.entropy, mask, algo.loss_agg, **norms)
        loss = loss - algo.entropy_coef * ent
        stats["entropy_bonus"] = ent.item()
    if rt.has_critic:
        vl, vm = value_loss(
            out.values, sl(batch.values), sl(batch.returns), mask, clip=algo.value_clip, agg=algo.loss_agg, **norms
        )
        loss = loss + algo.vf_coef * vl
        stats["value_loss"] = vl.item()
        stats.update({k: float(v) for k, v in vm.items()})
    return loss, stats


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------


def train(cfg) -> str:
    """Run RL training for `cfg` (a resolved Config); returns the run folder.

    SIGTERM / SIGUSR1 (trainer/preempt.py) end the run after the current step with a checkpoint
    and raise Preempted; too many non-finite steps in a row (trainer/guard.py) raise NonFiniteStop."""
    preempt = Preemption().install()  # a signal while loading stops after the first step
    try:
        rt = build_runtime(cfg)
    except BaseException:
        preempt.restore()
        raise
    d = rt.dist
    if d.is_main:
        print(
            f"repro-train: {d.strategy} on {d.world} process(es), device {d.device}; "
            f"algo {cfg.algo.estimator}, RePro {'on' if cfg.repro.enabled else 'off'}; run folder {rt.out_dir}",
            flush=True,
        )
        print(rt.prompts.report.summary(), flush=True)
        clear_marker(rt.out_dir)
    try:
        stopped = run_steps(rt, preempt)
    finally:
        preempt.restore()
        rt.close()
    if stopped is not None:
        raise stopped
    return rt.out_dir


def run_steps(rt: Runtime, preempt: Preemption) -> Exception | None:
    """The steps from the resume point on; returns the exception that ends the run early, if any."""
    cfg, d = rt.cfg, rt.dist
    resume = resolve_resume(cfg.train.resume, cfg.train.output_dir, d)
    state = load_checkpoint(rt, resume) if resume else {}
    logger = RunLogger(cfg, rt.out_dir, state.get("wandb_id")) if d.is_main else NullLogger()
    bar = tqdm(
        total=cfg.train.steps,
        initial=rt.start_step,
        desc="train",
        unit="step",
        disable=not (d.is_main and cfg.log.progress),
        dynamic_ncols=True,
    )
    guard = NumericGuard(cfg.train.max_bad_steps, d, can_skip_update=d.strategy not in ("zero2", "zero3"))
    stopped = None
    for step in range(rt.start_step, cfg.train.steps):
        step_timing: dict[str, float] = {}
        with phase_timer(step_timing, "step_s"):
            batch = make_experience(rt, step)
            bad = guard.check_batch(batch)  # non-finite log-probs, J, advantages, ...: the step is not applied
            upd = update_phase(rt, batch, guard) if not bad else {}
        batch.timings.update(step_timing)
        metrics = step_metrics(rt, batch, upd)
        metrics.update(guard.end_step(step + 1, bad))
        if step == rt.start_step:  # the data check's counts, once per process
            metrics.update(rt.prompts.report.metrics())
        logger.log(step + 1, metrics, sample_rows(rt, batch, cfg.log.sample_rollouts) if d.is_main else [])
        bar.set_postfix(progress_postfix(metrics), refresh=False)  # shown by the update: one redraw per step
        bar.update(1)
        stopped = checkpoint_or_stop(rt, step + 1, preempt, guard, logger.wandb_id)
        if stopped is not None:
            break
    bar.close()
    logger.close()
    return stopped


def progress_postfix(metrics: dict) -> dict[str, str]:
    """The progress bar's statistics: reward, accuracy, mean length and, with RePro on, J at the last cut (the
    policy's confidence in the answer where its reasoning ends; it rises as reasoning gets productive)."""
    out = {
        "reward": f"{metrics['reward/mean']:.3f}",
        "acc": f"{metrics['accuracy']:.2f}",
        "len": f"{metrics['response_length/mean']:.0f}",
    }
    if "repro/J_last" in metrics:
        out["J"] = f"{metrics['repro/J_last']:.2f}"
    return out


def checkpoint_or_stop(
    rt: Runtime, done: int, preempt: Preemption, guard: NumericGuard, wandb_id: str | None
) -> Exception | None:
    """Save a checkpoint when one is due or the run must stop; the reason to stop, if any. Every rank
    agrees on the step to stop at; a signal during the last step needs no requeue."""
    cfg, d = rt.cfg, rt.dist
    stop = (preempt.agreed(d) and done < cfg.train.steps) or guard.stop
    path = None
    if stop or done == cfg.train.steps or (cfg.train.save_every and done % cfg.train.save_every == 0):
        path = save_checkpoint(rt, done, wandb_id)
    if not stop:
        return None
    if guard.stop:
        return guard.stop_error(path)
    if d.is_main:
        preempt.mark(rt.out_dir, done, path)
    return Preempted(done, path, preempt.name)
