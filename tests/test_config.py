"""Configuration: every bad value is a clear error at start-up, never a crash later."""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import subprocess
import sys

import pytest

import zcasgi
from harness import REPO_ROOT, ZcasgiServer, listen, server_env
from zcasgi import _zcasgi
from zcasgi.config import LIMITS, Config, defaults, option_names
from zcasgi.options import OPTIONS


async def _app(scope: object, receive: object, send: object) -> None:
    pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "epoll"}, "unknown backend 'epoll'; valid backends: mio, tokio"),
        ({"port": 70000}, "port must be <= 65535"),
        ({"port": -1}, "port must be >= 0"),
        ({"io_threads": -1}, "io_threads must be >= 0"),
        ({"io_threads": 1025}, "io_threads must be <= 1024"),
        ({"io_threads": 0, "backend": "tokio"}, "io_threads=0 (the I/O on the event loop's"),
        ({"ws_max_size": 0}, "ws_max_size must be >= 1"),
        ({"ws_max_queue": 0}, "ws_max_queue must be >= 1"),
        ({"ws_max_queue_bytes": 0}, "ws_max_queue_bytes must be >= 1"),
        ({"ws_max_queue_bytes": 2**40 + 1}, "ws_max_queue_bytes must be <= 1099511627776"),
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
        ({"ssl_certfile": "no-such-cert.pem"}, "ssl_certfile: cannot read no-such-cert.pem"),
        ({"ssl_keyfile": "key.pem"}, "ssl_keyfile requires ssl_certfile"),
        ({"ssl_cert_reqs": 3}, "ssl_cert_reqs must be <= 2"),
        ({"uds": "/tmp/x.sock", "fd": 3}, "uds and fd are exclusive"),
        ({"uds": ""}, "uds must not be empty"),
        ({"uds_permissions": "600"}, "uds_permissions is set but uds is not"),
        ({"uds": "/tmp/x.sock", "uds_permissions": "9"}, "must be an octal mode"),
        ({"uds": "/tmp/x.sock", "uds_permissions": 0o1777}, "between 0o000 and 0o777"),
        ({"workers": 0}, "workers must be >= 1"),
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


@pytest.mark.parametrize(
    ("option", "value"),
    [
        # Durations past what an Instant can hold crashed an I/O thread after start-up.
        ("handshake_timeout", 1e19),
        ("close_timeout", 1.5e19),
        ("ws_ping_interval", 1e19),
        ("ws_ping_timeout", 1e19),
        ("timeout_keep_alive", 1e19),
        ("timeout_graceful_shutdown", 1e300),
        ("handshake_timeout", 86_400.5),
        # Integers too large for the core failed with OverflowError after start-up.
        *((name, 2**64) for name in sorted(LIMITS)),
        ("ws_max_size", 2**40 + 1),
        ("max_headers", 10_001),
    ],
)
def test_values_beyond_the_documented_bounds_raise_value_error(option: str, value: float) -> None:
    options: dict[str, object] = {option: value}
    if option == "ws_write_low_water":
        options["ws_write_high_water"] = 2**40
    with pytest.raises(ValueError, match=rf"^{option} must be <= ") as info:
        Config(_app, **options)
    assert str(value) in str(info.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        # A ping every nanosecond killed every connection.
        ("ws_ping_interval", 1e-9),
        ("ws_ping_timeout", 1e-9),
        ("ws_ping_timeout", 0),
        ("max_header_bytes", 255),
        ("ws_max_size", -(2**64)),
    ],
)
def test_values_below_the_documented_bounds_raise_value_error(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{option} must be >= ") as info:
        Config(_app, **{option: value})
    assert str(value) in str(info.value)


def test_documented_bounds_are_accepted() -> None:
    # Checked on their own: a close code has holes in its range, and a client certificate
    # requirement needs certificates (tests/test_tls.py).
    apart = ("shutdown_close_code", "ssl_cert_reqs")
    lowest = {name: low for name, (low, _) in LIMITS.items() if name not in apart}
    highest = {name: high for name, (_, high) in LIMITS.items() if name not in apart}
    for options in (lowest, highest):
        options = {**options, "ws_write_low_water": 0}
        config = Config(_app, **options)
        assert {name: getattr(config, name) for name in options} == options
    assert Config(_app, ws_ping_interval=0).ws_ping_interval is None
    assert Config(_app, ws_ping_interval=None, ws_ping_timeout=None).ws_ping_timeout is None


def test_defaults_and_ranges_of_the_core_options_come_from_the_core() -> None:
    # io_threads is chosen by Python when not given (test_io_threads_auto_*).
    core_defaults = {k: v for k, v in _zcasgi.server_defaults().items() if k != "io_threads"}
    assert {k: v for k, v in defaults().items() if k in core_defaults} == core_defaults
    assert {k: v for k, v in LIMITS.items() if k in core_defaults | {"io_threads": 0}} == (
        _zcasgi.server_limits()
    )
    config = Config(_app)
    assert {name: getattr(config, name) for name in core_defaults} == core_defaults


@pytest.mark.parametrize(
    ("backend", "cpus", "expected"), [("mio", 1, 0), ("mio", 2, 1), ("tokio", 1, 1)]
)
def test_io_threads_auto_runs_mio_on_the_loop_with_one_cpu(
    monkeypatch: pytest.MonkeyPatch, backend: str, cpus: int, expected: int
) -> None:
    monkeypatch.setattr(zcasgi.config, "usable_cpus", lambda: cpus)
    assert Config(_app, backend=backend).io_threads == expected
    assert Config(_app, backend=backend, io_threads=3).io_threads == 3


def test_io_threads_auto_counts_the_affinity() -> None:
    """The CPUs a child process pinned to one CPU may use: one, so mio runs on the loop."""
    code = (
        "from zcasgi.config import usable_cpus, Config; "
        "print(usable_cpus(), Config(lambda s, r, w: None).io_threads)"
    )
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out == ["1", "0"]


def test_io_threads_auto_from_the_command_line() -> None:
    """``--io-threads auto`` (and ``ZCASGI_IO_THREADS=auto``) leave the choice to zcasgi."""
    [option] = [o for o in OPTIONS if o.name == "io_threads"]
    assert option.parse("auto") is None
    assert option.parse("2") == 2


@pytest.mark.parametrize(
    ("option", "value", "error", "message"),
    [
        ("handshake_timeout", 1e19, ValueError, "handshake_timeout must be <= 86400 seconds"),
        ("ws_ping_interval", 1e-9, ValueError, "ws_ping_interval must be >= 0.1 seconds"),
        ("io_threads", 2**64, ValueError, "io_threads is out of range, got 18446744073709551616"),
        ("max_connections", 0, ValueError, "max_connections must be >= 1, got 0"),
        ("shutdown_close_code", 1015, ValueError, "shutdown_close_code 1015 may not be sent"),
        ("ws_write_low_water", 10**6, ValueError, "ws_write_low_water must not exceed"),
        ("close_timeout", float("nan"), ValueError, "close_timeout must be a finite number"),
        ("ws_per_message_deflate", 1, TypeError, "ws_per_message_deflate must be a bool, not int"),
        ("max_headers", True, TypeError, "max_headers must be an int, not bool"),
        ("ws_ping_timeout", "5", TypeError, "ws_ping_timeout must be a number of seconds, not str"),
    ],
)
def test_the_core_checks_its_options_again(
    option: str, value: object, error: type[Exception], message: str
) -> None:
    # A config changed after its checks (or built by other code) is checked by the core too:
    # by validate_config and again when the server starts, before anything is bound.
    config = copy.copy(Config(_app))
    setattr(config, option, value)
    with pytest.raises(error) as info:
        _zcasgi.validate_config(config)
    assert str(info.value).startswith(message)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(error) as info:
            _zcasgi.Core(
                config,
                [],
                on_connect=print,
                event_loop=loop,
                logger=logging.getLogger("test"),
                access_log=None,
                state=None,
            )
    finally:
        loop.close()
    assert str(info.value).startswith(message)


def test_uds_options() -> None:
    config = Config(_app, uds="/run/app.sock", uds_permissions="0o660")
    assert (config.uds, config.uds_permissions) == ("/run/app.sock", 0o660)
    assert Config(_app, uds="/run/app.sock", uds_permissions=0o600).uds_permissions == 0o600
    assert Config(_app, uds="/run/app.sock").uds_permissions is None


def test_root_path_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"^root_path must be a str, not int$"):
        Config(_app, root_path=5)


@pytest.mark.parametrize("raw", ["maybe", "on", "off", "", "2"])
def test_environment_booleans_are_strict(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("ZCASGI_WS_PER_MESSAGE_DEFLATE", raw)
    with pytest.raises(ValueError, match=r"^ZCASGI_WS_PER_MESSAGE_DEFLATE: expected true/false"):
        Config(_app)


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("YES", True), ("1", True), ("False", False), ("no", False), ("0", False)],
)
def test_environment_booleans(monkeypatch: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    monkeypatch.setenv("ZCASGI_WS_PER_MESSAGE_DEFLATE", raw)
    assert Config(_app).ws_per_message_deflate is value


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_size'"):
        Config(_app, max_size=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'wokers'"):
        zcasgi.serve(_app, wokers=2)  # type: ignore[call-arg]


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
    with pytest.raises(ValueError, match=r"^ZCASGI_PORT: expected an integer, got 'eighty'$"):
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


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zcasgi", *args],
        cwd=REPO_ROOT,
        env=server_env(env),
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


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--handshake-timeout", "1e19", "handshake_timeout must be <= 86400 seconds"),
        ("--close-timeout", "1.5e19", "close_timeout must be <= 86400 seconds"),
        ("--ws-ping-interval", "1e19", "ws_ping_interval must be <= 86400 seconds"),
        ("--ws-ping-interval", "1e-9", "ws_ping_interval must be >= 0.1 seconds"),
        (
            "--timeout-graceful-shutdown",
            "1e300",
            "timeout_graceful_shutdown must be <= 86400 seconds",
        ),
        ("--io-threads", str(2**64), "io_threads must be <= 1024"),
        ("--backlog", str(2**64), "backlog must be <= 2147483647"),
        ("--max-connections", str(2**64), "max_connections must be <= 10000000"),
        ("--ws-max-queue", str(2**64), "ws_max_queue must be <= 1048576"),
        ("--ws-per-message-deflate", "maybe", "argument --ws-per-message-deflate: expected"),
    ],
)
def test_cli_rejects_values_out_of_bounds(flag: str, value: str, message: str) -> None:
    result = _cli("apps.echo:app", "--port", "0", flag, value)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_port_in_use_stops_the_start_up_before_the_application_starts() -> None:
    """Exit 1 with the bind error; the application's lifespan never starts (so nothing is left
    to shut down, and no misleading "lifespan unsupported" line)."""
    with listen() as taken:
        port = taken.getsockname()[1]
        result = _cli("apps.echo:app", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert f"could not bind 127.0.0.1:{port}" in result.stderr
    assert "Waiting for application startup" not in result.stderr
    assert "lifespan" not in result.stderr


@pytest.mark.parametrize("flag", ["--http", "--backl", "--handshake"])
def test_cli_takes_no_abbreviation(flag: str) -> None:
    """A prefix of an option (uvicorn's `--http h11` is one of `--http-max-body-size`) is an
    unknown option, not the longer one."""
    result = _cli("apps.echo:app", "--port", "0", flag, "1")
    assert result.returncode == 2
    assert f"unrecognized arguments: {flag} 1" in result.stderr


def test_cli_rejects_a_bad_boolean_in_the_environment() -> None:
    result = _cli("apps.echo:app", "--port", "0", env={"ZCASGI_WS_PER_MESSAGE_DEFLATE": "maybe"})
    assert result.returncode == 2
    assert "ZCASGI_WS_PER_MESSAGE_DEFLATE: expected true/false" in result.stderr


def test_lifespan_startup_failure_stops_the_server(tmp_path: object, backend: str) -> None:
    result = _cli("apps.lifespan_fail:app", "--backend", backend, "--port", "0")
    assert result.returncode == 3
    assert "Application startup failed: database unreachable" in result.stderr


def test_lifespan_auto_tolerates_apps_without_it(backend: str) -> None:
    with ZcasgiServer("apps.echo:deny_app", backend, ["--lifespan", "auto"]) as server:
        pass
    assert "Traceback" not in server.output()


def test_port_in_use_is_a_clear_error(backend: str) -> None:
    with ZcasgiServer("apps.echo:app", backend) as server:
        result = _cli("apps.echo:app", "--backend", backend, "--port", str(server.port))
    assert result.returncode == 1
    assert f"could not bind 127.0.0.1:{server.port}" in result.stderr


def _docs_table() -> dict[str, tuple[str, str]]:
    """The options table of docs/configuration.md: option -> (default cell, range cell)."""
    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    rows: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([a-z_]+)`", cells[0]):
            rows[name] = (cells[1], cells[2])
    return rows


def _docs_value(cell: str) -> object:
    if cell == "—":
        return None
    text = cell.strip("`")
    if text == '""':
        return ""
    if text == "[]":
        return []
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def test_docs_list_every_option_with_its_default_and_range() -> None:
    table = _docs_table()
    assert sorted(table) == sorted(option_names())
    documented = {name: _docs_value(default) for name, (default, _) in table.items()}
    assert documented == defaults()
    for name, (low, high) in LIMITS.items():
        numbers = [float(n) for n in re.findall(r"`([0-9.]+)`", table[name][1])]
        assert (numbers[0], numbers[-1]) == (low, high), name
