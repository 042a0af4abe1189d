"""Supervised fine-tuning of a pretrained causal LM on prompt/response pairs (`repro-train sft` with a recipe whose
`model.path` names the model; recipes/thinker/sft.yaml makes SmolLM2-135M-Instruct into a thinker).

    repro-train sft --config recipes/thinker/sft.yaml
    repro-train sft --config recipes/thinker/sft.yaml train.steps=2 train.device=cpu output_dir=/tmp/thinker

The prompt is built as RL and eval build it and the target is the response then EOS; a step's sequences are
cut into micro-batches under a padded-token budget. Writes a model folder that `repro-train train`, `eval`,
`inspect` and the vLLM engine load, with sft_config.yaml, sft_log.jsonl and sft_result.json beside it.
Data, batches, precision, output and time limit: docs/models-and-data.md, "The thinker".
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ...core.typed_config import ConfigError, dump_yaml, to_dict
from ...data.jsonl import iter_jsonl
from ...data.named import is_named, load_named
from ...data.prompts import RowError, encode_prompt
from ...eval.runner import EvalSettings, evaluate
from ...models.loading import model_folder
from .batches import batch_indices, collate, lr_factor
from .finetune_config import FinetuneConfig, FTTrainConfig

# ----------------------------------------------------------------------------- data


def read_rows(source: str) -> list[dict]:
    """The rows of a JSONL file or a named set; ConfigError naming the source and line otherwise."""
    if is_named(source):
        return load_named(source)
    if not Path(source).is_file():
        raise ConfigError(f"'data.source' {source!r}: no such file and not a named set (`repro-train data list`)")
    rows = []
    for n, row, why in iter_jsonl(source):
        if why is not None:
            raise ConfigError(f"{source} line {n}: {why}")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{source} has no rows")
    return rows


def encode_pair(tok, row: dict, d, eos_id: int, where: str) -> tuple[list[int], int]:
    """(prompt ids + response ids + EOS, number of prompt ids): the prompt as RL builds it, the response tokenized
    alone (the ids a rollout continues the prompt with)."""
    response = row.get(d.response_field)
    if not isinstance(response, str) or not response:
        raise ConfigError(f"{where}: no response text in field {d.response_field!r} (data.response_field)")
    fields = {"prompt": row.get(d.prompt_field), "question": row.get(d.question_field)}
    try:
        prompt = encode_prompt(tok, fields, d.system_prompt, where=where)
    except RowError as e:
        raise ConfigError(f"{e} (data.question_field / data.prompt_field)") from None
    ids = tok(response, add_special_tokens=False)["input_ids"]
    return prompt + ids + [eos_id], len(prompt)


def encode_rows(tok, rows: list[dict], d, eos_id: int, what: str) -> tuple[list[tuple[list[int], int]], int]:
    """Encoded examples of `rows` no longer than d.max_tokens, and how many were longer (dropped)."""
    out, dropped = [], 0
    for i, row in enumerate(rows):
        ex = encode_pair(tok, row, d, eos_id, f"{what} row {i}")
        if len(ex[0]) > d.max_tokens:
            dropped += 1
        else:
            out.append(ex)
    if not out:
        raise ConfigError(f"every {what} row is longer than 'data.max_tokens' = {d.max_tokens}")
    return out, dropped


def split_rows(cfg: FinetuneConfig) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows)."""
    d = cfg.data
    rows = read_rows(d.source)
    if d.eval_source is not None:
        return rows, read_rows(d.eval_source)[: d.eval_rows]
    if len(rows) <= d.eval_rows:
        raise ConfigError(
            f"'data.source' has {len(rows)} rows: too few to hold out 'data.eval_rows' = {d.eval_rows} "
            "(lower it or give data.eval_source)"
        )
    return rows[: -d.eval_rows], rows[-d.eval_rows :]


# ----------------------------------------------------------------------------- batches


def micro_batches(examples: list[tuple[list[int], int]], budget: int) -> list[list[int]]:
    """Indices of `examples` sorted by length, cut so that each group's padded size (count x longest) is <= budget."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    groups, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * len(examples[i][0]) > budget:
            groups.append(cur)
            cur = []
        cur.append(i)
    return groups + [cur] if cur else groups


def token_nll_sum(model, batch: dict[str, torch.Tensor], autocast) -> tuple[torch.Tensor, int]:
    """(sum of the response tokens' cross-entropy, their count) for one micro-batch."""
    with autocast():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum"
    )
    return nll, int((targets != -100).sum())


# ----------------------------------------------------------------------------- train


def resolve_device(t: FTTrainConfig) -> tuple[torch.device, bool]:
    """(device, bf16 autocast on) from train.device and train.precision."""
    name = t.device if t.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("'train.device' = cuda but no GPU is visible; use auto or cpu")
    bf16 = t.precision == "bf16" or (t.precision == "auto" and name == "cuda")
    return torch.device(name), bf16


def make_optimizer(model, t: FTTrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.lr,
        betas=t.betas,
    )


def step_loss(model, chunk: list[tuple[list[int], int]], t: FTTrainConfig, pad_id, device, autocast) -> tuple:
    """Backward of one step's mean response-token loss, micro-batch by micro-batch; (loss, tokens, padded tokens)."""
    groups = micro_batches(chunk, t.micro_batch_tokens)
    n_tokens = sum(len(ids) - n for ids, n in chunk)
    total, padded = 0.0, 0
    for g in groups:
        batch = {k: v.to(device) for k, v in collate([chunk[i] for i in g], pad_id).items()}
        nll, _ = token_nll_sum(model, batch, autocast)
        (nll / n_tokens).backward()  # the step's token mean, whatever the split
        total += nll.item()
        padded += batch["input_ids"].numel()
    return total / n_tokens, n_tokens, padded


@torch.no_grad()
def heldout_loss(model, examples, t: FTTrainConfig, pad_id, device, autocast) -> float:
    """Mean response-token cross-entropy over the held-out examples."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for g in micro_batches(examples, t.micro_batch_tokens):
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in g], pad_id).items()}
        nll, n = token_nll_sum(model, batch, autocast)
        total, count = total + nll.item(), count + n
    model.train(was)
    return total / count


def apply_update(model, opt, sched, t: FTTrainConfig) -> float:
    """Clip the gradient (train.grad_clip > 0), step AdamW and the schedule; the gradient's norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sched.step()
    return float(norm)


def log_line(log, row: dict, echo: bool) -> None:
    """One JSON line in sft_log.jsonl; also printed when there is no progress bar (a batch job's log)."""
    log.write(json.dumps(row) + "\n")
    log.flush()
    if echo:
        print(f"sft {json.dumps(row)}", flush=True)


def train_loop(model, train_ex, eval_ex, pad_id, t: FTTrainConfig, device, bf16: bool, log_path: Path) -> dict:
    """The fine-tuning loop: a line per train.log_every steps and per held-out evaluation. Stops after the last step,
    or after the first one past train.time_limit_s."""
    from tqdm import tqdm

    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    opt = make_optimizer(model, t)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t))
    batches = batch_indices(
        [len(ids) for ids, _ in train_ex], t.batch_size, t.steps, t.bucket, torch.Generator().manual_seed(t.seed)
    )
    model.train()
    start, recent, tokens, stats = time.time(), [], 0, {"stopped_early_at": None}
    with log_path.open("w") as log, tqdm(total=t.steps, disable=not t.progress, desc="sft", unit="step") as bar:
        for done, idx in enumerate(batches, start=1):
            loss, _, padded = step_loss(model, [train_ex[i] for i in idx], t, pad_id, device, autocast)
            norm = apply_update(model, opt, sched, t)
            recent, tokens, elapsed = recent + [loss], tokens + padded, time.time() - start
            last = done == t.steps or (t.time_limit_s > 0 and elapsed > t.time_limit_s)
            if done % t.log_every == 0 or last:
                stats["final_loss"] = round(sum(recent) / len(recent), 5)
                row = {
                    "step": done,
                    "loss": stats["final_loss"],
                    "lr": sched.get_last_lr()[0],
                    "grad_norm": round(norm, 4),
                }
                log_line(
                    log,
                    {**row, "tokens_per_s": round(tokens / elapsed), "elapsed_s": round(elapsed, 1)},
                    not t.progress,
                )
                bar.set_postfix(loss=f"{stats['final_loss']:.4f}", tok_s=round(tokens / elapsed))
                recent = []
            if (t.eval_every and done % t.eval_every == 0) or last:
                stats["eval_loss"] = heldout_loss(model, eval_ex, t, pad_id, device, autocast)
                log_line(log, {"step": done, "eval_loss": round(stats["eval_loss"], 5)}, True)
            bar.update(1)
            if last:
                break
    stats.update(steps=done, stopped_early_at=done if done < t.steps else None)
    stats.update(train_s=time.time() - start, padded_tokens=tokens)
    return stats


# ----------------------------------------------------------------------------- save and evaluate


def save_folder(model, tok, cfg: FinetuneConfig, eos_id: int, out: Path) -> None:
    """Weights in model.save_dtype, tokenizer (chat template included), generation_config.json ending at `eos_id`."""
    from transformers import GenerationConfig

    dtype = getattr(torch, cfg.model.save_dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=tok.pad_token_id,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )
    model.config.dtype = cfg.model.save_dtype  # what vLLM's dtype "auto" reads
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    model.save_pretrained(out, state_dict=state, safe_serialization=True)
    tok.save_pretrained(out)


def generation_eval(model, tok, cfg: FinetuneConfig, rows: list[dict]) -> dict:
    """Greedy answers to the first eval.problems held-out rows, measured as `repro-train eval` does."""
    e, d = cfg.eval, cfg.data
    problems = [
        {"id": i, "question": r[d.question_field], "answer": str(r[d.answer_field])}
        for i, r in enumerate(rows[: e.problems])
    ]
    settings = EvalSettings(
        samples=1,
        greedy=True,
        max_new_tokens=e.max_new_tokens,
        batch_size=e.batch_size,
        reward=e.reward,
        k_values=(1,),
        system_prompt=d.system_prompt,
        think_end=cfg.model.think_end,
    )
    summary, _ = evaluate(model.eval(), tok, problems, settings, progress=cfg.train.progress)
    return summary


def load_pretrained(cfg: FinetuneConfig, device):
    """(float32 model on `device`, tokenizer with a pad token, the EOS id responses end with)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_folder(cfg.model.path)
    if not Path(path).is_dir():
        raise ConfigError(f"'model.path' = {cfg.model.path!r} is not a model folder")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.eos_token_id is None:
        raise ConfigError(f"the tokenizer of {path} has no EOS token: responses could not end")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation=cfg.model.attn_implementation, use_safetensors=True
    )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    return model.to(device), tok, tok.eos_token_id


def run_finetune(cfg: FinetuneConfig) -> dict:
    """Data -> model -> train -> save -> generation eval; returns the stats written to sft_result.json."""
    start = time.time()
    torch.manual_seed(cfg.train.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sft_config.yaml").write_text(dump_yaml(cfg))
    device, bf16 = resolve_device(cfg.train)
    train_rows, eval_rows = split_rows(cfg)
    model, tok, eos_id = load_pretrained(cfg, device)
    train_ex, dropped = encode_rows(tok, train_rows, cfg.data, eos_id, "training")
    eval_ex, eval_dropped = encode_rows(tok, eval_rows, cfg.data, eos_id, "held-out")
    if len(train_ex) < cfg.train.batch_size:
        raise ConfigError(f"{len(train_ex)} training examples < 'train.batch_size' ({cfg.train.batch_size})")
    n_tokens = sum(len(ids) for ids, _ in train_ex)
    resp = sum(len(ids) - n for ids, n in train_ex)
    print(
        f"sft: {len(train_ex)} examples ({dropped} longer than {cfg.data.max_tokens} dropped), {n_tokens:,} tokens "
        f"({resp:,} response tokens), {len(eval_ex)} held out; {device.type}, {'bf16 autocast' if bf16 else 'fp32'}",
        flush=True,
    )
    stats = train_loop(model, train_ex, eval_ex, tok.pad_token_id, cfg.train, device, bf16, out / "sft_log.jsonl")
    save_folder(model, tok, cfg, eos_id, out)
    result = {"config": to_dict(cfg), "model": str(out), "device": device.type, "bf16_autocast": bf16}
    result.update(stats, n_examples=len(train_ex), dropped_too_long=dropped + eval_dropped, tokens_per_epoch=n_tokens)
    result.update(response_tokens_per_epoch=resp, epochs=stats["steps"] * cfg.train.batch_size / len(train_ex))
    if cfg.eval.problems > 0:
        result["generation"] = generation_eval(model, tok, cfg, eval_rows)
    result["total_s"] = time.time() - start
    (out / "sft_result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
