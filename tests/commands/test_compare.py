"""`repro-train compare`: the aggregation by hand, bad files, and a whole comparison on a tiny budget."""

import csv
import json
import os
import statistics

import pytest
import yaml

from repro_train.commands.compare.config import load_compare
from repro_train.commands.compare.report import aggregate, format_markdown
from repro_train.core.typed_config import ConfigError
from tests.helpers.trainer_utils import REPO, make_recipe, run_cli


def row(acc, tok, ok, bad, rc=0.0, bt=0.0):
    return {
        "accuracy": acc,
        "mean_tokens": tok,
        "tokens_correct": ok,
        "tokens_incorrect": bad,
        "recheck_rate": rc,
        "backtrack_rate": bt,
        "n_samples": 8,
    }


def test_aggregate_mean_and_sample_std_over_seeds():
    runs = {"a-s0": row(0.5, 40, 30, 50), "a-s1": row(0.7, 44, 34, None), "b-s0": row(0.1, 10, 10, 10)}
    arms = aggregate(runs, [("a", ["a-s0", "a-s1", "a-s2"]), ("b", ["b-s0"]), ("c", ["c-s0"])])
    assert list(arms) == ["a", "b"]  # c has no finished run
    assert arms["a"]["accuracy"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414213562), "n": 2}
    assert arms["a"]["mean_tokens"]["mean"] == 42 and arms["a"]["mean_tokens"]["std"] == pytest.approx(2**1.5)
    # a run with no incorrect response is left out of that column, not counted as 0
    assert arms["a"]["tokens_incorrect"] == {"mean": 50, "std": 0.0, "n": 1}
    assert arms["b"]["accuracy"] == {"mean": 0.1, "std": 0.0, "n": 1}
    table = format_markdown(arms, {"a": 2, "b": 1})
    assert "| a | 2 | 0.600 ± 0.141 | 42.0 ± 2.8 | 32.0 ± 2.8 | 50.0 ± 0.0 |" in table
    assert "| b | 1 | 0.100 | 10.0 | 10.0 | 10.0 |" in table


def _compare_file(tmp_path, recipe, **extra):
    spec = {
        "base": recipe,
        "overrides": ["train.steps=1"],
        "seeds": [0, 1],
        "arms": [{"name": "grpo"}, {"name": "grpo_kimi", "overrides": ["shaping.methods=[kimi]"]}],
        "eval": {"data": "toy", "n_problems": 2, "samples": 2, "max_new_tokens": 8, "base_model": False},
    }
    spec.update(extra)
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize(
    "extra,needle",
    [
        ({"arms": [{"name": "x"}, {"name": "x"}]}, "'arms' repeats a name"),
        ({"arms": [{"name": "bad name"}]}, "'arms[0].name' = 'bad name'"),
        (
            {"arms": [{"name": "k", "overrides": ["shaping.methods=[kimmi]"]}]},
            "arm 'k' (arms[0]): 'shaping.methods[0]' = 'kimmi'",
        ),
        ({"seeds": []}, "'seeds' must list at least one seed"),
        ({"evl": {}}, "unknown key 'evl': did you mean 'eval'?"),
    ],
)
def test_bad_comparison_files_fail_naming_the_field(tmp_path, tiny_model_dir, extra, needle):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n')
    recipe = make_recipe(tmp_path, tiny_model_dir, str(data))
    with pytest.raises(ConfigError) as e:
        load_compare(_compare_file(tmp_path, recipe, **extra))
    assert needle in str(e.value)


def test_compare_end_to_end_on_a_tiny_budget(tmp_path, tiny_model_dir):
    """2 arms x 2 seeds x 1 step, 2 problems x 2 samples: every run trains and is evaluated; the
    table is the mean and sample std of the runs' own sample files; a second call runs nothing."""
    from repro_train.tasks.arithmetic import generate, write_jsonl

    data = tmp_path / "d.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(data))
    recipe = make_recipe(tmp_path, tiny_model_dir, str(data))
    out = tmp_path / "out"
    res = run_cli(["compare", "--config", _compare_file(tmp_path, recipe), "--out", str(out), "--parallel", "2"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "4 of 4 job(s) to run" in res.stdout and res.stdout.count("[compare] done:") == 4
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["runs"]) == ["grpo-s0", "grpo-s1", "grpo_kimi-s0", "grpo_kimi-s1"]
    for label, r in results["runs"].items():
        samples = [json.loads(x) for x in (out / label / "eval" / f"samples_{label}.jsonl").read_text().splitlines()]
        assert len(samples) == 4
        assert r["mean_tokens"] == pytest.approx(sum(s["n_tokens"] for s in samples) / 4)
        assert r["accuracy"] == pytest.approx(sum(s["correct"] for s in samples) / 4)
        ok = [s["n_tokens"] for s in samples if s["correct"]]
        assert r["tokens_correct"] == (sum(ok) / len(ok) if ok else None)
        assert os.path.isdir(out / label / "run" / "checkpoint-000001" / "policy")
    for arm in ("grpo", "grpo_kimi"):
        toks = [results["runs"][f"{arm}-s{s}"]["mean_tokens"] for s in (0, 1)]
        assert results["arms"][arm]["mean_tokens"]["mean"] == pytest.approx(statistics.mean(toks))
        assert results["arms"][arm]["mean_tokens"]["std"] == pytest.approx(statistics.stdev(toks))
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert [r["arm"] for r in rows] == ["grpo", "grpo_kimi"] and rows[0]["seeds"] == "2"
    assert float(rows[1]["mean_tokens_mean"]) == pytest.approx(results["arms"]["grpo_kimi"]["mean_tokens"]["mean"])
    assert (out / "table.md").read_text().count("\n| grpo") == 2
    assert (out / "accuracy_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    # the shaper ran in the kimi arm only
    kimi = [json.loads(x) for x in (out / "grpo_kimi-s0" / "run" / "metrics.jsonl").read_text().splitlines()]
    plain = [json.loads(x) for x in (out / "grpo-s0" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "shaping/kimi" in kimi[0] and "shaping/kimi" not in plain[0]
    again = run_cli(["compare", "--config", _compare_file(tmp_path, recipe), "--out", str(out)])
    assert again.returncode == 0 and "0 of 4 job(s) to run" in again.stdout


def test_eval_command_passes_the_system_prompt_and_named_data():
    """The SmolLM2 comparison evaluates a named set with the recipes' system prompt; the toy one has none."""
    from repro_train.commands.compare.config import load_compare
    from repro_train.commands.compare.jobs import eval_command

    smol = load_compare(os.path.join(REPO, "recipes/compare/smollm2.yaml"))
    cmd = eval_command(smol, "grpo.s0", "runs/x/policy", "out")
    assert (
        cmd[cmd.index("--data") + 1].startswith("reasoning-gym:chain_sum?")
        and "min_terms=3" in cmd[cmd.index("--data") + 1]
    )
    assert (
        cmd[cmd.index("--system-prompt") + 1] == smol.eval.system_prompt and "Final answer" in smol.eval.system_prompt
    )
    toy = eval_command(load_compare(os.path.join(REPO, "recipes/compare/toy.yaml")), "grpo.s0", "runs/x/policy", "out")
    assert "--system-prompt" not in toy


def test_time_limit_checkpoints_and_evaluates_what_ran_on_several_sets(tmp_path, tiny_model_dir):
    """--time-limit: each run stops after the first step past it (train.time_limit_s; here at once: after step 1)
    with a checkpoint, exits 75, and the job goes on to evaluate that checkpoint through the run folder; eval.sets
    gives one table and one summary folder per set; the curves come from the run's metrics."""
    from repro_train.tasks.arithmetic import generate, write_jsonl

    data = tmp_path / "d.jsonl"
    write_jsonl(generate(8, seed=3, with_traces=False), str(data))
    recipe = make_recipe(tmp_path, tiny_model_dir, str(data))
    path = _compare_file(
        tmp_path,
        recipe,
        overrides=["train.steps=5"],
        seeds=[0],
        arms=[{"name": "grpo"}],
        eval={
            "sets": {"easy": "toy", "other": "gsm8k-100"},
            "n_problems": 2,
            "samples": 1,
            "max_new_tokens": 4,
            "base_model": False,
        },
    )
    out = tmp_path / "out"
    res = run_cli(["compare", "--config", path, "--out", str(out), "--time-limit", "1e-6", "--stagger", "1"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = out / "grpo-s0" / "run"
    assert sorted(os.listdir(run / "checkpoint-000001")) and not (run / "checkpoint-000005").exists()
    assert json.loads((run / "PREEMPTED").read_text())["step"] == 1
    for name in ("easy", "other"):
        s = json.loads((out / "grpo-s0" / "eval" / name / "summary.json").read_text())["grpo-s0"]
        assert s["settings"]["model"] == str(run / "checkpoint-000001" / "policy") and s["n_problems"] == 2
    results = json.loads((out / "results.json").read_text())
    assert set(results["sets"]) == {"easy", "other"} and results["runs"] == results["sets"]["easy"]["runs"]
    assert [p[0] for p in results["curves"]["grpo"]["response_length/mean"]] == [1]
    table = (out / "table.md").read_text()
    assert "## easy: toy" in table and "## other: gsm8k-100" in table and "tokens after first correct" in table
    assert (out / "table_easy.csv").exists() and (out / "table_other.csv").exists()


def test_sets_and_data_are_exclusive_and_names_checked(tmp_path, tiny_model_dir):
    recipe = make_recipe(tmp_path, tiny_model_dir, str(tmp_path / "d.jsonl"))
    (tmp_path / "d.jsonl").write_text('{"question": "1+1", "answer": "2"}\n')
    with pytest.raises(ConfigError, match="either 'eval.data'"):
        load_compare(_compare_file(tmp_path, recipe, eval={"data": "gsm8k-100", "sets": {"a": "toy"}}))
    with pytest.raises(ConfigError, match="'eval.sets' entry 'a b'"):
        load_compare(_compare_file(tmp_path, recipe, eval={"sets": {"a b": "toy"}}))
