"""A python-socketio application using the API a drop-in must keep, for
``tests/test_socketio_dropin.py``.

``SIO_FLAVOUR`` picks the import: ``fast`` (the default) ``import zcasgi.socketio as socketio``,
``stock`` ``import socketio``. ``SIO_OPTIONS`` (JSON) adds ``AsyncServer`` keyword arguments.

Events of the default namespace (each acknowledged with what it returns):

- ``whoami``: the session the connect handler saved (auth, environ values), the sid, the
  transport, the rooms, and ``hits`` counted in the session;
- ``join`` room -> the room's size; ``leave`` room; ``close`` room;
- ``emit`` {event, data, to, skip_me, namespace}: ``sio.emit`` with those;
- ``echo`` *args -> the same args (binary included);
- ``ask`` data -> what the client answers to a ``question`` event (``sio.call``);
- ``kick``: ``sio.disconnect`` of the sender; ``drop``: ``sio.eio.disconnect`` of its session;
- ``size`` data -> ``len(data)``;
- ``disconnects`` -> every ``[sid, namespace, reason]`` the disconnect handlers saw.

The ``auth`` ``{"refuse": "exception"}`` raises ``ConnectionRefusedError("not you", {"code":
4})``, ``{"refuse": "false"}`` returns False, ``{"slow": true}`` suspends before it accepts,
``{"linger": true}`` makes the client's disconnect handler take 0.2 s, then print
``disconnect handler of <sid> done`` to stderr.
Namespace ``/chat``: ``join`` room, ``shout`` text (to the room ``ns-room``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

if os.environ.get("SIO_FLAVOUR", "fast") == "stock":
    import socketio
else:
    import zcasgi.socketio as socketio  # type: ignore[no-redef]

sio = socketio.AsyncServer(async_mode="asgi", **json.loads(os.environ.get("SIO_OPTIONS", "{}")))
app = socketio.ASGIApp(sio)

#: ``[sid, namespace, reason]`` of every disconnect, in order.
DISCONNECTS: list[list[str]] = []
#: The clients whose disconnect handler takes a while (``auth`` ``{"linger": true}``).
LINGERING: set[str] = set()


async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool | None:
    refuse = auth.get("refuse") if isinstance(auth, dict) else None
    if refuse == "exception":
        raise socketio.exceptions.ConnectionRefusedError("not you", {"code": 4})
    if refuse == "false":
        return False
    if isinstance(auth, dict) and auth.get("slow"):
        await asyncio.sleep(0.05)
    if isinstance(auth, dict) and auth.get("linger"):
        LINGERING.add(sid)
    scope = environ["asgi.scope"]
    session = {
        "auth": auth,
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "header": environ.get("HTTP_X_TEST"),
        "scope": scope["type"],
        "client": bool(scope.get("client")),
    }
    await sio.save_session(sid, session)
    return None


async def disconnect(sid: str, reason: str) -> None:
    DISCONNECTS.append([sid, "/", reason])
    if sid in LINGERING:
        # A disconnect handler that still runs when the server is told to stop.
        await asyncio.sleep(0.2)
        print(f"disconnect handler of {sid} done", file=sys.stderr, flush=True)


async def whoami(sid: str, data: Any = None) -> dict[str, Any]:
    async with sio.session(sid) as session:
        session["hits"] = session.get("hits", 0) + 1
    return {
        **session,
        "sid": sid,
        "transport": sio.transport(sid),
        "rooms": sorted(sio.rooms(sid)),
    }


async def join(sid: str, room: str) -> int:
    await sio.enter_room(sid, room)
    return sum(1 for _ in sio.manager.get_participants("/", room))


async def leave(sid: str, room: str) -> None:
    await sio.leave_room(sid, room)


async def close(sid: str, room: str) -> None:
    await sio.close_room(room)


async def emit(sid: str, spec: dict[str, Any]) -> str:
    await sio.emit(
        spec["event"],
        spec.get("data"),
        to=spec.get("to"),
        skip_sid=sid if spec.get("skip_me") else None,
        namespace=spec.get("namespace"),
    )
    return "ok"


async def echo(sid: str, *args: Any) -> tuple[Any, ...]:
    return args


async def ask(sid: str, data: Any) -> Any:
    return await sio.call("question", data, to=sid, timeout=10)


async def kick(sid: str, data: Any = None) -> None:
    await sio.disconnect(sid)


async def drop(sid: str, data: Any = None) -> None:
    await sio.eio.disconnect(sio.manager.eio_sid_from_sid(sid, "/"))


async def size(sid: str, data: Any) -> int:
    return len(data)


async def disconnects(sid: str, data: Any = None) -> list[list[str]]:
    return DISCONNECTS


for _handler in (
    connect,
    disconnect,
    whoami,
    join,
    leave,
    close,
    emit,
    echo,
    ask,
    kick,
    drop,
    size,
):
    sio.on(_handler.__name__, _handler)
sio.on("disconnects", disconnects)


class Chat(socketio.AsyncNamespace):  # type: ignore[misc,name-defined]
    """The ``/chat`` namespace."""

    async def on_join(self, sid: str, room: str) -> str:
        await self.enter_room(sid, room)
        return "joined"

    async def on_shout(self, sid: str, text: str) -> str:
        await self.emit("shout", text, room="ns-room")
        return "ok"

    async def on_disconnect(self, sid: str, reason: str) -> None:
        DISCONNECTS.append([sid, "/chat", reason])


sio.register_namespace(Chat("/chat"))
