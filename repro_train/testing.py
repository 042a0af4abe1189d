"""Tiny offline models for tests and examples: no hub, built in seconds.

    path = build_tiny_model(dir)   # byte-level BPE tokenizer + 2-layer Llama, saved with save_pretrained

The tokenizer is trained with `tokenizers` on a few hundred generated strings (arithmetic chains of
thought with blank-line steps and a `</think>` marker), so tokens such as ".\\n\\n" exist and the
segmenter's tricky cases occur naturally. Weights are random (seeded).
"""

from __future__ import annotations

import os
import random

SPECIAL = ["<|pad|>", "<|bos|>", "<|eos|>", "<think>", "</think>"]


def _corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [
        "Let",
        "me",
        "add",
        "the",
        "numbers",
        "Wait",
        "double-check",
        "so",
        "answer",
        "is",
        "First",
        "then",
        "Next",
        "compute",
        "we",
        "get",
        "Final",
        "result",
        "think",
        "ok",
    ]
    out = []
    for _ in range(n):
        steps = []
        for _ in range(rng.randint(1, 4)):
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            steps.append(f"{rng.choice(words)} {a} + {b} = {a + b}.")
        sep = rng.choice(["\n\n", "\n", " ", "\n\n\n"])
        out.append(sep.join(steps) + rng.choice(["", "\n\n</think>\n\nFinal answer: 42", " Final answer: 7"]))
        out.append(" ".join(rng.choice(words) for _ in range(8)) + " é ü ∑ 中文")
    return out


def build_tokenizer():
    """A byte-level BPE PreTrainedTokenizerFast with pad/bos/eos and <think>, </think> as added tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIAL,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>")
    fast.chat_template = (
        "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
    )
    return fast


def build_tiny_model(path: str, seed: int = 0, layers: int = 2, hidden: int = 64, dtype=None) -> str:
    """Save a random 2-layer Llama and its tokenizer to `path`; returns `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    if dtype is not None:
        model = model.to(dtype)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
