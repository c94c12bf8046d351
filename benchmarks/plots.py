"""PNG plots of the results (matplotlib, headless).

Bar charts have linear axes from 0; a server whose bars dwarf every other's is cut at the top,
hatched, and labelled with its value. Every reference line is in the legend, and every server of
the run missing from a panel is named under it with the reason the run recorded.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .report import (
    TARGET_CPU_US_PER_HANDSHAKE,
    TARGET_KIB_PER_CONN,
    TARGET_SIO_ACK_RATIO,
    TARGET_SIO_CPU_US_PER_RECIPIENT,
    TARGET_SIO_IDLE_RATIO,
    TARGET_SIO_KIB_PER_CLIENT,
    Results,
    absent,
    fmt,
    processes,
)
from .scenarios import RAW_TCP
from .servers import BASELINE

#: One colour and marker per server, the same in every plot.
_STYLES = {
    "zcasgi-mio": ("#d62728", "o"),
    "zcasgi-mio-thread": ("#e7969c", "d"),
    "zcasgi-tokio": ("#ff7f0e", "s"),
    "zcasgi-sio-mio": ("#7b0c0c", "h"),
    "zcasgi-sio-tokio": ("#b35806", "p"),
    "uvicorn": ("#1f77b4", "^"),
    "uvicorn-wsproto": ("#17becf", "v"),
    "uvicorn-websockets": ("#7f7f7f", "<"),
    "hypercorn": ("#9467bd", "D"),
    "granian": ("#2ca02c", "P"),
    "gunicorn": ("#8c564b", "X"),
    "socketify": ("#e377c2", "*"),
}


def _style(server: str) -> dict[str, Any]:
    color, marker = _STYLES.get(server, ("#e377c2", "*"))
    zcasgi = server.startswith("zcasgi")
    return {
        "color": color,
        "marker": marker,
        "linewidth": 2.4 if zcasgi else 1.4,
        "markersize": 6 if zcasgi else 5,
        "label": server,
    }


def _short(value: float) -> str:
    """1234 -> 1.2k, 56000 -> 56k, 0.5 -> 0.5."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return (
                f"{scaled:.0f}{suffix}"
                if scaled >= 10
                else f"{scaled:.1f}{suffix}".replace(".0" + suffix, suffix)
            )
    return f"{value:.3g}"


def _plain_log_axis(axis: Any) -> None:
    """Log axis labelled 1, 2, 5, 10, 20, 50, ... in plain numbers (1k, 20k) instead of
    powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
    axis.set_minor_formatter(NullFormatter())


#: Draws one plot from the results and the run's meta into a file; False when nothing to draw.
DrawFn = Callable[[Results, dict[str, Any], Path], bool]
#: A server's bars are cut when its largest value is more than this many times any other's.
CUT_RATIO = 3.0


def write_all(results: Results, meta: dict[str, Any], out_dir: Path) -> list[str]:
    """Write every plot the results allow into ``out_dir``; return the file names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return []
    written = []
    draws: list[tuple[str, DrawFn]] = [
        ("echo_throughput.png", _echo_throughput),
        ("echo_cpu.png", _echo_cpu),
        ("latency_cdf.png", _latency_cdf),
        ("memory.png", _memory),
        ("handshakes_fanout.png", _handshakes_fanout),
        ("socketio.png", _socketio),
    ]
    for name, draw in draws:
        if draw(results, meta, out_dir / name):
            written.append(name)
    return written


def _missing(
    results: Results, meta: dict[str, Any], scenario: str, points: list[dict[str, Any]]
) -> dict[str, str]:
    """The run's servers with no figure at any of ``points``, each with its reason."""
    reasons = [absent(results, meta, scenario, p) for p in points]
    if not reasons:
        return {}
    return {s: why for s, why in reasons[0].items() if all(s in r for r in reasons[1:])}


def _xlabel(ax: Any, label: str, missing: dict[str, dict[str, str]]) -> None:
    """The x label, then the servers missing from the panel, one line per group of the panel
    (``missing``: group label, "" for the whole panel, to server to reason) and reason."""
    width = max(40, int(ax.get_position().width * ax.figure.get_figwidth() * 15))
    lines = [label] if label else []
    for group, servers in missing.items():
        by_reason: dict[str, list[str]] = {}
        for server, why in servers.items():
            by_reason.setdefault(why, []).append(server)
        where = f" at {group}" if group else ""
        for why, names in by_reason.items():
            text = f"not shown{where}: {', '.join(names)} \u2014 {why}"
            lines.append(textwrap.fill(text, width))
    noted = any(missing.values())
    ax.set_xlabel("\n".join(lines), fontsize=9 if noted else None)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _echo_grid(
    results: Results,
    meta: dict[str, Any],
    path: Path,
    metric: str,
    ylabel: str,
    title: str,
) -> bool:
    import matplotlib.pyplot as plt

    points = results.points("echo")
    combos = sorted({(p["size"], p["inflight"]) for p in points})
    if not combos:
        return False
    cols = 2 if len(combos) > 1 else 1
    rows = (len(combos) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.2 * rows), squeeze=False)
    for ax, (size, inflight) in zip(axes.flat, combos):
        panel = [p for p in points if (p["size"], p["inflight"]) == (size, inflight)]
        for server in results.servers("echo"):
            xs, ys, lo, hi = [], [], [], []
            for conns in sorted({p["conns"] for p in points}):
                cell = results.cell("echo", server, conns=conns, size=size, inflight=inflight)
                s = cell.stat(metric) if cell else None
                if s is None:
                    continue
                xs.append(conns)
                ys.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, **_style(server))
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_axis(ax.xaxis)
        _plain_log_axis(ax.yaxis)
        _xlabel(ax, "connections (log scale)", {"": _missing(results, meta, "echo", panel)})
        ax.set_ylabel(f"{ylabel} (log scale)")
        depth = "1 in flight" if inflight == 1 else f"{inflight} in flight"
        ax.set_title(f"{size} B messages, {depth}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(combos) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    _save(fig, path)
    return True


def _echo_throughput(results: Results, meta: dict[str, Any], path: Path) -> bool:
    return _echo_grid(
        results,
        meta,
        path,
        "msgs_per_s",
        "messages echoed per second",
        "Echo throughput vs connections (median, bars: min\u2013max) \u2014 higher is better",
    )


def _echo_cpu(results: Results, meta: dict[str, Any], path: Path) -> bool:
    return _echo_grid(
        results,
        meta,
        path,
        "cpu_us_per_msg",
        "server CPU µs per echoed message",
        "Server CPU per echoed message vs connections \u2014 lower is better",
    )


def _latency_cdf(results: Results, meta: dict[str, Any], path: Path) -> bool:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter

    points = results.points("latency")
    if not points:
        return False
    p = points[0]
    fig, ax = plt.subplots(figsize=(9, 5.2))
    drawn = False
    for server in results.servers("latency"):
        cell = results.cell("latency", server, **p)
        if cell is None:
            continue
        recs = [r for r in cell.records if r.get("cdf")]
        if not recs:
            continue
        # The repetition whose p99 is the median one.
        p99s = sorted(recs, key=lambda r: float(r["metrics"]["p99_us"]))
        rec = p99s[len(p99s) // 2]
        xs = [1.0 / max(1.0 - float(q["q"]), 1e-5) for q in rec["cdf"]]
        ys = [float(q["us"]) for q in rec["cdf"]]
        style = _style(server)
        style.pop("marker")
        ax.plot(xs, ys, **style)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ticks = [1, 2, 10, 100, 1000, 10000, 100000]
    labels = {1: "0", 2: "50", 10: "90", 100: "99", 1000: "99.9", 10000: "99.99", 100000: "max"}
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: labels.get(round(v), "")))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_xlim(1, 100000)
    _xlabel(ax, "percentile (nines scale)", {"": _missing(results, meta, "latency", [p])})
    ax.set_ylabel("round-trip latency, µs (log scale)")
    ax.set_title(
        f"Latency by percentile at {p['rate']:,.0f} msg/s over {p['conns']} connections "
        f"({p['size']} B) \u2014 lower is better"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", ncol=2, frameon=False)
    fig.tight_layout()
    _save(fig, path)
    return True


def _bars(
    ax: Any,
    groups: list[str],
    series: dict[str, list[float | None]],
    reference: tuple[float, str] | list[tuple[float, str]] | None = None,
) -> None:
    """Grouped bars on a linear axis from 0, one colour per server, each labelled with its
    value, and optional labelled reference lines ``(value, label)`` (one or a list). A server
    whose largest value is more than :data:`CUT_RATIO` times every other server's is cut at the
    top of the axis (hatched, labelled with its value and "cut")."""
    references = [reference] if isinstance(reference, tuple) else list(reference or [])
    peaks = sorted(
        ((max(v for v in vs if v is not None), s) for s, vs in series.items()), reverse=True
    )
    top = peaks[0][0] * 1.15 if peaks else 1.0
    cut: float | None = None
    if len(peaks) > 1 and peaks[0][0] > CUT_RATIO * peaks[1][0]:
        cut = peaks[1][0] * 1.3
        top = peaks[1][0] * 1.5
    for line, _ in references:
        top = max(top, line * 1.15)
    # All zero (an idle CPU below one clock tick): an axis of 1 rather than a flat one.
    ax.set_ylim(bottom=0, top=top if top > 0 else 1.0)
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (server, values) in enumerate(series.items()):
        style = _style(server)
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        heights = [min(v, cut) if v is not None and cut else (v or 0.0) for v in values]
        bars = ax.bar(xs, heights, width=width, color=style["color"], label=server)
        for bar, value in zip(bars, values):
            if value is None:
                continue
            text = fmt(value)
            if cut is not None and value > cut:
                bar.set_hatch("//")
                bar.set_edgecolor("white")
                text = f"{text}\n(cut)"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    for (line, label), linestyle in zip(references, ["--", ":", "-."]):
        ax.axhline(line, color="black", linestyle=linestyle, linewidth=1, label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.grid(True, axis="y", alpha=0.3)


def _memory(results: Results, meta: dict[str, Any], path: Path) -> bool:
    import matplotlib.pyplot as plt

    groups: list[tuple[str, str, dict[str, Any]]] = []
    for p in sorted(results.points("memory"), key=lambda p: p["conns"]):
        groups.append((f"{p['conns']:,} connections\n{processes(p)}", "memory", p))
    for p in results.points("memory-50k"):
        groups.append((f"{p['conns']:,} connections\n{processes(p)}", "memory-50k", p))
    if not groups:
        return False
    series: dict[str, list[float | None]] = {}
    for server in results.servers():
        if server == RAW_TCP:
            continue
        values: list[float | None] = []
        for _, scenario, p in groups:
            cell = results.cell(scenario, server, **p)
            values.append(cell.median("kib_per_conn") if cell else None)
        if any(v is not None for v in values):
            series[server] = values
    fig, ax = plt.subplots(figsize=(10.5, 5.2))
    _bars(
        ax,
        [g[0] for g in groups],
        series,
        (TARGET_KIB_PER_CONN, f"zcasgi's target: {TARGET_KIB_PER_CONN:g} KiB"),
    )
    missing = {
        label.replace("\n", ", "): absent(results, meta, scenario, p)
        for label, scenario, p in groups
    }
    _xlabel(ax, "", missing)
    ax.set_ylabel("KiB of server RSS per idle connection")
    ax.set_title("Memory per idle WebSocket connection \u2014 lower is better")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return True


def _figure_legend(fig: Any, axes: Any, columns: int, leave_out: str | None = None) -> None:
    """One legend under the figure with every labelled artist of its panels, once each
    (leaving out the labels that start with ``leave_out``, which the panels show)."""
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if leave_out is None or not label.startswith(leave_out):
                handles.setdefault(label, handle)
    fig.legend(
        list(handles.values()),
        list(handles.keys()),
        loc="lower center",
        ncol=min(len(handles), columns),
        frameon=False,
    )


def _handshakes_fanout(results: Results, meta: dict[str, Any], path: Path) -> bool:
    import matplotlib.pyplot as plt

    hs_points = results.points("handshakes")
    fan_points = sorted(results.points("fanout"), key=lambda p: p["members"])
    if not hs_points and not fan_points:
        return False
    servers = [s for s in results.servers() if s != RAW_TCP]
    panels = len(hs_points[:1]) + len(fan_points)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.8), squeeze=False)
    flat = list(axes.flat)
    if hs_points:
        ax = flat.pop(0)
        series: dict[str, list[float | None]] = {}
        for server in servers:
            cell = results.cell("handshakes", server, **hs_points[0])
            value = cell.median("cpu_us_per_handshake") if cell else None
            if value is not None:
                series[server] = [value]
        target = TARGET_CPU_US_PER_HANDSHAKE
        _bars(ax, [""], series, (target, f"zcasgi's target: {target:g} µs"))
        ax.set_xticks([])
        _xlabel(ax, "", {"": _missing(results, meta, "handshakes", hs_points[:1])})
        ax.set_ylabel("server CPU µs per handshake")
        ax.set_title("Handshake cost\nlower is better")
    for ax, p in zip(flat, fan_points):
        series = {}
        for server in servers:
            cell = results.cell("fanout", server, **p)
            value = cell.median("p50_ms") if cell else None
            if value is not None:
                series[server] = [value]
        _bars(ax, [""], series)
        ax.set_xticks([])
        _xlabel(ax, "", {"": _missing(results, meta, "fanout", [p])})
        ax.set_ylabel("ms until the last member has it")
        ax.set_title(f"Socket.IO broadcast to {p['members']:,} members\nlower is better")
    _figure_legend(fig, axes, 5)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    _save(fig, path)
    return True


#: The Socket.IO panels: scenario, metric, y label, title, and the reference lines drawn
#: from the baseline's value (or None) as (label, function of the baseline value or None).
_SIO_PANELS: list[tuple[str, str, str, str]] = [
    ("fanout", "p50_ms", "ms until the last member has it", "Room broadcast: time to last member"),
    ("fanout", "cpu_us_per_recipient", "server CPU µs per recipient", "Room broadcast: CPU cost"),
    ("sio-idle", "kib_per_client", "KiB of server RSS per client", "Memory per idle client"),
    ("sio-idle", "idle_cpu_pct", "server CPU, % of one core", "CPU while idle, pings on"),
    ("sio-ack", "events_per_core_s", "events per second of server CPU", "Acked events per core"),
    ("sio-ack", "events_per_s", "events per second (server on one core)", "Acked events/s"),
]
_HIGHER_BETTER = {"events_per_core_s", "events_per_s"}


def _sio_groups(results: Results, scenario: str) -> list[tuple[str, dict[str, Any]]]:
    if scenario == "fanout":
        points = sorted(results.points("fanout"), key=lambda p: p["members"])
        return [(f"{p['members']:,} members", p) for p in points]
    if scenario == "sio-idle":
        return [
            (f"{p['clients']:,} clients, ping every {p['ping_interval']} s", p)
            for p in results.points("sio-idle")
        ]
    return [(f"{p['clients']:,} clients", p) for p in results.points(scenario)]


def _sio_references(results: Results, metric: str, point: dict[str, Any]) -> list[Any]:
    """The target lines of a Socket.IO panel (the relative ones drawn from uvicorn's value)."""
    cell = results.cell("sio-idle" if metric == "idle_cpu_pct" else "sio-ack", BASELINE, **point)
    base = cell.median(metric) if cell else None
    if metric == "cpu_us_per_recipient":
        t = TARGET_SIO_CPU_US_PER_RECIPIENT
        return [(t, f"zcasgi.socketio target: {t:g} µs")]
    if metric == "kib_per_client":
        t = TARGET_SIO_KIB_PER_CLIENT
        return [(t, f"zcasgi.socketio target: {t:g} KiB")]
    if metric == "idle_cpu_pct" and base is not None:
        label = f"zcasgi.socketio target: 1/{TARGET_SIO_IDLE_RATIO:g} of {BASELINE}'s"
        return [(base / TARGET_SIO_IDLE_RATIO, label)]
    if metric == "events_per_core_s" and base is not None:
        label = f"zcasgi.socketio target: {TARGET_SIO_ACK_RATIO:g}\u00d7 {BASELINE}'s"
        return [(base * TARGET_SIO_ACK_RATIO, label)]
    return []


def _socketio(results: Results, meta: dict[str, Any], path: Path) -> bool:
    """The Socket.IO scenarios: the stock python-socketio chat app on every server beside the
    same app on zcasgi.socketio, one panel per figure, zcasgi.socketio's targets as lines."""
    import matplotlib.pyplot as plt

    panels = [
        (scenario, metric, ylabel, title, groups)
        for scenario, metric, ylabel, title in _SIO_PANELS
        if (groups := _sio_groups(results, scenario))
    ]
    panels = [
        panel
        for panel in panels
        if any(
            cell.median(panel[1]) is not None
            for _, p in panel[4]
            for server in results.servers(panel[0])
            if (cell := results.cell(panel[0], server, **p))
        )
    ]
    if not panels:
        return False
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.8 * rows), squeeze=False)
    for ax, (scenario, metric, ylabel, title, groups) in zip(axes.flat, panels):
        series: dict[str, list[float | None]] = {}
        for server in results.servers(scenario):
            values = []
            for _, p in groups:
                cell = results.cell(scenario, server, **p)
                values.append(cell.median(metric) if cell else None)
            if any(v is not None for v in values):
                series[server] = values
        refs = _sio_references(results, metric, groups[0][1])
        _bars(ax, [g[0] for g in groups], series, refs)
        missing = {label: absent(results, meta, scenario, p) for label, p in groups}
        if len(groups) == 1:
            ax.set_xticks([])
            missing = {"": next(iter(missing.values()))}
            ax.set_title(f"{title}\n{groups[0][0]}", fontsize=11)
        else:
            ax.set_title(title, fontsize=11)
        _xlabel(ax, "", missing)
        ax.set_ylabel(ylabel)
        better = "higher is better" if metric in _HIGHER_BETTER else "lower is better"
        ax.set_title(f"{ax.get_title()} \u2014 {better}", fontsize=11)
        if refs:
            ax.legend(loc="upper right", fontsize=8, frameon=False, handles=ax.get_lines())
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    _figure_legend(fig, axes, 6, leave_out="zcasgi.socketio target")
    fig.suptitle(
        "Socket.IO chat app: stock python-socketio on each server, and the same app on "
        "zcasgi.socketio (zcasgi-sio-*)",
        fontsize=13,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    _save(fig, path)
    return True


def soak(records: list[dict[str, Any]], path: Path) -> bool:
    """The soak run (``benchmarks/soak``): RSS, open descriptors and running application calls
    over time, one line per backend, its baseline dashed and the clients' departure marked."""
    plt, records = _pyplot_and_done(records)
    if plt is None:
        return False
    panels = [
        ("rss_kib", "server RSS, MiB", 1 / 1024),
        ("fds", "open file descriptors", 1.0),
        ("tasks", "running application calls", 1.0),
    ]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, 8.5), sharex=True, height_ratios=[3, 2, 1.4]
    )
    for record in records:
        style = _style(f"zcasgi-{record['backend']}")
        style.pop("marker")
        style["linewidth"] = 1.6
        samples = record["samples"]
        xs = [p["t"] / 60 for p in samples]
        end = record["marks"]["last_start"]["t"] / 60
        for ax, (key, _, scale) in zip(axes, panels):
            ax.plot(xs, [p[key] * scale for p in samples], **style)
            if key != "tasks":
                base = record["marks"]["baseline"][key] * scale
                ax.axhline(base, color=style["color"], linestyle="--", linewidth=0.9)
            ax.axvline(end, color=style["color"], linestyle=":", linewidth=1.0)
    for ax, (_, label, _) in zip(axes, panels):
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    from matplotlib.lines import Line2D

    axes[-1].set_xlabel("minutes since the server started")
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.3", linestyle="--", linewidth=0.9),
        Line2D([], [], color="0.3", linestyle=":", linewidth=1.0),
    ]
    labels += ["baseline at rest (backend's colour)", "the last client starts"]
    axes[0].legend(handles, labels, loc="lower center", ncol=2, frameon=False, fontsize=9)
    fig.suptitle(
        "Soak: server memory and descriptors under churn, then back at the baseline",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _save(fig, path)
    return True


def _pyplot_and_done(records: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """pyplot (Agg) and the records without an error; ``(None, [])`` when matplotlib is
    missing or there is nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, []
    done = [r for r in records if "error" not in r]
    return (plt, done) if done else (None, [])


def scale(records: list[dict[str, Any]], path: Path) -> bool:
    """The scale run (``benchmarks/scale``): memory per idle connection and idle CPU with
    keepalive pings, one bar per backend and kind of client, labelled with the counts."""
    plt, done = _pyplot_and_done(records)
    if plt is None:
        return False
    kinds = {"ws": "WebSockets", "socketio": "Socket.IO clients"}
    labels = [
        f"{r['backend']}, {r['workers']} workers\n{r['open']:,}\n{kinds[r['kind']]}" for r in done
    ]
    colors = [_style(f"zcasgi-{r['backend']}")["color"] for r in done]
    panels = [
        ("kib_per_conn", "KiB per idle connection", "Memory per connection — lower is better", 1.0),
        (
            "idle_cpu_share",
            "% of one core",
            "CPU while idle, keepalive pings on — lower is better",
            100.0,
        ),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 4.8))
    for ax, (key, ylabel, title, scale) in zip(axes, panels):
        values = [r[key] * scale for r in done]
        bars = ax.bar(range(len(done)), values, color=colors)
        ax.bar_label(bars, labels=[_short(v) for v in values], padding=2)
        ax.set_xticks(range(len(done)), labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.set_ylim(bottom=0, top=max(values) * 1.15 if max(values) > 0 else 1)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Idle connections held over worker processes (linear axes)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, path)
    return True


def tls(records: list[dict[str, Any]], path: Path) -> bool:
    """The TLS run (``benchmarks/tls``): handshakes per second and 1 MiB echo throughput, one
    pair of bars (wss, ws) per server."""
    plt, done = _pyplot_and_done(records)
    if plt is None:
        return False
    from matplotlib.patches import Patch

    servers = list(dict.fromkeys(r["server"] for r in done))
    by = {(r["server"], r["transport"]): r for r in done}
    panels = [
        (
            "handshakes_per_s",
            "handshakes per second",
            "Connect + handshake + close — higher is better",
        ),
        ("large_mb_per_s", "MB/s", "1 MiB message echo, one connection — higher is better"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 4.8))
    width = 0.38
    for ax, (key, ylabel, title) in zip(axes, panels):
        top = 0.0
        for offset, transport, alpha in ((-width / 2, "wss", 1.0), (width / 2, "ws", 0.45)):
            xs, values, colors = [], [], []
            for i, server in enumerate(servers):
                record = by.get((server, transport))
                if record is None:
                    continue
                xs.append(i + offset)
                values.append(record[key])
                colors.append(_style(server)["color"])
            bars = ax.bar(xs, values, width, color=colors, alpha=alpha)
            ax.bar_label(bars, labels=[_short(v) for v in values], padding=2, fontsize=8)
            top = max([top, *values])
        ax.set_xticks(range(len(servers)), servers)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.set_ylim(bottom=0, top=top * 1.15 if top > 0 else 1)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(
            handles=[
                Patch(color="0.35", label="TLS (wss)"),
                Patch(color="0.35", alpha=0.45, label="plain (ws), for reference"),
            ],
            fontsize=8,
        )
    fig.suptitle("TLS: zcasgi beside uvicorn (linear axes)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save(fig, path)
    return True
