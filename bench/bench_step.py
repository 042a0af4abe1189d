"""Whole GRPO step time, two settings side by side through the real trainer phases: RePro on vs off
(`--compare repro`, the default), the vllm vs the hf rollout engine (`--compare engine`), or fused decoder ops vs the
model as loaded (`--compare fused`: model.fused_ops = --fused-ops, default compile, vs none).

    python bench/bench_step.py                  # Qwen2 1.5B, 4 prompts x G=8 x 1,024 tokens: ~4-5 min on an H100
    python bench/bench_step.py --compare engine --prompts 32   # vllm vs hf, GRPO + RePro, 32 x 8 x 1,024 tokens
    python bench/bench_step.py --compare overlap --prompts 32  # rollout.overlap_cpu_tail true vs false
    python bench/bench_step.py --compare fused --prompts 32 --max-tokens 4096 --schedule sequential   # compile vs none
    python bench/bench_step.py --model-size tiny --device cpu --steps 1 --warmup 0 --new-tokens 16   # smoke (a test)

One step is exactly what `trainer.loop.train` runs, minus logging and checkpoints:
`make_experience` (rollout, shapers, forwards, advantages) then `update_phase`, on a runtime from
`build_runtime` and a recipe loaded by `config.load`. The bars: median step time with RePro on is at most 1.03x
the median with it off; with `--compare engine`, the vllm step is at most 0.45x the hf step and
the rollout phase's tokens/s inside the trainer (weight push and wake/sleep included) is at least
0.9x vLLM's standalone tokens/s, measured after the steps by `LLM.generate` alone on the same
engine, prompts and sampling settings.

Precision: by default what the math recipes run, float32 master weights (model.dtype) with bf16
autocast (dist.mixed_precision), so the optimizer step moves the weights at lr 1e-6 and the vllm
engine samples in bf16 (rollout.vllm.dtype auto). `--dtype bfloat16 --mixed-precision no` runs pure
bf16 weights, the setting of the tables measured before issue 25 (at lr 1e-6 most bf16 weights do
not change: the timings hold, the training does not). The summary's first line names the setting.
Two float32 runtimes hold about 2 x 24 GB for the 1.5B model (weights, gradients, AdamW): with
`--compare engine` on an 80 GB card add `--schedule sequential` or lower `--vllm-memory`.

Departures from a real run, all bench-only (no repro_train file is changed):
- The model folder is written here: Qwen2 dimensions from bench_probe.MODELS with random seeded
  weights, and a tokenizer whose vocabulary is exactly the model's (see `build_tokenizer`).
- Every response is exactly `--new-tokens` long: the recipe sets rollout.min_new_tokens =
  rollout.max_new_tokens, so EOS is masked until the last token.
- The outcome reward is a seeded coin per completion (a reward file written beside the model):
  half the rollouts are "correct", no math-verify pool starts.

Settings run alternately (on, off, off, on, ...) with both runtimes resident, so drift hits both;
`--schedule sequential` builds one at a time instead. The device is synchronised around every
phase. Results go to `--out` (JSON, rewritten after each step); the summary table prints last.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench the checkout, installed or not
sys.path.insert(0, str(HERE))
from bench_probe import COMMON, MODELS, machine_info, write_json  # noqa: E402  (one source of truth)

COMPARES = {
    "repro": ("on", "off"),
    "engine": ("vllm", "hf"),
    "path": ("new", "today"),
    "overlap": ("overlap", "inline"),
    "fused": ("fused", "eager"),
}
"""The two settings of each comparison: (measured, baseline). path: the training phases as they run now (fused
log-prob head, token-budget micro-batches, on-policy old log-probs) against the path of 2026-12-07 (the model's
logits and a float32 log-softmax, a separate old-log-prob pass, rows of --micro-batch), both with the vllm engine.
overlap: rollout.overlap_cpu_tail true against false (decoding and RePro's plan beside the forwards; the bench's coin
reward is a custom function, which runs on the main thread either way: trainer/cpu_tail.py).
fused: model.fused_ops = --fused-ops (compile unless given) against none, both with the vllm engine; every other
comparison runs both settings with --fused-ops (none unless given)."""
BAR_RATIO = {"repro": 1.03, "engine": 0.45, "path": 0.6, "overlap": 1.0, "fused": 1.0}
"""Step time measured / baseline must be at most this (overlap and fused ops must pay: no slower than without)."""
BAR_STANDALONE = 0.9
"""--compare engine: rollout tokens/s inside the trainer / standalone vLLM tokens/s, at least."""
SPECIAL = ["<|pad|>", "<|bos|>", "<|eos|>"]  # ids 0, 1, 2
WORDS = "the we so then add get sum is total answer check wait let now next step number result".split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)
COIN_REWARD = '''
import hashlib


def coin(prompts, completions, answers, **columns):
    """1.0 or 0.0 from a hash of the completion: seeded, half the rollouts pass."""
    return [float(hashlib.sha256(c.encode()).digest()[0] & 1) for c in completions]
'''


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------
# The model folder: random Qwen2 weights and a tokenizer as large as the model's vocabulary
# ---------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by byte-level BPE vocabularies."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tokenizer_pieces(vocab_size: int, paragraph_every: int) -> list[str]:
    """Decoded text of every id: 3 specials, the 128 ASCII bytes, then words (' the1f', ...),
    every `paragraph_every`-th of them ending a paragraph ('.\\n\\nthe30'). All ASCII, so every
    id decodes to whole characters and RePro's segmenter takes its fast path, as on English text."""
    pieces = SPECIAL + [chr(b) for b in range(128)]
    i = 0
    while len(pieces) < vocab_size:
        w = f"{WORDS[i % len(WORDS)]}{i:x}"
        pieces.append(f".\n\n{w}" if i % paragraph_every == 0 else f" {w}")
        i += 1
    if len(pieces) != vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the {len(SPECIAL) + 128} fixed tokens")
    return pieces


def build_tokenizer(vocab_size: int, paragraph_every: int):
    """A byte-level BPE with no merges whose vocabulary is exactly `vocab_size` ids.

    Why not repro_train.testing.build_tokenizer (384 ids) under a 151,936-id model: ids past the
    tokenizer would decode to nothing, responses would have no paragraphs, and RePro would skip
    every rollout ('no_segment'), which measures nothing. Here every id the model can sample
    decodes to text, and about 1 in `paragraph_every` starts a paragraph (~21 segments in 1,024
    tokens at 48), so RePro probes its full top_k = 10 cuts per rollout. With no merges, prompts
    and answers encode one byte per token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    b2u = bytes_to_unicode()
    pieces = tokenizer_pieces(vocab_size, paragraph_every)
    vocab = {p if i < len(SPECIAL) else "".join(b2u[b] for b in p.encode()): i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=SPECIAL[0], bos_token=SPECIAL[1], eos_token=SPECIAL[2]
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model_dir(
    path: str, size: str, dtype: torch.dtype, device: torch.device, paragraph_every: int, seed: int = 0
) -> str:
    """Save a random Qwen2 (`size` from bench_probe.MODELS) and its tokenizer to `path`."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    dims = MODELS[size]
    build_tokenizer(dims["vocab_size"], paragraph_every).save_pretrained(path)
    cfg = Qwen2Config(**dims, **COMMON, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    with torch.device(device):  # built in place: no 6 GB float32 copy on the CPU
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model.save_pretrained(path)
    return path


def check_tokenizer(tok, vocab_size: int, paragraph_every: int) -> None:
    """The loaded tokenizer decodes every id the model can sample as built. AutoTokenizer rebuilds
    it as Qwen2Tokenizer (the folder holds a Qwen2 config), which may append <|endoftext|> past
    the model's vocabulary; that id is never sampled. Any other change would invalidate the bench."""
    want = "".join(tokenizer_pieces(vocab_size, paragraph_every))
    got = tok.decode(list(range(vocab_size)), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if got != want or tok.eos_token_id != 2 or tok.pad_token_id != 0:
        raise RuntimeError(
            f"the reloaded tokenizer ({type(tok).__name__}, {len(tok)} ids, eos {tok.eos_token_id}, "
            f"pad {tok.pad_token_id}) does not decode ids 0..{vocab_size - 1} as built"
        )


# ---------------------------------------------------------------------------------------------
# Recipe and runtime
# ---------------------------------------------------------------------------------------------


def write_recipe(work: str, setting: str, args) -> str:
    """The recipe of one setting: a YAML file read by repro_train.config.load, like the CLI's."""
    import yaml

    reward = Path(work) / "coin_reward.py"
    reward.write_text(COIN_REWARD)
    n_steps = args.warmup + args.steps
    recipe = {
        "model": {
            "path": str(Path(work) / "model"),
            "dtype": args.dtype,
            "attn_implementation": "sdpa",
            "gradient_checkpointing": args.grad_ckpt,
            "fused_ops": fused_ops_of(setting, args),
        },
        "dist": {"mixed_precision": args.mixed_precision},
        "data": {"source": "toy", "toy_size": max(64, args.prompts * n_steps)},
        "rollout": {
            "prompts_per_step": args.prompts,
            "group_size": args.group_size,
            "max_new_tokens": args.new_tokens,
            "min_new_tokens": args.new_tokens,
            "generation_batch_size": args.prompts * args.group_size,
            "engine": engine_of(setting, args),
            "per_prompt_seed": engine_of(setting, args) == "vllm",
            "vllm": {"sleep_level": args.sleep_level, "gpu_memory_utilization": args.vllm_memory},
            "overlap_cpu_tail": setting != "inline",
        },
        "reward": {"functions": [{"name": f"{reward}:coin", "correctness": True}], "num_workers": 1},
        "algo": {"estimator": "grpo", "micro_batch_size": args.micro_batch, **path_algo(setting, args)},
        "optim": {"lr": args.lr},
        "repro": {"enabled": setting == "on" if args.compare == "repro" else args.repro == "on"},
        "train": {
            "steps": n_steps,
            "save_every": 0,
            "output_dir": str(Path(work) / f"run-{setting}"),
            "device": args.device,
            "seed": args.seed,
        },
        "log": {"wandb": False, "progress": False},
    }
    path = Path(work) / f"recipe-{setting}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def engine_of(setting: str, args) -> str:
    """The rollout engine of a setting: --compare engine's own; vllm for --compare path, overlap and fused (hf on a CPU
    smoke run); hf otherwise."""
    if args.compare == "engine":
        return setting
    return "vllm" if args.compare in ("path", "overlap", "fused") and args.device.startswith("cuda") else "hf"


def fused_ops_of(setting: str, args) -> str:
    """model.fused_ops of a setting: none for --compare fused's baseline, --fused-ops otherwise."""
    return "none" if args.compare == "fused" and setting == "eager" else args.fused_ops


def path_algo(setting: str, args) -> dict:
    """algo keys of --compare path's settings ('new' also takes --max-tokens in every comparison)."""
    if setting == "today":
        return {"logprob_head": "logits", "old_logprobs": "recompute"}
    return {"max_tokens_per_micro_batch": args.max_tokens} if args.max_tokens else {}


def reset_accelerate() -> None:
    """accelerate keeps process-wide singletons; clear them so this run starts clean (tests)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def build(recipe: str, tokenizer_check: Callable, vary_lengths: bool = False):
    """The trainer's runtime for one recipe (rollouts cut to varied lengths with `vary_lengths`)."""
    from repro_train.config import load
    from repro_train.trainer.runtime import build_runtime

    rt = build_runtime(load(recipe))
    tokenizer_check(rt.tokenizer)
    if vary_lengths:
        rt.rollout.sample = varied_lengths(rt.rollout.sample, rt.cfg.rollout.max_new_tokens, rt.response_format)
    return rt


def varied_lengths(sample: Callable, max_new: int, fmt) -> Callable:
    """A rollout engine's `sample` whose responses are cut at seeded lengths drawn uniformly in [max_new / 8,
    max_new], ending in EOS, as a real run's varied lengths. Bench-only: generation still produced max_new tokens
    (the rollout phase's time is the fixed length's); the forwards, updates and padding see the varied lengths."""
    import random

    rng = random.Random(1234)
    eos = fmt.eos_ids[0]

    def cut(prompts, group_size, seeds):
        out = sample(prompts, group_size, seeds)
        for g, group in enumerate(out.token_ids):
            for i, row in enumerate(group):
                n = rng.randint(max(1, max_new // 8), max_new)
                group[i] = row[: n - 1] + [eos]
                if out.logprobs is not None:
                    out.logprobs[g][i] = out.logprobs[g][i][:n]
        return out

    return cut


# ---------------------------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------------------------


def run_step(rt, step: int, sync: Callable[[], None]) -> dict:
    """One training step through the trainer's phases, the device synchronised around each."""
    from repro_train.trainer.experience import make_experience
    from repro_train.trainer.loop import update_phase

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # each step's own peak (what stays resident included)
    sync()
    t0 = time.perf_counter()
    batch = make_experience(rt, step)  # the trainer's own phases, shapers included; each phase timed inside
    sync()
    t1 = time.perf_counter()
    upd = update_phase(rt, batch)
    sync()
    wall = {
        "rollout": batch.timings["rollout_s"],
        "forward": batch.timings["forward_s"],
        "advantage": batch.timings["advantage_s"],
        "update": time.perf_counter() - t1,
    }
    # between the phases: the rewards' join (their rest on the main thread) and the shapers (experience.reward_phase)
    wall["shaping"] = t1 - t0 - wall["rollout"] - wall["forward"] - wall["advantage"]
    wall["step"] = sum(wall.values())
    lengths = batch.mask.sum(-1)
    row = dict(
        step=step,
        wall_s=wall,
        trainer_s={**batch.timings, "update_s": upd["update_s"]},
        plan_s=batch.timings.get("plan_s", 0.0),
        response_len_min=int(lengths.min()),
        response_len_max=int(lengths.max()),
        rollouts=int(lengths.numel()),
        tokens=int(lengths.sum()),
        truncated_frac=batch.truncated.float().mean().item(),
        pg_loss=upd.get("pg_loss"),
        **work_of(rt, batch),
    )
    row.update(gap_of(batch))
    if batch.repro is not None:
        row.update(
            cuts_per_rollout=batch.repro.mask.sum(-1).float().mean().item(),
            segments_per_rollout=statistics.mean(batch.repro.n_segments),
            skipped=batch.repro.skipped,
        )
    return row


def gap_of(batch) -> dict:
    """The trainer's log-probs of the sampled tokens against the engine's (the silent-bug detector of
    rollout/logprob_gap, trainer/metrics.py): mean and max |difference| over response tokens; {} without engine
    log-probs (hf engine)."""
    from repro_train.algos.correction import logprob_gap

    if batch.engine_logprobs is None or batch.old_logprobs is None:
        return {}
    total, top = logprob_gap(batch.old_logprobs, batch.engine_logprobs, batch.mask)
    return dict(logprob_gap_mean=total.item() / max(1, int(batch.mask.sum())), logprob_gap_max=top.item())


def work_of(rt, batch) -> dict:
    """The step's work: real and padded tokens of its micro-batches (the padding share), and the model FLOPs of one
    forward over the real tokens (decoder matmuls and causal attention, the LM head on the response tokens)."""
    from repro_train.trainer.batching import padded_tokens
    from repro_train.trainer.experience import micro_batch_plan

    plens, rlens = batch.seqs.host_lengths()
    real = sum(plens) + sum(rlens)
    padded = padded_tokens(plens, rlens, micro_batch_plan(rt, batch))
    c = rt.policy.config
    H, L, I, V = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size
    kv = H // c.num_attention_heads * c.num_key_value_heads
    per_token = 2 * L * (H * (H + 2 * kv) + H * H + 3 * H * I)  # q, k, v, o and the gated MLP
    attention = sum(2 * L * H * (p + r) ** 2 for p, r in zip(plens, rlens))  # QK and AV, causal: half of 4 L^2 H
    head = 2 * H * V * sum(rlens)
    return dict(real_tokens=real, padded_tokens=padded, forward_flops=per_token * real + attention + head)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run(args, payload: dict, write: Callable[[], None]) -> None:
    """Build the model folder, then run warm-up and timed steps of both settings into payload."""
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    work = args.workdir or tempfile.mkdtemp(prefix="bench_step-")
    Path(work).mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.monotonic()
        # random weights: saved in bf16 on a GPU (half the bytes to write), loaded as model.dtype
        folder_dtype = torch.bfloat16 if device.type == "cuda" else getattr(torch, args.dtype)
        build_model_dir(
            str(Path(work) / "model"), args.model_size, folder_dtype, device, args.paragraph_every, args.seed
        )
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        log(f"model folder written in {time.monotonic() - t0:.1f} s: {work}/model")
        vocab = MODELS[args.model_size]["vocab_size"]
        check = lambda tok: check_tokenizer(tok, vocab, args.paragraph_every)  # noqa: E731
        recipes = {s: write_recipe(work, s, args) for s in args.settings}
        reset_accelerate()
        if args.schedule == "alternate":
            run_alternate(recipes, args, payload, write, check, sync)
        else:
            run_sequential(recipes, args, payload, write, check, sync)
        if args.fresh_engine:
            fresh_engine(recipes, payload, args, write)
    finally:
        reset_accelerate()
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run_alternate(recipes: dict, args, payload: dict, write, check, sync) -> None:
    """Both runtimes resident; iteration i runs on, off (i even) or off, on (i odd)."""
    rts = {}
    for s in args.settings:
        t0 = time.monotonic()
        rts[s] = build(recipes[s], check, args.vary_lengths)
        log(f"[{s}] runtime built in {time.monotonic() - t0:.1f} s{memory_note()}")
    try:
        for i in range(args.warmup + args.steps):
            for s in args.settings if i % 2 == 0 else args.settings[::-1]:
                record(payload, s, i, run_step(rts[s], i, sync), args, write)
        standalone(rts, payload, args, write, sync)
    finally:
        for rt in rts.values():
            rt.close()


def run_sequential(recipes: dict, args, payload: dict, write, check, sync) -> None:
    """One runtime at a time (freed before the next is built): the first setting's steps, then the other's."""
    for s in args.settings:
        t0 = time.monotonic()
        rt = build(recipes[s], check, args.vary_lengths)
        log(f"[{s}] runtime built in {time.monotonic() - t0:.1f} s{memory_note()}")
        try:
            for i in range(args.warmup + args.steps):
                record(payload, s, i, run_step(rt, i, sync), args, write)
            standalone({s: rt}, payload, args, write, sync)
        finally:
            rt.close()
        rt = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def standalone(rts: dict, payload: dict, args, write, sync) -> None:
    """vLLM alone: `LLM.generate` on the engine the trainer used, with the prompts, seeds and sampling
    settings of its last step, timed `args.steps` times (no weight push, no wake or sleep)."""
    setting = next((s for s in rts if engine_of(s, args) == "vllm"), None)
    if setting is None or "standalone_vllm" in payload:  # once, on the first vllm setting
        return
    rt = rts[setting]
    eng = rt.rollout
    prompts = [rt.prompts.prompt_ids[i] for i in range(args.prompts)]
    eng.wake()
    rows = []
    for i in range(args.steps):
        params = [eng.sampling_params(args.group_size, 7919 * i + j) for j in range(len(prompts))]
        sync()
        t0 = time.perf_counter()
        outs = eng.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        sync()
        dt = time.perf_counter() - t0
        tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
        rows.append(dict(wall_s=dt, tokens=tokens))
        log(f"[vllm standalone] {tokens} tokens in {dt:.2f} s = {tokens / dt:,.0f} tok/s")
    payload["standalone_vllm"] = rows
    payload["standalone_setting"] = setting
    write()


def fresh_engine(recipes: dict, payload: dict, args, write) -> None:
    """A fresh vLLM process (bench/vllm_alone.py) with the first vllm setting's options, prompts and sampling,
    after every runtime here is closed: the in-trainer engine's rollout tok/s against it."""
    import json
    import subprocess

    setting = next((s for s in args.settings if engine_of(s, args) == "vllm"), None)
    if setting is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    cmd = [sys.executable, str(HERE / "vllm_alone.py"), recipes[setting], "--repeats", str(max(1, args.steps))]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    last = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    payload["fresh_vllm"] = json.loads(last[-1]) if run.returncode == 0 and last else {"error": run.stderr[-2000:]}
    log(f"[fresh vllm] {payload['fresh_vllm']}")
    write()


def record(payload: dict, setting: str, i: int, row: dict, args, write) -> None:
    row["warmup"] = i < args.warmup
    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    payload["settings"][setting]["steps"].append(row)
    w, t = row["wall_s"], row["trainer_s"]
    log(
        f"[{setting}] step {i}{' (warm-up)' if row['warmup'] else ''}: {w['step']:.2f} s = rollout "
        f"{w['rollout']:.2f} + forward {w['forward']:.2f} + advantage {w['advantage']:.3f} + update "
        f"{w['update']:.2f}; probe {t.get('probe_s', 0):.3f}, repro {t.get('repro_s', 0):.3f}, plan "
        f"{row['plan_s']:.3f}; CPU tail {t.get('cpu_tail_s', 0):.3f} ({t.get('cpu_tail_hidden_s', 0):.3f} hidden); "
        f"lengths {row['response_len_min']}-{row['response_len_max']}"
        + (f", cuts/rollout {row['cuts_per_rollout']:.1f}" if "cuts_per_rollout" in row else "")
        + (
            f"; log-prob gap to the engine mean {row['logprob_gap_mean']:.2e}, max {row['logprob_gap_max']:.3f}"
            if "logprob_gap_mean" in row
            else ""
        )
    )
    write()


def precision(args) -> str:
    """The setting in words, e.g. 'float32 weights + bf16 autocast (the math recipes)'."""
    words = f"{args.dtype} weights" + ("" if args.mixed_precision == "no" else f" + {args.mixed_precision} autocast")
    recipes = args.dtype == "float32" and args.mixed_precision == "bf16"
    return words + (" (the math recipes)" if recipes else "")


def fused_note(args) -> str:
    """The summary's words for model.fused_ops ('' where every setting runs the model as loaded)."""
    if args.compare == "fused":
        return f", fused ops {args.fused_ops} (eager: none)"
    return f", fused ops {args.fused_ops}" if args.fused_ops != "none" else ""


def memory_note() -> str:
    return f", {torch.cuda.memory_allocated() / 2**30:.1f} GiB allocated" if torch.cuda.is_available() else ""


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

PHASES = ("step", "rollout", "forward", "advantage", "update")


def summarize(payload: dict) -> dict:
    """Medians of the timed (non-warm-up) steps per setting, the on/off ratios and RePro's share."""
    out = {}
    for s, d in payload["settings"].items():
        rows = [r for r in d["steps"] if not r["warmup"]]
        if not rows:
            continue
        med = lambda xs: statistics.median(xs)  # noqa: E731
        m = {f"{p}_s": med([r["wall_s"][p] for r in rows]) for p in PHASES}
        m["rollout_tok_s"] = med([r.get("tokens", 0) / r["wall_s"]["rollout"] for r in rows])
        m.update(
            generate_s=med([r["trainer_s"]["generate_s"] for r in rows]),
            probe_s=med([r["trainer_s"].get("probe_s", 0.0) for r in rows]),
            repro_s=med([r["trainer_s"].get("repro_s", 0.0) for r in rows]),
            plan_s=med([r["plan_s"] for r in rows]),
            cpu_tail_s=med([r["trainer_s"].get("cpu_tail_s", 0.0) for r in rows]),  # decoding, rewards, plan
            cpu_tail_hidden_s=med([r["trainer_s"].get("cpu_tail_hidden_s", 0.0) for r in rows]),  # beside the GPU
            n=len(rows),
            response_len_min=min(r["response_len_min"] for r in rows),
            response_len_max=max(r["response_len_max"] for r in rows),
        )
        # repro_s = plan_s + probe_s + scores/advantages (experience.advantage_phase)
        m["repro_share"] = m["repro_s"] / m["step_s"]
        if "forward_flops" in rows[0]:
            peak = payload.get("args", {}).get("peak_tflops", 989.0) * 1e12
            flops = med([r["forward_flops"] for r in rows])
            m["update_mfu"] = 3 * flops / m["update_s"] / peak  # forward + backward, recomputation not counted
            m["forward_mfu"] = flops / m["forward_s"] / peak if m["forward_s"] > 0 else float("nan")
            m["padding_share"] = 1 - med([r["real_tokens"] / r["padded_tokens"] for r in rows])
            m["tokens_per_s"] = med([r["real_tokens"] / r["wall_s"]["step"] for r in rows])
        if rows[0].get("peak_gib") is not None:
            m["peak_gib"] = max(r["peak_gib"] for r in rows)
        if "cuts_per_rollout" in rows[0]:
            m["cuts_per_rollout"] = statistics.mean(r["cuts_per_rollout"] for r in rows)
        out[s] = m
    compare = payload.get("args", {}).get("compare", "repro")
    x, base = COMPARES[compare]
    if x in out and base in out:
        xs, bs = payload["settings"][x]["steps"], payload["settings"][base]["steps"]
        pairs = [(a["wall_s"]["step"], b["wall_s"]["step"]) for a, b in zip(xs, bs) if not a["warmup"]]
        out["ratio"] = out[x]["step_s"] / out[base]["step_s"]
        out["paired_ratios"] = [a / b for a, b in pairs]
        out["ratio_no_generate"] = (out[x]["step_s"] - out[x]["generate_s"]) / (
            out[base]["step_s"] - out[base]["generate_s"]
        )
        out["extra_s"] = {p: out[x][f"{p}_s"] - out[base][f"{p}_s"] for p in PHASES}
        out["bar"] = "PASS" if out["ratio"] <= BAR_RATIO[compare] else "FAIL"
    alone, where = payload.get("standalone_vllm"), payload.get("standalone_setting", "vllm")
    if alone and where in out:
        out["standalone_tok_s"] = statistics.median(r["tokens"] / r["wall_s"] for r in alone)
        out["in_trainer_over_standalone"] = out[where]["rollout_tok_s"] / out["standalone_tok_s"]
        out["standalone_setting"] = where
        out["bar_standalone"] = "PASS" if out["in_trainer_over_standalone"] >= BAR_STANDALONE else "FAIL"
    fresh = payload.get("fresh_vllm")
    if fresh and where in out and fresh.get("tok_s"):
        out["fresh_tok_s"] = fresh["tok_s"]
        out["in_trainer_over_fresh"] = out[where]["rollout_tok_s"] / fresh["tok_s"]
    return out


def table(summary: dict, settings: tuple[str, str]) -> str:
    head = (
        "| setting | step s | rollout s | (generate s) | rollout tok/s | forward s | advantage s | update s | probe s "
        "| repro s | plan s | CPU tail s (hidden) | RePro share | resp. len | cuts/rollout | update MFU | forward MFU "
        "| padding | peak GiB |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in settings:
        m = summary.get(s)
        if m is None:
            continue
        lens = (
            f"{m['response_len_min']}"
            if m["response_len_min"] == m["response_len_max"]
            else f"{m['response_len_min']}-{m['response_len_max']}"
        )
        cells = [
            s,
            f"{m['step_s']:.2f}",
            f"{m['rollout_s']:.2f}",
            f"{m['generate_s']:.2f}",
            f"{m['rollout_tok_s']:,.0f}",
            f"{m['forward_s']:.3f}",
            f"{m['advantage_s']:.3f}",
            f"{m['update_s']:.3f}",
            f"{m['probe_s']:.3f}",
            f"{m['repro_s']:.3f}",
            f"{m['plan_s']:.3f}",
            f"{m['cpu_tail_s']:.3f} ({m['cpu_tail_hidden_s']:.3f})",
            f"{100 * m['repro_share']:.2f}%",
            lens,
            f"{m['cuts_per_rollout']:.1f}" if "cuts_per_rollout" in m else "-",
            f"{100 * m['update_mfu']:.0f}%" if "update_mfu" in m else "-",
            f"{100 * m['forward_mfu']:.0f}%" if "forward_mfu" in m else "-",
            f"{100 * m['padding_share']:.0f}%" if "padding_share" in m else "-",
            f"{m['peak_gib']:.1f}" if "peak_gib" in m else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_summary(payload: dict, args) -> None:
    """The markdown summary, printed last: the lead's log keeps only the tail."""
    s, m = payload["summary"], payload["machine"]
    log(
        f"\n## bench_step: {m.get('gpu', 'cpu')}, torch {m['torch']}, transformers {m['transformers']}, "
        f"{args.model_size} {precision(args)}, {args.prompts} prompts x G={args.group_size} x "
        f"{args.new_tokens} tokens, "
        f"micro-batch {args.micro_batch}"
        + (f" (new: {args.max_tokens} tokens)" if args.max_tokens else "")
        + (", gradient checkpointing" if args.grad_ckpt else "")
        + fused_note(args)
        + (", varied lengths" if args.vary_lengths else "")
        + f", {args.schedule}, medians of {args.steps} steps after {args.warmup} warm-up"
    )
    log(table(s, args.settings))
    x, base = (args.settings + (None,))[:2]
    if "ratio" in s:
        log(f"\nextra s/step of {x} over {base}: " + ", ".join(f"{p} {v:+.3f}" for p, v in s["extra_s"].items()))
        log(
            f"paired step ratios {x}/{base}: {', '.join(f'{r:.4f}' for r in s['paired_ratios'])}; "
            f"without generation: {s['ratio_no_generate']:.4f}"
        )
        what = "RePro on / off" if args.compare == "repro" else f"{x} / {base}"
        log(f"bar: step time {what} = {s['ratio']:.4f} <= {BAR_RATIO[args.compare]} {s['bar']}")
    if "standalone_tok_s" in s:
        log(
            f"bar: rollout tok/s in the trainer {s[s['standalone_setting']]['rollout_tok_s']:,.0f} / standalone vLLM "
            f"{s['standalone_tok_s']:,.0f} = {s['in_trainer_over_standalone']:.3f} >= {BAR_STANDALONE} "
            f"{s['bar_standalone']}"
        )
    if "fresh_tok_s" in s:
        log(
            f"bar: rollout tok/s in the trainer / a fresh vLLM process with the same options "
            f"{s['fresh_tok_s']:,.0f} = {s['in_trainer_over_fresh']:.3f} >= {BAR_STANDALONE} "
            f"{'PASS' if s['in_trainer_over_fresh'] >= BAR_STANDALONE else 'FAIL'}"
        )
    log(f"elapsed {payload['elapsed_s']} s; JSON: {args.out}")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--compare",
        default="repro",
        choices=sorted(COMPARES),
        help="repro: RePro on vs off; engine: rollout.engine vllm vs hf; path: the phases now vs 2026-12-07; fused: "
        "model.fused_ops --fused-ops vs none; overlap: rollout.overlap_cpu_tail true vs false",
    )
    p.add_argument(
        "--fused-ops",
        choices=["none", "compile", "liger"],
        help="model.fused_ops: of the measured setting with --compare fused (default compile), else of both (none)",
    )
    p.add_argument("--repro", default="on", choices=["on", "off"], help="--compare engine: RePro in both settings")
    p.add_argument("--sleep-level", type=int, default=0, choices=[0, 1, 2], help="rollout.vllm.sleep_level")
    p.add_argument("--vllm-memory", type=float, default=0.3, help="rollout.vllm.gpu_memory_utilization")
    p.add_argument("--model-size", default="1.5b", choices=sorted(MODELS), help="Qwen2 dimensions (bench_probe.MODELS)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float32", help="model.dtype: the trained (master) weights' dtype")
    p.add_argument(
        "--mixed-precision",
        choices=["no", "bf16", "fp16"],
        help="dist.mixed_precision: the forward passes' autocast (default bf16 on cuda, as the math recipes; cpu: no)",
    )
    p.add_argument("--prompts", type=int, default=4, help="rollout.prompts_per_step")
    p.add_argument("--group-size", type=int, default=8, help="rollout.group_size (G)")
    p.add_argument("--new-tokens", type=int, default=1024, help="response length (every response is this long)")
    p.add_argument("--micro-batch", type=int, default=4, help="algo.micro_batch_size")
    p.add_argument(
        "--max-tokens", type=int, default=None, help="algo.max_tokens_per_micro_batch of the 'new' (and other) settings"
    )
    p.add_argument("--grad-ckpt", action="store_true", help="model.gradient_checkpointing (long responses)")
    p.add_argument("--vary-lengths", action="store_true", help="cut responses to varied lengths (see varied_lengths)")
    p.add_argument("--only", default=None, help="run one setting of the comparison (e.g. --compare path --only new)")
    p.add_argument("--fresh-engine", action="store_true", help="also time a fresh vLLM process (bench/vllm_alone.py)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak for MFU (H100/H200 SXM: 989)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per setting")
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    p.add_argument(
        "--schedule",
        default="alternate",
        choices=["alternate", "sequential"],
        help="alternate: both runtimes resident, steps interleaved; sequential: one runtime at a time",
    )
    p.add_argument(
        "--paragraph-every",
        type=int,
        default=48,
        help="1 in N vocabulary words starts a paragraph (48: ~21 segments per 1,024 tokens)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="folder for the model and run folders (default: a temp dir, deleted)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--out", default="bench_step.json", help="JSON results")
    args = p.parse_args(argv)
    if args.mixed_precision is None:
        args.mixed_precision = "bf16" if args.device.startswith("cuda") else "no"
    if args.fused_ops is None:
        args.fused_ops = "compile" if args.compare == "fused" else "none"
    if args.compare == "fused" and args.fused_ops == "none":
        p.error("--compare fused measures --fused-ops compile or liger against none; --fused-ops none compares nothing")
    if not isinstance(getattr(torch, args.dtype, None), torch.dtype):
        p.error(f"unknown dtype {args.dtype!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("CUDA is not available here: use --device cpu (with --model-size tiny)")
    args.settings = COMPARES[args.compare]
    if args.only is not None:
        if args.only not in args.settings:
            p.error(f"--only {args.only}: --compare {args.compare} has the settings {args.settings}")
        args.settings = (args.only,)
    if args.steps < 1 or args.warmup < 0 or args.paragraph_every < 1:
        p.error("--steps must be >= 1, --warmup >= 0, --paragraph-every >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the step lines
    t_start = time.monotonic()
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    payload = dict(
        machine=machine_info(device),
        args=vars(args),
        model=dict(MODELS[args.model_size], **COMMON),
        settings={s: {"steps": []} for s in args.settings},
        summary={},
        complete=False,
    )
    m = payload["machine"]
    log(
        f"bench_step: {m.get('gpu', 'cpu')} | torch {m['torch']} | transformers {m['transformers']} | "
        f"{args.model_size} {precision(args)} | {args.prompts} x G={args.group_size} x {args.new_tokens} tokens"
    )

    def write():
        payload.update(summary=summarize(payload), elapsed_s=round(time.monotonic() - t_start, 1))
        write_json(args.out, payload)

    run(args, payload, write)
    payload["complete"] = True
    write()
    print_summary(payload, args)
    return payload


if __name__ == "__main__":
    main()
