"""Random tiny models of every architecture the probe's layer-by-layer forward covers (GQA, biases, Qwen3's head
norms), and one fixed batch of prompts, responses, answers and probe blocks to score."""

import torch

from repro_train.models.forward import forward_logprobs, pack
from repro_train.repro.probe import ProbeRunner, ProbeSettings
from repro_train.repro.probe.attention import probe_cache
from repro_train.repro.probe.blocks import Blocks, probe_layout

COMMON = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=97,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
)
ARCHS = {
    "llama": dict(attention_bias=True, mlp_bias=True, num_key_value_heads=1),
    "mistral": dict(sliding_window=None),
    "qwen2": dict(use_sliding_window=False),
    "qwen3": dict(head_dim=32, use_sliding_window=False),
}
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
RESPONSES = [list(range(20, 41)), list(range(41, 50)), list(range(50, 80))]
ANSWERS = [[3, 4], [5], [6, 7, 8]]
FORCING = [90, 91, 92]
BLOCKS = [[0, 4, 11, 21], [0, 9], [0, 1, 2, 29]]  # J_b, ragged cut counts, adjacent cuts, last token


def build(kind: str, dtype=torch.float32):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(kind, **{**COMMON, **ARCHS[kind]})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa").eval()
    with torch.no_grad():  # non-trivial norms and biases, so a misplaced one shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.rand_like(p) * 0.5)
    return model


def fused_J(model, forcing, forward, autocast=None, attention="auto", device="cpu", fused_rms_norm=False):
    seqs = pack(PROMPTS, RESPONSES, 0, device)
    room = probe_layout(4, 3, len(forcing))[1]
    blocks = Blocks.from_lists(BLOCKS, ANSWERS, forcing, 0, device)
    ctx = torch.autocast(device, dtype=autocast) if autocast else torch.autocast(device, enabled=False)
    with torch.no_grad(), ctx:
        lp = forward_logprobs(model, seqs, use_cache=True, past_key_values=probe_cache(room))
        engine = ProbeRunner(ProbeSettings(forward=forward, attention=attention))
        engine.kernels.fused_rms_norm = fused_rms_norm
        return engine.fused(model, seqs, lp.cache, blocks), blocks
