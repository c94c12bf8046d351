"""The application of the soak run (``benchmarks/soak``) and of the leak test
(``tests/test_soak.py``).

It serves every client of the soak mix and counts its own application calls, so that a client
can ask how many are still running instead of guessing from time:

- ``websocket`` on ``/flood``: :func:`apps.echo.flood_app` (a stream for slow readers);
  on any other path: :func:`apps.echo.app` (echo);
- ``http`` ``GET /stats``: JSON ``{"tasks": N, "asyncio_tasks": M, ...}``, where ``tasks`` is
  the number of application calls (WebSocket or HTTP, this one excluded) that have not
  returned, ``asyncio_tasks`` the number of asyncio tasks of the server's loop besides this
  call's, ``connection_objects`` the number of the server's per-connection objects still
  alive besides this request's (after a garbage collection), and ``sends_after_disconnect``
  the WebSocket calls that ended because ``send()`` raised ``ClientDisconnected`` (the client
  had reset; the app treats that as the end);
- ``http`` ``POST /trim``: glibc's ``malloc_trim(0)`` (frees what the allocator holds but does
  not use, in every arena), then the same JSON as ``/stats``;
- any other ``http`` request: :func:`apps.http.app` (``/echo`` sends the body back).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import inspect
import json
from typing import Any

from . import echo
from . import http as http_apps

#: Application calls that have not returned yet (the ``/stats`` calls themselves excepted).
_running = 0
#: WebSocket calls that ended with ``send()`` raising because the client had left.
_sends_after_disconnect = 0


def _malloc_trim() -> bool:
    """Call glibc's ``malloc_trim(0)``; False when the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


def _connection_objects(receive: Any) -> int | None:
    """How many of the server's per-connection objects are alive, this request's own excepted:
    the object whose bound method ``receive`` is, or ``receive`` itself when it is a callable
    object rather than a function (zcasgi's connection is its own ``receive``); None for a
    plain function."""
    owner = getattr(receive, "__self__", None)
    if owner is None and not inspect.isfunction(receive):
        owner = receive
    if owner is None:
        return None
    kind = type(owner)
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is kind) - 1


async def _stats(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body", False):
        pass
    trimmed = _malloc_trim() if scope["path"] == "/trim" else None
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    body = json.dumps(
        {
            "tasks": _running,
            "asyncio_tasks": len(others),
            "sends_after_disconnect": _sends_after_disconnect,
            "connection_objects": _connection_objects(receive),
            "trimmed": trimmed,
        }
    ).encode()
    await http_apps._respond(send, 200, body, [(b"content-length", str(len(body)).encode())])


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Route as the module docstring says, counting running calls."""
    global _running, _sends_after_disconnect
    if scope["type"] == "lifespan":
        await http_apps.app(scope, receive, send)
        return
    if scope["type"] == "http" and scope["path"] in ("/stats", "/trim"):
        await _stats(scope, receive, send)
        return
    _running += 1
    try:
        if scope["type"] == "websocket":
            handler = echo.flood_app if scope["path"] == "/flood" else echo.app
            try:
                await handler(scope, receive, send)
            except OSError:
                # ``send()`` after the client left (zcasgi.ClientDisconnected): the resets of
                # the mix do that on purpose.
                _sends_after_disconnect += 1
        else:
            await http_apps.app(scope, receive, send)
    finally:
        _running -= 1
