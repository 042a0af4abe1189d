"""Evaluate one model on a list of problems: sample, check, measure (docs/evaluation.md).

    problems = load_problems("toy", n=200, toy_seed=777)       # [{"id", "question", "answer"}]
    summary, samples = evaluate(model, tokenizer, problems, EvalSettings(reward="exact_match"))

`evaluate` reads in phase order: encode prompts -> generate -> score each response -> summarize.
`repro-train eval` (commands/eval.py) wraps it for several models and writes the files; `repro-train sft`
calls it on the model it holds. Problem i's samples come from one call seeded by (seed, i), so they depend
on neither the other problems nor the batch size: docs/evaluation.md, "Implementation details", item 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import RolloutConfig, VLLMConfig
from ..core.seeds import mix_seed
from ..core.text import ResponseFormat, TokenizerDecoder, response_format
from ..data.jsonl import iter_jsonl
from ..data.named import is_named, load_named
from ..data.prompts import RowError, encode_prompt
from ..rewards import OutcomeReward, RewardSpec, extract_answer, normalize_answer
from ..rewards.functions import compile_answer_pattern
from ..rollout.base import RolloutEngine
from ..rollout.hf import sample
from ..rollout.vllm import VLLMEngine, check_vllm
from ..tasks.arithmetic import generate
from .detectors import count_backtracks, count_rechecks
from .metrics import summarize, tokens_after_first_correct

TOY_PROBLEMS = 200
"""Problems taken from the toy task when no count is given (a file gives all its rows)."""


class EvalError(ValueError):
    """Unusable evaluation input; the message names the option, file, row or field."""


@dataclass(frozen=True)
class EvalSettings:
    """How responses are sampled and checked."""

    samples: int = 4
    """n: responses per problem (must be 1 when greedy)."""
    greedy: bool = False
    """One argmax response per problem instead of n samples."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    max_new_tokens: int = 256
    """Longest response; a longer one is cut (no EOS) and counted at this length."""
    batch_size: int = 64
    """Problems per generate call in greedy mode (sampled mode: one call of n per problem)."""
    reward: str = "math_verify"
    """Correctness check: math_verify, exact_match, numeric, last_number (rewards/), or 'pkg.mod:fn'."""
    seed: int = 0
    """Problem i is sampled after torch.manual_seed(mix_seed(seed, i))."""
    k_values: tuple[int, ...] = (1, 4, 8)
    """maj@k reported for each k <= samples."""
    pass_k: tuple[int, ...] = (1, 4, 8)
    """pass@k (the unbiased estimator, docs/evaluation.md) reported for each k <= samples."""
    system_prompt: str | None = None
    """System message before each question (chat template)."""
    think_end: str = "</think>"
    """The model's end-of-thinking marker (a recipe's model.think_end): the detectors read the response before it."""
    engine: str = "hf"
    """Sampler: 'hf' (transformers generate) or 'vllm' (the trainer's vLLM engine, built once per process)."""
    vllm_memory: float = 0.3
    """engine = vllm: share of the GPU's memory the engine may take (rollout.vllm.gpu_memory_utilization)."""
    vllm_kv_cache_gb: float | None = None
    """engine = vllm: a fixed KV cache size in GiB instead of one measured at start (rollout.vllm.kv_cache_gb)."""
    vllm_cuda_graphs: bool = True
    """engine = vllm: compile and capture CUDA graphs (false: eager, starts in seconds, decodes slower)."""


def check_settings(s: EvalSettings) -> None:
    """Raise EvalError naming the setting; never fixes values."""
    if s.samples < 1:
        raise EvalError(f"samples must be >= 1, got {s.samples}")
    if not s.pass_k or any(k < 1 for k in s.pass_k):
        raise EvalError(f"pass@k values must be >= 1, got {list(s.pass_k)}")
    if s.greedy and s.samples != 1:
        raise EvalError(f"greedy decoding gives one response per problem; got samples = {s.samples}")
    if not s.temperature > 0:
        raise EvalError(f"temperature must be > 0, got {s.temperature}")
    if not 0 < s.top_p <= 1:
        raise EvalError(f"top_p must be in (0, 1], got {s.top_p}")
    if s.max_new_tokens < 1 or s.batch_size < 1:
        raise EvalError(f"max_new_tokens and batch_size must be >= 1, got {s.max_new_tokens}, {s.batch_size}")
    if not s.k_values or any(k < 1 for k in s.k_values):
        raise EvalError(f"k values must be >= 1, got {list(s.k_values)}")
    if s.engine not in ("hf", "vllm"):
        raise EvalError(f"engine must be hf or vllm, got {s.engine!r}")


def default_reward(source: str) -> str:
    """exact_match for the toy task (integer answers in its own format), math_verify otherwise."""
    return "exact_match" if source == "toy" else "math_verify"


# ---------------------------------------------------------------- problems


def gold_from_field(value, pattern: re.Pattern | None) -> str | None:
    """The gold answer in an answer field: group 1 of the last `pattern` match; without a pattern,
    the text after the last '####' (GSM8K; thousands commas dropped) or else the whole field."""
    text = str(value).strip()
    if pattern is not None:
        matches = list(pattern.finditer(text))
        return matches[-1].group(1).strip() if matches else None
    if "####" in text:
        return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.rsplit("####", 1)[1].strip())
    return text


def _read_jsonl(path: str) -> list[tuple[int, dict]]:
    """(line number, row) for each non-blank line; the first bad line is an error."""
    if is_named(path):  # gsm8k-100, reasoning-gym:TASK?... (data/named.py)
        try:
            return list(enumerate(load_named(path), start=1))
        except ValueError as e:  # ConfigError
            raise EvalError(f"--data {path}: {e}") from None
    if not Path(path).is_file():
        raise EvalError(f"--data {path}: no such file (give 'toy' or a JSONL file)")
    rows = []
    for n, row, why in iter_jsonl(path):
        if why is not None:
            raise EvalError(f"{path} line {n}: {why}")
        rows.append((n, row))
    if not rows:
        raise EvalError(f"{path} has no rows")
    return rows


def load_problems(
    source: str,
    n: int | None = None,
    *,
    toy_seed: int = 777,
    question_field: str = "question",
    answer_field: str = "answer",
    answer_regex: str | None = None,
    reference_field: str | None = None,
) -> list[dict]:
    """The first n problems as {"id", "question", "answer"} (answer: the gold string), plus "reference" (the row's
    `reference_field` text: a response written for it, scored like a model's by `evaluate_references`) when asked.

    source: 'toy' (tasks/arithmetic.py, `generate(n, toy_seed)`; n defaults to TOY_PROBLEMS) or a
    JSONL file with `question_field` and `answer_field` (n defaults to every row). `id` is the
    row index. `answer_regex` (one group) extracts the gold from the answer field; see
    `gold_from_field` for the default.
    """
    if n is not None and n < 1:
        raise EvalError(f"--n-problems must be >= 1, got {n}")
    if source == "toy":
        rows = generate(n or TOY_PROBLEMS, toy_seed, with_traces=False)
        return [{"id": i, "question": r["question"], "answer": r["answer"]} for i, r in enumerate(rows)]
    pattern = None
    if answer_regex is not None:
        try:
            pattern = compile_answer_pattern(answer_regex)
        except (ValueError, re.error) as e:
            raise EvalError(f"--answer-regex: {e}") from None
    problems = []
    for i, (line, row) in enumerate(_read_jsonl(source)[:n]):
        where = f"{source} line {line}"
        for name, field in (("--question-field", question_field), ("--answer-field", answer_field)):
            if row.get(field) is None:
                raise EvalError(f"{where} has no field {field!r} ({name}); its columns: {sorted(row)}")
        if not isinstance(row[question_field], str) or not row[question_field].strip():
            raise EvalError(f"{where}: field {question_field!r} must be a non-empty string")
        gold = gold_from_field(row[answer_field], pattern)
        if not gold:
            raise EvalError(
                f"{where}: no gold answer in field {answer_field!r} = {str(row[answer_field])[:80]!r}"
                + (f" (--answer-regex {answer_regex!r} does not match)" if pattern else "")
            )
        problems.append({"id": i, "question": row[question_field], "answer": gold})
        if reference_field is not None:
            if not isinstance(row.get(reference_field), str):
                raise EvalError(
                    f"{where} has no text field {reference_field!r} (--reference); its columns: {sorted(row)}"
                )
            problems[-1]["reference"] = row[reference_field]
    return problems


# ---------------------------------------------------------------- generate


def sampling_config(s: EvalSettings) -> RolloutConfig:
    """The rollout section both engines sample from. top_k = 1 keeps only the argmax token: sampling from it is greedy
    decoding."""
    return RolloutConfig(
        engine=s.engine,
        vllm=VLLMConfig(
            gpu_memory_utilization=s.vllm_memory, kv_cache_gb=s.vllm_kv_cache_gb, cuda_graphs=s.vllm_cuda_graphs
        ),
        max_new_tokens=s.max_new_tokens,
        temperature=1.0 if s.greedy else s.temperature,
        top_p=1.0 if s.greedy else s.top_p,
        top_k=1 if s.greedy else 0,
        generation_batch_size=s.batch_size,
    )


def build_engine(model_dir: str, settings: EvalSettings, eos: list[int], max_model_len: int, dtype: str) -> VLLMEngine:
    """The vLLM engine for `settings.engine == "vllm"`: the trainer's engine (dummy weights; each model's are pushed),
    one per process, shared by every model of the same architecture and every data set."""
    import torch

    cfg = sampling_config(settings)
    try:
        check_vllm(cfg, 1, torch.cuda.is_available())
    except ValueError as e:  # ConfigError
        raise EvalError(f"--engine vllm: {e}") from None
    return VLLMEngine(model_dir, cfg, eos, max_model_len, dtype, rank=0, world=1)


def engine_responses(engine: RolloutEngine, version: int, model, prompts, settings: EvalSettings):
    """responses[i][g] from a rollout engine holding `model`'s weights (pushed as weights version `version`); problem
    i's samples come from seed mix_seed(seed, i), as with `generate_responses`."""
    engine.push_weights(version, lambda: ((n, p.detach()) for n, p in model.named_parameters()))
    seeds = None if settings.greedy else [mix_seed(settings.seed, i) for i in range(len(prompts))]
    return engine.sample(prompts, settings.samples, seeds).token_ids


def generate_responses(
    model, prompts: Sequence[list[int]], settings: EvalSettings, eos: list[int], pad_id: int, progress: bool = True
) -> list[list[list[int]]]:
    """responses[i][g]: token ids of sample g of prompt i, up to and including EOS."""
    from tqdm import tqdm

    s = settings
    cfg = sampling_config(s)
    device = next(model.parameters()).device
    out: list[list[list[int]]] = []
    with tqdm(total=len(prompts), desc="eval", unit="problem", disable=not progress) as bar:
        if s.greedy:  # deterministic: batch many problems per call
            for b in range(0, len(prompts), s.batch_size):
                chunk = prompts[b : b + s.batch_size]
                out += sample(model, chunk, 1, cfg, eos, pad_id, device)
                bar.update(len(chunk))
        else:  # one seeded call per problem with its n samples
            for i, p in enumerate(prompts):
                out += sample(model, [p], s.samples, cfg, eos, pad_id, device, seeds=[mix_seed(s.seed, i)])
                bar.update(1)
    return out


# ---------------------------------------------------------------- score


def grade_responses(
    tokenizer,
    reward,
    problems: list[dict],
    prompts: list[list[int]],
    responses: list[list[list[int]]],
    fmt: ResponseFormat,
) -> tuple[list[dict], list[dict]]:
    """(samples, metric rows): one public row per response, and `summarize`'s input rows.

    reward: an OutcomeReward whose `correct` decides each response.

    A metric row votes for maj@k with the gold string when the reward calls the response correct
    (equivalent forms such as 0.5 and 1/2 vote together), else with its normalised answer.
    """
    flat = [(p, prompt, ids) for p, prompt, group in zip(problems, prompts, responses) for ids in group]
    completions = tokenizer.batch_decode([ids for _, _, ids in flat], skip_special_tokens=True)
    prompt_text = [tokenizer.decode(prompt, skip_special_tokens=False) for _, prompt, _ in flat]
    correct = reward(prompt_text, completions, [p["answer"] for p, _, _ in flat]).correct.tolist()
    dec = TokenizerDecoder(tokenizer)
    eos_set = set(fmt.eos_ids)
    samples, metric_rows = [], []
    for (p, _, ids), completion, ok in zip(flat, completions, correct):
        text, offsets = dec.offsets(ids)  # special tokens kept
        thinking = fmt.thinking(completion)
        answer = extract_answer(completion)
        samples.append(
            {
                "problem_id": p["id"],
                "question": p["question"],
                "gold": p["answer"],
                "completion": completion,
                "answer": answer,
                "correct": bool(ok),
                "n_tokens": len(ids),
                "finished": bool(ids) and ids[-1] in eos_set,
                "rechecks": count_rechecks(thinking),
                "backtracks": count_backtracks(thinking),
                "tokens_after_first_correct": tokens_after_first_correct(text, offsets, p["answer"]),
            }
        )
        vote = p["answer"] if ok else (None if answer is None else normalize_answer(answer))
        metric_rows.append(
            {
                "problem_id": p["id"],
                "correct": bool(ok),
                "answer": vote,
                "gold": p["answer"],
                "n_tokens": len(ids),
                "text": text,
                "token_offsets": offsets,
            }
        )
    return samples, metric_rows


def summarize_samples(
    samples: list[dict], metric_rows: list[dict], k_values: Sequence[int], pass_k: Sequence[int] = (1,)
) -> dict:
    """`metrics.summarize`, with the detector rates taken over the thinking part only."""
    out = summarize(metric_rows, k_values, pass_k)
    # summarize() runs the detectors on "text", the whole response (which must stay whole for
    # tokens_after_first_correct); the rates reported count paragraphs before the think marker.
    n = len(samples)
    out["recheck_rate"] = sum(s["rechecks"] for s in samples) / n
    out["backtrack_rate"] = sum(s["backtracks"] for s in samples) / n
    out["frac_with_recheck"] = sum(s["rechecks"] > 0 for s in samples) / n
    out["frac_with_backtrack"] = sum(s["backtracks"] > 0 for s in samples) / n
    out["frac_finished"] = sum(s["finished"] for s in samples) / n
    return out


# ---------------------------------------------------------------- evaluate


def encode_problems(tokenizer, problems: list[dict], settings: EvalSettings) -> list[list[int]]:
    """Each problem's prompt ids (its question after the system prompt, in the chat template)."""
    check_settings(settings)
    if not problems:
        raise EvalError("no problems to evaluate")
    try:
        return [
            encode_prompt(tokenizer, {"question": p["question"]}, settings.system_prompt, where=f"problem {p['id']}")
            for p in problems
        ]
    except RowError as e:
        raise EvalError(str(e)) from None


def _reward(settings: EvalSettings) -> OutcomeReward:
    try:  # built before generating, so a bad reward name fails at once
        return OutcomeReward([RewardSpec(settings.reward, correctness=True)])
    except ValueError as e:
        raise EvalError(f"reward: {e}") from None


def evaluate(
    model,
    tokenizer,
    problems: list[dict],
    settings: EvalSettings,
    progress: bool = True,
    engine: RolloutEngine | None = None,
    version: int = 0,
) -> tuple[dict, list[dict]]:
    """(summary, samples) of `model` on `problems` ({"id", "question", "answer"}).

    summary: `metrics.summarize` keys (pass@1, maj@k, *_tokens, rates, tokens_after_first_correct,
    ...) plus frac_finished; samples: one row per response (see grade_responses). With `engine` (vLLM,
    `build_engine`), the model's weights are pushed to it as `version` and it samples instead of `generate`.
    """
    prompts = encode_problems(tokenizer, problems, settings)
    fmt = response_format(model, tokenizer, settings.think_end)
    eos = list(fmt.eos_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    held = list(getattr(engine, "eos_ids", eos))
    if held != eos:
        raise EvalError(f"the models end responses with different EOS ids ({held} and {eos}): evaluate them apart")
    reward = _reward(settings)
    with reward:
        if engine is None:
            responses = generate_responses(model, prompts, settings, eos, pad_id, progress)
        else:
            responses = engine_responses(engine, version, model, prompts, settings)
        samples, metric_rows = grade_responses(tokenizer, reward, problems, prompts, responses, fmt)
    return summarize_samples(samples, metric_rows, settings.k_values, settings.pass_k), samples


def evaluate_references(tokenizer, problems: list[dict], settings: EvalSettings, eos_ids: list[int]):
    """(summary, samples) of the problems' own "reference" responses (load_problems' reference_field), each tokenized
    and ended with eos_ids[0], measured exactly as a model's responses are: what a trace mix looks like."""
    prompts = encode_problems(tokenizer, problems, settings)
    responses = [[tokenizer(p["reference"], add_special_tokens=False)["input_ids"] + [eos_ids[0]]] for p in problems]
    fmt = ResponseFormat(tuple(eos_ids), settings.think_end)
    with _reward(settings) as reward:
        samples, metric_rows = grade_responses(tokenizer, reward, problems, prompts, responses, fmt)
    return summarize_samples(samples, metric_rows, (1,)), samples
