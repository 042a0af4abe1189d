"""`repro-train eval`: accuracy, lengths and overthinking metrics of one or more models.

    repro-train eval --model toy --data toy --samples 4 --out runs/eval
    repro-train eval --model before=toy --model after=runs/x/checkpoint-000100/policy --data toy
    repro-train eval --model PATH --data gsm8k.jsonl --reward math_verify     # "#### 42" answers

Every model answers the same problems with the same seeds. Writes DIR/summary.json
({label: metrics + settings}), DIR/samples_<label>.jsonl (one row per response),
DIR/accuracy_vs_length.png and DIR/length_hist.png, and prints a table. Metrics:
docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

from ..core.typed_config import ConfigError
from ..eval.plots import plot_accuracy_vs_length, plot_length_histograms
from ..eval.runner import EvalError, EvalSettings, default_reward, evaluate, load_problems
from ..models.loading import load_for_inference, model_folder

_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")
_HUB_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="repro-train eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = EvalSettings()
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[LABEL=]PATH",
        help="model folder, or 'toy' for the shipped tiny reasoner; repeat to compare "
        "(a bare PATH is labelled by its folder name)",
    )
    p.add_argument("--data", required=True, help="'toy' or a JSONL file with question and answer fields")
    p.add_argument(
        "--n-problems", type=int, default=None, help="first N problems (default: 200 toy problems, every row of a file)"
    )
    p.add_argument(
        "--toy-seed", type=int, default=777, help="seed of the generated toy problems (default 777; training uses 1234)"
    )
    p.add_argument("--question-field", default="question", help="question column of the JSONL (default question)")
    p.add_argument("--answer-field", default="answer", help="answer column of the JSONL (default answer)")
    p.add_argument(
        "--answer-regex",
        default=None,
        help="regex with one group that extracts the gold from the answer field "
        "(default: the text after '####' when present, else the whole field)",
    )
    p.add_argument(
        "--samples", type=int, default=None, help=f"responses per problem (default {d.samples}; 1 with --greedy)"
    )
    p.add_argument("--greedy", action="store_true", help="one argmax response per problem")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="problems per generate call with --greedy")
    p.add_argument(
        "--reward",
        choices=["math_verify", "exact_match", "numeric", "last_number"],
        default=None,
        help="correctness check (default: exact_match on toy, math_verify otherwise)",
    )
    p.add_argument("--system-prompt", default=None, help="system message before each question")
    p.add_argument(
        "--think-end", default=d.think_end, help="the model's end-of-thinking marker (a recipe's model.think_end)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="problem i is sampled from seed (seed, i)")
    p.add_argument("--k", default=",".join(map(str, d.k_values)), help="maj@k values, comma-separated (default 1,4,8)")
    p.add_argument(
        "--pass-k",
        default=None,
        help="pass@k values (unbiased estimator, docs/evaluation.md), comma-separated (default: the --k values)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--out", default="runs/eval", help="output folder (default runs/eval)")
    return p


def parse_models(specs: list[str]) -> dict[str, str]:
    """{label: path} from '[LABEL=]PATH' strings; checks labels and that paths exist."""
    models: dict[str, str] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or os.path.exists(spec):
            path = spec
            label = "toy" if spec == "toy" else os.path.basename(os.path.normpath(spec))
        elif not label or not path:
            raise EvalError(f"--model {spec!r}: expected LABEL=PATH with both parts non-empty")
        if not _LABEL.match(label):
            raise EvalError(
                f"--model {spec!r}: label {label!r} may hold only letters, digits, '_', '.', '-' "
                "(it names samples_<label>.jsonl)"
            )
        if label in models:
            raise EvalError(f"--model {spec!r}: label {label!r} is used twice; name them with LABEL=PATH")
        try:
            resolved = model_folder(path)
        except (FileNotFoundError, ConfigError) as e:
            raise EvalError(f"--model {spec!r}: {e}") from None
        online = os.environ.get("HF_HUB_OFFLINE") != "1"
        if not os.path.isdir(resolved) and not (online and _HUB_NAME.match(path)):
            raise EvalError(f"--model {spec!r}: {path} is not a model folder")
        models[label] = path
    return models


def parse_k(text: str, flag: str = "--k") -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise EvalError(f"{flag} {text!r}: expected comma-separated integers such as 1,4,8") from None
    if not ks or min(ks) < 1:
        raise EvalError(f"{flag} {text!r}: values must be >= 1")
    return ks


def settings_from_args(args) -> EvalSettings:
    if args.greedy and args.samples not in (None, 1):
        raise EvalError(f"--greedy gives one response per problem; drop --samples {args.samples}")
    samples = 1 if args.greedy else (args.samples if args.samples is not None else EvalSettings.samples)
    return EvalSettings(
        samples=samples,
        greedy=args.greedy,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        reward=args.reward or default_reward(args.data),
        seed=args.seed,
        k_values=parse_k(args.k),
        pass_k=parse_k(args.pass_k if args.pass_k is not None else args.k, "--pass-k"),
        system_prompt=args.system_prompt,
        think_end=args.think_end,
    )


def format_table(summaries: dict[str, dict]) -> str:
    """One line per label: pass@1, each pass@k and maj@k, mean/median tokens, rates, tokens after correct."""
    passes = sorted({k for s in summaries.values() for k in s if k.startswith("pass@") and k != "pass@1"}, key=_k)
    majs = sorted({k for s in summaries.values() for k in s if k.startswith("maj@")}, key=_k)
    head = ["model", "pass@1", *passes, *majs, "mean_tok", "median_tok", "recheck", "backtrack", "after_correct"]
    rows = []
    for label, s in summaries.items():
        after = s["tokens_after_first_correct"]
        rows.append(
            [
                label,
                f"{s['pass@1']:.3f}",
                *(f"{s[m]:.3f}" if m in s else "-" for m in passes + majs),
                f"{s['mean_tokens']:.1f}",
                f"{s['median_tokens']:.1f}",
                f"{s['recheck_rate']:.3f}",
                f"{s['backtrack_rate']:.3f}",
                "-" if after is None else f"{after:.1f}",
            ]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [head, *rows]
    )


def _k(name: str) -> int:
    """The k of 'pass@k' / 'maj@k'."""
    return int(name.partition("@")[2])


def _evaluate_one(path: str, problems: list[dict], settings: EvalSettings, device: str, dtype: str):
    """Load, evaluate and release one model (only one is in memory at a time)."""
    model, tok = load_for_inference(path, dtype, device)
    return evaluate(model, tok, problems, settings)


def write_outputs(out: Path, summaries: dict[str, dict], samples: dict[str, list[dict]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    for label, rows in samples.items():
        with open(out / f"samples_{label}.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    plot_accuracy_vs_length(summaries, out / "accuracy_vs_length.png")
    plot_length_histograms(
        {label: [r["n_tokens"] for r in rows] for label, rows in samples.items()}, out / "length_hist.png"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        models = parse_models(args.model)
        settings = settings_from_args(args)
        problems = load_problems(
            args.data,
            args.n_problems,
            toy_seed=args.toy_seed,
            question_field=args.question_field,
            answer_field=args.answer_field,
            answer_regex=args.answer_regex,
        )
    except EvalError as e:
        print(f"repro-train eval: error: {e}", file=sys.stderr)
        return 2
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    run = {
        "data": args.data,
        "n_problems": len(problems),
        "device": device,
        "dtype": args.dtype,
        **({"toy_seed": args.toy_seed} if args.data == "toy" else {}),
        **dataclasses.asdict(settings),
    }
    print(f"{len(problems)} problems from {args.data}, {settings.samples} sample(s) each, reward {settings.reward}")
    summaries, samples = {}, {}
    for label, path in models.items():
        print(f"[{label}] {path}")
        try:
            summary, samples[label] = _evaluate_one(path, problems, settings, device, args.dtype)
        except EvalError as e:
            print(f"repro-train eval: error: [{label}] {e}", file=sys.stderr)
            return 2
        summaries[label] = {**summary, "settings": {"model": path, **run}}
    write_outputs(Path(args.out), summaries, samples)
    print(format_table(summaries))
    print(f"wrote {args.out}/summary.json, samples_<label>.jsonl, accuracy_vs_length.png, length_hist.png")
    return 0
