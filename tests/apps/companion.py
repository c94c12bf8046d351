"""python-socketio beside a companion ASGI app: ``/health`` and a static file."""

from __future__ import annotations

import os
from typing import Any

import socketio

from examples.chat import sio

STATIC = os.path.join(os.path.dirname(__file__), "static", "hello.txt")


async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A companion app: ``/health`` answers 200 "ok", everything else 404."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    status, body = (200, b"ok") if scope["path"] == "/health" else (404, b"not found")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = socketio.ASGIApp(sio, other_asgi_app=health, static_files={"/static/hello.txt": STATIC})
