"""The benchmark suite (``benchmarks/``, run by ``make bench-quick`` / ``make bench-suite``, not
by the tests) imports, its command line parses, and its report writer turns synthetic records
into the results page. No server runs and nothing is measured here.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from benchmarks import cli, report
from benchmarks.profiles import QUICK
from benchmarks.servers import QUICK_SERVERS
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
    scenario: str, server: str, rep: int, point: dict[str, Any], **metrics: float
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


def test_report_markdown_and_targets() -> None:
    point = {"conns": 1000, "size": 64, "inflight": 1}
    records = []
    for rep, (mio, uv) in enumerate([(200_000.0, 40_000.0), (180_000.0, 38_000.0)], start=1):
        records.append(_record("echo", "zcasgi-mio", rep, point, msgs_per_s=mio, cpu_us_per_msg=4))
        records.append(_record("echo", "uvicorn", rep, point, msgs_per_s=uv, cpu_us_per_msg=26))
    records.append(
        _record("memory", "zcasgi-mio", 1, {"conns": 10000, "workers": 1}, kib_per_conn=6.5)
    )
    results = report.Results(records)
    verdicts = {(t.server, t.name): t.met for t in report.targets(results)}
    assert verdicts[("zcasgi-mio", "server CPU per echoed message")] is True
    assert verdicts[("zcasgi-mio", "msgs/s vs uvicorn")] is True  # 190k / 39k
    assert verdicts[("zcasgi-mio", "memory per idle connection")] is False
    assert verdicts[("zcasgi-tokio", "server CPU per handshake")] is None
    meta = {
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
        "commit": "abc",
    }
    text = report.markdown(results, meta, [])
    assert "190,000 (180,000\u2013200,000)" in text
    assert "4.87\u00d7" in text
    assert "**not met**" in text
    assert "old location" not in text
    old = report.markdown(results, {**meta, "command": "python -m zcasgi.bench --repeat 3"}, [])
    assert "`python -m zcasgi.bench` (test run; the suite's old location, today " in old
