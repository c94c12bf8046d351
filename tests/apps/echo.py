"""Raw ASGI websocket applications for the end-to-end tests.

Serve one with ``python -m zcasgi apps.echo:<name>`` (``tests/`` on ``PYTHONPATH``) or
``tests.apps.echo:<name>``. Every app answers plain HTTP with 404 and completes the lifespan
protocol, so any server configuration can serve it. Markers the tests look for in the server's
output are logged to stderr by the ``tests.apps`` logger, whatever the server's log settings.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SUBPROTOCOLS = ("chat", "superchat")

logger = logging.getLogger("tests.apps")
if not logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


async def _other_scope(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer an ``http`` request with 404 and complete the ``lifespan`` protocol."""
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"not found"})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _respond(send: Send, kind: str, status: int, content_type: bytes, body: bytes) -> None:
    """A whole response with a ``content-length``: ``kind`` is ``"http.response"``, or
    ``"websocket.http.response"`` for a denial."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": f"{kind}.start", "status": status, "headers": headers})
    await send({"type": f"{kind}.body", "body": body})


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    return {key: values[-1] for key, values in parse_qs(raw.decode("latin-1")).items()}


async def _connect(receive: Receive) -> bool:
    """Wait for ``websocket.connect``; False if the client left first."""
    message = await receive()
    return bool(message["type"] == "websocket.connect")


async def _send_back(message: Message, send: Send) -> None:
    """Send a ``websocket.receive`` message's text or bytes back."""
    if message.get("text") is not None:
        await send({"type": "websocket.send", "text": message["text"]})
    else:
        await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def _echo(receive: Receive, send: Send) -> Message:
    """Send every received message back unchanged until the client disconnects; returns the
    ``websocket.disconnect`` message."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return message
        await _send_back(message, send)


async def _open(scope: Scope, receive: Receive, send: Send) -> bool:
    """Serve a scope other than ``websocket``, or wait for ``websocket.connect`` and accept:
    True when there is an accepted WebSocket to serve."""
    if scope["type"] != "websocket":
        await _other_scope(scope, receive, send)
        return False
    if not await _connect(receive):
        return False
    await send({"type": "websocket.accept"})
    return True


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo text and bytes; pick "chat" or "superchat" when the client offers one."""
    if scope["type"] != "websocket":
        await _other_scope(scope, receive, send)
        return
    if not await _connect(receive):
        return
    offered: list[str] = scope.get("subprotocols", [])
    subprotocol = next((name for name in offered if name in SUBPROTOCOLS), None)
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    await _echo(receive, send)


class _Awaiting:
    """An awaitable that is not a coroutine."""

    def __init__(self, coro: Awaitable[None]) -> None:
        self._coro = coro

    def __await__(self) -> Any:
        return self._coro.__await__()


def awaitable_app(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    """``app`` through a callable that returns an awaitable which is not a coroutine."""
    return _Awaiting(app(scope, receive, send))


def raise_on_call_app(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    """Raise when called, before returning anything to await (for websocket requests)."""
    if scope["type"] == "websocket":
        raise RuntimeError("raised on call")
    return _other_scope(scope, receive, send)


def _jsonable(value: Any) -> Any:
    """Scope values as JSON: bytes become latin-1 strings, tuples lists, the rest ``repr``."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, MutableMapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


async def scope_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, send the scope as one JSON text message, then wait for the client to leave."""
    if not await _open(scope, receive, send):
        return
    await send({"type": "websocket.send", "text": json.dumps(_jsonable(scope))})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def scope_mutating_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Like ``scope_app``, then change every part of the scope an application can change."""
    if not await _open(scope, receive, send):
        return
    await send({"type": "websocket.send", "text": json.dumps(_jsonable(scope))})
    scope["asgi"]["version"] = "0.0"
    scope["headers"].append((b"x-added", b"by the app"))
    scope["headers"][0] = (b"host", b"elsewhere")
    scope["subprotocols"].append("added")
    scope["extensions"]["websocket.http.response"]["added"] = True
    scope["extensions"]["added"] = {}
    scope["state"]["added"] = True
    for key in ("type", "http_version", "scheme", "path", "root_path", "server", "client"):
        scope[key] = "changed"
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def close_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then close with ``?code=4001&reason=bye`` from the query string."""
    if scope["type"] != "websocket":
        await _other_scope(scope, receive, send)
        return
    if not await _connect(receive):
        return
    query = _query(scope)
    await send({"type": "websocket.accept"})
    await send(
        {
            "type": "websocket.close",
            "code": int(query.get("code", "1000")),
            "reason": query.get("reason", ""),
        }
    )


async def deny_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Close before accepting: the server answers the handshake with 403."""
    if scope["type"] != "websocket":
        await _other_scope(scope, receive, send)
        return
    if await _connect(receive):
        await send({"type": "websocket.close"})


async def http_deny_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Reject the handshake with a 401 response of the app's own."""
    if scope["type"] != "websocket":
        await _other_scope(scope, receive, send)
        return
    if not await _connect(receive):
        return
    await _respond(send, "websocket.http.response", 401, b"text/plain", b"denied")


async def raise_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo, but raise ``RuntimeError`` on the text message "boom" (the server closes 1011)."""
    if not await _open(scope, receive, send):
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "boom":
            raise RuntimeError("boom")
        await _send_back(message, send)


async def raise_before_accept_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Raise before accepting (the server answers the handshake with 500)."""
    if scope["type"] != "websocket":
        await _other_scope(scope, receive, send)
        return
    await receive()
    raise RuntimeError("raised before accept")


async def flood_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Send ``?count=N`` binary messages of ``?size=S`` bytes as fast as ``send`` allows.

    Each message starts with its 8-byte big-endian sequence number. After the last one the app
    sends the text ``done <count>`` and waits for the client to leave. It logs
    ``flood sent=<n> of=<count>`` when it stops (with `` client left`` appended when ``send``
    raised ``OSError`` because the client went away), so a test can see how far a client that
    does not read let it get.
    """
    if scope["type"] != "websocket":
        await _other_scope(scope, receive, send)
        return
    if not await _connect(receive):
        return
    query = _query(scope)
    count = int(query.get("count", "1000"))
    size = max(8, int(query.get("size", "65536")))
    filler = b"\x00" * (size - 8)
    await send({"type": "websocket.accept"})
    sent = 0
    try:
        while sent < count:
            await send({"type": "websocket.send", "bytes": sent.to_bytes(8, "big") + filler})
            sent += 1
        await send({"type": "websocket.send", "text": f"done {count}"})
    except OSError:
        logger.info("flood sent=%d of=%d client left", sent, count)
        return
    logger.info("flood sent=%d of=%d", sent, count)
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Lifespan that stores ``state["marker"] = "started"`` and logs; websocket echo.

    The text message ``__state__`` is answered with the connection's ``scope["state"]`` as
    JSON instead of being echoed. Logs ``lifespan startup`` and ``lifespan shutdown``.
    """
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                state = scope.get("state")
                if state is not None:
                    state["marker"] = "started"
                logger.info("lifespan startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                logger.info("lifespan shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    if not await _open(scope, receive, send):
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "__state__":
            state_json = json.dumps(_jsonable(scope.get("state")))
            await send({"type": "websocket.send", "text": state_json})
        else:
            await _send_back(message, send)


async def accept_headers_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept with the extra response header ``x-test: 1``, then echo."""
    if scope["type"] != "websocket":
        await _other_scope(scope, receive, send)
        return
    if not await _connect(receive):
        return
    await send({"type": "websocket.accept", "headers": [(b"x-test", b"1")]})
    await _echo(receive, send)


async def duplex_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo with ``receive`` and ``send`` awaited from two different tasks at once."""
    if not await _open(scope, receive, send):
        return
    import asyncio

    queue: asyncio.Queue[Message | None] = asyncio.Queue()

    async def reader() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await queue.put(None)
                return
            await queue.put(message)

    async def writer() -> None:
        while (message := await queue.get()) is not None:
            await _send_back(message, send)

    await asyncio.gather(reader(), writer())


async def disconnect_log_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo, logging ``disconnect code=<code>`` when ``websocket.disconnect`` arrives."""
    if not await _open(scope, receive, send):
        return
    disconnect = await _echo(receive, send)
    logger.info("disconnect code=%s", disconnect.get("code"))


async def sleepy_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept, then call ``receive`` only after ``?delay=`` seconds (default 3600): an app too
    slow to take what the client sends. Then drain until the disconnect, logging
    ``sleepy took=<n> bytes=<b>``."""
    if not await _open(scope, receive, send):
        return
    import asyncio

    await asyncio.sleep(float(_query(scope).get("delay", "3600")))
    took = size = 0
    while (message := await receive())["type"] != "websocket.disconnect":
        took += 1
        size += len(message.get("bytes") or message.get("text") or "")
    logger.info("sleepy took=%d bytes=%d", took, size)


async def transport_app(scope: Scope, receive: Receive, send: Send) -> None:
    """For the transport tests (Unix sockets, TLS): a WebSocket on ``/scope`` gets its scope as
    JSON, any other WebSocket an echo; an HTTP request gets its scope as a JSON 200 response
    after its body was read (a POST's body comes back as the ``body`` member, the PID of the
    process that served it as ``pid``)."""
    if scope["type"] == "websocket":
        if scope["path"] == "/scope":
            await scope_app(scope, receive, send)
        else:
            await app(scope, receive, send)
        return
    if scope["type"] != "http":
        await _other_scope(scope, receive, send)
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    served = {"body": body.decode("latin-1"), "pid": os.getpid()}
    payload = json.dumps({**_jsonable(scope), **served}).encode()
    await _respond(send, "http.response", 200, b"application/json", payload)


async def deny_path_app(scope: Scope, receive: Receive, send: Send) -> None:
    """`app`, but a WebSocket to ``/deny`` is denied (403), as `deny_app` does."""
    if scope["type"] == "websocket" and scope["path"] == "/deny":
        await deny_app(scope, receive, send)
    else:
        await app(scope, receive, send)


async def waiter_app(scope: Scope, receive: Receive, send: Send) -> None:
    """What a task parks on in ``receive()``, reported to the client as JSON per command:
    ``probe`` (the parked object as asyncio sees it), ``timeout`` (``asyncio.wait_for`` on a
    receive that times out), ``cancel`` (a task parked in ``receive()`` cancelled with a
    message); anything else is echoed."""
    if scope["type"] != "websocket":
        await _other_scope(scope, receive, send)
        return
    if not await _connect(receive):
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        command = message.get("text")
        report: dict[str, Any]
        if command == "probe":
            parked = receive().__await__().__next__()  # type: ignore[attr-defined]
            try:
                parked.result()
            except asyncio.InvalidStateError:
                not_ready = True
            else:
                not_ready = False
            report = {
                "tracked": gc.is_tracked(parked),
                "future": asyncio.isfuture(parked),
                "same_loop": parked.get_loop() is asyncio.get_running_loop(),
                "done": parked.done(),
                "not_ready": not_ready,
            }
        elif command == "timeout":
            try:
                await asyncio.wait_for(receive(), 0.05)
            except asyncio.TimeoutError:
                report = {"timed_out": True}
            else:
                report = {"timed_out": False}
        elif command == "cancel":
            # The same cancellation of a task parked on receive() and on an asyncio future.
            report = {}
            for name, awaitable in (
                ("receive", receive()),
                ("future", asyncio.get_running_loop().create_future()),
            ):
                task = asyncio.ensure_future(awaitable)
                await asyncio.sleep(0.01)
                task.cancel("stop waiting")
                try:
                    await task
                except asyncio.CancelledError as exc:
                    report[name] = ["cancelled", *map(str, exc.args)]
                else:
                    report[name] = ["done"]
        else:
            await _send_back(message, send)
            continue
        await send({"type": "websocket.send", "text": json.dumps(report)})
