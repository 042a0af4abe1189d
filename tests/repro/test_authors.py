"""RePro as the authors' code computes it (docs/repro.md, 'The authors' code'): the worked example
by hand, and each option moving the output the way the facts page says."""

import math

import pytest
import torch

from repro_train.config import load
from repro_train.core.typed_config import ConfigError, dump_yaml
from repro_train.models.forward import pack
from repro_train.repro.config import ReProConfig
from repro_train.repro.pipeline import Plan, RePro
from repro_train.repro.presets import AUTHORS_CODE, AUTHORS_CODE_FOLDS, GOVERNED
from repro_train.repro.probe import ProbeRunner, ProbeSettings
from repro_train.repro.scores import (
    dense_process_rewards,
    empty_prefix_score,
    magnitude,
    normalize_rewards,
    pool_stats,
    process_rewards,
    process_score,
    stability,
    token_process_advantages,
)
from repro_train.repro.segment import segment_response, thinking_end_by_id, token_boundary_starts
from repro_train.repro.select import add_forced_cuts
from repro_train.repro.types import ProbeResult
from repro_train.trainer.process_fold import dense_rewards, process_advantage, second_gae
from tests.helpers.repro import fmt

D = torch.float64
AUTHORS = ReProConfig(**{k: v for k, v in AUTHORS_CODE.items()}, **AUTHORS_CODE_FOLDS["grpo"], preset="authors_code")

# The worked example of docs/repro.md ('Worked example, authors' code'): the spec's J values, now at
# the authors' cuts. Rollout 1 (12 tokens): boundary tokens at 1, 4, 7 -> forks 2, 5, 8; '</think>'
# at token 9 -> forced cut 10. Rollout 2 (6 tokens): boundary token at 2 -> fork 3; '</think>' at
# token 4 -> forced cut 5. Same prompt.
J_B = [-4.0, -3.0]
J = [[-3.0, -3.5, -1.0, -0.2], [-4.5, -2.0]]
CUTS = [[2, 5, 8, 10], [3, 5]]
EXP_S = [[0.364851, 0.296094, 0.755081, 0.950041], [0.094852, 0.417217]]
EXP_R = [[0.364851, -0.068757, 0.458987, 0.194960], [0.094852, 0.322365]]
EXP_RN = [[0.995347, -1.229990, 1.478465, 0.123443], [-0.390328, 0.777304]]
EXP_A = [
    [1.367266] * 2 + [0.371919] * 3 + [1.601909] * 3 + [0.123443] * 2 + [0.0] * 2,
    [0.386976] * 3 + [0.777304] * 2 + [0.0] * 7,
]


def padded_example():
    J_b = torch.tensor(J_B, dtype=D)
    Jt = torch.tensor([J[0], J[1] + [0.0, 0.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    cuts = torch.tensor([CUTS[0], CUTS[1] + [0, 0]])
    return J_b, Jt, mask, cuts


def check_rows(got, expected, atol=1e-6):
    for i, row in enumerate(expected):
        assert torch.allclose(got[i, : len(row)].double(), torch.tensor(row, dtype=D), atol=atol), (i, got[i], row)


def test_authors_worked_example_by_hand():
    J_b, Jt, mask, cuts = padded_example()
    # S_magn on NLLs v = -J: tanh((v_b - v) / (v_b + 1e-6) - 1) + 1, e.g. v_b = 4, v = 3:
    # tanh(1 / 4.000001 - 1) + 1 = 1 - tanh(0.75000006) = 0.364851
    S_magn = magnitude(Jt, J_b, 1e-6, "nll") * mask
    S = process_score(S_magn, stability(Jt, J_b) * mask, 0.2, "off") * mask  # stability off: S = S_magn
    check_rows(S, EXP_S)
    # S_0 = 0: r_1 = S_1; r_j = S_j - S_{j-1}
    r = process_rewards(S, mask, 0.2, "zero", "off")
    check_rows(r, EXP_R)
    # one pool: the six r plus one zero per rollout (8 values); mean 0.170907,
    # unbiased std sqrt(sum (x - mean)^2 / 7) = 0.194849; r' = (r - mean) / (std + 1e-6)
    r_norm = normalize_rewards(r, mask, torch.tensor([0, 0]), "group", 1e-6, std="unbiased", extra_zero=True)
    check_rows(r_norm, EXP_RN)
    # r'_j at token c_j - 1, return to go (gamma 1): token t gets the sum of r'_j over c_j > t
    check_rows(token_process_advantages(r_norm, cuts, mask, 12), EXP_A, atol=2e-6)


def test_authors_worked_example_through_repro(tiny):
    """The same numbers from RePro.advantages under the resolved authors_code config."""
    _, tok = tiny
    repro = RePro(AUTHORS, tok, fmt(tok))
    probes = [
        ProbeResult(H=torch.zeros(3), selected=[True] * 3, cuts=CUTS[0], J_b=J_B[0], J=torch.tensor(J[0])),
        ProbeResult(H=torch.zeros(1), selected=[True], cuts=CUTS[1], J_b=J_B[1], J=torch.tensor(J[1])),
    ]
    plan = Plan([None, None], [None, None], [None, None])
    out = repro.advantages(plan, probes, torch.tensor([7, 7]), 12)
    check_rows(out.S, EXP_S)
    check_rows(out.r, EXP_R)
    check_rows(out.r_norm, EXP_RN)
    check_rows(out.process_adv, EXP_A, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# each option, pure functions
# ---------------------------------------------------------------------------------------------


def test_thinking_span_by_first_token_id():
    # T = positions before the first token equal to the marker's first id; the forced cut includes it
    assert thinking_end_by_id([5, 6, 9, 7, 9, 2], 9) == (2, 3)
    assert thinking_end_by_id([5, 6, 7], 9) == (3, 3)  # no marker: the whole response
    assert thinking_end_by_id([5, 6, 7], None) == (3, 3)


def test_token_boundaries_after_the_boundary_ids_inside_the_span():
    ids = [10, 1, 11, 12, 2, 13, 1, 1, 14, 9, 1, 15]
    # positions whose previous token is 1 or 2, inside [1, T): 2, 5, 7, 8 (T = 9, the '</think>' id 9)
    assert token_boundary_starts(ids, 9, {1, 2}) == [0, 2, 5, 7, 8]
    assert token_boundary_starts(ids, 0, {1, 2}) == []
    seg = segment_response(ids, None, "", "", think_end_id=9, boundary_ids={1, 2})
    assert (seg.T, seg.starts, seg.think_end_cut, seg.text) == (9, (0, 2, 5, 7, 8), 10, "")


def test_text_mode_forced_cut_covers_a_multi_token_marker():
    pieces = ["a", "\n\n", "b", "</", "think", ">", "c"]
    seg = segment_response(list(range(len(pieces))), lambda xs: "".join(pieces[i] for i in xs), "</think>", r"\n\n")
    assert (seg.T, seg.starts, seg.think_end_cut) == (3, (0, 2), 6)


def test_forced_cuts_merge_sorted_without_duplicates():
    cuts = torch.tensor([[3, 7, 0], [4, 0, 0], [0, 0, 0]])
    valid = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    forced = torch.tensor([[5], [4], [9]])
    fvalid = torch.tensor([[1], [1], [1]], dtype=torch.bool)
    out, ok = add_forced_cuts(cuts, valid, forced, fvalid)
    assert out.tolist() == [[3, 5, 7, 0], [4, 0, 0, 0], [9, 0, 0, 0]]
    assert ok.tolist() == [[True, True, True, False], [True, False, False, False], [True, False, False, False]]


def test_magnitude_nll_form_differs_by_order_eps():
    J_b, J_ = torch.tensor([-4.0], dtype=D), torch.tensor([[-0.2]], dtype=D)
    ratio, nll = magnitude(J_, J_b, 1e-6, "ratio").item(), magnitude(J_, J_b, 1e-6, "nll").item()
    assert ratio == pytest.approx(1 - math.tanh(0.05), abs=1e-12)
    assert nll == pytest.approx(1 - math.tanh(0.200001 / 4.000001), abs=1e-12)
    assert 1e-7 < ratio - nll < 1e-6  # 0.950042 vs 0.950041: visible at the 6th decimal
    # with a large eps the two forms part ways
    assert magnitude(J_, J_b, 0.5, "nll").item() == pytest.approx(1 - math.tanh(0.7 / 4.5), abs=1e-12)


def test_stability_modes():
    S_magn, S_stab = torch.tensor([0.3, 0.6]), torch.tensor([1.0, 0.5])
    assert torch.allclose(process_score(S_magn, S_stab, 0.2, "convex"), torch.tensor([0.44, 0.58]))
    assert torch.equal(process_score(S_magn, S_stab, 0.2, "off"), S_magn)
    # additive: S_magn + 0.1 (1/2 - tau_NLL), tau_NLL = -(2 S_stab - 1): 0.3 + 0.1 * 1.5, 0.6 + 0.1 * 0.5
    assert torch.allclose(process_score(S_magn, S_stab, 0.1, "additive"), torch.tensor([0.45, 0.65]))
    assert empty_prefix_score(0.2, "score", "off") == pytest.approx(1 - math.tanh(1))
    assert empty_prefix_score(0.1, "score", "additive") == pytest.approx(1 - math.tanh(1) + 0.05)
    assert empty_prefix_score(0.2, "zero", "off") == 0.0


def test_unbiased_std_and_extra_zero():
    r = torch.tensor([[1.0, 2.0, 3.0]], dtype=D)
    mask = torch.ones(1, 3, dtype=torch.bool)
    g = torch.tensor([0])
    pop = normalize_rewards(r, mask, g, "group", 0.0)
    unb = normalize_rewards(r, mask, g, "group", 0.0, std="unbiased")
    assert torch.allclose(pop, torch.tensor([[-1.0, 0.0, 1.0]], dtype=D) / math.sqrt(2 / 3))
    assert torch.allclose(unb, torch.tensor([[-1.0, 0.0, 1.0]], dtype=D))  # sample std of 1, 2, 3 = 1
    # extra zero: pool (1, 2, 3, 0), mean 1.5, unbiased std sqrt(5/3)
    ez = normalize_rewards(r, mask, g, "group", 0.0, std="unbiased", extra_zero=True)
    assert torch.allclose(ez, (r - 1.5) / math.sqrt(5 / 3))
    ezb = normalize_rewards(r, mask, None, "batch", 0.0, std="unbiased", extra_zero=True)
    assert torch.allclose(ezb, ez)
    # group_mean: the authors' REINFORCE++-baseline fold subtracts the mean only (with the extra zero: 1.5)
    assert torch.allclose(normalize_rewards(r, mask, g, "group_mean", extra_zero=True), r - 1.5)
    assert torch.allclose(normalize_rewards(r, mask, g, "group_mean"), r - 2.0)
    # a pool of one without the extra zero gives 0 in both stds
    one = torch.tensor([[0.7, 0.0, 0.0]], dtype=D)
    m1 = torch.tensor([[1, 0, 0]], dtype=torch.bool)
    assert torch.all(normalize_rewards(one, m1, g, "group", std="unbiased") == 0)


def test_batch_pool_with_extra_zero_split_across_ranks_equals_whole():
    torch.manual_seed(0)
    r = torch.randn(6, 4, dtype=D)
    mask = torch.rand(6, 4) > 0.3
    mask[5] = False  # an unscored rollout adds no zero
    whole = normalize_rewards(r, mask, None, "batch", std="unbiased", extra_zero=True)
    stats = pool_stats(r[:3], mask[:3], True) + pool_stats(r[3:], mask[3:], True)
    assert stats[0].item() == mask.sum().item() + 5
    parts = [
        normalize_rewards(r[a:b], mask[a:b], None, "batch", std="unbiased", extra_zero=True, batch_stats=stats)
        for a, b in ((0, 3), (3, 6))
    ]
    assert torch.allclose(torch.cat(parts), whole)


def test_reward_at_cut_minus_one_then_return_to_go_is_the_spec_token_advantage():
    """The authors' reward position (r'_j at token c_j - 1, return to go with gamma 1) gives the
    spec's A~ (step j's tokens get sum_{i >= j} r'_i): no option is needed for it."""
    _, _, mask, cuts = padded_example()
    r_norm = torch.tensor([EXP_RN[0], EXP_RN[1] + [0.0, 0.0]], dtype=D)
    dense = dense_process_rewards(r_norm, cuts, mask, 12)  # (2, 12)
    assert dense[0].nonzero().flatten().tolist() == [1, 4, 7, 9] and dense[1].nonzero().flatten().tolist() == [2, 4]
    rtg = dense.flip(-1).cumsum(-1).flip(-1)
    assert torch.allclose(rtg, token_process_advantages(r_norm, cuts, mask, 12), atol=1e-12)
    check_rows(rtg, EXP_A, atol=2e-6)


def test_each_fold_goes_in_one_place_only():
    """PPO 'dense_reward': alpha * r' on tokens c_j - 1 joins the token rewards, nothing is folded after;
    'advantage' (and every other estimator): no token rewards, A_tilde is folded after."""
    from types import SimpleNamespace

    out = SimpleNamespace(
        r_norm=torch.tensor([[1.0, -2.0], [0.5, 0.0]]),
        cuts=torch.tensor([[2, 4], [3, 0]]),
        mask=torch.tensor([[1, 1], [1, 0]], dtype=torch.bool),
        process_adv=torch.arange(10.0).reshape(2, 5),
    )
    dense_cfg = load(None, ["algo.estimator=gae", "repro.ppo_process_reward=dense_reward", "repro.alpha=0.5"])
    exp = torch.tensor([[0.0, 0.5, 0.0, -1.0, 0.0], [0.0, 0.0, 0.25, 0.0, 0.0]])
    assert torch.equal(dense_rewards(dense_cfg, out, 5), exp)
    assert process_advantage(dense_cfg, out, torch.ones(2, 5, dtype=torch.bool), None, lambda x: x) is None
    for overrides in (["algo.estimator=gae"], ["algo.estimator=grpo"], ["algo.estimator=rloo"]):
        cfg = load(None, overrides)
        assert dense_rewards(cfg, out, 5) is None
        assert process_advantage(cfg, out, torch.ones(2, 5, dtype=torch.bool), None, lambda x: x) is out.process_adv


def test_second_gae_is_whitened_return_to_go_with_zero_values():
    # gamma = lam = 1, V = 0: GAE = undiscounted return to go of r' placed at c_j - 1, then whitened
    r_norm = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=D)
    cuts, step_mask = torch.tensor([[2, 4], [3, 0]]), torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    out = second_gae(r_norm, cuts, step_mask, mask, torch.zeros(2, 5), 1.0, 1.0, lambda x: x)
    rtg = torch.tensor([-1.0, -1.0, -2.0, -2.0, 0.0, 0.5, 0.5, 0.5], dtype=D)  # the 8 valid tokens
    exp = (rtg - rtg.mean()) / torch.sqrt(rtg.var(unbiased=True) + 1e-8)
    assert torch.allclose(out[mask].double(), exp, atol=1e-6)
    assert torch.all(out[~mask] == 0)
    # the critic's values enter: V = 1 on every token changes the advantages
    other = second_gae(r_norm, cuts, step_mask, mask, torch.ones(2, 5), 1.0, 0.5, lambda x: x)
    assert not torch.allclose(other, out)


# ---------------------------------------------------------------------------------------------
# each option, on the tiny model
# ---------------------------------------------------------------------------------------------

TEXT = "Add 3 + 4 = 7.\n\nThen 7 + 1 = 8.\nIs it 8?\nSo 8.\n</think>\n\nFinal answer: 8"


def plan_one(tok, cfg, text=TEXT):
    repro = RePro(cfg, tok, fmt(tok))
    resp = tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
    return repro, resp, repro.plan([resp], ["8"])


def test_token_id_boundaries_fork_cuts_and_forced_cut_on_the_tokenizer(tiny):
    _, tok = tiny
    _, resp, spec = plan_one(tok, ReProConfig())
    _, _, auth = plan_one(tok, AUTHORS)
    T = resp.index(tok("</think>", add_special_tokens=False).input_ids[0])
    # spec: regex '\n\n' on the text -> one boundary; segments end at 10 and at T; no forced cut
    assert spec.requests[0].seg_ends == (10, T) and spec.requests[0].forced_cuts == ()
    # authors: the first ids of '.\n', '?\n' ('.' and '?' here) and '\n\n' -> forks after them, cut = fork
    first = {tok(s, add_special_tokens=False).input_ids[0] for s in (".\n", "?\n", "\n\n")}
    forks = tuple(t for t in range(1, T) if resp[t - 1] in first)
    assert forks == (8, 20, 27, 32)
    assert auth.requests[0].seg_starts == auth.requests[0].seg_ends == forks
    assert auth.requests[0].forced_cuts == (T + 1,)
    assert auth.segmentations[0].T == T
    # cut_at alone: fork cuts on the regex segments (the first segment is no candidate)
    _, _, fork = plan_one(tok, ReProConfig(cut_at="fork"))
    assert fork.requests[0].seg_ends == (10,)
    # force_think_end_cut alone: the text marker's end
    _, _, forced = plan_one(tok, ReProConfig(force_think_end_cut=True))
    assert forced.requests[0].forced_cuts == (T + 1,)
    # a rollout with no boundary still has its forced cut: scored, not skipped
    _, lone_resp, lone = plan_one(tok, AUTHORS, "no boundary here")
    assert lone.skip == [None] and lone.requests[0].seg_starts == ()
    assert lone.requests[0].forced_cuts == (len(lone_resp),)  # no '</think>': the whole response, EOS included


class BosTokenizer:
    """The tiny tokenizer, adding a BOS (id 1) when asked for special tokens, as Llama tokenizers do."""

    def __init__(self, tok):
        self.tok, self.pad_token_id, self.eos_token_id = tok, tok.pad_token_id, tok.eos_token_id

    def __call__(self, text, add_special_tokens=True):
        ids = self.tok(text, add_special_tokens=False).input_ids
        return type("Enc", (), {"input_ids": ([1] if add_special_tokens else []) + ids})()

    def decode(self, ids, **kw):
        return self.tok.decode(ids, **kw)


def test_probe_text_scored_whole_with_special_tokens(tiny):
    _, tok = tiny
    spec = RePro(ReProConfig(), tok, fmt(tok))
    whole = RePro(ReProConfig(probe_scored="all"), tok, fmt(tok))
    assert spec.forcing_ids == tuple(tok("\n\nFinal answer: ", add_special_tokens=False).input_ids)
    assert spec.answer_ids("8") == tuple(tok("8", add_special_tokens=False).input_ids)
    assert whole.forcing_ids == ()
    assert whole.answer_ids("8") == tuple(tok("\n\nFinal answer: 8", add_special_tokens=False).input_ids)
    auth = RePro(AUTHORS, tok, fmt(tok))
    assert auth.forcing_ids == () and tok.decode(list(auth.answer_ids(" 8 "))) == "\\boxed{8}"
    bos = RePro(AUTHORS, BosTokenizer(tok), fmt(tok))
    assert bos.answer_ids("8")[0] == 1 and bos.answer_ids("8")[1:] == auth.answer_ids("8")
    assert RePro(ReProConfig(probe_special_tokens=False), BosTokenizer(tok), fmt(tok)).answer_ids("8")[0] != 1


def reference_J(model, prompt, response, cut, probe):
    """J(c): mean log-prob of every probe token after p + y[:c], one plain float32 forward."""
    ids = prompt + response[:cut] + probe
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    start = len(prompt) + cut
    return sum(logp[start - 1 + i, probe[i]].item() for i in range(len(probe))) / len(probe)


@pytest.mark.parametrize("impl", ["fused", "naive"])
def test_fork_and_forced_cuts_fused_equals_naive_and_reference(tiny, impl):
    model, tok = tiny
    texts = [TEXT, "First 12 + 5 = 17.\nthen 17?\nok.\n\ndone.\nnext 2 + 2 = 4.", "no boundary"]
    repro = RePro(
        ReProConfig(**{**AUTHORS_CODE, "top_k": 3}, probe=ProbeSettings(impl=impl, batch_size=2)), tok, fmt(tok)
    )
    prompts = [tok(p).input_ids for p in ("Q: 3+4+1?", "Q: twelve plus five", "hi")]
    resp = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in texts]
    plan = repro.plan(resp, ["8", "17 and 4", "3"])
    seqs = pack(prompts, resp, tok.pad_token_id)
    out = repro.policy_pass(model, seqs, plan.requests)
    n = 0
    for b, (probe, req) in enumerate(zip(out.probes, plan.requests)):
        assert probe.cuts == sorted(set(probe.cuts)) and set(req.forced_cuts) <= set(probe.cuts)
        assert len(probe.cuts) == min(3, len(req.seg_starts)) + len(set(req.forced_cuts) - set(req.seg_ends))
        q = list(req.answer_ids)
        assert probe.J_b == pytest.approx(reference_J(model, prompts[b], resp[b], 0, q), abs=1e-5)
        for c, j in zip(probe.cuts, probe.J.tolist()):
            assert j == pytest.approx(reference_J(model, prompts[b], resp[b], c, q), abs=1e-5)
            n += 1
    assert n >= 8
    # the response without '</think>' is forced-cut at its whole length (EOS included)
    assert out.probes[1].cuts[-1] == len(resp[1]) and out.probes[2].cuts == [len(resp[2])]


def test_fused_equals_naive_for_fork_cuts_through_repro(tiny):
    model, tok = tiny
    texts = [TEXT, "First 12 + 5 = 17.\nthen 17?\nok.\n\ndone.\nnext 2 + 2 = 4."]
    prompts = [tok("Q: 3+4+1?").input_ids] * 2
    resp = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in texts]
    seqs = pack(prompts, resp, tok.pad_token_id)
    Js = []
    for impl in ("fused", "naive"):
        repro = RePro(ReProConfig(**AUTHORS_CODE, probe=ProbeSettings(impl=impl)), tok, fmt(tok))
        plan = repro.plan(resp, ["8", "8"])
        out = repro.policy_pass(model, seqs, plan.requests)
        Js.append(torch.cat([torch.cat([torch.tensor([p.J_b]), p.J]) for p in out.probes]))
    assert Js[0].dtype == torch.float32 and len(Js[0]) == 1 + 5 + 1 + 6 and torch.allclose(Js[0], Js[1], atol=1e-5)


def test_engine_reads_forced_cuts_only_when_given(tiny):
    """A request without forced cuts keeps the spec's block count (no extra probe block)."""
    model, tok = tiny
    repro = RePro(ReProConfig(top_k=1), tok, fmt(tok))
    resp = tok(TEXT, add_special_tokens=False).input_ids
    plan = repro.plan([resp], ["8"])
    widths = []

    class Recording(ProbeRunner):  # the probe blocks the engine scores: J_b plus one per cut slot
        def fused(self, model, seqs, cache, blocks):
            widths.append(blocks.cuts.shape[1])
            return super().fused(model, seqs, cache, blocks)

        def naive(self, model, seqs, blocks):
            widths.append(blocks.cuts.shape[1])
            return super().naive(model, seqs, blocks)

    out = Recording().run(model, pack([tok("Q").input_ids], [resp], tok.pad_token_id), plan.requests, [], 1)
    assert plan.requests[0].forced_cuts == () and len(plan.requests[0].seg_ends) == 2
    assert len(out.probes[0].cuts) == 1 and set(out.probes[0].cuts) <= set(plan.requests[0].seg_ends)
    assert widths == [1 + 1]  # J_b and top_k = 1 cut: no slot for a forced cut


# ---------------------------------------------------------------------------------------------
# the preset
# ---------------------------------------------------------------------------------------------


def test_preset_fills_governed_keys_and_explicit_keys_win(tmp_path):
    spec = load(None, [])
    assert spec.repro == ReProConfig()
    auth = load(None, ["repro.preset=authors_code"])
    for k, v in AUTHORS_CODE.items():
        assert getattr(auth.repro, k) == v, k
    assert (auth.repro.alpha, auth.repro.top_k, auth.repro.process_norm) == (0.05, 20, "group")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("repro:\n  preset: authors_code\n  top_k: 5\n  stability: convex\n")
    mixed = load(str(recipe), ["repro.alpha=0.3"])
    r = mixed.repro
    assert (r.top_k, r.stability, r.alpha, r.cut_at) == (5, "convex", 0.3, "fork")
    # the saved config shows the resolved values and reloads to the same config
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(mixed))
    text = saved.read_text()
    assert "preset: authors_code" in text and "cut_at: fork" in text and "top_k: 5" in text
    assert load(str(saved), []) == mixed
    # the spec preset resets what it governs, also over another preset's saved values
    assert load(str(saved), ["repro.preset=spec"]).repro.cut_at == "fork"  # explicit in the file: kept
    with pytest.raises(ConfigError, match="repro.preset"):
        load(None, ["repro.preset=paper"])


@pytest.mark.parametrize(
    "estimator,norm,ppo",
    [
        ("grpo", "group", "advantage"),
        ("rloo", "group", "advantage"),
        ("reinforce_pp", "batch", "advantage"),
        ("reinforce_pp_baseline", "group_mean", "advantage"),
        ("gae", "none", "second_gae"),
    ],
)
def test_preset_folds_per_algorithm(estimator, norm, ppo):
    cfg = load(None, ["repro.preset=authors_code", f"algo.estimator={estimator}"])
    assert (cfg.repro.process_norm, cfg.repro.ppo_process_reward) == (norm, ppo)
    assert set(GOVERNED) >= {"process_norm", "ppo_process_reward", "alpha", "top_k"}


def test_second_gae_needs_ppo():
    with pytest.raises(ConfigError, match="ppo_process_reward"):
        load(None, ["repro.ppo_process_reward=second_gae"])
