"""Where a server's CPU time goes under one load: ``perf record`` of the server process while
the load generator runs one workload, summed by part (the kernel, Python, zcasgi's Rust, the
event loop, libc) with the top symbols.

    python -m benchmarks.perf --server zcasgi-mio -- echo --conns 1000 --size 64 --inflight 1

The server is started as the suite starts it (pinned to its CPU, the load generator to the
other), serving the suite's echo app; the arguments after ``--`` are the load generator's
subcommand and options (``zcasgi-loadgen <subcommand> --help``), to which the URL, the
source addresses and the server's PIDs are added. ``--python`` chooses the interpreter of a
zcasgi server (e.g. the peers' virtualenv, where a full run installs the release build);
``--out`` keeps the profile as JSON. ``perf`` must be installed (``linux-perf``). The load
generator's own report (throughput, server CPU per operation) is printed too, but perf's
sampling costs the server a few per cent: take figures from the suite, shares from here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import REPO_ROOT, cpu_pinning, server_env

from . import env
from .generator import SOURCES, Loadgen, LoadgenError, Report
from .profiles import FULL
from .scenarios import Context, start
from .servers import ECHO_APP, SERVERS

#: The parts a sample's DSO is counted in, in the order they are tried.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kernel", ("[kernel", "[vdso]")),
    ("zcasgi (Rust)", ("_zcasgi",)),
    ("event loop (uvloop)", ("uvloop", "loop.cpython")),
    ("Python", ("python", "libpython", "_asyncio", ".cpython-")),
    ("libc", ("libc.so", "libc-", "libm.so", "ld-linux")),
)
#: Sampling frequency (Hz): enough samples in a few seconds, little overhead.
FREQUENCY = 1999


@dataclass
class Profile:
    """The server's samples by part (shares of all its samples) and its top symbols."""

    parts: dict[str, float]
    top: list[tuple[float, str, str]]
    samples: int

    def text(self) -> str:
        """The profile as a few readable lines."""
        lines = [f"{self.samples:,} samples of the server's CPU"]
        lines += [f"  {share:6.1%}  {part}" for part, share in self.parts.items()]
        lines.append("  top symbols:")
        lines += [f"  {share:6.1%}  {sym}  ({dso.strip('[]')})" for share, dso, sym in self.top]
        return "\n".join(lines)


def part_of(dso: str) -> str:
    """The part a DSO's samples count in."""
    for part, needles in PARTS:
        if any(n in dso for n in needles):
            return part
    return "other"


def parse_report(text: str, top: int = 20) -> Profile:
    """The profile in ``perf report --sort dso,sym --stdio -q -n`` output.

    Lines look like ``  12.34%  1234  [kernel.kallsyms]  [k] tcp_sendmsg``.
    """
    parts: dict[str, float] = {name: 0.0 for name, _ in PARTS}
    parts["other"] = 0.0
    rows: list[tuple[float, str, str]] = []
    samples = 0
    for line in text.splitlines():
        fields = line.split(None, 3)
        if len(fields) < 4 or not fields[0].endswith("%") or not fields[1].isdigit():
            continue
        try:
            share = float(fields[0][:-1]) / 100
        except ValueError:
            continue
        dso, sym = fields[2], fields[3].strip()
        samples += int(fields[1])
        parts[part_of(dso)] += share
        rows.append((share, dso, sym.removeprefix("[k] ").removeprefix("[.] ")))
    rows.sort(reverse=True)
    return Profile({k: v for k, v in parts.items() if v > 0}, rows[:top], samples)


def record(
    pids: Sequence[int], loadgen: Loadgen, sub: str, args: list[str]
) -> tuple[Profile, Report]:
    """Runs the load generator's ``sub`` with ``args`` while ``perf record`` samples ``pids``."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        perf = subprocess.Popen(
            [
                "perf",
                "record",
                "-q",
                "-F",
                str(FREQUENCY),
                "-p",
                ",".join(map(str, pids)),
                "-o",
                str(data),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            report = loadgen.run(sub, args, timeout=600)
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
        text = subprocess.run(
            ["perf", "report", "-i", str(data), "--sort", "dso,sym", "--stdio", "-q", "-n"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    return parse_report(text), report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.perf",
        description="Profile a server of the suite under one load generator workload.",
    )
    parser.add_argument("--server", default="zcasgi-mio", help=f"one of {', '.join(SERVERS)}")
    parser.add_argument("--app", default=ECHO_APP, help=f"the ASGI app (default {ECHO_APP})")
    parser.add_argument("--python", help="interpreter of the server (default: this one)")
    parser.add_argument("--loadgen", type=Path, help="the zcasgi-loadgen binary (default: build)")
    parser.add_argument("--out", type=Path, help="also write the profile and report as JSON")
    parser.add_argument("load", nargs=argparse.REMAINDER, help="-- SUBCOMMAND [OPTIONS]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Profile one server under one workload; returns the exit status."""
    args = _parser().parse_args(argv)
    load = [a for a in args.load if a != "--"] or ["echo", "--conns", "1000"]
    if shutil.which("perf") is None:
        print(
            "benchmarks.perf: perf is not installed (apt-get install linux-perf)", file=sys.stderr
        )
        return 2
    if args.server not in SERVERS:
        print(f"benchmarks.perf: --server must be one of {', '.join(SERVERS)}", file=sys.stderr)
        return 2
    spec = SERVERS[args.server]
    binary = args.loadgen or env.build_loadgen(REPO_ROOT, env.default_log)
    server_cpu, loadgen_cpu = cpu_pinning()
    python = args.python or sys.executable
    ctx = Context(
        repo=REPO_ROOT,
        profile=FULL,
        loadgen=Loadgen(binary, loadgen_cpu),
        server_cpu=server_cpu,
        pythons={spec.group: python},
        env=server_env(),
        log=lambda message: print(message, flush=True),
    )
    server = start(ctx, spec, args.app)
    try:
        pids = server.refresh_pids()
        sub, *options = load
        url = f"ws://127.0.0.1:{server.port}/"
        full = [
            *options,
            "--url",
            url,
            "--sources",
            SOURCES,
            "--server-pids",
            ",".join(map(str, pids)),
        ]
        try:
            profile, report = record(pids, ctx.loadgen, sub, full)
        except LoadgenError as exc:
            print(f"benchmarks.perf: the load generator failed: {exc}", file=sys.stderr)
            return 1
    finally:
        server.stop()
    phases = report.get("phases") or [report]
    print(
        f"{args.server} under `zcasgi-loadgen {' '.join(load)}` "
        f"(server on CPU {server_cpu}, load generator on CPU {loadgen_cpu})"
    )
    for phase in phases:
        shown = {
            k: v
            for k, v in phase.items()
            if isinstance(v, (int, float)) and ("server_cpu" in k or k.endswith("_per_s"))
        }
        print("  " + ", ".join(f"{k} {v:,.4g}" for k, v in shown.items()))
    print(profile.text())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"server": args.server, "load": load, "profile": vars(profile), "report": report},
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
