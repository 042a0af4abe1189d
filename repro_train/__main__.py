"""`python -m repro_train ...` (what torchrun launches) is `repro-train ...`."""

import sys

from .cli import main

sys.exit(main())
