"""`repro-train inspect` end to end on the tiny model."""

import json

import pytest

from repro_train.cli import main as cli_main
from repro_train.commands.inspect import main

GOOD = {
    "prompt": "Q: 3+4+1?",
    "response": "Add 3 + 4 = 7.\n\nThen 7 + 1 = 8.\n\nSo 8.\n\n</think>\n\nFinal answer: 8",
    "answer": "8",
}


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_inspect_outputs_and_bad_rows(tiny_model_dir, tmp_path, capsys):
    rows = [
        GOOD,
        {"question": "What is 12+5?", "response": "12 + 5 = 17.\n\nSo 17.", "answer": 17},
        {"prompt": "x", "response": "", "answer": "1"},
        {"prompt": "x", "answer": "1"},
        "not json",
        {"response": "a\n\nb", "answer": "1"},
        {"prompt": "x", "response": "abc\n\ndef", "answer": " "},
        {"prompt": "x", "response": "</think> no thinking", "answer": "3"},
    ]
    src, out, plots = write(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", tmp_path / "plots"
    rc = main(
        [
            "--model",
            tiny_model_dir,
            "--input",
            src,
            "--output",
            str(out),
            "--plot",
            str(plots),
            "--top-k",
            "2",
            "--batch-size",
            "3",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    for line, field in [
        (3, "'response' is empty"),
        (4, "'response'"),
        (5, "not valid JSON"),
        (6, "'prompt'"),
        (7, "'answer'"),
    ]:
        assert f"in.jsonl:{line}: " in err and field in err
    res = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["row"] for r in res] == list(range(1, 9))
    assert [("error" in r) for r in res] == [False, False, True, True, True, True, True, False]
    first = res[0]
    for key in ("prompt_ids", "response_ids", "segments", "cuts", "J_b", "J", "S_magn", "S_stab", "S", "r"):
        assert key in first
    assert len(first["segments"]) == 3 and sum(s["selected"] for s in first["segments"]) == 2
    assert first["cuts"] == [s["end"] for s in first["segments"] if s["selected"]]
    assert len(first["J"]) == len(first["S"]) == len(first["r"]) == 2
    assert all(s["start"] < s["end"] <= first["thinking_end"] for s in first["segments"])
    # r_1 = S_1 - S_0 with the default S_0 = 0.8 (1 - tanh 1) + 0.1
    assert first["r"][0] == pytest.approx(first["S"][0] - 0.290725, abs=2e-6)
    assert first["r"][1] == pytest.approx(first["S"][1] - first["S"][0], abs=2e-6)
    assert len(first["A_tilde"]) == len(first["response_ids"])
    assert res[7]["skipped"] == "no_segment" and res[7]["cuts"] == []
    assert sorted(p.name for p in plots.iterdir()) == ["row00001.png", "row00002.png", "row00008.png"]
    assert all(p.stat().st_size > 5000 for p in plots.iterdir())


def test_inspect_options_and_errors(tiny_model_dir, tmp_path, capsys):
    src = write(tmp_path / "in.jsonl", [GOOD])
    out = tmp_path / "o.jsonl"
    assert (
        main(["--model", tiny_model_dir, "--input", src, "--output", str(out), "--top-k", "1", "--probe-impl", "naive"])
        == 0
    )
    one = json.loads(out.read_text())
    assert len(one["cuts"]) == 1
    assert main(["--model", tiny_model_dir, "--input", src, "--output", str(out), "--w", "1.5"]) == 2
    assert "'--w' must be in [0, 1]" in capsys.readouterr().err
    # the console script dispatches to the same command
    assert cli_main(["inspect", "--model", tiny_model_dir, "--input", src, "--output", str(out)]) == 0
    assert len(json.loads(out.read_text())["cuts"]) == 3
    assert cli_main(["inspekt"]) == 2
    assert "did you mean 'inspect'" in capsys.readouterr().err


def test_inspect_toy_model_with_the_authors_preset(tmp_path, capsys):
    """`--model toy --preset authors_code`: forks after '.', '?' and '\\n\\n' tokens, J at the forks, and
    the forced cut after '</think>'; the row's segments, cuts, J, S and r are printed."""
    row = {
        "prompt": "Q: 3+4+1?",
        "answer": "8",
        "response": "Add 3 + 4 = 7.\n\nThen 7 + 1 = 8.\nIs it 8?\nSo 8.\n</think>\n\nFinal answer: \\boxed{8}",
    }
    src, out = write(tmp_path / "in.jsonl", [row]), tmp_path / "o.jsonl"
    assert main(["--model", "toy", "--input", src, "--output", str(out), "--preset", "authors_code"]) == 0
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out
    T = res["thinking_end"]
    from repro_train.models.loading import load_for_inference

    _, tok = load_for_inference("toy")
    assert res["response_ids"][T] == tok("</think>", add_special_tokens=False).input_ids[0]
    forks = [s["start"] for s in res["segments"]]
    first = {tok(s, add_special_tokens=False).input_ids[0] for s in (".\n", "?\n", "\n\n")}
    assert forks == [t for t in range(1, T) if res["response_ids"][t - 1] in first] and len(forks) >= 3
    assert all(s["end"] == s["start"] for s in res["segments"])  # the cut is the fork itself
    assert res["cuts"] == forks + [T + 1]  # <= 20 forks: all selected, then the forced end-of-thinking cut
    assert len(res["J"]) == len(res["S"]) == len(res["r"]) == len(res["cuts"])
    assert res["S"] == res["S_magn"] and res["r"][0] == res["S"][0]  # stability off, S_0 = 0
    for line in ("segments", f"cuts      {res['cuts']}", "J_b", "step    tokens         J       S        r"):
        assert line in printed
    # one printed line per step: its tokens, J and text
    for s in res["steps"][:-1]:
        assert f"{s['start']}-{s['end']}".rjust(9) + f" {s['J']:9.4f}" in printed
    # a flag set by hand wins over the preset
    assert (
        main(
            [
                "--model",
                "toy",
                "--input",
                src,
                "--output",
                str(out),
                "--preset",
                "authors_code",
                "--top-k",
                "1",
                "--show",
                "0",
            ]
        )
        == 0
    )
    assert len(json.loads(out.read_text())["cuts"]) == 2 and "segments" not in capsys.readouterr().out


TOY_PREFIX = "</think>\n\nFinal answer: "


def test_step_texts_cover_the_response_and_carry_their_scores(tmp_path):
    """The shipped example rows (README): each step's text is the response between two cuts, the texts join into
    the whole response, and a step's A_tilde is that of its first token (the sum of r' from the step on)."""
    from repro_train.models.loading import load_for_inference
    from tests.helpers import REPO

    src, out = f"{REPO}/examples/inspect/rows.jsonl", tmp_path / "o.jsonl"
    assert main(["--model", "toy", "--input", src, "--output", str(out), "--probe-prefix", TOY_PREFIX]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    _, tok = load_for_inference("toy")
    assert len(rows) == 3
    for res in rows:
        steps = res["steps"]
        assert "".join(s["text"] for s in steps) == tok.decode(res["response_ids"])
        scored = [s for s in steps if "J" in s]
        assert [s["end"] for s in scored] == res["cuts"] and [s["J"] for s in scored] == res["J"]
        for j, s in enumerate(scored):
            assert s["A_tilde"] == pytest.approx(sum(res["r_norm"][j:]), abs=1e-5)
            assert s["A_tilde"] == res["A_tilde"][s["start"]]
    # the re-check row (the second): its re-check paragraph is the last step, r ~ 0, and a negative A_tilde
    recheck = rows[1]["steps"][-2]
    assert recheck["text"].startswith("Let me verify") and abs(recheck["r"]) < 1e-3 and recheck["A_tilde"] < 0


def test_recipe_takes_the_recipes_probe_text(tmp_path, capsys):
    """--recipe: the recipe's probe prefix, end-of-thinking marker and model; the same J as the flags give."""
    from tests.helpers import REPO

    src = f"{REPO}/examples/inspect/rows.jsonl"
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["--recipe", f"{REPO}/recipes/toy/grpo_repro.yaml", "--input", src, "--output", str(a)]) == 0
    assert main(["--model", "toy", "--input", src, "--output", str(b), "--probe-prefix", TOY_PREFIX]) == 0
    ja = [json.loads(x)["J"] for x in a.read_text().splitlines()]
    assert ja == [json.loads(x)["J"] for x in b.read_text().splitlines()]
    # the spec's default prefix gives other numbers: the recipe's was used
    c = tmp_path / "c.jsonl"
    assert main(["--model", "toy", "--input", src, "--output", str(c)]) == 0
    assert ja != [json.loads(x)["J"] for x in c.read_text().splitlines()]


def test_run_reproduces_the_logged_J(tmp_path, capsys):
    """`inspect --run`: the run's config.yaml and the rows samples.jsonl logged at step 1 give J_b and J as training
    logged them (to 1e-5), with the run's probe text and temperature, and the printed check says so."""
    from tests.helpers import REPO
    from tests.helpers.trainer_utils import run_inprocess

    run = run_inprocess(
        f"{REPO}/recipes/toy/grpo_repro.yaml",
        "train.steps=2",
        "rollout.prompts_per_step=2",
        "rollout.group_size=4",
        "algo.micro_batch_size=8",
        "train.save_every=0",
        "train.device=cpu",
        "log.wandb=false",
        "log.progress=false",
        "log.sample_rollouts=4",
        f"train.output_dir={tmp_path / 'run'}",
    )
    logged = [json.loads(x) for x in open(f"{run}/samples.jsonl")]
    assert {r["step"] for r in logged} == {1, 2}
    assert main(["--run", run, "--show", "1"]) == 0
    printed = capsys.readouterr().out
    res = [json.loads(x) for x in open(f"{run}/inspect.jsonl")]
    first = [r for r in logged if r["step"] == 1]
    assert len(res) == len(first) == 4 and all(r["step"] == 1 for r in res)
    for got, want in zip(res, first):
        assert got["response_ids"] == want["response_ids"] and got["cuts"] == want["cuts"]
        assert got["J_b"] == pytest.approx(want["J_b"], abs=1e-5)
        assert got["J"] == pytest.approx(want["J"], abs=1e-5)
        assert got["r"] == pytest.approx(want["r"], abs=1e-5)
        assert got["logged"]["max_abs_diff_J"] <= 1e-5
    assert "scored 4 rows of step 1" in printed and "J against training's log" in printed
    # step 2 was sampled and scored by the weights after one update: the initial model gives another J
    assert main(["--run", run, "--step", "2", "--output", str(tmp_path / "s2.jsonl"), "--show", "0"]) == 0
    res2 = [json.loads(x) for x in open(tmp_path / "s2.jsonl")]
    second = [r for r in logged if r["step"] == 2]
    assert any(
        abs(a - b) > 1e-4 for g, w in zip(res2, second) if g["cuts"] == w["cuts"] for a, b in zip(g["J"], w["J"])
    )


def test_run_and_recipe_errors(tmp_path, capsys):
    assert main(["--run", str(tmp_path)]) == 2
    assert "no config.yaml there" in capsys.readouterr().err
    assert main(["--run", str(tmp_path), "--recipe", "x.yaml"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["--model", "toy", "--input", "x.jsonl"]) == 2
    assert "--output is required" in capsys.readouterr().err
    src = write(tmp_path / "in.jsonl", [{**GOOD, "step": 3}])
    assert main(["--model", "toy", "--input", src, "--output", str(tmp_path / "o"), "--step", "4"]) == 2
    assert "--step 4: no rows of that step" in capsys.readouterr().err


def test_a_backslash_n_in_the_probe_prefix_is_pointed_out(tmp_path, capsys):
    """`--probe-prefix '</think>\\n\\nFinal answer: '` in plain quotes gives a third J (neither the spec's nor the
    recipe's): the command says why."""
    src = write(tmp_path / "in.jsonl", [GOOD])
    args = ["--model", "toy", "--input", src, "--output", str(tmp_path / "o.jsonl"), "--show", "0"]
    assert main([*args, "--probe-prefix", "</think>\\n\\nFinal answer: "]) == 0
    assert "holds a backslash followed by n, not a newline" in capsys.readouterr().err
    assert main([*args, "--probe-prefix", TOY_PREFIX]) == 0
    assert "backslash" not in capsys.readouterr().err
