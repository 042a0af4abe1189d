"""Dynamic sampling that knows RePro: prompt groups that carry no learning signal are replaced by fresh prompts.

    batch = refill(rt, batch, step, more_experience)    # make_experience, after the forwards, before the advantages

`rollout.dynamic_sampling` (DAPO, arXiv:2503.14476, section 3.2): `outcome` drops a group whose G outcome rewards
are all equal; `signal` only when RePro's process advantage (alpha * A_tilde) is zero on every token of the group
too, since under RePro an all-correct group still carries a process signal. Each of the step's slots is refilled
for at most rollout.refill_rounds rounds and keeps its last candidate; the batch is put together in slot order.
The rounds, how ranks agree, exact resume and the metrics: docs/algorithms.md, "Dynamic sampling that knows RePro".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from ..algos.correction import is_weights
from ..core.seeds import mix_seed
from ..models.forward import Sequences, pack

MODES = ("off", "outcome", "signal")
Draw = tuple[list[int], list[int], list[int] | None]
"""Prompts to sample: (dataset indices, slots = group ids, per-prompt seeds or None)."""
B = TypeVar("B")


def groups_without_signal(
    mode: str, rewards: torch.Tensor, group_ids: torch.Tensor, process_adv: torch.Tensor | None = None
) -> list[int]:
    """The ids of the groups `mode` drops, ascending. rewards (N,), group_ids (N,), process_adv (N, T) or None.

    outcome: max_g rewards == min_g rewards (a group-relative estimator's advantage is then 0 on the group).
    signal:  that, and process_adv == 0 on every token of the group's rows (None: no process advantage)."""
    if mode not in MODES:
        raise ValueError(f"unknown dynamic_sampling mode {mode!r}; choices: {', '.join(MODES)}")
    if mode == "off":
        return []
    out = []
    for g in sorted(set(group_ids.tolist())):
        rows = group_ids == g
        r = rewards[rows.to(rewards.device)]
        no_signal = bool(r.max() == r.min())
        if mode == "signal" and process_adv is not None:
            no_signal = no_signal and not bool(process_adv[rows.to(process_adv.device)].ne(0).any())
        if no_signal:
            out.append(g)
    return out


def refill_slots(
    n_slots: int,
    mine: Sequence[int],
    first: dict[int, bool],
    take: Callable[[int], list[int]],
    run_round: Callable[[int, dict[int, int], list[int]], dict[int, bool]],
    agree: Callable[[list[int]], list[int]],
    cap: int,
) -> tuple[dict[int, int], dict[str, int]]:
    """Steps 2-4 of the module docstring for the rank that owns the slots `mine`, with the experience abstracted.

    first: {slot: has signal} of round 0 for `mine`; take(k): the sampler's next k prompt indices (the same on every
    rank); run_round(r, {slot: prompt} of this rank, the (n_slots,) 0/1 mask of slots being refilled) -> {slot: has
    signal} of the new candidates; agree(flags): the element-wise sum over ranks (identity on one process).
    Returns ({slot: round of its final candidate}, {dropped, rounds, prompts, unfilled}) (counts over all ranks)."""
    latest = {s: 0 for s in mine}
    signal = dict(first)
    stats = {"dropped": 0, "rounds": 0, "prompts": 0, "unfilled": 0}
    for rnd in range(1, cap + 2):
        refilling = agree([int(s in latest and not signal[s]) for s in range(n_slots)])
        missing = [s for s in range(n_slots) if refilling[s]]
        stats["dropped"] += len(missing)
        if not missing or rnd > cap:
            stats["unfilled"] = len(missing)
            break
        drawn = dict(zip(missing, take(len(missing))))  # slot order: the same assignment on every rank
        stats["rounds"] += 1
        stats["prompts"] += len(missing)
        assign = {s: i for s, i in drawn.items() if s in latest}
        signal.update(run_round(rnd, assign, refilling))
        latest.update({s: rnd for s in assign})
    return latest, stats


# ----------------------------------------------------------------------------------------------
# the trainer's refill
# ----------------------------------------------------------------------------------------------


def refill(rt, batch: B, step: int, more: Callable[[Any, int, Draw], B]) -> B:
    """The step's batch with its groups without signal replaced (rollout.dynamic_sampling); `batch` itself when off.

    `more(rt, step, draw)` runs rollout -> shapers -> forwards for the draw (experience.more_experience)."""
    cfg, d = rt.cfg, rt.dist
    if cfg.rollout.dynamic_sampling == "off":
        return batch
    P = cfg.rollout.prompts_per_step
    per_rank = P // d.world
    mine = list(range(d.rank * per_rank, (d.rank + 1) * per_rank))
    rounds = {0: batch}

    def run_round(rnd: int, assign: dict[int, int], refilling: list[int]) -> dict[int, bool]:
        draw = _round_draw(rt, step, rnd, assign, refilling)
        if not draw[0]:  # nothing to sample on this rank, and no collective to match
            return {}
        rounds[rnd] = more(rt, step, draw)
        return _judge(rt, rounds[rnd], list(assign))

    def agree(flags: list[int]) -> list[int]:
        return d.sum(torch.tensor(flags, dtype=torch.long)).tolist()

    latest, stats = refill_slots(
        P, mine, _judge(rt, batch, mine), rt.sampler.take, run_round, agree, cfg.rollout.refill_rounds
    )
    out = batch
    if any(latest.values()):  # this rank refilled a slot: put its batch together from the rounds' rows
        out = assemble([(rounds[latest[s]], _rows_of(rounds[latest[s]], s)) for s in mine], rt.pad_id)
        if out.engine_logprobs is not None:  # the correction's metrics are over the kept rows
            out.is_weights, out.is_stats = is_weights(
                out.old_logprobs, out.engine_logprobs, out.mask, cfg.rollout.is_correction, cfg.rollout.is_cap
            )
    out.sampling = {k: float(v) for k, v in stats.items()}
    out.sampling["prompts"] += P  # round 0's draw
    return out


def _judge(rt, batch, slots: list[int]) -> dict[int, bool]:
    """{slot: has signal} for `slots` of `batch`. The process advantage is computed on this batch alone (no
    collective): with process_norm 'group' (the default), 'group_mean' or 'none' it is the group's A_tilde in the
    final batch; with 'batch' the pool differs, and a scored rollout's A_tilde is 0 only by coincidence in either."""
    mode = rt.cfg.rollout.dynamic_sampling
    process = None
    if mode == "signal" and rt.cfg.repro.alpha != 0:
        process = rt.repro.advantages(batch.plan, batch.probes, batch.group_ids, batch.mask.shape[1]).process_adv
    dropped = set(groups_without_signal(mode, batch.rewards, batch.group_ids, process))
    return {s: s not in dropped for s in slots}


def _round_draw(rt, step: int, rnd: int, assign: dict[int, int], refilling: list[int]) -> Draw:
    """This rank's prompts of refill round `rnd`; padded with copies of prompt 0 (negative slots) to the busiest
    rank's count where generation or forwards are collectives (`lockstep`)."""
    cfg, d = rt.cfg, rt.dist
    slots = sorted(assign)
    idx = [assign[s] for s in slots]
    if lockstep(rt):
        per_rank = cfg.rollout.prompts_per_step // d.world
        busiest = max(sum(refilling[r * per_rank : (r + 1) * per_rank]) for r in range(d.world))
        pad = list(range(-1, -1 - (busiest - len(slots)), -1))
        slots, idx = slots + pad, idx + [0] * len(pad)
    seeds = [mix_seed(cfg.train.seed, step, s, rnd) for s in slots] if cfg.rollout.per_prompt_seed else None
    if seeds is None:
        torch.manual_seed(mix_seed(cfg.train.seed, step, d.rank, 7, rnd))
    return idx, slots, seeds


def lockstep(rt) -> bool:
    """Every rank must make as many generate and forward calls: ZeRO-3 and FSDP2 gather weights in each, and a
    tensor-parallel vLLM engine gathers its ranks' prompts. (Under DDP and ZeRO-2 a no-grad forward and the `hf`
    engine's generate talk to no other rank.)"""
    ro = rt.cfg.rollout
    return rt.dist.sharded or (ro.engine == "vllm" and ro.vllm.tensor_parallel_size > 1)


def _rows_of(batch, slot: int) -> list[int]:
    return (batch.group_ids == slot).nonzero(as_tuple=True)[0].tolist()


# ----------------------------------------------------------------------------------------------
# putting a batch together from the rows of several
# ----------------------------------------------------------------------------------------------

SUMMED = ("timings", "unscorable")
"""Per-batch totals: added over the distinct batches the parts come from (every candidate was generated)."""


def assemble(parts: list[tuple[B, list[int]]], pad_id: int) -> B:
    """One batch of the rows `rows` of each (batch, rows) part, in order: the prompts and responses re-packed
    (prompts left-padded, responses right-padded to the new width R), every per-row field taken along: (B,)
    tensors, (B, R_part) tensors cut or zero-padded to R, per-row lists, and dicts and dataclasses of those.
    A field of any other kind must be equal in every part; `is_stats` comes back empty (recompute it)."""
    first = parts[0][0]
    distinct = list({id(b): b for b, _ in parts}.values())
    seqs = _pack_rows([(b.seqs, rows) for b, rows in parts], pad_id)
    R = seqs.response_mask.shape[1]
    shapes = [(b.mask.shape[0], b.mask.shape[1]) for b, _ in parts]
    rows = [r for _, r in parts]
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        values = [getattr(b, f.name) for b, _ in parts]
        if f.name == "seqs":
            fields[f.name] = seqs
        elif f.name == "is_stats":
            fields[f.name] = {}
        elif f.name == "timings":
            fields[f.name] = {k: sum(b.timings.get(k, 0.0) for b in distinct) for b in distinct for k in b.timings}
        elif f.name in SUMMED:
            fields[f.name] = sum(getattr(b, f.name) for b in distinct)
        else:
            fields[f.name] = _merge(f.name, values, rows, shapes, R)
    return type(first)(**fields)


def _merge(name: str, values: list, rows: list[list[int]], shapes: list[tuple[int, int]], R: int):
    """`values` (one per part) merged row-wise; see `assemble`."""
    v0 = values[0]
    if isinstance(v0, torch.Tensor):
        if any(
            v.dim() not in (1, 2) or v.shape[0] != n or (v.dim() == 2 and v.shape[1] != w)
            for v, (n, w) in zip(values, shapes)
        ):
            raise TypeError(
                f"batch field {name!r}: expected (B,) or (B, R) tensors, got {[tuple(v.shape) for v in values]}"
            )
        taken = [v[torch.as_tensor(r, dtype=torch.long, device=v.device)] for v, r in zip(values, rows)]
        return torch.cat([_fit(t, R) if t.dim() == 2 else t for t in taken])
    if isinstance(v0, list) and not all(len(v) == 0 for v in values):
        if any(len(v) != n for v, (n, _) in zip(values, shapes)):
            raise TypeError(f"batch field {name!r}: a list that is not one entry per row")
        return [v[i] for v, r in zip(values, rows) for i in r]
    if isinstance(v0, dict):
        return {k: _merge(f"{name}.{k}", [v[k] for v in values], rows, shapes, R) for k in v0}
    if dataclasses.is_dataclass(v0) and not isinstance(v0, type):
        return type(v0)(
            **{
                f.name: _merge(f"{name}.{f.name}", [getattr(v, f.name) for v in values], rows, shapes, R)
                for f in dataclasses.fields(v0)
            }
        )
    if any(v != v0 for v in values):  # None, empty lists, step numbers, flags: the same for the whole step
        raise TypeError(f"batch field {name!r} differs between the batches being put together: {values}")
    return v0


def _fit(t: torch.Tensor, R: int) -> torch.Tensor:
    """(n, W) -> (n, R): cut, or zero-padded on the right (response columns are left-aligned)."""
    if t.shape[1] >= R:
        return t[:, :R]
    return torch.cat([t, t.new_zeros(t.shape[0], R - t.shape[1])], dim=1)


def _pack_rows(parts: list[tuple[Sequences, list[int]]], pad_id: int) -> Sequences:
    """Rows of several packed batches re-packed as one (prompt tokens and response tokens of each row)."""
    prompts, responses = [], []
    for s, rows in parts:
        P = s.prompt_width
        for i in rows:
            prompts.append(s.input_ids[i, :P][s.attention_mask[i, :P].bool()].tolist())
            responses.append(s.response_ids[i][s.response_mask[i]].tolist())
    return pack(prompts, responses, pad_id, parts[0][0].input_ids.device)
