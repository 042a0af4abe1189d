"""Dynamic sampling (trainer/dynamic_sampling.py): the decision and the refill's bookkeeping by hand, putting a
batch together, and the trainer's refill on the tiny model: until full, at the cap, resumed mid-refill, 2 ranks."""

import json
import os
import sys
import threading

import pytest
import torch

from repro_train.models.forward import pack
from repro_train.repro.pipeline import Plan
from repro_train.tasks.arithmetic import generate, write_jsonl
from repro_train.trainer.dynamic_sampling import assemble, groups_without_signal, refill_slots
from repro_train.trainer.experience import Batch
from tests.helpers.trainer_utils import (
    REPO,
    last_checkpoint,
    make_recipe,
    max_abs_diff,
    metrics,
    policy_weights,
    run_cli,
    run_inprocess,
    trainer_state,
)

BIN = os.path.dirname(sys.executable)

# ----------------------------------------------------------------------------------------------
# the decision
# ----------------------------------------------------------------------------------------------


def test_outcome_drops_an_all_correct_group_that_signal_keeps():
    # group 0: all correct, RePro's A_tilde non-zero on row 1   -> outcome drops it, signal keeps it
    # group 1: mixed rewards                                    -> both keep it
    # group 2: all wrong, no process advantage                  -> both drop it
    # group 3: all correct, no process advantage                -> both drop it
    rewards = torch.tensor([1.0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1])
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    process = torch.zeros(12, 4)
    process[1, :2] = torch.tensor([0.3, -0.1])
    process[4, 0] = 0.2
    assert groups_without_signal("off", rewards, ids, process) == []
    assert groups_without_signal("outcome", rewards, ids, process) == [0, 2, 3]
    assert groups_without_signal("signal", rewards, ids, process) == [2, 3]
    assert groups_without_signal("signal", rewards, ids, None) == [0, 2, 3]  # no process advantage: as outcome


def test_decision_reads_rewards_exactly_and_any_group_id():
    # shaped rewards: 0.5 vs 0.5000001 is a signal; ids need not be contiguous or sorted
    rewards = torch.tensor([0.5, 0.5, 0.5, 0.5000001, 0.2])
    ids = torch.tensor([9, 9, 4, 4, 7])
    assert groups_without_signal("outcome", rewards, ids) == [7, 9]  # a group of one has equal rewards
    with pytest.raises(ValueError, match="outcome, signal"):
        groups_without_signal("dapo", rewards, ids)


# ----------------------------------------------------------------------------------------------
# the refill's bookkeeping
# ----------------------------------------------------------------------------------------------


def has_signal(prompt: int) -> bool:
    """The oracle of these tests: a prompt index divisible by 3 never has signal."""
    return prompt % 3 != 0


def one_rank(cap, draws=(12, 14, 15, 16), first=(0, 1, 2, 3), mine=(0, 1, 2, 3), agree=None):
    """refill_slots on 4 slots whose round-0 prompts are `first`; returns (latest, stats, run_round's calls)."""
    pool = iter(draws)
    calls = []

    def run_round(rnd, assign, refilling):
        calls.append((rnd, dict(assign)))
        return {s: has_signal(p) for s, p in assign.items()}

    latest, stats = refill_slots(
        4,
        list(mine),
        {s: has_signal(first[s]) for s in mine},
        lambda k: [next(pool) for _ in range(k)],
        run_round,
        agree or (lambda flags: flags),
        cap,
    )
    return latest, stats, calls


def test_refill_until_every_slot_has_signal():
    # round 0: prompts 0 1 2 3 -> slots 0 and 3 have none. round 1 draws 12 (slot 0, none) and 14 (slot 3, ok);
    # round 2 draws 15 for slot 0 (none); round 3 draws 16 (ok): full, after 4 draws in 3 rounds.
    latest, stats, calls = one_rank(cap=5)
    assert calls == [(1, {0: 12, 3: 14}), (2, {0: 15}), (3, {0: 16})]
    assert latest == {0: 3, 1: 0, 2: 0, 3: 1}
    # dropped: 2 (round 0) + 1 (12) + 1 (15) = 4 groups found without signal
    assert stats == {"dropped": 4, "rounds": 3, "prompts": 4, "unfilled": 0}


def test_refill_stops_at_the_cap_and_keeps_the_last_candidate():
    latest, stats, calls = one_rank(cap=2)
    assert calls == [(1, {0: 12, 3: 14}), (2, {0: 15})]
    assert latest == {0: 2, 1: 0, 2: 0, 3: 1}  # slot 0 keeps prompt 15, without signal
    assert stats == {"dropped": 4, "rounds": 2, "prompts": 3, "unfilled": 1}
    latest, stats, calls = one_rank(cap=0)
    assert calls == [] and latest == {0: 0, 1: 0, 2: 0, 3: 0}
    assert stats == {"dropped": 2, "rounds": 0, "prompts": 0, "unfilled": 2}


def test_two_ranks_refill_like_one():
    """Two threads stand for two ranks (slots 0-1 and 2-3, each with its own copy of the sampler); `agree` sums
    their flags behind a barrier as the all-reduce does. Each ends with its share of the one-rank result."""
    barrier, posted = threading.Barrier(2), {}

    def agree(rank):
        def f(flags):
            posted[rank] = flags
            barrier.wait()
            total = [a + b for a, b in zip(posted[0], posted[1])]
            barrier.wait()  # both have read before the next round posts
            return total

        return f

    results = {}

    def rank_main(rank):
        results[rank] = one_rank(cap=5, mine=(2 * rank, 2 * rank + 1), agree=agree(rank))

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    ref_latest, ref_stats, ref_calls = one_rank(cap=5)
    assert {**results[0][0], **results[1][0]} == ref_latest
    assert results[0][1] == results[1][1] == ref_stats
    assert results[0][2] == [(1, {0: 12}), (2, {0: 15}), (3, {0: 16})]  # rank 0 refills slot 0 only
    assert results[1][2] == [(1, {3: 14}), (2, {}), (3, {})]  # rank 1 takes part in every round


# ----------------------------------------------------------------------------------------------
# putting a batch together
# ----------------------------------------------------------------------------------------------


def small_batch(prompts, responses, slot0, tag):
    """A Batch of one-row groups with per-row values that name their origin (tag * 100 + row)."""
    seqs = pack(prompts, responses, pad_id=0)
    n, R = seqs.response_mask.shape
    val = torch.arange(n, dtype=torch.float32) + 100 * tag
    return Batch(
        seqs=seqs,
        response_ids=[list(r) for r in responses],
        group_ids=torch.arange(slot0, slot0 + n),
        prompt_index=[100 * tag + i for i in range(n)],
        texts=[f"{tag}-{i}" for i in range(n)],
        answers=[str(tag)] * n,
        truncated=torch.tensor([False] * n),
        rewards=val,
        correct=val > 0,
        reward_parts={"f": val * 2},
        unscorable=tag,
        old_logprobs=val[:, None].expand(n, R) * seqs.response_mask,
        entropy=torch.ones(n, R) * seqs.response_mask,
        plan=Plan(requests=[None] * n, segmentations=[None] * n, skip=[f"s{tag}{i}" for i in range(n)]),
        probes=[None] * n,
        timings={"generate_s": 1.0 + tag, "forward_s": 0.5},
    )


def test_assemble_takes_rows_of_several_batches_in_order():
    a = small_batch([[5, 6], [7]], [[1, 2, 3], [4]], 0, tag=1)  # P 2, R 3
    b = small_batch([[8, 9, 9], [3]], [[2], [6, 6, 6, 6, 6]], 2, tag=2)  # P 3, R 5
    out = assemble([(a, [1]), (b, [0]), (a, [0])], pad_id=0)
    # the rows: a's row 1, b's row 0, a's row 0, re-packed with P = 3 and R = 3 (b's 5-token row is not taken)
    want = pack([[7], [8, 9, 9], [5, 6]], [[4], [2], [1, 2, 3]], pad_id=0)
    for k in ("input_ids", "attention_mask", "position_ids", "response_mask"):
        assert torch.equal(getattr(out.seqs, k), getattr(want, k)), k
    assert out.seqs.prompt_width == 3
    assert out.group_ids.tolist() == [1, 2, 0]
    assert out.prompt_index == [101, 200, 100] and out.texts == ["1-1", "2-0", "1-0"]
    assert out.rewards.tolist() == [101.0, 200.0, 100.0]
    assert out.reward_parts["f"].tolist() == [202.0, 400.0, 200.0]
    assert out.old_logprobs.tolist() == [[101, 0, 0], [200, 0, 0], [100, 100, 100]]
    assert out.plan.skip == ["s11", "s20", "s10"] and len(out.probes) == 3
    assert out.unscorable == 1 + 2 and out.timings == {"generate_s": 2.0 + 3.0, "forward_s": 1.0}  # a, b once each
    assert out.is_stats == {} and out.ref_logprobs is None


def test_assemble_refuses_a_field_it_cannot_split():
    a = small_batch([[5]], [[1, 2]], 0, tag=1)
    b = small_batch([[5]], [[1, 2]], 1, tag=2)
    b.values = torch.zeros(1, 7)  # not (B, R): R is 2
    a.values = torch.zeros(1, 2)
    with pytest.raises(TypeError, match="values"):
        assemble([(a, [0]), (b, [0])], pad_id=0)
    b.values, b.mask_truncated = None, True
    a.values = None
    with pytest.raises(TypeError, match="mask_truncated"):
        assemble([(a, [0]), (b, [0])], pad_id=0)


# ----------------------------------------------------------------------------------------------
# the trainer's refill on the tiny model
# ----------------------------------------------------------------------------------------------

REWARDS = """
def parity(prompts, completions, answers, **columns):
    \"\"\"Even answers: 1.0 for every response (a group without outcome signal); odd: the digit share.\"\"\"
    return [1.0 if int(a) % 2 == 0 else sum(ch.isdigit() for ch in t) / max(len(t), 1)
            for t, a in zip(completions, answers)]


def constant(prompts, completions, answers, **columns):
    return [1.0] * len(completions)
"""


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    """12 toy problems in a fixed order (data.shuffle false): even answers at rows 0, 2, 4, 5 (no outcome signal
    under `parity`), odd at 1, 3, 6-11."""
    tmp = tmp_path_factory.mktemp("ds")
    rows = generate(60, seed=11, with_traces=False)
    even = [r for r in rows if int(r["answer"]) % 2 == 0]
    odd = [r for r in rows if int(r["answer"]) % 2 == 1]
    order = [even[0], odd[0], even[1], odd[1], even[2], even[3]] + odd[2:8]
    write_jsonl(order, str(tmp / "toy.jsonl"))
    # for 2 ranks: rank 0's slots 0-1 both even, rank 1's odd, so rank 0 refills while rank 1 has (mostly) nothing
    write_jsonl([even[0], even[1], odd[0], odd[1], even[2], even[3]] + odd[2:8], str(tmp / "ranks.jsonl"))
    (tmp / "rewards.py").write_text(REWARDS)
    return tmp


def recipe(tmp_path, tiny_model_dir, data_path, reward="parity", data="toy.jsonl", **sections):
    sections.setdefault("rollout", {})
    sections["rollout"] = {"prompts_per_step": 4, "dynamic_sampling": "outcome", **sections["rollout"]}
    sections["data"] = {"shuffle": False, **sections.get("data", {})}
    sections["reward"] = {"functions": [{"name": f"{data_path / 'rewards.py'}:{reward}"}], "num_workers": 1}
    sections["algo"] = {"micro_batch_size": 4, **sections.get("algo", {})}
    return make_recipe(tmp_path, tiny_model_dir, str(data_path / data), **sections)


def test_outcome_refills_the_even_answers(tmp_path, tiny_model_dir, data_path):
    """Step 1: rows 0-3, slots 0 and 2 hold even answers (no signal) and draw rows 4 and 5, even too, then rows
    6 and 7 (odd). Whatever the digit shares do, a group without signal in the final batch is one the cap left."""
    run = run_inprocess(recipe(tmp_path, tiny_model_dir, data_path, train={"steps": 2}))
    rows = metrics(run)
    first = rows[0]
    assert first["sampling/rounds"] >= 2 and first["sampling/prompts"] >= 4 + 2 + 2
    for r in rows:
        # every no-signal group found was refilled (a draw) or is still in the batch at the cap
        assert r["sampling/dropped"] == r["sampling/prompts"] - 4 + r["sampling/unfilled"]
        assert r["groups/zero_std_frac"] * 4 == r["sampling/unfilled"]
        assert r["sampling/rounds"] <= 3 and (r["sampling/unfilled"] == 0 or r["sampling/rounds"] == 3)
    # slot 0 (rank 0's first group, the logged samples) went row 0 -> row 4 -> row 6 or later: an odd answer
    with open(os.path.join(run, "samples.jsonl")) as fh:
        logged = [json.loads(line) for line in fh]
    assert {int(s["answer"]) % 2 for s in logged if s["step"] == 1} == {1}


def test_the_cap_with_no_outcome_signal_and_signal_keeps_repro_groups(tmp_path, tiny_model_dir, data_path):
    """A constant reward, RePro on: `outcome` never fills a slot, so both rounds run and each refills all 4 slots,
    while the groups it gives up on carry a process advantage (the trap); `signal` keeps those groups."""
    repro = {"enabled": True, "probe_prefix": "\n\nFinal answer: "}
    counts = ("sampling/rounds", "sampling/prompts", "sampling/dropped", "sampling/unfilled")
    rows = {}
    for mode in ("outcome", "signal"):
        rec = recipe(
            tmp_path / mode,
            tiny_model_dir,
            data_path,
            "constant",
            rollout={"refill_rounds": 2, "dynamic_sampling": mode},
            repro=repro,
            train={"steps": 1},
        )
        rows[mode] = metrics(run_inprocess(rec))[0]
    assert tuple(rows["outcome"][k] for k in counts) == (2, 4 * 3, 4 * 3, 4)
    assert rows["outcome"]["repro/process_adv_abs"] > 0
    assert rows["signal"]["sampling/dropped"] < 4 * 3 and rows["signal"]["sampling/unfilled"] < 4
    assert rows["signal"]["repro/process_adv_abs"] > 0


def test_resume_mid_refill_is_exact(tmp_path, tiny_model_dir, data_path):
    """Refills consume extra prompts inside a step; the checkpoint after step 2 holds the sampler's position, so
    steps 3-4 resumed equal steps 3-4 straight (weights, optimizer state, every metric)."""
    common = dict(train={"steps": 4, "deterministic": True}, rollout={"per_prompt_seed": False})
    straight = run_inprocess(recipe(tmp_path / "s", tiny_model_dir, data_path, **common))
    part = recipe(tmp_path / "r", tiny_model_dir, data_path, **common)
    run_inprocess(part, "train.steps=2", "train.save_every=2")
    resumed = run_inprocess(part, "train.resume=auto")
    m1, o1 = trainer_state(last_checkpoint(straight))
    m2, o2 = trainer_state(last_checkpoint(resumed))
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
    for i in o1["state"]:
        for k, v in o1["state"][i].items():
            assert torch.equal(v, o2["state"][i][k]), (i, k)
    a, b = metrics(straight), metrics(resumed)
    assert a[0]["sampling/rounds"] >= 1  # the refill did run
    keys = ["reward/mean", "sampling/prompts", "sampling/dropped", "sampling/rounds", "train/pg_loss"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


@pytest.mark.distributed
@pytest.mark.parametrize("launcher", ["ddp", "zero2", "zero3"])
def test_two_ranks_keep_the_groups_of_one(tmp_path, tiny_model_dir, data_path, launcher):
    """2 ranks (torchrun DDP and ZeRO-2, where rank 1 sits out the rounds it has nothing to refill; ZeRO-3, where it
    pads them) refill the same slots with the same prompts as 1 process: same rewards, counts and loss, and the
    same weights after step 1."""
    rec = recipe(tmp_path, tiny_model_dir, data_path, data="ranks.jsonl", train={"steps": 1, "save_every": 1})
    reference = run_inprocess(rec, f"train.output_dir={tmp_path / 'single'}")
    out = tmp_path / launcher
    if launcher == "ddp":
        cmd = [f"{BIN}/torchrun", "--standalone", "--nproc_per_node", "2", "-m", "repro_train"]
        extra = []
    else:
        cfg = f"{REPO}/launch/accelerate/{launcher}.yaml"
        cmd = [f"{BIN}/accelerate", "launch", "--config_file", cfg, "--num_processes", "2", "-m", "repro_train"]
        extra = ["train.device=auto"]
    res = run_cli(["train", "--config", rec, f"train.output_dir={out}", *extra], launcher=cmd)
    assert res.returncode == 0, res.stderr[-3000:]
    ref, got = metrics(reference)[0], metrics(str(out))[0]
    assert ref["sampling/rounds"] >= 1
    for k in ("reward/mean", "groups/zero_std_frac", "sampling/dropped", "sampling/prompts", "sampling/unfilled"):
        assert got[k] == pytest.approx(ref[k], abs=1e-9), k
    assert got["train/pg_loss"] == pytest.approx(ref["train/pg_loss"], abs=1e-5)
    step1 = lambda d: policy_weights(os.path.join(d, "checkpoint-000001"))  # noqa: E731
    assert max_abs_diff(step1(str(out)), step1(reference)) < 1e-4
