"""The J probe and the log-prob pass against plain per-sequence `model(...)` calls (float32)."""

import pytest
import torch

from repro_train.core.text import TokenizerDecoder
from repro_train.models.forward import forward_logprobs, logprob_pass, pack
from repro_train.repro.probe import ProbeRunner, ProbeSettings
from repro_train.repro.probe.blocks import Blocks
from repro_train.repro.segment import segment_response
from repro_train.repro.types import ProbeRequest

TEXTS = [
    "Let me add 3 + 4 = 7.\n\nWait 7 + 1 = 8.\n\n\nso answer is 8\n\n</think>\n\nFinal answer: 8",
    "First 12 + 5 = 17.\n\nthen 17.\n\nok é\n\nü done\n\nnext 2 + 2 = 4.\n\nthen 4.",
    "no delimiter here at all",
]
PROMPTS = ["Q: 3+4+1?", "Q: twelve plus five, then more", "hi"]
ANSWERS = ["8", "17 and 4", "3"]


def reference_J(model, prompt, response, cut, forcing, answer):
    """J(c) from one plain forward over p + y[:c] + f + q, no padding, float32 log-softmax."""
    ids = prompt + response[:cut] + forcing + answer
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    start = len(prompt) + cut + len(forcing)
    return sum(logp[start - 1 + i, answer[i]].item() for i in range(len(answer))) / len(answer)


@pytest.fixture
def batch(tiny):
    model, tok = tiny
    dec = TokenizerDecoder(tok)
    prompts = [tok(p).input_ids for p in PROMPTS]
    resp = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in TEXTS]
    answers = [tok(a, add_special_tokens=False).input_ids for a in ANSWERS]
    rows = []
    for r, a in zip(resp, answers):
        s = segment_response(r, dec.decode, "</think>", r"\n\n", [tok.eos_token_id], dec.piece)
        rows.append(ProbeRequest(s.starts, s.ends, tuple(a)))
    return model, tok, prompts, resp, answers, rows


@pytest.mark.parametrize("impl", ["fused", "naive"])
@pytest.mark.parametrize("prefix", ["\n\nFinal answer: ", ""])
def test_probe_matches_per_cut_forwards(batch, impl, prefix):
    model, tok, prompts, resp, answers, rows = batch
    forcing = tok(prefix, add_special_tokens=False).input_ids if prefix else []
    seqs = pack(prompts, resp, tok.pad_token_id)
    engine = ProbeRunner(ProbeSettings(impl=impl, batch_size=2), pad_id=tok.pad_token_id)
    out = engine.run(model, seqs, rows, forcing, top_k=3)
    n_checked = 0
    for b, probe in enumerate(out.probes):
        assert probe.cuts == sorted(probe.cuts) and len(probe.cuts) == min(3, len(rows[b].seg_starts))
        ref_b = reference_J(model, prompts[b], resp[b], 0, forcing, answers[b])
        assert probe.J_b == pytest.approx(ref_b, abs=1e-5)
        for c, j in zip(probe.cuts, probe.J.tolist()):
            assert j == pytest.approx(reference_J(model, prompts[b], resp[b], c, forcing, answers[b]), abs=1e-5)
            n_checked += 1
    assert n_checked >= 6


def test_fused_equals_naive_with_skipped_and_ragged_rows(batch):
    model, tok, prompts, resp, answers, rows = batch
    forcing = tok("\n\nFinal answer: ", add_special_tokens=False).input_ids
    seqs = pack(prompts, resp, tok.pad_token_id)
    with torch.no_grad():
        lp = forward_logprobs(model, seqs, use_cache=True)
    blocks = [[0, 3, 9], [], [0, 5]]  # row 1 skipped; ragged cut counts
    ans = [answers[0], None, answers[2]]
    bl = Blocks.from_lists(blocks, ans, forcing, tok.pad_token_id)
    with torch.no_grad():
        fused = ProbeRunner().fused(model, seqs, lp.cache, bl)
        naive = ProbeRunner(ProbeSettings(batch_size=4), tok.pad_token_id, sync_calls=lambda n: n + 2).naive(
            model, seqs, bl
        )  # padded dummy forwards change nothing
    assert fused.shape == naive.shape == (3, 3)
    assert torch.all(fused[1] == 0) and torch.all(naive[1] == 0) and fused[2, 2] == 0  # invalid blocks
    assert torch.allclose(fused, naive, atol=1e-5)
    for b in (0, 2):
        for k, c in enumerate(blocks[b]):
            assert fused[b, k].item() == pytest.approx(
                reference_J(model, prompts[b], resp[b], c, forcing, ans[b]), abs=1e-5
            )


def test_logprobs_and_entropy_match_plain_forward(batch):
    model, tok, prompts, resp, _, rows = batch
    seqs = pack(prompts, resp, tok.pad_token_id)
    T = 0.7
    out = ProbeRunner(pad_id=tok.pad_token_id).run(model, seqs, rows, [5], top_k=2, temperature=T)
    for b in range(len(prompts)):
        with torch.no_grad():
            logits = model(torch.tensor([prompts[b] + resp[b]])).logits[0].float() / T
        logp = logits.log_softmax(-1)
        ent = -(logp.exp() * logp).sum(-1)
        pos = torch.arange(len(resp[b])) + len(prompts[b]) - 1
        ref_lp = logp[pos, torch.tensor(resp[b])]
        n = len(resp[b])
        assert torch.allclose(out.lp.logprobs[b, :n], ref_lp, atol=1e-5)
        assert torch.allclose(out.lp.entropy[b, :n], ent[pos], atol=1e-5)
        assert torch.all(out.lp.logprobs[b, n:] == 0) and torch.all(out.lp.entropy[b, n:] == 0)
        # the fork entropies the selection used are the entropies at the segment starts
        assert torch.allclose(out.probes[b].H, ent[pos][list(rows[b].seg_starts)], atol=1e-5)
        assert out.probe_s >= 0


def test_plain_pass_and_probe_pass_restore_train_mode(batch):
    model, tok, prompts, resp, _, rows = batch
    seqs = pack(prompts, resp, tok.pad_token_id)
    engine = ProbeRunner(pad_id=tok.pad_token_id)
    model.train()
    try:
        a = logprob_pass(model, seqs)  # RePro off: phase 1 only
        assert model.training
        b = engine.run(model, seqs, [None, rows[1], None], [5], top_k=2)
        assert model.training
    finally:
        model.eval()
    c = engine.run(model, seqs, [None, rows[1], None], [5], top_k=2)
    assert not model.training and torch.equal(c.probes[1].J, b.probes[1].J)  # eval stays eval, same J
    assert b.probes[0] is None and b.probes[2] is None and b.probes[1] is not None
    assert torch.allclose(a.logprobs, b.lp.logprobs, atol=1e-6)  # keeping the cache changes nothing


def test_bad_impl_name(batch):
    model, tok, prompts, resp, _, rows = batch
    with pytest.raises(ValueError, match="fused"):
        ProbeRunner(ProbeSettings(impl="fast")).run(model, pack(prompts, resp, 0), rows, [5], top_k=2)


def test_probe_cache_writes_blocks_in_place(batch):
    """Phase 1 leaves exactly the room phase 2 fills: no cache concatenation, contiguous keys."""
    from repro_train.repro.probe.attention import probe_cache
    from repro_train.repro.probe.blocks import probe_layout

    model, tok, prompts, resp, answers, rows = batch
    forcing = tok("\n\nFinal answer: ", add_special_tokens=False).input_ids
    seqs = pack(prompts, resp, tok.pad_token_id)
    blocks = [[0, 3, 9], [0, 4], [0]]
    Lb, room = probe_layout(3, max(len(a) for a in answers), len(forcing))
    cache = probe_cache(room)
    with torch.no_grad():
        lp = forward_logprobs(model, seqs, use_cache=True, past_key_values=cache)
        T = cache.layers[0].keys.shape[-2]
        fused = ProbeRunner().fused(
            model, seqs, lp.cache, Blocks.from_lists(blocks, answers, forcing, tok.pad_token_id)
        )
    kb = cache.buffers[0][0]
    assert cache.layers[0].keys.data_ptr() == kb.data_ptr() and cache.layers[0].keys.shape[-2] == T + room
    assert kb.is_contiguous() and kb.shape[1] == T + room  # tokens-major: (B, T + room, H, D)
    assert torch.equal(cache.layers[0].keys, kb.transpose(1, 2))
    for b, bl in enumerate(blocks):
        for k, c in enumerate(bl):
            assert fused[b, k].item() == pytest.approx(
                reference_J(model, prompts[b], resp[b], c, forcing, answers[b]), abs=1e-5
            )
