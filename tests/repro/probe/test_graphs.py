"""Phase 2 replayed from a CUDA graph (`probe/graphs.py`) against the same phase 2 issued kernel by
kernel: bit for bit, over a new phase-1 cache of another length, after an in-place weight update,
after a weight moves, and when a capture fails. GPU only (the CPU has no graphs: `ModelFacts.graph_key` and
the eager path are what the CPU suite runs)."""

import os
import subprocess
import sys

import pytest
import torch

from repro_train.models.forward import forward_logprobs, pack
from repro_train.repro.probe import ProbeRunner, ProbeSettings
from repro_train.repro.probe.attention import probe_cache
from repro_train.repro.probe.blocks import Blocks
from repro_train.repro.probe.graphs import GraphCache
from repro_train.repro.probe.layers import ModelFacts
from repro_train.repro.types import ProbeRequest
from tests.helpers.probe_models import ANSWERS, ARCHS, BLOCKS, FORCING, PROMPTS, RESPONSES, build

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_graph_key_follows_the_weights_not_their_values():
    model = build("qwen2")
    facts = ModelFacts()
    key = facts.graph_key(model)
    assert key is not None and key == facts.graph_key(model)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(2.0)  # in place: the same key (a replay reads it)
    assert facts.graph_key(model) == key
    model.model.layers[1].self_attn.k_proj.weight.data = model.model.layers[1].self_attn.k_proj.weight.data.clone()
    moved = facts.graph_key(model)
    assert moved != key  # moved: a new key
    norm = model.model.layers[0].input_layernorm
    model.model.layers[0].input_layernorm = type(norm)(64, eps=norm.variance_epsilon)  # a module replaced
    assert facts.graph_key(model) not in (key, moved)


def test_graph_key_refuses_what_a_graph_might_not_hold():
    model = build("qwen2")
    facts = ModelFacts()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert facts.graph_key(model) is None

    class Lora(torch.nn.Linear):
        pass

    old = model.model.layers[1].mlp.down_proj
    model.model.layers[1].mlp.down_proj = Lora(old.in_features, old.out_features, bias=False)
    assert facts.graph_key(model) is None
    model.model.layers[1].mlp.down_proj = old
    model.model.rotary_emb.rope_type = "dynamic"  # resizes itself from the positions (a host sync)
    assert facts.graph_key(model) is None


def phase1(model, responses, device="cuda"):
    seqs = pack(PROMPTS, responses, 0, device)
    with torch.no_grad():
        return seqs, forward_logprobs(model, seqs, use_cache=True, past_key_values=probe_cache(0)).cache


ENGINES: dict[bool, ProbeRunner] = {}


def fresh(keep: int = 4) -> None:
    """New engines, nothing remembered: [True] replays phase 2 from graphs (at most `keep` kept),
    [False] issues it kernel by kernel."""
    for graph in (False, True):
        ENGINES[graph] = ProbeRunner(ProbeSettings(attention="triton", cuda_graph=graph))
    ENGINES[True].graphs = GraphCache(keep)


def J(model, seqs, cache, blocks, graph):
    with torch.no_grad():
        return ENGINES[graph].fused(model, seqs, cache, blocks)


def graphs(device="cuda:0"):
    st = ENGINES[True].graphs.devices.get(torch.device(device))
    return 0 if st is None else len(st.graphs)


def counts(device="cuda:0"):
    """(captures, replays) so far on the device."""
    st = ENGINES[True].graphs.devices[torch.device(device)]
    return st.captures, st.replays


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kind", sorted(ARCHS))
def test_replays_equal_kernel_by_kernel_on_gpu(kind):
    fresh()
    model = build(kind, torch.bfloat16).cuda()
    seqs, cache = phase1(model, RESPONSES)
    blocks = Blocks.from_lists(BLOCKS, ANSWERS, FORCING, 0, "cuda")
    want = J(model, seqs, cache, blocks, False)
    got = [J(model, seqs, cache, blocks, True) for _ in range(3)]  # as it is, captured + replayed, replayed
    assert counts() == (1, 2) and all(torch.equal(g, want) for g in got), [(g - want).abs().max() for g in got]

    # another phase 1 (longer responses: another cache length, another place) and other cuts: same graph
    longer = [r + list(range(60, 60 + 7 * (i + 1))) for i, r in enumerate(RESPONSES)]
    seqs2, cache2 = phase1(model, longer)
    blocks2 = Blocks.from_lists([[0, 5, 13, 28], [0, 20], [0, 3, 4, 51]], ANSWERS, FORCING, 0, "cuda")
    want2, got2 = J(model, seqs2, cache2, blocks2, False), J(model, seqs2, cache2, blocks2, True)
    assert counts() == (1, 3) and torch.equal(got2, want2) and not torch.equal(want2, want)

    # a weight updated in place (an optimizer step): the replay reads it
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    want3, got3 = J(model, seqs2, cache2, blocks2, False), J(model, seqs2, cache2, blocks2, True)
    assert counts() == (1, 4) and torch.equal(got3, want3) and not torch.equal(want3, want2)

    # a weight that moves: a new key, run as it is once, then a second graph
    q = model.model.layers[-1].self_attn.q_proj
    q.weight.data = q.weight.data * 0.5
    want4 = J(model, seqs2, cache2, blocks2, False)
    got4 = [J(model, seqs2, cache2, blocks2, True) for _ in range(2)]
    assert counts() == (2, 5) and graphs() == 2 and all(torch.equal(g, want4) for g in got4)
    assert not torch.equal(want4, want3)


@pytest.mark.gpu
@gpu
def test_policy_pass_replays_and_keeps_few_graphs_on_gpu():
    """The trainer's pass: J from replays equals J kernel by kernel; answers of other lengths make
    other keys, and no more than `keep` graphs are kept."""
    fresh(keep=2)
    model = build("qwen2", torch.bfloat16).cuda()
    seqs = pack(PROMPTS, RESPONSES, 0, "cuda")
    for extra in ([], [9], [9, 10], []):  # answer lengths 3, 4, 5, 3: three keys
        rows = [ProbeRequest((0, 3, 9), (3, 9, len(r)), tuple(a + extra)) for r, a in zip(RESPONSES, ANSWERS)]
        outs = [ENGINES[g].run(model, seqs, rows, FORCING, top_k=2) for g in (False, True, True, True)]
        for o in outs[1:]:
            for p, w in zip(o.probes, outs[0].probes):
                assert p.cuts == w.cuts and p.J_b == w.J_b and torch.equal(p.J, w.J)
    # each key: as it is, captured + replayed, replayed; the first key's graph was dropped for the
    # third's, so it is captured again when it comes back, then replayed twice
    assert graphs() == 2 and counts() == (4, 9)


CHILD = "REPRO_GRAPH_FAILURE_CHILD"


@pytest.mark.gpu
@gpu
def test_a_failed_capture_falls_back_on_gpu():
    """A model op that syncs with the host cannot be captured: a warning, graphs off on that
    device, and the same J. In a child process: the failed capture must not touch other tests."""
    if os.environ.get(CHILD) != "1":
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                __file__,
                "-k",
                "test_a_failed_capture_falls_back_on_gpu",
            ],
            env={**os.environ, CHILD: "1"},
            capture_output=True,
            text=True,
            cwd=os.path.dirname(__file__),
        )
        assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
        return
    fresh()
    model = build("qwen2", torch.bfloat16).cuda()
    rope = model.model.rotary_emb
    real = rope.forward
    rope.forward = lambda x, pos: (pos.max().item(), real(x, pos))[1]  # a host sync inside phase 2
    seqs, cache = phase1(model, RESPONSES)
    blocks = Blocks.from_lists(BLOCKS, ANSWERS, FORCING, 0, "cuda")
    want = J(model, seqs, cache, blocks, False)
    J(model, seqs, cache, blocks, True)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        got = J(model, seqs, cache, blocks, True)
    assert torch.equal(got, want) and graphs() == 0
    assert torch.equal(J(model, seqs, cache, blocks, True), want)  # and again, as it is
    assert ENGINES[True].graphs.devices[torch.device("cuda:0")].broken
