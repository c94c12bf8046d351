"""Smoke tests of the benchmark suite: the load generator against a real zcasgi server, and
the report writer on synthetic records. Nothing here asserts on speed.

The load generator (``benchmarks/loadgen``) is built once per session with the ``ci`` cargo
profile, which shares its dependencies with ``make test``'s other Rust builds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT, ServerProcess

from zcasgi.bench import report

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def loadgen() -> Path:
    """Path of a freshly built ``zcasgi-loadgen`` (cargo profile ``ci``)."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not on PATH")
    subprocess.run(
        ["cargo", "build", "--quiet", "--profile", "ci", "-p", "zcasgi-loadgen"],
        cwd=REPO_ROOT,
        check=True,
        timeout=850,
    )
    metadata = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    binary = Path(json.loads(metadata.stdout)["target_directory"]) / "ci" / "zcasgi-loadgen"
    assert binary.exists(), binary
    return binary


def _run(loadgen: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(loadgen), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_loadgen_echo(backend: str, loadgen: Path) -> None:
    with ServerProcess(
        "tests.apps.echo:app", backend, ["--log-level", "warning", "--no-access-log"]
    ) as server:
        result = _run(
            loadgen,
            "echo",
            "--url",
            server.url("ws", "/"),
            "--conns",
            "4",
            "--size",
            "64,4096",
            "--inflight",
            "1,4",
            "--warmup",
            "0.2",
            "--duration",
            "1",
            "--server-pids",
            str(server.proc.pid),
        )
    assert result["msgs_per_s"] > 0
    assert result["errors"] == 0, result
    assert [(p["size"], p["inflight"]) for p in result["phases"]] == [
        (64, 1),
        (64, 4),
        (4096, 1),
        (4096, 4),
    ]
    assert all(p["msgs"] > 0 and p["drained"] for p in result["phases"])
    assert result["phases"][0]["server_cpu_us_per_msg"] is not None
    assert result["loadgen_cpu_total_s"] > 0
    assert "Traceback" not in server.output()


def test_loadgen_rejects_non_loopback_targets(loadgen: Path) -> None:
    proc = subprocess.run(
        [str(loadgen), "rtt", "--url", "ws://192.0.2.1:80/", "--duration", "0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0
    assert "127.0.0.0/8" in json.loads(proc.stdout.strip().splitlines()[-1])["error"]


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
        "command": "python -m zcasgi.bench",
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
