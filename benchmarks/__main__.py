"""``python -m benchmarks`` runs the benchmark suite."""

from .cli import main

raise SystemExit(main())
