"""Non-finite numbers: a step that produced them is not applied, and too many in a row stop the run.

    guard = NumericGuard(cfg.train.max_bad_steps, dist)
    bad = guard.check_batch(batch)                  # after the advantages: {where: count}, same on every rank
    upd = update_phase(rt, batch, guard) if not bad else {}
        # inside: guard.skip_update(loss_bad, grad_norm) -> zero the gradients, skip optimizer step
    guard.end_step(step, bad)                        # counts bad steps in a row; .stop says when to quit

What is checked where, the exception under DeepSpeed, and the stop (a checkpoint of the last good weights,
then NonFiniteStop): docs/reliability.md, section 3.
"""

from __future__ import annotations

import sys

import torch

BATCH_CHECKS = ("rewards", "log-probs", "ref log-probs", "values", "J", "advantages")
UPDATE_CHECKS = ("loss", "grad_norm")


class NonFiniteStop(RuntimeError):
    """Too many steps in a row had non-finite numbers."""


def _nonfinite(t: torch.Tensor | None, mask: torch.Tensor | None = None) -> int:
    if t is None:
        return 0
    t = t.detach()
    if mask is not None:
        t = t[mask.to(t.device)]
    return int((~torch.isfinite(t)).sum().item())


def batch_counts(batch) -> list[int]:
    """Non-finite values per BATCH_CHECKS entry on this rank."""
    m = batch.mask
    rep = batch.repro
    return [
        _nonfinite(batch.rewards),
        _nonfinite(batch.old_logprobs, m),
        _nonfinite(batch.ref_logprobs, m),
        _nonfinite(batch.values, m),
        _nonfinite(rep.J, rep.mask) if rep is not None else 0,
        _nonfinite(batch.advantages, m),
    ]


class NumericGuard:
    def __init__(self, max_bad_steps: int, dist, can_skip_update: bool = True):
        self.max_bad_steps = max_bad_steps
        self.dist = dist
        self.can_skip_update = can_skip_update
        self.in_row: list[tuple[int, dict]] = []  # (step, {where: count}) of the current run of bad steps
        self.update_bad: dict[str, int] = {}

    def check_batch(self, batch) -> dict[str, int]:
        """{where: global count} of non-finite values in the batch (empty when all are finite)."""
        self.update_bad = {}
        counts = torch.tensor(batch_counts(batch), dtype=torch.float64)
        counts = self.dist.sum(counts)  # as it is on one process
        return {w: int(c) for w, c in zip(BATCH_CHECKS, counts.tolist()) if c > 0}

    def skip_update(self, loss_bad: torch.Tensor | bool, grad_norm: torch.Tensor | float) -> bool:
        """At an optimizer step: True (on every rank) when its loss or gradient norm is not finite. Both may be
        device tensors: this is the update's one read of the device per optimizer step."""
        if not self.can_skip_update:  # DeepSpeed: stepped inside backward, its norm may be unknown (NaN)
            return False
        dev = self.dist.device
        norm = torch.as_tensor(grad_norm, dtype=torch.float64).to(dev)
        local = torch.stack([torch.as_tensor(loss_bad).to(dev).double(), (~torch.isfinite(norm)).double()])
        flags = self.dist.max(local).long().tolist()
        for where, f in zip(UPDATE_CHECKS, flags):
            if f:
                self.update_bad[where] = self.update_bad.get(where, 0) + 1
        return bool(any(flags))

    def end_step(self, step: int, batch_bad: dict[str, int]) -> dict[str, float]:
        """Record step `step` (1-based); returns its guard/ metrics. Sets .stop after too many bad ones."""
        bad = {**batch_bad, **self.update_bad}
        if not bad:
            self.in_row = []
            return {"guard/skipped_step": 0.0}
        self.in_row.append((step, bad))
        if self.dist.is_main:
            what = ", ".join(
                f"{w} ({n} value(s))" if w in BATCH_CHECKS else f"{w} ({n} optimizer step(s))" for w, n in bad.items()
            )
            print(
                f"repro-train: step {step}: non-finite {what}: not applied ({len(self.in_row)} bad step(s) in a row)",
                file=sys.stderr,
                flush=True,
            )
        return {"guard/skipped_step": 1.0, **{f"guard/nonfinite/{w}": float(n) for w, n in bad.items()}}

    @property
    def stop(self) -> bool:
        return self.max_bad_steps > 0 and len(self.in_row) >= self.max_bad_steps

    def stop_error(self, checkpoint: str) -> NonFiniteStop:
        first, last = self.in_row[0][0], self.in_row[-1][0]
        where = "; ".join(f"step {s}: {', '.join(sorted(b))}" for s, b in self.in_row)
        return NonFiniteStop(
            f"stopped: {len(self.in_row)} steps in a row ({first}-{last}) had non-finite numbers "
            f"(train.max_bad_steps = {self.max_bad_steps}) -- {where}. None of them was applied, so "
            f"{checkpoint} holds the weights after step {first - 1}. Look at the logged "
            "guard/nonfinite/* metrics; lower optim.lr, or check the reward functions and data"
        )


def reward_fault_metrics(rt) -> dict[str, float]:
    """reward/errors and reward/timeouts of this step, summed over ranks: rows a reward function failed on and
    that reward.on_error=skip scored None (under 'error' such a fault stops the run, so there is nothing to log)."""
    if rt.cfg.reward.on_error != "skip":
        return {}
    faults = rt.reward.take_faults()
    counts = rt.dist.sum(torch.tensor([faults["errors"], faults["timeouts"]], dtype=torch.float64))
    return {"reward/errors": float(counts[0]), "reward/timeouts": float(counts[1])}
