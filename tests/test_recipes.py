"""Every shipped recipe loads and validates for the numbers of processes it says it targets; the toy
recipes share one budget; docs/recipes.md lists every recipe and ends with the generated key tables."""

import re
from pathlib import Path

import pytest

from repro_train.commands.config_doc import MARKER, recipe_markdown
from repro_train.config import load
from repro_train.core.typed_config import to_dict

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "recipes.md"
TRAIN_RECIPES = [
    "recipes/math/qwen3_1.7b_grpo_repro.yaml",
    "recipes/math/r1_distill_qwen_1.5b_grpo_authors.yaml",
    "recipes/math/r1_distill_qwen_1.5b_grpo_repro.yaml",
    "recipes/math/r1_distill_qwen_1.5b_ppo_repro.yaml",
    "recipes/smollm2/grpo.yaml",
    "recipes/smollm2/grpo_repro.yaml",
    "recipes/smollm2/ppo_repro.yaml",
    "recipes/thinker/grpo.yaml",
    "recipes/thinker/grpo_kimi.yaml",
    "recipes/thinker/grpo_repro.yaml",
    "recipes/toy/demo.yaml",
    "recipes/toy/grpo.yaml",
    "recipes/toy/grpo_authors.yaml",
    "recipes/toy/grpo_repro.yaml",
    "recipes/toy/ppo.yaml",
    "recipes/toy/ppo_authors.yaml",
    "recipes/toy/ppo_repro.yaml",
    "recipes/toy/reinforce_pp_authors.yaml",
    "recipes/toy/reinforce_pp_baseline_authors.yaml",
    "recipes/toy/reinforce_pp_baseline_repro.yaml",
    "recipes/toy/reinforce_pp_repro.yaml",
    "recipes/toy/rloo_authors.yaml",
    "recipes/toy/rloo_repro.yaml",
]
"""`repro-train train` recipes; the sft.yaml files are `repro-train sft`'s (tests/commands/test_sft*.py)."""
SFT_RECIPES = ["recipes/toy/sft.yaml", "recipes/thinker/sft.yaml"]
COMPARE_FILES = [
    "recipes/compare/toy.yaml",
    "recipes/compare/smollm2.yaml",
    "recipes/compare/toy_mc_value.yaml",
    "recipes/compare/thinker.yaml",
    "recipes/compare/dynamic-sampling-toy.yaml",
]
"""`repro-train compare` files (repro_train/commands/compare.py), not recipes themselves."""
# The comparable toy recipes (one budget); demo.yaml is the shorter, hotter run of `make demo`.
TOY = [r for r in TRAIN_RECIPES if r.startswith("recipes/toy/") and r != "recipes/toy/demo.yaml"]


def found() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").glob("**/*.yaml"))


def target_world_sizes(recipe: str) -> list[int]:
    """The `# world_size: 1, 2` line every recipe carries."""
    m = re.search(r"^# world_size: ([\d, ]+)", (REPO / recipe).read_text(), re.M)
    assert m, f"{recipe} has no '# world_size: N[, M]' comment saying which numbers of processes it targets"
    return sorted({int(n) for n in m.group(1).replace(",", " ").split()})


def test_every_recipe_file_is_covered():
    files = found()
    train = [f for f in files if f not in SFT_RECIPES + COMPARE_FILES]
    assert train == TRAIN_RECIPES, "a recipe was added or removed: update TRAIN_RECIPES (and docs/recipes.md)"
    assert len(train) == 23
    assert set(files) - set(train) <= set(SFT_RECIPES + COMPARE_FILES)


@pytest.mark.parametrize("path", COMPARE_FILES)
def test_comparison_files_load_with_every_arm(path):
    """load_compare builds and validates every arm's recipe; the arms share the base budget."""
    from repro_train.commands.compare.config import arm_overrides, base_path, load_compare

    cfg = load_compare(str(REPO / path))
    arms = {a.name: load(base_path(cfg), arm_overrides(cfg, a)) for a in cfg.arms}
    assert (
        len({(c.train.steps, c.rollout.prompts_per_step, c.rollout.group_size, c.optim.lr) for c in arms.values()}) == 1
    )
    assert len(cfg.seeds) == 3


@pytest.mark.parametrize("recipe", TRAIN_RECIPES)
def test_recipe_loads_for_its_world_sizes(recipe):
    worlds = target_world_sizes(recipe)
    for world in sorted({1, *worlds}):
        cfg = load(str(REPO / recipe), world_size=world)
    assert cfg.train.output_dir.endswith(Path(recipe).stem)
    if recipe.startswith("recipes/math/r1") or recipe.startswith("recipes/math/qwen3"):
        assert worlds == [8]
        assert cfg.model.gradient_checkpointing and cfg.dist.mixed_precision == "bf16"
        if recipe.endswith("_authors.yaml"):  # the preset's values (the facts page), not the spec's
            r = cfg.repro
            assert (r.preset, r.alpha, r.top_k, r.cut_at) == ("authors_code", 0.05, 20, "fork")
        else:
            assert (cfg.repro.alpha, cfg.repro.top_k, cfg.repro.w) == (0.1, 10, 0.2)
        assert cfg.rollout.max_new_tokens == 8192 and cfg.rollout.temperature == 1.0


def test_sft_recipe_loads():
    from repro_train.commands.sft import config as sft
    from repro_train.commands.sft.finetune_config import is_finetune, load_finetune, raw_recipe

    for recipe in SFT_RECIPES:
        raw = raw_recipe(str(REPO / recipe), [])
        if is_finetune(raw):  # a pretrained model's recipe
            load_finetune(raw)
        else:
            sft.load(str(REPO / recipe))


def test_thinker_recipes_share_one_budget_and_hold_their_evaluation_out():
    """grpo_repro.yaml and grpo_kimi.yaml differ from grpo.yaml in RePro's alpha and the shaper only; the comparison's
    arms are those files; recipes/thinker/eval.sh evaluates the comparison's sets; training and SFT draw train splits,
    the evaluation test and hard ones, whose problems never occur in a train split (tasks/thinking/dataset.py)."""
    from repro_train.commands.compare.config import arm_overrides, base_path, load_compare
    from repro_train.commands.sft.finetune_config import load_finetune, raw_recipe
    from repro_train.data.named import load_named

    def d(recipe, *over):
        out = to_dict(load(str(REPO / recipe), list(over)))
        out["train"].pop("output_dir")
        return out

    grpo = d("recipes/thinker/grpo.yaml")
    repro, kimi = d("recipes/thinker/grpo_repro.yaml"), d("recipes/thinker/grpo_kimi.yaml")
    assert grpo["repro"]["enabled"] and grpo["repro"]["alpha"] == 0.0 and repro["repro"]["alpha"] == 0.1
    assert {**repro, "repro": grpo["repro"]} == grpo and {**kimi, "shaping": grpo["shaping"]} == grpo
    assert kimi["shaping"]["methods"] == ["kimi"] and grpo["shaping"]["methods"] == []
    cmp = load_compare(str(REPO / "recipes/compare/thinker.yaml"))
    files = {"grpo": grpo, "grpo_repro": repro, "grpo_kimi": kimi}
    for arm in cmp.arms:  # the comparison samples with vLLM; nothing else differs from the recipe files
        got = to_dict(load(base_path(cmp), arm_overrides(cmp, arm)))
        got["train"].pop("output_dir")
        assert got["rollout"].pop("engine") == "vllm"
        assert got == {
            **files[arm.name],
            "rollout": {k: v for k, v in files[arm.name]["rollout"].items() if k != "engine"},
        }
    sets = dict(cmp.eval.sets)
    script = (REPO / "recipes/thinker/eval.sh").read_text()
    assert all(f"'{name}={src}'" in script for name, src in sets.items())
    assert "split=test" in sets["test"] and "split=hard" in sets["hard"]
    sft = load_finetune(raw_recipe(str(REPO / "recipes/thinker/sft.yaml"), []))
    assert "split=train" in sft.data.source and "split=train" in grpo["data"]["source"]
    held = {r["key"] for src in sets.values() for r in load_named(src)}
    assert not held & {r["key"] for r in load_named(grpo["data"]["source"])}


def test_recipe_comments_point_at_files_that_exist():
    for recipe in TRAIN_RECIPES:
        for path in re.findall(r"(?:recipes|launch|docs)/[\w./-]+\.(?:yaml|md|sbatch)", (REPO / recipe).read_text()):
            assert (REPO / path).exists() or path in SFT_RECIPES, f"{recipe} mentions {path}, which does not exist"


def test_toy_recipes_share_one_budget():
    """Only the estimator, its critic and GAE knobs, RePro on/off and the run folder differ."""

    def budget(recipe):
        d = to_dict(load(str(REPO / recipe)))
        d.pop("critic"), d["train"].pop("output_dir")
        for k in ("estimator", "gamma", "lam", "whiten_advantages", "vf_coef", "value_clip"):
            d["algo"].pop(k)
        repro = d.pop("repro")
        for k in ("ppo_process_reward", "process_norm"):  # the authors_code preset's folds differ by algorithm
            repro.pop(k)
        return d, repro if repro["enabled"] else None

    budgets = {r: budget(r) for r in TOY}
    first = budgets[TOY[0]]
    for recipe, (rest, repro) in budgets.items():
        assert rest == first[0], f"{recipe} differs from {TOY[0]} outside the algorithm"
        assert (repro is None) == recipe.endswith(("/grpo.yaml", "/ppo.yaml"))
        same = "recipes/toy/grpo_authors.yaml" if recipe.endswith("_authors.yaml") else "recipes/toy/grpo_repro.yaml"
        assert repro in (None, budgets[same][1]), f"{recipe}: RePro settings differ from {same}"
    assert budgets["recipes/toy/grpo_authors.yaml"][1]["preset"] == "authors_code"
    assert {load(str(REPO / r)).algo.estimator for r in TOY} == {
        "grpo",
        "gae",
        "reinforce_pp",
        "reinforce_pp_baseline",
        "rloo",
    }


def test_docs_list_every_recipe():
    doc = DOC.read_text()
    for recipe in TRAIN_RECIPES + SFT_RECIPES + COMPARE_FILES:
        assert f"`{recipe}`" in doc, f"docs/recipes.md does not list {recipe}"


def test_docs_end_with_the_generated_key_tables():
    doc = DOC.read_text()
    assert doc.count(MARKER) == 1, "docs/recipes.md lost its generated part"
    assert doc[doc.index(MARKER) :] == recipe_markdown(), (
        "docs/recipes.md is stale: run `python -m repro_train.commands.config_doc --write docs/recipes.md`"
    )
    assert "python -m repro_train.commands.config_doc --write docs/recipes.md" in doc[: doc.index(MARKER)]


def test_reference_has_a_row_per_key():
    from repro_train.config import Config
    from repro_train.core.typed_config import iter_fields

    rows = [line for line in recipe_markdown().splitlines() if line.startswith("| `")]
    keys = [k for k, *_ in iter_fields(Config)]
    assert len(rows) == len(keys) + 4  # + the 4 keys of a reward.functions entry
    for key in keys:
        assert any(row.startswith(f"| `{key}` |") for row in rows), key
    assert all(row.count(" | ") == 3 for row in rows), "an unescaped '|' splits a cell"
