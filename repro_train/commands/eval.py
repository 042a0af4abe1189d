"""`repro-train eval`: accuracy, lengths and overthinking metrics of one or more models (docs/evaluation.md).

    repro-train eval --model toy --data toy --samples 4 --out runs/eval
    repro-train eval --model before=toy --model after=runs/x/checkpoint-000100/policy --data toy
    repro-train eval --model PATH --data gsm8k.jsonl --reward math_verify     # "#### 42" answers
    repro-train eval --model models/thinker --engine vllm --dtype bfloat16 --reference response \\
        --data "test=thinking:all?n=200&split=test" --data "hard=thinking:all?n=200&split=hard" --out runs/eval

Every model answers the same problems with the same seeds. Writes DIR/summary.json, DIR/samples_<label>.jsonl
and two plots and prints a table; with several --data NAME=SOURCE, each set's files go to DIR/NAME/. The
options, metrics and files: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

from ..core.text import eos_ids
from ..core.typed_config import ConfigError
from ..eval.plots import plot_accuracy_vs_length, plot_length_histograms
from ..eval.runner import (
    EvalError,
    EvalSettings,
    build_engine,
    default_reward,
    encode_problems,
    evaluate,
    evaluate_references,
    load_problems,
)
from ..models.loading import load_for_inference, model_folder
from ..trainer.checkpoint import list_checkpoints

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
        help="model folder, 'toy' for the shipped tiny reasoner, or a training run's folder (its latest checkpoint); "
        "repeat to compare (a bare PATH is labelled by its folder name)",
    )
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[NAME=]SOURCE",
        help="'toy', a named set or a JSONL file with question and answer fields; repeat with NAME= for several sets "
        "(each written to OUT/NAME/)",
    )
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
    add_source_options(p, d)
    p.add_argument("--out", default="runs/eval", help="output folder (default runs/eval)")
    return p


def add_source_options(p: argparse.ArgumentParser, d: EvalSettings) -> None:
    """--pass-k, --reference, the device and dtype, and the sampler (--engine and its vLLM options)."""
    p.add_argument(
        "--pass-k",
        default=None,
        help="pass@k values (unbiased estimator, docs/evaluation.md), comma-separated (default: the --k values)",
    )
    p.add_argument(
        "--reference",
        default=None,
        metavar="FIELD",
        help="also score the data's own responses in column FIELD, labelled 'reference' (e.g. response)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument(
        "--engine", default="hf", choices=["hf", "vllm"], help="sampler: transformers generate or vLLM (GPU)"
    )
    p.add_argument(
        "--vllm-memory", type=float, default=d.vllm_memory, help="--engine vllm: share of the GPU's memory it may take"
    )
    p.add_argument("--vllm-kv-gb", type=float, default=None, help="--engine vllm: a fixed KV cache size in GiB")
    p.add_argument(
        "--vllm-eager", action="store_true", help="--engine vllm: no compile, no CUDA graphs (starts in seconds)"
    )


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
        models[label] = run_policy(resolved) or path
    return models


def run_policy(path: str) -> str | None:
    """The policy of the latest checkpoint when `path` is a training run's folder (train.output_dir: checkpoints and
    no config.json of its own), else None."""
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "config.json")):
        return None
    found = list_checkpoints(path)
    return os.path.join(found[-1], "policy") if found else None


def parse_k(text: str, flag: str = "--k") -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise EvalError(f"{flag} {text!r}: expected comma-separated integers such as 1,4,8") from None
    if not ks or min(ks) < 1:
        raise EvalError(f"{flag} {text!r}: values must be >= 1")
    return ks


def _k(name: str) -> int:
    """The k of 'pass@k' / 'maj@k'."""
    return int(name.partition("@")[2])


def settings_from_args(args, source: str) -> EvalSettings:
    """The run's EvalSettings; `source` (the first data set) picks the default reward."""
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
        reward=args.reward or default_reward(source),
        seed=args.seed,
        k_values=parse_k(args.k),
        pass_k=parse_k(args.pass_k if args.pass_k is not None else args.k, "--pass-k"),
        system_prompt=args.system_prompt,
        think_end=args.think_end,
        engine=args.engine,
        vllm_memory=args.vllm_memory,
        vllm_kv_cache_gb=args.vllm_kv_gb,
        vllm_cuda_graphs=not args.vllm_eager,
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


def parse_data(specs: list[str]) -> dict[str, str]:
    """{name: source} from '[NAME=]SOURCE' strings (a named set's own '=' signs stay in its source: a NAME is letters,
    digits, '_', '.', '-' only). One set needs no name; several need distinct ones (a file defaults to its stem)."""
    sets: dict[str, str] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not (sep and _LABEL.match(name) and source and not os.path.exists(spec)):
            stem = os.path.splitext(os.path.basename(spec))[0]
            name, source = (stem if os.path.exists(spec) and _LABEL.match(stem) else spec), spec
        if len(specs) > 1 and not _LABEL.match(name):
            raise EvalError(f"--data {spec!r}: with several sets, name each one: --data NAME={spec}")
        if name in sets:
            raise EvalError(f"--data {spec!r}: the set name {name!r} is used twice; name them with NAME=SOURCE")
        sets[name] = source
    return sets


def _arch(model) -> tuple:
    c = model.config
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
    return tuple(getattr(c, k, None) for k in (*keys, "intermediate_size", "vocab_size"))


def _engine_for(model, tok, path: str, sets: dict[str, list[dict]], settings: EvalSettings, dtype: str, state: dict):
    """The run's vLLM engine, built for the first model; later models must share its architecture."""
    if state.get("engine") is None:
        longest = max(len(p) for probs in sets.values() for p in encode_problems(tok, probs, settings))
        limit = getattr(model.config, "max_position_embeddings", None) or longest + settings.max_new_tokens
        max_len = min(limit, longest + settings.max_new_tokens)
        state["engine"] = build_engine(model_folder(path), settings, eos_ids(model, tok), max_len, dtype)
        state["arch"] = _arch(model)
    elif _arch(model) != state["arch"]:
        raise EvalError(
            f"{path} has another architecture than the first --model: one vLLM engine serves one; run apart"
        )
    return state["engine"]


def _evaluate_model(path: str, sets: dict[str, list[dict]], settings: EvalSettings, args, state: dict) -> dict:
    """{set name: (summary, samples)} of one model on every set (only one model is in memory at a time); the first
    model's tokenizer also scores the sets' reference responses when asked (state["reference"])."""
    vllm = settings.engine == "vllm"
    model, tok = load_for_inference(path, args.dtype, "cpu" if vllm else args.device)  # vLLM: weights pushed from here
    engine = _engine_for(model, tok, path, sets, settings, args.dtype, state) if vllm else None
    state["version"] = state.get("version", -1) + 1
    if args.reference and "reference" not in state:
        eos = eos_ids(model, tok)
        state["reference"] = {name: evaluate_references(tok, probs, settings, eos) for name, probs in sets.items()}
    return {name: evaluate(model, tok, probs, settings, True, engine, state["version"]) for name, probs in sets.items()}


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


def write_sets(args, models: dict, sources: dict, sets: dict, settings: EvalSettings, summaries, samples) -> None:
    """Each set's files (OUT/, or OUT/<set>/ when there are several) and table; settings recorded per label."""
    for name, src in sources.items():
        run = {"data": src, "n_problems": len(sets[name]), "device": args.device, "dtype": args.dtype}
        run.update({"toy_seed": args.toy_seed} if src == "toy" else {}, **dataclasses.asdict(settings))
        for label in summaries[name]:
            model = f"reference:{args.reference}" if label == "reference" else models[label]
            summaries[name][label] = {**summaries[name][label], "settings": {"model": model, **run}}
        out = Path(args.out) if len(sets) == 1 else Path(args.out) / name
        write_outputs(out, summaries[name], samples[name])
        print(("" if len(sets) == 1 else f"[{name}]\n") + format_table(summaries[name]))
        print(f"wrote {out}/summary.json, samples_<label>.jsonl, accuracy_vs_length.png, length_hist.png")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        models = parse_models(args.model)
        if args.reference and "reference" in models:
            raise EvalError(
                "--reference scores the data's responses as the label 'reference': label the model otherwise"
            )
        sources = parse_data(args.data)
        settings = settings_from_args(args, next(iter(sources.values())))
        sets = {
            name: load_problems(
                src,
                args.n_problems,
                toy_seed=args.toy_seed,
                question_field=args.question_field,
                answer_field=args.answer_field,
                answer_regex=args.answer_regex,
                reference_field=args.reference,
            )
            for name, src in sources.items()
        }
    except EvalError as e:
        print(f"repro-train eval: error: {e}", file=sys.stderr)
        return 2
    import torch

    args.device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    for name, src in sources.items():
        print(
            f"[{name}] {len(sets[name])} problems from {src}, {settings.samples} sample(s) each, "
            f"reward {settings.reward}"
        )
    summaries = {name: {} for name in sets}
    samples = {name: {} for name in sets}
    state: dict = {}
    for label, path in models.items():
        print(f"[{label}] {path}")
        try:
            results = _evaluate_model(path, sets, settings, args, state)
        except (EvalError, ConfigError) as e:  # ConfigError: a model folder that is not there or not complete
            print(f"repro-train eval: error: [{label}] {e}", file=sys.stderr)
            return 2
        for name, (summary, rows) in results.items():
            summaries[name][label], samples[name][label] = summary, rows
    for name, refs in state.get("reference", {}).items():
        summaries[name]["reference"], samples[name]["reference"] = refs
    write_sets(args, models, sources, sets, settings, summaries, samples)
    return 0
