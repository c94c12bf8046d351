"""An application that tells which worker process serves it, for the ``--workers`` tests.

HTTP: every request is answered ``200`` with the serving process's PID as the body. WebSocket:
accept, send the PID as the first text message, then echo until the client leaves. The lifespan
and each WebSocket's end are logged with the PID (``lifespan startup pid=<pid>``,
``lifespan shutdown pid=<pid>``, ``disconnect pid=<pid> code=<code>``) to stderr, which a
worker shares with its supervisor.
"""

from __future__ import annotations

import asyncio
import os

from .echo import Receive, Scope, Send, _echo, logger


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the PID (HTTP, first WebSocket message), echo, log the lifespan with it."""
    pid = os.getpid()
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                logger.info("lifespan startup pid=%d", pid)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                logger.info("lifespan shutdown pid=%d", pid)
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        body = str(pid).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif (await receive())["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": str(pid)})
        disconnect = await _echo(receive, send)
        logger.info("disconnect pid=%d code=%s", pid, disconnect.get("code"))


async def crash_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A worker that dies (exit code 1) during its lifespan startup, every time."""
    if scope["type"] == "lifespan":
        await receive()
        logger.info("crashing pid=%d", os.getpid())
        os._exit(1)
    await app(scope, receive, send)


async def stuck_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept a WebSocket, then never look at it again: its worker's graceful shutdown waits for
    it until ``timeout_graceful_shutdown``."""
    if scope["type"] != "websocket":
        await app(scope, receive, send)
        return
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": str(os.getpid())})
    await asyncio.Event().wait()
