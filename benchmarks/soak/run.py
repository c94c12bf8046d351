"""The soak run: each backend under the client mix for a long time, its RSS and descriptors
sampled, then checked back at their baseline once the clients have left.

For each backend, in turn:

1. start ``python -m zcasgi apps.soak:app`` (:data:`clients.SERVER_ARGS`) pinned to one CPU,
   its output in a file, while this process (the clients) runs on another;
2. warm up with a short bounded mix, wait until the server is quiet, and take the baseline:
   RSS, open descriptors, running application calls and asyncio tasks;
3. run the mix (:data:`clients.SOAK`) for ``--minutes``, sampling every ``--interval`` seconds
   and printing progress every 30 s;
4. let the clients finish, wait (at most ``--settle-max`` seconds) until no application call
   runs and the descriptor count is back at the baseline, then ``--settle`` seconds more, and
   take the final sample; then ask the application for ``malloc_trim(0)`` and sample again.

The figures go to ``OUT/results.json`` and ``OUT/results.md``, the plot to ``OUT/soak.png``
and the servers' output to ``OUT/<backend>-server.log``. Nothing is asserted: the verdicts in
``results.md`` are the criteria of ``docs/soak.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, ZcasgiServer, cpu_pinning, procfs

from .. import plots, record
from . import clients

#: Seconds between progress lines.
PROGRESS_EVERY = 30.0
#: RSS margin of the verdict, over the baseline: this much, or this share of it if larger.
RSS_MARGIN_KIB = 8 * 1024
RSS_MARGIN_SHARE = 0.20
#: The mix's concurrent clients.
WORKERS = 24
#: What the results page links to for how to read it.
GUIDE = REPO_ROOT / "docs" / "soak.md"


#: The figures a sample takes from the soak application's ``/stats``.
_APP_FIGURES = ("tasks", "asyncio_tasks", "sends_after_disconnect", "connection_objects")


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


class Run:
    """One backend's soak: the server, the clients' counts and the samples."""

    def __init__(self, server: ZcasgiServer, backend: str, interval: float) -> None:
        """Sample ``server`` every ``interval`` seconds while the mix runs."""
        self.server = server
        self.backend = backend
        self.interval = interval
        self.counts = clients.Counts()
        self.samples: list[dict[str, Any]] = []
        self.marks: dict[str, dict[str, Any]] = {}
        self.t0 = time.monotonic()
        self.errors_shown: set[str] = set()
        #: Looks at ``/stats`` that failed.
        self.stats_errors: list[str] = []

    @property
    def port(self) -> int:
        """The server's port."""
        return self.server.require_port()

    async def sample(self, phase: str) -> dict[str, Any]:
        """Read RSS and descriptors, then the application's counts; keep and return them."""
        pids = self.server.refresh_pids()
        point: dict[str, Any] = {
            "t": round(time.monotonic() - self.t0, 2),
            "phase": phase,
            "rss_kib": procfs.rss_kib(pids),
            "fds": procfs.open_fds(pids),
            "load1": procfs.loadavg(),
        }
        try:
            app = await clients.stats(self.port)
        except (OSError, EOFError, ValueError, clients.Unexpected) as exc:
            # A loaded machine may fail one look; the previous figures stand in for it.
            self.stats_errors.append(f"{point['t']} s: {type(exc).__name__}: {exc}"[:200])
            print(f"    /stats failed: {self.stats_errors[-1]}", flush=True)
            app = self.samples[-1] if self.samples else dict.fromkeys(_APP_FIGURES, 0)
        point.update({key: app[key] for key in _APP_FIGURES})
        point["connections"] = self.counts.connections
        point["messages"] = self.counts.messages
        self.samples.append(point)
        return point

    async def settled(self, phase: str, timeout: float, fds: int | None) -> dict[str, Any]:
        """Wait for a quiet server (:func:`clients.wait_settled`), then sample it as ``phase``."""
        look = await clients.wait_settled(self.port, self.server.open_fds, timeout=timeout, fds=fds)
        point = await self.sample(phase)
        # The quiet look's figures, taken without a /stats connection open.
        point.update(fds=look["fds"], settled=look["settled"])
        self.marks[phase] = point
        return point

    async def sampler(self, phase: str, stop: asyncio.Event, minutes: float | None) -> None:
        """Sample every ``interval`` seconds until ``stop``; print progress during the load."""
        last_print = time.monotonic()
        started = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            point = await self.sample(phase)
            if minutes is not None and time.monotonic() - last_print >= PROGRESS_EVERY:
                last_print = time.monotonic()
                self.progress(time.monotonic() - started, minutes * 60, point)

    def progress(self, elapsed: float, total: float, point: dict[str, Any]) -> None:
        """Print one progress line."""
        c = self.counts
        print(
            f"[{self.backend} {_clock(elapsed)}/{_clock(total)}] conns {c.connections:,} "
            f"msgs {c.messages:,} streamed {c.streamed:,} http {c.http_requests:,} "
            f"resets {c.resets:,} errors {sum(c.errors.values())} | "
            f"rss {_mib(point['rss_kib'])} fds {point['fds']} tasks {point['tasks']}",
            flush=True,
        )
        for kind, message in c.first_error.items():
            if kind not in self.errors_shown:
                self.errors_shown.add(kind)
                print(f"    first error of a {kind} client: {message}", flush=True)


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


async def soak_backend(
    backend: str,
    *,
    minutes: float,
    interval: float,
    settle: float,
    settle_max: float,
    server_cpu: int | None,
    out: Path,
) -> dict[str, Any]:
    """Soak one backend (the module docstring's steps); its record."""
    logs = out / f"{backend}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = ZcasgiServer(
        clients.APP,
        backend,
        [*clients.SERVER_ARGS, "--log-level", "info"],
        cpu=server_cpu,
        log_dir=logs,
        startup_timeout=60.0,
    )
    with server:
        log_path = server.log_paths[0]
        run = Run(server, backend, interval)
        run.marks["start"] = await run.sample("start")
        warm = clients.Counts()
        plan = clients.cycle_plan(clients.QUICK, 4 * len(clients.QUICK.kinds()))
        await clients.run_mix(run.port, plan, tuning=clients.QUICK, workers=4, counts=warm)
        baseline = await run.settled("baseline", settle_max, None)
        print(
            f"[{backend}] baseline: rss {_mib(baseline['rss_kib'])} fds {baseline['fds']} "
            f"asyncio tasks {baseline['asyncio_tasks']}; load for {minutes:g} min",
            flush=True,
        )

        stop = asyncio.Event()
        sampling = asyncio.create_task(run.sampler("load", stop, minutes))
        until = asyncio.get_running_loop().time() + minutes * 60
        load_started = time.monotonic()
        await clients.run_mix(
            run.port,
            clients.timed_plan(clients.SOAK, until),
            tuning=clients.SOAK,
            workers=WORKERS,
            counts=run.counts,
        )
        load_s = time.monotonic() - load_started
        stop.set()
        await sampling
        run.marks["end_of_load"] = run.samples[-1]
        # No client starts after this (the last ones may run on for a while).
        run.marks["last_start"] = {"t": round(load_started + minutes * 60 - run.t0, 2)}

        print(f"[{backend}] clients left; settling", flush=True)
        stop = asyncio.Event()
        sampling = asyncio.create_task(run.sampler("settle", stop, None))
        back = await run.settled("back", settle_max, baseline["fds"])
        await asyncio.sleep(settle)
        stop.set()
        await sampling
        await run.settled("final", settle_max, baseline["fds"])
        trimmed = await clients.trim(run.port)
        after_trim = await run.settled("after_trim", settle_max, baseline["fds"])
        after_trim["trimmed"] = trimmed["trimmed"]
    log_path.rename(out / f"{backend}-server.log")
    logs.rmdir()
    output = server.output()
    record = {
        "backend": backend,
        "load_s": round(load_s, 1),
        "back_after_s": round(back["t"] - run.marks["end_of_load"]["t"], 1),
        "drain_s": round(run.marks["end_of_load"]["t"] - run.marks["last_start"]["t"], 1),
        "counts": run.counts.snapshot(),
        "marks": run.marks,
        "peak": {
            "rss_kib": max(p["rss_kib"] for p in run.samples),
            "fds": max(p["fds"] for p in run.samples),
            "tasks": max(p["tasks"] for p in run.samples),
        },
        "rss_growth_kib": _growth(run.samples),
        "stats_errors": run.stats_errors,
        "server_log": {
            "tracebacks": output.count("Traceback"),
            "error_lines": sum(" ERROR " in line for line in output.splitlines()),
            "floods_cut_short": output.count("client left"),
            "lines": output.count("\n"),
        },
        "samples": run.samples,
    }
    record["verdict"] = verdict(record)
    print(f"[{backend}] {summary(record)}", flush=True)
    return record


def _growth(samples: list[dict[str, Any]]) -> int | None:
    """RSS at the end of the load minus RSS at its middle (medians of a tenth of the load's
    samples each): a leak grows steadily, a warm allocator plateaus."""
    load = [p["rss_kib"] for p in samples if p["phase"] == "load"]
    if len(load) < 20:
        return None
    tenth = max(1, len(load) // 10)
    middle = sorted(load[len(load) // 2 - tenth // 2 :][:tenth])
    end = sorted(load[-tenth:])
    return int(end[len(end) // 2] - middle[len(middle) // 2])


def verdict(record: dict[str, Any]) -> dict[str, bool]:
    """The criteria of docs/soak.md, each true when met."""
    marks = record["marks"]
    base, final, trimmed = marks["baseline"], marks["final"], marks["after_trim"]
    margin = max(RSS_MARGIN_KIB, RSS_MARGIN_SHARE * base["rss_kib"])
    return {
        "fds_back_to_baseline": final["fds"] == base["fds"],
        "no_application_task_left": final["tasks"] == 0
        and final["asyncio_tasks"] == base["asyncio_tasks"],
        "no_connection_object_left": final["connection_objects"] == 0,
        "rss_within_margin": trimmed["rss_kib"] <= base["rss_kib"] + margin,
        "no_client_errors": not record["counts"]["errors"],
        "no_server_errors": record["server_log"]["tracebacks"] == 0
        and record["server_log"]["error_lines"] == 0,
    }


def summary(record: dict[str, Any]) -> str:
    """One line: the counts and the baseline, peak and final figures."""
    c, m, peak = record["counts"], record["marks"], record["peak"]
    ok = all(record["verdict"].values())
    return (
        f"{c['connections']:,} connections, {c['messages']:,} messages, "
        f"{c['http_requests']:,} HTTP requests, {c['resets']:,} resets; "
        f"fds {m['baseline']['fds']} -> peak {peak['fds']} -> {m['final']['fds']}; "
        f"rss {_mib(m['baseline']['rss_kib'])} -> peak {_mib(peak['rss_kib'])} -> "
        f"{_mib(m['final']['rss_kib'])} (trimmed {_mib(m['after_trim']['rss_kib'])}); "
        f"{'all criteria met' if ok else 'CRITERIA NOT MET: ' + str(record['verdict'])}"
    )


def markdown(meta: dict[str, Any], records: list[dict[str, Any]], out: Path) -> str:
    """``results.md``: the run's conditions and one column per backend."""
    lines = record.opening(
        "Soak results",
        "Each backend under a long mix of churning, slow, resetting and HTTP clients; its "
        "descriptors, application calls and memory sampled, then checked back at the baseline.",
        meta,
        out,
        GUIDE,
        [
            f"- Load per backend: {meta['minutes']:g} min, {WORKERS} concurrent clients; "
            f"sample every {meta['interval']:g} s",
            f"- Server options: `{' '.join(clients.SERVER_ARGS)}`",
        ],
    )
    names = [r["backend"] for r in records]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, get: Any) -> None:
        rows.append((label, [str(get(r)) for r in records]))

    row("load (s)", lambda r: r["load_s"])
    row("machine load average, median / max", lambda r: _load_text(r["samples"]))
    for key in ("connections", "messages", "streamed", "http_requests", "resets"):
        row(key.replace("_", " "), lambda r, k=key: f"{r['counts'][k]:,}")
    row("clients per kind", lambda r: _kinds_text(r["counts"]["kinds"]))
    row("client errors", lambda r: r["counts"]["errors"] or "none")
    for phase in ("start", "baseline", "final", "after_trim"):
        row(f"RSS {phase.replace('_', ' ')}", lambda r, p=phase: _mib(r["marks"][p]["rss_kib"]))
    row("RSS peak", lambda r: _mib(r["peak"]["rss_kib"]))
    row("RSS growth, middle to end of load", lambda r: _growth_text(r["rss_growth_kib"]))
    for phase in ("start", "baseline", "final"):
        row(f"open fds {phase}", lambda r, p=phase: r["marks"][p]["fds"])
    row("open fds peak", lambda r: r["peak"]["fds"])
    row("last clients finished after (s)", lambda r: r["drain_s"])
    row("fds back at baseline after that (s)", lambda r: r["back_after_s"])
    row(
        "app tasks peak / final", lambda r: f"{r['peak']['tasks']} / {r['marks']['final']['tasks']}"
    )
    row(
        "connection objects peak / final",
        lambda r: (
            f"{max(p['connection_objects'] for p in r['samples'])} / "
            f"{r['marks']['final']['connection_objects']}"
        ),
    )
    row(
        "asyncio tasks baseline / final",
        lambda r: (
            f"{r['marks']['baseline']['asyncio_tasks']} / {r['marks']['final']['asyncio_tasks']}"
        ),
    )
    row(
        "slow readers reset while the app waited in send()",
        lambda r: f"{r['server_log']['floods_cut_short']:,}",
    )
    row(
        "app calls ended by send() after a reset",
        lambda r: f"{r['marks']['final']['sends_after_disconnect']:,}",
    )
    row(
        "failed looks at /stats (loaded machine)",
        lambda r: len(r["stats_errors"]),
    )
    row(
        "server log: tracebacks / ERROR lines",
        lambda r: f"{r['server_log']['tracebacks']} / {r['server_log']['error_lines']}",
    )
    for key in records[0]["verdict"] if records else []:
        row(key.replace("_", " "), lambda r, k=key: "yes" if r["verdict"][k] else "**NO**")
    lines.append("| | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    lines.extend(f"| {label} | " + " | ".join(values) + " |" for label, values in rows)
    lines += ["", "![RSS, open descriptors and application tasks over time](soak.png)", ""]
    return "\n".join(lines)


def _load_text(samples: list[dict[str, Any]]) -> str:
    load = sorted(p["load1"] for p in samples if p["phase"] == "load")
    return f"{load[len(load) // 2]:.1f} / {load[-1]:.1f}" if load else "n/a"


def _kinds_text(kinds: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in kinds.items())


def _growth_text(kib: int | None) -> str:
    return "n/a (short run)" if kib is None else f"{kib / 1024:+.1f} MiB"


def _publish(out: Path, data: dict[str, Any]) -> None:
    """``results.json``, ``results.md`` and ``soak.png`` of ``data`` into ``out``."""
    record.write(out, data, markdown(data["meta"], data["runs"], out))
    plots.soak(data["runs"], out / "soak.png")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.soak``: soak each backend, write the record; exit 1 when a
    criterion was not met."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="load per backend")
    parser.add_argument("--backends", default="mio,tokio", help="comma-separated")
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default: docs/soak for 30 minutes or more, "
        "else benchmarks/results/soak)",
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds of quiet at the end")
    parser.add_argument(
        "--settle-max", type=float, default=120.0, help="most seconds to wait for a quiet server"
    )
    record.add_options(parser)
    args = parser.parse_args(argv)
    out: Path = args.out or (
        REPO_ROOT / "docs" / "soak"
        if args.minutes >= 30
        else REPO_ROOT / "benchmarks" / "results" / "soak"
    )
    state = record.begin(out, args, lambda data: _publish(out, data))
    if isinstance(state, int):
        return state
    out.mkdir(parents=True, exist_ok=True)
    server_cpu, client_cpu = cpu_pinning()
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    pinning = (
        f"server on CPU {server_cpu} (taskset), clients on CPU {client_cpu}"
        if server_cpu is not None
        else "none (fewer than 2 CPUs)"
    )
    meta = record.meta(
        "benchmarks.soak", argv, state, pinning, minutes=args.minutes, interval=args.interval
    )
    records = []
    for backend in args.backends.split(","):
        records.append(
            asyncio.run(
                soak_backend(
                    backend,
                    minutes=args.minutes,
                    interval=args.interval,
                    settle=args.settle,
                    settle_max=args.settle_max,
                    server_cpu=server_cpu,
                    out=out,
                )
            )
        )
        # Written after each backend, so a long run leaves what it has measured so far.
        _publish(out, {"meta": meta, "runs": records})
    print(f"==> {out / 'results.md'}", flush=True)
    return 0 if all(all(r["verdict"].values()) for r in records) else 1
