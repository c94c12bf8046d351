"""``python -m zcasgi.bench`` runs the benchmark suite."""

from .cli import main

raise SystemExit(main())
