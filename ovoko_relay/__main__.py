"""Allow `python -m ovoko_relay`."""

import sys

from .cli import main

sys.exit(main())
