"""`python -m repro_train ...` (what torchrun launches) is `repro-train ...`."""

from .cli import entry

entry()
