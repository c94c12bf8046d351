"""End-to-end tests of Unix domain sockets: ``--uds`` and ``--fd`` with a Unix listener."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import unix_connect

from harness import (
    READY_LINE,
    REPO_ROOT,
    Command,
    LogLine,
    ServerProcess,
    server_env,
    zcasgi_argv,
)
from harness.process import wait_until

pytestmark = pytest.mark.timeout(60)


def _uds_argv(app: str, backend: str, path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "zcasgi", app, "--backend", backend, "--uds", str(path), *args]


def _uds_server(app: str, backend: str, path: Path, *args: str) -> ServerProcess:
    argv = _uds_argv(app, backend, path, *args)
    return ServerProcess(f"zcasgi-{backend}-uds", [Command(argv)], ready=LogLine(READY_LINE))


def _fd_server(app: str, backend: str, sock: socket.socket) -> ServerProcess:
    argv = zcasgi_argv(app, sock.fileno(), backend)
    return ServerProcess(f"zcasgi-{backend}-fd", [Command(argv, [sock])], ready=LogLine(READY_LINE))


def _http_get(path: Path, target: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _check_serves(path: Path) -> None:
    """A WebSocket echo, its scope's addresses, and a plain HTTP request over ``path``."""
    with unix_connect(str(path), "ws://localhost/x", open_timeout=5) as ws:
        ws.send("over a unix socket")
        assert ws.recv(timeout=5) == "over a unix socket"
        ws.send(b"\x01" * 200_000)
        assert ws.recv(timeout=5) == b"\x01" * 200_000
    with unix_connect(str(path), "ws://localhost/scope", open_timeout=5) as ws:
        scope = json.loads(ws.recv(timeout=5))
    # ASGI: a Unix socket has no client address; the server is (path, None).
    assert scope["client"] is None
    assert scope["server"] == [str(path), None]
    assert scope["scheme"] == "ws"
    response = _http_get(path, "/health")
    assert response.startswith(b"HTTP/1.1 200"), response
    http_scope = json.loads(response.partition(b"\r\n\r\n")[2])
    assert http_scope["client"] is None
    assert http_scope["server"] == [str(path), None]
    assert http_scope["scheme"] == "http"


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    """Where a test's Unix socket lives (short: sun_path holds 108 bytes)."""
    yield tmp_path / "zcasgi.sock"


def test_uds_serves_websocket_and_http_and_removes_its_file(backend: str, sock_path: Path) -> None:
    server = _uds_server("apps.echo:transport_app", backend, sock_path)
    with server:
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
        _check_serves(sock_path)
        assert "unix:" + str(sock_path) in server.output()
    assert server.proc.returncode == 0, server.output()
    assert not sock_path.exists(), "the socket file is removed at shutdown"
    assert "Traceback" not in server.output()


def test_fd_with_a_unix_listener(backend: str, sock_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    sock.listen(128)
    sock.set_inheritable(True)
    server = _fd_server("apps.echo:transport_app", backend, sock)
    with server:
        _check_serves(sock_path)
    out = server.output()
    assert "accept failed" not in out and "Traceback" not in out, out
    # Not ours to remove: whoever bound it (systemd) owns the file.
    assert sock_path.exists()


def test_stale_socket_file_is_replaced(sock_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # Bound, never listened on, closed: what a killed server leaves.
    with _uds_server("apps.echo:transport_app", "mio", sock_path) as server:
        _check_serves(sock_path)
        assert "removing the stale socket file" in server.output()


def test_live_socket_is_an_error_naming_the_option(sock_path: Path) -> None:
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(sock_path))
    live.listen(1)
    try:
        server = _uds_server("apps.echo:app", "mio", sock_path)
        with pytest.raises(Exception, match="exited with code 1") as info:
            server.start()
        assert "uds: another server is listening on" in str(info.value)
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode), "the live socket is left alone"
    finally:
        live.close()


def test_regular_file_is_never_deleted(sock_path: Path) -> None:
    sock_path.write_text("precious")
    server = _uds_server("apps.echo:app", "mio", sock_path)
    with pytest.raises(Exception, match="exited with code 1") as info:
        server.start()
    assert "exists and is not a socket" in str(info.value)
    assert sock_path.read_text() == "precious"


@pytest.mark.parametrize(("given", "mode"), [("600", 0o600), ("0o666", 0o666)])
def test_uds_permissions_are_applied(sock_path: Path, given: str, mode: int) -> None:
    with _uds_server("apps.echo:app", "tokio", sock_path, "--uds-permissions", given):
        assert stat.S_IMODE(os.lstat(sock_path).st_mode) == mode


def test_uds_permissions_from_the_environment(sock_path: Path) -> None:
    argv = _uds_argv("apps.echo:app", "mio", sock_path)
    env = server_env({"ZCASGI_UDS_PERMISSIONS": "640"})
    server = ServerProcess("zcasgi-env", [Command(argv)], ready=LogLine(READY_LINE), env=env)
    with server:
        assert wait_until(sock_path.exists, 5)
        assert stat.S_IMODE(os.lstat(sock_path).st_mode) == 0o640


def test_workers_serve_one_uds_and_only_the_supervisor_removes_it(
    backend: str, sock_path: Path
) -> None:
    argv = _uds_argv("apps.echo:transport_app", backend, sock_path, "--workers", "2")
    server = ServerProcess(
        f"zcasgi-{backend}-uds-workers", [Command(argv)], ready=LogLine(READY_LINE, count=2)
    )
    with server:
        for _ in range(4):
            _check_serves(sock_path)
        assert "unix:" + str(sock_path) in server.output()
    assert server.proc.returncode == 0, server.output()
    assert not sock_path.exists(), "the supervisor removes the socket file at shutdown"
    assert "Traceback" not in server.output()


def test_proxy_headers_over_uds_need_forwarded_allow_ips_star(sock_path: Path) -> None:
    request = (
        b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n"
    )

    def scope_of(path: Path) -> dict[str, object]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(request)
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        scope: dict[str, object] = json.loads(response.partition(b"\r\n\r\n")[2])
        return scope

    with _uds_server("apps.echo:transport_app", "mio", sock_path):
        scope = scope_of(sock_path)
        # The default (127.0.0.1) does not cover a peer without an address.
        assert (scope["client"], scope["scheme"]) == (None, "http")
    star = ("--forwarded-allow-ips", "*")
    with _uds_server("apps.echo:transport_app", "mio", sock_path, *star):
        scope = scope_of(sock_path)
        assert (scope["client"], scope["scheme"]) == (["203.0.113.7", 0], "https")


def test_a_failed_start_up_removes_the_socket_file(sock_path: Path) -> None:
    argv = _uds_argv("apps.lifespan_fail:app", "mio", sock_path, "--lifespan", "on")
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=server_env()
    )
    assert result.returncode == 3, result.stderr
    assert not sock_path.exists(), "the socket file of a failed start-up is removed"
