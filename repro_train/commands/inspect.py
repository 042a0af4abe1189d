"""`repro-train inspect`: what RePro thinks of a chain of thought.

    repro-train inspect --model PATH --input rows.jsonl --output out.jsonl [--plot DIR]
                        [--temperature 1.0] [--top-k 10 --w 0.2 ... any RePro option]

Each input row has `prompt` (or `question`: the model's chat template is applied, or `prompt_ids`),
`response` (or `response_ids`) and `answer`; an optional `group` puts rows in one normalisation
pool (default: each row alone). Each output row has the token ids scored, the segments with their
fork entropies and selection, the cut points, J_b, J, S_magn, S_stab, S, r, the normalised r' and
the token process advantage A_tilde. A bad row is reported with its line number and field and
written as {"row": i, "error": ...}; the other rows are still processed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import typing
from typing import Literal

import torch

from ..config import AlgoConfig
from ..core.text import response_format
from ..core.typed_config import ConfigError, build, field_docs, to_dict
from ..data.jsonl import iter_jsonl
from ..data.prompts import RowError, encode_prompt
from ..models.forward import pack
from ..models.loading import load_for_inference
from ..repro.config import ReProConfig, validate_repro
from ..repro.pipeline import RePro
from ..repro.presets import resolve_preset
from ..repro.probe import ProbeSettings
from .inspect_mc import add_mc_flags, inspect_mc

# RePro fields that change nothing `inspect` reports (they act in the trainer).
TRAINER_ONLY = {"enabled", "alpha", "apply_to", "ppo_process_reward"}
PROBE_FLAGS = "probe_"
"""The prefix of the `repro.probe.*` flags: --probe-impl sets repro.probe.impl."""


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, skip=(), prefix: str = "") -> None:
    """One `--{prefix}field-name` flag per field of `cls` (dest `{prefix}field_name`), typed, with
    the field's doc as help."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        name = prefix + f.name
        kw = {"dest": name, "default": None, "help": f"{docs.get(f.name, '')} (default: {f.default!r})"}
        if typing.get_origin(tp) is Literal:
            kw["choices"] = typing.get_args(tp)
        elif typing.get_origin(tp) is tuple:
            kw["nargs"] = "+"
        else:
            kw["type"] = {bool: _bool, int: int, float: float}.get(tp, str)
        parser.add_argument("--" + name.replace("_", "-"), **kw)


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(
        prog="repro-train inspect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", required=True, help="model folder (Hugging Face format) or 'toy' for the shipped tiny reasoner"
    )
    p.add_argument("--input", required=True, help="JSONL rows with prompt|question, response, answer")
    p.add_argument("--output", required=True, help="JSONL to write, one row per input row")
    p.add_argument("--plot", default=None, help="folder for one PNG per row")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature for the fork entropies (default 1.0)"
    )
    p.add_argument("--system-prompt", default=None, help="system message for rows given as 'question'")
    p.add_argument(
        "--think-end", default="</think>", help="the model's end-of-thinking marker (a recipe's model.think_end)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--show", type=int, default=1, help="print segments, cuts, J, S and r of the first N rows (default 1)"
    )
    add_dataclass_flags(p, ReProConfig, skip=TRAINER_ONLY | {"probe"})
    add_dataclass_flags(p, ProbeSettings, prefix=PROBE_FLAGS)
    add_mc_flags(p)
    return p


def repro_config(args: argparse.Namespace) -> ReProConfig:
    """The ReProConfig the flags describe: flags given win, `--preset` fills the options it governs
    (as `repro.preset` does in a recipe; the folds of GRPO), the rest keep the defaults."""

    def given(cls, prefix="", skip=()):
        return {
            f.name: getattr(args, prefix + f.name)
            for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(args, prefix + f.name) is not None
        }

    raw = {"repro": {**given(ReProConfig, skip=TRAINER_ONLY | {"probe"}), "probe": given(ProbeSettings, PROBE_FLAGS)}}
    raw = resolve_preset(raw, to_dict(ReProConfig()), AlgoConfig.estimator, ReProConfig.preset)
    return build(ReProConfig, raw["repro"], "--")


def read_rows(path: str, tokenizer, system_prompt: str | None):
    """Yield (index, encoded row or None, error or None) for each non-blank line."""
    for i, row, why in iter_jsonl(path):
        where = f"{path}:{i}"
        try:
            if why is not None:
                raise RowError(f"{where}: {why}")
            prompt_ids = encode_prompt(tokenizer, row, system_prompt, where)
            if row.get("response_ids") is not None:
                resp = row["response_ids"]
                if not isinstance(resp, list) or not all(isinstance(t, int) for t in resp):
                    raise RowError(f"{where}: 'response_ids' must be a list of token ids")
            elif isinstance(row.get("response"), str):
                resp = tokenizer(row["response"], add_special_tokens=False).input_ids
            else:
                raise RowError(f"{where}: missing field 'response' (a string) or 'response_ids'")
            if not resp:
                raise RowError(f"{where}: field 'response' is empty")
            if row.get("answer") is None or str(row["answer"]).strip() == "":
                raise RowError(f"{where}: missing field 'answer' (the ground-truth answer J scores)")
            yield (
                i,
                {
                    "prompt_ids": prompt_ids,
                    "response_ids": list(resp),
                    "answer": str(row["answer"]),
                    "group": row.get("group", f"row{i}"),
                },
                None,
            )
        except RowError as e:
            yield i, None, str(e)


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def repro_rows(
    model, tokenizer, cfg: ReProConfig, rows: list[dict], temperature: float, think_end: str = "</think>"
) -> list[dict]:
    """RePro's view of each row (one batch)."""
    repro = RePro(cfg, tokenizer, response_format(model, tokenizer, think_end), temperature)
    plan = repro.plan([r["response_ids"] for r in rows], [r["answer"] for r in rows])
    device = next(model.parameters()).device
    seqs = pack([r["prompt_ids"] for r in rows], [r["response_ids"] for r in rows], repro.probe.pad_id, device)
    scored = repro.policy_pass(model, seqs, plan.requests)
    names = {g: k for k, g in enumerate(dict.fromkeys(r["group"] for r in rows))}
    groups = torch.tensor([names[r["group"]] for r in rows])
    out = repro.advantages(plan, scored.probes, groups, seqs.response_mask.shape[1])
    results = []
    for b, row in enumerate(rows):
        seg, req, probe, m = plan.segmentations[b], plan.requests[b], scored.probes[b], int(out.mask[b].sum())
        segments = []  # the candidates: a fork's start and the cut it gives (its end; its start under cut_at fork)
        if req is not None and probe is not None:
            for k, (s, e) in enumerate(zip(req.seg_starts, req.seg_ends)):
                segments.append({"start": s, "end": e, "entropy": _num(probe.H[k]), "selected": probe.selected[k]})
        n = len(row["response_ids"])
        results.append(
            {
                "prompt_ids": row["prompt_ids"],
                "response_ids": row["response_ids"],
                "answer": row["answer"],
                "thinking_end": seg.T if seg is not None else None,
                "segments": segments,
                "cuts": out.cuts[b, :m].tolist(),
                "J_b": _num(out.J_b[b]),
                "J": [_num(v) for v in out.J[b, :m]],
                "S_magn": [_num(v) for v in out.S_magn[b, :m]],
                "S_stab": [_num(v) for v in out.S_stab[b, :m]],
                "S": [_num(v) for v in out.S[b, :m]],
                "r": [_num(v) for v in out.r[b, :m]],
                "r_norm": [_num(v) for v in out.r_norm[b, :m]],
                "A_tilde": [_num(v) for v in out.process_adv[b, :n]],
                "skipped": plan.skip[b]
                if plan.skip[b] is not None
                else ("zero_baseline" if probe is not None and probe.J_b == 0.0 else None),
            }
        )
    return results


def format_row(res: dict) -> str:
    """A few lines for the terminal: segments (start-end, entropy, * = selected), cuts, J_b, J, S, r."""
    segs = " ".join(
        f"{s['start']}-{s['end']}:{s['entropy']:.3f}{'*' if s['selected'] else ''}" for s in res["segments"]
    )

    def nums(xs):
        return "[" + ", ".join("nan" if x is None else f"{x:.6f}" for x in xs) + "]"

    return "\n".join(
        [
            f"row {res['row']} (answer {res['answer']!r}, thinking ends at token {res['thinking_end']}"
            + (f", skipped: {res['skipped']}" if res["skipped"] else "")
            + ")",
            f"  segments  {segs or '-'}",
            f"  cuts      {res['cuts']}",
            f"  J_b       {'nan' if res['J_b'] is None else format(res['J_b'], '.6f')}",
            f"  J         {nums(res['J'])}",
            f"  S         {nums(res['S'])}",
            f"  r         {nums(res['r'])}",
        ]
    )


def plot_row(res: dict, path: str, title: str) -> None:
    """J along the response (J_b at 0, J at each selected cut), cuts marked, per-step r below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    cuts, J = res["cuts"], res["J"]
    for s in res["segments"]:
        ax1.axvline(s["start"], color="0.85", lw=0.8, zorder=0)
    if res["J_b"] is not None:
        ax1.plot([0] + cuts, [res["J_b"]] + J, "o-", color="C0", label="J (answer log-prob)")
        ax1.axhline(res["J_b"], color="C7", ls=":", label="J_b (no reasoning)")
    for c in cuts:
        ax1.axvline(c, color="C3", ls="--", lw=1.0)
    ax1.set_ylabel("J")
    if res["J_b"] is not None:
        ax1.legend(loc="lower right", fontsize=8)
    ax1.set_title(title, fontsize=9)
    prev = 0
    for c, r in zip(cuts, res["r"]):
        ax2.bar(prev, r, width=c - prev, align="edge", color="C2" if r >= 0 else "C3", alpha=0.7, edgecolor="k", lw=0.5)
        prev = c
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_ylabel("r per step")
    ax2.set_xlabel("response token (grey: segment starts, red dashed: selected cuts)")
    ax2.set_xlim(0, max(len(res["response_ids"]), 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = repro_config(args)
        validate_repro(cfg, prefix="--")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not os.path.exists(args.input):
        print(f"error: --input {args.input} does not exist", file=sys.stderr)
        return 2
    model, tok = load_for_inference(args.model, args.dtype, args.device)
    parsed = list(read_rows(args.input, tok, args.system_prompt))
    errors = [(i, e) for i, _, e in parsed if e is not None]
    for _, e in errors:
        print(f"error: {e}", file=sys.stderr)
    good = [(i, r) for i, r, e in parsed if e is None]
    results: dict[int, dict] = {}
    from tqdm import tqdm

    bar = tqdm(total=len(good), desc="inspect", unit="row", disable=None)
    for s in range(0, len(good), args.batch_size):
        chunk = good[s : s + args.batch_size]
        for (i, _), res in zip(
            chunk, repro_rows(model, tok, cfg, [r for _, r in chunk], args.temperature, args.think_end)
        ):
            results[i] = {"row": i, **res}
        bar.update(len(chunk))
    bar.close()
    if args.mc_values:
        inspect_mc(model, tok, list(results.values()), args)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as fh:
        for i, _, e in parsed:
            fh.write(json.dumps(results[i] if e is None else {"row": i, "error": e}) + "\n")
    if args.plot:
        os.makedirs(args.plot, exist_ok=True)
        for i, res in results.items():
            plot_row(res, os.path.join(args.plot, f"row{i:05d}.png"), f"row {i}: answer {res['answer']!r}")
    for i in sorted(results)[: args.show]:
        print(format_row(results[i]))
    n_skip = sum(1 for r in results.values() if r["skipped"])
    print(
        f"scored {len(results)} rows ({n_skip} skipped by RePro), {len(errors)} bad rows -> {args.output}"
        + (f"; plots in {args.plot}" if args.plot else "")
    )
    return 1 if errors else 0
