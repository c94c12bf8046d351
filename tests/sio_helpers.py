"""What the Socket.IO tests share: serving an app with zcasgi or uvicorn, and python-socketio
clients of each kind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import aiohttp
import socketio

from harness import ServerProcess, UvicornServer, ZcasgiServer

#: python-socketio client kinds: default (long-polling, then upgrade), polling-only and
#: websocket-only.
KINDS = {"default": ["polling", "websocket"], "polling": ["polling"], "websocket": ["websocket"]}


@contextmanager
def serving(
    server: str,
    app: str,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    args: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """``app`` served by ``server`` (a zcasgi backend, or ``"uvicorn"``) with ``args`` for a
    ``with``; its output holds no traceback afterwards."""
    process: ServerProcess
    if server == "uvicorn":
        process = UvicornServer(app, args, env=env)
    else:
        process = ZcasgiServer(app, server, ["--no-access-log", *args], env=env, workers=workers)
    with process:
        yield process
    assert "Traceback" not in process.output(), process.output()


async def _read_post_responses(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestEndParams
) -> None:
    """Reads a POST's response: python-engineio's client never reads it, and an unread
    response holds its connection until it is collected (which, in a reference cycle, warns
    of an unclosed connection)."""
    if params.method == "POST":
        await params.response.read()


def client() -> socketio.AsyncClient:
    """A python-socketio client, without reconnection, on an HTTP session of its own that
    `leave` closes."""
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_read_post_responses)
    session = aiohttp.ClientSession(trace_configs=[trace])
    return socketio.AsyncClient(reconnection=False, http_session=session)


async def connect(
    url: str, transports: list[str] | None = None, **options: Any
) -> socketio.AsyncClient:
    """A `client` connected to ``url`` (websocket-only unless told)."""
    connected = client()
    try:
        await connected.connect(
            url, transports=transports or ["websocket"], wait_timeout=10, **options
        )
    except BaseException:
        await leave(connected)
        raise
    return connected


async def leave(client: socketio.AsyncClient, attempt: asyncio.Future[Any] | None = None) -> None:
    """Disconnects a `client` and closes its HTTP session; stops its connect ``attempt`` first
    if given.

    A websocket client disconnects cleanly. Any other is cut off: its pending poll cancelled,
    its queued packets written, its transport reset. python-socketio's polling client would
    wait out its ping cycle (~30-55 s, with uvicorn too) on a clean disconnect, the one it
    starts itself when the server refuses or disconnects it included.
    """
    eio = client.eio
    session = eio.http
    try:
        if attempt is None and client.connected and client.transport() == "websocket":
            await client.disconnect()
            return
        tasks = [task for task in (attempt, eio.read_loop_task) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The write loop ends by itself after what is queued (a CLOSE packet of a disconnect
        # the client started), at the end mark put here for a client still connected. Cut off
        # in the middle of a request, it would leave the request's connection unreleased.
        writer = eio.write_loop_task
        if writer is not None:
            if eio.state == "connected":
                await eio.queue.put(None)
            await asyncio.wait([writer], timeout=10)
        await eio.disconnect(abort=True)
    finally:
        if session is not None:
            await session.close()
