"""The TLS run: what TLS costs each server, measured in one run on one machine.

For each server (zcasgi on the mio and the tokio backend, uvicorn with uvloop and its default
WebSocket implementation) and each transport (``wss``: TLS with a certificate of a throwaway CA
made by ``trustme``, and ``ws``: plain, for reference), in turn:

1. start the server on the echo app (``tests/apps/echo.py``) pinned to one CPU, its output in a
   file, the load generator pinned to the other;
2. ``zcasgi-loadgen handshakes``: connect, TLS handshake (a full one: the client resumes no
   session), WebSocket upgrade, close, ``--concurrency`` at a time for ``--duration`` seconds;
3. ``zcasgi-loadgen large``: 1 MiB binary messages echoed one at a time over one connection
   for ``--duration`` seconds.

The load generator is the workspace's Rust client (rustls with the ring provider, the same
library the server uses), so it costs less than the servers it measures; its CPU is reported
beside the server's. The figures go to ``OUT/results.json`` and ``OUT/results.md``, the plot
to ``OUT/tls.png``, the servers' output to ``benchmarks/results/tls-logs/`` (not committed).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    REPO_ROOT,
    Answers,
    Command,
    ServerProcess,
    ZcasgiServer,
    listen,
    server_env,
)
from harness.cpus import pinned

from .. import plots, record, standalone
from ..generator import Loadgen, LoadgenError

#: The application every server runs.
APP = "tests.apps.echo:app"
#: The servers measured.
SERVERS = ("zcasgi-mio", "zcasgi-tokio", "uvicorn")


@dataclass(frozen=True)
class Certs:
    """The server's certificate and key, and the CA the client trusts (PEM files)."""

    certfile: Path
    keyfile: Path
    ca_file: Path


def make_certs(directory: Path) -> Certs:
    """A throwaway CA and a certificate for 127.0.0.1 it signed (an ECDSA P-256 key)."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    certs = Certs(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
    certs.certfile.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(certs.keyfile))
    ca.cert_pem.write_to_path(str(certs.ca_file))
    return certs


def _server(
    name: str, tls: Certs | None, cpu: int | None, log_dir: Path
) -> ZcasgiServer | ServerProcess:
    """The server ``name``, with TLS when ``tls`` is given (not started)."""
    if name.startswith("zcasgi-"):
        args = ["--log-level", "info", "--no-access-log", "--backlog", "4096"]
        if tls is not None:
            args += ["--ssl-certfile", str(tls.certfile), "--ssl-keyfile", str(tls.keyfile)]
        return ZcasgiServer(APP, name.removeprefix("zcasgi-"), args, cpu=cpu, log_dir=log_dir)
    return _Uvicorn(tls, cpu, log_dir)


class _Uvicorn(ServerProcess):
    """uvicorn (uvloop, its default WebSocket implementation) on a socket bound here."""

    def __init__(self, tls: Certs | None, cpu: int | None, log_dir: Path) -> None:
        super().__init__(
            "uvicorn", ready=Answers(), env=server_env(), log_dir=log_dir, stop_timeout=10.0
        )
        self._tls = tls
        self._cpu = cpu

    def _launch(self) -> Sequence[Command]:
        sock = listen()
        self.port = sock.getsockname()[1]
        argv = [sys.executable, "-m", "uvicorn", APP, "--fd", str(sock.fileno())]
        argv += ["--loop", "uvloop", "--http", "auto", "--ws", "websockets-sansio"]
        argv += ["--backlog", "4096", "--log-level", "warning", "--no-access-log"]
        argv += ["--lifespan", "on"]
        if self._tls is not None:
            argv += ["--ssl-certfile", str(self._tls.certfile)]
            argv += ["--ssl-keyfile", str(self._tls.keyfile)]
        return [Command(pinned(argv, self._cpu), [sock])]


def measure(
    name: str,
    transport: str,
    certs: Certs,
    loadgen: Loadgen,
    cpu: int | None,
    args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:
    """One server on one transport: handshakes/s, then 1 MiB echo; its record."""
    logs = REPO_ROOT / "benchmarks" / "results" / "tls-logs"
    logs.mkdir(parents=True, exist_ok=True)
    tls = certs if transport == "wss" else None
    record: dict[str, Any] = {"server": name, "transport": transport}
    server = _server(name, tls, cpu, logs)
    with server:
        port = server.require_port()
        server.refresh_pids()
        pids = ",".join(str(p) for p in server.pids)
        url = f"{transport}://127.0.0.1:{port}/"
        common = ["--server-pids", pids]
        if tls is not None:
            common += ["--ca-file", str(certs.ca_file)]
        try:
            hs = loadgen.run(
                "handshakes",
                [
                    "--url",
                    url,
                    "--duration",
                    str(args.duration),
                    "--concurrency",
                    str(args.concurrency),
                    *common,
                ],
                args.duration + 120,
            )
            large = loadgen.run(
                "large",
                [
                    "--url",
                    url,
                    "--size",
                    str(args.size),
                    "--duration",
                    str(args.duration),
                    "--warmup",
                    "1",
                    *common,
                ],
                args.duration + 120,
            )
        except LoadgenError as exc:
            record["error"] = str(exc)[:500]
            return record
    record.update(
        handshakes_per_s=round(hs["handshakes_per_s"], 1),
        handshake_errors=hs["errors"],
        handshake_first_error=hs.get("first_error"),
        upgrade_p50_us=hs["upgrade_latency"].get("p50_us"),
        server_cpu_us_per_handshake=hs.get("server_cpu_us_per_handshake"),
        handshakes_server_cpu_util=hs.get("server_cpu_util"),
        handshakes_loadgen_cpu_util=hs.get("loadgen_cpu_util"),
        large_mb_per_s=round(large["mb_per_s"], 1),
        large_msgs=large["msgs"],
        server_cpu_us_per_mib=large.get("server_cpu_us_per_msg"),
        large_server_cpu_util=large.get("server_cpu_util"),
        large_loadgen_cpu_util=large.get("loadgen_cpu_util"),
    )
    standalone.log(f"[{name} {transport}] {summary(record)}")
    return record


def summary(r: dict[str, Any]) -> str:
    """One line of a record's figures."""
    if "error" in r:
        return f"error: {r['error']}"
    return (
        f"{r['handshakes_per_s']:,.0f} handshakes/s ({r['handshake_errors']} errors), "
        f"1 MiB echo {r['large_mb_per_s']:,.1f} MB/s"
    )


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "—"
    return f"{value / base:.2f}x"


def markdown(meta: dict[str, Any], records: list[dict[str, Any]], out: Path) -> str:
    """``results.md``: the run's conditions and one row per server and transport."""
    by = {(r["server"], r["transport"]): r for r in records if "error" not in r}
    lines = record.opening(
        "TLS results",
        "What TLS costs each server: handshakes per second and 1 MiB echo over `wss`, with the "
        "same over plain `ws` for reference, in one run on one machine.",
        meta,
        out,
        record.GUIDE,
        [
            f"- Build: the `ci` cargo profile (`make dev`); uvicorn {meta['uvicorn']} with "
            f"uvloop, `--http auto` ({meta['uvicorn_http']}), `--ws websockets-sansio`",
            f"- Certificate: ECDSA P-256 (trustme); handshakes: {meta['concurrency']} at a time, "
            f"each a full TLS handshake (no resumption), upgrade and close; echo: "
            f"{meta['size']:,}-byte binary messages one at a time; {meta['duration']:g} s each",
        ],
    )
    lines += [
        "| server | transport | handshakes/s | vs uvicorn | server CPU µs per handshake "
        "| 1 MiB echo MB/s | vs uvicorn | server CPU µs per MiB echoed |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['server']} | {r['transport']} | error: {r['error']} ||||||")
            continue
        base = by.get(("uvicorn", r["transport"]), {})
        lines.append(
            f"| {r['server']} | {r['transport']} | {r['handshakes_per_s']:,.0f} "
            f"| {_ratio(r['handshakes_per_s'], base.get('handshakes_per_s'))} "
            f"| {_num(r['server_cpu_us_per_handshake'])} "
            f"| {r['large_mb_per_s']:,.1f} "
            f"| {_ratio(r['large_mb_per_s'], base.get('large_mb_per_s'))} "
            f"| {_num(r['server_cpu_us_per_mib'])} |"
        )
    lines += [
        "",
        "The CPU use of the server and of the load generator over each window is in "
        "`results.json` (`*_server_cpu_util`, `*_loadgen_cpu_util`, in cores): a load "
        "generator near 1.0 while the server is below it would mean the client, not the "
        "server, was the limit.",
        "",
        "![TLS handshakes per second and 1 MiB wss echo](tls.png)",
        "",
    ]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tls", description=__doc__.split("\n")[0])
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated servers")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds of each test")
    p.add_argument("--concurrency", type=int, default=16, help="handshakes in progress at once")
    p.add_argument("--size", type=int, default=1 << 20, help="echoed message size in bytes")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks" / "tls")
    record.add_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run every server on both transports, write the results and the plot
    (:func:`standalone.run`)."""
    args = _parser().parse_args(argv)

    def measure_all(setup: standalone.Rig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        records = []
        with tempfile.TemporaryDirectory(prefix="zcasgi-tls-bench-") as tmp:
            certs = make_certs(Path(tmp))
            for name in args.servers.split(","):
                for transport in ("wss", "ws"):
                    standalone.log(f"== {name} over {transport}")
                    records.append(
                        measure(
                            name, transport, certs, setup.loadgen, setup.server_cpu, args, args.out
                        )
                    )
        return records, {
            "uvicorn": _version("uvicorn"),
            "uvicorn_http": "httptools" if _version("httptools") != "not installed" else "h11",
            "duration": args.duration,
            "concurrency": args.concurrency,
            "size": args.size,
        }

    return standalone.run(
        "benchmarks.tls",
        argv,
        args,
        ("the server", "the load generator"),
        measure_all,
        standalone.Report(markdown, plots.tls, "tls.png"),
    )


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
