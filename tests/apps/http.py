"""Raw ASGI ``http`` applications for the end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

logger = logging.getLogger("tests.apps.http")
if not logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _respond(send: Any, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Routes: ``/echo`` (body back, length-framed), ``/scope`` (scope as JSON),
    ``/stream?n=&size=`` (chunked streamed response), ``/hang`` (logs ``hang started``, waits
    for http.disconnect),
    ``/boom`` (raises before responding), ``/boom-late`` (raises mid-response),
    ``/noresponse`` (returns without responding), ``/upload`` (reads the body, returns without
    responding if the client leaves)."""
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
    path = scope["path"]
    if path == "/echo":
        body = await _read_body(receive)
        await _respond(send, 200, body, [(b"content-length", str(len(body)).encode())])
    elif path == "/scope":
        await _read_body(receive)
        fields = {
            k: v
            for k, v in scope.items()
            if k in ("type", "http_version", "method", "scheme", "path", "root_path", "client")
        }
        fields["raw_path"] = scope["raw_path"].decode()
        fields["query_string"] = scope["query_string"].decode()
        fields["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
        fields["asgi"] = scope["asgi"]
        fields["server"] = scope["server"]
        await _respond(send, 200, json.dumps(fields).encode())
    elif path == "/stream":
        query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)
        n, size = int(query.get("n", "10")), int(query.get("size", "1024"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(n):
            chunk = bytes([i % 256]) * size
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        logger.info("stream done n=%d", n)
    elif path == "/hang":
        logger.info("hang started")
        await _read_body(receive)
        message = await receive()
        logger.info("hang got %s", message["type"])
    elif path == "/boom":
        raise RuntimeError("boom before response")
    elif path == "/boom-late":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom mid response")
    elif path == "/noresponse":
        return
    elif path == "/upload":
        # Reads the body and gives up without answering if the client leaves, as
        # python-engineio does with a polling POST.
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                logger.info("upload got http.disconnect")
                return
            if not message.get("more_body", False):
                break
        await _respond(send, 200, b"uploaded")
    elif path == "/slow":
        await _read_body(receive)
        await asyncio.sleep(0.2)
        await _respond(send, 200, b"slow")
    else:
        await _read_body(receive)
        await _respond(send, 404, b"not found")
