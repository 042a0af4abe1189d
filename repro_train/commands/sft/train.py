"""`repro-train sft`: supervised training from scratch of the tiny reasoner on the toy task's trace mix (this module),
or, for a recipe whose `model.path` names a pretrained model, fine-tuning of that model (finetune.py).

    repro-train sft --config recipes/toy/sft.yaml [key=value ...]
    repro-train sft --config recipes/thinker/sft.yaml                       # SmolLM2-135M-Instruct into a thinker
    repro-train sft --config recipes/toy/sft.yaml output_dir=/tmp/tr train.steps=50 eval.n_problems=20

Builds the model shipped in `repro_train/assets/tiny-reasoner/`: a byte-level BPE tokenizer and a small Llama
trained from scratch on toy rows with direct / recheck / backtrack traces, saved, then evaluated on held-out
problems (RECORD.md). Data, model, optimiser, determinism and the numbers: docs/tiny-reasoner.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ...core.typed_config import ConfigError, dump_yaml
from ...tasks.arithmetic import generate
from ...tasks.reasoner import build_tokenizer, format_prompt
from .batches import batch_indices, collate, lr_factor
from .config import SFTConfig, SFTModelConfig, SFTTrainConfig, load
from .finetune import run_finetune
from .finetune_config import is_finetune, load_finetune, raw_recipe
from .report import evaluate, record_markdown, save

# ----------------------------------------------------------------------------- data


def encode_example(tok, row: dict) -> tuple[list[int], int]:
    """(prompt ids + response ids + EOS, number of prompt ids). Prompt and response are encoded
    separately, exactly as a rollout sees them (the response continues the prompt's ids)."""
    prompt = tok(format_prompt(tok, row["question"]), add_special_tokens=False)["input_ids"]
    response = tok(row["response"], add_special_tokens=False)["input_ids"]
    return prompt + response + [tok.eos_token_id], len(prompt)


def make_tokenizer(rows: list[dict], vocab_size: int, context_length: int):
    """BPE trained on the formatted training texts (prompt + response)."""
    texts = [f"Question: {r['question']}\n{r['response']}" for r in rows]
    tok = build_tokenizer(texts, vocab_size)
    tok.model_max_length = context_length
    return tok


# ----------------------------------------------------------------------------- model


def build_model(m: SFTModelConfig, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=m.hidden,
        intermediate_size=m.intermediate,
        num_hidden_layers=m.layers,
        num_attention_heads=m.heads,
        num_key_value_heads=m.kv_heads,
        max_position_embeddings=m.context_length,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return LlamaForCausalLM(config)


def make_optimizer(model, t: SFTTrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # RMSNorm weights
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.lr,
        betas=t.betas,
    )


# ----------------------------------------------------------------------------- train


def train(model, examples: list[tuple[list[int], int]], pad_id: int, t: SFTTrainConfig, log_path: Path) -> dict:
    """The SFT loop; one JSON line per `log_every` steps. Returns {"final_loss", "train_s"}."""
    from tqdm import tqdm

    opt = make_optimizer(model, t)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t))
    gen = torch.Generator().manual_seed(t.seed)
    model.train()
    start, recent = time.time(), []
    with log_path.open("w") as log, tqdm(total=t.steps, disable=not t.progress, desc="sft") as bar:
        lengths = [len(ids) for ids, _ in examples]
        for step, idx in enumerate(batch_indices(lengths, t.batch_size, t.steps, t.bucket, gen)):
            batch = collate([examples[i] for i in idx], pad_id)
            loss = model(**batch).loss  # mean over response tokens
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            recent.append(loss.item())
            if (step + 1) % t.log_every == 0 or step + 1 == t.steps:
                mean = sum(recent) / len(recent)
                log.write(
                    json.dumps(
                        {
                            "step": step + 1,
                            "loss": round(mean, 5),
                            "lr": sched.get_last_lr()[0],
                            "elapsed_s": round(time.time() - start, 1),
                        }
                    )
                    + "\n"
                )
                log.flush()
                bar.set_postfix(loss=f"{mean:.4f}")
                recent = []
            bar.update(1)
    return {"final_loss": mean, "train_s": time.time() - start}


# ----------------------------------------------------------------------------- main


def run(cfg: SFTConfig, argv: list[str]) -> dict:
    """Seeds, deterministic kernels and `train.threads` around `build_and_record`; torch's
    global settings are restored afterwards (tests call this in-process)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.train.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.train.seed)
    try:
        return build_and_record(cfg, argv)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def build_and_record(cfg: SFTConfig, argv: list[str]) -> dict:
    """Data -> tokenizer -> model -> train -> save -> evaluate -> RECORD.md. Returns the
    training stats and the evaluation (None when eval.n_problems = 0)."""
    start = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    rows = generate(cfg.data.n_train, cfg.data.seed, cfg.task)
    tok = make_tokenizer(rows, cfg.data.vocab_size, cfg.model.context_length)
    examples = [encode_example(tok, r) for r in rows]
    longest = max(len(ids) for ids, _ in examples)
    if longest > cfg.model.context_length:
        raise ConfigError(
            f"a training sequence has {longest} tokens > 'model.context_length' = {cfg.model.context_length}"
        )
    model = build_model(cfg.model, tok)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"sft: {len(examples)} examples, vocab {len(tok)}, {n_params:,} parameters -> {out}")

    stats = train(model, examples, tok.pad_token_id, cfg.train, out / "sft_log.jsonl")
    save(model, tok, cfg, out)
    result = evaluate(model, tok, cfg, rows) if cfg.eval.n_problems > 0 else None

    stats.update(
        total_s=time.time() - start,
        vocab=len(tok),
        n_examples=len(examples),
        tokens=sum(len(ids) for ids, _ in examples),
        response_tokens=sum(len(ids) - n for ids, n in examples),
        epochs=cfg.train.steps * cfg.train.batch_size / len(examples),
    )
    (out / "RECORD.md").write_text(record_markdown(cfg, argv, stats, result, n_params, out))
    return {"stats": stats, "eval": result}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="repro-train sft", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="recipe YAML (recipes/toy/sft.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value, e.g. train.steps=100")
    args = p.parse_args(argv)
    try:
        raw = raw_recipe(args.config, args.overrides)
        if is_finetune(raw):  # a pretrained model's recipe (recipes/thinker/sft.yaml): finetune.py
            return finetune_main(load_finetune(raw))
        cfg = load(args.config, args.overrides)
    except ConfigError as e:
        print(f"repro-train sft: {e}", file=sys.stderr)
        return 2
    print(dump_yaml(cfg))
    result = run(cfg, argv)
    if result["eval"] is not None:
        ev = result["eval"]
        line = f"greedy accuracy {ev['greedy']['pass@1']:.3f}"
        if "sampled" in ev:
            s = ev["sampled"]
            line += (
                f", sampled (T=1) accuracy {s['pass@1']:.3f}, recheck rate "
                f"{s['recheck_rate']:.3f}, backtrack rate {s['backtrack_rate']:.3f}"
            )
        print(line)
    return 0


def finetune_main(cfg) -> int:
    """Fine-tune a pretrained model (finetune.py) and print what it measured."""
    print(dump_yaml(cfg))
    result = run_finetune(cfg)
    line = f"sft: {result['steps']} steps in {result['train_s']:.0f} s, final loss {result['final_loss']:.4f}"
    line += f", held-out loss {result['eval_loss']:.4f} -> {result['model']}"
    if "generation" in result:
        g = result["generation"]
        line += (
            f"\nheld-out greedy: accuracy {g['pass@1']:.3f}, mean tokens {g['mean_tokens']:.1f}, re-checks "
            f"{g['recheck_rate']:.3f}, backtracks {g['backtrack_rate']:.3f} per response"
        )
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
