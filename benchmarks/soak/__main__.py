"""``python -m benchmarks.soak``."""

import sys

from .run import main

sys.exit(main())
