"""uvicorn's options, end to end: ``--header``, ``--server-header``/``--date-header``,
``--env-file``, ``--use-colors`` and ``--reload`` against a running server."""

from __future__ import annotations

import email.utils
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets.sync.client

from harness import REPO_ROOT, ZcasgiServer, listen, server_env, wait_until

ESC = "\x1b["


def _ws_headers(server: ZcasgiServer) -> dict[str, str]:
    """The headers of the server's WebSocket accept (101)."""
    with websockets.sync.client.connect(server.url("ws", "/"), open_timeout=10) as ws:
        response = ws.response
        assert response is not None
        return {k.lower(): v for k, v in response.headers.raw_items()}


def test_extra_headers_on_every_response(backend: str) -> None:
    args = ["--header", "x-frame-options: DENY", "--header", "X-Team:blue, green"]
    with ZcasgiServer("apps.echo:app", backend, args) as server:
        r = httpx.get(server.url("http", "/missing"), timeout=10)
        assert r.status_code == 404
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-team"] == "blue, green"
        assert r.headers["server"] == "zcasgi"
        # A rejection written by the core itself carries them too.
        r = httpx.get(server.url("http", "/"), headers={"upgrade": "websocket"}, timeout=10)
        assert r.status_code >= 400 and r.headers["x-frame-options"] == "DENY"
        ws = _ws_headers(server)
        assert ws["x-frame-options"] == "DENY" and ws["x-team"] == "blue, green"


def test_an_extra_server_header_replaces_the_default(backend: str) -> None:
    with ZcasgiServer("apps.echo:app", backend, ["--header", "server: edge"]) as server:
        r = httpx.get(server.url("http", "/missing"), timeout=10)
        assert r.headers.get_list("server") == ["edge"]


def test_server_and_date_headers_can_be_turned_off(backend: str) -> None:
    with ZcasgiServer("apps.echo:app", backend) as server:
        r = httpx.get(server.url("http", "/missing"), timeout=10)
        assert r.headers["server"] == "zcasgi"
        sent = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
        assert abs(sent - time.time()) < 60
        assert "date" in _ws_headers(server)
    args = ["--no-server-header", "--no-date-header"]
    with ZcasgiServer("apps.echo:app", backend, args) as server:
        r = httpx.get(server.url("http", "/missing"), timeout=10)
        assert "server" not in r.headers and "date" not in r.headers
        ws = _ws_headers(server)
        assert "server" not in ws and "date" not in ws


def test_env_file_sets_options(tmp_path: Path, backend: str) -> None:
    """``ZCASGI_*`` in the file apply (here: an extra header and no server header); a variable
    set in the environment wins over the file's."""
    env_file = tmp_path / "server.env"
    env_file.write_text(
        "# options for zcasgi\nZCASGI_HEADERS=x-from: env-file\nZCASGI_SERVER_HEADER=false\n"
        "ZCASGI_DATE_HEADER=false\n"
    )
    env = {"ZCASGI_DATE_HEADER": "true"}
    with ZcasgiServer("apps.echo:app", backend, ["--env-file", str(env_file)], env=env) as server:
        r = httpx.get(server.url("http", "/missing"), timeout=10)
        assert r.headers["x-from"] == "env-file"
        assert "server" not in r.headers
        assert "date" in r.headers


def _log_of(args: list[str], *, tty: bool) -> str:
    """What a server started with ``args`` writes to stderr (a terminal when ``tty``) until it
    says it serves; then it is stopped (by PID)."""
    sock = listen()
    argv = [sys.executable, "-m", "zcasgi", "apps.echo:app", "--fd", str(sock.fileno()), *args]
    if tty:
        parent, child = pty.openpty()
    else:
        parent, child = os.pipe()
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT / "tests",
        env=server_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child,
        pass_fds=[sock.fileno()],
    )
    sock.close()
    os.close(child)
    output = b""
    try:
        deadline = time.monotonic() + 15
        while b"zcasgi running on" not in output and time.monotonic() < deadline:
            try:
                chunk = os.read(parent, 4096)
            except OSError:  # the pty's other side closed
                break
            if not chunk:
                break
            output += chunk
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(parent)
    text = output.decode(errors="replace")
    assert "zcasgi running on" in text, text
    return text


@pytest.mark.parametrize(
    ("args", "tty", "coloured"),
    [
        ([], False, False),
        ([], True, True),
        (["--use-colors"], False, True),
        (["--no-use-colors"], True, False),
    ],
    ids=["pipe", "terminal", "forced-on", "forced-off"],
)
def test_use_colors(args: list[str], tty: bool, coloured: bool) -> None:
    text = _log_of(args, tty=tty)
    assert (f"{ESC}32mINFO{ESC}0m" in text) is coloured, text
    assert (ESC in text) is coloured, text


def _server_processes(server: ZcasgiServer) -> list[int]:
    """The reloader's server processes (multiprocessing also starts a resource tracker)."""
    return [
        pid
        for pid in server.children()
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


HOT_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"{version}"
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
"""


def test_reload_serves_the_edited_code(tmp_path: Path, backend: str) -> None:
    """Editing a watched file replaces the server process; the new code answers (within a
    bound), on the same socket; a file that does not match the globs changes nothing."""
    app_dir = tmp_path / "project"
    app_dir.mkdir()
    module = app_dir / "hot_app.py"
    module.write_text(HOT_APP.format(version="v1"))
    args = ["--reload", "--reload-dir", str(app_dir), "--app-dir", str(app_dir)]
    with ZcasgiServer("hot_app:app", backend, args) as server:
        url = server.url("http", "/")
        assert httpx.get(url, timeout=10).text == "v1"
        [first] = _server_processes(server)
        (app_dir / "notes.txt").write_text("not watched")
        module.write_text(HOT_APP.format(version="v2"))

        def serves_v2() -> bool:
            try:
                return httpx.get(url, timeout=5).text == "v2"
            except httpx.HTTPError:
                return False

        assert wait_until(serves_v2, 30), server.output()
        output = server.output()
        assert "WatchFiles detected changes in" in output and "hot_app.py" in output
        assert "notes.txt" not in output
        assert output.count("zcasgi running on") == 2
        # The server process, a child of the reloader, was replaced once.
        [second] = _server_processes(server)
        assert second != first
    assert "Traceback" not in server.output()


def test_reload_survives_a_broken_edit(tmp_path: Path) -> None:
    """An edit that does not import stops that server process only; the next edit serves."""
    module = tmp_path / "hot_app.py"
    module.write_text(HOT_APP.format(version="v1"))
    args = ["--reload", "--reload-dir", str(tmp_path), "--app-dir", str(tmp_path)]
    with ZcasgiServer("hot_app:app", "mio", args) as server:
        url = server.url("http", "/")
        assert httpx.get(url, timeout=10).text == "v1"
        module.write_text("def app(:\n")
        server.wait_for_output("SyntaxError", timeout=30)
        assert wait_until(lambda: not _server_processes(server), 30), server.output()
        module.write_text(HOT_APP.format(version="v3"))
        assert httpx.get(url, timeout=30).text == "v3"
        assert server.alive()
