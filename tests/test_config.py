"""Configuration: every bad value is a clear error at start-up, never a crash later."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT, ServerProcess, subprocess_env

import zcasgi
from zcasgi.config import Config


async def _app(scope: object, receive: object, send: object) -> None:
    pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "epoll"}, "unknown backend 'epoll'; valid backends: mio, tokio"),
        ({"port": 70000}, "port must be <= 65535"),
        ({"port": -1}, "port must be >= 0"),
        ({"io_threads": 0}, "io_threads must be >= 1"),
        ({"ws_max_size": 0}, "ws_max_size must be >= 1"),
        ({"ws_max_queue": 0}, "ws_max_queue must be >= 1"),
        ({"ws_ping_interval": -1}, "ws_ping_interval must be a finite number"),
        ({"ws_ping_timeout": float("nan")}, "ws_ping_timeout must be a finite number"),
        ({"handshake_timeout": float("inf")}, "handshake_timeout must be a finite number"),
        ({"ws_write_low_water": 10, "ws_write_high_water": 5}, "ws_write_low_water must not"),
        ({"lifespan": "maybe"}, "lifespan must be one of auto, on, off"),
        ({"log_level": "loud"}, "log_level must be one of"),
        ({"loop": "trio"}, "loop must be one of"),
        ({"root_path": "api"}, "root_path must start with '/'"),
        ({"forwarded_allow_ips": "10.0.0.1,nope"}, "'nope' is not an IP address"),
        ({"shutdown_close_code": 1006}, "shutdown_close_code 1006 may not be sent"),
        ({"ssl_certfile": "cert.pem"}, "TLS is not supported yet"),
        ({"uds": "/tmp/x.sock"}, "uds (Unix domain sockets) is not supported yet"),
        ({"workers": 2}, "workers > 1 is not supported yet"),
        ({"max_header_bytes": 10}, "max_header_bytes must be >= 256"),
    ],
)
def test_bad_values_raise_value_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        Config(_app, **options)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "options",
    [{"port": "80"}, {"io_threads": 1.5}, {"ws_max_size": True}, {"ws_ping_interval": "5"}],
)
def test_wrong_types_raise_type_error(options: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Config(_app, **options)


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        Config(_app, max_size=5)


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(_app)
    assert config.backend == "mio"
    assert config.ws_max_size == 16 * 1024 * 1024
    assert config.ws_ping_interval == 20.0
    monkeypatch.setenv("ZCASGI_WS_MAX_SIZE", "1234")
    monkeypatch.setenv("ZCASGI_BACKEND", "tokio")
    monkeypatch.setenv("ZCASGI_WS_PING_INTERVAL", "none")
    config = Config(_app)
    assert (config.ws_max_size, config.backend, config.ws_ping_interval) == (1234, "tokio", None)
    assert Config(_app, backend="mio").backend == "mio"  # keyword beats environment
    monkeypatch.setenv("ZCASGI_PORT", "eighty")
    with pytest.raises(ValueError, match="ZCASGI_PORT must be an integer"):
        Config(_app)


def test_import_strings() -> None:
    assert Config("apps.echo:app").load_app().__name__ == "app"
    with pytest.raises(ValueError, match="format"):
        Config("apps.echo").load_app()
    with pytest.raises(ValueError, match="could not import module 'nope'"):
        Config("nope:app").load_app()
    with pytest.raises(ValueError, match="attribute 'missing' not found"):
        Config("apps.echo:missing").load_app()


def test_factory() -> None:
    def factory() -> object:
        return _app

    assert Config(factory, factory=True).load_app() is _app


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zcasgi", *args],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_rejects_bad_values_before_starting() -> None:
    result = _cli("apps.echo:app", "--ws-max-queue", "0")
    assert result.returncode == 2
    assert "ws_max_queue must be >= 1" in result.stderr
    result = _cli("apps.echo:app", "--backend", "epoll")
    assert result.returncode == 2
    assert "invalid choice: 'epoll'" in result.stderr
    result = _cli("apps.echo:nothing")
    assert result.returncode == 2
    assert "attribute 'nothing' not found" in result.stderr
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"zcasgi {zcasgi.__version__}"


def test_lifespan_startup_failure_stops_the_server(tmp_path: object, backend: str) -> None:
    result = _cli("apps.lifespan_fail:app", "--backend", backend, "--port", "0")
    assert result.returncode == 3
    assert "Application startup failed: database unreachable" in result.stderr


def test_lifespan_auto_tolerates_apps_without_it(backend: str) -> None:
    with ServerProcess("apps.echo:deny_app", backend, ["--lifespan", "auto"]) as server:
        pass
    assert "Traceback" not in server.output()


def test_port_in_use_is_a_clear_error(backend: str) -> None:
    with ServerProcess("apps.echo:app", backend) as server:
        result = _cli("apps.echo:app", "--backend", backend, "--port", str(server.port))
    assert result.returncode == 1
    assert f"could not bind 127.0.0.1:{server.port}" in result.stderr
