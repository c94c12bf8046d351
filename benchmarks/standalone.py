"""What the stand-alone runs (``benchmarks.scale``, ``benchmarks.tls``) share: the CPUs and
the load generator. Their records and results pages go through :mod:`benchmarks.record`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, cpu_pinning

from . import env, record
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


#: Writes a results page from the meta, the records and the output directory.
PageFn = Callable[[dict[str, Any], list[dict[str, Any]], Path], str]
#: Draws the plot of the records into a file; False when there is nothing to draw.
PlotFn = Callable[[list[dict[str, Any]], Path], bool]


@dataclass(frozen=True)
class Report:
    """How a stand-alone run presents its records: its results page and its plot."""

    page: PageFn
    plot: PlotFn
    #: The plot's file name in the output directory.
    plot_name: str

    def publish(self, out: Path, data: dict[str, Any]) -> None:
        """Write ``results.json``, ``results.md`` and the plot into ``out``."""
        record.write(out, data, self.page(data["meta"], data["records"], out))
        self.plot(data["records"], out / self.plot_name)


def run(
    module: str,
    argv: Sequence[str] | None,
    args: argparse.Namespace,
    roles: tuple[str, str],
    measure: Callable[[Rig], tuple[list[dict[str, Any]], dict[str, Any]]],
    report: Report,
) -> int:
    """A stand-alone run from its parsed ``args`` (``out``, ``allow_dirty``, ``report_only``):
    refuse a tree that cannot be reproduced, pin ``roles`` (the server's, the load
    generator's), ``measure`` (its records and the meta it adds), record and publish them.

    Returns:
        The exit status: 0, 1 when the load generator cannot be built, 2 when the tree is
        refused or ``--report-only`` finds no record.
    """
    out: Path = args.out
    state = record.begin(out, args, lambda data: report.publish(out, data))
    if isinstance(state, int):
        return state
    setup = rig(*roles)
    if setup is None:
        return 1
    out.mkdir(parents=True, exist_ok=True)
    started = record.Start.now()
    records, extra = measure(setup)
    meta = record.meta(module, argv, state, setup.pinning, started=started, **extra)
    report.publish(out, {"meta": meta, "records": records})
    log(f"==> {out / 'results.md'}")
    return 0
