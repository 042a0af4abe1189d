"""`math_verify`: symbolic answer checking with math-verify, run in a pool of worker processes (docs/rewards.md,
"math_verify: workers and timeouts").

math-verify's own timeouts need SIGALRM, which works only in a main thread, and sympy can spend minutes on an
adversarial answer. So each item runs in a worker process's main thread under our own timer (`signal.setitimer`; past
timeout_s it scores None and the worker goes on), and the parent keeps a watchdog for what the timer cannot stop (a
hang inside C code, a dead worker): no result for 2 * timeout_s + 1 s kills the workers, scores the pending items None,
and the next call starts a fresh pool. Workers are started with `spawn`, import this package's pure modules and
math-verify only (never torch) and run with one OMP/BLAS thread.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Literal

from .extract import (
    answer_sentence,
    extract_answer,
    extract_final_answer,
    normalize_answer,
    run_start,
    strict_refusal,
)
from .functions import register_reward

STARTUP_S = 60.0
"""Watchdog window for a fresh pool's first result: interpreter start plus imports."""
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class _ItemTimeout(BaseException):
    """Raised by SIGALRM in a worker. A BaseException, so math-verify's `except Exception` lets it by."""


def _raise_timeout(signum, frame):
    raise _ItemTimeout


def as_gold(answer: str) -> str:
    r"""Gold text math-verify can parse: wrapped in \boxed{} unless it is already delimited."""
    if "\\boxed" in answer or "$" in answer or "\\(" in answer or "\\[" in answer:
        return answer
    return "\\boxed{" + answer + "}"


def parse_gold(answer: str) -> list:
    """The gold answer as the reward parses it (empty: math-verify cannot read it)."""
    from math_verify import parse

    return parse(as_gold(answer), parsing_timeout=None)


def verify_answer(completion: str, answer: str | None, extract: str = "auto", strict: bool = True) -> float | None:
    """1.0 / 0.0 by math-verify; None if there is no gold or it does not parse. No timeout here.

    extract="auto": math-verify's own extraction from the whole completion (last \\boxed{}, else
    the last LaTeX expression or number); "final_answer": only the text after the last
    "Final answer:" (none -> 0.0). strict: an answer the strict rule refuses (`strict_span`) -> 0.0.
    An exception inside math-verify on the completion's side scores 0.0 (the answer is unreadable).
    """
    from math_verify import parse, verify

    if answer is None:
        return None
    try:
        gold = parse_gold(answer)
    except Exception:  # math-verify cannot read the gold: the row cannot be scored
        return None
    if not gold:
        return None
    text = completion if extract == "auto" else extract_final_answer(completion)
    if text is None:
        return 0.0
    try:
        pred = parse(text, parsing_timeout=None)
        if strict:
            span, tail = strict_span(completion, text, pred, extract)
            # the value is read as math-verify reads digits: "1 000" is one number
            if strict_refusal(completion, span, answer, tail=normalize_answer(tail)):
                return 0.0
        return float(verify(gold, pred, timeout_seconds=None))
    except Exception:  # math-verify catches its own errors; anything left is an unreadable answer
        return 0.0


def strict_span(completion: str, text: str, pred: list, extract: str) -> tuple[str, str]:
    """(span, tail) that the strict rule reads for math_verify.

    "final_answer": the answer line. "auto": the "Final answer:" line or last box if there is one
    (extract_answer); else the sentence where math-verify found its answer (the string it returns),
    with the value read from the arithmetic run that holds it on: "The final answer is 0 + 4." ->
    "0 + 4.". If that string is not in the completion verbatim, the string itself.
    """
    if extract != "auto":
        return text, text
    span = extract_answer(completion)
    if span is not None:
        return span, span
    found = next((p for p in reversed(pred) if isinstance(p, str)), "")
    at = completion.rfind(found) if found else -1
    if at < 0:
        return found, found
    start, end = answer_sentence(completion, at, at + len(found))
    return completion[start:end], completion[max(start, run_start(completion, at)) : end]


def _init_worker() -> None:
    for name in _THREAD_ENV:
        os.environ[name] = "1"
    # math-verify warns once that its timeouts are off: they are, on purpose (see module docstring).
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    signal.signal(signal.SIGALRM, _raise_timeout)
    verify_answer("\\boxed{1}", "1")  # import and warm up here, not under the first item's timer


def check_item(
    completion: str, answer: str | None, extract: str, timeout_s: float, strict: bool = True
) -> float | None:
    """Pool task: `verify_answer` under a per-item timer; None when the timer runs out."""
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return verify_answer(completion, answer, extract, strict)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _ItemTimeout:  # also caught when it fires between the return and the timer reset
        return None


@register_reward("math_verify", correctness=True)
class MathVerify:
    """1.0 if math-verify finds the completion's answer equal to the gold answer, else 0.0.

    Unparsable or missing gold -> None; an item past `timeout_s` -> None; an answer the strict rule
    refuses -> 0.0 (`strict`). Thread-safe; close() (or `with`) stops the workers. OutcomeReward
    passes its own num_workers and timeout_s.
    """

    def __init__(
        self,
        extract: Literal["auto", "final_answer"] = "auto",
        strict: bool = True,
        *,
        num_workers: int = 2,
        timeout_s: float = 5.0,
    ):
        if extract not in ("auto", "final_answer"):
            raise ValueError(f"extract must be 'auto' or 'final_answer', got {extract!r}")
        if int(num_workers) < 1 or not float(timeout_s) > 0:
            raise ValueError(f"need num_workers >= 1 and timeout_s > 0, got {num_workers}, {timeout_s}")
        self.extract = extract
        self.strict = bool(strict)
        self.num_workers = int(num_workers)
        self.timeout_s = float(timeout_s)
        self._task = check_item  # what the workers run; a test swaps in a stub
        self._pool: cf.ProcessPoolExecutor | None = None
        self._fresh = True  # no result from this pool yet: watchdog allows STARTUP_S
        self._lock = threading.Lock()

    def __call__(self, prompts, completions, answers, **columns) -> list[float | None]:
        if not completions:
            return []
        with self._lock:
            return self._map([(c, a, self.extract, self.timeout_s, self.strict) for c, a in zip(completions, answers)])

    def _map(self, items: list[tuple]) -> list[float | None]:
        """Run `self._task(*item)` for every item in the pool, under the watchdog."""
        pool = self._ensure_pool()
        out: list[float | None] = [None] * len(items)
        try:
            index = {pool.submit(self._task, *item): i for i, item in enumerate(items)}
            pending, healthy = set(index), True
            while pending and healthy:
                window = STARTUP_S if self._fresh else 2 * self.timeout_s + 1.0
                done, pending = cf.wait(pending, timeout=window, return_when=cf.FIRST_COMPLETED)
                healthy = bool(done)  # nothing finished in the window: every busy worker is stuck
                for f in done:
                    if isinstance(f.exception(), BrokenProcessPool):  # a worker died
                        healthy = False
                    else:
                        out[index[f]] = f.result()  # any other worker error is a bug: raise it
                        self._fresh = False
        except BaseException:
            self._kill_pool()
            raise
        if not healthy:
            self._kill_pool()
        return out

    def _ensure_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is not None and self._pool._broken:  # a worker died between calls
            self._kill_pool()
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                self.num_workers, multiprocessing.get_context("spawn"), initializer=_init_worker
            )
            self._fresh = True
        return self._pool

    def _kill_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # Python < 3.14 has no public ProcessPoolExecutor.kill_workers(); stuck workers ignore shutdown.
        for proc in list((pool._processes or {}).values()):
            proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (idle ones exit cleanly; a new call would start a fresh pool)."""
        with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
