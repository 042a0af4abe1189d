"""Magnitude, stability, process score, process reward, normalisation and token advantages
(spec sections 6-12, docs/repro.md). Pure tensor functions, batched over rollouts.

    # N rollouts, M = most cut points of any rollout, T = response length; J_b (N,) = J(0), with no reasoning;
    # J, mask, cuts (N, M): J_j = J(c_j) at the selected cut points c_j, right-padded (any value where mask is False)
    S_magn = magnitude(J, J_b, eps, magnitude_form)
    S_stab = stability(J, J_b, ema)
    S = process_score(S_magn, S_stab, w, stability_mode)
    r = process_rewards(S, mask, w, first_step_baseline, stability_mode)
    r_norm = normalize_rewards(r, mask, group_ids, mode, eps, std=norm_std, extra_zero=norm_extra_zero)
    A_tilde = token_process_advantages(r_norm, cuts, mask, T)       # (N, T)
    A_hat = fold(A, A_tilde, alpha, apply_mask)                     # every output is zero where masked
"""

from __future__ import annotations

import math

import torch

from ..algos.moments import centre_by_sums, divide_keep_zero, moment_sums, pool_index, pool_moments

# S_magn of a prefix that does no better than no reasoning (J = J_b): 1 - tanh(1).
NO_PROGRESS_MAGNITUDE = 1.0 - math.tanh(1.0)


def magnitude(J: torch.Tensor, J_b: torch.Tensor, eps: float = 1e-6, form: str = "ratio") -> torch.Tensor:
    """S_magn_j = 1 - tanh(J_j / min(J_b, -eps)), in (0, 1] (spec 6). (N, M)

    form 'nll' is the authors' code's formula on NLLs v = -J: tanh((v_b - v) / (v_b + eps) - 1) + 1
    = 1 - tanh((v + eps) / (v_b + eps)); the two differ by O(eps)."""
    if form == "nll":
        v, v_b = -J, -J_b.unsqueeze(-1)  # NLLs (N, M), (N, 1)
        return torch.tanh((v_b - v) / (v_b + eps) - 1.0) + 1.0
    if form != "ratio":
        raise ValueError(f"magnitude_form must be 'ratio' or 'nll', got {form!r}")
    denom = torch.clamp(J_b, max=-eps).unsqueeze(-1)  # (N, 1)
    ratio = J / denom
    # J = J_b = -inf (the answer impossible with and without the prefix) is no progress, J / J_b = 1,
    # not inf / inf = NaN.
    ratio = torch.where(torch.isinf(J) & torch.isinf(denom), torch.ones_like(ratio), ratio)
    return 1.0 - torch.tanh(ratio)


def ema(x: torch.Tensor, decay: float) -> torch.Tensor:
    """e_0 = x_0, e_i = decay * e_{i-1} + (1 - decay) * x_i along the last dim; decay 0 = identity."""
    if decay == 0.0:
        return x
    out = [x[..., 0]]
    for i in range(1, x.shape[-1]):
        out.append(decay * out[-1] + (1.0 - decay) * x[..., i])
    return torch.stack(out, dim=-1)


def stability(J: torch.Tensor, J_b: torch.Tensor, ema_decay: float = 0.0) -> torch.Tensor:
    """S_stab_j = (tau_j + 1) / 2, tau_j = Kendall tau-a of (J_b, J_1, ..., J_j) against the
    index: tau = 2 / (n(n-1)) * sum_{u<v} sign(x_v - x_u), n = j + 1 (spec 7). (N, M)

    Entries past a rollout's last cut are computed from padding and must be masked by the caller
    (every function below does)."""
    x = ema(torch.cat([J_b.unsqueeze(-1), J], dim=-1), ema_decay)  # (N, M+1)
    xu, xv = x.unsqueeze(-1), x.unsqueeze(-2)
    # [u, v] = sign(x_v - x_u), by comparison so that equal infinities tie (-inf - -inf is NaN)   (N, M+1, M+1)
    sgn = (xv > xu).to(x.dtype) - (xv < xu).to(x.dtype)
    upper = torch.triu(torch.ones(x.shape[-1], x.shape[-1], dtype=x.dtype, device=x.device), diagonal=1)  # u < v
    concordance = (sgn * upper).sum(dim=-2).cumsum(dim=-1)  # sum over u < v <= j     (N, M+1)
    j = torch.arange(1, x.shape[-1], device=x.device, dtype=x.dtype)  # n - 1 = j
    tau = 2.0 * concordance[..., 1:] / ((j + 1.0) * j)
    return (tau + 1.0) / 2.0


def process_score(S_magn, S_stab, w: float, mode: str = "convex"):
    """S_j = (1 - w) S_magn_j + w S_stab_j (spec 8; mode 'convex').

    mode 'off' (authors' code): S_j = S_magn_j. 'additive' (their commented-out line):
    S_j = S_magn_j + w (1/2 - tau_NLL) = S_magn_j + w (2 S_stab_j - 1/2), since the NLL sequence's
    tau is minus J's and S_stab = (tau + 1) / 2. Tensors or floats."""
    if mode == "convex":
        return (1.0 - w) * S_magn + w * S_stab
    if mode == "off":
        return S_magn
    if mode == "additive":
        return S_magn + w * (2.0 * S_stab - 0.5)
    raise ValueError(f"stability must be 'convex', 'off' or 'additive', got {mode!r}")


def empty_prefix_score(w: float, first_step_baseline: str, stability: str = "convex") -> float:
    """S_0 (spec 9): 'score' = the empty prefix's score, S_magn = 1 - tanh 1 and S_stab = 1/2 through
    `process_score` ((1-w)(1 - tanh 1) + w/2 for 'convex'); 'zero' = 0 (authors' code)."""
    if first_step_baseline == "score":
        return float(process_score(NO_PROGRESS_MAGNITUDE, 0.5, w, stability))
    if first_step_baseline == "zero":
        return 0.0
    raise ValueError(f"first_step_baseline must be 'score' or 'zero', got {first_step_baseline!r}")


def process_rewards(
    S: torch.Tensor, mask: torch.Tensor, w: float, first_step_baseline: str = "score", stability: str = "convex"
) -> torch.Tensor:
    """r_j = S_j - S_{j-1}, S_0 = empty_prefix_score (spec 9); 0 where masked. (N, M)"""
    S0 = torch.full_like(S[..., :1], empty_prefix_score(w, first_step_baseline, stability))
    r = S - torch.cat([S0, S[..., :-1]], dim=-1)
    return torch.where(mask, r, torch.zeros_like(r))


def pool_stats(r: torch.Tensor, mask: torch.Tensor, extra_zero: bool = False) -> torch.Tensor:
    """The valid rewards' float64 `moment_sums` (count, sum of float32 parts, sum of the rest, sum
    of squares) (4,): what ranks all-reduce (SUM) for a batch pool (algos/moments.py).
    `extra_zero`: each scored rollout adds one zero reward (counted, nothing summed)."""
    extra = mask.any(-1).sum().to(torch.float64) if extra_zero else 0.0
    return moment_sums(r, mask, extra)


def normalize_rewards(
    r: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor | None,
    mode: str = "group",
    eps: float = 1e-6,
    batch_stats: torch.Tensor | None = None,
    std: str = "population",
    extra_zero: bool = False,
) -> torch.Tensor:
    """r' = (r - mean) / (std + eps) over a pool (spec 10). (N, M), r's dtype

    mode 'group': pool = the valid rewards of all rollouts sharing a group id; 'batch': all valid
    rewards (pass `batch_stats` = the all-reduced `pool_stats` when the batch spans ranks);
    'group_mean': r - the group's mean, no std (the authors' REINFORCE++-baseline fold); 'none': r
    unchanged. std 'population' divides the squares by n, 'unbiased' by n - 1 (authors' code); a
    pool of one element gives 0. `extra_zero` (the authors' code's quirk): every scored rollout
    puts one more zero into its pool, which moves mean and std; no output position holds it.
    A pool whose members are all equal (the extra zeros included) gives exactly 0, whatever their
    value: the statistics are float64 and centred exactly (algos/moments.py)."""
    zero = torch.zeros_like(r)
    if mode == "none":
        return torch.where(mask, r, zero)
    if std not in ("population", "unbiased"):
        raise ValueError(f"norm_std must be 'population' or 'unbiased', got {std!r}")
    ddof = 1.0 if std == "unbiased" else 0.0
    if mode == "batch":
        sums = batch_stats if batch_stats is not None else pool_stats(r, mask, extra_zero)
        centred, var = centre_by_sums(r, mask, sums, ddof)
        sd = torch.where(sums[0] > 1, var.sqrt(), torch.zeros_like(var))
    elif mode in ("group", "group_mean"):
        if group_ids is None:
            raise ValueError(f"process_norm='{mode}' needs group_ids")
        inv, G = pool_index(group_ids)
        extra = mask.any(-1) if extra_zero else None  # (N,) zeros added to each rollout's pool
        pm = pool_moments(r, inv, G, mask, ddof, extra)
        centred = pm.centred
        if mode == "group_mean":
            return torch.where(mask, centred, 0.0).to(r.dtype)
        sd = torch.where(pm.count > 1, pm.var.sqrt(), torch.zeros_like(pm.var))[inv].unsqueeze(-1)  # (N, 1)
    else:
        raise ValueError(f"process_norm must be 'group', 'batch', 'group_mean' or 'none', got {mode!r}")
    return torch.where(mask, divide_keep_zero(centred, sd + eps), 0.0).to(r.dtype)


def token_process_advantages(r_norm: torch.Tensor, cuts: torch.Tensor, mask: torch.Tensor, T: int) -> torch.Tensor:
    """A~_t = sum_{i >= j} r'_i for a token t in step j, i.e. c_{j-1} <= t < c_j (spec 11).
    Tokens at or after the last cut get 0. Returns (N, T)."""
    r = torch.where(mask, r_norm, torch.zeros_like(r_norm))
    to_go = r.flip(-1).cumsum(-1).flip(-1)  # (N, M) return to go from each step
    t = torch.arange(T, device=r.device)
    # step index of token t = number of valid cuts c_j <= t
    step = ((cuts.unsqueeze(1) <= t.view(1, -1, 1)) & mask.unsqueeze(1)).sum(-1)  # (N, T)
    m = mask.sum(-1, keepdim=True)  # (N, 1)
    inside = step < m
    gathered = (
        torch.gather(to_go, 1, step.clamp(max=max(r.shape[-1] - 1, 0)))
        if r.shape[-1]
        else torch.zeros_like(step, dtype=r.dtype)
    )
    return torch.where(inside, gathered, torch.zeros_like(gathered))


def dense_process_rewards(r_norm: torch.Tensor, cuts: torch.Tensor, mask: torch.Tensor, T: int) -> torch.Tensor:
    """r'_j placed on the last token of step j (index c_j - 1), 0 elsewhere: the per-token rewards
    of `ppo_process_reward: dense_reward`, whose undiscounted return to go is A_tilde. (N, T)"""
    out = torch.zeros(r_norm.shape[0], T, dtype=r_norm.dtype, device=r_norm.device)
    rows, steps = mask.nonzero(as_tuple=True)
    out.index_put_((rows, cuts[rows, steps] - 1), r_norm[rows, steps], accumulate=True)
    return out


def fold(
    adv: torch.Tensor, process_adv: torch.Tensor, alpha: float, apply_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """A^_t = A_t + alpha * A~_t (spec 12); rollouts with apply_mask False keep A_t. (N, T)"""
    if apply_mask is not None:
        process_adv = process_adv * apply_mask.to(process_adv.dtype).unsqueeze(-1)
    return adv + alpha * process_adv
