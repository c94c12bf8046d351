"""Turning records into results: medians with min-max, ratios, targets, markdown and JSON."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import record, scenarios
from .scenarios import RAW_TCP, Record
from .servers import BASELINE, SERVERS

Stat = dict[str, float]

#: The raw WebSocket path's targets (issue 12), checked for each zcasgi server on every page.
#: Server CPU per 64 B echo at 1,000 connections: at most this share of the baseline's.
TARGET_CPU_SHARE_OF_BASELINE = 0.2
#: Growth of CPU per message from 1,000 to 10,000 connections, at most.
TARGET_CPU_GROWTH_TO_10K = 0.2
TARGET_KIB_PER_CONN = 4.0
TARGET_CPU_US_PER_HANDSHAKE = 30.0
#: 1 MiB echo: at least this share of raw TCP's throughput.
TARGET_LARGE_SHARE_OF_TCP = 0.85
#: The WebSocket servers the targets are checked for (the I/O thread variant only when the run
#: measured it).
ZCASGI = ("zcasgi-mio", "zcasgi-mio-thread", "zcasgi-tokio")
#: The targets of zcasgi.socketio (issue 13), for the chat app written against it.
ZCASGI_SIO = ("zcasgi-sio-mio", "zcasgi-sio-tokio")
TARGET_SIO_CPU_US_PER_RECIPIENT = 5.0
#: Broadcast CPU per recipient at least this many times below each peer's.
TARGET_SIO_BROADCAST_RATIOS = {"uvicorn": 15.0, "granian": 10.0}
TARGET_SIO_KIB_PER_CLIENT = 8.0
#: Idle CPU with pings at most 1/this of uvicorn's.
TARGET_SIO_IDLE_RATIO = 10.0
#: Acknowledged events per core at least this many times uvicorn's.
TARGET_SIO_ACK_RATIO = 4.0


def _point_key(point: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(point.items()))


def stat(values: Iterable[float | None]) -> Stat | None:
    """Median, min, max and count of the values that are not None."""
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return None
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "n": float(len(clean)),
    }


@dataclass
class Cell:
    """All repetitions of one (scenario, point, server)."""

    records: list[Record] = field(default_factory=list)

    def stat(self, metric: str) -> Stat | None:
        """Statistics of ``metric`` over the repetitions that measured it."""
        return stat(r["metrics"].get(metric) for r in self.records if not r.get("failed"))

    def median(self, metric: str) -> float | None:
        """The median of ``metric``, or None."""
        s = self.stat(metric)
        return s["median"] if s else None

    @property
    def flags(self) -> list[str]:
        """Flags raised in any repetition."""
        return sorted({f for r in self.records for f in r["flags"]})

    @property
    def errors(self) -> list[str]:
        """Distinct error messages."""
        return sorted({str(r["error"]) for r in self.records if r.get("error")})


class Results:
    """Records grouped by scenario, point and server."""

    def __init__(self, records: Sequence[Record]) -> None:
        """Group ``records``."""
        self.records = list(records)
        self.cells: dict[tuple[str, tuple[tuple[str, Any], ...], str], Cell] = {}
        for rec in self.records:
            key = (rec["scenario"], _point_key(rec["point"]), rec["server"])
            self.cells.setdefault(key, Cell()).records.append(rec)

    def cell(self, scenario: str, server: str, **point: Any) -> Cell | None:
        """The cell of ``server`` at ``point`` of ``scenario``."""
        return self.cells.get((scenario, _point_key(point), server))

    def points(self, scenario: str) -> list[dict[str, Any]]:
        """The distinct points of ``scenario``, in first-seen order."""
        seen: list[dict[str, Any]] = []
        for (s, key, _), _cell in self.cells.items():
            point = dict(key)
            if s == scenario and point and point not in seen:
                seen.append(point)
        return seen

    def servers(self, scenario: str | None = None) -> list[str]:
        """Servers with records (in catalogue order), optionally for one scenario."""
        present = {s for (sc, _, s) in self.cells if scenario is None or sc == scenario}
        order = [*SERVERS, RAW_TCP]
        return [s for s in order if s in present]

    def summary(self) -> list[dict[str, Any]]:
        """One entry per cell: point, server, statistics of every metric, flags, errors."""
        out = []
        for (scenario, key, server), cell in self.cells.items():
            metrics = sorted({m for r in cell.records for m in r["metrics"]})
            out.append(
                {
                    "scenario": scenario,
                    "server": server,
                    "point": dict(key),
                    "repetitions": len(cell.records),
                    "metrics": {m: cell.stat(m) for m in metrics},
                    "flags": cell.flags,
                    "errors": cell.errors,
                }
            )
        return out


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: thousands separators, about ``digits`` significant digits."""
    if value is None:
        return "\u2013"
    magnitude = abs(value)
    if magnitude >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    if magnitude == 0:
        return "0"
    decimals = max(0, digits - 1 - int(f"{magnitude:e}".split("e")[1]))
    return f"{value:,.{decimals}f}"


def fmt_stat(s: Stat | None, digits: int = 3) -> str:
    """``median (min-max)``, or just the median for one repetition."""
    if s is None:
        return "\u2013"
    if s["n"] <= 1 or s["min"] == s["max"]:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}\u2013{fmt(s['max'], digits)})"


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, or None."""
    if value is None or base is None or base == 0:
        return None
    return value / base


def fmt_ratio(r: float | None) -> str:
    """A ratio such as ``4.2x`` (with the multiplication sign)."""
    return "\u2013" if r is None else f"{r:.2f}\u00d7" if r < 10 else f"{r:.1f}\u00d7"


def _marks(cell: Cell | None) -> str:
    if cell is None:
        return ""
    marks = ""
    if "loadgen-limit" in cell.flags:
        marks += " [L]"
    if "errors" in cell.flags or cell.errors:
        marks += " [E]"
    if "noisy" in cell.flags:
        marks += " [N]"
    if "unsteady" in cell.flags:
        marks += " [W]"
    return marks


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def _inflight(k: int) -> str:
    return "1 in flight" if k == 1 else f"{k} in flight (pipelined)"


@dataclass
class Target:
    """One of zcasgi's performance targets, evaluated for one backend."""

    name: str
    server: str
    value: float | None
    limit: str
    met: bool | None
    where: str
    #: How the value reads: "µs", "KiB", the multiplication sign for a ratio, "%" for a share
    #: and "+%" for a growth.
    unit: str = "µs"


#: The WebSocket scenarios: their targets and headline are left out of a run without them.
WEBSOCKET_SCENARIOS = ("echo", "latency", "rtt", "handshakes", "memory", "memory-50k", "large")


def _measured_websocket(results: Results) -> bool:
    return any(results.points(s) for s in WEBSOCKET_SCENARIOS)


def targets(results: Results) -> list[Target]:
    """Evaluate zcasgi's performance targets for both backends at the points the run
    measured (the WebSocket ones when the run measured any WebSocket scenario, the Socket.IO
    ones when it measured any Socket.IO scenario)."""
    out = _websocket_targets(results) if _measured_websocket(results) else []
    if any(results.points(s) for s in ("fanout", "sio-idle", "sio-ack")):
        out += socketio_targets(results)
    return out


def _websocket_targets(results: Results) -> list[Target]:
    """Issue 12's targets for each zcasgi WebSocket server the run measured: CPU per echoed
    message against the baseline's, its growth to 10,000 connections, the latency tail against
    the baseline's (worst repetition against worst repetition, so that an unstable tail fails),
    memory per idle connection, CPU per handshake and the large-message share of raw TCP."""
    conns = {p["conns"] for p in results.points("echo") if p["size"] == 64 and p["inflight"] == 1}
    at = 1000 if 1000 in conns else max(conns, default=0)
    mem_points = [p["conns"] for p in results.points("memory")]
    mem_at = 10000 if 10000 in mem_points else max(mem_points, default=0)
    echo = {"size": 64, "inflight": 1}
    base_cpu = _median(results, "echo", BASELINE, "cpu_us_per_msg", conns=at, **echo)
    lat = results.points("latency")
    lat_point = lat[0] if lat else {}
    large = results.points("large")
    large_point = large[0] if large else {}
    tcp = _median(results, "large", RAW_TCP, "mb_per_s", **large_point)
    measured = set(results.servers())
    out = []
    for server in ZCASGI:
        if server == "zcasgi-mio-thread" and server not in measured:
            continue
        where = f"64 B echo, {at:,} connections, 1 in flight"
        cpu = _median(results, "echo", server, "cpu_us_per_msg", conns=at, **echo)
        share = ratio(cpu, base_cpu)
        limit = TARGET_CPU_SHARE_OF_BASELINE
        out.append(
            Target(
                f"CPU per echoed message, share of {BASELINE}'s",
                server,
                share,
                f"≤ {limit:g}\u00d7",
                _at_most(limit, share),
                where,
                "\u00d7",
            )
        )
        if 10000 in conns and at != 10000:
            cpu_10k = _median(results, "echo", server, "cpu_us_per_msg", conns=10000, **echo)
            growth = None if cpu is None or cpu_10k is None else cpu_10k / cpu - 1
            limit = TARGET_CPU_GROWTH_TO_10K
            out.append(
                Target(
                    f"CPU per message, growth {at:,} \u2192 10,000 conns",
                    server,
                    growth,
                    f"≤ +{limit:.0%}",
                    _at_most(limit, growth),
                    "64 B echo, 1 in flight",
                    "+%",
                )
            )
        if lat_point:
            where = (
                f"{fmt(lat_point['rate'])} msg/s over {lat_point['conns']:,} connections, "
                "worst repetition"
            )
            for metric, name in (("p999_us", "latency p99.9"), ("max_us", "latency max")):
                mine = _worst(results, "latency", server, metric, **lat_point)
                theirs = _worst(results, "latency", BASELINE, metric, **lat_point)
                out.append(
                    Target(
                        name,
                        server,
                        mine,
                        f"≤ {BASELINE}'s {fmt(theirs) if theirs is not None else '?'} µs",
                        None if theirs is None else _at_most(theirs, mine),
                        where,
                    )
                )
        kib = _median(results, "memory", server, "kib_per_conn", conns=mem_at, workers=1)
        out.append(
            Target(
                "memory per idle connection",
                server,
                kib,
                f"≤ {TARGET_KIB_PER_CONN:g} KiB",
                _at_most(TARGET_KIB_PER_CONN, kib),
                f"{mem_at:,} connections, one process",
                "KiB",
            )
        )
        cpu_hs = _median(
            results,
            "handshakes",
            server,
            "cpu_us_per_handshake",
            concurrency=_only(results, "handshakes"),
        )
        out.append(
            Target(
                "server CPU per handshake",
                server,
                cpu_hs,
                f"≤ {TARGET_CPU_US_PER_HANDSHAKE:g} µs",
                _at_most(TARGET_CPU_US_PER_HANDSHAKE, cpu_hs),
                "connect, upgrade, close",
            )
        )
        if large_point:
            mb = _median(results, "large", server, "mb_per_s", **large_point)
            share = ratio(mb, tcp)
            limit = TARGET_LARGE_SHARE_OF_TCP
            out.append(
                Target(
                    "large-message throughput, share of raw TCP",
                    server,
                    share,
                    f"≥ {limit:.0%}",
                    _at_least(limit, share),
                    f"{_size(large_point['size'])} echo, one connection",
                    "%",
                )
            )
    return out


def _at_most(limit: float, value: float | None) -> bool | None:
    return None if value is None else value <= limit


def _at_least(limit: float, value: float | None) -> bool | None:
    return None if value is None else value >= limit


def _median(
    results: Results, scenario: str, server: str, metric: str, **point: Any
) -> float | None:
    cell = results.cell(scenario, server, **point)
    return cell.median(metric) if cell else None


def socketio_targets(results: Results) -> list[Target]:
    """Evaluate zcasgi.socketio's targets (issue 13) for both backends: broadcast CPU per
    recipient at the largest room, memory and idle CPU of idle clients, acknowledged events
    per core; the ratios against the peers measured in the same run."""
    members = max((p["members"] for p in results.points("fanout")), default=0)
    idle = results.points("sio-idle")
    ack = results.points("sio-ack")
    out = []
    for server in ZCASGI_SIO:
        cpu = _median(results, "fanout", server, "cpu_us_per_recipient", members=members)
        where = f"room broadcast, {members:,} members"
        limit = TARGET_SIO_CPU_US_PER_RECIPIENT
        out.append(
            Target(
                "broadcast CPU per recipient",
                server,
                cpu,
                f"≤ {limit:g} µs",
                _at_most(limit, cpu),
                where,
            )
        )
        for peer, times in TARGET_SIO_BROADCAST_RATIOS.items():
            peer_cpu = _median(results, "fanout", peer, "cpu_us_per_recipient", members=members)
            r = ratio(peer_cpu, cpu)
            out.append(
                Target(
                    f"broadcast CPU: {peer}'s \u00f7 this",
                    server,
                    r,
                    f"≥ {times:g}\u00d7",
                    _at_least(times, r),
                    where,
                    "\u00d7",
                )
            )
        p = idle[0] if idle else {}
        kib = _median(results, "sio-idle", server, "kib_per_client", **p)
        where = f"{p.get('clients', 0):,} idle Socket.IO clients"
        limit = TARGET_SIO_KIB_PER_CLIENT
        out.append(
            Target(
                "memory per idle Socket.IO client",
                server,
                kib,
                f"≤ {limit:g} KiB",
                _at_most(limit, kib),
                where,
                "KiB",
            )
        )
        cpu = _median(results, "sio-idle", server, "idle_cpu_pct", **p)
        base = _median(results, "sio-idle", BASELINE, "idle_cpu_pct", **p)
        r = ratio(base, cpu)
        out.append(
            Target(
                f"idle CPU with pings: {BASELINE}'s \u00f7 this",
                server,
                r,
                f"≥ {TARGET_SIO_IDLE_RATIO:g}\u00d7",
                _at_least(TARGET_SIO_IDLE_RATIO, r),
                f"{where}, a ping every {p.get('ping_interval', '?')} s",
                "\u00d7",
            )
        )
        a = ack[0] if ack else {}
        rate = _median(results, "sio-ack", server, "events_per_core_s", **a)
        base = _median(results, "sio-ack", BASELINE, "events_per_core_s", **a)
        r = ratio(rate, base)
        out.append(
            Target(
                f"acked events per core vs {BASELINE}",
                server,
                r,
                f"≥ {TARGET_SIO_ACK_RATIO:g}\u00d7",
                _at_least(TARGET_SIO_ACK_RATIO, r),
                f"{a.get('clients', 0):,} clients, one event in flight each",
                "\u00d7",
            )
        )
    return out


def _worst(results: Results, scenario: str, server: str, metric: str, **point: Any) -> float | None:
    cell = results.cell(scenario, server, **point)
    s = cell.stat(metric) if cell else None
    return s["max"] if s else None


def _only(results: Results, scenario: str) -> Any:
    points = results.points(scenario)
    return points[0].get("concurrency") if points else None


def _target_value(t: Target) -> str:
    if t.value is None:
        return "not measured"
    if t.unit == "\u00d7":
        return fmt_ratio(t.value)
    if t.unit == "%":
        return f"{t.value:.0%}"
    if t.unit == "+%":
        return f"{t.value:+.0%}"
    return f"{fmt(t.value)} {t.unit}"


#: How the suite is run (from the repository root).
PROG = "python -m benchmarks"
#: How it was run before it moved out of the zcasgi package to ``benchmarks/``.
OLD_PROG = "python -m zcasgi.bench"


def _old_location_note(command: str) -> str:
    """A note for runs made with the suite's old command, else nothing."""
    if command.startswith(OLD_PROG):
        return f"`{OLD_PROG}` (the suite's old location in the zcasgi package), today `{PROG}`"
    return ""


def markdown(results: Results, meta: dict[str, Any], plots: Sequence[str], out: Path) -> str:
    """The results page (``out/results.md``, e.g. docs/benchmarks/results.md)."""
    lines: list[str] = []
    add = lines.extend
    m = meta["mode"]
    extra = [
        f"- Mode: {m} run; repetitions: {meta['repeat']} ({meta['repeat_note']}); "
        f"total duration {meta['duration_h']}",
        f"- zcasgi: {meta['zcasgi']}",
    ]
    if note := _old_location_note(str(meta["command"])):
        extra.append(f"- The suite's command then: {note}; the options are the same")
    add(
        record.opening(
            "zcasgi benchmark results",
            "zcasgi's two backends beside the ASGI servers users would pick instead, in one run "
            "on one machine: echo throughput, latency at a fixed rate, single-connection round "
            "trips, handshakes, memory per idle connection, Socket.IO (broadcast, idle clients, "
            "acknowledged events; stock python-socketio and zcasgi.socketio) and large messages.",
            meta,
            out,
            record.GUIDE,
            extra,
        )
    )
    add(
        [
            "Cells are the **median over repetitions (min\u2013max)**. `\u00d7uvicorn` is the "
            f"ratio to `{BASELINE}` ({SERVERS[BASELINE].description}) at the same point. "
            "**CPU µs** is the server's CPU time (user + system, all its processes) per "
            "operation over the measured window: the cost figure that survives a noisy machine. "
            "Marks: **[L]** the load generator used ≥ 90 % of its core (it, not the server, "
            "may have been the limit); **[E]** errors (see *Errors, flags and missing "
            "servers*); **[N]** other processes on the machine used ≥ 0.3 of a core meanwhile "
            "(a noisy measurement); **[W]** an echo phase did not settle: some connections had not "
            "had their first replies after 20 s of warm-up, or still had replies outstanding "
            "after a 30 s drain, or the window (at most 8 s) held fewer replies than messages in "
            "flight.",
            "",
        ]
    )
    add(_targets_section(results))
    add(_headline(results))
    add(_echo_section(results))
    add(_latency_section(results))
    add(_rtt_section(results))
    add(_handshake_section(results))
    add(_memory_section(results))
    add(_fanout_section(results))
    add(_sio_idle_section(results))
    add(_sio_ack_section(results))
    add(_large_section(results))
    if plots:
        add(["## Plots", ""])
        for name in plots:
            add([f"![{name}]({name})", ""])
    add(_flags_section(results, meta))
    add(_servers_section(meta))
    return "\n".join(lines).rstrip() + "\n"


def _targets_section(results: Results) -> list[str]:
    ts = targets(results)
    rows = []
    for t in ts:
        verdict = "not measured" if t.met is None else "**met**" if t.met else "**not met**"
        rows.append([t.name, t.server, _target_value(t), t.limit, verdict, t.where])
    met = sum(1 for t in ts if t.met)
    measured = sum(1 for t in ts if t.met is not None)
    out = [
        "## Targets met / not met",
        "",
        f"The performance targets zcasgi set itself, on either backend: {met} of {measured} "
        "measured targets met.",
        "",
    ]
    out += _table(["target", "server", "measured", "target", "verdict", "where"], rows)
    return [*out, ""]


def _headline(results: Results) -> list[str]:
    servers = results.servers()
    if not servers or not _measured_websocket(results):
        return []

    def echo(server: str, conns: int, metric: str) -> Cell | None:
        return results.cell("echo", server, conns=conns, size=64, inflight=1)

    conns_seen = sorted({p["conns"] for p in results.points("echo")})
    cols = [c for c in (100, 1000) if c in conns_seen] or conns_seen[-1:]
    header = ["server"]
    for c in cols:
        header += [f"64 B echo msgs/s, {c:,} conns", "\u00d7uvicorn"]
    header += [
        f"CPU µs/msg ({cols[-1]:,} conns)" if cols else "CPU µs/msg",
        "KiB/idle conn",
        "CPU µs/handshake",
        "round trips/s (1 conn)",
    ]
    lat_points = results.points("latency")
    if lat_points:
        header += [
            f"p99.9 µs at {fmt(lat_points[0]['rate'])} msg/s",
            f"max µs at {fmt(lat_points[0]['rate'])} msg/s",
        ]
    mem_points = [p["conns"] for p in results.points("memory")]
    mem_at = 10000 if 10000 in mem_points else max(mem_points, default=0)
    hs_conc = _only(results, "handshakes")
    rows = []
    for server in [s for s in servers if s in SERVERS and not SERVERS[s].socketio_only]:
        row = [f"`{server}`"]
        for c in cols:
            cell = echo(server, c, "msgs_per_s")
            base = echo(BASELINE, c, "msgs_per_s")
            value = cell.median("msgs_per_s") if cell else None
            row += [
                fmt(value) + _marks(cell),
                fmt_ratio(ratio(value, base.median("msgs_per_s") if base else None)),
            ]
        cpu_cell = echo(server, cols[-1], "cpu") if cols else None
        mem = results.cell("memory", server, conns=mem_at, workers=1)
        hs = results.cell("handshakes", server, concurrency=hs_conc)
        rt = results.cell("rtt", server, conns=1, size=64)
        row += [
            fmt(cpu_cell.median("cpu_us_per_msg") if cpu_cell else None),
            fmt(mem.median("kib_per_conn") if mem else None) + _marks(mem),
            fmt(hs.median("cpu_us_per_handshake") if hs else None) + _marks(hs),
            fmt(rt.median("round_trips_per_s") if rt else None) + _marks(rt),
        ]
        if lat_points:
            lat = results.cell("latency", server, **lat_points[0])
            row += [
                fmt(lat.median("p999_us") if lat else None) + _marks(lat),
                fmt(lat.median("max_us") if lat else None),
            ]
        rows.append(row)
    title = f"## Headline (memory at {mem_at:,} connections)" if mem_at else "## Headline"
    return [title, "", *_table(header, rows), ""]


def _echo_section(results: Results) -> list[str]:
    points = results.points("echo")
    if not points:
        return []
    out = [
        "## 1. Echo throughput",
        "",
        "Closed loop: every connection keeps 1 (or 8, pipelined) binary messages in flight and "
        "sends a new one per echo received. Each cell: messages echoed per second; then the "
        "server's CPU µs per echoed message and (runs since 30 Nov 2026) its threads' context "
        "switches per echoed message (voluntary and involuntary, from /proc), by connection "
        "count.",
        "",
    ]
    combos = sorted({(p["size"], p["inflight"]) for p in points})
    conns = sorted({p["conns"] for p in points})
    servers = results.servers("echo")
    for size, inflight in combos:
        out += [f"### {_size(size)}, {_inflight(inflight)}", ""]
        header = [
            "server",
            *[f"{c:,} conns msgs/s" for c in conns],
            "CPU µs/msg by conns",
            "ctx switches/msg by conns",
        ]
        rows = []
        for server in servers:
            row = [f"`{server}`"]
            cpus = []
            switches = []
            for c in conns:
                cell = results.cell("echo", server, conns=c, size=size, inflight=inflight)
                base = results.cell("echo", BASELINE, conns=c, size=size, inflight=inflight)
                value = cell.stat("msgs_per_s") if cell else None
                r = ratio(
                    value["median"] if value else None,
                    base.median("msgs_per_s") if base else None,
                )
                text = fmt_stat(value) + _marks(cell)
                if server != BASELINE and r is not None:
                    text += f" · {fmt_ratio(r)}"
                row.append(text)
                cpus.append(fmt(cell.median("cpu_us_per_msg") if cell else None))
                switches.append(fmt(cell.median("ctx_per_msg") if cell else None))
            row += [" / ".join(cpus), " / ".join(switches)]
            rows.append(row)
        if all(set(row[-1]) <= {"\u2013", " ", "/"} for row in rows):
            # Context switches were added to the suite after this run: no column.
            header = header[:-1]
            rows = [row[:-1] for row in rows]
        out += [*_table(header, rows), ""]
    return out


def _latency_section(results: Results) -> list[str]:
    points = results.points("latency")
    if not points:
        return []
    p = points[0]
    out = [
        "## 2. Round-trip latency at a fixed rate",
        "",
        f"Open loop: {fmt(p['rate'])} messages/s in aggregate over {p['conns']} connections, "
        f"{p['size']} B each, sent on schedule whether or not replies came back. Latency from "
        "the write of each message to the read of its echo, µs. *sched p99* measures from the "
        "scheduled send time instead (it adds send lag and up to ~1 ms of timer granularity; "
        "it exposes a server that stalls the sender).",
        "",
    ]
    header = [
        "server",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "sched p99",
        "achieved rate",
        "CPU µs/msg",
    ]
    rows = []
    for server in results.servers("latency"):
        cell = results.cell("latency", server, **p)
        if cell is None:
            continue
        rows.append(
            [
                f"`{server}`" + _marks(cell),
                fmt_stat(cell.stat("p50_us")),
                fmt_stat(cell.stat("p90_us")),
                fmt_stat(cell.stat("p99_us")),
                fmt_stat(cell.stat("p999_us")),
                fmt(cell.median("max_us")),
                fmt(cell.median("sched_p99_us")),
                fmt(cell.median("achieved_rate")),
                fmt(cell.median("cpu_us_per_msg")),
            ]
        )
    return [*out, *_table(header, rows), ""]


def _simple_section(
    results: Results,
    scenario: str,
    title: str,
    intro: str,
    columns: Sequence[tuple[str, str, bool]],
) -> list[str]:
    """A table of one point per server: (header, metric, with ratio to baseline)."""
    points = results.points(scenario)
    if not points:
        return []
    p = points[0]
    servers = results.servers(scenario)
    cells = [c for c in (results.cell(scenario, server, **p) for server in servers) if c]
    # A figure no record of this run has (added to the suite after the run) gets no column.
    columns = [c for c in columns if any(cell.median(c[1]) is not None for cell in cells)]
    header = ["server"]
    for name, _, with_ratio in columns:
        header += [name, "\u00d7uvicorn"] if with_ratio else [name]
    rows = []
    base = results.cell(scenario, BASELINE, **p)
    for server in results.servers(scenario):
        cell = results.cell(scenario, server, **p)
        if cell is None:
            continue
        row = [f"`{server}`" + _marks(cell)]
        for _, metric, with_ratio in columns:
            row.append(fmt_stat(cell.stat(metric)))
            if with_ratio:
                r = ratio(cell.median(metric), base.median(metric) if base else None)
                row.append(fmt_ratio(r))
        rows.append(row)
    return [f"## {title}", "", intro, "", *_table(header, rows), ""]


def _rtt_section(results: Results) -> list[str]:
    return _simple_section(
        results,
        "rtt",
        "3. Single-connection round trips",
        "One connection, one 64 B message at a time (send, wait for the echo, repeat): the "
        "figure that exposes fixed per-message overhead, since nothing is batched.",
        [
            ("round trips/s", "round_trips_per_s", True),
            ("p50 µs", "p50_us", False),
            ("p99 µs", "p99_us", False),
            ("CPU µs/round trip", "cpu_us_per_msg", False),
            ("ctx switches/round trip", "ctx_per_msg", False),
        ],
    )


def _handshake_section(results: Results) -> list[str]:
    conc = _only(results, "handshakes")
    return _simple_section(
        results,
        "handshakes",
        "4. Handshakes",
        f"{conc} concurrent clients, each in a loop: TCP connect, upgrade request, `101`, close "
        "frame, wait for the server's close (or EOF), drop the socket.",
        [
            ("handshakes/s", "handshakes_per_s", True),
            ("CPU µs/handshake", "cpu_us_per_handshake", False),
            ("p50 upgrade µs", "p50_us", False),
        ],
    )


def _memory_section(results: Results) -> list[str]:
    single = sorted(p["conns"] for p in results.points("memory"))
    multi = results.points("memory-50k")
    if not single and not multi:
        return []
    header = ["server", *[f"KiB/conn at {c:,}" for c in single]]
    if multi:
        m = multi[0]
        header.append(f"KiB/conn at {m['conns']:,} ({processes(m)})")
    header += ["baseline RSS MiB", "RSS MiB at most conns", "open time s"]
    rows = []
    servers = [
        s
        for s in results.servers()
        if results.cell("memory", s, conns=single[-1] if single else 0, workers=1)
        or (multi and results.cell("memory-50k", s, **multi[0]))
    ]
    for server in servers:
        row = [f"`{server}`"]
        last: Cell | None = None
        for c in single:
            cell = results.cell("memory", server, conns=c, workers=1)
            row.append(fmt_stat(cell.stat("kib_per_conn") if cell else None) + _marks(cell))
            last = cell or last
        if multi:
            cell = results.cell("memory-50k", server, **multi[0])
            row.append(fmt_stat(cell.stat("kib_per_conn")) + _marks(cell) if cell else "not run")
        row += [
            fmt(last.median("baseline_mib") if last else None),
            fmt(last.median("rss_mib") if last else None),
            fmt(last.median("open_s") if last else None),
        ]
        rows.append(row)
    intro = (
        "Idle WebSocket connections held open (the server answers nothing but pings). Memory "
        "per connection = (server RSS with N open \u2212 RSS before) / N, over every process "
        "of the server; kernel socket buffers are not in RSS. One process for the single-process "
        "points (the open-file cap is 20,000 per process); the multi-process point starts "
        "that many separate server processes, each on its own `SO_REUSEPORT` listening "
        "socket passed with `--fd` (no server's own `--workers` supervisor; servers that "
        "take no `--fd` are not run there)."
    )
    return ["## 5. Memory per idle connection", "", intro, "", *_table(header, rows), ""]


def _fanout_section(results: Results) -> list[str]:
    points = sorted(p["members"] for p in results.points("fanout"))
    if not points:
        return []
    header = [
        "server",
        *[f"{m:,} members: ms to last" for m in points],
        *[f"CPU µs/recipient ({m:,})" for m in points],
        f"{BASELINE}'s CPU \u00f7 this ({points[-1]:,})",
        f"CPU ms/broadcast ({points[-1]:,})",
    ]
    rows = []
    for server in results.servers("fanout"):
        row = [f"`{server}`"]
        cpus = []
        for m in points:
            cell = results.cell("fanout", server, members=m)
            row.append(fmt_stat(cell.stat("p50_ms") if cell else None) + _marks(cell))
            cpus.append(fmt_stat(cell.stat("cpu_us_per_recipient") if cell else None))
        cpu = _median(results, "fanout", server, "cpu_us_per_recipient", members=points[-1])
        base = _median(results, "fanout", BASELINE, "cpu_us_per_recipient", members=points[-1])
        per_broadcast = _median(
            results, "fanout", server, "cpu_ms_per_broadcast", members=points[-1]
        )
        rows.append([*row, *cpus, fmt_ratio(ratio(base, cpu)), fmt(per_broadcast)])
    intro = (
        "python-socketio chat app (examples/chat.py; for `zcasgi-sio-*` the same app importing "
        "`zcasgi.socketio`, examples/chat_fast.py), N Engine.IO v4 websocket clients in one "
        "room; one member emits `message`, the app broadcasts it to the room. *ms to last*: "
        "from the emit to the moment the last member has read it (median of the rounds of each "
        "repetition, then median over repetitions). *CPU µs/recipient*: the server's CPU time "
        "from the first round's emit to the last round's last copy (pauses between rounds "
        "included) divided by the copies delivered; rounds are repeated until at least "
        f"{_copies_note(results)} copies were delivered per room size."
    )
    return ["## 6. Socket.IO broadcast fan-out", "", intro, "", *_table(header, rows), ""]


def _copies_note(results: Results) -> str:
    rounds = [
        (r["point"]["members"], r["metrics"].get("rounds"))
        for r in results.records
        if r["scenario"] == "fanout" and r["metrics"].get("rounds")
    ]
    least = min((m * n for m, n in rounds), default=None)
    return "a few thousand" if least is None else f"{least:,}"


def _sio_idle_section(results: Results) -> list[str]:
    points = results.points("sio-idle")
    if not points:
        return []
    p = points[0]
    intro = (
        f"{p['clients']:,} python-socketio clients (Engine.IO v4 over websocket, connected to "
        "the default namespace) held idle by the chat app. *KiB/client*: (server RSS with "
        "them connected \u2212 RSS after one small broadcast, before they connect) / clients. "
        f"*idle CPU*: the server's CPU over {_window(results)} s while the clients only answer "
        f"Engine.IO pings, one every {p['ping_interval']} s per client (every server's chat app "
        "gets the same `ZCASGI_CHAT_PING_INTERVAL`), in % of one core; *µs/ping*: that CPU "
        "per ping sent. WebSocket-level pings stay at each server's default."
    )
    return _simple_section(
        results,
        "sio-idle",
        "7. Idle Socket.IO clients",
        intro,
        [
            ("KiB/client", "kib_per_client", False),
            ("idle CPU % of a core", "idle_cpu_pct", True),
            ("CPU µs/ping", "cpu_us_per_ping", False),
            ("baseline RSS MiB", "baseline_mib", False),
            ("open time s", "open_s", False),
        ],
    )


def _window(results: Results) -> str:
    windows = [
        r["metrics"]["window_s"]
        for r in results.records
        if r["scenario"] == "sio-idle" and r["metrics"].get("window_s")
    ]
    return fmt(statistics.median(windows), 2) if windows else "\u2013"


def _sio_ack_section(results: Results) -> list[str]:
    points = results.points("sio-ack")
    if not points:
        return []
    intro = (
        f"{points[0]['clients']:,} python-socketio clients, each keeping one event with an "
        "acknowledgement in flight: it emits `join` (a room of its own, so the handler enters "
        "it and answers the member count, 1) and emits the next once `43<id>[1]` arrives. "
        "*events/s*: acknowledgements per second with the server on one core; *per core*: "
        "events per second of server CPU (what one fully busy core sustains); latency from "
        "the emit to its acknowledgement."
    )
    return _simple_section(
        results,
        "sio-ack",
        "8. Socket.IO events with acknowledgement",
        intro,
        [
            ("events/s", "events_per_s", True),
            ("events/s per core", "events_per_core_s", True),
            ("CPU µs/event", "cpu_us_per_event", False),
            ("p50 µs", "p50_us", False),
            ("p99 µs", "p99_us", False),
        ],
    )


def _large_section(results: Results) -> list[str]:
    points = results.points("large")
    if not points:
        return []
    p = points[0]
    tcp = results.cell("large", RAW_TCP, **p)
    tcp_rate = tcp.median("mb_per_s") if tcp else None
    rows = []
    for server in results.servers("large"):
        cell = results.cell("large", server, **p)
        if cell is None:
            continue
        r = ratio(cell.median("mb_per_s"), tcp_rate)
        rows.append(
            [
                f"`{server}`" + _marks(cell),
                fmt_stat(cell.stat("mb_per_s")),
                "\u2013" if r is None else f"{r:.0%}",
                fmt(cell.median("cpu_us_per_msg")),
            ]
        )
    intro = (
        f"One connection echoing {_size(p['size'])} messages one at a time; MB/s of payload "
        "echoed (one direction). *of raw TCP*: the same bytes through a plain TCP echo server "
        "(`zcasgi-loadgen tcp-echo-server`, same core, same client)."
    )
    header = ["server", "MB/s", "of raw TCP", "CPU µs/message"]
    return ["## 9. Large messages", "", intro, "", *_table(header, rows), ""]


def _label(point: dict[str, Any]) -> str:
    if "workers" in point:
        return f"({point['conns']:,} connections, {processes(point)})"
    return ", ".join(f"{k}={v}" for k, v in sorted(point.items()))


#: The figure of each scenario by which a server counts as measured there.
FIGURE = {
    "echo": "msgs_per_s",
    "latency": "p99_us",
    "rtt": "round_trips_per_s",
    "handshakes": "cpu_us_per_handshake",
    "memory": "kib_per_conn",
    "memory-50k": "kib_per_conn",
    "fanout": "p50_ms",
    "sio-idle": "kib_per_client",
    "sio-ack": "events_per_s",
    "large": "mb_per_s",
}


def absent(
    results: Results, meta: dict[str, Any], scenario: str, point: dict[str, Any]
) -> dict[str, str]:
    """The run's servers without a figure at ``point`` of ``scenario``, each with the reason
    the run recorded (skipped, the first error) or, for one it did not run there, the suite's."""
    out = {
        name: f"skipped: {note}"
        for name, note in meta.get("skipped", {}).items()
        if name not in SERVERS or scenarios.serves(scenario, SERVERS[name])
    }
    for server in meta.get("servers", []):
        if server in SERVERS and not scenarios.serves(scenario, SERVERS[server]):
            continue
        cell = results.cell(scenario, server, **point)
        if cell is not None and cell.median(FIGURE[scenario]) is not None:
            continue
        if cell is None:
            spec = SERVERS.get(server)
            out[server] = (
                scenarios.excluded(scenario, spec) if spec else None
            ) or "not measured in this run"
        elif cell.errors:
            errors = cell.median("errors")
            count = f" ({errors:,.0f} errors)" if errors else ""
            out[server] = f"failed{count}: {cell.errors[0][:120]}"
        else:
            out[server] = "no figure recorded"
    return out


def processes(point: dict[str, Any]) -> str:
    """How many server processes a memory point ran, in words: a multi-process point starts
    separate processes on ``SO_REUSEPORT`` sockets (its key is ``workers`` in the records)."""
    n = int(point.get("workers", 1))
    return "1 process" if n == 1 else f"{n} separate processes"


def _flags_section(results: Results, meta: dict[str, Any]) -> list[str]:
    out = ["## Errors, flags and missing servers", ""]
    for name, note in sorted(meta.get("skipped", {}).items()):
        out.append(f"- `{name}` skipped: {note}")
    for note in meta.get("notes", []):
        out.append(f"- {note}")
    skipped = meta.get("skipped", {})
    for scenario in FIGURE:
        for p in results.points(scenario):
            by_reason: dict[str, list[str]] = {}
            for server, why in absent(results, meta, scenario, p).items():
                if server not in skipped and results.cell(scenario, server, **p) is None:
                    by_reason.setdefault(why, []).append(f"`{server}`")
            for why, servers in by_reason.items():
                out.append(f"- {', '.join(servers)} in {scenario} {_label(p)}: {why}")
    limited = []
    noisy = []
    for (scenario, key, server), cell in results.cells.items():
        label = f"{scenario} {_label(dict(key))} `{server}`"
        if "loadgen-limit" in cell.flags:
            limited.append(label)
        if "noisy" in cell.flags:
            noisy.append(label)
        for error in cell.errors:
            out.append(f"- error in {label}: {error[:300]}")
    if limited:
        out.append(
            "- The load generator used ≥ 90 % of its core (figures are a lower bound for the "
            "server): " + "; ".join(limited)
        )
    else:
        out.append("- The load generator never used ≥ 90 % of its core.")
    if noisy:
        out.append(
            f"- Other processes used ≥ 0.3 of a core during {len(noisy)} of "
            f"{len(results.cells)} cells (marked [N])."
        )
    return [*out, ""]


def _servers_section(meta: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items()))
    servers = [f"- `{s}`: {SERVERS[s].description}" for s in meta["servers"] if s in SERVERS]
    return [
        "## Servers and versions",
        "",
        *servers,
        "",
        f"Versions: {versions}.",
        "",
    ]
