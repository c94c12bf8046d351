"""python-socketio with its Engine.IO layer in Rust when zcasgi serves it: change one import.

Example::

    import zcasgi.socketio as socketio      # was: import socketio

    sio = socketio.AsyncServer(async_mode="asgi", client_manager=socketio.AsyncRedisManager(url))
    app = socketio.ASGIApp(sio)

`AsyncServer` and `ASGIApp` are python-socketio's classes with the same constructors and API.
Served by zcasgi, Engine.IO (handshake, long-polling, websocket transport, upgrade, heartbeats,
packet framing) runs in zcasgi's Rust core, Python sees only Socket.IO packets, and a room emit
is encoded once and fanned out by Rust in one call. Served by any other ASGI server (or when
zcasgi declines an option, logged at start-up), python-engineio serves and the application
behaves exactly as with the stock classes. Every other name (``AsyncRedisManager``,
``AsyncNamespace``, ``AsyncClient``, ``exceptions``...) is python-socketio's own. See
``docs/socketio.md``.

Importing ``zcasgi`` does not import this module (nor python-socketio).
"""

from __future__ import annotations

import logging
from typing import Any

import socketio as _socketio

from ._emit import FastEmit, install_fast_emit
from ._engine import EngineIOServer, Unsupported, engine_options

__all__ = ["ASGIApp", "AsyncServer", "EngineIOServer", "FastEmit"]
__all__ += [name for name in _socketio.__all__ if name not in __all__]

logger = logging.getLogger("zcasgi")

#: The Socket.IO packet types whose handling runs no application code in python-socketio's
#: Engine.IO message handler when ``async_handlers`` is on: EVENT, CONNECT_ERROR, BINARY_EVENT
#: and BINARY_ACK (the last two only keep the header until their attachments come).
_NO_APPLICATION_CODE = frozenset("2456")


class AsyncServer(_socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's ``socketio.AsyncServer``, whose Engine.IO runs in Rust when zcasgi
    serves it; same constructor and API.

    Its Engine.IO server is an `EngineIOServer`, and its client manager (any
    ``AsyncManager``, ``AsyncRedisManager`` included) fans room emits out through Rust
    (`FastEmit`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        install_fast_emit(self.manager)
        self.eio._zcasgi_inline = self._zcasgi_inline

    def _engineio_server_class(self) -> type[EngineIOServer]:
        return EngineIOServer

    def _zcasgi_inline(self, event: str, sid: str, data: Any) -> bool:
        """Whether python-socketio's own Engine.IO handler runs no application code for this
        event before it ends (`EngineIOServer._zcasgi_inline`).

        True for a new Engine.IO session, and, with ``async_handlers`` (the default), for an
        event (its handler runs in a task python-socketio starts), a binary event's header and
        attachments, and a connect error. A namespace connect or disconnect, an ack, and an
        Engine.IO disconnect run the application's handlers, which may need to run in a task
        of their own (``asyncio.timeout``, anyio's cancel scopes...).
        """
        handlers = self.eio.handlers
        if event == "connect":
            return bool(handlers.get("connect") == self._handle_eio_connect)
        if (
            event != "message"
            or not self.async_handlers
            or self.packet_class is not _socketio.packet.Packet
            or handlers.get("message") != self._handle_eio_message
        ):
            return False
        if isinstance(data, str):
            return data[:1] in _NO_APPLICATION_CODE
        pending = self._binary_packet.get(sid)
        return pending is not None and bool(pending.packet_type == _socketio.packet.BINARY_EVENT)


class ASGIApp(_socketio.ASGIApp):  # type: ignore[misc]
    """python-socketio's ``socketio.ASGIApp``; same constructor. zcasgi serves its Socket.IO
    path itself when its server is a `zcasgi.socketio.AsyncServer`."""

    def __zcasgi_engineio__(self) -> tuple[str | None, dict[str, Any], EngineIOServer] | None:
        """What zcasgi serves in Rust for this application (`_engineio_spec`); zcasgi's server
        asks at start-up."""
        return _engineio_spec(self)


def _engineio_spec(app: object) -> tuple[str | None, dict[str, Any], EngineIOServer] | None:
    """What ``_zcasgi.Core(engineio=...)`` takes for ``app``, if zcasgi serves its Engine.IO.

    Args:
        app: The ASGI application given to zcasgi.

    Returns:
        ``(path, options, handler)`` when ``app`` is an `ASGIApp` whose server is a
        `zcasgi.socketio.AsyncServer`: the Socket.IO path as the app matches it
        (``"/socket.io/"``; None: every path), the options of its Engine.IO server
        (`engine_options`), and that server, which the Rust endpoint calls back. None
        otherwise, and when the server has an option only python-engineio honours; either is
        logged at INFO on ``zcasgi``.
    """
    if not isinstance(app, ASGIApp):
        return None
    eio = getattr(app.engineio_server, "eio", None)
    if not isinstance(eio, EngineIOServer):
        logger.info(
            "Socket.IO served by python-engineio: the ASGIApp's server is not a "
            "zcasgi.socketio.AsyncServer"
        )
        return None
    path: str | None = app.engineio_path
    where = path or "every path"
    try:
        options = engine_options(eio)
    except Unsupported as exc:
        logger.info("Socket.IO at %s served by python-engineio: %s", where, exc)
        return None
    logger.info("Socket.IO at %s: Engine.IO served by zcasgi", where)
    return path, options, eio


def __getattr__(name: str) -> Any:
    """python-socketio's names (``AsyncRedisManager``, ``exceptions``...), as ``socketio.X``."""
    try:
        return getattr(_socketio, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(_socketio)))
