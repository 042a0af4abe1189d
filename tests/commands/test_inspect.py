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
    for line in ("segments", f"cuts      {res['cuts']}", "J_b", "J ", "S ", "r "):
        assert line in printed
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
