"""Slow, obvious references that the fast paths are tested against."""

import torch


def prefix_attention_reference(q, keys, values, own_keys, own_values, lo, hi, block_len, scale) -> torch.Tensor:
    """PrefixAttention's result from an explicit mask and a float32 softmax (slow; tests, benchmark)."""
    B, L, H, D = q.shape
    Hkv, T = keys.shape[1], keys.shape[2]
    nb = L // block_len
    col = torch.arange(T, device=q.device)
    u = torch.arange(L, device=q.device)
    blk = u // block_len
    see_cache = (col.view(1, 1, -1) >= lo.view(B, 1, 1)) & (col.view(1, 1, -1) < hi.view(B, nb, 1)[:, blk])  # (B, L, T)
    see_own = (blk.view(-1, 1) == blk.view(1, -1)) & (u.view(1, -1) <= u.view(-1, 1))  # (L, L)
    see = torch.cat([see_cache, see_own.expand(B, L, L)], dim=-1)
    k = torch.cat([keys, own_keys.transpose(1, 2)], dim=2).float().repeat_interleave(H // Hkv, dim=1)
    v = torch.cat([values, own_values.transpose(1, 2)], dim=2).float().repeat_interleave(H // Hkv, dim=1)
    s = torch.einsum("blhd,bhtd->bhlt", q.float(), k) * scale
    s = s.masked_fill(~see.unsqueeze(1), float("-inf"))
    return torch.einsum("bhlt,bhtd->blhd", s.softmax(-1), v).to(q.dtype).reshape(B, L, H * D)
