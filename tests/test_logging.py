"""``log_config`` (``--log-config``) and ``log_level``: a user's logging configuration is
applied, and the levels it sets are never overwritten; a bad one stops the start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import socketio
from websockets.asyncio.client import connect

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
