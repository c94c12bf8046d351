"""The scale run: many idle connections held by ``--workers`` processes, on each backend.

For each backend and each kind of client, in turn:

1. start ``python -m zcasgi APP --host 127.0.0.1 --port P --workers W`` (the supervisor and
   its workers, a listening socket per worker) pinned to one CPU, its output in a file, the
   load generators pinned to the other;
2. take the baseline RSS of the process tree once it is quiet;
3. open the connections with ``zcasgi-loadgen hold`` processes (each holds at most
   :data:`CONNS_PER_LOADGEN`, under the 20,000 open files a process may have here), spread over
   eight loopback source addresses: bare WebSockets on the echo app (``ws``), or python-socketio
   clients connected to the default namespace of the chat app (``socketio``);
4. measure the memory per connection (RSS of the tree over the baseline), the accept rate
   (connections opened per second of the opening), how the connections spread over the
   workers (open descriptors of each), and the server's CPU while everything is idle for
   ``--idle`` seconds with keepalive pings on (zcasgi's WebSocket pings every 20 s by default;
   python-engineio's pings every 25 s for Socket.IO clients, answered by the load generator);
5. check that a new client is still served at that load (one more connection: an echo round
   trip, or a Socket.IO connect, room join and broadcast), then release the connections and
   count those the server closed while they were held.

The figures go to ``OUT/results.json`` and ``OUT/results.md``, the plot to ``OUT/scale.png``,
the servers' output to ``OUT/logs/``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, ZcasgiServer, procfs

from .. import plots, record, standalone
from ..generator import SOURCES, Hold, Loadgen, LoadgenError

#: Most connections one load generator process holds (a process may open 20,000 files here).
CONNS_PER_LOADGEN = 18_000
#: The applications served, by kind of client.
APPS = {"ws": "tests.apps.echo:app", "socketio": "examples.chat:app"}


@dataclass(frozen=True)
class Point:
    """One measurement: a backend, a kind of client, how many, over how many workers."""

    backend: str
    kind: str
    conns: int
    workers: int


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


def _hold_args(kind: str, port: int, conns: int) -> list[str]:
    url = f"ws://127.0.0.1:{port}/" if kind == "ws" else f"http://127.0.0.1:{port}/"
    args = ["--url", url, "--sources", SOURCES, "--conns", str(conns)]
    args += ["--duration", "3600", "--open-timeout", "900", "--connect-concurrency", "64"]
    return [*args, "--socketio"] if kind == "socketio" else args


def _new_client(loadgen: Loadgen, kind: str, port: int) -> dict[str, Any]:
    """One more client at full load: an echo round trip, or a Socket.IO join and broadcast."""
    started = time.monotonic()
    try:
        if kind == "ws":
            report = loadgen.run(
                "rtt",
                ["--url", f"ws://127.0.0.1:{port}/", "--warmup", "0", "--duration", "1"],
                120,
            )
            ok = int(report.get("errors") or 0) == 0
            detail = f"echo round trip p50 {report['latency']['p50_us']:.0f} µs"
        else:
            report = loadgen.run(
                "fanout",
                ["--url", f"http://127.0.0.1:{port}/", "--members", "1", "--rounds", "1"],
                120,
            )
            ok = report.get("complete_rounds") == 1
            detail = f"connected and joined in {report['connect_s'] * 1e3:.0f} ms"
    except (LoadgenError, KeyError, TypeError) as exc:
        return {"served": False, "detail": str(exc)[:300]}
    return {"served": ok, "detail": detail, "seconds": round(time.monotonic() - started, 2)}


def measure(
    point: Point, loadgen: Loadgen, server_cpu: int | None, idle: float, out: Path
) -> dict[str, Any]:
    """Run one point (the module docstring's steps); its record."""
    logs = out / "logs" / f"{point.backend}-{point.kind}-{point.conns}"
    logs.mkdir(parents=True, exist_ok=True)
    server = ZcasgiServer(
        APPS[point.kind],
        point.backend,
        ["--log-level", "info", "--no-access-log", "--backlog", "4096"],
        cpu=server_cpu,
        log_dir=logs,
        startup_timeout=120.0,
        workers=point.workers,
        own_port=True,
    )
    record: dict[str, Any] = {
        "backend": point.backend,
        "kind": point.kind,
        "conns": point.conns,
        "workers": point.workers,
    }
    with server, ExitStack() as stack:
        port = server.require_port()
        server.wait_quiet()
        baseline = server.rss_kib()
        procs = max(1, math.ceil(point.conns / CONNS_PER_LOADGEN))
        holds: list[Hold] = []
        started = time.monotonic()
        for i in range(procs):
            share = point.conns // procs + (1 if i < point.conns % procs else 0)
            hold = loadgen.hold(_hold_args(point.kind, port, share))
            stack.callback(hold.kill)
            holds.append(hold)
        standalone.log(
            f"[{point.backend} {point.kind}] opening {point.conns:,} connections "
            f"({procs} load generators)"
        )
        try:
            opened = [hold.wait_open(1200) for hold in holds]
        except LoadgenError as exc:
            record["error"] = str(exc)
            return record
        open_s = time.monotonic() - started
        n_open = sum(int(o.get("open") or 0) for o in opened)
        server.wait_quiet(max_seconds=30.0)
        rss = server.rss_kib()
        per_worker = [procfs.open_fds([pid]) for pid in server.children()]
        standalone.log(
            f"[{point.backend} {point.kind}] {n_open:,} open in {open_s:.1f} s; "
            f"{_mib(rss)} (baseline {_mib(baseline)}); fds per worker {per_worker}; idle {idle:g} s"
        )
        cpu_before = server.cpu_seconds()
        t0 = time.monotonic()
        time.sleep(idle)
        idle_cpu = (server.cpu_seconds() - cpu_before) / (time.monotonic() - t0)
        new_client = _new_client(loadgen, point.kind, port)
        rss_end = server.rss_kib()
        finals = [hold.release(timeout=120) for hold in holds]
        alive = server.alive()
    closed = sum(int(f.get("closed_by_server") or 0) for f in finals)
    first_error = next((o.get("first_error") for o in opened if o.get("first_error")), None)
    record.update(
        open=n_open,
        open_s=round(open_s, 2),
        accepts_per_s=round(n_open / open_s, 1) if open_s else None,
        baseline_kib=baseline,
        rss_kib=rss,
        rss_after_idle_kib=rss_end,
        kib_per_conn=round((rss - baseline) / n_open, 2) if n_open else None,
        fds_per_worker=per_worker,
        idle_s=idle,
        idle_cpu_share=round(idle_cpu, 4),
        new_client=new_client,
        closed_by_server=closed,
        connect_errors=point.conns - n_open,
        first_error=first_error,
        server_alive=alive,
    )
    standalone.log(f"[{point.backend} {point.kind}] {summary(record)}")
    return record


def summary(r: dict[str, Any]) -> str:
    """One line of a record's figures."""
    if "error" in r:
        return f"error: {r['error']}"
    served = "served" if r["new_client"]["served"] else "NOT served"
    return (
        f"{r['open']:,}/{r['conns']:,} open over {r['workers']} workers, "
        f"{r['kib_per_conn']} KiB/conn, {r['accepts_per_s']:,.0f} accepts/s, "
        f"idle CPU {r['idle_cpu_share'] * 100:.1f}% of a core; new client {served} "
        f"({r['new_client']['detail']}); {r['closed_by_server']} closed by the server"
    )


def markdown(meta: dict[str, Any], records: list[dict[str, Any]], out: Path) -> str:
    """``results.md``: the run's conditions and one row per point."""
    lines = record.opening(
        "Scale results",
        "Idle connections held over worker processes on each backend: memory per connection, "
        "accept rate, spread over the workers, idle CPU with keepalive pings, and whether a "
        "new client is still served at that load.",
        meta,
        out,
        record.GUIDE,
        [
            f"- Build: the `ci` cargo profile (`make dev`); idle window {meta['idle']:g} s",
            *(f"- Note: {note}" for note in meta.get("notes", [])),
        ],
    )
    lines += [
        "| backend | clients | open | workers | KiB per conn | accepts/s "
        "| idle CPU (share of a core) | connections per worker | new client at load "
        "| closed by the server |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['kind']} | error: {r['error']} |||||||||")
            continue
        spread = ", ".join(f"{n:,}" for n in r["fds_per_worker"])
        served = ("yes: " if r["new_client"]["served"] else "**no**: ") + r["new_client"]["detail"]
        lines.append(
            f"| {r['backend']} | {r['kind']} | {r['open']:,} / {r['conns']:,} | {r['workers']} "
            f"| {r['kib_per_conn']} | {r['accepts_per_s']:,.0f} | {r['idle_cpu_share'] * 100:.1f}% "
            f"| {spread} (open files) | {served} | {r['closed_by_server']} |"
        )
    lines += ["", "![memory per connection and idle CPU](scale.png)", ""]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--backends", default="mio,tokio", help="comma-separated backends")
    p.add_argument("--conns", type=int, default=100_000, help="bare WebSocket connections")
    p.add_argument("--workers", type=int, default=6, help="worker processes for --conns")
    p.add_argument(
        "--sio-conns", type=int, default=20_000, help="python-socketio clients (0: skip)"
    )
    p.add_argument("--sio-workers", type=int, default=2, help="worker processes for --sio-conns")
    p.add_argument("--idle", type=float, default=45.0, help="seconds of idle CPU measurement")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks" / "scale")
    record.add_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run every point, write the results and the plot (:func:`standalone.run`)."""
    args = _parser().parse_args(argv)

    def measure_all(setup: standalone.Rig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        points = [
            Point(backend, kind, conns, workers)
            for backend in args.backends.split(",")
            for kind, conns, workers in (
                ("ws", args.conns, args.workers),
                ("socketio", args.sio_conns, args.sio_workers),
            )
            if conns > 0
        ]
        records = []
        for i, point in enumerate(points, 1):
            standalone.log(f"== point {i}/{len(points)}: {point}")
            records.append(measure(point, setup.loadgen, setup.server_cpu, args.idle, args.out))
        return records, {"idle": args.idle}

    return standalone.run(
        "benchmarks.scale",
        argv,
        args,
        ("the server's processes", "the load generators"),
        measure_all,
        standalone.Report(markdown, plots.scale, "scale.png"),
    )
