"""`repro-train export RUN --out DIR [--step N] [--dtype bfloat16]`: your model, out of a run.

RUN is a run folder (its newest complete checkpoint, or checkpoint --step N) or a checkpoint folder.
DIR receives the checkpoint's policy/ as a Hugging Face model folder: config.json, model.safetensors
(or its shards and index), generation_config.json and the tokenizer's files. Load it with
`AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`, evaluate it with
`repro-train eval --model DIR`, serve it with vLLM, or train on from it (`model.path=DIR`).

The checkpoint is verified against its manifest first. The weights are stored in the model's own dtype
(its config.json's, as training saved them); --dtype casts the floating-point ones (float32, bfloat16,
float16). DIR must not exist or be empty: nothing is overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import torch

from ..models.loading import INDEX
from ..trainer.checkpoint import list_checkpoints, set_config_dtype, step_of
from ..trainer.manifest import verify

DTYPES = ("float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="repro-train export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", help="a run folder (train.output_dir) or one of its checkpoint-N folders")
    p.add_argument("--out", required=True, help="the model folder to write (must not exist or be empty)")
    p.add_argument("--step", type=int, default=None, help="the checkpoint of this step (default: the newest)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="cast the weights (default: as saved)")
    return p


class ExportError(ValueError):
    pass


def find_checkpoint(run: str, step: int | None) -> str:
    """The checkpoint folder to export: `run` itself, its checkpoint of `step`, or its newest that verifies."""
    if os.path.isfile(os.path.join(run, "trainer_state.json")):
        found = [run]
    else:
        found = list_checkpoints(run)
        if step is not None:
            found = [p for p in found if step_of(p) == step]
        if not found:
            what = f"no checkpoint of step {step}" if step is not None else "no checkpoint"
            raise ExportError(f"{run} holds {what} (checkpoint-N folders; is it a run folder?)")
    problems = []
    for path in reversed(found):
        problem = verify(path)
        if problem is None:
            return path
        problems.append(f"{path}: {problem}")
    raise ExportError("no checkpoint verifies: " + "; ".join(problems))


def export(ckpt: str, out: str, dtype: str | None = None) -> None:
    """Copy ckpt/policy to `out`, casting the safetensors weights to `dtype` when given."""
    from safetensors.torch import load_file, save_file

    src = os.path.join(ckpt, "policy")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ExportError(f"--out {out} exists and is not an empty folder; give a new one (nothing is overwritten)")
    os.makedirs(out, exist_ok=True)
    for name in sorted(os.listdir(src)):
        if dtype is not None and name.endswith(".safetensors"):
            tensors = load_file(os.path.join(src, name))
            cast = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in tensors.items()}
            save_file(cast, os.path.join(out, name), metadata={"format": "pt"})
        else:
            shutil.copy2(os.path.join(src, name), os.path.join(out, name))
    if dtype is not None:
        set_config_dtype(out, getattr(torch, dtype))
        _fix_index_size(out)


def _fix_index_size(folder: str) -> None:
    """A sharded model's index records the total size of its weights: recount it after a cast."""
    from safetensors.torch import load_file

    path = os.path.join(folder, INDEX)
    if not os.path.isfile(path):
        return
    with open(path) as fh:
        index = json.load(fh)
    shards = sorted(set(index["weight_map"].values()))
    total = sum(t.numel() * t.element_size() for s in shards for t in load_file(os.path.join(folder, s)).values())
    index.setdefault("metadata", {})["total_size"] = total
    with open(path, "w") as fh:
        json.dump(index, fh, indent=2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ckpt = find_checkpoint(args.run, args.step)
        export(ckpt, args.out, args.dtype)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(os.path.join(ckpt, "trainer_state.json")) as fh:
        step = json.load(fh)["step"]
    with open(os.path.join(args.out, "config.json")) as fh:
        conf = json.load(fh)
    print(
        f"exported {ckpt}/policy (step {step}, {conf.get('dtype') or conf.get('torch_dtype')}) to {args.out}: "
        f"your model; load it with AutoModelForCausalLM.from_pretrained({args.out!r})"
    )
    return 0
