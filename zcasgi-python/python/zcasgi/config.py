"""Server configuration: one `Config` mirrored by `serve()` keywords, CLI flags and env vars.

Names follow uvicorn where uvicorn has the same knob, so switching servers is a one-line change.
Every value is checked in `Config.__init__`; a bad one raises `ValueError` (or `TypeError` for a
wrong type) before anything is bound or started.
"""

from __future__ import annotations

import configparser
import importlib
import importlib.util
import inspect
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from ._zcasgi import BACKENDS, server_limits, validate_config
from .options import BOOLEANS, LIFESPAN_MODES, LOG_LEVELS, LOOPS, OPTIONS, Option, parse_bool

__all__ = [
    "BOOLEANS",
    "LIFESPAN_MODES",
    "LIMITS",
    "LOG_LEVELS",
    "LOOPS",
    "Config",
    "import_from_string",
    "parse_bool",
]

ASGIApp = Callable[..., Any]


def _split_import_string(target: str) -> tuple[str, str]:
    module_name, _, attrs = target.partition(":")
    if not module_name or not attrs:
        raise ValueError(f'import string {target!r} must be in the format "<module>:<attribute>"')
    return module_name, attrs


def _on_path() -> None:
    """Puts the working directory on ``sys.path``, as ``python -m`` does."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def import_from_string(target: str) -> Any:
    """Imports ``"module.path:attribute"`` (the attribute may be dotted), like uvicorn.

    Raises:
        ValueError: if the string is malformed, or the module or attribute does not exist.
    """
    module_name, attrs = _split_import_string(target)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ValueError(f"could not import module {module_name!r}") from exc
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise ValueError(f"attribute {attrs!r} not found in module {module_name!r}") from exc
    return obj


_SERVER_LIMITS = server_limits()

#: The documented range of each numeric option, ``(minimum, maximum)``: ints are counts (bytes,
#: messages, threads, ...), floats are seconds. The options the Rust core takes have their
#: ranges from it (``ServerConfig::limits``); they keep what the server computes from a valid
#: value from overflowing.
LIMITS: dict[str, tuple[int, int] | tuple[float, float]] = {
    "port": (0, 65535),
    "fd": (0, 2**31 - 1),
    "workers": (1, 1024),
    "backlog": (1, 2**31 - 1),
    "timeout_graceful_shutdown": _SERVER_LIMITS["close_timeout"],
    **_SERVER_LIMITS,
}


def _show(limit: float) -> str:
    return f"{limit:g} seconds" if isinstance(limit, float) else str(limit)


def _check_range(name: str, value: float) -> None:
    low, high = LIMITS[name]
    if value < low:
        raise ValueError(f"{name} must be >= {_show(low)}, got {value}")
    if value > high:
        raise ValueError(f"{name} must be <= {_show(high)}, got {value}")


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, and its cgroup's CPU quota (cgroup v2
    ``cpu.max``) rounded up, whichever is fewer."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        group = next(line[3:] for line in lines if line.startswith("0::"))
        quota, period = (Path("/sys/fs/cgroup") / group.lstrip("/") / "cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError, StopIteration):
        pass
    return cpus


def auto_io_threads(backend: str) -> int:
    """``io_threads`` when not given: none (the reactor in the event loop) for the mio backend
    in a process allowed one CPU, where an I/O thread could only take turns with the loop's;
    else one."""
    return 0 if backend == "mio" and usable_cpus() == 1 else 1


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    _check_range(name, value)
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")
    _check_range(name, value)
    return float(value)


def _optional_seconds(name: str, value: object, *, zero_is_none: bool = False) -> float | None:
    if value is None or (zero_is_none and not isinstance(value, bool) and value == 0):
        return None
    return _seconds(name, value)


def _string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _optional_path(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a str path, not bytes")
    if not path:
        raise ValueError(f"{name} must not be empty")
    return path


def _permissions(value: object) -> int | None:
    """A file mode: an int (``0o660``) or an octal string (``"660"``, ``"0o660"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip().removeprefix("0o"), 8)
        except ValueError:
            raise ValueError(
                f"uds_permissions must be an octal mode such as 660, got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"uds_permissions must be an int or an octal str, not {type(value).__name__}"
        )
    if not 0 <= value <= 0o777:
        raise ValueError(f"uds_permissions must be a mode between 0o000 and 0o777, got {value:#o}")
    return value


_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


class _Default:
    """A keyword's default in `Config`'s signature: shown as the option's default, and told
    apart from a value the caller gave (a ``ZCASGI_*`` variable applies then)."""

    __slots__ = ("option",)

    def __init__(self, option: Option) -> None:
        self.option = option

    def __repr__(self) -> str:
        return repr(self.option.default)


def default(name: str) -> Any:
    """The default of keyword ``name`` in a signature (`OPTIONS` holds the value)."""
    return _Default(_BY_NAME[name])


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def _strings(name: str, value: object) -> list[str]:
    """A list of str from a list (or tuple) of them, one str, or None (an empty list)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a str or a list of str")
    return list(value)


def _headers(value: object) -> list[tuple[str, str]]:
    """``headers``: a list of ``(name, value)`` str pairs (the core checks the names and
    values)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(h, (list, tuple)) and len(h) == 2 and all(isinstance(p, str) for p in h)
        for h in value
    ):
        raise TypeError("headers must be a list of (name, value) str pairs")
    return [(name, text) for name, text in value]


def _load_env_file(value: object) -> str | None:
    """Checks ``env_file`` and loads it into the environment (python-dotenv; variables already
    set win, as under uvicorn)."""
    path = _optional_path("env_file", value)
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ValueError(f"env_file: {path!r} is not a file")
    try:
        from dotenv import load_dotenv
    except ImportError:
        raise ValueError(
            "env_file needs python-dotenv (pip install python-dotenv, or zcasgi[standard])"
        ) from None
    load_dotenv(path)
    return path


class Config:
    """Everything `zcasgi.serve()` accepts, validated.

    Args:
        app: The ASGI application, or an import string ``"module:attribute"``.
        host: Address to bind.
        port: TCP port to bind (0 picks a free one).
        uds: Bind a Unix domain socket at this path instead of host/port. A stale socket file
            (nobody listening) is replaced; a live socket or any other file there is an error.
        uds_permissions: Mode of the ``uds`` socket file (an int such as ``0o660``, or an octal
            string such as ``"660"``); ``None`` leaves what the umask gives.
        fd: Serve on an already-listening socket file descriptor (TCP or Unix stream).
        backend: Transport backend, ``"mio"`` or ``"tokio"``.
        io_threads: Number of I/O threads of the backend; 0: none, the mio backend's reactor
            runs inside the asyncio event loop, on its thread (``backend="tokio"`` needs 1 or
            more). ``None`` (the default): 0 with backend mio when the process may use only
            one CPU (its affinity or its cgroup's quota), else 1; the attribute holds the
            number chosen.
        workers: Number of worker processes; more than 1 runs them under a supervisor that
            binds the listening socket once, replaces a worker that dies and reloads them one
            at a time on SIGHUP (docs/deployment.md).
        backlog: Listen backlog.
        max_connections: Connections served at once; more wait in the backlog.
        limit_concurrency: Open connections above which a new connection's requests are
            answered 503 Service Unavailable, as uvicorn's option (``None``: no such limit).
        ws_max_size: Largest WebSocket message accepted, in bytes (larger: close 1009).
        ws_max_queue: Received messages buffered per connection before reading pauses.
        ws_max_queue_bytes: Bytes of received messages (inflated) and request body buffered per
            connection before reading pauses; one larger message still gets through alone.
        ws_ping_interval: Seconds between keepalive pings (``None`` disables them).
        ws_ping_timeout: Seconds to wait for a pong before closing with 1011 (``None``: forever).
        ws_per_message_deflate: Accept permessage-deflate (RFC 7692) offers. ``False`` by
            default; uvicorn defaults to ``True``, which saves bandwidth on compressible messages
            but costs CPU and about 370 KiB of compressor memory per connection that sends.
        ws_write_high_water: Unwritten bytes per connection at which ``send`` starts to wait.
        ws_write_low_water: Unwritten bytes per connection at which a waiting ``send`` resumes.
        handshake_timeout: Seconds allowed to receive a request head (WebSocket or HTTP), and
            the longest a request body may go without a byte arriving.
        timeout_keep_alive: Seconds an idle keep-alive HTTP connection is kept open.
        http_max_body_size: Largest HTTP request body accepted, in bytes (larger: 413).
        close_timeout: Seconds to wait for the peer's close frame.
        timeout_graceful_shutdown: Seconds applications get to finish on shutdown.
        shutdown_close_code: Close code sent to open WebSockets on shutdown.
        max_headers: Most request headers accepted (more: 431).
        max_header_bytes: Largest request head accepted (larger: 431).
        root_path: ASGI ``root_path`` of the application.
        proxy_headers: Trust ``X-Forwarded-For``/``X-Forwarded-Proto`` from ``forwarded_allow_ips``.
        forwarded_allow_ips: Comma-separated proxy addresses to trust, or ``"*"``.
        ssl_certfile: TLS certificate chain (PEM, leaf first); set, the server speaks only TLS
            (https, wss). It may hold the private key too.
        ssl_keyfile: TLS private key (PEM: PKCS#8, PKCS#1 or SEC1; encrypted PKCS#8 with
            ``ssl_keyfile_password``).
        ssl_keyfile_password: Password of an encrypted ``ssl_keyfile``.
        ssl_ca_certs: CA certificates (PEM) client certificates are verified against.
        ssl_cert_reqs: Client certificates, as uvicorn numbers them (``ssl.CERT_*``): 0 none
            asked for, 1 optional (verified if presented), 2 required.
        lifespan: ``"auto"``, ``"on"`` or ``"off"``.
        log_level: ``"critical"``, ``"error"``, ``"warning"``, ``"info"``, ``"debug"``, ``"trace"``:
            the level of the ``zcasgi`` loggers that ``log_config`` (or the application's own
            logging setup) leaves unset; a level set there is never overwritten.
        log_config: A logging configuration applied at start-up: a `logging.config.dictConfig`
            dict, a path to one as JSON (``.json``) or YAML (``.yaml``/``.yml``, needs PyYAML),
            or any other path as a `logging.config.fileConfig` INI file.
        access_log: Log each request's outcome to ``zcasgi.access`` as uvicorn does, the
            requests the server refuses itself included.
        loop: ``"auto"`` (uvloop if installed), ``"asyncio"`` or ``"uvloop"``.
        headers: Extra ``(name, value)`` headers on every HTTP response and WebSocket accept
            (uvicorn's ``--header``); a header the application sends itself wins.
        server_header: Send ``server: zcasgi`` (unless the application sends a ``server``).
        date_header: Send a ``date`` header (unless the application sends one).
        env_file: A file of environment variables (python-dotenv) loaded before the other
            options are read, so ``ZCASGI_*`` variables in it apply; variables already set win.
        reload: Restart the server process when a watched file changes (development only;
            needs an import string ``app``, one worker, and watchfiles).
        reload_dirs: Directories ``reload`` watches (default: the working directory).
        reload_includes: Globs of files ``reload`` watches besides ``*.py``.
        reload_excludes: Globs of files ``reload`` ignores (besides ``.*``, ``*.py[cod]``,
            ``*.sw.*`` and ``~*``).
        use_colors: Colour the level names of the default log format; ``None``: when the
            stream is a terminal.
        factory: Treat ``app`` as a factory to call with no arguments.

    Numeric options must lie in their documented range (`LIMITS`, docs/configuration.md).

    Raises:
        ValueError: for a value out of range or a combination that cannot work, naming the
            option.
        TypeError: for a value of the wrong type, naming the option.
    """

    def __init__(
        self,
        app: ASGIApp | str,
        *,
        host: str = default("host"),
        port: int = default("port"),
        uds: str | os.PathLike[str] | None = default("uds"),
        uds_permissions: int | str | None = default("uds_permissions"),
        fd: int | None = default("fd"),
        backend: Literal["mio", "tokio"] = default("backend"),
        io_threads: int | None = default("io_threads"),
        workers: int = default("workers"),
        backlog: int = default("backlog"),
        max_connections: int = default("max_connections"),
        limit_concurrency: int | None = default("limit_concurrency"),
        ws_max_size: int = default("ws_max_size"),
        ws_max_queue: int = default("ws_max_queue"),
        ws_max_queue_bytes: int = default("ws_max_queue_bytes"),
        ws_ping_interval: float | None = default("ws_ping_interval"),
        ws_ping_timeout: float | None = default("ws_ping_timeout"),
        ws_per_message_deflate: bool = default("ws_per_message_deflate"),
        ws_write_high_water: int = default("ws_write_high_water"),
        ws_write_low_water: int = default("ws_write_low_water"),
        handshake_timeout: float = default("handshake_timeout"),
        timeout_keep_alive: float = default("timeout_keep_alive"),
        http_max_body_size: int = default("http_max_body_size"),
        close_timeout: float = default("close_timeout"),
        timeout_graceful_shutdown: float = default("timeout_graceful_shutdown"),
        shutdown_close_code: int = default("shutdown_close_code"),
        max_headers: int = default("max_headers"),
        max_header_bytes: int = default("max_header_bytes"),
        root_path: str = default("root_path"),
        proxy_headers: bool = default("proxy_headers"),
        forwarded_allow_ips: str | list[str] = default("forwarded_allow_ips"),
        ssl_certfile: str | os.PathLike[str] | None = default("ssl_certfile"),
        ssl_keyfile: str | os.PathLike[str] | None = default("ssl_keyfile"),
        ssl_keyfile_password: str | None = default("ssl_keyfile_password"),
        ssl_ca_certs: str | os.PathLike[str] | None = default("ssl_ca_certs"),
        ssl_cert_reqs: int = default("ssl_cert_reqs"),
        headers: list[tuple[str, str]] | None = default("headers"),
        server_header: bool = default("server_header"),
        date_header: bool = default("date_header"),
        env_file: str | os.PathLike[str] | None = default("env_file"),
        reload: bool = default("reload"),
        reload_dirs: list[str] | str | None = default("reload_dirs"),
        reload_includes: list[str] | str | None = default("reload_includes"),
        reload_excludes: list[str] | str | None = default("reload_excludes"),
        lifespan: Literal["auto", "on", "off"] = default("lifespan"),
        log_level: str | int = default("log_level"),
        log_config: dict[str, Any] | str | os.PathLike[str] | None = default("log_config"),
        access_log: bool = default("access_log"),
        use_colors: bool | None = default("use_colors"),
        loop: Literal["auto", "asyncio", "uvloop"] = default("loop"),
        factory: bool = default("factory"),
    ) -> None:
        # Every keyword the caller gave; the others come from ZCASGI_* or their default, read
        # after env_file is loaded (so that the file's ZCASGI_* apply).
        given = {
            name: value
            for name, value in locals().items()
            if name in _BY_NAME and not isinstance(value, _Default)
        }
        env_option = _BY_NAME["env_file"]
        self.env_file = _load_env_file(given.get("env_file", env_option.from_environment()))
        values = {
            o.name: given[o.name] if o.name in given else o.from_environment() for o in OPTIONS
        }
        self.app = app
        self.host: str = str(values["host"])
        self.port = _count("port", values["port"])
        self.uds = _optional_path("uds", values["uds"])
        self.uds_permissions = _permissions(values["uds_permissions"])
        if self.uds_permissions is not None and self.uds is None:
            raise ValueError("uds_permissions is set but uds is not")
        self.fd: int | None = None if values["fd"] is None else _count("fd", values["fd"])
        if self.uds is not None and self.fd is not None:
            raise ValueError("uds and fd are exclusive: give one listening socket")
        self.backend: str = values["backend"]
        if self.backend not in BACKENDS:
            raise ValueError(
                f"unknown backend {self.backend!r}; valid backends: {', '.join(BACKENDS)}"
            )
        io_threads = values["io_threads"]
        self.io_threads: int = (
            auto_io_threads(self.backend)
            if io_threads is None
            else _count("io_threads", io_threads)
        )
        if self.io_threads == 0 and self.backend != "mio":
            raise ValueError(
                "io_threads=0 (the I/O on the event loop's thread) needs backend mio, "
                f"not {self.backend}"
            )
        self.workers = _count("workers", values["workers"])
        self.backlog = _count("backlog", values["backlog"])
        self.max_connections = _count("max_connections", values["max_connections"])
        limit = values["limit_concurrency"]
        self.limit_concurrency: int | None = (
            None if limit is None else _count("limit_concurrency", limit)
        )
        self.ws_max_size = _count("ws_max_size", values["ws_max_size"])
        self.ws_max_queue = _count("ws_max_queue", values["ws_max_queue"])
        self.ws_max_queue_bytes = _count("ws_max_queue_bytes", values["ws_max_queue_bytes"])
        self.ws_ping_interval = _optional_seconds(
            "ws_ping_interval", values["ws_ping_interval"], zero_is_none=True
        )
        self.ws_ping_timeout = _optional_seconds("ws_ping_timeout", values["ws_ping_timeout"])
        self.ws_per_message_deflate = _bool(
            "ws_per_message_deflate", values["ws_per_message_deflate"]
        )
        self.ws_write_high_water = _count("ws_write_high_water", values["ws_write_high_water"])
        self.ws_write_low_water = _count("ws_write_low_water", values["ws_write_low_water"])
        self.handshake_timeout = _seconds("handshake_timeout", values["handshake_timeout"])
        self.close_timeout = _seconds("close_timeout", values["close_timeout"])
        self.timeout_keep_alive = _seconds("timeout_keep_alive", values["timeout_keep_alive"])
        self.http_max_body_size = _count("http_max_body_size", values["http_max_body_size"])
        self.timeout_graceful_shutdown = _seconds(
            "timeout_graceful_shutdown", values["timeout_graceful_shutdown"]
        )
        self.shutdown_close_code = _count("shutdown_close_code", values["shutdown_close_code"])
        self.max_headers = _count("max_headers", values["max_headers"])
        self.max_header_bytes = _count("max_header_bytes", values["max_header_bytes"])
        self.root_path = _string("root_path", values["root_path"])
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ValueError("root_path must start with '/' and not end with '/' (or be empty)")
        self.proxy_headers = _bool("proxy_headers", values["proxy_headers"])
        allow = values["forwarded_allow_ips"]
        if isinstance(allow, str):
            allow = [a.strip() for a in allow.split(",") if a.strip()]
        elif not isinstance(allow, (list, tuple)) or not all(isinstance(a, str) for a in allow):
            raise TypeError("forwarded_allow_ips must be a str or a list of str")
        self.forwarded_allow_ips: list[str] = list(allow)
        for ip in self.forwarded_allow_ips:
            if ip != "*":
                try:
                    ipaddress.ip_network(ip, strict=False)
                except ValueError:
                    raise ValueError(
                        f"forwarded_allow_ips: {ip!r} is not an IP address or network"
                    ) from None
        self.ssl_certfile = _optional_path("ssl_certfile", values["ssl_certfile"])
        self.ssl_keyfile = _optional_path("ssl_keyfile", values["ssl_keyfile"])
        password = values["ssl_keyfile_password"]
        if password is not None and not isinstance(password, str):
            raise TypeError(f"ssl_keyfile_password must be a str, not {type(password).__name__}")
        self.ssl_keyfile_password: str | None = password
        self.ssl_ca_certs = _optional_path("ssl_ca_certs", values["ssl_ca_certs"])
        self.ssl_cert_reqs = int(_count("ssl_cert_reqs", values["ssl_cert_reqs"]))
        self.lifespan: str = values["lifespan"]
        if self.lifespan not in LIFESPAN_MODES:
            raise ValueError(
                f"lifespan must be one of {', '.join(LIFESPAN_MODES)}, got {self.lifespan!r}"
            )
        level = values["log_level"]
        if isinstance(level, str):
            if level.lower() not in LOG_LEVELS:
                raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
            self.log_level = LOG_LEVELS[level.lower()]
        elif isinstance(level, int) and not isinstance(level, bool):
            self.log_level = level
        else:
            raise TypeError("log_level must be a level name or an int")
        self.log_config: dict[str, Any] | str | None = _log_config(values["log_config"])
        self.access_log = _bool("access_log", values["access_log"])
        colors = values["use_colors"]
        self.use_colors: bool | None = None if colors is None else _bool("use_colors", colors)
        self.loop: str = values["loop"]
        if self.loop not in LOOPS:
            raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {self.loop!r}")
        if self.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ValueError("loop='uvloop' but uvloop is not installed (pip install uvloop)")
        self.factory = _bool("factory", values["factory"])
        if not isinstance(app, str) and not callable(app):
            raise TypeError("app must be an ASGI callable or an import string 'module:attribute'")
        self.headers = _headers(values["headers"])
        self.server_header = _bool("server_header", values["server_header"])
        self.date_header = _bool("date_header", values["date_header"])
        self.reload = _bool("reload", values["reload"])
        self.reload_dirs = _strings("reload_dirs", values["reload_dirs"])
        self.reload_includes = _strings("reload_includes", values["reload_includes"])
        self.reload_excludes = _strings("reload_excludes", values["reload_excludes"])
        if self.reload:
            self._check_reload()
        # The core's own checks of what it takes: ranges, the close code, the water marks; and
        # the TLS files, loaded as the server will load them.
        validate_config(self)

    def load_app(self) -> ASGIApp:
        """Imports (and, with ``factory``, builds) the application.

        Raises:
            ValueError: if it cannot be imported or is not callable.
        """
        app: Any = self.app
        if isinstance(app, str):
            _on_path()
            app = import_from_string(app)
        if self.factory:
            if not callable(app):
                raise ValueError("factory=True but the app is not callable")
            app = app()
        if not callable(app):
            raise ValueError(f"the ASGI app must be callable, got {type(app).__name__}")
        if inspect.isclass(app):
            raise ValueError("ASGI2 (class-based, two-callable) applications are not supported")
        loaded: ASGIApp = app
        return loaded

    def find_app(self) -> None:
        """Checks, without importing it, that the application's module exists (for an import
        string; an application object is there already).

        Raises:
            ValueError: if the import string is malformed or its module cannot be found.
        """
        if not isinstance(self.app, str):
            return
        module_name, _ = _split_import_string(self.app)
        _on_path()
        try:
            spec = importlib.util.find_spec(module_name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            raise ValueError(f"could not import module {module_name!r}")

    def trusted_proxy(self, host: str | None) -> bool:
        """Whether ``host`` is allowed to set proxy headers. A peer without an address (a Unix
        socket's) is trusted only with ``forwarded_allow_ips="*"``, as under uvicorn."""
        if not self.proxy_headers:
            return False
        if "*" in self.forwarded_allow_ips:
            return True
        if host is None:
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in ipaddress.ip_network(n, strict=False) for n in self.forwarded_allow_ips)

    def as_dict(self) -> dict[str, Any]:
        """The effective options (for logging and tests)."""
        return {o.name: getattr(self, o.name) for o in OPTIONS if hasattr(self, o.name)}

    def _check_reload(self) -> None:
        """``reload`` restarts a process that imports the application: it needs an import
        string, one worker, watchfiles, and directories that exist."""
        if not isinstance(self.app, str):
            raise ValueError(
                "reload needs the application as an import string 'module:attribute' "
                "(the reloader imports it afresh in each new process)"
            )
        if self.workers > 1:
            raise ValueError(
                f"reload and workers={self.workers} cannot be combined: reload runs one server "
                "process (use reload for development, workers in production)"
            )
        for directory in self.reload_dirs:
            if not os.path.isdir(directory):
                raise ValueError(f"reload_dirs: {directory!r} is not a directory")
        if importlib.util.find_spec("watchfiles") is None:
            raise ValueError(
                "reload needs watchfiles (pip install watchfiles, or zcasgi[standard])"
            )


def _log_config(value: Any) -> dict[str, Any] | str | None:
    """Checks ``log_config``: a dict, or a readable JSON, YAML or INI file (read now, so that a
    bad file stops the start-up with the option's name); returns the dict or the INI path."""
    if value is None or isinstance(value, dict):
        return value
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"log_config must be a dict or a path, not {type(value).__name__}")
    path = os.fspath(value)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ValueError(f"log_config: cannot read {path!r}: {exc.strerror}") from None
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"log_config: {path!r} is not valid JSON: {exc}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise ValueError(
                f"log_config: {path!r} is YAML, which needs PyYAML (pip install pyyaml)"
            ) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"log_config: {path!r} is not valid YAML: {exc}") from None
    else:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(text, source=path)
        except configparser.Error as exc:
            raise ValueError(f"log_config: {path!r} is not an INI file: {exc}") from None
        missing = [s for s in ("loggers", "handlers", "formatters") if not parser.has_section(s)]
        if missing:
            raise ValueError(
                f"log_config: {path!r} has no [{'], ['.join(missing)}] section "
                "(logging.config.fileConfig needs them)"
            )
        return path
    if not isinstance(loaded, dict):
        raise ValueError(f"log_config: {path!r} must hold a mapping (a dictConfig schema)")
    return loaded


def option_names() -> Sequence[str]:
    """All option names."""
    return [o.name for o in OPTIONS]


def defaults() -> dict[str, Any]:
    """The default of every option (before ``ZCASGI_*`` environment variables apply)."""
    return {o.name: o.default for o in OPTIONS}
