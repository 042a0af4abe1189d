"""One source for the EOS ids and the end-of-thinking marker: a model whose generation config adds a second EOS
(as Qwen's chat models add <|im_end|>) ends responses there for the trainer, its rollout engine, RePro and the
shapers alike."""

import json
import shutil

from repro_train.config import load
from repro_train.core.text import ResponseFormat, eos_ids, response_format
from repro_train.tasks.arithmetic import generate, write_jsonl
from repro_train.trainer.runtime import build_runtime
from repro_train.trainer.shaping import thinking_lengths
from tests.helpers.trainer_utils import make_recipe, reset_accelerate


def test_eos_ids_join_the_tokenizer_and_the_generation_config(tiny):
    model, tok = tiny

    class Gen:
        eos_token_id = [tok.eos_token_id, 7]

    class WithGen:
        generation_config = Gen()

    assert eos_ids(None, tok) == [tok.eos_token_id]
    assert eos_ids(WithGen(), tok) == sorted({tok.eos_token_id, 7})
    fmt = response_format(WithGen(), tok, "</think>")
    assert fmt == ResponseFormat(tuple(sorted({tok.eos_token_id, 7})), "</think>")
    assert fmt.thinking("a\n\nb</think>c</think>") == "a\n\nb" and ResponseFormat((1,), "").thinking("a</think>") == (
        "a</think>"
    )


def test_a_second_eos_of_the_generation_config_ends_repro_thinking_span(tmp_path, tiny_model_dir):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    gen = json.loads((model_dir / "generation_config.json").read_text())
    second = 5  # any id that is not the tokenizer's EOS
    assert gen["eos_token_id"] != second
    gen["eos_token_id"] = [gen["eos_token_id"], second]
    (model_dir / "generation_config.json").write_text(json.dumps(gen))
    data = tmp_path / "toy.jsonl"
    write_jsonl(generate(4, seed=3, with_traces=False), str(data))
    recipe = make_recipe(tmp_path, str(model_dir), str(data), model={"path": str(model_dir), "think_end": "</think>"})
    reset_accelerate()
    try:
        rt = build_runtime(load(recipe))
    finally:
        reset_accelerate()
    try:
        tok = rt.tokenizer
        assert second in rt.response_format.eos_ids and tok.eos_token_id in rt.response_format.eos_ids
        body = tok("12 + 3 = 15\n\nso 15", add_special_tokens=False).input_ids
        resp = body + [second]  # ended by the generation config's EOS, no end-of-thinking marker
        seg = rt.repro.plan([resp], ["15"]).segmentations[0]
        assert seg.T == len(body)  # the EOS is not part of the thinking span (spec 1)
        assert thinking_lengths(tok, [resp], rt.response_format).tolist() == [len(body)]
    finally:
        rt.close()
