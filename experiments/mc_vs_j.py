"""Monte-Carlo step values against RePro's J on the same cuts (issue 31; docs/repro.md, docs/results.md).

    python experiments/mc_vs_j.py --recipe recipes/toy/grpo_repro.yaml --out DIR
        [--data toy] [--toy-seed 777] [--problems 50] [--rollouts 4] [--k 16] [--seed 0] [--group-by COLUMN]
        [--device cpu] [--override key=value ...]
    python experiments/mc_vs_j.py --out DIR --report-only     # the statistics again from DIR/steps.jsonl

From the recipe (and its --override keys): the model, RePro's settings (segments, cuts, probe, scores, pools), the
end-of-thinking marker, the sampling settings (temperature, top_p, top_k, max_new_tokens), the reward (correct =
its correctness function) and the engine (hf on a CPU or GPU; vllm on a GPU, prefix caching on). Problems come
from --data (default: the toy task with seed 777, held out from the toy recipes' training seed 1234), encoded as
the trainer encodes them. For each problem, --rollouts responses are sampled (seed mix_seed(seed, problem)); RePro's
policy pass selects the cuts (fork entropy) and scores J there; K continuations from every distinct prefix
(prompt + y[:c], c = 0 and each cut; seed mix_seed(seed, problem, rollout or -1 for the prompt, c, 31)) give V.

Per task (all problems; then per value of --group-by: a data column such as the thinking sets' `family`, or
`toy_ops`, the toy problem's number of operations) it reports, over all steps j of all rollouts:
  rho(dJ, dV)     Spearman's rank correlation of the increments dJ_j = J_j - J_{j-1} and dV_j = V_j - V_{j-1}
                  (J_0 = J_b, V_0 = V_b: the prompt alone)
  rho(J, V)       the same for the levels at the cuts
  sign(r) = sign(dV)    share of steps with dV != 0 where RePro's step reward r_j has dV's sign
  sign(r') = sign(r'_mc) the same after each is normalised in RePro's pools (what the fold adds)
  dV = 0          share of steps where V did not move (K continuations cannot resolve the step)
and the cost of each: J's probe tokens (cuts x answer tokens, riding on the policy forward over the rollout
tokens) against MC's sampled continuation tokens, and the wall time of each on this machine.
Writes DIR/steps.jsonl (one row per step), DIR/results.json and DIR/table.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from repro_train.config import load  # noqa: E402
from repro_train.core.seeds import mix_seed  # noqa: E402
from repro_train.core.text import response_format  # noqa: E402
from repro_train.data.datasets import load_prompts  # noqa: E402
from repro_train.eval.mc_values import cut_values  # noqa: E402
from repro_train.models.forward import pack  # noqa: E402
from repro_train.models.loading import load_for_inference, model_folder  # noqa: E402
from repro_train.repro.mc import increments, mc_process_output, sign_agreement, spearman  # noqa: E402
from repro_train.repro.pipeline import RePro  # noqa: E402
from repro_train.rewards import OutcomeReward, RewardSpec  # noqa: E402
from repro_train.rollout.hf import HFEngine  # noqa: E402

MC_SEED_TAG = 31


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", help="a training recipe: model, repro, rollout, reward sections (required)")
    p.add_argument(
        "--override", nargs="*", default=[], action="extend", help="recipe overrides, e.g. model.path=runs/x/policy"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="toy", help="problems: 'toy' or any data.source (named set, JSONL file)")
    p.add_argument("--toy-seed", type=int, default=777, help="seed of the toy problems (training uses 1234)")
    p.add_argument("--problems", type=int, default=50)
    p.add_argument("--rollouts", type=int, default=4, help="responses per problem (RePro's normalisation group)")
    p.add_argument("--k", type=int, default=16, help="continuations per prefix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--group-by", default=None, help="a data column, or toy_ops (default: toy_ops for the toy)")
    p.add_argument("--batch-size", type=int, default=16, help="rollouts per policy pass")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--report-only", action="store_true", help="recompute the statistics of DIR/steps.jsonl")
    return p


def setup(a):
    """(cfg, model, tokenizer, prompt set, engine) as the recipe describes them."""
    cfg = load(a.recipe, list(a.override))
    model, tok = load_for_inference(cfg.model.path, cfg.model.dtype, a.device)
    data_cfg = dataclasses.replace(cfg.data, source=a.data, toy_seed=a.toy_seed, toy_size=a.problems, shuffle=False)
    data = load_prompts(data_cfg, tok)
    fmt = response_format(model, tok, cfg.model.think_end)
    if cfg.rollout.engine == "vllm":
        from repro_train.rollout.vllm import VLLMEngine

        longest = max(len(p) for p in data.prompt_ids[: a.problems])
        dtype = cfg.model.dtype if cfg.rollout.vllm.dtype == "auto" else cfg.rollout.vllm.dtype
        engine = VLLMEngine(
            model_folder(cfg.model.path), cfg.rollout, fmt.eos_ids, longest + cfg.rollout.max_new_tokens, dtype, 0, 1
        )
        engine.push_weights(0, lambda: model.named_parameters())
    else:
        engine = HFEngine(lambda: contextlib.nullcontext(model), cfg.rollout, fmt.eos_ids, tok.pad_token_id, a.device)
    return cfg, model, tok, data, fmt, engine


def task_of(a, data, i: int) -> str | None:
    """The --group-by value of problem i (None: no grouping)."""
    key = a.group_by or ("toy_ops" if a.data == "toy" else None)
    if key == "toy_ops":  # 'Start with 11. Multiply by 5, then add 13, then subtract 1. ...': 3 operations
        return f"ops={len(re.findall(r', then ', data.prompts[i])) + 1}"
    if key is not None:
        return f"{key}={data.columns[key][i]}"
    return None


def score_j(a, cfg, model, tok, fmt, prompts, responses, groups):
    """RePro's plan, policy pass (cuts and J) and advantages over all rollouts; (repro, out, seconds)."""
    repro = RePro(cfg.repro, tok, fmt, cfg.rollout.temperature)
    t0 = time.perf_counter()
    plan = repro.plan(responses, groups["answers"])
    probes = []
    for s in range(0, len(responses), a.batch_size):
        seqs = pack(prompts[s : s + a.batch_size], responses[s : s + a.batch_size], repro.probe.pad_id, a.device)
        with torch.no_grad():
            probes += repro.policy_pass(model, seqs, plan.requests[s : s + a.batch_size]).probes
    width = max(len(r) for r in responses)
    out = repro.advantages(plan, probes, groups["ids"], width)
    return repro, plan, out, time.perf_counter() - t0


def step_rows(out, mc_out, tasks) -> list[dict]:
    """One row per scored step: J, V, their increments, both step rewards and both normalised rewards."""
    dJ = increments(out.J_b, out.J, out.mask)
    dV = increments(mc_out.mc.V_b, mc_out.mc.V, out.mask)
    rows = []
    for b in range(out.mask.shape[0]):
        for j in range(int(out.mask[b].sum())):
            rows.append(
                {
                    "rollout": b,
                    "task": tasks[b],
                    "step": j + 1,
                    "cut": int(out.cuts[b, j]),
                    "J": float(out.J[b, j]),
                    "dJ": float(dJ[b, j]),
                    "V": float(mc_out.mc.V[b, j]),
                    "V_se": float(mc_out.mc.V_se[b, j]),
                    "dV": float(dV[b, j]),
                    "r": float(out.r[b, j]),
                    "r_norm": float(out.r_norm[b, j]),
                    "r_mc_norm": float(mc_out.r_norm[b, j]),
                }
            )
    return rows


def costs(repro, plan, out, responses, mc, seconds: dict) -> dict:
    """Per scored rollout: its tokens (what the policy forward reads anyway), J's probe tokens (forcing text and
    answer at J_b and at each cut), MC's distinct prefixes and sampled continuation tokens; wall times in all."""
    scored = [b for b in range(len(responses)) if out.scored[b]]
    n = max(len(scored), 1)
    probe = sum(
        (int(out.mask[b].sum()) + 1) * (len(repro.forcing_ids) + len(plan.requests[b].answer_ids)) for b in scored
    )
    return {
        "rollout_tokens": sum(len(responses[b]) for b in scored) / n,
        "j_probe_tokens": probe / n,
        "mc_prefixes": mc.prefixes / n,
        "mc_tokens": mc.tokens / n,
        **seconds,
    }


def statistics(rows: list[dict], k: int) -> dict:
    """The point statistics of the module docstring over `rows` (steps)."""
    col = {c: torch.tensor([r[c] for r in rows], dtype=torch.float64) for c in STEP_COLUMNS}
    agree, moved = sign_agreement(col["r"], col["dV"])
    big = col["dV"].abs() >= 4.0 / k
    agree_big, moved_big = sign_agreement(col["r"][big], col["dV"][big])
    agree_norm, moved_norm = sign_agreement(col["r_norm"], col["r_mc_norm"])
    return {
        "steps": len(rows),
        "rollouts": len({r["rollout"] for r in rows}),
        "rho_dJ_dV": spearman(col["dJ"], col["dV"]),
        "rho_J_V": spearman(col["J"], col["V"]),
        "sign_r_dV": agree,
        "steps_dV_moved": moved,
        "sign_r_dV_big": agree_big,
        "steps_dV_big": moved_big,
        "sign_rnorm": agree_norm,
        "steps_rnorm_mc_nonzero": moved_norm,
        "dV_zero_frac": float((col["dV"] == 0).double().mean()) if rows else math.nan,
        "V_se_mean": float(col["V_se"].nanmean()) if rows else math.nan,
    }


STEP_COLUMNS = ("J", "dJ", "V", "dV", "V_se", "r", "r_norm", "r_mc_norm")
BOOTSTRAP = ("rho_dJ_dV", "rho_J_V", "sign_r_dV", "sign_r_dV_big", "sign_rnorm")
"""Statistics given a 95% interval: 1,000 resamples of the problems (a problem's rollouts share prefixes and V_b,
so they are resampled together), percentiles 2.5 and 97.5, generator seed 0."""


def summarize(rows: list[dict], k: int, rollouts: int, resamples: int = 1000) -> dict:
    """`statistics` with bootstrap intervals over problems (problem = rollout // rollouts per problem)."""
    out = statistics(rows, k)
    by_problem: dict[int, list[dict]] = {}
    for r in rows:
        by_problem.setdefault(r["rollout"] // rollouts, []).append(r)
    problems = list(by_problem)
    g = torch.Generator().manual_seed(0)
    draws = {key: [] for key in BOOTSTRAP}
    for _ in range(resamples if len(problems) > 1 else 0):
        pick = torch.randint(len(problems), (len(problems),), generator=g).tolist()
        st = statistics([r for i in pick for r in by_problem[problems[i]]], k)
        for key in BOOTSTRAP:
            if not math.isnan(st[key]):
                draws[key].append(st[key])
    levels = torch.tensor([0.025, 0.975], dtype=torch.float64)
    for key, xs in draws.items():
        out[key + "_ci"] = torch.tensor(xs, dtype=torch.float64).quantile(levels).tolist() if xs else [math.nan] * 2
    return out


def table(res: dict) -> str:
    head = (
        "| task | rollouts | steps | rho(dJ, dV) | rho(J, V) | sign(r) = sign(dV) | same, abs(dV) >= 4/K | "
        "sign(r') = sign(r'_mc) | dV = 0 | mean SE(V) |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def f(x):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    def ci(s, key):
        lo, hi = s[key + "_ci"]
        return f"{f(s[key])} [{f(lo)}, {f(hi)}]"

    lines = [
        f"| {t} | {s['rollouts']} | {s['steps']} | {ci(s, 'rho_dJ_dV')} | {ci(s, 'rho_J_V')} | "
        f"{ci(s, 'sign_r_dV')} (n={s['steps_dV_moved']}) | {ci(s, 'sign_r_dV_big')} (n={s['steps_dV_big']}) | "
        f"{ci(s, 'sign_rnorm')} (n={s['steps_rnorm_mc_nonzero']}) | {f(s['dV_zero_frac'])} | {f(s['V_se_mean'])} |"
        for t, s in res["tasks"].items()
    ]
    c = res["cost"]
    cost = (
        f"\nCost per scored rollout: {c['rollout_tokens']:.1f} rollout tokens; J: {c['j_probe_tokens']:.1f} probe "
        f"tokens on the policy forward over them (plan + pass + scores {c['j_s']:.1f} s in all); "
        f"MC: {c['mc_prefixes']:.2f} prefixes x K = "
        f"{res['k']}, {c['mc_tokens']:.1f} continuation tokens ({c['mc_s']:.1f} s in all), device {res['device']}.\n"
        "Brackets: 95% bootstrap intervals over problems.\n"
    )
    return head + "\n".join(lines) + "\n" + cost


def write_report(out_dir: str, res: dict, rows: list[dict]) -> str:
    """Per-task statistics into `res`; results.json and table.md written; the table returned."""
    names = [res["args"]["data"]] + sorted(
        {r["task"] for r in rows if r["task"] is not None}, key=lambda t: (len(t), t)
    )
    res["tasks"] = {
        t: summarize([r for r in rows if i == 0 or r["task"] == t], res["k"], res["args"]["rollouts"])
        for i, t in enumerate(names)
    }
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    text = table(res)
    with open(os.path.join(out_dir, "table.md"), "w") as fh:
        fh.write(text)
    return text


def report_only(out_dir: str) -> int:
    """Recompute results.json's statistics and table.md from DIR/steps.jsonl (no sampling)."""
    with open(os.path.join(out_dir, "results.json")) as fh:
        res = json.load(fh)
    with open(os.path.join(out_dir, "steps.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    print(write_report(out_dir, res, rows))
    return 0


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if a.report_only:
        return report_only(a.out)
    if not a.recipe:
        parser().error("--recipe is required (unless --report-only)")
    os.makedirs(a.out, exist_ok=True)
    cfg, model, tok, data, fmt, engine = setup(a)
    n = min(a.problems, len(data))
    G = a.rollouts
    t0 = time.perf_counter()
    out_r = engine.sample(data.prompt_ids[:n], G, [mix_seed(a.seed, i) for i in range(n)])
    sample_s = time.perf_counter() - t0
    prompts = [data.prompt_ids[i] for i in range(n) for _ in range(G)]
    responses = [r for g in out_r.token_ids for r in g]
    problem = [i for i in range(n) for _ in range(G)]
    groups = {"ids": torch.tensor(problem), "answers": [data.answers[i] for i in problem]}
    repro, plan, out, j_s = score_j(a, cfg, model, tok, fmt, prompts, responses, groups)
    specs = [RewardSpec(f.name, f.weight, dict(f.kwargs), f.correctness) for f in cfg.reward.functions]
    with OutcomeReward(specs, num_workers=cfg.reward.num_workers, timeout_s=cfg.reward.timeout_s) as reward:

        def grade(rows, texts):
            idx = [problem[i] for i in rows]
            cols = {k: [v[i] for i in idx] for k, v in data.columns.items()}
            return reward([data.prompts[i] for i in idx], texts, [data.answers[i] for i in idx], cols).correct.tolist()

        def seed_of(i, c):
            return mix_seed(a.seed, problem[i], -1 if c == 0 else i % G, c, MC_SEED_TAG)

        t0 = time.perf_counter()
        mc = cut_values(
            engine,
            grade,
            lambda ids: tok.batch_decode(ids, skip_special_tokens=True),
            prompts,
            responses,
            out.cuts,
            out.mask,
            a.k,
            cfg.rollout.max_new_tokens,
            seed_of,
        )
        mc_s = time.perf_counter() - t0
        correct = torch.tensor(
            grade(list(range(len(responses))), tok.batch_decode(responses, skip_special_tokens=True))
        )
    mc_out = mc_process_output(repro, out, mc, groups["ids"], out.process_adv.shape[1])
    tasks = [task_of(a, data, i) for i in problem]
    rows = step_rows(out, mc_out, tasks)
    with open(os.path.join(a.out, "steps.jsonl"), "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    res = {
        "args": vars(a),
        "k": a.k,
        "device": str(a.device),
        "engine": cfg.rollout.engine,
        "accuracy": float(correct.float().mean()),
        "cost": costs(repro, plan, out, responses, mc, {"sample_s": sample_s, "j_s": j_s, "mc_s": mc_s}),
        "skipped": out.skipped,
    }
    text = write_report(a.out, res, rows)
    print(f"accuracy of the rollouts {res['accuracy']:.3f}; rollouts sampled in {sample_s:.1f} s\n" + text)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
