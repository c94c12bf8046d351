"""The scenarios: one function per scenario, run for one server and one repetition.

Each function starts the server it needs (a fresh process per scenario and repetition, and per
point where earlier points would leave state behind: memory and fan-out), runs the load
generator once per point, stops the server by PID, and returns one record per measured point.
A point that fails becomes a record with ``error`` set; the run goes on.

The server's CPU time is read by the load generator itself at the edges of each measured
window (``--server-pids``), so connection set-up, warm-up and drain are not counted. Around
every load generator run the suite also reads the machine's total busy CPU time, so a record
can say how much CPU *other* processes used meanwhile (``other_cores``): on a shared machine
that is what makes a figure noisy.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    Answers,
    Command,
    LogLine,
    Readiness,
    ServerProcess,
    free_port,
    listeners,
    pinned,
    procfs,
)

from .env import PrintFn
from .generator import SOURCES, Hold, Loadgen, LoadgenError, Report
from .profiles import SOCKETIO_SCENARIOS, Profile
from .servers import BACKLOG, ECHO_APP, Launch, ServerSpec

Record = dict[str, Any]

#: A run whose load generator used this share of its core or more was limited by it.
LOADGEN_LIMIT = 0.9
#: Other processes using this many cores on average during a run make it "noisy".
NOISY_CORES = 0.3
#: Most connections one load generator process holds (the open-file cap is 20,000 here).
CONNS_PER_LOADGEN = 18_000


@dataclass
class Context:
    """Everything a scenario needs."""

    repo: Path
    profile: Profile
    loadgen: Loadgen
    server_cpu: int | None
    #: Interpreter per server group ("zcasgi", "uvicorn", ...).
    pythons: dict[str, str]
    env: dict[str, str]
    log: PrintFn


def start(
    ctx: Context,
    spec: ServerSpec,
    app: str,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start ``spec`` serving ``app`` pinned to the server CPU and wait until it serves.

    zcasgi serves on a listening socket bound here; with ``workers`` > 1, one process per
    ``SO_REUSEPORT`` listening socket (``--fd``). The peers bind their own port otherwise.
    ``env`` adds variables to the server's environment.

    Raises:
        ServerError: If the server does not come up.
    """
    python = ctx.pythons[spec.group]
    ready: Readiness = LogLine(spec.ready_line) if spec.ready_line else Answers()
    if workers > 1 or spec.inherits_socket:
        socks = listeners(workers, backlog=int(BACKLOG))
        port = socks[0].getsockname()[1]
        commands = [
            Command(
                pinned(spec.argv(Launch(python, app, port, fd=s.fileno())), ctx.server_cpu), [s]
            )
            for s in socks
        ]
    else:
        port = free_port()
        commands = [Command(pinned(spec.argv(Launch(python, app, port)), ctx.server_cpu))]
    server = ServerProcess(
        spec.name,
        commands,
        ready=ready,
        port=port,
        env={**ctx.env, **(env or {})},
        cwd=ctx.repo,
        startup_timeout=30.0,
        stop_timeout=3.0,
    )
    server.start()
    return server


def _record(
    scenario: str,
    server: str,
    rep: int,
    point: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    *,
    flags: list[str] | None = None,
    error: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Record:
    return {
        "scenario": scenario,
        "server": server,
        "rep": rep,
        "point": point,
        "metrics": metrics or {},
        "flags": flags or [],
        "error": error,
        **(extra or {}),
    }


def _flags(report: Report, other_cores: float, *, errors: int = 0) -> list[str]:
    flags = []
    if float(report.get("loadgen_cpu_util") or 0.0) >= LOADGEN_LIMIT:
        flags.append("loadgen-limit")
    if other_cores >= NOISY_CORES:
        flags.append("noisy")
    if errors:
        flags.append("errors")
    return flags


def _measure(
    ctx: Context, server: ServerProcess, sub: str, args: list[str], timeout: float
) -> tuple[Report, float]:
    """Run the load generator against ``server``; return its report and the CPU cores other
    processes used meanwhile."""
    pids = ",".join(str(p) for p in server.refresh_pids())
    busy0, srv0, t0 = procfs.busy_cpu_seconds(), server.cpu_seconds(), time.monotonic()
    report = ctx.loadgen.run(sub, [*args, "--server-pids", pids], timeout)
    busy1, srv1, t1 = procfs.busy_cpu_seconds(), server.cpu_seconds(), time.monotonic()
    loadgen_cpu = float(report.get("loadgen_cpu_total_s") or 0.0)
    other = max(0.0, (busy1 - busy0) - (srv1 - srv0) - loadgen_cpu) / max(t1 - t0, 1e-9)
    return report, other


def _common(url: str) -> list[str]:
    return ["--url", url, "--sources", SOURCES]


def _ws_url(server: ServerProcess) -> str:
    return f"ws://127.0.0.1:{server.port}/"


def _ensure(ctx: Context, spec: ServerSpec, app: str, server: ServerProcess) -> ServerProcess:
    """``server``, or a fresh one if it died."""
    if server.alive():
        return server
    ctx.log(f"  {spec.name} died; restarting it: {server.output_tail(5)}")
    server.stop()
    return start(ctx, spec, app)


def echo(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """Echo throughput: for each connection count, every size x in-flight depth as phases."""
    p = ctx.profile
    records: list[Record] = []
    server = start(ctx, spec, ECHO_APP)
    try:
        for conns in p.echo_conns:
            server = _ensure(ctx, spec, ECHO_APP, server)
            server.wait_quiet()
            phases = len(p.echo_sizes) * len(p.echo_inflight)
            args = [
                *_common(_ws_url(server)),
                "--conns",
                str(conns),
                "--size",
                ",".join(map(str, p.echo_sizes)),
                "--inflight",
                ",".join(map(str, p.echo_inflight)),
                "--warmup",
                str(p.echo_warmup),
                "--duration",
                str(p.echo_duration),
                "--max-window",
                str(p.echo_max_window),
                "--open-timeout",
                "120",
            ]
            # Warm-up may extend by up to 20 s and the drain take up to 30 s per phase.
            timeout = 180 + phases * (p.echo_warmup + p.echo_max_window + 50)
            try:
                report, other = _measure(ctx, server, "echo", args, timeout)
            except LoadgenError as exc:
                records.append(_record("echo", spec.name, rep, {"conns": conns}, error=str(exc)))
                continue
            short = conns - int(report.get("open") or 0)
            for phase in report["phases"]:
                errors = int(phase.get("errors") or 0) + short
                metrics = {
                    "msgs_per_s": phase["msgs_per_s"],
                    "bytes_per_s": phase["bytes_per_s"],
                    "cpu_us_per_msg": phase.get("server_cpu_us_per_msg"),
                    "ctx_per_msg": phase.get("server_ctx_switches_per_msg"),
                    "server_util": phase.get("server_cpu_util"),
                    "loadgen_util": phase["loadgen_cpu_util"],
                    "other_cores": other,
                    "open": report.get("open"),
                    "connect_s": report.get("connect_s"),
                    "window_s": phase.get("window_s"),
                    "rounds": phase.get("rounds"),
                    "errors": errors,
                }
                point = {"conns": conns, "size": phase["size"], "inflight": phase["inflight"]}
                flags = _flags(phase, other, errors=errors)
                steady = phase.get("warmed", True) and phase.get("drained", True)
                if not steady or float(phase.get("rounds", 2.0)) < 1.0:
                    flags.append("unsteady")
                error = report.get("first_error") if errors else None
                records.append(
                    _record("echo", spec.name, rep, point, metrics, flags=flags, error=error)
                )
    finally:
        server.stop()
    return records


def latency(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """Round-trip latency percentiles at a fixed aggregate rate."""
    p = ctx.profile
    point = {"rate": p.latency_rate, "conns": p.latency_conns, "size": 64}
    with start(ctx, spec, ECHO_APP) as server:
        args = [
            *_common(_ws_url(server)),
            "--rate",
            str(p.latency_rate),
            "--conns",
            str(p.latency_conns),
            "--size",
            "64",
            "--warmup",
            "1",
            "--duration",
            str(p.latency_duration),
        ]
        try:
            report, other = _measure(ctx, server, "latency", args, 120 + p.latency_duration)
        except LoadgenError as exc:
            return [_record("latency", spec.name, rep, point, error=str(exc))]
    lat = report["latency"]
    errors = int(report.get("errors") or 0)
    metrics = {
        "p50_us": lat["p50_us"],
        "p90_us": lat["p90_us"],
        "p99_us": lat["p99_us"],
        "p999_us": lat["p999_us"],
        "max_us": lat["max_us"],
        "samples": lat["samples"],
        "sched_p99_us": report["latency_from_schedule"]["p99_us"],
        "achieved_rate": report["achieved_rate"],
        "max_send_lag_us": report["max_send_lag_us"],
        "cpu_us_per_msg": report.get("server_cpu_us_per_msg"),
        "ctx_per_msg": report.get("server_ctx_switches_per_msg"),
        "server_util": report.get("server_cpu_util"),
        "loadgen_util": report["loadgen_cpu_util"],
        "other_cores": other,
        "errors": errors,
    }
    return [
        _record(
            "latency",
            spec.name,
            rep,
            point,
            metrics,
            flags=_flags(report, other, errors=errors),
            extra={"cdf": lat["cdf"]},
        )
    ]


def rtt(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """Single-connection round trips per second."""
    p = ctx.profile
    point = {"conns": 1, "size": 64}
    with start(ctx, spec, ECHO_APP) as server:
        args = [
            *_common(_ws_url(server)),
            "--size",
            "64",
            "--warmup",
            "0.5",
            "--duration",
            str(p.rtt_duration),
        ]
        try:
            report, other = _measure(ctx, server, "rtt", args, 60 + p.rtt_duration)
        except LoadgenError as exc:
            return [_record("rtt", spec.name, rep, point, error=str(exc))]
    metrics = {
        "round_trips_per_s": report["round_trips_per_s"],
        "p50_us": report["latency"]["p50_us"],
        "p99_us": report["latency"]["p99_us"],
        "cpu_us_per_msg": report.get("server_cpu_us_per_msg"),
        "ctx_per_msg": report.get("server_ctx_switches_per_msg"),
        "server_util": report.get("server_cpu_util"),
        "loadgen_util": report["loadgen_cpu_util"],
        "other_cores": other,
    }
    return [_record("rtt", spec.name, rep, point, metrics, flags=_flags(report, other))]


def handshakes(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """Handshakes per second (connect, upgrade, close) and server CPU per handshake."""
    p = ctx.profile
    point = {"concurrency": p.handshake_concurrency}
    with start(ctx, spec, ECHO_APP) as server:
        args = [
            *_common(_ws_url(server)),
            "--concurrency",
            str(p.handshake_concurrency),
            "--duration",
            str(p.handshake_duration),
        ]
        try:
            report, other = _measure(ctx, server, "handshakes", args, 90 + p.handshake_duration)
        except LoadgenError as exc:
            return [_record("handshakes", spec.name, rep, point, error=str(exc))]
    errors = int(report.get("errors") or 0)
    metrics = {
        "handshakes_per_s": report["handshakes_per_s"],
        "cpu_us_per_handshake": report.get("server_cpu_us_per_handshake"),
        "p50_us": report["upgrade_latency"]["p50_us"],
        "server_util": report.get("server_cpu_util"),
        "loadgen_util": report["loadgen_cpu_util"],
        "other_cores": other,
        "errors": errors,
    }
    flags = _flags(report, other, errors=errors)
    error = report.get("first_error") if errors else None
    return [_record("handshakes", spec.name, rep, point, metrics, flags=flags, error=error)]


def _hold_point(
    ctx: Context, spec: ServerSpec, rep: int, scenario: str, conns: int, workers: int
) -> Record:
    """Open ``conns`` idle connections to a fresh server; memory per connection from RSS."""
    point = {"conns": conns, "workers": workers}
    with start(ctx, spec, ECHO_APP, workers=workers) as server, ExitStack() as stack:
        url = _ws_url(server)
        # One short exchange first, so lazily imported code and first-use buffers are in the
        # baseline rather than charged to the connections.
        try:
            ctx.loadgen.run("rtt", [*_common(url), "--warmup", "0", "--duration", "0.3"], 60)
        except LoadgenError as exc:
            return _record(scenario, spec.name, rep, point, error=f"warm-up: {exc}")
        server.wait_quiet()
        baseline = server.rss_kib()
        started = time.monotonic()
        holds = _hold(ctx, stack, _common(url), conns, open_timeout=240)
        try:
            opened = [hold.wait_open(300) for hold in holds]
        except LoadgenError as exc:
            return _record(scenario, spec.name, rep, point, error=str(exc))
        open_s = time.monotonic() - started
        time.sleep(1.0)
        server.wait_quiet(max_seconds=5.0)
        rss = server.rss_kib()
        alive = server.alive()
        finals = [hold.release() for hold in holds]
    n_open = sum(int(o.get("open") or 0) for o in opened)
    closed = sum(int(f.get("closed_by_server") or 0) for f in finals)
    errors = (conns - n_open) + closed
    first_error = next((o.get("first_error") for o in opened if o.get("first_error")), None)
    metrics = {
        "kib_per_conn": (rss - baseline) / n_open if n_open else None,
        "baseline_mib": baseline / 1024,
        "rss_mib": rss / 1024,
        "open": n_open,
        "open_s": open_s,
        "errors": errors,
    }
    flags = ["errors"] if errors or not alive else []
    error = None
    if errors or not alive:
        error = f"{n_open}/{conns} open, {closed} closed by the server" + (
            "" if alive else ", server died"
        )
        if first_error:
            error += f"; first error: {first_error}"
    return _record(scenario, spec.name, rep, point, metrics, flags=flags, error=error)


def _hold(
    ctx: Context, stack: ExitStack, args: list[str], conns: int, open_timeout: float
) -> list[Hold]:
    """Start the ``hold`` processes that open and keep ``conns`` connections (at most
    :data:`CONNS_PER_LOADGEN` each), killed by PID when ``stack`` closes."""
    procs = max(1, math.ceil(conns / CONNS_PER_LOADGEN))
    holds = []
    for i in range(procs):
        share = conns // procs + (1 if i < conns % procs else 0)
        hold = ctx.loadgen.hold(
            [
                *args,
                "--conns",
                str(share),
                "--duration",
                str(2 * open_timeout + 100),
                "--open-timeout",
                str(open_timeout),
                "--connect-concurrency",
                "64",
            ]
        )
        stack.callback(hold.kill)
        holds.append(hold)
    return holds


def memory(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """Memory per idle connection, one server process."""
    return [_hold_point(ctx, spec, rep, "memory", n, 1) for n in ctx.profile.memory_conns]


def serves(scenario: str, spec: ServerSpec) -> bool:
    """Whether ``scenario`` concerns ``spec`` at all: the zcasgi.socketio variants serve only
    the Socket.IO scenarios (elsewhere they are the plain zcasgi entries)."""
    return not spec.socketio_only or scenario in SOCKETIO_SCENARIOS


def excluded(scenario: str, spec: ServerSpec) -> str | None:
    """Why the suite does not run ``spec`` in ``scenario``, or None when it does."""
    if scenario == "memory-50k" and not spec.serves_fd:
        return (
            "not run: the suite runs this point only for the servers it starts on a listening "
            "socket passed with --fd (one per process, SO_REUSEPORT)"
        )
    return None


def memory_multi(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """Memory per idle connection over several independent server processes, each serving
    its own ``SO_REUSEPORT`` listening socket (``--fd``); no server's own ``--workers``."""
    p = ctx.profile
    if excluded("memory-50k", spec):
        return []
    return [_hold_point(ctx, spec, rep, "memory-50k", p.memory_multi_conns, p.memory_multi_workers)]


def fanout_rounds(profile: Profile, members: int) -> int:
    """Broadcasts to a room of ``members``: enough copies for a CPU figure above clock-tick
    resolution (10 ms), and at least ``fanout_rounds``."""
    return max(profile.fanout_rounds, math.ceil(profile.fanout_min_copies / members))


def fanout_metrics(report: Report, rounds: int, other: float) -> tuple[dict[str, Any], int]:
    """The metrics of one fan-out point from the load generator's report, and its error count."""
    complete = [r for r in report["rounds"] if r.get("complete")]
    # Per-round CPU is a few clock ticks (10 ms): average over all rounds instead.
    cpu_ms = [r["server_cpu_s"] * 1e3 for r in complete if "server_cpu_s" in r]
    span = report.get("span") or {}
    windows = [r for r in report["rounds"] if "window_s" in r]
    busy = sum(float(r["loadgen_cpu_s"]) for r in windows)
    wall = sum(float(r["window_s"]) for r in windows)
    errors = int(report.get("errors") or 0) + (rounds - len(complete))
    metrics = {
        "p50_ms": report.get("p50_ms"),
        "min_ms": report.get("min_ms"),
        "max_ms": report.get("max_ms"),
        "joined": report.get("joined"),
        "connect_s": report.get("connect_s"),
        "rounds": len(complete),
        "cpu_ms_per_broadcast": statistics.fmean(cpu_ms) if cpu_ms else None,
        "cpu_us_per_recipient": span.get("server_cpu_us_per_delivery"),
        "loadgen_util": busy / wall if wall > 0 else None,
        "other_cores": other,
        "errors": errors,
    }
    return metrics, errors


def fanout(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """python-socketio room broadcast: time until the last member has the message, and the
    server's CPU per copy delivered."""
    p = ctx.profile
    records = []
    for members in p.fanout_members:
        point = {"members": members}
        rounds = fanout_rounds(p, members)
        with start(ctx, spec, spec.chat_app) as server:
            args = [
                *_sio_common(server),
                "--members",
                str(members),
                "--rounds",
                str(rounds),
                "--connect-concurrency",
                "64",
                "--open-timeout",
                "240",
            ]
            try:
                report, other = _measure(ctx, server, "fanout", args, 300 + 40 * rounds)
            except LoadgenError as exc:
                records.append(_record("fanout", spec.name, rep, point, error=str(exc)))
                continue
        metrics, errors = fanout_metrics(report, rounds, other)
        error = report.get("first_error") if errors else None
        flags = _flags({"loadgen_cpu_util": metrics["loadgen_util"]}, other, errors=errors)
        records.append(_record("fanout", spec.name, rep, point, metrics, flags=flags, error=error))
    return records


def _sio_common(server: ServerProcess) -> list[str]:
    return _common(f"http://127.0.0.1:{server.port}/")


#: The environment variable the chat apps read their Engine.IO ping interval from (seconds).
PING_INTERVAL_ENV = "ZCASGI_CHAT_PING_INTERVAL"


def sio_idle(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """Idle Socket.IO clients: memory per client, then the server's CPU while they only
    exchange Engine.IO pings (every ``sio_ping_interval`` seconds, the same for every server)."""
    p = ctx.profile
    clients = p.sio_idle_clients
    point = {"clients": clients, "ping_interval": p.sio_ping_interval}
    env = {PING_INTERVAL_ENV: str(p.sio_ping_interval)}
    with start(ctx, spec, spec.chat_app, env=env) as server, ExitStack() as stack:
        # One small broadcast first (connect, join, emit, leave), so lazily imported code and
        # first-use buffers are in the baseline rather than charged to the clients.
        warm = [*_sio_common(server), "--members", "2", "--rounds", "1", "--pause", "0"]
        try:
            ctx.loadgen.run("fanout", warm, 60)
        except LoadgenError as exc:
            return [_record("sio-idle", spec.name, rep, point, error=f"warm-up: {exc}")]
        server.wait_quiet()
        baseline = server.rss_kib()
        started = time.monotonic()
        holds = _hold(ctx, stack, [*_sio_common(server), "--socketio"], clients, open_timeout=400)
        try:
            opened = [hold.wait_open(450) for hold in holds]
        except LoadgenError as exc:
            return [_record("sio-idle", spec.name, rep, point, error=str(exc))]
        open_s = time.monotonic() - started
        # Let every client's first ping come and go before measuring.
        time.sleep(p.sio_ping_interval + 1.0)
        server.wait_quiet(max_seconds=5.0)
        rss = server.rss_kib()
        hold_pids = [hold.proc.pid for hold in holds]
        busy0, srv0, gen0 = _cpu_readings(server, hold_pids)
        t0 = time.monotonic()
        time.sleep(p.sio_idle_window)
        busy1, srv1, gen1 = _cpu_readings(server, hold_pids)
        window = time.monotonic() - t0
        alive = server.alive()
        finals = [hold.release() for hold in holds]
    n_open = sum(int(o.get("open") or 0) for o in opened)
    closed = sum(int(f.get("closed_by_server") or 0) for f in finals)
    metrics = idle_metrics(
        n_open=n_open,
        baseline_kib=baseline,
        rss_kib=rss,
        server_cpu_s=srv1 - srv0,
        loadgen_cpu_s=gen1 - gen0,
        other_cpu_s=max(0.0, (busy1 - busy0) - (srv1 - srv0) - (gen1 - gen0)),
        window_s=window,
        ping_interval=p.sio_ping_interval,
    )
    metrics["open_s"] = open_s
    errors = (clients - n_open) + closed
    metrics["errors"] = errors
    flags = _flags({}, metrics["other_cores"], errors=errors + (0 if alive else 1))
    error = None
    if errors or not alive:
        error = f"{n_open}/{clients} open, {closed} closed by the server" + (
            "" if alive else ", server died"
        )
        first = next((o.get("first_error") for o in opened if o.get("first_error")), None)
        if first:
            error += f"; first error: {first}"
    return [_record("sio-idle", spec.name, rep, point, metrics, flags=flags, error=error)]


def _cpu_readings(server: ServerProcess, loadgen_pids: list[int]) -> tuple[float, float, float]:
    """CPU seconds so far: the machine's busy total, the server's, the load generators'."""
    return procfs.busy_cpu_seconds(), server.cpu_seconds(), procfs.cpu_seconds(loadgen_pids)


def idle_metrics(
    *,
    n_open: int,
    baseline_kib: float,
    rss_kib: float,
    server_cpu_s: float,
    loadgen_cpu_s: float,
    other_cpu_s: float,
    window_s: float,
    ping_interval: float,
) -> dict[str, Any]:
    """Memory per idle client and CPU while idle, from the raw readings."""
    pings = n_open * window_s / ping_interval if ping_interval > 0 else 0.0
    return {
        "kib_per_client": (rss_kib - baseline_kib) / n_open if n_open else None,
        "baseline_mib": baseline_kib / 1024,
        "rss_mib": rss_kib / 1024,
        "open": n_open,
        # Share of one core, in percent.
        "idle_cpu_pct": 100 * server_cpu_s / window_s if window_s > 0 else None,
        "cpu_us_per_ping": server_cpu_s * 1e6 / pings if pings else None,
        "loadgen_util": loadgen_cpu_s / window_s if window_s > 0 else None,
        "other_cores": other_cpu_s / window_s if window_s > 0 else 0.0,
        "window_s": window_s,
    }


def sio_ack(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """Socket.IO events with acknowledgements: every client keeps one ``join`` (its own room)
    in flight and emits the next once the server acknowledged it."""
    p = ctx.profile
    point = {"clients": p.sio_ack_clients}
    with start(ctx, spec, spec.chat_app) as server:
        args = [
            *_sio_common(server),
            "--conns",
            str(p.sio_ack_clients),
            "--warmup",
            str(p.sio_ack_warmup),
            "--duration",
            str(p.sio_ack_duration),
            "--connect-concurrency",
            "64",
            "--open-timeout",
            "240",
        ]
        timeout = 300 + p.sio_ack_warmup + p.sio_ack_duration
        try:
            report, other = _measure(ctx, server, "acks", args, timeout)
        except LoadgenError as exc:
            return [_record("sio-ack", spec.name, rep, point, error=str(exc))]
    metrics, errors = ack_metrics(report, other, p.sio_ack_clients)
    flags = _flags(report, other, errors=errors)
    error = report.get("first_error") if errors else None
    return [_record("sio-ack", spec.name, rep, point, metrics, flags=flags, error=error)]


def ack_metrics(report: Report, other: float, clients: int) -> tuple[dict[str, Any], int]:
    """The metrics of the sio-ack point from the load generator's report, and its errors."""
    errors = int(report.get("errors") or 0) + (clients - int(report.get("open") or 0))
    if not report.get("drained", True):
        # Some clients still waited for an acknowledgement 10 s after the window.
        errors += 1
    cpu = report.get("server_cpu_us_per_event")
    latency = report.get("latency") or {}
    metrics = {
        "events_per_s": report["events_per_s"],
        "cpu_us_per_event": cpu,
        # Events per second of server CPU: the rate one fully busy core would sustain.
        "events_per_core_s": 1e6 / cpu if cpu else None,
        "p50_us": latency.get("p50_us"),
        "p99_us": latency.get("p99_us"),
        "server_util": report.get("server_cpu_util"),
        "loadgen_util": report.get("loadgen_cpu_util"),
        "other_cores": other,
        "open": report.get("open"),
        "errors": errors,
    }
    return metrics, errors


def large(ctx: Context, spec: ServerSpec, rep: int) -> list[Record]:
    """1 MiB messages echoed over one connection."""
    p = ctx.profile
    point = {"size": p.large_size}
    with start(ctx, spec, ECHO_APP) as server:
        sub = "large-tcp" if spec.name == RAW_TCP else "large"
        url = f"tcp://127.0.0.1:{server.port}" if sub == "large-tcp" else _ws_url(server)
        args = [
            *_common(url),
            "--size",
            str(p.large_size),
            "--warmup",
            "0.5",
            "--duration",
            str(p.large_duration),
        ]
        try:
            report, other = _measure(ctx, server, sub, args, 60 + p.large_duration)
        except LoadgenError as exc:
            return [_record("large", spec.name, rep, point, error=str(exc))]
    metrics = {
        "mb_per_s": report["mb_per_s"],
        "msgs_per_s": report["msgs_per_s"],
        "cpu_us_per_msg": report.get("server_cpu_us_per_msg"),
        "ctx_per_msg": report.get("server_ctx_switches_per_msg"),
        "server_util": report.get("server_cpu_util"),
        "loadgen_util": report["loadgen_cpu_util"],
        "other_cores": other,
    }
    return [_record("large", spec.name, rep, point, metrics, flags=_flags(report, other))]


#: Name of the raw TCP echo baseline in the large-message scenario.
RAW_TCP = "raw-tcp"


def raw_tcp_spec(binary: Path) -> ServerSpec:
    """The load generator's raw TCP echo server, as a server of the large-message scenario."""

    def argv(launch: Launch) -> list[str]:
        return [str(binary), "tcp-echo-server", "--port", str(launch.port)]

    return ServerSpec(RAW_TCP, "zcasgi", "raw TCP echo (zcasgi-loadgen tcp-echo-server)", argv)


#: Scenario name -> function.
RUNNERS: dict[str, Callable[[Context, ServerSpec, int], list[Record]]] = {
    "echo": echo,
    "latency": latency,
    "rtt": rtt,
    "handshakes": handshakes,
    "memory": memory,
    "memory-50k": memory_multi,
    "fanout": fanout,
    "sio-idle": sio_idle,
    "sio-ack": sio_ack,
    "large": large,
}


def estimate(profile: Profile, scenario: str, server: str) -> float:
    """Rough seconds one step takes, for the progress line's ETA (calibrated on 2 cores)."""
    p = profile
    fast = server.startswith("zcasgi") or server == RAW_TCP
    boot = 1.0 if fast else 2.0
    opens_per_s = 5000.0 if fast else 1000.0
    joins_per_s = 900.0 if fast else 400.0
    if scenario == "echo":
        phases = len(p.echo_sizes) * len(p.echo_inflight)
        per = phases * (p.echo_warmup + p.echo_duration + 0.15)
        # Slow servers at 10,000 connections stretch warm-up and window to whole rounds.
        slow = 0.0 if fast else phases * 4.0 * sum(1 for n in p.echo_conns if n >= 10000)
        return boot + slow + sum(per + 0.5 + n / opens_per_s for n in p.echo_conns)
    if scenario == "latency":
        return boot + 2 + p.latency_duration
    if scenario == "rtt":
        return boot + 1 + p.rtt_duration
    if scenario == "handshakes":
        return boot + 0.5 + p.handshake_duration
    if scenario == "memory":
        return sum(boot + 3 + n / opens_per_s for n in p.memory_conns)
    if scenario == "memory-50k":
        # Several workers share one core while connections open.
        return boot + 5 + 2 * p.memory_multi_conns / opens_per_s if p.memory_multi_conns else 0
    if scenario == "fanout":
        return sum(
            boot + 2 + n / joins_per_s + fanout_rounds(p, n) * (0.35 + n / (20 * joins_per_s))
            for n in p.fanout_members
        )
    if scenario == "sio-idle":
        n = p.sio_idle_clients
        return boot + 4 + 2 * n / joins_per_s + p.sio_ping_interval + p.sio_idle_window
    if scenario == "sio-ack":
        n = p.sio_ack_clients
        return boot + 2 + n / joins_per_s + p.sio_ack_warmup + p.sio_ack_duration
    if scenario == "large":
        return boot + 1 + p.large_duration
    return 5.0


def failed_step(scenario: str, server: str, rep: int, exc: Exception) -> Record:
    """A record for a step whose server could not be started."""
    return _record(scenario, server, rep, {}, error=str(exc).splitlines()[0][:300])
