"""``python -m benchmarks``: prepare, run every server x scenario x repetition, report."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import REPO_ROOT, ServerError, cpu_pinning, server_env

from . import env, plots, record, report, scenarios
from .generator import Loadgen, LoadgenError
from .profiles import FULL, QUICK, SCENARIOS, SOCKETIO_SCENARIOS, Profile
from .report import PROG
from .scenarios import RAW_TCP, Context, Record
from .servers import FULL_SERVERS, QUICK_SERVERS, SERVERS, SOCKETIO_VARIANTS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Benchmark zcasgi (backend=mio and backend=tokio) against the ASGI servers users "
            "would pick instead, on this machine, and write tables and plots."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: zcasgi (both backends, stock and zcasgi.socketio app) and uvicorn, "
        "short windows, 1 repetition (under 4 minutes)",
    )
    parser.add_argument(
        "--servers",
        help=f"comma-separated servers (default: full {','.join(FULL_SERVERS)}; "
        f"quick {','.join(QUICK_SERVERS)}); known: {','.join(SERVERS)}",
    )
    parser.add_argument(
        "--scenarios",
        help=f"comma-separated scenarios (default: all); known: {','.join(SCENARIOS)}",
    )
    parser.add_argument("--repeat", type=int, help="repetitions of each point (default 5; quick 1)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory (default docs/benchmarks; quick: benchmarks/results/quick)",
    )
    parser.add_argument(
        "--peers-venv",
        type=Path,
        help="virtualenv for the peer servers (default benchmarks/.venv-peers)",
    )
    parser.add_argument("--loadgen", type=Path, help="use this zcasgi-loadgen binary (no build)")
    parser.add_argument(
        "--zcasgi",
        choices=["current", "release"],
        help="zcasgi to measure: 'current' = as installed for this Python (make dev), "
        "'release' = built with the release profile into the peer venv "
        "(default: full release, quick current)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    record.add_options(parser)
    return parser


def _names(value: str | None, default: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    if not value:
        return list(default)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _human(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


class Progress:
    """One line per step: counter, elapsed, ETA (estimates scaled by how the run is going)."""

    def __init__(self, estimates: list[float]) -> None:
        """Track steps with these estimated durations."""
        self.estimates = estimates
        self.done = 0
        self.spent_estimate = 0.0
        self.start = time.monotonic()

    def step_done(self, label: str, took: float, summary: str) -> None:
        """Print the line for the step that just finished."""
        self.spent_estimate += self.estimates[self.done]
        self.done += 1
        elapsed = time.monotonic() - self.start
        left = sum(self.estimates[self.done :])
        pace = elapsed / self.spent_estimate if self.spent_estimate > 0 else 1.0
        total = len(self.estimates)
        print(
            f"[{self.done:>3}/{total}] {_clock(elapsed)} elapsed, ETA {_clock(left * pace)} | "
            f"{label} ({took:.1f} s) {summary}",
            flush=True,
        )


def _summary(records: list[Record]) -> str:
    """A few figures of a finished step for its progress line."""
    parts: list[str] = []
    for rec in records:
        before = len(parts)
        m = rec["metrics"]
        pt = rec["point"]
        if rec.get("error") and not m:
            parts.append(f"ERROR {str(rec['error'])[:120]}")
        elif rec["scenario"] == "echo" and pt.get("size") == 64 and pt.get("inflight") == 1:
            parts.append(
                f"{pt['conns']}c {m['msgs_per_s']:,.0f}/s {m.get('cpu_us_per_msg') or 0:.1f}µs"
            )
        elif rec["scenario"] == "latency":
            parts.append(f"p50 {m['p50_us']:.0f}µs p99 {m['p99_us']:.0f}µs")
        elif rec["scenario"] == "rtt":
            parts.append(f"{m['round_trips_per_s']:,.0f} rt/s")
        elif rec["scenario"] == "handshakes":
            parts.append(
                f"{m['handshakes_per_s']:,.0f}/s {m.get('cpu_us_per_handshake') or 0:.0f}µs"
            )
        elif rec["scenario"].startswith("memory") and m.get("kib_per_conn") is not None:
            parts.append(f"{pt['conns']}c {m['kib_per_conn']:.1f} KiB/conn")
        elif rec["scenario"] == "fanout":
            parts.append(
                f"{pt['members']}m p50 {m.get('p50_ms') or float('nan'):.1f} ms "
                f"{m.get('cpu_us_per_recipient') or float('nan'):.1f}µs/recipient"
            )
        elif rec["scenario"] == "sio-idle" and m.get("kib_per_client") is not None:
            parts.append(
                f"{pt['clients']}c {m['kib_per_client']:.1f} KiB/client "
                f"idle {m.get('idle_cpu_pct') or 0:.1f}% of a core"
            )
        elif rec["scenario"] == "sio-ack":
            parts.append(
                f"{m['events_per_s']:,.0f} events/s {m.get('cpu_us_per_event') or 0:.0f}µs/event"
            )
        elif rec["scenario"] == "large":
            parts.append(f"{m['mb_per_s']:,.0f} MB/s")
        if rec["flags"] and len(parts) > before:
            parts[-1] += f" [{','.join(rec['flags'])}]"
    return " | ".join(parts)


def _plan(
    profile: Profile, servers: list[str], chosen: list[str], repeat: int
) -> list[tuple[int, str, str]]:
    """Steps (rep, scenario, server): repetitions outermost, so that slow drifts of the machine
    spread over every server instead of favouring one."""
    steps: list[tuple[int, str, str]] = []
    for rep in range(1, repeat + 1):
        for scenario in chosen:
            if rep > profile.max_repeat.get(scenario, repeat):
                continue
            if scenario == "memory-50k" and not profile.memory_multi_conns:
                continue
            names = [
                s
                for s in servers
                if scenarios.serves(scenario, SERVERS[s])
                and not scenarios.excluded(scenario, SERVERS[s])
            ]
            if scenario == "large":
                names = [RAW_TCP, *names]
            steps.extend((rep, scenario, name) for name in names)
    return steps


def _write(out_dir: Path, results: report.Results, meta: dict[str, Any], plot: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = plots.write_all(results, meta, out_dir) if plot else []
    record.write(
        out_dir,
        {"meta": meta, "summary": results.summary(), "records": results.records},
        report.markdown(results, meta, written, out_dir),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; returns the exit status."""
    args = _parser().parse_args(argv)
    started = time.monotonic()
    started_at = record.Start.now()
    profile = QUICK if args.quick else FULL
    repo = REPO_ROOT
    servers = _names(
        args.servers, QUICK_SERVERS if args.quick else FULL_SERVERS, list(SERVERS), "servers"
    )
    chosen = _names(args.scenarios, profile.scenarios, SCENARIOS, "scenarios")
    repeat = args.repeat or (1 if args.quick else 5)
    out_dir: Path = args.out or (
        repo / "benchmarks" / "results" / "quick" if args.quick else repo / "docs" / "benchmarks"
    )
    state = record.begin(
        out_dir,
        args,
        lambda data: _write(
            out_dir, report.Results(data["records"]), data["meta"], not args.no_plots
        ),
    )
    if isinstance(state, int):
        return state
    zcasgi_mode = args.zcasgi or ("current" if args.quick else "release")
    peers_dir: Path = args.peers_venv or repo / "benchmarks" / ".venv-peers"
    skipped: dict[str, str] = {}
    notes: list[str] = []

    # Setup: peers, load generator, zcasgi build.
    try:
        groups = sorted({SERVERS[s].group for s in servers} - {"zcasgi"})
        peers = env.prepare_peers(peers_dir, groups, env.default_log)
        for name in list(servers):
            group = SERVERS[name].group
            if group != "zcasgi" and group not in peers.ok:
                skipped[name] = peers.notes.get(group, "its packages did not install")
                servers.remove(name)
        if "base" not in peers.ok:
            notes.append(f"peer virtualenv base packages failed: {peers.notes.get('base')}")
        binary = args.loadgen or env.build_loadgen(repo, env.default_log)
        if zcasgi_mode == "release" and any(SERVERS[s].group == "zcasgi" for s in servers):
            env.install_release_zcasgi(repo, peers, env.default_log)
            zcasgi_python = str(peers.python)
            zcasgi_desc = "release build (maturin build --release: fat LTO, 1 codegen unit)"
        else:
            zcasgi_python = sys.executable
            zcasgi_desc = (
                f"as installed for {record.shown(sys.executable)} (make dev: cargo profile ci)"
            )
    except env.SetupError as exc:
        print(f"benchmarks: setup failed: {exc}", file=sys.stderr)
        return 2
    if set(SOCKETIO_SCENARIOS) & set(chosen) and zcasgi_python == sys.executable:
        check = subprocess.run([sys.executable, "-c", "import socketio"], check=False)
        if check.returncode != 0:
            notes.append(
                "python-socketio is not installed for zcasgi's Python: the Socket.IO scenarios fail"
            )
    variants = [s for s in servers if s in SOCKETIO_VARIANTS]
    if variants:
        check = subprocess.run(
            [zcasgi_python, "-c", "import zcasgi.socketio"], capture_output=True, check=False
        )
        if check.returncode != 0:
            for name in variants:
                skipped[name] = "zcasgi.socketio does not import in this build of zcasgi"
                servers.remove(name)

    server_cpu, loadgen_cpu = cpu_pinning()
    pinning = (
        f"servers on CPU {server_cpu}, load generator on CPU {loadgen_cpu} (taskset)"
        if server_cpu is not None
        else "none (fewer than 2 CPUs available): server and load generator share"
    )
    pythons = {group: str(peers.python) for group in peers.ok}
    pythons["zcasgi"] = zcasgi_python
    ctx = Context(
        repo=repo,
        profile=profile,
        loadgen=Loadgen(binary, loadgen_cpu),
        server_cpu=server_cpu,
        pythons=pythons,
        env=server_env(),
        log=lambda message: print(message, flush=True),
    )
    tcp_spec = scenarios.raw_tcp_spec(binary)
    steps = _plan(profile, servers, chosen, repeat)
    estimates = [scenarios.estimate(profile, sc, name) for _, sc, name in steps]
    setup_s = time.monotonic() - started
    print(
        f"==> {len(steps)} steps ({profile.name} run, {len(servers)} servers, "
        f"{repeat} repetitions), estimated {_human(sum(estimates))}; setup took {_human(setup_s)}",
        flush=True,
    )
    progress = Progress(estimates)
    records: list[Record] = []
    for rep, scenario, name in steps:
        spec = tcp_spec if name == RAW_TCP else SERVERS[name]
        t0 = time.monotonic()
        try:
            step_records = scenarios.RUNNERS[scenario](ctx, spec, rep)
        except (ServerError, LoadgenError, OSError) as exc:
            step_records = [scenarios.failed_step(scenario, name, rep, exc)]
        for rec in step_records:
            rec["failed"] = not rec["metrics"]
        records.extend(step_records)
        progress.step_done(
            f"rep {rep}/{repeat} {scenario} {name}", time.monotonic() - t0, _summary(step_records)
        )
    run_s = time.monotonic() - setup_s - started

    results = report.Results(records)
    total_s = time.monotonic() - started
    repeat_note = ", ".join(
        f"{s} \u00d7{min(n, repeat)}"
        for s, n in profile.max_repeat.items()
        if s in chosen and n < repeat
    )
    meta = record.meta(
        "benchmarks",
        argv,
        state,
        pinning,
        started=started_at,
        mode=profile.name,
        duration_s=round(total_s, 1),
        setup_s=round(setup_s, 1),
        run_s=round(run_s, 1),
        duration_h=f"{_human(total_s)} (setup {_human(setup_s)}, measuring {_human(run_s)})",
        repeat=repeat,
        repeat_note=(
            f"fewer for slow-to-set-up scenarios: {repeat_note}" if repeat_note else "all"
        ),
        servers=servers,
        scenarios=chosen,
        skipped=skipped,
        notes=notes,
        zcasgi=zcasgi_desc,
        versions=peers.versions(),
        profile={k: v for k, v in vars(profile).items() if k != "max_repeat"},
    )
    _write(out_dir, results, meta, not args.no_plots)
    print(f"==> done in {_human(total_s)}: {out_dir / 'results.md'}", flush=True)
    for target in report.targets(results):
        verdict = "n/a" if target.met is None else "met" if target.met else "NOT met"
        value = "\u2013" if target.value is None else f"{target.value:.2f}"
        print(f"    {target.server:16} {target.name:44} {value:>8} ({target.limit}): {verdict}")
    return 0
