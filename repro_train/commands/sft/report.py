"""Evaluation and build record of `repro-train sft` (the tiny reasoner): held-out accuracy, re-check
and backtrack rates of greedy and sampled responses, then RECORD.md with the exact command, seed,
environment and sha256 of the weights. Used by sft/train.py after training.
"""

from __future__ import annotations

import hashlib
import platform
import shlex
import time
from pathlib import Path

import torch

from ...core.text import decode_with_offsets
from ...core.typed_config import dump_yaml
from ...eval.detectors import count_backtracks, count_rechecks
from ...eval.metrics import summarize
from ...rewards.extract import extract_final_answer
from ...tasks.arithmetic import generate
from ...tasks.reasoner import format_prompt
from .config import SFTConfig

# ----------------------------------------------------------------------------- evaluate


def generation_defaults(tok, max_new_tokens: int, do_sample: bool = True):
    """Plain sampling at temperature 1 (no top-k / top-p cut: what the shipped
    generation_config.json says), or greedy decoding.

    do_sample is always set: `generate` fills the fields left unset (None) from the model's own
    generation_config.json, which samples."""
    from transformers import GenerationConfig

    sampling = dict(temperature=1.0, top_k=0, top_p=1.0) if do_sample else {}
    return GenerationConfig(
        do_sample=do_sample,
        **sampling,
        max_new_tokens=max_new_tokens,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


@torch.no_grad()
def generate_responses(
    model, tok, prompts: list[str], do_sample: bool, max_new_tokens: int, batch_size: int
) -> list[list[int]]:
    """Response token ids per prompt (up to and including EOS), left-padded batches."""
    gen_cfg = generation_defaults(tok, max_new_tokens, do_sample)
    model.eval()
    out = []
    for s in range(0, len(prompts), batch_size):
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[s : s + batch_size]]
        P = max(len(i) for i in ids)
        input_ids = torch.tensor([[tok.pad_token_id] * (P - len(i)) + i for i in ids])  # (b, P)
        attention_mask = (torch.arange(P)[None] >= torch.tensor([P - len(i) for i in ids])[:, None]).long()
        rows = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            generation_config=gen_cfg,
        )[:, P:].tolist()
        for row in rows:
            end = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
            out.append(row[:end])
    return out


def grade_responses(tok, responses: list[list[int]], golds: list[str], group: int) -> dict:
    """metrics.summarize over responses; responses[i] belongs to problem i // group."""
    samples = []
    for i, (ids, gold) in enumerate(zip(responses, golds)):
        text, offsets = decode_with_offsets(ids, lambda x: tok.decode(x, skip_special_tokens=True))
        answer = extract_final_answer(text)
        samples.append(
            {
                "problem_id": i // group,
                "correct": answer == gold,
                "answer": answer,
                "gold": gold,
                "n_tokens": len(ids),
                "text": text,
                "token_offsets": offsets,
            }
        )
    return summarize(samples, k_values=(group,) if group > 1 else (1,))


def heldout_rows(cfg: SFTConfig, train_questions: set[str]) -> tuple[list[dict], int]:
    """The first eval.n_problems rows of seed eval.seed whose question is not a training
    question; also returns how many were skipped to get them."""
    n, rows, skipped = cfg.eval.n_problems, [], 0
    candidates = generate(20 * n, cfg.eval.seed, cfg.task)
    for row in candidates:
        if len(rows) == n:
            break
        if row["question"] in train_questions:
            skipped += 1
        else:
            rows.append(row)
    if len(rows) < n:
        raise ValueError(
            f"only {len(rows)} held-out problems out of {len(candidates)} drawn "
            "are not in the training set: lower eval.n_problems"
        )
    return rows, skipped


def trace_rates(responses: list[str]) -> dict:
    """Mean recheck / backtrack paragraphs per response, and the fraction with at least one."""
    rc = [count_rechecks(r) for r in responses]
    bt = [count_backtracks(r) for r in responses]
    n = len(responses)
    return {
        "recheck_rate": sum(rc) / n,
        "backtrack_rate": sum(bt) / n,
        "frac_with_recheck": sum(x > 0 for x in rc) / n,
        "frac_with_backtrack": sum(x > 0 for x in bt) / n,
    }


def evaluate(model, tok, cfg: SFTConfig, train_rows: list[dict]) -> dict:
    """Greedy and temperature-1 metrics on held-out problems, plus the training data's rates."""
    e = cfg.eval
    rows, skipped = heldout_rows(cfg, {r["question"] for r in train_rows})
    prompts = [format_prompt(tok, r["question"]) for r in rows]
    golds = [r["answer"] for r in rows]
    start = time.time()
    greedy = generate_responses(model, tok, prompts, False, e.max_new_tokens, e.batch_size)
    out = {
        "n_problems": len(rows),
        "skipped_seen_in_training": skipped,
        "greedy": grade_responses(tok, greedy, golds, 1),
    }
    if e.sampled_problems > 0:
        torch.manual_seed(cfg.train.seed)
        k = e.samples
        sampled = generate_responses(
            model,
            tok,
            [p for p in prompts[: e.sampled_problems] for _ in range(k)],
            True,
            e.max_new_tokens,
            e.batch_size,
        )
        out["sampled"] = grade_responses(tok, sampled, [g for g in golds[: e.sampled_problems] for _ in range(k)], k)
    out["training_data"] = trace_rates([r["response"] for r in train_rows])
    out["eval_s"] = time.time() - start
    return out


# ----------------------------------------------------------------------------- save and record


def save(model, tok, cfg: SFTConfig, out: Path) -> None:
    """Weights (safetensors, model.save_dtype), tokenizer and generation_config.json."""
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.model.save_dtype]
    model.generation_config = generation_defaults(tok, cfg.eval.max_new_tokens)
    model.to(dtype).save_pretrained(out)
    model.to(torch.float32)
    tok.save_pretrained(out)
    (out / "model.safetensors").chmod(0o644)  # written 0600; package data must be world-readable


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fmt(x) -> str:
    return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def record_markdown(cfg: SFTConfig, argv: list[str], stats: dict, result: dict | None, n_params: int, out: Path) -> str:
    """RECORD.md: how the folder was made and what it measures."""
    lines = [
        "# tiny-reasoner: build record",
        "",
        "Written by `repro-train sft` (repro_train/commands/sft/train.py); see docs/tiny-reasoner.md.",
        "",
        "## Command",
        "",
        "```",
        "repro-train sft " + shlex.join(argv),
        "```",
        "",
        "## Environment",
        "",
        f"- torch {torch.__version__}, transformers {_version('transformers')}, "
        f"tokenizers {_version('tokenizers')}, Python {platform.python_version()}",
        f"- threads: {cfg.train.threads} (torch.set_num_threads), torch.use_deterministic_algorithms(True), CPU",
        f"- machine: {platform.machine()}, {platform.processor() or platform.system()}",
        f"- wall time: training {stats['train_s'] / 60:.1f} min, whole run {stats['total_s'] / 60:.1f} min",
        "",
        "## Result",
        "",
        f"- parameters: {n_params:,} ({cfg.model.save_dtype}); vocabulary: {stats['vocab']} tokens",
        f"- training examples: {stats['n_examples']:,}, tokens per epoch: {stats['tokens']:,} "
        f"(response tokens: {stats['response_tokens']:,}); epochs: {stats['epochs']:.2f}",
        f"- final training loss (mean of the last {cfg.train.log_every} steps): {stats['final_loss']:.4f}",
        f"- sha256(model.safetensors): `{sha256(out / 'model.safetensors')}`",
        "",
    ]
    if result is not None:
        lines += _evaluation_markdown(cfg, stats, result)
    lines += ["## Resolved config", "", "```yaml", dump_yaml(cfg).rstrip(), "```", ""]
    return "\n".join(lines)


def _evaluation_markdown(cfg: SFTConfig, stats: dict, result: dict) -> list[str]:
    """RECORD.md's held-out evaluation: the table of greedy, sampled and training-data rates."""
    g, s, d = result["greedy"], result.get("sampled"), result["training_data"]
    lines = [
        "## Held-out evaluation",
        "",
        f"{result['n_problems']} problems of seed {cfg.eval.seed} (same task config; "
        f"{result['skipped_seen_in_training']} drawn problems skipped because the training "
        "set holds the same question). Sampling: temperature 1, top_k 0, top_p 1, "
        f"{cfg.eval.samples} samples on the first {cfg.eval.sampled_problems} problems, "
        f"torch seed {cfg.train.seed}. Rates are paragraphs per response "
        "(repro_train/eval/detectors.py).",
        "",
        "| | accuracy | recheck_rate | backtrack_rate | frac_with_recheck | frac_with_backtrack | mean_tokens |",
        "|---|---|---|---|---|---|---|",
        f"| greedy | {_fmt(g['pass@1'])} | {_fmt(g['recheck_rate'])} | "
        f"{_fmt(g['backtrack_rate'])} | {_fmt(g['frac_with_recheck'])} | "
        f"{_fmt(g['frac_with_backtrack'])} | {_fmt(g['mean_tokens'])} |",
    ]
    if s is not None:
        lines.append(
            f"| sampled, T=1 | {_fmt(s['pass@1'])} | {_fmt(s['recheck_rate'])} | "
            f"{_fmt(s['backtrack_rate'])} | {_fmt(s['frac_with_recheck'])} | "
            f"{_fmt(s['frac_with_backtrack'])} | {_fmt(s['mean_tokens'])} |"
        )
    lines += [
        f"| training data | 1.000 | {_fmt(d['recheck_rate'])} | {_fmt(d['backtrack_rate'])} | "
        f"{_fmt(d['frac_with_recheck'])} | {_fmt(d['frac_with_backtrack'])} | "
        f"{_fmt(stats['response_tokens'] / stats['n_examples'])} |",
        "",
    ]
    if s is not None:
        lines += [
            f"Sampled maj@{cfg.eval.samples}: {_fmt(s.get(f'maj@{cfg.eval.samples}'))}; "
            f"gold value appears in {_fmt(s['frac_answer_appears'])} of samples; "
            f"evaluation took {result['eval_s']:.0f} s.",
            "",
        ]
    return lines


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)
