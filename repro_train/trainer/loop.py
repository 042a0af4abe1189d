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

from ..algos.correction import is_weights
from ..algos.kl import kl_penalty
from ..algos.losses import agg_loss, get_policy_loss, value_loss
from ..core.timing import phase_timer
from ..models.forward import forward_logprobs, index_on
from ..rewards.outcome import RewardInterrupted
from .batching import plan_micro_batches
from .checkpoint import save_checkpoint
from .dist import clip_grad_norm
from .experience import Batch, make_experience, scatter_rows
from .guard import NumericGuard, reward_fault_metrics
from .metrics import NullLogger, RunLogger, sample_rows, step_metrics
from .preempt import Preempted, Preemption, abandoned_step
from .run_folder import RunFolder, open_run_folder
from .runtime import Runtime, build_runtime

# ----------------------------------------------------------------------------------------------
# update
# ----------------------------------------------------------------------------------------------


def update_phase(rt: Runtime, batch: Batch, guard=None) -> dict:
    """algo.update_epochs passes; each mini-batch is one optimizer step accumulated over micro-batches.
    `guard` (trainer/guard.py) skips an optimizer step whose loss or gradient norm is not finite. Statistics stay
    on the device until the end of the phase (one read). On an on-policy step the update's own detached log-probs
    and entropies become batch.old_logprobs / batch.entropy (metrics), and the engine-mismatch weights are computed
    here, a micro-batch at a time."""
    cfg, d, algo = rt.cfg, rt.dist, rt.cfg.algo
    timings: dict[str, float] = {}
    with phase_timer(timings, "update_s", d.device):
        B, R = batch.mask.shape
        mini = (algo.mini_batch_size or cfg.rollout.prompts_per_step * cfg.rollout.group_size) // d.world
        if rt.on_policy:
            batch.old_logprobs = torch.zeros(B, R, device=d.device)
            batch.entropy = torch.zeros(B, R, device=d.device)
        stats = UpdateStats()
        n_steps = 0
        rt.model.train()
        for _ in range(algo.update_epochs):
            for m0 in range(0, B, mini):
                optimizer_step(rt, batch, list(range(m0, m0 + mini)), stats, guard)
                n_steps += 1
        out = stats.result(d, n_steps)
        if rt.on_policy and batch.engine_logprobs is not None:
            batch.is_stats = {k[3:]: torch.tensor(out.pop(k)) for k in list(out) if k.startswith("is/")}
    return {**out, **timings}


class UpdateStats:
    """The update's statistics, accumulated on the device: loss terms summed (each is a micro-batch's share of the
    global mean), the others averaged over micro-batches on this rank; host values (the learning rate) kept apart."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.means: dict[str, list[torch.Tensor]] = {}
        self.host: dict[str, list[float]] = {}

    def add(self, stats: dict) -> None:
        for k, v in stats.items():
            if not isinstance(v, torch.Tensor):
                self.host.setdefault(k, []).append(float(v))
            elif k in LOSS_TERMS:
                self.sums[k] = self.sums.get(k, 0) + v.detach().double()
            else:
                self.means.setdefault(k, []).append(v.detach().double().reshape(()))

    def result(self, d, n_steps: int) -> dict[str, float]:
        """Loss terms: the global mean per optimizer step; the rest: this rank's mean. One read of the device."""
        out = {k: sum(v) / len(v) for k, v in self.host.items()}
        s_keys, m_keys = sorted(self.sums), sorted(self.means)
        if s_keys:
            sums = d.sum(torch.stack([self.sums[k] for k in s_keys]) / n_steps)
            out.update(zip(s_keys, sums.tolist()))
        if m_keys:
            means = torch.stack([torch.stack(self.means[k]).mean() for k in m_keys])
            out.update(zip(m_keys, means.tolist()))
        return out


def optimizer_step(rt: Runtime, batch: Batch, rows_m: list[int], stats: UpdateStats, guard=None) -> None:
    """One optimizer step on the mini-batch `rows_m`, gradients accumulated over its micro-batches
    (`batching.plan_micro_batches`); its statistics go to `stats`. The step is not applied when `guard` finds its
    loss or gradient norm not finite."""
    cfg, d, algo = rt.cfg, rt.dist, rt.cfg.algo
    plens, rlens = batch.seqs.host_lengths()
    excluded = batch.excluded.tolist()  # algo.mask_truncated's excluded rows count in no normaliser
    tokens = [0 if excluded[i] else rlens[i] for i in rows_m]
    counts = d.sum(torch.tensor([float(sum(tokens)), float(sum(n > 0 for n in tokens))], dtype=torch.float64))
    norms = dict(
        global_tokens=max(counts[0].item(), 1.0),  # (1: no row left, the loss is 0)
        global_seqs=max(counts[1].item(), 1.0),
        max_len=cfg.rollout.max_new_tokens,
    )
    agree = d.max_int if d.sharded else None  # (DDP: each rank syncs at its own last micro-batch)
    plan = plan_micro_batches(
        [plens[i] for i in rows_m],
        [rlens[i] for i in rows_m],
        algo.micro_batch_size,
        algo.max_tokens_per_micro_batch,
        agree,
    )
    micro = [[rows_m[j] for j in group] for group in plan]
    rt.acc.gradient_accumulation_steps = len(micro)  # this step's micro-batches (their number may vary by step)
    rt.acc.step = 0
    bad = torch.zeros((), dtype=torch.bool, device=d.device)
    applied = True
    for rows in micro:
        with rt.acc.accumulate(rt.model):
            loss, mstats = micro_loss(rt, batch, rows, norms)
            # The loss is already a share of the global mean; the wrappers average over
            # ranks and accelerate divides by the accumulation steps, so undo both.
            with d.timed("backward (gradient all-reduce)"):
                rt.acc.backward(loss * d.world * len(micro))
            bad = bad | ~torch.isfinite(loss.detach())
            if rt.acc.sync_gradients:
                mstats["grad_norm"] = clip_grad_norm(rt.acc, rt.model, d.strategy, cfg.optim.grad_clip)
                mstats["lr"] = rt.scheduler.get_last_lr()[0]
                applied = guard is None or not guard.skip_update(bad, mstats["grad_norm"])
            if applied:
                rt.optimizer.step()
            rt.optimizer.zero_grad(set_to_none=True)
        stats.add(mstats)
    if applied:
        rt.scheduler.step()
        rt.optimizer_steps += 1  # also the weights' version the rollout engine follows


# Loss terms are per-micro-batch shares of the global mean: summed over micro-batches and ranks.
LOSS_TERMS = ("pg_loss", "kl", "entropy_bonus", "value_loss")


def micro_loss(rt: Runtime, batch: Batch, rows: list[int], norms: dict) -> tuple[torch.Tensor, dict]:
    """Policy loss (+ KL loss, - entropy bonus, + value loss) of one micro-batch; its statistics as device
    tensors."""
    cfg, algo = rt.cfg, rt.cfg.algo
    seqs = batch.seqs.select(rows)
    Rm = seqs.response_mask.shape[1]
    idx = index_on(rows, rt.dist.device)
    sl = lambda t: t[idx, :Rm]  # noqa: E731 - this micro-batch's rows, trimmed like seqs
    mask = sl(batch.loss_mask) if batch.mask_truncated else seqs.response_mask
    want_entropy = algo.entropy_coef > 0
    out = forward_logprobs(
        rt.policy,
        seqs,
        cfg.rollout.temperature,
        with_entropy=want_entropy or rt.on_policy,
        entropy_grad=want_entropy,
        head=rt.head,
        **({"with_values": True} if rt.has_critic else {}),
    )
    old, isw, stats = old_logprobs_of(rt, batch, idx, out, mask, sl)
    pg, m = get_policy_loss(algo.policy_loss)(
        out.logprobs,
        old,
        sl(batch.advantages),
        mask,
        clip_low=algo.clip_low,
        clip_high=algo.clip_high,
        dual_clip=algo.dual_clip,
        agg=algo.loss_agg,
        is_weights=isw,
        **norms,
    )
    loss = pg
    stats.update({"pg_loss": pg.detach(), **m})
    if rt.ref is not None:
        kl = kl_penalty(out.logprobs, sl(batch.ref_logprobs), algo.kl_estimator)
        kl_term = agg_loss(kl, mask, algo.loss_agg, **norms)
        stats["kl"] = kl_term.detach()
        if algo.kl_mode == "loss":
            loss = loss + algo.kl_coef * kl_term
    if want_entropy:
        ent = agg_loss(out.entropy, mask, algo.loss_agg, **norms)
        loss = loss - algo.entropy_coef * ent
        stats["entropy_bonus"] = ent.detach()
    if rt.has_critic:
        vl, vm = value_loss(
            out.values, sl(batch.values), sl(batch.returns), mask, clip=algo.value_clip, agg=algo.loss_agg, **norms
        )
        loss = loss + algo.vf_coef * vl
        stats["value_loss"] = vl.detach()
        stats.update(vm)
    return loss, stats


def old_logprobs_of(rt: Runtime, batch: Batch, idx: torch.Tensor, out, mask, sl) -> tuple:
    """(old log-probs, importance weights or None, their statistics) of a micro-batch. On-policy: the update's own
    detached log-probs, also written to batch.old_logprobs / batch.entropy for the metrics, and the engine-mismatch
    weights computed from them (algos/correction.py); otherwise the forward phase's."""
    if not rt.on_policy:
        return sl(batch.old_logprobs), (None if batch.is_weights is None else sl(batch.is_weights)), {}
    old = out.logprobs.detach()
    scatter_rows(batch.old_logprobs, idx, old)
    scatter_rows(batch.entropy, idx, out.entropy.detach())
    if batch.engine_logprobs is None:
        return old, None, {}
    ro = rt.cfg.rollout
    w, st = is_weights(old, sl(batch.engine_logprobs), mask, ro.is_correction, ro.is_cap)
    return old, w, {f"is/{k}": v for k, v in st.items()}


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------


def train(cfg) -> str:
    """Run RL training for `cfg` (a resolved Config); returns the run folder.

    SIGTERM / SIGUSR1 / SIGINT (trainer/preempt.py) and train.time_limit_s end the run after the current step with
    a checkpoint and raise Preempted; too many non-finite steps in a row (trainer/guard.py) raise NonFiniteStop. The
    run folder's lock is held throughout (trainer/run_folder.py)."""
    preempt = Preemption(time_limit_s=cfg.train.time_limit_s).install()  # a signal while loading: stop after step 1
    folder = None
    try:
        folder = open_run_folder(cfg)  # before any model loads: the lock, another run's folder, a refused resume
        rt = build_runtime(cfg)
    except BaseException:
        preempt.restore()
        if folder is not None:
            folder.close()
        raise
    rt.reward.should_stop = preempt.requested  # a reward function still running when a stop is asked ends
    d = rt.dist
    if d.is_main:
        print(
            f"repro-train: {d.strategy} on {d.world} process(es), device {d.device}; "
            f"algo {cfg.algo.estimator}, RePro {'on' if cfg.repro.enabled else 'off'}; run folder {rt.out_dir}",
            flush=True,
        )
        print(rt.prompts.report.summary(), flush=True)
    try:
        stopped = run_steps(rt, preempt, folder)
    finally:
        preempt.restore()
        rt.close()
        folder.close()
    if stopped is not None:
        raise stopped
    return rt.out_dir


def run_steps(rt: Runtime, preempt: Preemption, folder: RunFolder) -> Exception | None:
    """The steps from the resume point on; returns the exception that ends the run early, if any."""
    cfg, d = rt.cfg, rt.dist
    state = folder.load(rt)  # the checkpoint restored; the folder prepared (logs cut back to its step)
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
            try:
                batch = make_experience(rt, step)
            except RewardInterrupted as e:  # a stop while a reward function ran: the step is abandoned
                stopped = abandoned_step(rt, step, preempt, e)
                break
            bad = guard.check_batch(batch)  # non-finite log-probs, J, advantages, ...: the step is not applied
            upd = update_phase(rt, batch, guard) if not bad else {}
        batch.timings.update(step_timing)
        metrics = step_metrics(rt, batch, upd)
        metrics.update(guard.end_step(step + 1, bad))
        if step == rt.start_step:  # the data check's counts, once per process
            metrics.update(rt.prompts.report.metrics())
        metrics.update(reward_fault_metrics(rt))  # rows scored None by reward.on_error=skip
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
    if d.is_main and preempt.requeue:  # Ctrl-C asks for no requeue
        preempt.mark(rt.out_dir, done, path)
    return Preempted(done, path, preempt.name)
