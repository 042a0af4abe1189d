"""User reward functions that fail (repro_train/rewards/outcome.py): an exception names the function, the row
(file and line, prompt and response excerpts), where it was raised and the fix; a hang is ended by
reward.timeout_s and by a stop request; reward.on_error=skip scores those rows None and counts them."""

import dataclasses
import os
import re
import signal
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

from repro_train.rewards.outcome import OutcomeReward, RewardFailed, RewardInterrupted, RewardSpec

FAULTY = """
import time

def recip(prompts, completions, answers, **columns):
    return [1.0 / (len(c) - 3) for c in completions]  # a 3-character completion divides by zero

def batch_only(prompts, completions, answers, **columns):
    if len(completions) > 1:
        raise RuntimeError("needs the whole batch at once")
    return [0.5]

def nan_at_1(prompts, completions, answers, **columns):
    return [float("nan") if i == 1 else 1.0 for i in range(len(completions))]

def sleeps(prompts, completions, answers, **columns):
    time.sleep(30)  # a hang: today's code returns after 30 s with these values
    return [1.0] * len(completions)

def spins(prompts, completions, answers, **columns):
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:  # pure Python, never sleeps
        pass
    return [1.0] * len(completions)

def swallows(prompts, completions, answers, **columns):
    try:
        time.sleep(30)
    except Exception:  # a function's own blanket handler must not swallow the deadline
        pass
    return [1.0] * len(completions)
"""

PROMPTS = ["p0", "p1", "p2", "p3"]
COMPLETIONS = ["four", "fives", "abc", "sixsix"]  # "abc" (row 2) makes recip divide by zero
LABELS = {p: f"d.jsonl line {i + 1} (prompt {i})" for i, p in enumerate(PROMPTS)}


@pytest.fixture()
def faulty(tmp_path):
    path = tmp_path / "faulty.py"
    path.write_text(FAULTY)
    return str(path)


def reward(faulty, name, **kw):
    return OutcomeReward([RewardSpec(f"{faulty}:{name}")], num_workers=1, row_label=LABELS.get, **kw)


def score(r, n=4):
    return r(PROMPTS[:n], COMPLETIONS[:n], ["1"] * n)


def test_an_exception_names_the_function_the_row_where_and_the_fix(faulty):
    with pytest.raises(RewardFailed) as e:
        score(reward(faulty, "recip"))
    msg = str(e.value)
    assert f"reward '{faulty}:recip' raised ZeroDivisionError: float division by zero at {faulty}:5 in recip" in msg
    assert "on d.jsonl line 3 (prompt 2): prompt 'p2', response 'abc'" in msg  # the batch call retried row by row
    assert "reward.on_error=skip" in msg


def test_skip_scores_the_failing_row_none_and_counts_it(faulty):
    r = reward(faulty, "recip", on_error="skip")
    res = score(r)
    # rows alone: 1 / (4 - 3), 1 / (5 - 3), fault -> None -> 0, 1 / (6 - 3)
    assert res.per_fn[f"{faulty}:recip"].tolist() == pytest.approx([1.0, 0.5, 0.0, 1 / 3])
    assert (res.errors, res.timeouts, res.unscorable) == (1, 0, 1)
    assert r.take_faults() == {"errors": 1, "timeouts": 0} and r.take_faults() == {"errors": 0, "timeouts": 0}


def test_a_function_that_fails_only_on_the_batch_is_named_as_such(faulty):
    with pytest.raises(RewardFailed, match="needs the whole batch at once .* but scores every row alone"):
        score(reward(faulty, "batch_only"))
    res = score(reward(faulty, "batch_only", on_error="skip"))
    assert res.per_fn[f"{faulty}:batch_only"].tolist() == [0.5] * 4 and res.errors == 0


def test_a_non_finite_value_is_a_fault_of_its_row(faulty):
    with pytest.raises(RewardFailed, match=r"returned nan at index 1 \(d\.jsonl line 2 \(prompt 1\): prompt 'p1'"):
        score(reward(faulty, "nan_at_1"))
    res = score(reward(faulty, "nan_at_1", on_error="skip"))
    assert res.per_fn[f"{faulty}:nan_at_1"].tolist() == [1.0, 0.0, 1.0, 1.0] and res.errors == 1


@pytest.mark.parametrize("name, line", [("sleeps", "16"), ("spins", "2[12]"), ("swallows", "27")])
def test_a_hang_is_ended_by_the_timeout_naming_where_it_was(faulty, name, line):
    with pytest.raises(RewardFailed) as e:
        score(reward(faulty, name, timeout_s=0.3))
    msg = str(e.value)
    assert f"reward '{faulty}:{name}' did not return within reward.timeout_s = 0.3 s" in msg
    assert "a batch of 4 completions, the first d.jsonl line 1 (prompt 0)" in msg
    assert re.search(f"it was at {re.escape(faulty)}:{line} in {name}", msg) and "raise reward.timeout_s" in msg


def test_skip_counts_every_row_of_a_timed_out_call(faulty):
    r = reward(faulty, "sleeps", timeout_s=0.2, on_error="skip")
    res = score(r)
    assert res.per_fn[f"{faulty}:sleeps"].tolist() == [0.0] * 4 and (res.timeouts, res.unscorable) == (4, 4)
    os.kill(os.getpid(), signal.SIGVTALRM)  # a late interrupt after the call: its handler stays, and does nothing


def test_a_stop_request_ends_a_running_function_at_once(faulty):
    r = reward(faulty, "sleeps", timeout_s=600)
    asked = threading.Event()
    threading.Timer(0.2, asked.set).start()  # SIGTERM's handler sets the flag while the function sleeps
    r.should_stop = asked.is_set
    with pytest.raises(RewardInterrupted, match=f"reward '{faulty}:sleeps' was still running at {faulty}:16 in sleeps"):
        score(r)


# ---------------------------------------------------------------- a call in two halves (the trainer's CPU tail)


def self_timed(r: OutcomeReward, *keys: str) -> OutcomeReward:
    """`r` with the functions `keys` treated like math_verify, which times its own items: called in `prefetch`."""
    r._fns = [dataclasses.replace(b, guarded=False) if b.key in keys else b for b in r._fns]
    return r


def prefetched_on_a_thread(r: OutcomeReward, n: int = 4):
    """`prefetch` on another thread, as the trainer's CPU tail runs it."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(r.prefetch, PROMPTS[:n], COMPLETIONS[:n], ["1"] * n).result()


def test_prefetch_on_a_thread_then_finish_is_one_call(faulty):
    specs = [RewardSpec(f"{faulty}:nan_at_1", weight=0.5), RewardSpec(f"{faulty}:batch_only", weight=2.0)]
    keys = [s.name for s in specs]
    one = score(OutcomeReward(specs, on_error="skip"))
    r = self_timed(OutcomeReward(specs, on_error="skip"), keys[0])
    halves = r.finish(prefetched_on_a_thread(r))
    assert halves.total.tolist() == one.total.tolist() == [1.5, 1.0, 1.5, 1.5]  # 0.5 * (1, None -> 0, 1, 1) + 2 * 0.5
    assert (halves.errors, halves.unscorable) == (one.errors, one.unscorable) == (1, 1)
    assert r.take_faults() == {"errors": 1, "timeouts": 0}  # the NaN is judged in finish, on this thread


def test_an_exception_of_a_prefetched_function_is_raised_in_its_turn(faulty):
    # recip raises on row 2; prefetched, it raises its own exception in finish, with its traceback
    r = self_timed(OutcomeReward([RewardSpec(f"{faulty}:recip")]), f"{faulty}:recip")
    pre = prefetched_on_a_thread(r)
    with pytest.raises(ZeroDivisionError) as e:
        r.finish(pre)
    assert any(f.name == "recip" for f in traceback.extract_tb(e.value.__traceback__))
    # a function before it in spec order fails first, as in one call (on_error = "error")
    specs = [RewardSpec(f"{faulty}:nan_at_1"), RewardSpec(f"{faulty}:recip")]
    r = self_timed(OutcomeReward(specs, row_label=LABELS.get), f"{faulty}:recip")
    with pytest.raises(RewardFailed, match="returned nan at index 1"):
        r.finish(prefetched_on_a_thread(r))
