"""Step metrics (reduced over ranks) and where they go: a progress bar, metrics.jsonl, samples.jsonl,
wandb (offline when no key), TensorBoard (log.tensorboard). Other ranks get a `NullLogger`.

    metrics = step_metrics(rt, batch, update_stats)     # every metric of one step, identical on all ranks
    logger = RunLogger(cfg, out_dir, wandb_id) if main else NullLogger()
    logger.log(step, metrics, sample_rows(rt, batch, cfg.log.sample_rollouts))

Every metric name and its meaning: docs/algorithms.md, "Every metric a step logs".
"""

from __future__ import annotations

import json
import math
import os

import torch

from ..algos.correction import logprob_gap
from ..core.typed_config import ConfigError, to_dict
from ..eval.detectors import count_backtracks, count_rechecks
from .checkpoint import WriteFailed
from .shaping import shaping_metrics


class Meter:
    """Named (sum, count) pairs; `reduce` all-reduces them in one call and returns the means."""

    def __init__(self):
        self.sums: dict[str, list[float]] = {}
        self.maxes: dict[str, float] = {}

    def add(self, name: str, total: float, count: float) -> None:
        s = self.sums.setdefault(name, [0.0, 0.0])
        s[0] += float(total)
        s[1] += float(count)

    def mean_of(self, name: str, values: torch.Tensor) -> None:
        values = values.detach().double()
        self.add(name, values.sum().item(), values.numel())

    def max(self, name: str, value: float) -> None:
        self.maxes[name] = max(self.maxes.get(name, -math.inf), float(value))

    def reduce(self, dist) -> dict[str, float]:
        names = sorted(self.sums)
        t = torch.tensor([self.sums[n] for n in names], dtype=torch.float64).reshape(-1, 2)
        t = dist.sum(t) if names else t
        out = {n: (t[i, 0] / t[i, 1]).item() if t[i, 1] > 0 else float("nan") for i, n in enumerate(names)}
        if self.maxes:
            keys = sorted(self.maxes)
            mx = dist.max(torch.tensor([self.maxes[k] for k in keys], dtype=torch.float64))
            out.update({k: mx[i].item() for i, k in enumerate(keys)})
        return out


COUNT_METRICS = ("unscorable",)
SPLIT_LENGTHS = ("response_length/correct", "response_length/incorrect")
"""Left out of a step with no correct (or no incorrect) response on any rank."""


def step_metrics(rt, batch, update_stats: dict) -> dict[str, float]:
    """Every metric of one step, identical on all ranks."""
    m = Meter()
    mask = batch.mask
    B = mask.shape[0]
    lengths = mask.sum(-1).float()
    m.mean_of("reward/mean", batch.rewards)
    for name, vals in batch.reward_parts.items():
        m.mean_of(f"reward/{name}", vals.float())
    m.mean_of("accuracy", batch.correct.float())
    n_groups, counts = group_counts(batch.rewards, batch.correct, batch.group_ids)
    for name, n in counts.items():
        m.add(f"groups/{name}_frac", n, n_groups)
    m.mean_of("response_length/mean", lengths)
    m.max("response_length/max", lengths.max().item() if B else 0)
    ok = batch.correct.bool().to(lengths.device)
    m.add("response_length/correct", lengths[ok].sum().item(), ok.sum().item())  # nan (dropped) when none
    m.add("response_length/incorrect", lengths[~ok].sum().item(), (~ok).sum().item())
    shaping_metrics(m, batch)
    m.mean_of("truncated_frac", batch.truncated.float())
    thinking = [rt.response_format.thinking(t) for t in batch.texts]  # overthinking is counted in the thinking part
    m.add("behavior/rechecks", sum(count_rechecks(t) for t in thinking), len(thinking))
    m.add("behavior/backtracks", sum(count_backtracks(t) for t in thinking), len(thinking))
    m.add("unscorable", batch.unscorable, 1.0 / rt.dist.world)  # a count: sum over ranks
    if batch.mask_truncated:
        m.add("loss/excluded", batch.excluded.sum().item(), 1.0 / rt.dist.world)
    for k, v in batch.sampling.items():  # the same on every rank
        m.add(f"sampling/{k}", v, 1.0)
    tokens = mask.sum().item()
    m.add("adv/abs_mean", (batch.advantages.abs() * mask).sum().item(), tokens)
    if batch.values is not None:
        m.add("values/mean", (batch.values * mask).sum().item(), tokens)
    if batch.old_logprobs is not None:  # (absent when an on-policy step's update was not run: trainer/guard.py)
        old_logprob_metrics(m, batch, tokens)
    if batch.repro is not None:
        repro_metrics(m, batch, rt.dist.world)
    for k, v in batch.timings.items():
        m.max(f"time/{k}", v)
    out = m.reduce(rt.dist)
    out = {k: v for k, v in out.items() if not (k in SPLIT_LENGTHS and math.isnan(v))}
    for k, v in update_stats.items():
        out[k if k.startswith("time/") else ("time/update_s" if k == "update_s" else f"train/{k}")] = v
    return out


def old_logprob_metrics(m: Meter, batch, tokens: float) -> None:
    """The metrics of the old log-probs: entropy, KL to the reference, the engine's log-prob gap and IS weights."""
    mask = batch.mask
    m.add("policy/entropy", (batch.entropy * mask).sum().item(), tokens)
    if batch.ref_logprobs is not None:
        m.add("policy/kl_ref", ((batch.old_logprobs - batch.ref_logprobs) * mask).sum().item(), tokens)
    if batch.engine_logprobs is not None:
        gap_sum, gap_max = logprob_gap(batch.old_logprobs, batch.engine_logprobs, mask)
        m.add("rollout/logprob_gap/mean", gap_sum.item(), tokens)
        m.max("rollout/logprob_gap/max", gap_max.item())
        for k, v in batch.is_stats.items():
            m.mean_of(f"rollout/is_{k}", v.reshape(1))


def group_counts(rewards: torch.Tensor, correct: torch.Tensor, group_ids: torch.Tensor) -> tuple[int, dict[str, int]]:
    """(number of groups, {"zero_std": ..., "all_correct": ..., "all_wrong": ...}) over the (B,) rows
    of this rank; a group is the rows sharing a group id. zero_std: every reward of the group equal,
    so GRPO's, RLOO's and REINFORCE++-baseline's advantages are 0 for all of it."""
    groups: dict[int, list[tuple[float, bool]]] = {}
    for g, r, c in zip(group_ids.tolist(), rewards.tolist(), correct.bool().tolist()):
        groups.setdefault(g, []).append((r, c))
    counts = {"zero_std": 0, "all_correct": 0, "all_wrong": 0}
    for rows in groups.values():
        counts["zero_std"] += all(r == rows[0][0] for r, _ in rows)
        counts["all_correct"] += all(c for _, c in rows)
        counts["all_wrong"] += not any(c for _, c in rows)
    return len(groups), counts


def repro_metrics(m: Meter, batch, world: int) -> None:
    rep = batch.repro
    valid = rep.mask
    scored = rep.scored
    jb = rep.J_b[~torch.isnan(rep.J_b)]
    m.mean_of("repro/J_b", jb)
    if scored.any():
        last = valid.sum(-1)[scored] - 1
        rows = scored.nonzero(as_tuple=True)[0]
        J_last = rep.J[rows, last]
        m.mean_of("repro/J_last", J_last)
        m.mean_of("repro/J_gain", J_last - rep.J_b[rows])
        m.mean_of("repro/J_monotone_frac", (rep.S_stab[rows, last] == 1.0).double())
    for name, t in (("S_magn", rep.S_magn), ("S_stab", rep.S_stab), ("S", rep.S), ("r", rep.r)):
        m.mean_of(f"repro/{name}", t[valid])
    m.mean_of("repro/r_pos_frac", (rep.r[valid] > 0).double())
    m.add("repro/process_adv_abs", (rep.process_adv.abs() * batch.mask.cpu()).sum().item(), batch.mask.sum().item())
    m.mean_of("repro/segments_per_rollout", torch.tensor(rep.n_segments, dtype=torch.float64))
    m.mean_of("repro/cuts_per_rollout", valid.sum(-1).double())
    m.mean_of("repro/scored_frac", scored.double())
    for reason, n in rep.skipped.items():
        m.add(f"repro/skipped/{reason}", n, 1.0 / world)
    if rep.mc is not None:
        mc_metrics(m, rep)


def mc_metrics(m: Meter, rep) -> None:
    """The Monte-Carlo values behind the step rewards (process.source: mc_value) and what they cost."""
    scored = rep.scored  # the same names on every rank, whatever it scored (the reduce is one tensor)
    rows = scored.nonzero(as_tuple=True)[0]
    m.mean_of("repro/mc/V_b", rep.mc.V_b[scored])
    m.mean_of("repro/mc/V_last", rep.mc.V[rows, rep.mask.sum(-1)[scored] - 1])
    m.add("repro/mc/prefixes", rep.mc.prefixes, scored.sum().item())
    m.add("repro/mc/tokens", rep.mc.tokens, scored.sum().item())


SAMPLE_IDS = ("prompt_ids", "response_ids")
"""Token ids of a sample row: in samples.jsonl (so `repro-train inspect --run` scores exactly these tokens), not in
wandb's table."""


def sample_rows(rt, batch, k: int) -> list[dict]:
    """The first k rollouts of this rank, with their RePro view: J_b, J, r and the normalised r' exactly as the
    step computed them (unrounded), at the cuts (response-token indices)."""
    rows = []
    for i in range(min(k, batch.mask.shape[0])):
        n_tok = int(batch.mask[i].sum())
        row = {
            "prompt": rt.prompts.prompts[batch.prompt_index[i]],
            "response": batch.texts[i],
            "answer": batch.answers[i],
            "reward": round(batch.rewards[i].item(), 4),
            "correct": bool(batch.correct[i]),
            "tokens": n_tok,
            "prompt_ids": list(rt.prompts.prompt_ids[batch.prompt_index[i]]),
            "response_ids": batch.seqs.response_ids[i, :n_tok].tolist(),
        }
        if batch.repro is not None:
            n = int(batch.repro.mask[i].sum())
            jb = batch.repro.J_b[i].item()
            row.update(
                {
                    "J_b": None if math.isnan(jb) else jb,
                    "J": batch.repro.J[i, :n].tolist(),
                    "cuts": batch.repro.cuts[i, :n].tolist(),
                    "r": batch.repro.r[i, :n].tolist(),
                    "r_norm": batch.repro.r_norm[i, :n].tolist(),
                    "skipped": batch.plan.skip[i],
                }
            )
            if batch.repro.mc is not None:  # process.source mc_value: r above is V's increment
                row["V"] = [round(v, 4) for v in batch.repro.mc.V[i, :n].tolist()]
        rows.append(row)
    return rows


class NullLogger:
    """What non-main ranks log to."""

    wandb_id = None

    def log(self, step: int, metrics: dict, samples: list[dict]) -> None:
        pass

    def close(self) -> None:
        pass


class RunLogger:
    """metrics.jsonl and samples.jsonl in the run folder, wandb (offline without a key), and with log.tensorboard
    the same scalars as TensorBoard events in <run folder>/tensorboard."""

    def __init__(self, cfg, out_dir: str, resume_id: str | None = None):
        self.metrics_fh = _open_log(os.path.join(out_dir, "metrics.jsonl"))
        self.samples_fh = _open_log(os.path.join(out_dir, "samples.jsonl"))
        self.run = None
        self.wandb_id = None
        self.tensorboard = tensorboard_writer(out_dir) if cfg.log.tensorboard else None
        if cfg.log.wandb and cfg.log.wandb_mode != "disabled":
            import wandb

            mode = cfg.log.wandb_mode
            if mode == "auto":
                mode = "online" if (os.environ.get("WANDB_API_KEY") or _netrc_has_wandb()) else "offline"
            if os.environ.get("WANDB_MODE"):
                mode = os.environ["WANDB_MODE"]
            self.run = wandb.init(
                project=cfg.log.project,
                name=cfg.log.run_name or os.path.basename(os.path.abspath(out_dir)),
                dir=out_dir,
                mode=mode,
                config=to_dict(cfg),
                id=resume_id,
                resume="allow" if resume_id else None,
                settings=wandb.Settings(silent=True),  # its banner and end-of-run summary: the line below instead
            )
            self.wandb_id = self.run.id
            folder = os.path.dirname(self.run.dir)  # offline-run-*/ (run.dir is its files/)
            where = self.run.url if mode == "online" else f"offline; to upload: wandb sync {folder}"
            print(f"wandb: run {self.run.id}, {where}", flush=True)

    def log(self, step: int, metrics: dict, samples: list[dict]) -> None:
        _write_log(self.metrics_fh, step, json.dumps({"step": step, **metrics}) + "\n")
        if self.tensorboard is not None:
            for k, v in metrics.items():
                self.tensorboard.add_scalar(k, v, step)
        _write_log(self.samples_fh, step, "".join(json.dumps({"step": step, **s}) + "\n" for s in samples))
        if self.run is not None:
            import wandb

            payload = dict(metrics)
            if samples:
                cols = [c for c in samples[0] if c not in SAMPLE_IDS]
                payload["samples"] = wandb.Table(
                    columns=cols,
                    data=[[json.dumps(s[c]) if isinstance(s[c], list) else s[c] for c in cols] for s in samples],
                )
            self.run.log(payload, step=step)

    def close(self) -> None:
        self.metrics_fh.close()
        self.samples_fh.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.run is not None:
            self.run.finish()


def tensorboard_writer(out_dir: str):
    """A TensorBoard SummaryWriter on <out_dir>/tensorboard (the `tensorboard` package, a dependency)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError(
            f"'log.tensorboard' needs the tensorboard package ({e}): pip install tensorboard, "
            "or set log.tensorboard=false"
        ) from None
    return SummaryWriter(log_dir=os.path.join(out_dir, "tensorboard"))


def _open_log(path: str):
    try:
        return open(path, "a", buffering=1)
    except OSError as e:
        raise WriteFailed(f"could not open {path} to log the run: {e.strerror or e}") from None


def _write_log(fh, step: int, text: str) -> None:
    """Append (line-buffered: flushed at each newline); a failure names the file and why (WriteFailed)."""
    try:
        fh.write(text)
        fh.flush()
    except OSError as e:
        raise WriteFailed(
            f"could not write step {step} to {fh.name}: {e.strerror or e}. The run stopped; a resume cuts the file "
            "back to the checkpoint's step"
        ) from None


def _netrc_has_wandb() -> bool:
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False
