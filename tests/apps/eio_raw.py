"""A raw Engine.IO v4 application served by zcasgi's Rust endpoint, for the end-to-end tests.

``app`` answers plain HTTP with 404 and offers zcasgi an Engine.IO endpoint at ``/engine.io/``
(``__zcasgi_engineio__``), whose handler echoes every message (``echo:`` before text) and obeys
a few commands: ``close`` (the server closes the session), ``later:<text>`` (answered after a
loop turn, the message handled asynchronously), ``all:<text>`` (broadcast to every session).
A handshake whose query has ``refuse=1`` is refused. Connects and disconnects are logged to
stderr as ``eio connect <sid>`` / ``eio disconnect <sid> <reason>``. ``EIO_PING`` sets
``ping_interval,ping_timeout`` in seconds (default ``25,20``); ``EIO_MAX`` the largest message.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from tests.apps.echo import _other_scope, logger


class _Handler:
    """The handler side of zcasgi's Rust Engine.IO endpoint."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.sids: set[str] = set()

    def _zcasgi_attach(self, engine: Any) -> None:
        self.engine = engine

    def _zcasgi_detach(self) -> None:
        self.engine = None

    def _zcasgi_connect(self, sid: str, scope: dict[str, Any]) -> bool:
        if b"refuse=1" in scope["query_string"]:
            return False
        self.sids.add(sid)
        logger.info("eio connect %s", sid)
        return True

    def _zcasgi_message(self, sid: str, data: str | bytes) -> bool:
        engine = self.engine
        if isinstance(data, bytes):
            engine.send(sid, data)
        elif data == "close":
            self.sids.discard(sid)
            engine.disconnect(sid)
        elif data.startswith("all:"):
            engine.broadcast(sorted(self.sids), data[4:])
        elif data.startswith("later:"):
            asyncio.get_running_loop().call_soon(self._later, sid, data[6:])
            return False
        else:
            engine.send(sid, "echo:" + data)
        return True

    def _later(self, sid: str, text: str) -> None:
        if self.engine is not None:
            self.engine.send(sid, "later:" + text)
            self.engine.done(sid)

    def _zcasgi_disconnect(self, sid: str, reason: str) -> None:
        self.sids.discard(sid)
        logger.info("eio disconnect %s %s", sid, reason)


class _App:
    def __init__(self) -> None:
        self.handler = _Handler()

    def __zcasgi_engineio__(self) -> tuple[str, dict[str, Any], _Handler]:
        interval, timeout = (float(x) for x in os.environ.get("EIO_PING", "25,20").split(","))
        options: dict[str, Any] = {"ping_interval": interval, "ping_timeout": timeout}
        if "EIO_MAX" in os.environ:
            options["max_http_buffer_size"] = int(os.environ["EIO_MAX"])
        return "/engine.io/", options, self.handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _other_scope(scope, receive, send)


app = _App()
