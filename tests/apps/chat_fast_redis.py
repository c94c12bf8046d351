"""``examples/chat_redis.py`` for ``examples/chat_fast.py``: the chat on zcasgi.socketio over
several workers, rooms shared through Redis (``ZCASGI_CHAT_REDIS``), with the ``where`` event
that says which worker process serves a client."""

from __future__ import annotations

import os

from examples import chat_fast

if not isinstance(chat_fast.sio.manager, chat_fast.socketio.AsyncRedisManager):
    raise RuntimeError("apps.chat_fast_redis needs ZCASGI_CHAT_REDIS=redis://HOST:PORT/DB")

sio = chat_fast.sio
app = chat_fast.app


async def where(sid: str, data: object = None) -> dict[str, int]:
    """Which worker process serves this client."""
    return {"pid": os.getpid()}


sio.on("where", where)
