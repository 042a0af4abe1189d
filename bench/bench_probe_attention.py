"""Phase 2's attention alone: which kernel scores the probe blocks against the kept cache fastest.

    python bench/bench_probe_attention.py [--model 1.5b] [--length 4096] [--cuts 10] [--out DIR] [--triton-only]

One decoder layer's attention at the shape of a bench_probe.py cell (4 rollouts, 256-token prompts,
`cuts` + 1 blocks of 20 tokens each): queries (B, H, Lp, D) against a cache of Kc columns plus the
Lp probe columns. Each block sees its rollout's prefix and, causally, itself. Variants:

    sdpa_folded      SDPA, GQA heads folded into the query axis, one additive mask (what the probe runs)
    sdpa_<b>         the same with the SDPA backend forced (efficient, cudnn)
    flex_gqa         flex attention with a BlockMask, enable_gqa, compiled; masked key tiles are skipped
    flex_gqa_64      the same with 64 x 64 tiles
    flex_folded[_64] flex attention with GQA folded block-major (one 128-row tile is about one block)
    flash_varlen_<s> FlashAttention-2 varlen: each block's exact prefix (a range of the packed cache,
                     in s splits) plus its own causal part, merged by log-sum-exp
    cudnn_split_<S>  cuDNN with the key axis cut into S batch entries, merged by log-sum-exp
    triton_*         the project's kernel (repro/probe/triton/attention.py): each block's rows walk only its
                     prefix's columns, in slices merged by log-sum-exp, largest items first; no mask
                     (what the probe runs on a GPU by default); variants: slices (`splits`: how many
                     the whole cache would be cut into), warps, pipeline stages, key tile

The last two call private aten ops (`_flash_attention_forward`, `_scaled_dot_product_cudnn_attention`)
for their log-sum-exp; this is a survey, not library code. Prints per-call time (median, CUDA
events), time x layers, the max difference from a float32 reference, the compile time of each
compiled variant and a kernel profile of three variants; writes JSON. "GPU ms" is the summed kernel
time per call (torch.profiler): where it is far below the wall time, the call is launch-bound.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_probe import MODELS, BenchOptions, kernel_ms, make_blocks, one_cell_args  # noqa: E402


def timed(fn, repeats: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(repeats):
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        out.append(s.elapsed_time(e))
    out.sort()
    return out[len(out) // 2]


def main() -> None:
    a = one_cell_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    o = BenchOptions()
    m = MODELS[a.model]
    B, H, Hkv = o.rollouts, m["num_attention_heads"], m["num_key_value_heads"]
    D = m["hidden_size"] // H
    r = H // Hkv
    P, Kc = o.prompt_len, o.prompt_len + a.length
    Lb = o.forcing_len + o.answer_len - 1
    cuts = torch.tensor(make_blocks(a.length, a.cuts, o), device=dev)  # (B, nb)
    nb = cuts.shape[1]
    Lp = nb * Lb
    limit = P + cuts  # block k of row b sees cache columns < limit[b, k] (no lead: forcing is non-empty)
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, H, Lp, D, device=dev, dtype=dt, generator=g)
    k = torch.randn(B, Hkv, Kc + Lp, D, device=dev, dtype=dt, generator=g)
    v = torch.randn(B, Hkv, Kc + Lp, D, device=dev, dtype=dt, generator=g)
    scale = D**-0.5

    u = torch.arange(Lp, device=dev)
    cols = torch.arange(Kc, device=dev)
    see_cache = (cols.view(1, 1, -1) < limit.unsqueeze(-1)).unsqueeze(2).expand(B, nb, Lb, Kc).reshape(B, Lp, Kc)
    see_probe = ((u // Lb).view(-1, 1) == (u // Lb).view(1, -1)) & (u.view(1, -1) <= u.view(-1, 1))
    allowed = torch.cat([see_cache, see_probe.expand(B, Lp, Lp)], -1).unsqueeze(1)  # (B, 1, Lp, Kc + Lp)

    # float32 reference
    kr = k.float().repeat_interleave(r, 1)
    vr = v.float().repeat_interleave(r, 1)
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), kr, vr, attn_mask=allowed, scale=scale)
    del kr, vr

    folded_mask = torch.where(allowed.repeat(1, 1, r, 1), 0.0, torch.finfo(dt).min).to(dt)

    def sdpa_folded():
        out = torch.nn.functional.scaled_dot_product_attention(
            q.reshape(B, Hkv, r * Lp, D), k, v, attn_mask=folded_mask, scale=scale
        )
        return out.reshape(B, H, Lp, D)

    results = []

    def record(name, fn, compile_s=None):
        try:
            out = fn()
            err = (out.float() - ref).abs().max().item()
            ms = timed(fn)
            g_ms = sum(kernel_ms(fn).values())
            results.append(
                dict(
                    name=name,
                    ms=ms,
                    gpu_ms=g_ms,
                    layers_ms=ms * m["num_hidden_layers"],
                    gpu_layers_ms=g_ms * m["num_hidden_layers"],
                    max_err=err,
                    compile_s=compile_s,
                )
            )
        except Exception as e:  # report and go on: this is a survey
            results.append(dict(name=name, error=f"{type(e).__name__}: {str(e)[:300]}"))
        print(json.dumps(results[-1]), flush=True)

    record("sdpa_folded", sdpa_folded)
    survey = not a.triton_only  # the library kernels too (--triton-only: the project's kernel alone)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name, be in (("efficient", SDPBackend.EFFICIENT_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)) * survey:

        def forced(be=be):
            with sdpa_kernel([be]):
                return sdpa_folded()

        record(f"sdpa_{name}", forced)

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    start = torch.zeros(B, dtype=torch.long, device=dev)

    def mask_mod(b, h, qi, kv):
        blk = qi // Lb
        cache = (kv >= start[b]) & (kv < limit[b, blk])
        own = (kv >= Kc) & ((kv - Kc) // Lb == blk) & (kv - Kc <= qi)
        return cache | own

    for name, bs, opts in (("flex_gqa", 128, None), ("flex_gqa_64", 64, {"BLOCK_M": 64, "BLOCK_N": 64})) * survey:
        try:
            t0 = time.perf_counter()
            bm = create_block_mask(mask_mod, B, None, Lp, Kc + Lp, device=dev, BLOCK_SIZE=bs)
            mask_s = time.perf_counter() - t0
            fa = torch.compile(flex_attention, dynamic=False)
            t0 = time.perf_counter()
            fa(q, k, v, block_mask=bm, scale=scale, enable_gqa=True, kernel_options=opts)
            torch.cuda.synchronize()
            comp = time.perf_counter() - t0
            record(
                name,
                lambda fa=fa, bm=bm, opts=opts: fa(
                    q, k, v, block_mask=bm, scale=scale, enable_gqa=True, kernel_options=opts
                ),
                comp,
            )
            results[-1]["mask_first_s"] = mask_s
            results[-1]["mask_ms"] = timed(
                lambda bs=bs: create_block_mask(mask_mod, B, None, Lp, Kc + Lp, device=dev, BLOCK_SIZE=bs),
                repeats=5,
                warmup=1,
            )
        except Exception as e:
            results.append(dict(name=name, error=f"{type(e).__name__}: {str(e)[:300]}"))
            print(json.dumps(results[-1]), flush=True)

    # GQA folded block-major: rows (block, head rep, token), so one 128-row tile is about one block
    qb = q.view(B, Hkv, r, nb, Lb, D).permute(0, 1, 3, 2, 4, 5).reshape(B, Hkv, nb * r * Lb, D)

    def mask_folded(b, h, qi, kv):
        blk, t = qi // (r * Lb), qi % Lb
        cache = (kv >= start[b]) & (kv < limit[b, blk])
        own = (kv >= Kc) & ((kv - Kc) // Lb == blk) & ((kv - Kc) % Lb <= t)
        return cache | own

    def unfold(out):
        return out.view(B, Hkv, nb, r, Lb, D).permute(0, 1, 3, 2, 4, 5).reshape(B, H, Lp, D)

    for name, bs, opts in (("flex_folded", 128, None), ("flex_folded_64", 64, {"BLOCK_M": 64, "BLOCK_N": 64})) * survey:
        try:
            bm = create_block_mask(mask_folded, B, None, nb * r * Lb, Kc + Lp, device=dev, BLOCK_SIZE=bs)
            fa = torch.compile(flex_attention, dynamic=False)
            t0 = time.perf_counter()
            fa(qb, k, v, block_mask=bm, scale=scale, kernel_options=opts)
            torch.cuda.synchronize()
            comp = time.perf_counter() - t0
            record(
                name,
                lambda fa=fa, bm=bm, opts=opts: unfold(fa(qb, k, v, block_mask=bm, scale=scale, kernel_options=opts)),
                comp,
            )
        except Exception as e:
            results.append(dict(name=name, error=f"{type(e).__name__}: {str(e)[:300]}"))
            print(json.dumps(results[-1]), flush=True)

    # flash varlen: every (block, split) is one varlen sequence; its keys are a range of the packed
    # tokens-major cache (ranges overlap: cu_seqlens_k gives each start, seqused_k its length). GQA
    # heads fold into the query rows; the block's own causal part is a second varlen call; the
    # partial results merge by their log-sum-exp.
    print(torch.ops.aten._flash_attention_forward.default._schema, flush=True)
    W = Kc + Lp
    kt = k.transpose(1, 2).contiguous().view(B * W, Hkv, D)
    vt = v.transpose(1, 2).contiguous().view(B * W, Hkv, D)
    kp = k[:, :, Kc:].transpose(1, 2).contiguous().view(B * Lp, Hkv, D)
    vp = v[:, :, Kc:].transpose(1, 2).contiguous().view(B * Lp, Hkv, D)
    i32 = dict(device=dev, dtype=torch.int32)
    cu_own = torch.arange(B * nb + 1, **i32) * Lb

    def flash_varlen(ns):
        base_ = (torch.arange(B, device=dev) * W).view(B, 1, 1)
        edges = (limit.unsqueeze(-1) * torch.arange(ns + 1, device=dev)) // ns  # (B, nb, ns+1)
        starts = (base_ + edges[..., :-1]).reshape(-1)
        used = (edges[..., 1:] - edges[..., :-1]).reshape(-1)
        cu_k = torch.cat([starts, starts[-1:] + used[-1:]]).to(torch.int32)
        used = used.to(torch.int32)
        n = B * nb * ns
        cu_q = torch.arange(n + 1, **i32) * (r * Lb)
        max_k = int(limit.max()) // ns + 1

        def fn():
            qf = q.view(B, Hkv, r, nb, Lb, D).permute(0, 3, 2, 4, 1, 5).unsqueeze(2).expand(B, nb, ns, r, Lb, Hkv, D)
            qf = qf.reshape(n * r * Lb, Hkv, D)
            o1, l1 = torch.ops.aten._flash_attention_forward(
                qf, kt, vt, cu_q, cu_k, r * Lb, max_k, 0.0, False, False, scale=scale, seqused_k=used
            )[:2]
            # (B, nb, ns, r, Lb, Hkv, D) -> (ns, B, nb, Lb, Hkv, r, D) = (ns, B*Lp, H, D)
            o1 = o1.view(B, nb, ns, r, Lb, Hkv, D).permute(2, 0, 1, 4, 5, 3, 6).reshape(ns, B * Lp, H, D)
            l1 = l1.view(Hkv, B, nb, ns, r, Lb).permute(3, 1, 2, 5, 0, 4).reshape(ns, B * Lp, H)
            q2 = q.transpose(1, 2).reshape(B * Lp, H, D)
            o2, l2 = torch.ops.aten._flash_attention_forward(
                q2, kp, vp, cu_own, cu_own, Lb, Lb, 0.0, True, False, scale=scale
            )[:2]
            lse = torch.cat([l1, l2.t().unsqueeze(0)])
            w = (lse - lse.logsumexp(0, keepdim=True)).exp().unsqueeze(-1).to(o1.dtype)
            out = (torch.cat([o1, o2.unsqueeze(0)]) * w).sum(0)
            return out.view(B, Lp, H, D).transpose(1, 2)

        return fn

    for ns in (1, 2, 4) * survey:
        record(f"flash_varlen_{ns}", flash_varlen(ns))

    # cuDNN split-K: the key axis cut into S chunks that become batch entries (a view of a
    # tokens-major cache whose width is a multiple of S), partial results merged by log-sum-exp
    print(torch.ops.aten._scaled_dot_product_cudnn_attention.default._schema, flush=True)
    R = r * Lp

    def cudnn_split(S):
        C = -(-W // S)
        buf_k = torch.zeros(B, S * C, Hkv, D, device=dev, dtype=dt)
        buf_v = torch.zeros(B, S * C, Hkv, D, device=dev, dtype=dt)
        buf_k[:, :W], buf_v[:, :W] = k.transpose(1, 2), v.transpose(1, 2)
        kc = buf_k.view(B * S, C, Hkv, D).transpose(1, 2)
        vc = buf_v.view(B * S, C, Hkv, D).transpose(1, 2)
        allowed_w = torch.zeros(B, 1, Lp, S * C, dtype=torch.bool, device=dev)
        allowed_w[..., :W] = allowed
        m_ = allowed_w.repeat(1, 1, r, 1).view(B, R, S, C).permute(0, 2, 1, 3).reshape(B * S, 1, R, C)
        bias = torch.where(m_, 0.0, torch.finfo(dt).min).to(dt)

        def fn():
            qs = q.reshape(B, 1, Hkv, R, D).expand(B, S, Hkv, R, D).reshape(B * S, Hkv, R, D)
            o, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
                qs, kc, vc, bias, True, 0.0, False, False, scale=scale
            )[:2]
            lse = lse.view(B, S, Hkv, R)
            w = (lse - lse.logsumexp(1, keepdim=True)).exp_().to(dt)
            out = torch.einsum("bshrd,bshr->bhrd", o.view(B, S, Hkv, R, D), w)
            return out.reshape(B, H, Lp, D)

        return fn

    for S in (1, 2, 3, 4, 6) * survey:
        record(f"cudnn_split_{S}", cudnn_split(S))

    from repro_train.repro.probe.triton.attention import PrefixAttention

    lo = torch.zeros(B, dtype=torch.int32, device=dev)

    def triton_prefix(**kw):
        attn = PrefixAttention(lo, limit, Lb, **kw)
        own_k, own_v = k[:, :, Kc:].transpose(1, 2), v[:, :, Kc:].transpose(1, 2)  # the blocks' projections

        def fn():
            out = attn(q.transpose(1, 2), k[:, :, :Kc], v[:, :, :Kc], own_k, own_v, scale)
            return out.view(B, Lp, H, D).transpose(1, 2)

        return fn

    record("triton", triton_prefix())
    for kw in (
        dict(splits=1),
        dict(splits=2),
        dict(splits=4),
        dict(splits=6),
        dict(splits=9),
        dict(splits=12),
        dict(splits=16),
        dict(num_stages=2),
        dict(num_stages=4),
        dict(num_warps=4),
        dict(block_n=128),
        dict(block_n=32),
        dict(block_n=128, num_stages=2),
    ):
        record("triton_" + "_".join(f"{k_}{v_}" for k_, v_ in kw.items()), triton_prefix(**kw))

    from torch.profiler import ProfilerActivity, profile

    for name, fn in (("sdpa_folded", sdpa_folded), ("triton", triton_prefix()), ("cudnn_split_3", cudnn_split(3)))[
        : 3 if survey else 2
    ]:
        try:
            fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
            print(f"--- kernels of {name} (5 calls)")
            print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=70))
        except Exception as e:
            print(f"--- profile {name} failed: {type(e).__name__}: {str(e)[:200]}")

    info = dict(
        model=a.model,
        length=a.length,
        cuts=a.cuts,
        B=B,
        H=H,
        Hkv=Hkv,
        D=D,
        Lp=Lp,
        Kc=Kc,
        torch=torch.__version__,
        gpu=torch.cuda.get_device_name(),
    )
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "bench_probe_attention.json").write_text(json.dumps(dict(info=info, results=results), indent=1))
    print(f"\n{info}")
    print(f"{'variant':<24} {'ms/layer':>9} {'GPU ms':>7} {'GPU x layers':>12} {'max err':>9} {'compile s':>9}")
    for r_ in results:
        if "ms" in r_:
            cs = f"{r_['compile_s']:.1f}" if r_.get("compile_s") else "-"
            print(
                f"{r_['name']:<24} {r_['ms']:9.3f} {r_['gpu_ms']:7.3f} {r_['gpu_layers_ms']:12.2f} "
                f"{r_['max_err']:9.1e} {cs:>9}"
            )
        else:
            print(f"{r_['name']:<24} {r_.get('error') or r_.get('times')}")


if __name__ == "__main__":
    main()
