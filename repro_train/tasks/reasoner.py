"""The shipped tiny reasoner: its tokenizer, chat format and where its weights live.

The model in `repro_train/assets/tiny-reasoner/` is a small Llama trained from scratch by
`repro-train sft --config recipes/toy/sft.yaml` (repro_train/sft/) on the toy arithmetic
task's trace mix; docs/tiny-reasoner.md has its numbers. The format it learned:

    prompt    <|bos|>Question: {question}\\n<think>\\n            (chat template, generation prompt)
    response  {task response}<|eos|>                          (steps, blank lines, </think>, answer)

    tok = build_tokenizer(texts, vocab_size=512)   # byte-level BPE, one token per digit
    path = reasoner_path()                         # the shipped folder, for from_pretrained
"""

from __future__ import annotations

from pathlib import Path

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
TOY_SPECIAL = (PAD, BOS, EOS)
"""Special tokens (skipped by decode(skip_special_tokens=True)); ids 0, 1, 2."""
THINK_TOKENS = ("<think>", "</think>")
"""Added as whole tokens but not special: they survive decode(skip_special_tokens=True)."""
TOY_PROBE_PREFIX = "</think>\n\nFinal answer: "
"""RePro's probe text for the toy task: a cut point ends a segment, blank line included, so the
forced continuation is the end-of-thinking marker and the answer line."""

CHAT_TEMPLATE = (
    "<|bos|>"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}System: {{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}Question: {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}<think>\n{{ m['content'] }}<|eos|>"
    "{% else %}{{ raise_exception('unknown role ' + m['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<think>\n{% endif %}"
)
"""`[{"role": "user", "content": q}]` + generation prompt -> `<|bos|>Question: {q}\\n<think>\\n`;
a system message becomes `System: ...\\n` before it."""

_ASSET = Path(__file__).resolve().parent.parent / "assets" / "tiny-reasoner"


def build_tokenizer(texts, vocab_size: int = 512):
    """Byte-level BPE trained on `texts`, wrapped as a PreTrainedTokenizerFast.

    Newline runs are isolated first (so the blank line after each step is always one token,
    whatever follows it), then digits are split into single digits (every number is spelled digit
    by digit: arithmetic stays learnable), then the byte-level split: merges stay within words.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n+"), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TOY_SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The think markers become whole tokens below: no merges are spent on their pieces.
    tok.train_from_iterator((_strip_markers(t) for t in texts), trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _strip_markers(text: str) -> str:
    for marker in (*TOY_SPECIAL, *THINK_TOKENS):
        text = text.replace(marker, " ")
    return text


def reasoner_path() -> str:
    """The shipped model folder (inside the installed package), for `from_pretrained`."""
    if not (_ASSET / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the tiny reasoner is missing from {_ASSET} (no model.safetensors). Reinstall "
            "repro-train, or rebuild it with `repro-train sft --config recipes/toy/sft.yaml "
            f"output_dir={_ASSET}` (docs/tiny-reasoner.md)"
        )
    return str(_ASSET)


def format_prompt(tok, question: str) -> str:
    """`<|bos|>Question: {question}\\n<think>\\n` (the tokenizer's chat template)."""
    return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
