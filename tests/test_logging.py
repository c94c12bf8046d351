"""``log_config`` (``--log-config``) and ``log_level``: a user's logging configuration is
applied, and the levels it sets are never overwritten; a bad one stops the start-up. The
access log writes uvicorn's records (the forwarded client, the status phrase), the requests the
server refuses itself included; ``trace`` shows connections and frames."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import socketio
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from harness import REPO_ROOT, ZcasgiServer, server_env, wait_until_async

pytestmark = pytest.mark.timeout(60)


def _json_config(access_file: Path, access_level: str | None = None) -> dict[str, object]:
    """zcasgi to stderr (level left to ``log_level``), zcasgi.access to ``access_file``."""
    access: dict[str, object] = {"handlers": ["file"], "propagate": False}
    if access_level is not None:
        access["level"] = access_level
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tagged": {"format": "CONFIGURED %(name)s %(message)s"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "tagged"},
            "file": {
                "class": "logging.FileHandler",
                "formatter": "tagged",
                "filename": str(access_file),
            },
        },
        "loggers": {
            "zcasgi": {"handlers": ["console"], "propagate": False},
            "zcasgi.access": access,
        },
    }


async def _one_websocket(server: ZcasgiServer) -> None:
    async with connect(server.url("ws", "/echo")) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"


async def test_json_log_config_is_applied(backend: str, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(_json_config(access)))
    with ZcasgiServer("apps.echo:app", backend, ["--log-config", str(config)]) as server:
        await _one_websocket(server)
        assert await wait_until_async(lambda: "CONFIGURED zcasgi.access" in access.read_text(), 10)
    assert "CONFIGURED zcasgi zcasgi running on" in server.output()


async def test_a_level_the_config_sets_is_kept(backend: str, tmp_path: Path) -> None:
    """``--log-level debug`` does not lower the ``zcasgi.access`` level the file sets."""
    access = tmp_path / "access.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(_json_config(access, access_level="WARNING")))
    args = ["--log-config", str(config), "--log-level", "debug"]
    with ZcasgiServer("apps.echo:app", backend, args) as server:
        await _one_websocket(server)
        await _one_websocket(server)
    # The server stopped (and flushed its handlers): the handshakes were INFO, below WARNING.
    assert access.read_text() == ""
    assert "CONFIGURED zcasgi zcasgi running on" in server.output()


async def test_ini_log_config_is_applied(tmp_path: Path) -> None:
    config = tmp_path / "logging.ini"
    config.write_text(
        "[loggers]\nkeys=root,zcasgi\n\n"
        "[handlers]\nkeys=console\n\n"
        "[formatters]\nkeys=tagged\n\n"
        "[logger_root]\nhandlers=\n\n"
        "[logger_zcasgi]\nhandlers=console\nqualname=zcasgi\npropagate=0\n\n"
        "[handler_console]\nclass=StreamHandler\nformatter=tagged\nargs=(sys.stderr,)\n\n"
        "[formatter_tagged]\nformat=INI %(name)s %(message)s\n"
    )
    with ZcasgiServer("apps.echo:app", "mio", ["--log-config", str(config)]) as server:
        await _one_websocket(server)
    assert "INI zcasgi zcasgi running on" in server.output()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "log_config: cannot read"),
        ("bad.json", "{not json", "is not valid JSON"),
        ("list.json", "[1, 2]", "must hold a mapping"),
        ("bad.ini", "[loggers]\nkeys=root\n", "has no [handlers], [formatters] section"),
    ],
)
def test_a_bad_log_config_stops_the_start_up(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "zcasgi", "apps.echo:app", "--port", "0", "--log-config", str(path)],
        cwd=REPO_ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr


async def test_make_run_shows_the_examples_own_log_lines(backend: str) -> None:
    """``make run`` serves the chat example with examples/logging.json: its logger's INFO lines
    (a client connecting) show beside zcasgi's."""
    args = ["--log-config", str(REPO_ROOT / "examples" / "logging.json")]
    with ZcasgiServer("examples.chat:app", backend, args) as server:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(
            server.url("http", ""), transports=["websocket"], auth={"name": "logged"}
        )
        await client.disconnect()
        assert await wait_until_async(lambda: "name=logged" in server.output(), 10)
    assert "examples.chat: connect sid=" in server.output()


def _access_config(plain: Path, uvicorn_style: Path) -> dict[str, object]:
    """zcasgi.access to two files: the message as is, and formatted by uvicorn's own
    ``AccessFormatter`` (which unpacks the record's args as uvicorn's)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(message)s"},
            "uvicorn": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(client_addr)s - "%(request_line)s" %(status_code)s',
                "use_colors": False,
            },
        },
        "handlers": {
            name: {"class": "logging.FileHandler", "formatter": name, "filename": str(path)}
            for name, path in (("plain", plain), ("uvicorn", uvicorn_style))
        },
        "loggers": {
            "zcasgi.access": {"handlers": ["plain", "uvicorn"], "propagate": False},
        },
    }


def _access_files(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """The two access log files of `_access_config` and the arguments that write them."""
    plain, uvicorn_style = tmp_path / "plain.log", tmp_path / "uvicorn.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(_access_config(plain, uvicorn_style)))
    return plain, uvicorn_style, ["--log-config", str(config)]


async def _exchange(port: int, request: bytes) -> bytes:
    """Sends ``request`` on a new connection and reads until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("workers", [1, 2])
async def test_access_lines_are_uvicorns_with_the_forwarded_client(
    backend: str, workers: int, tmp_path: Path
) -> None:
    """A trusted proxy's X-Forwarded-For client is the one logged (as in the ASGI scope), with
    the status phrase; uvicorn's AccessFormatter formats the same records."""
    plain, uvicorn_style, log_args = _access_files(tmp_path)
    args = [*log_args, "--forwarded-allow-ips", "127.0.0.1"]
    with ZcasgiServer("apps.echo:deny_path_app", backend, args, workers=workers) as server:
        forwarded = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1", "X-Forwarded-Proto": "https"}
        async with connect(server.url("ws", "/echo?x=1"), additional_headers=forwarded) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        with pytest.raises(InvalidStatus):
            async with connect(server.url("ws", "/deny")):
                pass
        request = b"GET /nope?q=1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.4\r\n"
        assert b" 404 " in await _exchange(server.port, request + b"Connection: close\r\n\r\n")
        assert await wait_until_async(lambda: len(_lines(uvicorn_style)) == 3, 10)
    # The denied client sent no X-Forwarded-For: its own address.
    denied = next(line for line in _lines(plain) if "/deny" in line).split(" ", 1)[0]
    assert denied.startswith("127.0.0.1:")
    assert sorted(_lines(plain)) == sorted(
        [
            '203.0.113.9:0 - "WebSocket /echo?x=1" [accepted]',
            f'{denied} - "WebSocket /deny" 403 Forbidden',
            '198.51.100.4:0 - "GET /nope?q=1 HTTP/1.1" 404 Not Found',
        ]
    )
    assert sorted(_lines(uvicorn_style)) == sorted(
        [
            '203.0.113.9:0 - "WebSocket /echo?x=1 HTTP/1.1" 101 Switching Protocols',
            f'{denied} - "WebSocket /deny HTTP/1.1" 403 Forbidden',
            '198.51.100.4:0 - "GET /nope?q=1 HTTP/1.1" 404 Not Found',
        ]
    )


async def test_an_untrusted_proxy_is_logged_as_the_client(backend: str, tmp_path: Path) -> None:
    plain, _, log_args = _access_files(tmp_path)
    args = [*log_args, "--forwarded-allow-ips", "192.0.2.1"]
    with ZcasgiServer("apps.echo:app", backend, args) as server:
        request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.4\r\n"
        await _exchange(server.port, request + b"Connection: close\r\n\r\n")
        assert await wait_until_async(lambda: len(_lines(plain)) == 1, 10)
    assert _lines(plain)[0].startswith("127.0.0.1:")


async def test_requests_the_server_refuses_are_logged(backend: str, tmp_path: Path) -> None:
    """400, 408, 413, 414 and 431 never reach the application, yet each has its access line:
    the request line when it was parsed, ``"-"`` when not; the forwarded client when known. A
    body that stops arriving is answered 408 by the server too: one line, the request's."""
    plain, uvicorn_style, log_args = _access_files(tmp_path)
    args = [
        *log_args,
        "--handshake-timeout", "0.5",
        "--http-max-body-size", "10",
        "--max-header-bytes", "1024",
    ]  # fmt: skip
    requests = {
        "400": b"BAD\r\n\r\n",
        "408": b"GET /slow HTTP/1.1\r\nHost: a\r\n",
        "408 body": b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab",
        "413": b"POST /up HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.4\r\n"
        b"Content-Length: 11\r\n\r\n",
        "414": b"GET /" + b"u" * 1100 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        "431": b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"h" * 1100 + b"\r\n\r\n",
    }
    with ZcasgiServer("apps.http:app", backend, args) as server:
        for status, request in requests.items():
            answer = await _exchange(server.port, request)
            assert answer.startswith(f"HTTP/1.1 {status[:3]} ".encode()), answer[:40]
        assert await wait_until_async(lambda: len(_lines(plain)) == len(requests), 10)
    lines = [line.split(" - ", 1) for line in _lines(plain)]
    assert all(client.startswith("127.0.0.1:") for client, rest in lines if "/up " not in rest)
    assert sorted(rest for _, rest in lines) == [
        '"-" 400 Bad Request',
        '"-" 408 Request Timeout',
        '"-" 414 URI Too Long',
        '"-" 431 Request Header Fields Too Large',
        '"POST /up HTTP/1.1" 413 Payload Too Large',
        '"POST /upload HTTP/1.1" 408 Request Timeout',
    ]
    assert '198.51.100.4:0 - "POST /up HTTP/1.1" 413 Payload Too Large' in _lines(plain)
    assert len(_lines(uvicorn_style)) == len(requests), "uvicorn's formatter formats them all"


async def test_over_limit_concurrency_is_logged_503(backend: str, tmp_path: Path) -> None:
    plain, uvicorn_style, log_args = _access_files(tmp_path)
    args = [*log_args, "--limit-concurrency", "1"]
    with ZcasgiServer("apps.echo:app", backend, args) as server:
        async with connect(server.url("ws", "/held")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            request = b"GET /over HTTP/1.1\r\nHost: a\r\n\r\n"
            assert (await _exchange(server.port, request)).startswith(b"HTTP/1.1 503 ")
        assert await wait_until_async(lambda: len(_lines(plain)) == 2, 10)
    assert _lines(plain)[1].endswith(' - "GET /over HTTP/1.1" 503 Service Unavailable')
    assert _lines(uvicorn_style)[1].endswith(' - "GET /over HTTP/1.1" 503 Service Unavailable')


async def test_a_session_of_no_worker_is_logged_400(backend: str, tmp_path: Path) -> None:
    """With workers, an Engine.IO request whose session id names a worker the server does not
    have is refused by the server itself (400, no application sees it): one access line."""
    plain, uvicorn_style, log_args = _access_files(tmp_path)
    with ZcasgiServer("apps.echo:app", backend, log_args, workers=2) as server:
        target = b"/socket.io/?EIO=4&transport=polling&sid=abc.7"
        request = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        assert (await _exchange(server.port, request)).startswith(b"HTTP/1.1 400 ")
        assert await wait_until_async(lambda: len(_lines(plain)) == 1, 10)
    line = f'"GET {target.decode()} HTTP/1.1" 400 Bad Request'
    assert _lines(plain)[0].endswith(f" - {line}"), _lines(plain)
    assert _lines(uvicorn_style)[0].endswith(f" - {line}"), _lines(uvicorn_style)


async def test_trace_shows_connections_and_frames_but_no_payload(backend: str) -> None:
    """``--log-level trace``: each connection's open and close (code, reason, who closed) and
    a summary of each frame, never its payload; debug lines name the client."""
    with ZcasgiServer("apps.echo:app", backend, ["--log-level", "trace"]) as server:
        async with connect(server.url("ws", "/echo")) as ws:
            await ws.send("secret-payload")
            assert await ws.recv() == "secret-payload"
            port = ws.local_address[1]
        await _exchange(server.port, b"BAD\r\n\r\n")
        conn = f"(127.0.0.1:{port}): "
        assert await wait_until_async(lambda: conn + "closed by client" in server.output(), 10)
        assert await wait_until_async(lambda: "closed by server" in server.output(), 10)
    output = server.output()
    assert "secret-payload" not in output
    for line in [
        f"TRACE     connection 1 {conn}open, server 127.0.0.1:{server.port}, tcp",
        f"TRACE     connection 1 {conn}received text frame, 14 bytes, fin=1",
        f"TRACE     connection 1 {conn}sent text frame, 14 bytes, fin=1",
        f'TRACE     connection 1 {conn}closed by client: code 1000, reason ""',
        "DEBUG     connection 2 (127.0.0.1:",
        "): malformed HTTP request: invalid token",
        "TRACE     connection 2 (127.0.0.1:",
        "): closed by server after 0 requests",
    ]:
        assert line in output


async def test_no_trace_or_debug_records_at_info(backend: str) -> None:
    with ZcasgiServer("apps.echo:app", backend) as server:
        await _one_websocket(server)
        await _exchange(server.port, b"BAD\r\n\r\n")
    assert "TRACE" not in server.output()
    assert "DEBUG" not in server.output()
