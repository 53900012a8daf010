"""``python -m bench`` is the ``sbn-bench`` command."""

import sys

from bench.cli import main

sys.exit(main())
