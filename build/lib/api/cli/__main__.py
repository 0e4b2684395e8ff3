"""`python -m api.cli` is `camreg` (tests start the CLI this way, with the venv's Python)."""

import contextlib
import sys

from api.cli.main import main

with contextlib.suppress(KeyboardInterrupt):
    sys.exit(main())
