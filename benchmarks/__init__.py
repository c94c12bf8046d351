"""The backend comparison benchmark suite: ``python -m benchmarks`` from the repository root.

Runs the same workloads against zcasgi (``backend="mio"`` and ``backend="tokio"``) and the
ASGI servers users would pick instead (uvicorn, hypercorn, granian, gunicorn, socketify), one
process each, pinned to one core while the Rust load generator (``benchmarks/loadgen``) runs on
another, and writes medians, ratios and plots under ``docs/benchmarks/``. See
``docs/benchmarks/README.md`` for the scenarios and how to read the results.

Repository tooling, not part of the ``zcasgi`` wheel: ``make bench-suite`` and
``make bench-quick`` run it. Servers are started and stopped by the harness the tests use
(``harness/``).
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
