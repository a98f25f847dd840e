"""``python -m portacnn`` is the ``portacnn`` command."""

import sys

from .cli import main

sys.exit(main())
