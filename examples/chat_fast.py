"""The chat of ``examples/chat.py`` with one line changed: ``import zcasgi.socketio as socketio``.

Served by zcasgi, its Engine.IO layer runs in zcasgi's Rust core and room broadcasts are fanned
out by Rust (docs/socketio.md); served by another ASGI server (``uvicorn examples.chat_fast:app``)
it is the stock python-socketio application.

Run it from the repository root with::

    zcasgi examples.chat_fast:app --host 127.0.0.1 --port 8000

Any Socket.IO client can connect, for example python-socketio's ``AsyncClient``, passing
``auth={"name": "alice"}`` to choose a display name. Events:

``join`` room -> ack with the number of members of the room
    Enter a room.
``leave`` room
    Leave a room.
``message`` {"room": str, "text": str} -> ack "ok"
    Broadcast ``{"room", "from", "text"}`` as a ``message`` event to everyone in the room,
    the sender included.
``binary`` {"room": str, "data": bytes} -> ack "ok"
    Send ``data`` back to the sender as a ``binary`` event, and to the rest of the room.

Set ``ZCASGI_CHAT_PING_INTERVAL`` to a number of seconds to have Engine.IO ping every client
that often (python-socketio's ``ping_interval``; default 25), as the benchmark suite does to
measure idle CPU with pings on.

Set ``ZCASGI_CHAT_REDIS`` to a Redis URL (``redis://127.0.0.1:6379/0``) to share rooms and
broadcasts between several server processes through python-socketio's ``AsyncRedisManager``.
Member counts only include clients connected to the answering process.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import zcasgi.socketio as socketio

logger = logging.getLogger("examples.chat")


def _client_manager() -> socketio.AsyncManager:
    url = os.environ.get("ZCASGI_CHAT_REDIS")
    if url:
        logger.info("using Redis client manager at %s", url)
        return socketio.AsyncRedisManager(url)
    return socketio.AsyncManager()


sio = socketio.AsyncServer(
    async_mode="asgi",
    cors_allowed_origins="*",
    client_manager=_client_manager(),
    ping_interval=float(os.environ.get("ZCASGI_CHAT_PING_INTERVAL", "25")),
)
app = socketio.ASGIApp(sio)


def _room_count(room: str) -> int:
    return sum(1 for _ in sio.manager.get_participants("/", room))


def _field(data: Any, key: str, kind: type) -> Any:
    """``data[key]`` if ``data`` is a dict and the value is a ``kind``, else None."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, kind) else None


async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    name = _field(auth, "name", str) or sid
    await sio.save_session(sid, {"name": name})
    logger.info("connect sid=%s name=%s", sid, name)


async def disconnect(sid: str, reason: str) -> None:
    logger.info("disconnect sid=%s reason=%s", sid, reason)


async def join(sid: str, room: Any) -> int | str:
    if not isinstance(room, str) or not room:
        return "error: room must be a non-empty string"
    await sio.enter_room(sid, room)
    return _room_count(room)


async def leave(sid: str, room: Any) -> None:
    if isinstance(room, str):
        await sio.leave_room(sid, room)


async def message(sid: str, data: Any) -> str:
    room = _field(data, "room", str)
    text = _field(data, "text", str)
    if room is None or text is None:
        return 'error: expected {"room": str, "text": str}'
    session = await sio.get_session(sid)
    await sio.emit("message", {"room": room, "from": session["name"], "text": text}, room=room)
    return "ok"


async def binary(sid: str, data: Any) -> str:
    room = _field(data, "room", str)
    payload = _field(data, "data", bytes)
    if room is None or payload is None:
        return 'error: expected {"room": str, "data": bytes}'
    await sio.emit("binary", payload, to=sid)
    await sio.emit("binary", payload, room=room, skip_sid=sid)
    return "ok"


# Registered with `sio.on(name, handler)` rather than the `@sio.event` decorator, which is
# untyped and would hide the handlers' signatures from mypy.
for _handler in (connect, disconnect, join, leave, message, binary):
    sio.on(_handler.__name__, _handler)
