"""A user's reward function that fails inside a run (rewards/outcome.py through the trainer): the run stops with exit
code 5 and a message naming the function, the data file's line, the prompt and the fix; with reward.on_error=skip it
goes on and logs how many rows were skipped (reward/errors)."""

import json

from tests.helpers.trainer_utils import make_recipe, metrics, run_cli_inprocess

PICKY = """
def picky(prompts, completions, answers, **columns):
    return [float(len(c)) / (0 if "3 + 5" in p else 100) for p, c in zip(prompts, completions)]
"""


def setup(tmp_path, tiny_model_dir, **sections):
    data = tmp_path / "d.jsonl"
    rows = [{"question": "What is 2 + 2?", "answer": "4"}, {"question": "What is 3 + 5?", "answer": "8"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "picky.py").write_text(PICKY)
    reward = {"functions": [{"name": f"{tmp_path / 'picky.py'}:picky"}], **sections.pop("reward", {})}
    return make_recipe(tmp_path, tiny_model_dir, str(data), reward=reward, **sections)


def test_a_raising_reward_names_the_row_and_stops_the_run(tmp_path, tiny_model_dir, capsys):
    recipe = setup(tmp_path, tiny_model_dir, train={"steps": 2})
    assert run_cli_inprocess(recipe) == 5
    err = capsys.readouterr().err
    assert f"error: reward '{tmp_path / 'picky.py'}:picky' raised ZeroDivisionError" in err
    assert f"on {tmp_path / 'd.jsonl'} line 2 (prompt 1): prompt " in err and "What is 3 + 5?" in err
    assert "reward.on_error=skip" in err and "no checkpoint was written yet" in err
    assert "Traceback" not in err


def test_skip_goes_on_and_counts_the_rows(tmp_path, tiny_model_dir):
    recipe = setup(tmp_path, tiny_model_dir, train={"steps": 2}, reward={"on_error": "skip"})
    assert run_cli_inprocess(recipe) == 0
    rows = metrics(str(tmp_path / "run"))
    assert [r["reward/errors"] for r in rows] == [4.0, 4.0]  # the G = 4 responses to prompt 1, each step
    assert [r["reward/timeouts"] for r in rows] == [0.0, 0.0]
