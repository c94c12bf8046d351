"""The listening sockets of a server: bound once, by the process that serves or supervises.

`bind_sockets` is the one place that turns a `Config` into listening sockets. A single-process
server calls it after its lifespan startup; with ``workers > 1`` the supervisor calls it once
before starting any worker, and every worker serves the sockets it inherits.
"""

from __future__ import annotations

import logging
import socket

from .config import Config

__all__ = ["bind_sockets"]

logger = logging.getLogger("zcasgi")


def bind_sockets(config: Config) -> list[socket.socket]:
    """The listening, non-blocking sockets ``config`` asks for (``fd``, or ``host``/``port``).

    Raises:
        SystemExit: with code 1 if the address cannot be bound (the reason is logged).
    """
    if config.fd is not None:
        sock = socket.socket(fileno=config.fd)
    else:
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.host, config.port))
        except OSError as exc:
            sock.close()
            logger.error("could not bind %s:%d: %s", config.host, config.port, exc.strerror)
            raise SystemExit(1) from None
    sock.listen(config.backlog)
    sock.setblocking(False)
    return [sock]
