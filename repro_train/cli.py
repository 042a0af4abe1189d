"""`repro-train <command> [options]`: the one console script. Commands:
  train     RL training from a YAML recipe (GRPO, PPO, REINFORCE++, REINFORCE++-baseline, RLOO; RePro on or off)
  signal    a recipe's first steps with no update: mixed groups, lengths, cuts, process vs outcome advantage
  inspect   RePro's view of chains of thought (a run's samples, or yours): each step's text, J, S, r, plots
  eval      accuracy, lengths and overthinking metrics of a model on a task
  plot      training curves of runs (accuracy, length, re-checks, J, RePro's share), overlaid in one PNG
  compare   train arms (GRPO, + RePro, + length shapers) with one budget and seeds; one table and plot
  sft       supervised training (used to build the shipped tiny reasoner)
  demo      the main job on the embedded default (what `make demo` runs)
  prepare-model  a pretrained model as a Hugging Face folder, offline (e.g. smollm2-135m-instruct)
  export    your model out of a run: a checkpoint's policy as a Hugging Face folder (optionally cast)
  data      named datasets: list, export to JSONL
Run `repro-train <command> --help` for each command's options; documentation: README.md and docs/.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "train": "repro_train.commands.train",
    "signal": "repro_train.commands.signal",
    "inspect": "repro_train.commands.inspect",
    "eval": "repro_train.commands.eval",
    "plot": "repro_train.commands.plot",
    "compare": "repro_train.commands.compare",
    "sft": "repro_train.commands.sft.train",
    "demo": "repro_train.commands.demo",
    "prepare-model": "repro_train.commands.prepare_model",
    "export": "repro_train.commands.export",
    "data": "repro_train.commands.data",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(cmd, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"repro-train: unknown command '{cmd}'{hint}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[cmd]).main(rest) or 0


def entry() -> None:
    """The console script and `python -m repro_train`: `main`, then an exit that skips the interpreter's teardown (every
    file and pool is closed by then). The teardown is where gloo can abort ("terminate called without an active
    exception") and where Triton 3.9's bindings print pages of "nanobind: leaked ..." once torch has imported it."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
