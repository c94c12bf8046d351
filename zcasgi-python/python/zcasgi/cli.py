"""The ``zcasgi`` command line, with uvicorn's conventions: ``zcasgi MODULE:APP [options]``.

Every `Config` option is a flag (``ws_max_size`` → ``--ws-max-size``); environment variables
``ZCASGI_<OPTION>`` give defaults. Invalid values are reported with the option's name and exit
code 2 before anything starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._zcasgi import BACKENDS, __version__
from .config import LIFESPAN_MODES, LOG_LEVELS, LOOPS, Config, parse_bool
from .server import run

__all__ = ["main"]


def seconds(raw: str) -> float | None:
    """A number of seconds, or ``none``/``off``."""
    if raw.lower() in ("none", "off"):
        return None
    return float(raw)


def boolean(raw: str) -> bool:
    """true/false, 1/0 or yes/no, any case."""
    try:
        return parse_bool(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(
        prog="zcasgi",
        description="Serve an ASGI application with zcasgi (WebSocket-first, Rust I/O).",
        argument_default=argparse.SUPPRESS,
        # `--http h11` must not be taken for `--http-max-body-size`.
        allow_abbrev=False,
    )
    p.add_argument("app", help="the ASGI application, as MODULE:ATTRIBUTE")
    p.add_argument("--version", action="version", version=f"zcasgi {__version__}")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 8000)")
    p.add_argument(
        "--fd", type=int, help="serve on this already-listening TCP or Unix socket descriptor"
    )
    p.add_argument("--uds", help="bind a Unix domain socket at this path")
    p.add_argument(
        "--uds-permissions", help="octal mode of the --uds socket file, e.g. 660 (default: umask)"
    )
    p.add_argument("--backend", choices=BACKENDS, help="transport backend (default mio)")
    p.add_argument("--io-threads", type=int, help="I/O threads of the backend (default 1)")
    p.add_argument(
        "--workers",
        type=int,
        help="worker processes under one supervisor, sharing the listening socket (default 1)",
    )
    p.add_argument("--backlog", type=int, help="listen backlog (default 2048)")
    p.add_argument(
        "--max-connections",
        type=int,
        help="connections served at once; more wait in the backlog (default 100000)",
    )
    p.add_argument(
        "--limit-concurrency",
        type=int,
        help="open connections above which new ones are answered 503 (default: no limit)",
    )
    p.add_argument("--ws-max-size", type=int, help="largest WebSocket message in bytes")
    p.add_argument("--ws-max-queue", type=int, help="received messages buffered per connection")
    p.add_argument(
        "--ws-max-queue-bytes", type=int, help="received bytes buffered per connection (inflated)"
    )
    p.add_argument("--ws-ping-interval", type=seconds, help="seconds between pings")
    p.add_argument("--ws-ping-timeout", type=seconds, help="seconds to wait for a pong")
    p.add_argument(
        "--ws-per-message-deflate",
        type=boolean,
        help="accept permessage-deflate, true or false (default false)",
    )
    p.add_argument("--ws-write-high-water", type=int, help="send buffer bytes before send waits")
    p.add_argument("--ws-write-low-water", type=int, help="send buffer bytes when send resumes")
    p.add_argument(
        "--handshake-timeout",
        type=float,
        help="seconds to receive a request head; most seconds a request body may stall",
    )
    p.add_argument("--close-timeout", type=float, help="seconds to wait for the peer's close")
    p.add_argument("--timeout-keep-alive", type=float, help="idle keep-alive seconds (default 5)")
    p.add_argument("--http-max-body-size", type=int, help="largest HTTP request body in bytes")
    p.add_argument(
        "--timeout-graceful-shutdown", type=float, help="seconds apps get to finish on shutdown"
    )
    p.add_argument("--shutdown-close-code", type=int, help="close code on shutdown (default 1012)")
    p.add_argument("--max-headers", type=int, help="most request headers (default 100)")
    p.add_argument("--max-header-bytes", type=int, help="largest request head in bytes")
    p.add_argument("--root-path", help="ASGI root_path")
    p.add_argument("--proxy-headers", action="store_true", dest="proxy_headers")
    p.add_argument("--no-proxy-headers", action="store_false", dest="proxy_headers")
    p.add_argument("--forwarded-allow-ips", help="proxies trusted for X-Forwarded-* headers")
    p.add_argument("--ssl-certfile", help="TLS certificate chain (PEM); serve https/wss")
    p.add_argument("--ssl-keyfile", help="TLS private key (PEM)")
    p.add_argument("--ssl-keyfile-password", help="password of an encrypted --ssl-keyfile")
    p.add_argument("--ssl-ca-certs", help="CA certificates (PEM) for client certificates")
    p.add_argument(
        "--ssl-cert-reqs",
        type=int,
        help="client certificate: 0 none (default), 1 optional, 2 required",
    )
    p.add_argument("--lifespan", choices=LIFESPAN_MODES, help="lifespan mode (default auto)")
    p.add_argument(
        "--log-level",
        choices=list(LOG_LEVELS),
        help="level of the zcasgi loggers your --log-config leaves unset (default info)",
    )
    p.add_argument(
        "--log-config",
        metavar="FILE",
        help="logging configuration: dictConfig as .json or .yaml/.yml, else fileConfig INI",
    )
    p.add_argument("--access-log", action="store_true", dest="access_log")
    p.add_argument("--no-access-log", action="store_false", dest="access_log")
    p.add_argument("--loop", choices=LOOPS, help="event loop (default auto: uvloop if installed)")
    p.add_argument("--factory", action="store_true", help="APP is a factory to call")
    p.add_argument("--app-dir", default=".", help="directory added to sys.path (default .)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``zcasgi`` and ``python -m zcasgi``."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    app_dir = os.path.abspath(args.pop("app_dir", "."))
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    app: Any = args.pop("app")
    try:
        config = Config(app, **args)
        if config.workers == 1:
            config.load_app()
        else:
            # Each worker imports the application after the fork (zcasgi.supervisor).
            config.find_app()
    except (ValueError, TypeError) as exc:
        parser.exit(2, f"zcasgi: error: {exc}\n")
    run(config)


if __name__ == "__main__":
    main()
