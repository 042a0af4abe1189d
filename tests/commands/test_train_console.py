"""`repro-train train` as a newcomer meets it: a short console, and one-line errors before any model loads."""

import os
import subprocess
import sys

import pytest

from repro_train.core.typed_config import ConfigError
from repro_train.models.loading import load_tokenizer_at, looks_local
from tests.helpers import REPO
from tests.helpers.trainer_utils import BLOCKER, run_cli

TOY = os.path.join(REPO, "recipes", "toy", "ppo_repro.yaml")


def test_a_three_step_toy_run_fits_on_one_screen(tmp_path):
    """PPO + RePro (a critic with a new value head), wandb offline: one line per event, no library banners,
    load reports, nested save bars or wandb summary; the progress bar shows RePro's J."""
    res = run_cli(["train", "--config", TOY, "train.steps=3", f"train.output_dir={tmp_path / 'run'}"])
    assert res.returncode == 0, res.stderr[-3000:]
    console = res.stdout + res.stderr
    lines = console.split("\n")  # what a terminal shows: the bar redraws its line with '\r'
    assert len(lines) <= 12, console
    for noise in ("LOAD REPORT", "Setting accelerator", "Run history", "Run summary", "Writing model shards"):
        assert noise not in console
    assert "Loading weights" not in console
    assert "critic: a value model from toy (score.bias, score.weight: not in the checkpoint, starts at zero" in console
    assert "wandb: run " in console and "offline; to upload: wandb sync " in console
    assert "J=-" in console  # repro/J_last in the bar


def test_local_looking_paths():
    for p in ("./m", "../m", "/abs/m", "~/m", "a/b/c", "m/", "models/mine", "runs/x"):
        assert looks_local(p), p
    for p in ("Qwen/Qwen3-1.7B", "HuggingFaceTB/SmolLM2-135M-Instruct", "toy"):
        assert not looks_local(p), p


def test_a_missing_local_model_never_asks_the_hub(tmp_path, monkeypatch):
    """The issue's case: model.path = models/<not prepared>, hub online: a ConfigError before transformers is asked;
    a folder that exists here makes 'name/x' local too."""
    import transformers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: pytest.fail("hub asked"))
    with pytest.raises(ConfigError, match="'model.path' = 'models/not-prepared' does not exist"):
        load_tokenizer_at("models/not-prepared")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="'mine/model' does not exist"):
        load_tokenizer_at("mine/model")


def test_a_hub_name_the_hub_does_not_give_is_one_line(monkeypatch):
    import transformers

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(ConfigError, match=r"not a local folder and the Hugging Face hub did not give it \(We couldn't"):
        load_tokenizer_at("someorg/somemodel")


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.path=models/not-prepared", "'model.path' = 'models/not-prepared' does not exist"),
        ("train.resume=/nonexistent/checkpoint-000010", "'train.resume' = '/nonexistent/checkpoint-000010' does not"),
        ("train.seed=-1", "'train.seed' must be in [0, 2**32 - 1], got -1"),
    ],
)
def test_bad_path_resume_and_seed_fail_in_one_line_before_any_model_loads(tmp_path, override, message):
    """Exit 2 and one `error:` line; transformers cannot even be imported in the child (no model loads), and the
    hub is out of reach (HF_HUB_OFFLINE unset, the endpoint a closed local port)."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(
        PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}",
        REPRO_TEST_BLOCK_IMPORTS="transformers",
        HF_ENDPOINT="http://127.0.0.1:9",
        OMP_NUM_THREADS="1",
    )
    cmd = [sys.executable, "-m", "repro_train", "train", "--config", TOY, override, f"train.output_dir={tmp_path}/r"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines() == [f"error: {res.stderr.strip()[7:]}"] and message in res.stderr


def test_resume_from_a_run_folder_names_its_checkpoint(tmp_path):
    from repro_train.config import load

    (tmp_path / "checkpoint-000010").mkdir()
    with pytest.raises(ConfigError, match="it is a run folder: resume from .*checkpoint-000010, or train.resume=auto"):
        load(TOY, [f"train.resume={tmp_path}"])
    (tmp_path / "checkpoint-000010" / "trainer_state.json").write_text("{}")
    assert load(TOY, [f"train.resume={tmp_path / 'checkpoint-000010'}"]).train.resume.endswith("checkpoint-000010")
