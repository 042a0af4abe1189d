"""`repro-train inspect`: what RePro thinks of a chain of thought, step by step.

    repro-train inspect --run runs/toy/grpo_repro                 # your run: its recipe, its logged samples
    repro-train inspect --run runs/toy/grpo_repro --step 40 --model runs/toy/grpo_repro/checkpoint-000039/policy
    repro-train inspect --recipe recipes/toy/grpo_repro.yaml --input examples/inspect/rows.jsonl --output out.jsonl
    repro-train inspect --model toy --input rows.jsonl --output out.jsonl --plot plots/
                        [--temperature 1.0] [--top-k 10 --w 0.2 ... any RePro option]

Each row (a sample the run logged, or one of yours with `prompt` or `question`, `response` and `answer`) comes
out with its segments, cuts, J_b, J, S, r, r' and A_tilde, and per step the text between two cuts beside its
numbers. Inputs, outputs, bad rows and the check against training: docs/repro.md, "Seeing it on one chain of
thought".
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

from ..config import AlgoConfig, Config, load
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
PLAIN_DEFAULTS = {"temperature": 1.0, "think_end": "</think>", "dtype": "float32"}
"""Defaults of the flags a run's recipe fills under --run."""


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
    p.add_argument("--run", default=None, help="a run folder: its config.yaml and samples.jsonl (see above)")
    p.add_argument(
        "--recipe", default=None, help="a recipe: its RePro options, model, model.think_end, dtype and temperature"
    )
    p.add_argument("--step", default=None, help="--run: the logged step to score (default: the first; 'all')")
    p.add_argument(
        "--model", default=None, help="model folder (Hugging Face format), 'toy' (the shipped tiny reasoner)"
    )
    p.add_argument("--input", default=None, help="JSONL rows with prompt|question, response, answer")
    p.add_argument("--output", default=None, help="JSONL to write, one row per input row")
    p.add_argument("--plot", default=None, help="folder for one PNG per row")
    p.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature for the fork entropies (default 1.0)"
    )
    p.add_argument("--system-prompt", default=None, help="system message for rows given as 'question'")
    p.add_argument(
        "--think-end", default=None, help="the model's end-of-thinking marker (a recipe's model.think_end; </think>)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default float32")
    p.add_argument("--show", type=int, default=1, help="print the steps of the first N rows (default 1)")
    add_dataclass_flags(p, ReProConfig, skip=TRAINER_ONLY | {"probe"})
    add_dataclass_flags(p, ProbeSettings, prefix=PROBE_FLAGS)
    add_mc_flags(p)
    return p


# ---------------------------------------------------------------------------------------------
# settings: flags, a run's recipe
# ---------------------------------------------------------------------------------------------


def repro_config(args: argparse.Namespace, run: Config | None = None) -> ReProConfig:
    """The ReProConfig the flags describe: flags given win, `--preset` fills the options it governs
    (as `repro.preset` does in a recipe; the folds of GRPO), the rest keep the run's values (`run`)
    or the defaults."""

    def given(cls, prefix="", skip=()):
        return {
            f.name: getattr(args, prefix + f.name)
            for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(args, prefix + f.name) is not None
        }

    flags = {**given(ReProConfig, skip=TRAINER_ONLY | {"probe"}), "probe": given(ProbeSettings, PROBE_FLAGS)}
    if run is None:
        raw = resolve_preset({"repro": flags}, to_dict(ReProConfig()), AlgoConfig.estimator, ReProConfig.preset)
        return build(ReProConfig, raw["repro"], "--")
    base = to_dict(run.repro)
    if args.preset is not None:  # the preset's values over the run's, the flags over both
        flags = resolve_preset({"repro": flags, "algo": {"estimator": run.algo.estimator}}, base, run.algo.estimator)[
            "repro"
        ]
    merged = {**base, **flags, "probe": {**base["probe"], **flags.get("probe", {})}}
    return build(ReProConfig, merged, "--")


def load_recipe(args: argparse.Namespace) -> Config | None:
    """The recipe whose settings inspect takes: --run's resolved config.yaml or --recipe (None: neither). Its resume
    setting is dropped (the checkpoint may be gone)."""
    if args.run and args.recipe:
        raise ConfigError("give --run DIR or --recipe FILE, not both (--run reads DIR/config.yaml)")
    path = os.path.join(args.run, "config.yaml") if args.run else args.recipe
    if args.run and not os.path.isfile(path):
        raise ConfigError(f"--run {args.run}: no config.yaml there (a run folder is a recipe's train.output_dir)")
    return load(path, ["train.resume=null"]) if path else None


def fill_defaults(args: argparse.Namespace, run: Config | None) -> None:
    """Model, input, output, temperature, end-of-thinking marker and dtype: given flags, else the run's (or the
    recipe's), else the plain defaults. Raises ConfigError naming a missing flag."""
    if args.run:
        args.input = args.input or os.path.join(args.run, "samples.jsonl")
        args.output = args.output or os.path.join(args.run, "inspect.jsonl")
    if run is not None:
        args.model = args.model or run.model.path
        taken = {"temperature": run.rollout.temperature, "think_end": run.model.think_end, "dtype": run.model.dtype}
    else:
        taken = PLAIN_DEFAULTS
    for key, value in taken.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for flag in ("model", "input", "output"):
        if getattr(args, flag) is None:
            raise ConfigError(f"--{flag} is required (or --run DIR, which reads a run's config.yaml and samples)")
    if not os.path.exists(args.input):
        raise ConfigError(f"--input {args.input} does not exist")


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------

LOGGED = ("J_b", "J", "cuts", "r", "r_norm")
"""What training logged of a sample (samples.jsonl), kept beside the recomputed values."""


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
            encoded = {
                "prompt_ids": prompt_ids,
                "response_ids": list(resp),
                "answer": str(row["answer"]),
                "group": row.get("group", f"row{i}"),
                "step": row.get("step"),
                "logged": {k: row[k] for k in LOGGED if k in row} if "J" in row else None,
            }
            yield i, encoded, None
        except RowError as e:
            yield i, None, str(e)


def select_step(parsed: list, step: str | None, from_run: bool) -> tuple[list, str]:
    """The parsed rows of one logged step: `step` (an integer or 'all'); under --run the first step by default.
    Returns (rows, a few words on the choice)."""
    if (step is None and not from_run) or step == "all":
        return parsed, ""
    steps = sorted({r["step"] for _, r, e in parsed if e is None and r["step"] is not None})
    if step is None:
        if not steps:
            return parsed, ""
        want = steps[0]
    else:
        try:
            want = int(step)
        except ValueError:
            raise ConfigError(f"--step must be a step number or 'all', got {step!r}") from None
        if want not in steps:
            shown = f"{steps[0]}..{steps[-1]}" if steps else "none"
            raise ConfigError(f"--step {want}: no rows of that step in the input (steps logged: {shown})")
    kept = [(i, r, e) for i, r, e in parsed if e is not None or r["step"] == want]
    return kept, f"of step {want}"


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------


def repro_rows(
    model, tokenizer, cfg: ReProConfig, rows: list[dict], temperature: float, think_end: str = "</think>"
) -> list[dict]:
    """RePro's view of each row (one batch): the pipeline the trainer runs (plan, policy pass, advantages)."""
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
        res = {
            "prompt_ids": row["prompt_ids"],
            "response_ids": row["response_ids"],
            "answer": row["answer"],
            "thinking_end": seg.T if seg is not None else None,
            "segments": segments,
            "cuts": out.cuts[b, :m].tolist(),
            "J_b": None if math.isnan(out.J_b[b]) else float(out.J_b[b]),
            "J": out.J[b, :m].tolist(),
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
        res["steps"] = step_texts(tokenizer, res)
        results.append(res)
    return results


def step_texts(tokenizer, res: dict) -> list[dict]:
    """One entry per scored step: the response text from the previous cut to this one beside the step's J, S, r,
    r' and A_tilde (the process advantage each of its tokens gets: r' of this step and every later one); a last
    entry without scores holds the text after the last cut."""
    ids, out, prev = res["response_ids"], [], 0
    for j, c in enumerate(res["cuts"]):
        out.append(
            {
                "start": prev,
                "end": c,
                "text": tokenizer.decode(ids[prev:c]),
                "J": res["J"][j],
                "S": res["S"][j],
                "r": res["r"][j],
                "r_norm": res["r_norm"][j],
                "A_tilde": res["A_tilde"][prev] if prev < len(res["A_tilde"]) else None,
            }
        )
        prev = c
    if prev < len(ids):
        out.append({"start": prev, "end": len(ids), "text": tokenizer.decode(ids[prev:])})
    return out


def logged_gap(res: dict, logged: dict | None) -> float | None:
    """max |J - logged J| over the cuts and J_b, when the row carries training's log and the cuts agree."""
    if not logged or logged.get("cuts") != res["cuts"] or logged.get("J_b") is None or res["J_b"] is None:
        return None
    return max([abs(a - b) for a, b in zip(res["J"], logged["J"])] + [abs(res["J_b"] - logged["J_b"])])


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def short(text: str, width: int = 56) -> str:
    """`text` on one line (newlines shown as \\n), cut to `width` characters."""
    one = text.replace("\n", "\\n")
    return one if len(one) <= width else one[: width - 1] + "…"


def format_row(res: dict) -> str:
    """The terminal view of one row: the segments (start-end:entropy, * = selected), J_b, then one line per
    step with its tokens, J, S, r, r', A_tilde and text."""
    segs = " ".join(
        f"{s['start']}-{s['end']}:{s['entropy']:.3f}{'*' if s['selected'] else ''}" for s in res["segments"]
    )
    f = lambda x, spec: "nan" if x is None else format(x, spec)  # noqa: E731
    head = (
        f"row {res['row']} (answer {res['answer']!r}, thinking ends at token {res['thinking_end']}"
        + (f", skipped: {res['skipped']}" if res["skipped"] else "")
        + (f", step {res['step']}" if res.get("step") is not None else "")
        + ")"
    )
    lines = [
        head,
        f"  segments  {segs or '-'}",
        f"  cuts      {res['cuts']}",
        f"  J_b       {f(res['J_b'], '.6f')}  (J of the answer with no reasoning)",
        f"  {'step':>4} {'tokens':>9} {'J':>9} {'S':>7} {'r':>8} {'r_norm':>7} {'A_tilde':>7}  text",
    ]
    for k, s in enumerate(res["steps"], start=1):
        where = f"{s['start']}-{s['end']}"
        if "J" in s:
            lines.append(
                f"  {k:>4} {where:>9} {f(s['J'], '.4f'):>9} {f(s['S'], '.4f'):>7} {f(s['r'], '+.4f'):>8} "
                f"{f(s['r_norm'], '+.3f'):>7} {f(s['A_tilde'], '+.3f'):>7}  {short(s['text'])}"
            )
        else:
            lines.append(f"  {'':>4} {where:>9} {'(after the last cut: not scored)':>42}  {short(s['text'])}")
    return "\n".join(lines)


def plot_row(res: dict, path: str, title: str) -> None:
    """Three panels along the response: J (J_b at 0, J at each selected cut); each step's r as a bar labelled
    with the step's text; the process advantage A_tilde of every token."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [2, 3, 1.5]})
    cuts, J = res["cuts"], res["J"]
    for s in res["segments"]:
        ax1.axvline(s["start"], color="0.85", lw=0.8, zorder=0)
    if res["J_b"] is not None:
        ax1.plot([0] + cuts, [res["J_b"]] + J, "o-", color="C0", label="J (answer log-prob)")
        ax1.axhline(res["J_b"], color="C7", ls=":", label="J_b (no reasoning)")
        ax1.legend(loc="lower right", fontsize=8)
    for c in cuts:
        for ax in (ax1, ax3):
            ax.axvline(c, color="C3", ls="--", lw=1.0)
    ax1.set_ylabel("J")
    ax1.set_title(title, fontsize=9)
    steps = [s for s in res["steps"] if s.get("r") is not None]
    top, low = max([0.1] + [s["r"] for s in steps]), min([0.0] + [s["r"] for s in steps])
    for s in steps:
        ax2.bar(s["start"], s["r"], width=s["end"] - s["start"], align="edge", color="C2" if s["r"] >= 0 else "C3")
        label = short(s["text"].strip(), 44)
        ax2.text(
            (s["start"] + s["end"]) / 2,
            max(s["r"], 0) + 0.03 * top,
            label,
            ha="center",
            va="bottom",
            fontsize=7,
            rotation=90,
        )
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set_ylim(low - 0.05, 2.4 * top)
    ax2.set_ylabel("process reward r")
    adv = [0.0 if a is None else a for a in res["A_tilde"]]
    ax3.bar(range(len(adv)), adv, width=1.0, align="edge", color=["C2" if a >= 0 else "C3" for a in adv])
    ax3.axhline(0, color="k", lw=0.8)
    ax3.set_ylabel("A_tilde")
    ax3.set_xlabel("response token (grey: segment starts, red dashed: selected cuts)")
    ax3.set_xlim(0, max(len(res["response_ids"]), 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def score_all(model, tok, cfg: ReProConfig, good: list, args) -> dict[int, dict]:
    """{row index: result} for the encoded rows, `args.batch_size` at a time, with a progress bar."""
    from tqdm import tqdm

    results: dict[int, dict] = {}
    bar = tqdm(total=len(good), desc="inspect", unit="row", disable=None)
    for s in range(0, len(good), args.batch_size):
        chunk = good[s : s + args.batch_size]
        for (i, row), res in zip(
            chunk, repro_rows(model, tok, cfg, [r for _, r in chunk], args.temperature, args.think_end)
        ):
            results[i] = {"row": i, **({"step": row["step"]} if row["step"] is not None else {}), **res}
            gap = logged_gap(res, row["logged"])
            if row["logged"] is not None:
                results[i]["logged"] = {**row["logged"], "max_abs_diff_J": gap}
        bar.update(len(chunk))
    bar.close()
    return results


def write_outputs(args, parsed: list, results: dict[int, dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as fh:
        for i, _, e in parsed:
            fh.write(json.dumps(results[i] if e is None else {"row": i, "error": e}) + "\n")
    if args.plot:
        os.makedirs(args.plot, exist_ok=True)
        for i, res in results.items():
            plot_row(res, os.path.join(args.plot, f"row{i:05d}.png"), f"row {i}: answer {res['answer']!r}")


def summary_line(args, results: dict[int, dict], n_errors: int, chosen: str) -> str:
    n_skip = sum(1 for r in results.values() if r["skipped"])
    gaps = [r["logged"]["max_abs_diff_J"] for r in results.values() if "logged" in r]
    line = f"scored {len(results)} rows{f' {chosen}' if chosen else ''} ({n_skip} skipped by RePro), "
    line += f"{n_errors} bad rows -> {args.output}" + (f"; plots in {args.plot}" if args.plot else "")
    known = [g for g in gaps if g is not None]
    if gaps:
        line += f"\nJ against training's log (samples.jsonl): max |difference| {max(known):.2e} over {len(known)} rows"
        line += f", {len(gaps) - len(known)} rows with other cuts" if len(known) < len(gaps) else ""
    return line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run = load_recipe(args)
        cfg = repro_config(args, run)
        validate_repro(cfg, prefix="--")
        fill_defaults(args, run)
        model, tok = load_for_inference(args.model, args.dtype, args.device)
        parsed, chosen = select_step(list(read_rows(args.input, tok, args.system_prompt)), args.step, bool(args.run))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "\\n" in cfg.probe_prefix:  # '</think>\n\n...' in plain shell quotes: a backslash and an n, no newline
        print(
            "note: the probe prefix holds a backslash followed by n, not a newline; in bash write "
            "--probe-prefix $'</think>\\n\\nFinal answer: ', or take it from a recipe (--recipe, --run)",
            file=sys.stderr,
        )
    errors = [(i, e) for i, _, e in parsed if e is not None]
    for _, e in errors:
        print(f"error: {e}", file=sys.stderr)
    results = score_all(model, tok, cfg, [(i, r) for i, r, e in parsed if e is None], args)
    if args.mc_values:  # Monte-Carlo values at the same cuts (inspect_mc.py)
        inspect_mc(model, tok, list(results.values()), args)
    write_outputs(args, parsed, results)
    for i in sorted(results)[: args.show]:
        print(format_row(results[i]))
    print(summary_line(args, results, len(errors), chosen))
    return 1 if errors else 0
