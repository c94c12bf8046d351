"""The benchmark suite (``benchmarks/``, run by ``make bench-quick`` / ``make bench-suite``, not
by the tests) imports, its command line parses, and its report writer turns synthetic records
into the results page. No server runs and nothing is measured here.
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cli, plots, record, report, scenarios
from benchmarks.profiles import FULL, QUICK, SOCKETIO_SCENARIOS
from benchmarks.servers import QUICK_SERVERS, SERVERS
from harness import REPO_ROOT, server_env


def test_runs_from_the_checkout() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=REPO_ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m benchmarks")
    assert "--quick" in proc.stdout
    assert "--repeat" in proc.stdout


def test_make_targets_options_parse() -> None:
    args = cli._parser().parse_args(["--repeat", "3"])
    assert (args.repeat, args.quick) == (3, False)
    args = cli._parser().parse_args(["--quick"])
    assert args.quick
    steps = cli._plan(QUICK, list(QUICK_SERVERS), list(QUICK.scenarios), 1)
    assert {server for _, _, server in steps} == {*QUICK_SERVERS, "raw-tcp"}
    assert {scenario for _, scenario, _ in steps} == set(QUICK.scenarios)


def _record(
    scenario: str, server: str, rep: int, point: dict[str, Any], **metrics: float | None
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "server": server,
        "rep": rep,
        "point": point,
        "metrics": metrics,
        "flags": [],
        "error": None,
    }


_META: dict[str, Any] = {
    "mode": "test",
    "date": "today",
    "duration_h": "0 s",
    "command": "python -m benchmarks",
    "repeat": 2,
    "repeat_note": "all",
    "servers": ["zcasgi-mio", "uvicorn"],
    "machine": {
        "cpu": "cpu",
        "cores": 2,
        "hypervisor": "",
        "memory_gib": 1,
        "kernel": "",
        "python": "",
        "open_files": 1,
        "loadavg_at_start": 0,
    },
    "pinning": "none",
    "zcasgi": "test",
}


def test_report_markdown_and_targets() -> None:
    point = {"conns": 1000, "size": 64, "inflight": 1}
    point_10k = {**point, "conns": 10000}
    lat = {"rate": 4000.0, "conns": 100, "size": 64}
    large = {"size": 1024 * 1024}
    records = []
    for rep, (mio, uv) in enumerate([(200_000.0, 40_000.0), (180_000.0, 38_000.0)], start=1):
        records.append(_record("echo", "zcasgi-mio", rep, point, msgs_per_s=mio, cpu_us_per_msg=4))
        records.append(_record("echo", "uvicorn", rep, point, msgs_per_s=uv, cpu_us_per_msg=26))
        records.append(_record("echo", "zcasgi-mio", rep, point_10k, cpu_us_per_msg=5))
        # mio's tail is better in one repetition and worse in the other: the worst decides.
        records.append(
            _record("latency", "zcasgi-mio", rep, lat, p999_us=[500, 2000][rep - 1], max_us=900)
        )
        records.append(_record("latency", "uvicorn", rep, lat, p999_us=1000, max_us=3000))
        records.append(_record("large", "raw-tcp", rep, large, mb_per_s=1000))
        records.append(_record("large", "zcasgi-mio", rep, large, mb_per_s=[900, 860][rep - 1]))
    records.append(
        _record("memory", "zcasgi-mio", 1, {"conns": 10000, "workers": 1}, kib_per_conn=6.5)
    )
    results = report.Results(records)
    targets = {(t.server, t.name): t for t in report.targets(results)}
    verdicts = {key: t.met for key, t in targets.items()}
    share = targets[("zcasgi-mio", "CPU per echoed message, share of uvicorn's")]
    assert share.value == pytest.approx(4 / 26)
    assert share.met is True
    growth = targets[("zcasgi-mio", "CPU per message, growth 1,000 \u2192 10,000 conns")]
    assert growth.value == pytest.approx(0.25)
    assert growth.met is False
    assert verdicts[("zcasgi-mio", "latency p99.9")] is False
    assert verdicts[("zcasgi-mio", "latency max")] is True
    assert verdicts[("zcasgi-mio", "large-message throughput, share of raw TCP")] is True  # 88%
    assert verdicts[("zcasgi-mio", "memory per idle connection")] is False
    assert verdicts[("zcasgi-tokio", "server CPU per handshake")] is None
    # The I/O thread variant is checked only when the run measured it.
    assert not [t for t in targets.values() if t.server == "zcasgi-mio-thread"]
    meta = {**_META, "commit": "abc"}
    docs = REPO_ROOT / "docs" / "benchmarks"
    text = report.markdown(results, meta, [], docs)
    assert "190,000 (180,000\u2013200,000)" in text
    assert "4.87\u00d7" in text
    assert "**not met**" in text
    assert "old location" not in text
    assert "[README.md](README.md)" in text
    old = report.markdown(
        results, {**meta, "command": "python -m zcasgi.bench --repeat 3"}, [], docs
    )
    assert "`python -m zcasgi.bench` (the suite's old location in the zcasgi package)" in old


def test_quick_results_page_links_to_the_guide() -> None:
    """A quick run writes to benchmarks/results/quick/: its page's link reaches the guide."""
    out = REPO_ROOT / "benchmarks" / "results" / "quick"
    meta = {**_META, "commit": "0123456789abcdef", "changes": []}
    text = report.markdown(report.Results([]), meta, [], out)
    [link] = re.findall(r"\[README\.md\]\(([^)]+)\)", text)
    assert (out / link).resolve() == (REPO_ROOT / "docs" / "benchmarks" / "README.md")
    assert "`git checkout 0123456789ab`" in text


def test_dirty_tree_is_named_on_the_page() -> None:
    changed = {**_META, "commit": "0123456789abcdef", "changes": [" M benchmarks/cli.py"]}
    assert "**with uncommitted changes** (`benchmarks/cli.py`)" in record.commit_text(changed)
    old = {**_META, "commit": "0123456789ab-dirty"}
    assert "cannot be reproduced" in record.commit_text(old)
    assert "git checkout" not in record.commit_text(old)


def test_dirty_tree_refused_for_docs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    dirty = record.Checkout("0" * 40, (" M README.md",))
    monkeypatch.setattr(record, "checkout", lambda: dirty)
    with pytest.raises(record.DirtyTree, match=r"README\.md"):
        record.require_clean(REPO_ROOT / "docs" / "benchmarks", allow_dirty=False)
    assert record.require_clean(REPO_ROOT / "docs" / "benchmarks", allow_dirty=True) == dirty
    assert record.require_clean(REPO_ROOT / "benchmarks" / "results", allow_dirty=False) == dirty


def test_missing_servers_have_a_reason() -> None:
    """A server that failed keeps its recorded error; one the suite does not run, the rule."""
    records = [
        _record("fanout", "zcasgi-mio", 1, {"members": 10}, p50_ms=3.0),
        {
            **_record("fanout", "socketify", 1, {"members": 10}, p50_ms=None, errors=11),
            "error": "member 0: upgrade refused: HTTP/1.1 403 Forbidden",
        },
        _record("memory-50k", "zcasgi-mio", 1, {"conns": 50, "workers": 4}, kib_per_conn=6.0),
    ]
    results = report.Results(records)
    meta = {"servers": ["zcasgi-mio", "socketify", "granian"], "skipped": {"hypercorn": "no pip"}}
    fan = report.absent(results, meta, "fanout", {"members": 10})
    assert fan["socketify"] == (
        "failed (11 errors): member 0: upgrade refused: HTTP/1.1 403 Forbidden"
    )
    assert fan["granian"] == "not measured in this run"
    assert fan["hypercorn"] == "skipped: no pip"
    assert "zcasgi-mio" not in fan
    multi = report.absent(results, meta, "memory-50k", {"conns": 50, "workers": 4})
    assert "--fd" in multi["granian"]
    assert report.processes({"conns": 50, "workers": 4}) == "4 separate processes"


@pytest.mark.parametrize(
    ("module", "record_dir", "extra"),
    [
        ("benchmarks", "docs/benchmarks", ["--no-plots"]),
        ("benchmarks", "docs/benchmarks/socketio", ["--no-plots"]),
        ("benchmarks.scale", "docs/benchmarks/scale", []),
        ("benchmarks.tls", "docs/benchmarks/tls", []),
        ("benchmarks.soak", "docs/soak", []),
    ],
)
def test_report_only_rewrites_the_committed_record(
    module: str, record_dir: str, extra: list[str], tmp_path: Path
) -> None:
    """``--report-only`` rewrites each committed record's page (here into a copy) as the
    committed page says it, the commit line included; it measures nothing."""
    committed = REPO_ROOT / record_dir
    shutil.copy(committed / "results.json", tmp_path / "results.json")
    main = importlib.import_module(module if module == "benchmarks" else f"{module}.run").main
    assert main(["--report-only", "--out", str(tmp_path), *extra]) == 0
    page = (tmp_path / "results.md").read_text()
    [commit_line] = [line for line in page.splitlines() if line.startswith("- Commit: ")]
    assert commit_line in (committed / "results.md").read_text()


def test_report_only_without_a_record(tmp_path: Path) -> None:
    assert cli.main(["--report-only", "--out", str(tmp_path)]) == 2


def test_record_names_no_path_of_this_machine() -> None:
    argv = ["--out", str(REPO_ROOT / "docs" / "benchmarks"), "--repeat", "3"]
    assert record.command("benchmarks", argv) == (
        "python -m benchmarks --out docs/benchmarks --repeat 3"
    )
    assert record.shown(str(REPO_ROOT / ".venv" / "bin" / "python")) == ".venv/bin/python"


def test_quick_run_exercises_the_socketio_scenarios() -> None:
    """``--quick`` runs the Socket.IO scenarios; the zcasgi.socketio variants run only those."""
    assert {"fanout", "sio-idle", "sio-ack"} <= set(QUICK.scenarios)
    steps = cli._plan(QUICK, list(QUICK_SERVERS), list(QUICK.scenarios), 1)
    by_server: dict[str, set[str]] = {}
    for _, scenario, server in steps:
        by_server.setdefault(server, set()).add(scenario)
    assert by_server["zcasgi-sio-mio"] == by_server["zcasgi-sio-tokio"] == set(SOCKETIO_SCENARIOS)
    assert set(SOCKETIO_SCENARIOS) < by_server["uvicorn"]
    assert SERVERS["zcasgi-sio-mio"].chat_app == "examples.chat_fast:app"
    assert SERVERS["uvicorn"].chat_app == "examples.chat:app"
    # Enough broadcasts for the CPU figure: 50 rounds of 1,000 members, 5 of 10,000.
    assert scenarios.fanout_rounds(FULL, 1000) == 50
    assert scenarios.fanout_rounds(FULL, 10000) == 5


def test_chat_fast_is_the_chat_app_with_one_import_changed() -> None:
    """The benchmark's zcasgi.socketio variant runs the same code as the stock chat app."""

    def code(name: str) -> list[ast.stmt]:
        tree = ast.parse((REPO_ROOT / "examples" / name).read_text())
        return tree.body[1:] if ast.get_docstring(tree) else tree.body

    chat, fast = code("chat.py"), code("chat_fast.py")
    assert len(chat) == len(fast)
    changed = [
        (ast.unparse(a), ast.unparse(b)) for a, b in zip(chat, fast) if ast.dump(a) != ast.dump(b)
    ]
    assert changed == [("import socketio", "import zcasgi.socketio as socketio")]


def test_socketio_metrics_from_load_generator_reports() -> None:
    """The figures each Socket.IO scenario records, from (synthetic) load generator reports."""
    rounds = [
        {"complete": True, "server_cpu_s": 0.02, "loadgen_cpu_s": 0.01, "window_s": 0.05},
        {"complete": True, "server_cpu_s": 0.03, "loadgen_cpu_s": 0.01, "window_s": 0.05},
        {"complete": False, "server_cpu_s": 0.5, "loadgen_cpu_s": 0.01, "window_s": 30.0},
    ]
    report_ = {
        "rounds": rounds,
        "p50_ms": 12.0,
        "span": {"server_cpu_us_per_delivery": 4.5},
        "errors": 0,
    }
    metrics, errors = scenarios.fanout_metrics(report_, 3, other=0.1)
    assert errors == 1  # one incomplete round
    assert metrics["cpu_ms_per_broadcast"] == pytest.approx(25.0)
    assert metrics["cpu_us_per_recipient"] == 4.5
    assert metrics["loadgen_util"] == pytest.approx(0.03 / 30.1)
    assert metrics["rounds"] == 2

    acks = {
        "events_per_s": 40_000.0,
        "server_cpu_us_per_event": 20.0,
        "latency": {"p50_us": 900.0, "p99_us": 2000.0},
        "open": 998,
        "errors": 0,
        "drained": False,
    }
    metrics, errors = scenarios.ack_metrics(acks, 0.0, 1000)
    assert metrics["events_per_core_s"] == pytest.approx(50_000.0)
    assert errors == 3  # two clients never connected, and the drain did not finish

    idle = scenarios.idle_metrics(
        n_open=10_000,
        baseline_kib=40_000,
        rss_kib=120_000,
        server_cpu_s=0.4,
        loadgen_cpu_s=0.2,
        other_cpu_s=0.0,
        window_s=20.0,
        ping_interval=5,
    )
    assert idle["kib_per_client"] == 8.0
    assert idle["idle_cpu_pct"] == pytest.approx(2.0)
    assert idle["cpu_us_per_ping"] == pytest.approx(10.0)  # 0.4 s over 40,000 pings


def _socketio_records() -> list[dict[str, Any]]:
    """One run's Socket.IO records: zcasgi.socketio on mio meets its targets; tokio has none."""
    figures = {
        # server: (ms to last, CPU µs/recipient, KiB/client, idle %, events/s per core)
        "zcasgi-sio-mio": (40.0, 4.0, 7.5, 0.5, 80_000.0),
        "zcasgi-mio": (900.0, 80.0, 30.0, 6.0, 15_000.0),
        "uvicorn": (1100.0, 120.0, 42.0, 9.0, 15_000.0),
        "granian": (800.0, 85.0, 35.0, 8.0, 16_000.0),
    }
    records = []
    idle_point = {"clients": 10000, "ping_interval": 5}
    for server, (ms, cpu, kib, idle, per_core) in figures.items():
        for members in (1000, 10000):
            records.append(
                _record(
                    "fanout",
                    server,
                    1,
                    {"members": members},
                    p50_ms=ms,
                    cpu_us_per_recipient=cpu,
                    rounds=5,
                )
            )
        records.append(
            _record("sio-idle", server, 1, idle_point, kib_per_client=kib, idle_cpu_pct=idle)
        )
        for rep in (1, 2):
            records.append(
                _record(
                    "sio-ack",
                    server,
                    rep,
                    {"clients": 1000},
                    events_per_s=per_core * 0.9,
                    events_per_core_s=per_core,
                    cpu_us_per_event=1e6 / per_core,
                )
            )
    return records


_SIO_META = {
    **_META,
    "commit": "abc",
    "servers": ["zcasgi-mio", "zcasgi-sio-mio", "zcasgi-sio-tokio", "uvicorn", "granian"],
    "skipped": {},
}


def test_socketio_report_and_targets() -> None:
    results = report.Results(_socketio_records())
    verdicts = {(t.server, t.name): (t.value, t.met) for t in report.targets(results)}
    mio = "zcasgi-sio-mio"
    assert verdicts[(mio, "broadcast CPU per recipient")] == (4.0, True)
    assert verdicts[(mio, "broadcast CPU: uvicorn's \u00f7 this")] == (30.0, True)
    assert verdicts[(mio, "broadcast CPU: granian's \u00f7 this")] == (21.25, True)
    assert verdicts[(mio, "memory per idle Socket.IO client")] == (7.5, True)
    assert verdicts[(mio, "idle CPU with pings: uvicorn's \u00f7 this")] == (18.0, True)
    value, met = verdicts[(mio, "acked events per core vs uvicorn")]
    assert (round(value or 0, 2), met) == (5.33, True)
    assert verdicts[("zcasgi-sio-tokio", "broadcast CPU per recipient")] == (None, None)
    # A run of the Socket.IO scenarios only has no WebSocket targets or headline.
    assert not [t for t in report.targets(results) if t.server in report.ZCASGI]
    text = report.markdown(results, _SIO_META, [], REPO_ROOT / "docs" / "benchmarks")
    for title in (
        "## 6. Socket.IO broadcast fan-out",
        "## 7. Idle Socket.IO clients",
        "## 8. Socket.IO events with acknowledgement",
    ):
        assert title in text
    assert "| `zcasgi-sio-mio` | 40.0 | 40.0 | 4.00 | 4.00 | 30.0\u00d7 |" in text
    assert "| `zcasgi-sio-mio` | 72,000 | 5.33\u00d7 | 80,000 | 5.33\u00d7 |" in text
    assert "## Headline" not in text
    # The variants are not "missing" from the scenarios they do not run.
    assert "zcasgi-sio-mio" not in report.absent(results, _SIO_META, "echo", {"conns": 1})
    tokio = report.absent(results, _SIO_META, "sio-ack", {"clients": 1000})
    assert tokio == {"zcasgi-sio-tokio": "not measured in this run"}


def test_socketio_plot(tmp_path: Path) -> None:
    records = _socketio_records()
    results = report.Results(records)
    written = plots.write_all(results, _SIO_META, tmp_path)
    assert "socketio.png" in written
    assert (tmp_path / "socketio.png").read_bytes().startswith(b"\x89PNG")
    # Idle CPU below one clock tick on every server of a run: still a plot, and no warning.
    idle = [r for r in records if r["scenario"] == "sio-idle" and r["server"] != "uvicorn"]
    for r in idle:
        r["metrics"]["idle_cpu_pct"] = 0.0
    assert "socketio.png" in plots.write_all(report.Results(idle), _SIO_META, tmp_path)


def test_perf_report_is_summed_by_part() -> None:
    """``python -m benchmarks.perf`` counts each DSO's samples in its part."""
    from benchmarks import perf

    text = """
    40.00%  400  [kernel.kallsyms]  [k] tcp_sendmsg
    20.00%  200  _zcasgi.cpython-311-x86_64-linux-gnu.so  [.] zcasgi_core::driver::Driver::feed
    15.00%  150  libpython3.11.so.1.0  [.] _PyEval_EvalFrameDefault
    10.00%  100  loop.cpython-311-x86_64-linux-gnu.so  [.] __pyx_f_6uvloop_4loop_4Loop__run
     9.00%   90  libc.so.6  [.] __memmove_avx_unaligned_erms
     6.00%   60  perf-1234.map  [.] 0x00007f
# a comment line
"""
    profile = perf.parse_report(text, top=2)
    assert profile.samples == 1000
    assert profile.parts == pytest.approx(
        {
            "kernel": 0.40,
            "zcasgi (Rust)": 0.20,
            "event loop (uvloop)": 0.10,
            "Python": 0.15,
            "libc": 0.09,
            "other": 0.06,
        }
    )
    assert profile.top == [
        (0.40, "[kernel.kallsyms]", "tcp_sendmsg"),
        (0.20, "_zcasgi.cpython-311-x86_64-linux-gnu.so", "zcasgi_core::driver::Driver::feed"),
    ]
