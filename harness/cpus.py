"""Pinning: the server on one core, the load on another."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence


def cpu_pinning() -> tuple[int | None, int | None]:
    """CPUs for (server, load generator): 0 and 1 when this process may use both, else none."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """``argv`` run on ``cpu`` (with taskset), or unchanged when ``cpu`` is None."""
    if cpu is None:
        return list(argv)
    taskset = shutil.which("taskset")
    if taskset is None:
        return list(argv)
    return [taskset, "-c", str(cpu), *argv]
