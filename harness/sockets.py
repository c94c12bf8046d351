"""Listening sockets on loopback, bound here and inherited by the server process."""

from __future__ import annotations

import socket

#: Every server the harness starts listens on this address.
HOST = "127.0.0.1"
#: Listen backlog of the sockets bound here (the server may set its own when it listens again).
BACKLOG = 4096


def listen(port: int = 0, *, reuse_port: bool = False, backlog: int = BACKLOG) -> socket.socket:
    """A TCP socket listening on ``HOST:port`` (port 0: one the kernel picks), inheritable.

    Pass it to the server with ``pass_fds`` (:class:`harness.Command` does) and close this
    process's copy once the server has started: the socket stays bound, so no other process can
    take the port in between.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, port))
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def listeners(count: int, *, backlog: int = BACKLOG) -> list[socket.socket]:
    """``count`` listening sockets sharing one port the kernel picks (``SO_REUSEPORT`` when more
    than one): one per worker process.

    The kernel spreads new connections over them by hash, so each worker gets an even share
    (with one shared socket the busiest worker takes most of them).
    """
    shared = count > 1
    first = listen(reuse_port=shared, backlog=backlog)
    socks = [first]
    try:
        port = first.getsockname()[1]
        socks.extend(listen(port, reuse_port=True, backlog=backlog) for _ in range(count - 1))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def free_port() -> int:
    """A TCP port on ``HOST`` that was free a moment ago.

    Only for servers that bind their own port and cannot be given a listening socket (some of
    the benchmark's peers): another process may take the port before the server binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port
