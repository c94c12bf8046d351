"""The listening sockets of a server: bound once, by the process that serves or supervises.

`bind_sockets` is the one place that turns a `Config` into listening sockets. A single-process
server calls it after its lifespan startup; with ``workers > 1`` the supervisor calls it once
before starting any worker, and every worker serves the sockets it inherits. `close_sockets`
closes them, and removes the socket file of a Unix socket `bind_sockets` created.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import weakref

from .config import Config

__all__ = ["bind_sockets", "close_sockets", "describe", "port_of"]

logger = logging.getLogger("zcasgi")

#: The Unix sockets `bind_sockets` created: socket -> (path, inode of the socket file, pid of
#: the process that bound it: a worker that inherited the socket must not remove the file).
_CREATED: weakref.WeakKeyDictionary[socket.socket, tuple[str, int, int]] = (
    weakref.WeakKeyDictionary()
)


def bind_sockets(
    config: Config, *, reuse_port: bool = False, port: int | None = None
) -> list[socket.socket]:
    """The listening, non-blocking sockets ``config`` asks for (``fd``, ``uds``, or
    ``host``/``port``).

    Args:
        config: The server configuration.
        reuse_port: Set ``SO_REUSEPORT`` on a TCP socket, so that other sockets bound the same
            way share its address and the kernel spreads new connections over them.
        port: The TCP port to bind instead of ``config.port`` (a group's later members bind the
            port its first member got for ``port=0``).

    Raises:
        SystemExit: with code 1 if the address cannot be bound (the reason is logged, naming
            the option).
    """
    if config.fd is not None:
        sock = socket.socket(fileno=config.fd)
    elif config.uds is not None:
        sock = _bind_unix(config.uds, config.uds_permissions)
    else:
        port = config.port if port is None else port
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((config.host, port))
        except OSError as exc:
            sock.close()
            logger.error("could not bind %s:%d: %s", config.host, port, exc.strerror)
            raise SystemExit(1) from None
    sock.listen(config.backlog)
    sock.setblocking(False)
    return [sock]


def port_of(sockets: list[socket.socket]) -> int:
    """The TCP port the first of ``sockets`` listens on."""
    return int(sockets[0].getsockname()[1])


def _bind_unix(path: str, permissions: int | None) -> socket.socket:
    """A Unix stream socket bound at ``path`` (not listening yet), with its file's mode set.

    A socket file nobody listens on is a leftover of a server that did not clean up: it is
    replaced. A socket someone listens on, or a file of any other kind, is left alone.
    """
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # Before listen(): nobody can connect until the mode is right.
        if permissions is not None:
            os.chmod(path, permissions)
        _CREATED[sock] = (path, os.stat(path).st_ino, os.getpid())
    except OSError as exc:
        sock.close()
        logger.error("uds: could not bind %s: %s", path, exc.strerror or exc)
        raise SystemExit(1) from None
    return sock


def _listening(path: str) -> bool:
    """Whether a server accepts connections on the Unix socket file ``path`` (refused: the file
    is stale)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            return False
        except OSError as exc:
            logger.error("uds: cannot check whether %s is in use: %s", path, exc.strerror)
            raise SystemExit(1) from None
    return True


def _remove_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        logger.error("uds: cannot inspect %s: %s", path, exc.strerror)
        raise SystemExit(1) from None
    if not stat.S_ISSOCK(mode):
        logger.error("uds: %s exists and is not a socket; not replacing it", path)
        raise SystemExit(1)
    if _listening(path):
        logger.error("uds: another server is listening on %s", path)
        raise SystemExit(1)
    logger.info("uds: removing the stale socket file %s", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def close_sockets(sockets: list[socket.socket]) -> None:
    """Closes ``sockets``, removing the file of each Unix socket `bind_sockets` created in this
    process (if it is still that socket's file): a worker closing the socket it inherited
    leaves the file to the supervisor."""
    for sock in sockets:
        created = _CREATED.pop(sock, None)
        sock.close()
        if created is None or created[2] != os.getpid():
            continue
        path, inode, _ = created
        with contextlib.suppress(OSError):
            if os.lstat(path).st_ino == inode:
                os.unlink(path)


def describe(sock: socket.socket, scheme: str) -> str:
    """Where ``sock`` listens, for the start-up log line: a URL, or a Unix socket's path."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        shown = name.decode(errors="replace") if isinstance(name, bytes) else name
        return f"{scheme}://unix:{shown or '(unnamed)'}"
    host, port = name[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"
