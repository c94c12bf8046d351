"""The benchmark suite (``benchmarks/``, run by ``make bench-quick`` / ``make bench-suite``, not
by the tests) imports, its command line parses, and its report writer turns synthetic records
into the results page. No server runs and nothing is measured here.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cli, record, report
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
