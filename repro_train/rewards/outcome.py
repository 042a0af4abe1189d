"""OutcomeReward: a weighted sum of reward functions over a batch of rollouts.

    specs = [RewardSpec("math_verify"), RewardSpec("format", weight=0.1)]
    with OutcomeReward(specs, num_workers=2, timeout_s=5.0) as reward:
        res = reward(prompts, completions, answers, columns={"level": levels})
    res.total      # (B,) float32   1.0 * math_verify + 0.1 * format  (None counts as 0)
    res.per_fn     # {"math_verify": (B,), "format": (B,)}
    res.correct    # (B,) bool      math_verify >= its threshold, 1 (the first correctness function)
    res.unscorable # int            values that were None or timed out

Everything is checked at construction (names, import paths, kwargs, signatures), so a bad recipe
fails before any rollout. Custom rewards ("pkg.module:function", "path/to/file.py:function") run
in the calling thread; see docs/rewards.md.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import inspect
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .functions import REWARDS

if TYPE_CHECKING:  # torch is imported in __call__: worker processes import this package
    import torch

EXPECTED_SIGNATURE = "fn(prompts, completions, answers, **columns) -> list[float | None]"
CORRECT_THRESHOLD = 1.0
"""A rollout is correct when its correctness function scores at least this: a full score. A partial
score is not a correct answer (reasoning-gym gives "-54" 0.667 for 54); a function with a
`threshold` attribute (reasoning_gym's kwarg) sets its own."""
_POOL_KWARGS = ("num_workers", "timeout_s")
"""OutcomeReward arguments handed to any built-in whose constructor takes them (math_verify)."""


@dataclass(frozen=True)
class RewardSpec:
    """One reward function in the sum."""

    name: str
    """A built-in name (REWARDS), or an import path "pkg.module:function" / "path/to/file.py:function"."""
    weight: float = 1.0
    """Its weight in `total`."""
    kwargs: dict = field(default_factory=dict)
    """Passed to the built-in's constructor, or bound to the custom function by keyword."""
    correctness: bool | None = None
    """Counts toward `correct`; None = the built-in's default (custom functions: False)."""


@dataclass
class RewardResult:
    total: torch.Tensor
    """(B,) float32: sum_i weight_i * value_i, None -> 0."""
    per_fn: dict[str, torch.Tensor]
    """(B,) float32 value of each function (None -> 0), keyed by spec name; repeats get "#2", "#3"."""
    correct: torch.Tensor
    """(B,) bool: the first correctness function's value >= its `correct_threshold` (all False if there is none)."""
    unscorable: int
    """How many (function, rollout) values were None (no gold, unparsable gold, timeout)."""


@dataclass(frozen=True)
class _Bound:
    key: str
    spec: RewardSpec
    fn: Callable
    correctness: bool


class OutcomeReward:
    """Score a batch with every spec; see the module docstring."""

    def __init__(self, specs: Sequence[RewardSpec], num_workers: int = 2, timeout_s: float = 5.0):
        if not specs:
            raise ValueError("OutcomeReward needs at least one RewardSpec")
        self._fns: list[_Bound] = []
        try:
            for spec in specs:
                fn, correctness = _build(spec, {"num_workers": num_workers, "timeout_s": timeout_s})
                self._fns.append(_Bound(_unique_key(spec.name, self._fns), spec, fn, correctness))
        except BaseException:
            self.close()
            raise

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        answers: Sequence[str | None],
        columns: dict[str, list] | None = None,
    ) -> RewardResult:
        import torch

        columns = dict(columns or {})
        B = _check_batch(prompts, completions, answers, columns)
        total = [0.0] * B
        per_fn: dict[str, torch.Tensor] = {}
        correct = None
        unscorable = 0
        for r in self._fns:
            values = _checked_values(r.key, r.fn(prompts, completions, answers, **columns), B)
            unscorable += sum(v is None for v in values)
            raw = [0.0 if v is None else v for v in values]
            total = [t + r.spec.weight * v for t, v in zip(total, raw)]
            per_fn[r.key] = torch.tensor(raw, dtype=torch.float32)  # (B,)
            if r.correctness and correct is None:
                threshold = correct_threshold(r.fn)  # compared in float64, before the float32 tensor
                correct = torch.tensor([v is not None and v >= threshold for v in values], dtype=torch.bool)  # (B,)
        if correct is None:
            correct = torch.zeros(B, dtype=torch.bool)
        return RewardResult(torch.tensor(total, dtype=torch.float32), per_fn, correct, unscorable)

    def close(self) -> None:
        """Stop worker processes (math_verify's pool)."""
        for r in self._fns:
            if hasattr(r.fn, "close"):
                r.fn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def correct_threshold(fn: Callable) -> float:
    """The value from which `fn` counts a rollout correct: its `threshold` attribute (looked up on a
    functools.partial's function too), else CORRECT_THRESHOLD."""
    threshold = getattr(fn, "threshold", getattr(getattr(fn, "func", None), "threshold", None))
    return CORRECT_THRESHOLD if threshold is None else float(threshold)


# ---------------------------------------------------------------- construction


def _build(spec: RewardSpec, pool_kwargs: dict) -> tuple[Callable, bool]:
    """The callable for `spec` and whether it counts toward `correct`. Raises ValueError."""
    if not isinstance(spec.kwargs, dict):
        raise ValueError(f"reward {spec.name!r}: kwargs must be a mapping, got {spec.kwargs!r}")
    if not (isinstance(spec.weight, (int, float)) and math.isfinite(spec.weight)):
        raise ValueError(f"reward {spec.name!r}: weight must be a finite number, got {spec.weight!r}")
    if spec.name in REWARDS:
        obj, default = REWARDS[spec.name], REWARDS[spec.name].correctness
    elif ":" in spec.name:
        obj, default = _import(spec.name), False
    else:
        near = difflib.get_close_matches(spec.name, REWARDS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(
            f"unknown reward {spec.name!r}{hint}; built-ins: {', '.join(sorted(REWARDS))}; "
            "or a custom function as 'pkg.module:function' or 'path/to/file.py:function'"
        )
    fn = _construct(obj, spec, pool_kwargs) if inspect.isclass(obj) else _bind(obj, spec)
    _check_signature(fn, spec.name)
    return fn, default if spec.correctness is None else bool(spec.correctness)


def _import(name: str) -> Callable:
    """Load "pkg.module:function" or "path/to/file.py:function" (relative to the working dir)."""
    target, _, attr = name.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            module_name = f"repro_reward_file:{path}"  # registered so dataclasses etc. can find it
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except Exception as e:
        raise ValueError(f"reward {name!r}: cannot import {target!r}: {type(e).__name__}: {e}") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ValueError(f"reward {name!r}: {target!r} has no function {attr!r}; it has: {found}")
    return fn


def _construct(cls: type, spec: RewardSpec, pool_kwargs: dict) -> Callable:
    """A built-in class's instance: spec.kwargs, plus num_workers/timeout_s if it takes them."""
    params = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in pool_kwargs.items() if k in params} | spec.kwargs
    accepted = [p for p in params if p not in _POOL_KWARGS]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise ValueError(f"reward {spec.name!r}: bad kwargs {spec.kwargs}: {e}; it accepts: {accepted}") from e
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, re.error) as e:
        raise ValueError(f"reward {spec.name!r}: bad kwargs {spec.kwargs}: {e}") from e


def _bind(fn: Callable, spec: RewardSpec) -> Callable:
    """Bind spec.kwargs by keyword; each must be a named parameter (not swallowed by **columns)."""
    if not spec.kwargs:
        return fn
    named = {
        p.name for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    unknown = sorted(set(spec.kwargs) - named)
    if unknown:
        raise ValueError(
            f"reward {spec.name!r}: kwargs {unknown} are not parameters of {fn.__name__}{inspect.signature(fn)}"
        )
    return functools.partial(fn, **spec.kwargs)


def _check_signature(fn: Callable, name: str) -> None:
    """fn must take three positional arguments and **columns."""
    try:
        sig = inspect.signature(fn)
        sig.bind_partial(None, None, None)
        ok = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    except (TypeError, ValueError):
        ok, sig = False, "(?)"
    if not ok:
        raise ValueError(
            f"reward {name!r}: {getattr(fn, '__name__', fn)}{sig} cannot be called as "
            f"{EXPECTED_SIGNATURE}; define it as `def f(prompts, completions, answers, "
            f"**columns)` returning one float (or None) per completion"
        )


def _unique_key(name: str, previous: list[_Bound]) -> str:
    """The per_fn key: the spec name, then name#2, name#3 for repeats."""
    keys = {b.key for b in previous}
    key, n = name, 1
    while key in keys:
        n += 1
        key = f"{name}#{n}"
    return key


# ---------------------------------------------------------------- call-time checks


def _check_batch(prompts, completions, answers, columns: dict) -> int:
    B = len(completions)
    lengths = {"prompts": len(prompts), "answers": len(answers)}
    lengths |= {f"columns[{k!r}]": len(v) for k, v in columns.items()}
    wrong = {k: n for k, n in lengths.items() if n != B}
    if wrong:
        raise ValueError(f"batch of {B} completions but lengths {wrong}")
    clash = {"prompts", "completions", "answers"} & set(columns)
    if clash:
        raise ValueError(f"columns {sorted(clash)} clash with the reward arguments")
    return B


def _checked_values(key: str, values, B: int) -> list[float | None]:
    """One finite float or None per rollout, or a ValueError naming the reward."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"reward {key!r} returned {type(values).__name__}; expected a list of {B} floats or None")
    if len(values) != B:
        raise ValueError(f"reward {key!r} returned {len(values)} values for a batch of {B}")
    out: list[float | None] = []
    for i, v in enumerate(values):
        try:
            f = v if v is None else float(v) if not isinstance(v, (str, bytes)) else math.nan
        except (TypeError, ValueError):
            f = math.nan
        if f is not None and not math.isfinite(f):
            raise ValueError(
                f"reward {key!r} returned {v!r} at index {i}; expected a finite float, or None for unscorable"
            )
        out.append(f)
    return out
