"""The options of `zcasgi.Config`: one list, from which the CLI flags and the ``ZCASGI_*``
environment variables are made, and against which the signatures of `zcasgi.Config` and
`zcasgi.serve` and the table of docs/configuration.md are checked (tests/test_options.py,
tests/test_docs.py).

An option is one `Option`: its name (the keyword, the attribute, ``--name-with-dashes`` and
``ZCASGI_NAME``), its type as the signatures write it, its default, how text (a flag's value, an
environment variable) is read into a value (`Kind`), and how the command line takes it (`Cli`).
A new option is one more entry in `OPTIONS`, a keyword in `zcasgi.Config.__init__` (the test says
which), its check in `zcasgi.Config`, and its row in docs/configuration.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ._zcasgi import BACKENDS, server_defaults

__all__ = [
    "BOOLEANS",
    "LIFESPAN_MODES",
    "LOG_LEVELS",
    "LOOPS",
    "OPTIONS",
    "Cli",
    "Kind",
    "Option",
    "parse_bool",
]

LIFESPAN_MODES = ("auto", "on", "off")
LOG_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}
LOOPS = ("auto", "asyncio", "uvloop")

#: The spellings of a boolean accepted from the command line and the environment.
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_bool(raw: str) -> bool:
    """Reads a boolean flag or environment value: true/false, 1/0 or yes/no, any case.

    Raises:
        ValueError: for any other spelling.
    """
    try:
        return BOOLEANS[raw.strip().lower()]
    except KeyError:
        raise ValueError(f"expected true/false, 1/0 or yes/no, got {raw!r}") from None


class Kind(Enum):
    """How a flag's value or an environment variable's text is read into an option's value."""

    #: The text as is.
    TEXT = "text"
    #: An integer.
    INT = "int"
    #: An integer, or ``none`` (also ``off``, ``auto``).
    OPTIONAL_INT = "optional int"
    #: A number of seconds.
    SECONDS = "seconds"
    #: A number of seconds, or ``none``/``off``.
    OPTIONAL_SECONDS = "optional seconds"
    #: true/false, 1/0 or yes/no (`parse_bool`).
    BOOL = "bool"
    #: Like `BOOL`, or ``auto``/``none`` for None.
    OPTIONAL_BOOL = "optional bool"
    #: One or more values; in the environment, separated by commas.
    LIST = "list"
    #: One or more ``NAME:VALUE`` headers; in the environment, one per line.
    HEADERS = "headers"


class Cli(Enum):
    """How the command line takes an option."""

    #: ``--name VALUE``.
    VALUE = "value"
    #: ``--name`` and ``--no-name``.
    TOGGLE = "toggle"
    #: ``--name`` alone sets it.
    FLAG = "flag"
    #: ``--flag VALUE``, repeatable; each adds one value.
    APPEND = "append"


@dataclass(frozen=True)
class Option:
    """One option of `zcasgi.Config`."""

    #: The keyword and attribute; ``--name-with-dashes`` and ``ZCASGI_NAME`` unless `flag` says.
    name: str
    #: The type, as the signatures of `zcasgi.Config` and `zcasgi.serve` write it (their
    #: annotations are strings: ``from __future__ import annotations``, single quotes).
    annotation: str
    #: The value when neither a keyword, a flag nor the environment gives one.
    default: Any
    #: How text is read into a value.
    kind: Kind
    #: One line for ``zcasgi --help``.
    help: str
    #: How the command line takes it.
    cli: Cli = Cli.VALUE
    #: The command-line flag when it is not ``--name-with-dashes`` (uvicorn's singular names
    #: for repeatable flags: ``--header``, ``--reload-dir``).
    flag: str = ""
    #: The values a flag may take (``--help`` lists them), or empty for any.
    choices: tuple[str, ...] = ()
    #: What ``--help`` calls the value.
    metavar: str = ""

    @property
    def flags(self) -> tuple[str, ...]:
        """The command-line flags: ``--name`` (or `flag`), and ``--no-name`` for a toggle."""
        flag = self.flag or "--" + self.name.replace("_", "-")
        return (flag, "--no-" + flag[2:]) if self.cli is Cli.TOGGLE else (flag,)

    @property
    def variable(self) -> str:
        """The environment variable that gives a default: ``ZCASGI_<NAME>``."""
        return f"ZCASGI_{self.name.upper()}"

    def parse(self, raw: str) -> Any:
        """Reads one flag value (or one item of an environment variable) into a value.

        Raises:
            ValueError: saying what was expected, for text this kind cannot read (the caller
                names the flag or the variable).
        """
        kind = self.kind
        text = raw.strip()
        if kind in (Kind.OPTIONAL_INT, Kind.OPTIONAL_SECONDS) and text.lower() in (
            "none",
            "off",
            "auto",
        ):
            return None
        if kind is Kind.OPTIONAL_BOOL and text.lower() in ("auto", "none"):
            return None
        if kind in (Kind.BOOL, Kind.OPTIONAL_BOOL):
            return parse_bool(text)
        try:
            if kind in (Kind.INT, Kind.OPTIONAL_INT):
                return int(text)
            if kind in (Kind.SECONDS, Kind.OPTIONAL_SECONDS):
                return float(text)
        except ValueError:
            what = "an integer" if kind in (Kind.INT, Kind.OPTIONAL_INT) else "a number of seconds"
            raise ValueError(f"expected {what}, got {raw!r}") from None
        if kind is Kind.HEADERS:
            return parse_header(raw)
        return raw

    def from_environment(self) -> Any:
        """The value ``ZCASGI_<NAME>`` gives, or `default` when it is not set.

        Raises:
            ValueError: naming the variable, for text the option cannot read.
        """
        raw = os.environ.get(self.variable)
        if raw is None:
            return self.default
        try:
            if self.kind is Kind.LIST:
                return [item.strip() for item in raw.split(",") if item.strip()]
            if self.kind is Kind.HEADERS:
                return [self.parse(line) for line in raw.splitlines() if line.strip()]
            return self.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{self.variable}: {exc}") from None


def parse_header(raw: str) -> tuple[str, str]:
    """Reads ``NAME:VALUE`` (uvicorn's ``--header``) into ``(name, value)``.

    Raises:
        ValueError: when there is no ``:`` or no name before it.
    """
    name, colon, value = raw.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"expected NAME:VALUE, got {raw!r}")
    return name.strip(), value.strip()


_CORE = server_defaults()


def _core(
    name: str,
    annotation: str,
    kind: Kind,
    help: str,
    cli: Cli = Cli.VALUE,
) -> Option:
    """An option the Rust core takes: its default is the core's (``ServerConfig::default``)."""
    return Option(name, annotation, _CORE[name], kind, help, cli)


_PATH = "str | os.PathLike[str] | None"

#: Every option of `zcasgi.Config`, in the order of its signature.
OPTIONS: tuple[Option, ...] = (
    Option("host", "str", "127.0.0.1", Kind.TEXT, "address to bind (default 127.0.0.1)"),
    Option("port", "int", 8000, Kind.INT, "port to bind (default 8000)"),
    Option("uds", _PATH, None, Kind.TEXT, "bind a Unix domain socket at this path"),
    Option(
        "uds_permissions",
        "int | str | None",
        None,
        Kind.TEXT,
        "octal mode of the --uds socket file, e.g. 660 (default: umask)",
    ),
    Option(
        "fd",
        "int | None",
        None,
        Kind.OPTIONAL_INT,
        "serve on this already-listening TCP or Unix socket descriptor",
    ),
    Option(
        "backend",
        "Literal['mio', 'tokio']",
        "mio",
        Kind.TEXT,
        "transport backend (default mio)",
        choices=tuple(BACKENDS),
    ),
    Option(
        "io_threads",
        "int | None",
        None,
        Kind.OPTIONAL_INT,
        "I/O threads of the backend; 0: mio's reactor runs in the event loop; auto (default): "
        "0 with backend mio in a process allowed one CPU, else 1",
    ),
    Option(
        "workers",
        "int",
        1,
        Kind.INT,
        "worker processes under one supervisor, sharing the listening socket (default 1)",
    ),
    Option("backlog", "int", 2048, Kind.INT, "listen backlog (default 2048)"),
    _core(
        "max_connections",
        "int",
        Kind.INT,
        "connections served at once; more wait in the backlog (default 100000)",
    ),
    _core(
        "limit_concurrency",
        "int | None",
        Kind.OPTIONAL_INT,
        "open connections above which new ones are answered 503 (default: no limit)",
    ),
    _core("ws_max_size", "int", Kind.INT, "largest WebSocket message in bytes"),
    _core("ws_max_queue", "int", Kind.INT, "received messages buffered per connection"),
    _core(
        "ws_max_queue_bytes", "int", Kind.INT, "received bytes buffered per connection (inflated)"
    ),
    _core(
        "ws_ping_interval",
        "float | None",
        Kind.OPTIONAL_SECONDS,
        "seconds between pings (none or 0: no pings)",
    ),
    _core(
        "ws_ping_timeout",
        "float | None",
        Kind.OPTIONAL_SECONDS,
        "seconds to wait for a pong (none: forever)",
    ),
    _core(
        "ws_per_message_deflate",
        "bool",
        Kind.BOOL,
        "accept permessage-deflate, true or false (default false)",
    ),
    _core("ws_write_high_water", "int", Kind.INT, "send buffer bytes before send waits"),
    _core("ws_write_low_water", "int", Kind.INT, "send buffer bytes when send resumes"),
    _core(
        "handshake_timeout",
        "float",
        Kind.SECONDS,
        "seconds to receive a request head; most seconds a request body may stall",
    ),
    _core("timeout_keep_alive", "float", Kind.SECONDS, "idle keep-alive seconds (default 5)"),
    _core("http_max_body_size", "int", Kind.INT, "largest HTTP request body in bytes"),
    _core("close_timeout", "float", Kind.SECONDS, "seconds to wait for the peer's close"),
    Option(
        "timeout_graceful_shutdown",
        "float",
        10.0,
        Kind.SECONDS,
        "seconds apps get to finish on shutdown",
    ),
    _core("shutdown_close_code", "int", Kind.INT, "close code on shutdown (default 1012)"),
    _core("max_headers", "int", Kind.INT, "most request headers (default 100)"),
    _core("max_header_bytes", "int", Kind.INT, "largest request head in bytes"),
    Option("root_path", "str", "", Kind.TEXT, "ASGI root_path"),
    Option(
        "proxy_headers",
        "bool",
        True,
        Kind.BOOL,
        "trust X-Forwarded-For/-Proto from --forwarded-allow-ips (default on)",
        Cli.TOGGLE,
    ),
    Option(
        "forwarded_allow_ips",
        "str | list[str]",
        "127.0.0.1",
        Kind.TEXT,
        "proxies trusted for X-Forwarded-* headers",
    ),
    _core("ssl_certfile", _PATH, Kind.TEXT, "TLS certificate chain (PEM); serve https/wss"),
    _core("ssl_keyfile", _PATH, Kind.TEXT, "TLS private key (PEM)"),
    _core(
        "ssl_keyfile_password", "str | None", Kind.TEXT, "password of an encrypted --ssl-keyfile"
    ),
    _core("ssl_ca_certs", _PATH, Kind.TEXT, "CA certificates (PEM) for client certificates"),
    _core(
        "ssl_cert_reqs",
        "int",
        Kind.INT,
        "client certificate: 0 none (default), 1 optional, 2 required",
    ),
    Option(
        "headers",
        "list[tuple[str, str]] | None",
        _CORE["headers"],
        Kind.HEADERS,
        "extra response header NAME:VALUE on every response (repeatable)",
        Cli.APPEND,
        flag="--header",
        metavar="NAME:VALUE",
    ),
    _core(
        "server_header",
        "bool",
        Kind.BOOL,
        "send 'server: zcasgi' (default on)",
        Cli.TOGGLE,
    ),
    _core("date_header", "bool", Kind.BOOL, "send a 'date' header (default on)", Cli.TOGGLE),
    Option(
        "env_file",
        _PATH,
        None,
        Kind.TEXT,
        "environment file (python-dotenv) loaded before the options are read",
        metavar="PATH",
    ),
    Option(
        "reload",
        "bool",
        False,
        Kind.BOOL,
        "restart the server when files change (development; needs watchfiles)",
        Cli.FLAG,
    ),
    Option(
        "reload_dirs",
        "list[str] | str | None",
        None,
        Kind.LIST,
        "directory to watch with --reload (repeatable; default the working directory)",
        Cli.APPEND,
        flag="--reload-dir",
        metavar="DIR",
    ),
    Option(
        "reload_includes",
        "list[str] | str | None",
        None,
        Kind.LIST,
        "glob of files --reload watches besides *.py (repeatable)",
        Cli.APPEND,
        flag="--reload-include",
        metavar="GLOB",
    ),
    Option(
        "reload_excludes",
        "list[str] | str | None",
        None,
        Kind.LIST,
        "glob of files --reload ignores (repeatable; besides .*, *.py[cod], *.sw.*, ~*)",
        Cli.APPEND,
        flag="--reload-exclude",
        metavar="GLOB",
    ),
    Option(
        "lifespan",
        "Literal['auto', 'on', 'off']",
        "auto",
        Kind.TEXT,
        "lifespan mode (default auto)",
        choices=LIFESPAN_MODES,
    ),
    Option(
        "log_level",
        "str | int",
        "info",
        Kind.TEXT,
        "level of the zcasgi loggers your --log-config leaves unset (default info)",
        choices=tuple(LOG_LEVELS),
    ),
    Option(
        "log_config",
        "dict[str, Any] | str | os.PathLike[str] | None",
        None,
        Kind.TEXT,
        "logging configuration: dictConfig as .json or .yaml/.yml, else fileConfig INI",
        metavar="FILE",
    ),
    Option(
        "access_log",
        "bool",
        True,
        Kind.BOOL,
        "log each request to zcasgi.access (default on)",
        Cli.TOGGLE,
    ),
    Option(
        "use_colors",
        "bool | None",
        None,
        Kind.OPTIONAL_BOOL,
        "colour the level names of the default log format (default: when stderr is a TTY)",
        Cli.TOGGLE,
    ),
    Option(
        "loop",
        "Literal['auto', 'asyncio', 'uvloop']",
        "auto",
        Kind.TEXT,
        "event loop (default auto: uvloop if installed)",
        choices=LOOPS,
    ),
    Option("factory", "bool", False, Kind.BOOL, "APP is a factory to call", Cli.FLAG),
)
