"""python -m runtime <command> --config F (see runtime/cli.py)."""

import sys

from .cli import main

sys.exit(main())
