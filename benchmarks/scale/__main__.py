"""``python -m benchmarks.scale``."""

import sys

from .run import main

sys.exit(main())
