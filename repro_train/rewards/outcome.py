"""OutcomeReward: a weighted sum of reward functions over a batch of rollouts.

    specs = [RewardSpec("math_verify"), RewardSpec("format", weight=0.1)]
    with OutcomeReward(specs, num_workers=2, timeout_s=5.0) as reward:
        res = reward(prompts, completions, answers, columns={"level": levels})
    res.total      # (B,) float32   1.0 * math_verify + 0.1 * format  (None counts as 0)
    res.per_fn     # {"math_verify": (B,), "format": (B,)}
    res.correct    # (B,) bool      math_verify >= its threshold, 1 (the first correctness function)
    res.unscorable # int            values that were None or timed out
    # the same call in two halves (the trainer's CPU tail, rollout.overlap_cpu_tail):
    pre = reward.prefetch(prompts, completions, answers)   # any thread: the functions that time their own items
    res = reward.finish(pre)                                # the main thread: the others, under their deadline

Everything is checked at construction, so a bad recipe fails before any rollout; a function that raises, returns a
bad value or runs past its deadline is a fault that `on_error` handles (docs/rewards.md: contract, deadlines, faults).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import inspect
import math
import re
import signal
import sys
import threading
import time
import traceback
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
ON_ERROR = ("error", "skip")
FIX = "set reward.on_error=skip to score such rows None and count them"


class RewardFailed(ValueError):
    """A reward function raised, returned a bad value or ran past its deadline (on_error = "error")."""


class RewardInterrupted(RuntimeError):
    """A stop was asked for (should_stop(): SIGTERM, Ctrl-C) while a reward function was running."""


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
    """How many (function, rollout) values were None (no gold, unparsable gold, timeout, a fault skipped)."""
    errors: int = 0
    """(function, rollout) values skipped because the function raised or returned a bad value (on_error=skip)."""
    timeouts: int = 0
    """(function, rollout) values skipped because the call ran past timeout_s (on_error=skip)."""


@dataclass(frozen=True)
class _Bound:
    key: str
    spec: RewardSpec
    fn: Callable
    correctness: bool
    guarded: bool
    """Called under the deadline (everything but a built-in that times its own items, math_verify)."""


class OutcomeReward:
    """Score a batch with every spec; see the module docstring."""

    def __init__(
        self,
        specs: Sequence[RewardSpec],
        num_workers: int = 2,
        timeout_s: float = 5.0,
        on_error: str = "error",
        row_label: Callable[[str], str | None] | None = None,
    ):
        if not specs:
            raise ValueError("OutcomeReward needs at least one RewardSpec")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.timeout_s, self.on_error, self.row_label = float(timeout_s), on_error, row_label
        self.should_stop: Callable[[], bool] | None = None
        """Polled while a function runs; true = end the call now (RewardInterrupted)."""
        self.faults = {"errors": 0, "timeouts": 0}
        self._fns: list[_Bound] = []
        try:
            for spec in specs:
                fn, correctness = _build(spec, {"num_workers": num_workers, "timeout_s": timeout_s})
                guarded = not (inspect.isclass(REWARDS.get(spec.name)) and _takes_timeout(REWARDS[spec.name]))
                self._fns.append(_Bound(_unique_key(spec.name, self._fns), spec, fn, correctness, guarded))
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
        return self.finish(self.prefetch(prompts, completions, answers, columns))

    def prefetch(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        answers: Sequence[str | None],
        columns: dict[str, list] | None = None,
    ) -> Prefetched:
        """The part of a call that may run on any thread (the trainer's CPU tail runs it beside the GPU's passes):
        the batch checked and the functions that time their own items called (math_verify: worker processes under
        its own watchdog). Every other function runs in `finish`: its deadline is a signal to the main thread."""
        columns = dict(columns or {})
        _check_batch(prompts, completions, answers, columns)
        rows = _Rows(prompts, completions, answers, columns)
        raw: dict[str, tuple[object, Exception | None]] = {}
        for r in self._fns:
            if not r.guarded:
                try:
                    raw[r.key] = (r.fn(*rows.args(), **rows.columns), None)
                except Exception as e:  # noqa: BLE001 - raised again at its turn in finish, as a direct call raises
                    raw[r.key] = (None, e)
        return Prefetched(rows, raw)

    def finish(self, pre: Prefetched) -> RewardResult:
        """The rest of a call, on the main thread: every function in spec order (the prefetched outputs checked in
        their turn, an exception a prefetched call raised re-raised in its turn), faults handled by `on_error`."""
        import torch

        rows = pre.rows
        B = len(rows)
        total = [0.0] * B
        per_fn: dict[str, torch.Tensor] = {}
        correct = None
        unscorable = 0
        before = dict(self.faults)
        for r in self._fns:
            values = self._score(r, rows) if r.guarded else self._values(r, rows, pre.output(r.key))
            unscorable += sum(v is None for v in values)
            raw = [0.0 if v is None else v for v in values]
            total = [t + r.spec.weight * v for t, v in zip(total, raw)]
            per_fn[r.key] = torch.tensor(raw, dtype=torch.float32)  # (B,)
            if r.correctness and correct is None:
                threshold = correct_threshold(r.fn)  # compared in float64, before the float32 tensor
                correct = torch.tensor([v is not None and v >= threshold for v in values], dtype=torch.bool)  # (B,)
        if correct is None:
            correct = torch.zeros(B, dtype=torch.bool)
        errors, timeouts = (self.faults[k] - before[k] for k in ("errors", "timeouts"))
        return RewardResult(torch.tensor(total, dtype=torch.float32), per_fn, correct, unscorable, errors, timeouts)

    def take_faults(self) -> dict[str, int]:
        """{"errors": n, "timeouts": n} of the rows skipped since the last call (on_error = "skip")."""
        out, self.faults = self.faults, {"errors": 0, "timeouts": 0}
        return out

    # ------------------------------------------------------------ one function over the batch

    def _score(self, r: _Bound, rows: _Rows) -> list[float | None]:
        """r's value per row (r guarded: called here, under the deadline); a fault raises RewardFailed (on_error =
        "error") or scores None and is counted."""
        try:
            out = self._call(r, rows)
        except _Timeout as t:
            return [self._fault("timeouts", self._timeout_text(r, rows, t.where), len(rows))] * len(rows)
        except RewardInterrupted:
            raise
        except Exception as e:  # noqa: BLE001 - the user's function: any exception is a fault of some row
            return self._isolate(r, rows, e)
        return self._values(r, rows, out)

    def _call(self, r: _Bound, rows: _Rows):
        """r on `rows` under the deadline; raises _Timeout, RewardInterrupted, or what the function raised."""
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            return r.fn(*rows.args(), **rows.columns)
        with _Deadline(self.timeout_s, self.should_stop) as deadline:
            try:
                out = r.fn(*rows.args(), **rows.columns)
                deadline.finished()
                return out
            except _Expired as e:
                where = _user_frame(e.__traceback__)
                if e.reason == "stop":
                    raise RewardInterrupted(f"reward {r.key!r} was still running at {where}") from None
                raise _Timeout(where) from None

    def _isolate(self, r: _Bound, rows: _Rows, batch_error: Exception) -> list[float | None]:
        """The batch call raised: score each row alone to find the rows at fault (a row's fault raises under
        on_error = "error", so that reaching the end there means no row fails alone)."""
        values: list[float | None] = []
        for i in range(len(rows)):
            one = rows.select(i)
            try:
                out = self._call(r, one)
            except _Timeout as t:
                values.append(self._fault("timeouts", self._timeout_text(r, one, t.where)))
            except RewardInterrupted:
                raise
            except Exception as e:  # noqa: BLE001 - as in _score
                values.append(self._fault("errors", self._raised_text(r, one, e)))
            else:
                values += self._values(r, one, out)
        if self.on_error == "error":  # no row failed alone (a row's fault raises under "error")
            raise RewardFailed(
                f"reward {r.key!r} raised {_exc(batch_error)} at {_user_frame(batch_error.__traceback__)} on a batch "
                f"of {len(rows)} completions, but scores every row alone: it fails on the batch as a whole "
                f"(first row: {self._row(rows, 0)}); fix the function"
            )
        return values

    def _values(self, r: _Bound, rows: _Rows, out) -> list[float | None]:
        """Checked return values; a value that is not a finite number (or None) is a fault of its row."""
        B = len(rows)
        if isinstance(out, (str, bytes)) or not hasattr(out, "__len__") or len(out) != B:
            n = len(out) if hasattr(out, "__len__") and not isinstance(out, (str, bytes)) else None
            got = f"{n} values" if n is not None else f"a {type(out).__name__}"
            why = f"reward {r.key!r} returned {got} for a batch of {B} (first row: {self._row(rows, 0)}); expected a "
            return [self._fault("errors", why + f"list of {B} floats or None", B)] * B
        values = []
        for i, v in enumerate(out):
            f = _as_float(v)
            if f is not None and not math.isfinite(f):
                why = f"reward {r.key!r} returned {v!r} at index {i} ({self._row(rows, i)}); expected a finite float "
                why += "or None"
                f = self._fault("errors", why)
            values.append(f)
        return values

    def _fault(self, kind: str, why: str, n: int = 1) -> None:
        """A fault of n rows: RewardFailed(why) under on_error = "error"; else counted under `kind`, scored None."""
        if self.on_error == "error":
            raise RewardFailed(f"{why}. Fix the function, or {FIX} (reward/{kind})")
        self.faults[kind] += n
        return None

    def _row(self, rows: _Rows, i: int) -> str:
        """'d.jsonl line 7 (prompt 5): prompt '...', response '...'' for row i."""
        label = self.row_label(rows.prompts[i]) if self.row_label is not None else None
        return (
            f"{label or f'batch row {i}'}: prompt {_excerpt(rows.prompts[i])}, response {_excerpt(rows.completions[i])}"
        )

    def _raised_text(self, r: _Bound, rows: _Rows, e: BaseException) -> str:
        return f"reward {r.key!r} raised {_exc(e)} at {_user_frame(e.__traceback__)} on {self._row(rows, 0)}"

    def _timeout_text(self, r: _Bound, rows: _Rows, where: str) -> str:
        n = len(rows)
        return (
            f"reward {r.key!r} did not return within reward.timeout_s = {self.timeout_s:g} s on "
            f"{'a batch of ' + str(n) + ' completions, the first ' if n > 1 else ''}{self._row(rows, 0)}; it was at "
            f"{where}. If it is slow but right, raise reward.timeout_s"
        )

    def close(self) -> None:
        """Stop worker processes (math_verify's pool)."""
        for r in self._fns:
            if hasattr(r.fn, "close"):
                r.fn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Prefetched:
    """`OutcomeReward.prefetch`'s result, for `finish`: the call's rows, and the output of each function that times
    its own items, or the exception its call raised."""

    rows: _Rows
    raw: dict[str, tuple[object, Exception | None]]

    def output(self, key: str):
        out, error = self.raw[key]
        if error is not None:
            raise error  # the traceback still starts where the prefetching thread raised it
        return out


@dataclass
class _Rows:
    """The arguments of one reward call: B prompts, completions, answers and other columns."""

    prompts: Sequence[str]
    completions: Sequence[str]
    answers: Sequence[str | None]
    columns: dict[str, list]

    def __len__(self) -> int:
        return len(self.completions)

    def args(self) -> tuple:
        return self.prompts, self.completions, self.answers

    def select(self, i: int) -> _Rows:
        return _Rows(
            [self.prompts[i]], [self.completions[i]], [self.answers[i]], {k: [v[i]] for k, v in self.columns.items()}
        )


def _as_float(v) -> float | None:
    """None, or v as a float (nan for anything that is not a number)."""
    if v is None:
        return None
    if isinstance(v, (str, bytes)):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _excerpt(text: str, n: int = 60) -> str:
    text = str(text)
    return repr(text if len(text) <= n else text[:n] + "...")


def _exc(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _user_frame(tb) -> str:
    """'my_reward.py:12 in judge' (the function's own frame), then '-> decoder.py:355 in raw_decode' (the innermost
    frame) when it went deeper: the traceback's frames outside this module."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename != __file__]
    if not frames:
        return "an unknown place"
    text = [f"{f.filename}:{f.lineno} in {f.name}" for f in (frames[0], frames[-1])]
    return text[0] if len(frames) == 1 else f"{text[0]} -> {text[1]}"


def _takes_timeout(cls: type) -> bool:
    """A built-in class that times its own items (its constructor takes timeout_s): math_verify."""
    return "timeout_s" in inspect.signature(cls).parameters


# ---------------------------------------------------------------- deadlines

INTERRUPT = signal.SIGVTALRM
"""The signal a watcher thread sends the main thread to end a reward call (unused by Python and torch)."""


class _Expired(BaseException):
    """Raised in the reward function's frame when its deadline passes or a stop is asked. A BaseException, so the
    function's own `except Exception` does not swallow it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Timeout(Exception):
    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


class _Deadline:
    """Runs in the main thread around one call: a watcher thread polls the clock and `should_stop` every 50 ms and,
    when either says so, sends INTERRUPT to the main thread (again every 0.5 s, in case the function caught it);
    the handler raises _Expired there. A signal interrupts a sleep or a blocking wait as well as Python code; C
    code that holds the GIL (a catastrophic regex) is interrupted only when it returns."""

    active: _Deadline | None = None

    def __init__(self, seconds: float, should_stop: Callable[[], bool] | None):
        self.seconds, self.should_stop = seconds, should_stop
        self.reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="repro-train-reward-deadline", daemon=True)

    def __enter__(self) -> _Deadline:
        if signal.getsignal(INTERRUPT) is not _on_interrupt:  # installed once, left in place (see _on_interrupt)
            signal.signal(INTERRUPT, _on_interrupt)
        _Deadline.active = self
        self._thread.start()
        return self

    def finished(self) -> None:
        """The call returned: a signal still on its way does nothing."""
        self._done.set()

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        _Deadline.active = None

    def _watch(self) -> None:
        end = time.monotonic() + self.seconds
        main = threading.main_thread().ident
        while not self._done.wait(0.05):
            if self.reason is None and self.should_stop is not None and self.should_stop():
                self.reason = "stop"
            elif self.reason is None and time.monotonic() >= end:
                self.reason = "timeout"
            if self.reason is not None:
                signal.pthread_kill(main, INTERRUPT)
                self._done.wait(0.5)


def _on_interrupt(signum, frame) -> None:
    """INTERRUPT's handler: raise in the running reward function when its deadline has fired. Left installed after
    the call (a no-op then): restoring the default action, which ends the process, could meet a late signal."""
    d = _Deadline.active
    if d is not None and d.reason is not None and not d._done.is_set():
        raise _Expired(d.reason)


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
