"""What the stand-alone runs (``benchmarks.scale``, ``benchmarks.tls``) share: the CPUs and
the load generator, the run's conditions, and the results files they write."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, cpu_pinning

from . import env
from .generator import Loadgen


def log(message: str) -> None:
    """Prints a progress line at once."""
    print(message, flush=True)


@dataclass(frozen=True)
class Rig:
    """Where the server and the load generator run, and the load generator."""

    server_cpu: int | None
    loadgen: Loadgen
    #: The pinning, in words, for the results.
    pinning: str


def rig(server: str, loadgen: str) -> Rig | None:
    """Pins ``server`` (e.g. "the server") and ``loadgen`` to a CPU each, when two are allowed,
    and builds the load generator; ``None`` (the reason printed) if it cannot be built."""
    server_cpu, loadgen_cpu = cpu_pinning()
    pinning = (
        f"{server} on CPU {server_cpu}, {loadgen} on CPU {loadgen_cpu}"
        if server_cpu is not None
        else "none (fewer than two CPUs allowed)"
    )
    try:
        binary = env.build_loadgen(REPO_ROOT, log)
    except env.SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return Rig(server_cpu, Loadgen(binary, loadgen_cpu), pinning)


def meta(module: str, argv: Sequence[str] | None, rig: Rig, **extra: Any) -> dict[str, Any]:
    """The run's conditions: its command, date, commit, machine, pinning and ``extra``."""
    return {
        "command": f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "commit": env.git_describe(REPO_ROOT),
        "machine": env.machine(),
        "pinning": rig.pinning,
        **extra,
    }


def write(out: Path, meta: dict[str, Any], records: list[dict[str, Any]], markdown: str) -> None:
    """``out/results.json`` (the conditions and every record) and ``out/results.md``."""
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "records": records}, indent=1) + "\n"
    )
    (out / "results.md").write_text(markdown)
