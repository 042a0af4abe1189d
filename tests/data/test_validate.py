"""Bad data rows: refused before any model loads (naming the file, line and field), or skipped and
counted with data.on_bad_row=skip (repro_train/data/validate.py)."""

import json
import shutil

import pytest

from repro_train.config import load
from repro_train.core.typed_config import ConfigError
from repro_train.data.datasets import load_prompts
from repro_train.data.validate import answer_checker
from tests.helpers.trainer_utils import make_recipe, metrics, run_inprocess

GOOD = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(8)]

# (reason, the bad line as bytes, words the error must contain)
BAD_LINES = [
    ("invalid_utf8", b'{"question": "caf\xe9?", "answer": "1"}', ["UTF-8"]),
    ("invalid_json", b'{"question": "What is 1 + 1?", "answer": ', ["not valid JSON"]),
    ("not_object", b"[1, 2]", ["list", "not an object"]),
    ("too_large", json.dumps({"question": "x" * 3000, "answer": "1"}).encode(), ["max_row_bytes"]),
    ("missing_question", b'{"answer": "1"}', ["'question'"]),
    ("null_question", b'{"question": null, "answer": "1"}', ["'question'", "null"]),
    ("empty_question", b'{"question": "  ", "answer": "1"}', ["'question'", "empty"]),
    ("question_not_text", b'{"question": 5, "answer": "1"}', ["'question'", "int"]),
    ("missing_answer", b'{"question": "What is 2 + 2?"}', ["'answer'"]),
    ("null_answer", b'{"question": "What is 2 + 2?", "answer": null}', ["'answer'", "null"]),
    ("empty_answer", b'{"question": "What is 2 + 2?", "answer": ""}', ["'answer'", "empty"]),
    ("unparsable_answer", b'{"question": "What is 2 + 2?", "answer": "four-ish"}', ["'answer'", "numeric"]),
]


def write(path, good, bad: bytes, at: int = 3):
    """good rows as JSON lines with `bad` as line `at` (1-based)."""
    lines = [json.dumps(r).encode() for r in good]
    lines.insert(at - 1, bad)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def data_cfg(path, tmp_path, tiny_model_dir, **data):
    recipe = make_recipe(tmp_path, tiny_model_dir, path, reward={"functions": [{"name": "numeric"}]})
    cfg = load(recipe, [f"data.{k}={v}" for k, v in data.items()] + ["data.max_row_bytes=2000"])
    return cfg


@pytest.mark.parametrize("reason, line, words", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_row_is_refused_naming_file_line_and_field(tmp_path, tiny, tiny_model_dir, reason, line, words):
    _, tok = tiny
    path = write(tmp_path / "d.jsonl", GOOD, line, at=3)
    cfg = data_cfg(path, tmp_path, tiny_model_dir)
    with pytest.raises(ConfigError) as e:
        load_prompts(cfg.data, tok, answer_checker(cfg.reward))
    msg = str(e.value)
    assert f"{path} line 3" in msg and f"[{reason}]" in msg and "data.on_bad_row=skip" in msg, msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("reason, line, words", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_row_is_skipped_and_counted(tmp_path, tiny, tiny_model_dir, reason, line, words):
    _, tok = tiny
    path = write(tmp_path / "d.jsonl", GOOD, line, at=5)
    cfg = data_cfg(path, tmp_path, tiny_model_dir, on_bad_row="skip")
    ps = load_prompts(cfg.data, tok, answer_checker(cfg.reward))
    assert ps.answers == [r["answer"] for r in GOOD]  # the 8 good rows, in order
    assert ps.report.counts == {reason: 1} and ps.report.rows_read == 9 and ps.report.rows_used == 8
    assert "line 5" in ps.report.first[reason]
    assert f"skipped 1 bad row(s): {reason} 1" in ps.report.summary()


def test_empty_and_blank_files_are_refused(tmp_path, tiny, tiny_model_dir):
    _, tok = tiny
    for text, words in ((b"", r"is empty \(0 bytes\)"), (b"\n\n  \n", "has no rows")):
        path = tmp_path / "e.jsonl"
        path.write_bytes(text)
        cfg = data_cfg(str(path), tmp_path, tiny_model_dir, on_bad_row="skip")
        with pytest.raises(ConfigError, match=words):
            load_prompts(cfg.data, tok)


def test_all_rows_bad_is_refused_with_the_counts(tmp_path, tiny, tiny_model_dir):
    _, tok = tiny
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "a?", "answer": null}\n{"question": "b?"}\n')
    cfg = data_cfg(str(path), tmp_path, tiny_model_dir, on_bad_row="skip")
    with pytest.raises(ConfigError, match="no usable row.*missing_answer 1, null_answer 1"):
        load_prompts(cfg.data, tok)


def test_json_array_and_csv_rows_are_named(tmp_path, tiny, tiny_model_dir):
    _, tok = tiny
    arr = tmp_path / "d.json"
    arr.write_text(json.dumps(GOOD[:2] + [{"question": "q?", "answer": None}]))
    cfg = data_cfg(str(arr), tmp_path, tiny_model_dir)
    with pytest.raises(ConfigError, match=r"d\.json row 2: field 'answer' is null"):
        load_prompts(cfg.data, tok)
    csv = tmp_path / "d.csv"
    csv.write_text("question,answer\nWhat is 1 + 1?,2\nWhat is 2 + 2?,\n")
    cfg = data_cfg(str(csv), tmp_path, tiny_model_dir)
    with pytest.raises(ConfigError, match=r"d\.csv row 1: field 'answer'"):
        load_prompts(cfg.data, tok)


def test_refused_before_the_model_loads(tmp_path, tiny_model_dir):
    """The model folder has no weights: the data error must come first."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").unlink()
    path = write(tmp_path / "d.jsonl", GOOD, b'{"question": "x?", "answer": null}', at=2)
    recipe = make_recipe(tmp_path, str(model), path)
    with pytest.raises(ConfigError, match=r"d\.jsonl line 2: field 'answer' is null"):
        run_inprocess(recipe)


def test_skipped_rows_are_printed_and_logged(tmp_path, tiny_model_dir, capsys):
    path = write(tmp_path / "d.jsonl", GOOD, b'{"question": "x?", "answer": null}', at=2)
    recipe = make_recipe(tmp_path, tiny_model_dir, path, data={"on_bad_row": "skip"}, train={"steps": 1})
    run = run_inprocess(recipe)
    assert "data: 8 of 9 rows of" in capsys.readouterr().out
    row = metrics(run)[0]
    assert row["data/skipped/null_answer"] == 1 and row["data/skipped_rows"] == 1 and row["data/rows_used"] == 8


def test_answer_checker_asks_the_correctness_rewards():
    from repro_train.config import RewardConfig, RewardFnConfig

    check = answer_checker(RewardConfig(functions=(RewardFnConfig(name="math_verify"), RewardFnConfig(name="format"))))
    assert check("\\frac{1}{2}") is None and check("}{") == "reward 'math_verify' cannot parse it"
    check = answer_checker(RewardConfig(functions=(RewardFnConfig(name="numeric"),)))
    assert check("1,000") is None and check("four") == "reward 'numeric' cannot read it as a number"
    assert answer_checker(RewardConfig(functions=(RewardFnConfig(name="exact_match"),))) is None
    assert answer_checker(RewardConfig(functions=(RewardFnConfig(name="numeric", correctness=False),))) is None
